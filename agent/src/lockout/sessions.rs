//! The SSH connections to this host that a policy must not lock out: the session this
//! command runs in (`$SSH_CONNECTION`), and what the kernel knows, the established TCP
//! connections to a port that an sshd process listens on (`/proc`).

use std::{
    collections::{BTreeSet, HashSet},
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use tracing::debug;

use crate::policy::SessionEnv;

/// What sshd's processes are called: the listener, and since OpenSSH 9.8 and 10.0 the
/// per-session and pre-authentication processes.
const SSHD_NAMES: [&str; 3] = ["sshd", "sshd-session", "sshd-auth"];
/// Values of the `st` column, from the kernel's `include/net/tcp_states.h`.
const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0a;

/// Where an SSH connection was learnt of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerOrigin {
    /// `$SSH_CONNECTION`: the session this command runs in.
    ThisSession,
    /// An established connection to an sshd port, in `/proc/net/tcp` or `tcp6`.
    Kernel,
}

/// An SSH connection to this host, as the guard would see its packets. Addresses are
/// canonical: an IPv4-mapped address is given as the IPv4 address it maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SshPeer {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub origin: PeerOrigin,
}

/// One row of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketRow {
    local: SocketAddr,
    remote: SocketAddr,
    state: u8,
    inode: u64,
}

impl SshPeer {
    /// The session `$SSH_CONNECTION` describes ("client_ip client_port server_ip
    /// server_port"), when it reads as sshd writes it.
    pub fn from_ssh_connection(value: &str) -> Option<SshPeer> {
        let fields: Vec<&str> = value.split_whitespace().collect();
        let [client, client_port, server, server_port] = fields.as_slice() else {
            return None;
        };

        // A link-local address comes with its zone, "fe80::1%eth0".
        let address = |field: &str| field.split('%').next()?.parse::<IpAddr>().ok();
        Some(SshPeer {
            client: canonical(address(client)?, client_port.parse().ok()?),
            server: canonical(address(server)?, server_port.parse().ok()?),
            origin: PeerOrigin::ThisSession,
        })
    }

    /// Whether the connection stays on this host, over loopback, which is never guarded.
    fn is_local(&self) -> bool {
        self.client.ip().is_loopback() || self.client.ip() == self.server.ip()
    }
}

/// The SSH connections to this host: this session's first, then the kernel's, one for each
/// client address and server port. When `/proc` cannot be read (sshd's sockets are
/// root's), only `$SSH_CONNECTION` is known; that is logged at debug level, never an error.
pub fn ssh_peers(env: &SessionEnv) -> Vec<SshPeer> {
    peers_in(env, Path::new("/proc"))
}

/// [`ssh_peers`], with `/proc` at `proc_root`.
fn peers_in(env: &SessionEnv, proc_root: &Path) -> Vec<SshPeer> {
    let mut peers: Vec<SshPeer> = env
        .ssh_connection
        .as_deref()
        .and_then(SshPeer::from_ssh_connection)
        .into_iter()
        .collect();

    match established_to_sshd(proc_root) {
        Ok(found) => peers.extend(found),
        Err(error) => debug!(
            %error,
            "cannot read the ssh connections in /proc; only $SSH_CONNECTION is known"
        ),
    }

    let mut seen = HashSet::new();
    peers.retain(|peer| !peer.is_local() && seen.insert((peer.client.ip(), peer.server.port())));
    peers
}

/// The established connections to the ports that sshd listens on, from a `/proc` tree.
fn established_to_sshd(proc_root: &Path) -> io::Result<Vec<SshPeer>> {
    let mut rows = parse_table(&fs::read_to_string(proc_root.join("net/tcp"))?);
    match fs::read_to_string(proc_root.join("net/tcp6")) {
        Ok(text) => rows.extend(parse_table(&text)),
        // A kernel without IPv6.
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }

    let inodes = sshd_socket_inodes(proc_root)?;
    let ports: BTreeSet<u16> = rows
        .iter()
        .filter(|row| row.state == TCP_LISTEN && inodes.contains(&row.inode))
        .map(|row| row.local.port())
        .collect();
    debug!(?ports, "ports sshd listens on");

    let peers = rows
        .iter()
        .filter(|row| row.state == TCP_ESTABLISHED && ports.contains(&row.local.port()))
        .map(|row| SshPeer {
            client: canonical(row.remote.ip(), row.remote.port()),
            server: canonical(row.local.ip(), row.local.port()),
            origin: PeerOrigin::Kernel,
        })
        .collect();
    Ok(peers)
}

