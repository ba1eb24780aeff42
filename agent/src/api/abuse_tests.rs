//! The auth endpoint over real TLS on loopback, under abuse: huge headers, a client that
//! never finishes its request, a flood of connections from one source. Each must be cut off
//! while another client is still served promptly.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::{Limits, serve, server_config};

struct Endpoint {
    address: SocketAddr,
    tls: TlsConnector,
    _dir: tempfile::TempDir,
}

async fn endpoint(limits: Limits) -> Endpoint {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();

    let config = server_config(&cert, &key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = Router::new().route("/healthz", get(|| async { "ok" }));
    tokio::spawn(serve(
        listener,
        tokio_rustls::TlsAcceptor::from(config),
        router,
        limits,
    ));

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(certified.cert.der().to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Endpoint {
        address,
        tls: TlsConnector::from(Arc::new(client)),
        _dir: dir,
    }
}

impl Endpoint {
    /// A TLS connection from the given loopback address.
    async fn connect_from(&self, source: &str) -> std::io::Result<TlsStream<TcpStream>> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))?;
        let stream = socket.connect(self.address).await?;
        let name = ServerName::try_from("localhost").unwrap();
        self.tls.connect(name, stream).await
    }

    /// `GET /healthz` from `source`: the status line, within `limit`.
    async fn health_from(&self, source: &str, limit: Duration) -> Option<String> {
        let request = async {
            let mut stream = self.connect_from(source).await.ok()?;
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.ok()?;
            String::from_utf8_lossy(&answer)
                .lines()
                .next()
                .map(str::to_owned)
        };
        tokio::time::timeout(limit, request).await.ok().flatten()
    }
}

#[tokio::test]
async fn huge_headers_are_refused() {
    let ep = endpoint(Limits::default()).await;
    let mut stream = ep.connect_from("127.0.0.1").await.unwrap();
    let filler = "x".repeat(64 * 1024);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Filler: {filler}\r\n\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let status = String::from_utf8_lossy(&answer);
    assert!(
        status.is_empty() || status.starts_with("HTTP/1.1 431"),
        "{status}"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_is_cut_off() {
    let limits = Limits {
        header_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let ep = endpoint(limits).await;
    let mut slow = ep.connect_from("127.0.0.1").await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();

    // Others are served meanwhile.
    let status = ep.health_from("127.0.0.2", Duration::from_secs(2)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));

    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the slow client is still connected after 5 s");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_flood_of_connections_from_one_source_does_not_lock_others_out() {
    let limits = Limits {
        connections_per_source: 8,
        ..Limits::default()
    };
    let ep = endpoint(limits).await;

    // 200 connections held open from one source, after their handshakes or refusals.
    let mut held = Vec::new();
    for _ in 0..200 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_secs(2), ep.connect_from("127.0.0.1")).await
        {
            held.push(stream);
        }
    }
    assert!(
        held.len() <= 8,
        "{} connections accepted from one source",
        held.len()
    );

    let status = ep.health_from("127.0.0.3", Duration::from_secs(2)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    drop(held);
}
