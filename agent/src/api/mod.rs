//! The auth endpoint: HTTPS (rustls) on the policy's `[auth]` listen addresses. Tokens come in,
//! grants go out. Abusive clients are held off by limits at every layer: connections in all
//! and per source, TLS handshake and header read timeouts, a connection lifetime, header and
//! body sizes, and a per-source rate of grant requests.

mod errors;
mod limits;
mod routes;
mod tls;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{
    Extension, Router,
    extract::DefaultBodyLimit,
    routing::{delete, get, post},
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
pub use limits::{ConnectionCount, RateLimiter};
pub use routes::{Peer, describe, parse_port};
pub use tls::{TlsError, server_config};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::{
    engine::SharedEngine,
    events::EventLog,
    issuers::Issuers,
    policy::Gate,
    tokens::{TokenCache, Validator},
};

/// Limits of the auth endpoint.
#[derive(Clone, Debug)]
pub struct Limits {
    pub connections: usize,
    pub connections_per_source: usize,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub connection_lifetime: Duration,
    /// Bytes of request line and headers (hyper's read buffer; 8 KiB at least).
    pub header_bytes: usize,
    pub body_bytes: usize,
    pub requests_burst: u32,
    pub requests_per_second: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 512,
            connections_per_source: 16,
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(30),
            header_bytes: 16 * 1024,
            body_bytes: 4 * 1024,
            requests_burst: 10,
            requests_per_second: 2.0,
        }
    }
}

/// The policy's gates, replaced whole by a reload; each request plans against one version.
#[derive(Clone, Default)]
pub struct Gates(Arc<std::sync::RwLock<Arc<[Gate]>>>);

impl Gates {
    pub fn new(gates: Vec<Gate>) -> Self {
        Self(Arc::new(std::sync::RwLock::new(gates.into())))
    }

    pub fn current(&self) -> Arc<[Gate]> {
        self.0.read().expect("gates lock").clone()
    }

    pub fn replace(&self, gates: Vec<Gate>) {
        *self.0.write().expect("gates lock") = gates.into();
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct App {
    pub validator: Arc<Validator>,
    pub cache: Arc<TokenCache>,
    pub issuers: Issuers,
    pub gates: Gates,
    pub engine: SharedEngine,
    pub log: EventLog,
    pub limiter: Arc<RateLimiter>,
}

pub fn router(app: App, limits: &Limits) -> Router {
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/v1/grants", post(routes::create_grant))
        .route("/v1/grants/{id}", delete(routes::delete_grant))
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .with_state(app)
}

/// Serves the router over TLS on one listener until the task is dropped.
pub async fn serve(listener: TcpListener, tls: TlsAcceptor, router: Router, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.connections));
    let per_source = Arc::new(ConnectionCount::new(limits.connections_per_source));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept on the auth endpoint");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let source = peer.ip().to_canonical();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%source, "auth endpoint full: connection closed");
            continue;
        };
        if !per_source.enter(source) {
            tracing::debug!(%source, "too many connections from this source: closed");
            continue;
        }
        let (tls, router, limits, per_source) = (
            tls.clone(),
            router.clone(),
            limits.clone(),
            per_source.clone(),
        );
        tokio::spawn(async move {
            connection(stream, source, tls, router, &limits).await;
            per_source.leave(source);
            drop(slot);
        });
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    source: IpAddr,
    tls: TlsAcceptor,
    router: Router,
    limits: &Limits,
) {
    let stream = match tokio::time::timeout(limits.handshake_timeout, tls.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return tracing::debug!(%source, %error, "TLS handshake failed"),
        Err(_) => return tracing::debug!(%source, "TLS handshake timed out"),
    };
    let service = TowerToHyperService::new(router.layer(Extension(Peer(source))));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.header_bytes.max(8192));
    let served = http.serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(limits.connection_lifetime, served).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%source, %error, "auth connection ended with an error"),
        Err(_) => tracing::debug!(%source, "auth connection reached its lifetime"),
    }
}

/// Binds every listen address of `[auth]`.
pub async fn bind(addresses: &[SocketAddr]) -> std::io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for address in addresses {
        let socket = match address {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => {
                let socket = tokio::net::TcpSocket::new_v6()?;
                // "[::]:8443" next to "0.0.0.0:8443" must not claim the IPv4 side too.
                socket2::SockRef::from(&socket).set_only_v6(true)?;
                socket
            }
        };
        socket.set_reuseaddr(true)?;
        socket.bind(*address)?;
        listeners.push(socket.listen(1024)?);
    }
    Ok(listeners)
}

#[cfg(test)]
mod abuse_tests;
#[cfg(test)]
mod tests;