/// The inodes of the sockets that sshd's processes hold, read from their `fd` directories.
/// A process whose descriptors cannot be read (another user's, or gone) is skipped.
fn sshd_socket_inodes(proc_root: &Path) -> io::Result<HashSet<u64>> {
    let mut inodes = HashSet::new();
    for entry in fs::read_dir(proc_root)? {
        let pid_dir = entry?.path();
        let is_process = pid_dir
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.bytes().all(|byte| byte.is_ascii_digit()));
        let Ok(comm) = fs::read_to_string(pid_dir.join("comm")) else {
            continue;
        };
        if !is_process || !SSHD_NAMES.contains(&comm.trim_end()) {
            continue;
        }

        let descriptors = match fs::read_dir(pid_dir.join("fd")) {
            Ok(descriptors) => descriptors,
            Err(error) => {
                debug!(%error, process = %pid_dir.display(), "cannot read the sockets of sshd");
                continue;
            }
        };
        for descriptor in descriptors.flatten() {
            let Ok(target) = fs::read_link(descriptor.path()) else {
                continue;
            };
            let inode = target
                .to_str()
                .and_then(|target| target.strip_prefix("socket:["))
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inode| inode.parse::<u64>().ok());
            inodes.extend(inode);
        }
    }
    Ok(inodes)
}

/// The rows of `/proc/net/tcp` or `tcp6` text; the header and rows that do not read are
/// skipped.
fn parse_table(text: &str) -> Vec<SocketRow> {
    text.lines().skip(1).filter_map(parse_row).collect()
}

fn parse_row(line: &str) -> Option<SocketRow> {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [_, local, remote, state, _, _, _, _, _, inode, ..] = fields.as_slice() else {
        return None;
    };
    Some(SocketRow {
        local: parse_address(local)?,
        remote: parse_address(remote)?,
        state: u8::from_str_radix(state, 16).ok()?,
        inode: inode.parse().ok()?,
    })
}

/// "0100007F:0016" (IPv4) or 32 hex digits and a port (IPv6). The kernel prints each
/// 32-bit word of the address as the number it is in memory, so in host byte order.
fn parse_address(field: &str) -> Option<SocketAddr> {
    let (address, port) = field.split_once(':')?;
    if !address.is_ascii() {
        return None;
    }
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);

    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(address)?)),
        32 => {
            let mut octets = [0u8; 16];
            for (index, chunk) in octets.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(&address[8 * index..8 * index + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::from_str_radix(port, 16).ok()?))
}

fn canonical(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.to_canonical(), port)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// sshd listening on 0.0.0.0:22 (inode 20563) and [::]:22 (20565), CUPS on
    /// 127.0.0.1:631, and connections to 10.0.2.15:22 from 10.0.2.2:54214 and to port 443.
    #[cfg(target_endian = "little")]
    const TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20563 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21034 1 0000000000000000 100 0 0 10 0
   2: 0F02000A:0016 0202000A:D3C6 01 00000000:00000000 02:0009F7B3 00000000     0        0 31337 4 0000000000000000 20 4 29 10 -1
   3: 0F02000A:01BB 0402000A:C350 01 00000000:00000000 02:0009F7B3 00000000    33        0 31338 4 0000000000000000 20 4 29 10 -1
";

    /// sshd on [::]:22, and connections to it from ::ffff:10.0.2.3 (IPv4 over the dual-stack
    /// socket) and 2001:db8::9, and one from the host to itself over loopback.
    #[cfg(target_endian = "little")]
    const TCP6: &str = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20565 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000F02000A:0016 0000000000000000FFFF00000302000A:C001 01 00000000:00000000 02:00000A0B 00000000     0        0 40001 1 0000000000000000 20 4 30 10 -1
   2: B80D0120000000000000000001000000:0016 B80D0120000000000000000009000000:E1F2 01 00000000:00000000 02:00000A0B 00000000     0        0 40002 1 0000000000000000 20 4 30 10 -1
   3: 00000000000000000000000001000000:0016 00000000000000000000000001000000:9C40 01 00000000:00000000 02:00000A0B 00000000     0        0 40003 1 0000000000000000 20 4 30 10 -1
