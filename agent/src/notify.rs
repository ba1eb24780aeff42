//! The systemd notification protocol (`sd_notify`): READY, RELOADING, STOPPING, STATUS and
//! the watchdog, sent as datagrams to `$NOTIFY_SOCKET`. Without that variable (not under
//! systemd, or `Type=` other than notify) every call does nothing.

use std::{io, os::unix::net::UnixDatagram, path::PathBuf, time::Duration};

/// Where systemd listens for this service's notifications.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<PathBuf>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`. Abstract sockets (`@name`) are not supported and are ignored,
    /// with a warning.
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from);
        if socket
            .as_ref()
            .is_some_and(|s| s.to_string_lossy().starts_with('@'))
        {
            tracing::warn!("NOTIFY_SOCKET is an abstract socket, which portguard does not support");
            return Self { socket: None };
        }
        Self { socket }
    }

    pub fn to_socket(socket: PathBuf) -> Self {
        Self {
            socket: Some(socket),
        }
    }

    /// Sends `state` (newline-separated `KEY=value` lines); failures are logged, never fatal.
    pub fn send(&self, state: &str) {
        let Some(socket) = &self.socket else { return };
        let sent = UnixDatagram::unbound().and_then(|s| s.send_to(state.as_bytes(), socket));
        if let Err(error) = sent {
            tracing::warn!(%error, socket = %socket.display(), "notify systemd");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A reload begins: systemd waits for the next READY=1 before it calls the reload done.
    pub fn reloading(&self, status: &str) {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
            .unwrap_or(0);
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={now}\nSTATUS={status}"
        ));
    }

    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, when it is set for this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Receives what a [`Notifier`] sends (tests, and checks of a unit).
pub fn listen(path: &std::path::Path) -> io::Result<UnixDatagram> {
    UnixDatagram::bind(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        let mut buffer = [0u8; 512];
        let n = socket.recv(&mut buffer).unwrap();
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    #[test]
    fn ready_and_stopping_reach_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = listen(&path).unwrap();
        let notifier = Notifier::to_socket(path);

        notifier.ready("guarding 2 interfaces");
        assert_eq!(received(&socket), "READY=1\nSTATUS=guarding 2 interfaces");
        notifier.watchdog();
        assert_eq!(received(&socket), "WATCHDOG=1");
        notifier.stopping("detaching");
        assert_eq!(received(&socket), "STOPPING=1\nSTATUS=detaching");
    }

    #[test]
    fn a_reload_is_announced_with_the_monotonic_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = listen(&path).unwrap();
        let notifier = Notifier::to_socket(path);

        notifier.reloading("reloading the policy");
        let message = received(&socket);
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines[0], "RELOADING=1");
        // systemd wants MONOTONIC_USEC with RELOADING=1: now, in CLOCK_MONOTONIC microseconds.
        let usec: u64 = lines[1]
            .strip_prefix("MONOTONIC_USEC=")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{message}"));
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
        let now_usec = now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1_000;
        assert!(usec > 0 && usec <= now_usec, "{usec} vs {now_usec}");
        assert_eq!(lines[2], "STATUS=reloading the policy");
        notifier.ready("policy generation 2");
        assert_eq!(received(&socket), "READY=1\nSTATUS=policy generation 2");
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        Notifier { socket: None }.ready("x");
    }
}
