//! Probes sent from inside a namespace: TCP connects that tell open, refused and filtered
//! ports apart, UDP request/response exchanges, and a SYN flood.

use std::{
    fmt,
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::Netns;

/// How long a probe waits before it calls a port filtered: a SYN dropped is never answered,
/// and a host that answers does so within milliseconds on a veth.
pub const FILTERED_WAIT: Duration = Duration::from_secs(1);
/// How long a probe waits for a port that should answer.
pub const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// What a TCP connect found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The connection was accepted.
    Open,
    /// The host answered with a reset: nothing listens, nothing filters.
    Refused,
    /// No answer before the timeout: something dropped the SYN.
    Filtered,
    /// Any other error (unreachable network, no route...), with its message.
    Failed(String),
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open => f.write_str("open"),
            Self::Refused => f.write_str("refused"),
            Self::Filtered => f.write_str("filtered"),
            Self::Failed(error) => write!(f, "failed: {error}"),
        }
    }
}

/// Connects from `netns` to `to`, waiting at most `timeout` for an answer.
pub fn tcp_probe(netns: &Netns, to: SocketAddr, timeout: Duration) -> Probe {
    probe(netns, None, to, timeout)
}

/// As [`tcp_probe`], from the source address `from` (one of the namespace's addresses).
pub fn tcp_probe_from(netns: &Netns, from: IpAddr, to: SocketAddr, timeout: Duration) -> Probe {
    probe(netns, Some(from), to, timeout)
}

fn probe(netns: &Netns, from: Option<IpAddr>, to: SocketAddr, timeout: Duration) -> Probe {
    let connected = netns.run(|| -> std::io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
        if let Some(from) = from {
            socket.bind(&SockAddr::from(SocketAddr::new(from, 0)))?;
        }
        socket.connect_timeout(&SockAddr::from(to), timeout)?;
        Ok(socket)
    });
    match connected {
        Ok(Ok(_)) => Probe::Open,
        Ok(Err(error)) => match error.kind() {
            ErrorKind::ConnectionRefused => Probe::Refused,
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Probe::Filtered,
            _ => Probe::Failed(error.to_string()),
        },
        Err(error) => Probe::Failed(format!("{error:#}")),
    }
}

/// Connects from `netns` to `to`, sends `payload` and returns what comes back before the
/// peer closes or `timeout` passes.
pub fn tcp_exchange(
    netns: &Netns,
    to: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    let mut stream = netns
        .run(|| TcpStream::connect_timeout(&to, timeout))?
        .with_context(|| format!("connect to {to} from {}", netns.name()))?;
    stream.set_read_timeout(Some(timeout))?;
    stream
        .write_all(payload)
        .with_context(|| format!("send to {to}"))?;

    let mut received = Vec::new();
    let mut buffer = [0u8; 2048];
    while received.len() < payload.len() {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error) => return Err(error).with_context(|| format!("read the answer of {to}")),
        }
    }
    Ok(received)
}

/// A UDP socket bound inside `netns`, usable from any thread.
pub fn udp_socket(netns: &Netns, bind: SocketAddr) -> anyhow::Result<UdpSocket> {
    netns
        .run(|| UdpSocket::bind(bind))?
        .with_context(|| format!("bind {bind}/udp in {}", netns.name()))
}

/// The wildcard address of `to`'s family with an ephemeral port.
pub fn any_port_for(to: SocketAddr) -> SocketAddr {
    match to {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    }
}

/// Sends `payload` from a connected socket in `netns` and waits for the answer; `None` when
/// none came within `timeout`.
pub fn udp_request(
    netns: &Netns,
    to: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> anyhow::Result<Option<Vec<u8>>> {
    let socket = udp_socket(netns, any_port_for(to))?;
    socket
        .connect(to)
        .with_context(|| format!("connect a UDP socket to {to}"))?;
    udp_request_connected(&socket, payload, timeout)
}

/// Sends `payload` on a socket already connected, and waits for the answer.
pub fn udp_request_connected(
    socket: &UdpSocket,
    payload: &[u8],
    timeout: Duration,
) -> anyhow::Result<Option<Vec<u8>>> {
    socket.send(payload).context("send a UDP request")?;
    socket.set_read_timeout(Some(timeout))?;
    let mut buffer = [0u8; 2048];
    match socket.recv(&mut buffer) {
        Ok(read) => Ok(Some(buffer[..read].to_vec())),
        Err(error) if is_timeout(&error) => Ok(None),
        Err(error) => Err(error).context("receive a UDP answer"),
    }
}

/// Sends `payload` with `send_to` from an unconnected socket in `netns`, and waits for an
/// answer from `to`; `None` when none came within `timeout`.
pub fn udp_request_unconnected(
    netns: &Netns,
    to: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> anyhow::Result<Option<Vec<u8>>> {
    let socket = udp_socket(netns, any_port_for(to))?;
    udp_request_to(&socket, to, payload, timeout)
}

/// Sends `payload` to `to` with `send_to` on `socket`, and waits for an answer from `to`.
pub fn udp_request_to(
    socket: &UdpSocket,
    to: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> anyhow::Result<Option<Vec<u8>>> {
    socket
        .send_to(payload, to)
        .with_context(|| format!("send a UDP request to {to}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match udp_receive(socket, deadline.saturating_duration_since(Instant::now()))? {
            Some((answer, from)) if same_peer(from, to) => return Ok(Some(answer)),
            Some(_) => continue,
            None => return Ok(None),
        }
    }
}

/// The next datagram `socket` receives within `timeout`, with its source.
pub fn udp_receive(
    socket: &UdpSocket,
    timeout: Duration,
) -> anyhow::Result<Option<(Vec<u8>, SocketAddr)>> {
    if timeout.is_zero() {
        return Ok(None);
    }
    socket.set_read_timeout(Some(timeout))?;
    let mut buffer = [0u8; 2048];
    match socket.recv_from(&mut buffer) {
        Ok((read, from)) => Ok(Some((buffer[..read].to_vec(), from))),
        Err(error) if is_timeout(&error) => Ok(None),
        Err(error) => Err(error).context("receive a datagram"),
    }
}

/// Sends `count` SYNs from `netns` to `to`, spread evenly over `over`, each from a new
/// socket closed at once: one SYN each, no retransmission.
pub fn syn_flood(netns: &Netns, to: SocketAddr, count: u32, over: Duration) -> anyhow::Result<()> {
    netns.run(|| -> anyhow::Result<()> {
        let start = Instant::now();
        for sent in 0..count {
            let due = start + over.mul_f64(f64::from(sent) / f64::from(count.max(1)));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }

            let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))
                .context("open a TCP socket")?;
            socket.set_nonblocking(true)?;
            match socket.connect(&SockAddr::from(to)) {
                Err(error) if error.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
                Err(error) => return Err(error).with_context(|| format!("send a SYN to {to}")),
                Ok(()) => {}
            }
        }
        Ok(())
    })?
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Whether two socket addresses are the same peer, an IPv4-mapped IPv6 address being equal
/// to its IPv4 form.
fn same_peer(a: SocketAddr, b: SocketAddr) -> bool {
    let canonical = |ip: IpAddr| ip.to_canonical();
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}