";

    fn address(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn kernel_peer(client: &str, server: &str) -> SshPeer {
        SshPeer {
            client: address(client),
            server: address(server),
            origin: PeerOrigin::Kernel,
        }
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn ipv4_rows_read_addresses_ports_states_and_inodes() {
        let rows = parse_table(TCP);

        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[0],
            SocketRow {
                local: address("0.0.0.0:22"),
                remote: address("0.0.0.0:0"),
                state: TCP_LISTEN,
                inode: 20563,
            }
        );
        assert_eq!(
            rows[2],
            SocketRow {
                local: address("10.0.2.15:22"),
                remote: address("10.0.2.2:54214"),
                state: TCP_ESTABLISHED,
                inode: 31337,
            }
        );
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn ipv6_rows_read_each_word_in_host_order() {
        let rows = parse_table(TCP6);

        assert_eq!(rows[0].local, address("[::]:22"));
        assert_eq!(rows[2].local, address("[2001:db8::1]:22"));
        assert_eq!(rows[2].remote, address("[2001:db8::9]:57842"));
        assert_eq!(rows[3].remote, address("[::1]:40000"));
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn ipv4_mapped_rows_read_as_mapped_addresses() {
        let rows = parse_table(TCP6);

        assert_eq!(rows[1].remote, address("[::ffff:10.0.2.3]:49153"));
        assert_eq!(rows[1].state, TCP_ESTABLISHED);
        assert_eq!(rows[1].inode, 40001);
    }

    #[test]
    fn rows_that_do_not_read_are_skipped() {
        let text =
            "header\n   0: 0100007F:0016 short\n   1: XYZ:0016 00000000:0000 0A a b c d e 7\n";

        assert_eq!(parse_table(text), []);
    }

    /// A `/proc` tree with an sshd holding the listening sockets, a shell, and `net/tcp{,6}`.
    #[cfg(target_endian = "little")]
    fn fake_proc() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let path = root.path();
        fs::create_dir_all(path.join("net")).unwrap();
        fs::write(path.join("net/tcp"), TCP).unwrap();
        fs::write(path.join("net/tcp6"), TCP6).unwrap();

        let process = |pid: &str, comm: &str, sockets: &[u64]| {
            fs::create_dir_all(path.join(pid).join("fd")).unwrap();
            fs::write(path.join(pid).join("comm"), format!("{comm}\n")).unwrap();
            for (fd, inode) in sockets.iter().enumerate() {
                symlink(
                    format!("socket:[{inode}]"),
                    path.join(pid).join("fd").join(fd.to_string()),
                )
                .unwrap();
            }
        };
        process("812", "sshd", &[20563, 20565]);
        process("4242", "sshd-session", &[31337]);
        process("1", "systemd", &[21034]);
        fs::create_dir_all(path.join("self")).unwrap();
        root
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn connections_to_the_ports_sshd_listens_on_are_found() {
        let proc_root = fake_proc();

        let peers = established_to_sshd(proc_root.path()).unwrap();

        assert_eq!(
            peers,
            [
                kernel_peer("10.0.2.2:54214", "10.0.2.15:22"),
                kernel_peer("10.0.2.3:49153", "10.0.2.15:22"),
                kernel_peer("[2001:db8::9]:57842", "[2001:db8::1]:22"),
                kernel_peer("[::1]:40000", "[::1]:22"),
            ]
        );
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn no_readable_sshd_means_no_kernel_peers() {
        let proc_root = fake_proc();
        fs::remove_dir_all(proc_root.path().join("812/fd")).unwrap();

        assert_eq!(established_to_sshd(proc_root.path()).unwrap(), []);
    }

    #[test]
    fn missing_proc_is_an_error_to_degrade_on() {
        let root = tempfile::tempdir().unwrap();

        assert!(established_to_sshd(root.path()).is_err());
    }

    fn env(ssh_connection: &str) -> SessionEnv {
        SessionEnv {
            ssh_connection: Some(ssh_connection.to_owned()),
        }
    }

    #[test]
    fn unreadable_proc_leaves_this_session_only() {
        let root = tempfile::tempdir().unwrap();

        let peers = peers_in(&env("203.0.113.9 51234 192.0.2.1 22"), root.path());

        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].origin, PeerOrigin::ThisSession);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn this_session_comes_first_once_and_loopback_is_left_out() {
        let proc_root = fake_proc();

        let peers = peers_in(&env("10.0.2.2 54214 10.0.2.15 22"), proc_root.path());

        let found: Vec<_> = peers
            .iter()
            .map(|peer| (peer.client, peer.origin))
            .collect();
        assert_eq!(
            found,
            [
                (address("10.0.2.2:54214"), PeerOrigin::ThisSession),
                (address("10.0.2.3:49153"), PeerOrigin::Kernel),
                (address("[2001:db8::9]:57842"), PeerOrigin::Kernel),
            ]
        );
    }

    #[test]
    fn ssh_connection_reads_client_and_server() {
        let peer = SshPeer::from_ssh_connection("203.0.113.9 51234 192.0.2.1 22").unwrap();

        assert_eq!(peer.client, address("203.0.113.9:51234"));
        assert_eq!(peer.server, address("192.0.2.1:22"));
        assert_eq!(peer.origin, PeerOrigin::ThisSession);
    }

    #[test]
    fn ssh_connection_with_zones_and_mapped_addresses_reads_canonically() {
        let zoned = SshPeer::from_ssh_connection("fe80::9%eth0 51234 fe80::1%eth0 22").unwrap();
        let mapped = SshPeer::from_ssh_connection("::ffff:10.1.2.3 51234 ::ffff:10.0.0.1 22");

        assert_eq!(zoned.client, address("[fe80::9]:51234"));
        assert_eq!(mapped.unwrap().client, address("10.1.2.3:51234"));
    }

    #[test]
    fn unreadable_ssh_connection_is_ignored() {
        assert_eq!(SshPeer::from_ssh_connection("garbage"), None);
        assert_eq!(
            SshPeer::from_ssh_connection("10.0.0.1 1 10.0.0.2 port"),
            None
        );
    }

    #[test]
    fn connections_over_loopback_are_not_guarded() {
        let local = |text: &str| SshPeer::from_ssh_connection(text).unwrap().is_local();

        assert!(local("127.0.0.1 51234 127.0.0.1 22"));
        assert!(local("10.0.0.1 51234 10.0.0.1 22"));
        assert!(!local("10.0.0.9 51234 10.0.0.1 22"));
    }
}
