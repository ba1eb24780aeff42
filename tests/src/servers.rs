//! Servers that live in a namespace: a TCP echo listener and a UDP responder (echo or DNS).
//! Each serves from its own thread until dropped.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::Context as _;

use crate::{dns, netns::Netns};

/// How often a serving thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(10);
/// How long a connection may stay silent before the echo server closes it.
const IDLE: Duration = Duration::from_secs(2);

/// Stops a serving thread when dropped.
#[derive(Debug)]
struct Serving {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A TCP listener that echoes what each connection sends, then closes it.
#[derive(Debug)]
pub struct TcpServer {
    address: SocketAddr,
    _serving: Serving,
}

impl TcpServer {
    /// Listens on `address` inside `netns` (`[::]:PORT` takes both families).
    pub fn start(netns: &Netns, address: SocketAddr) -> anyhow::Result<Self> {
        let listener = netns
            .run(|| TcpListener::bind(address))?
            .with_context(|| format!("listen on {address}/tcp in {}", netns.name()))?;
        listener
            .set_nonblocking(true)
            .context("make the listener non-blocking")?;

        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        thread::spawn(move || echo(stream));
                    }
                    Err(error) if error.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
                    Err(_) => thread::sleep(POLL),
                }
            }
        });
        Ok(Self {
            address,
            _serving: Serving {
                stop,
                thread: Some(thread),
            },
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// Echoes one connection until its peer closes it or stays silent for [`IDLE`].
fn echo(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IDLE));
    let mut buffer = [0u8; 2048];
    while let Ok(read) = stream.read(&mut buffer) {
        if read == 0 || stream.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
}

/// A UDP server that answers each datagram it receives (or ignores those it cannot answer).
#[derive(Debug)]
pub struct UdpServer {
    address: SocketAddr,
    _serving: Serving,
}

impl UdpServer {
    /// Answers every datagram with the same bytes. Bind a specific address when the
    /// namespace has several of a family: a wildcard socket answers from whichever address
    /// routing picks.
    pub fn echo(netns: &Netns, address: SocketAddr) -> anyhow::Result<Self> {
        Self::start(netns, address, |request| Some(request.to_vec()))
    }

    /// Answers DNS queries for A records (see [`dns::answer`]).
    pub fn dns(netns: &Netns, address: SocketAddr) -> anyhow::Result<Self> {
        Self::start(netns, address, dns::answer)
    }

    fn start(
        netns: &Netns,
        address: SocketAddr,
        respond: fn(&[u8]) -> Option<Vec<u8>>,
    ) -> anyhow::Result<Self> {
        let socket = netns
            .run(|| UdpSocket::bind(address))?
            .with_context(|| format!("bind {address}/udp in {}", netns.name()))?;
        socket
            .set_read_timeout(Some(POLL))
            .context("set the UDP server's read timeout")?;

        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let Ok((read, peer)) = socket.recv_from(&mut buffer) else {
                    continue;
                };
                if let Some(response) = respond(&buffer[..read]) {
                    let _ = socket.send_to(&response, peer);
                }
            }
        });
        Ok(Self {
            address,
            _serving: Serving {
                stop,
                thread: Some(thread),
            },
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}
