//! A tiny HTTP/1.1 server on 127.0.0.1 that plays an issuer: fixed answers by path, a count
//! of requests by path, and answers that can be slow, huge or redirected.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One canned answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// Waited before answering, so that concurrent clients overlap.
    pub delay: Duration,
    /// Whether `Content-Length` is sent; without it the body ends when the connection does.
    pub length: bool,
}

#[derive(Default)]
struct Routes {
    replies: HashMap<String, Reply>,
    hits: HashMap<String, usize>,
}

/// The server; it stops when dropped.
pub(crate) struct Server {
    addr: SocketAddr,
    routes: Arc<Mutex<Routes>>,
    task: JoinHandle<()>,
}

impl Reply {
    pub fn json(body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 200,
            body: body.into(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            delay: Duration::ZERO,
            length: true,
        }
    }

    pub fn status(status: u16) -> Self {
        Self {
            status,
            ..Self::json("{}")
        }
    }

    pub fn redirect(location: &str) -> Self {
        let mut reply = Self::status(302);
        reply.headers.push(("Location".into(), location.into()));
        reply
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn without_length(mut self) -> Self {
        self.length = false;
        self
    }
}

impl Server {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("an address")).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind the test server");
        let addr = listener.local_addr().expect("the test server's address");
        let routes = Arc::new(Mutex::new(Routes::default()));
        let task = tokio::spawn(accept(listener, Arc::clone(&routes)));
        Self { addr, routes, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn serve(&self, path: &str, reply: Reply) {
        self.routes().replies.insert(path.to_owned(), reply);
    }

    /// How many requests asked for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.routes().hits.get(path).copied().unwrap_or_default()
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, routes: Arc<Mutex<Routes>>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(answer(stream, Arc::clone(&routes)));
    }
}

/// Answers one request and closes the connection.
async fn answer(mut stream: TcpStream, routes: Arc<Mutex<Routes>>) {
    let mut request = Vec::new();
    let mut buffer = [0; 1024];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => request.extend_from_slice(&buffer[..read]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split(' ').nth(1).unwrap_or("/").to_owned();

    let reply = {
        let mut routes = routes.lock().unwrap_or_else(PoisonError::into_inner);
        *routes.hits.entry(path.clone()).or_default() += 1;
        routes.replies.get(&path).cloned()
    };
    let reply = reply.unwrap_or_else(|| Reply::status(404));
    tokio::time::sleep(reply.delay).await;

    let mut head = format!("HTTP/1.1 {} Test\r\nConnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if reply.length {
        let _ = write!(head, "Content-Length: {}\r\n", reply.body.len());
    }
    head.push_str("\r\n");

    // The client may hang up midway through a huge body; that is what some tests want.
    if stream.write_all(head.as_bytes()).await.is_ok() {
        for piece in reply.body.chunks(16 * 1024) {
            if stream.write_all(piece).await.is_err() {
                return;
            }
        }
    }
    let _ = stream.shutdown().await;
}
