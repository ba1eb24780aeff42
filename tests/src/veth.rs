//! A veth pair between two namespaces, each end up and addressed (IPv4 and IPv6).

use crate::netns::{Netns, ip};

/// One end of a veth pair: the namespace it lives in, its name, and its addresses with
/// their prefix lengths ("10.201.0.1/24", "fd00:201::1/64"), each optionally followed by
/// more words of `ip address add` ("fd00:201::3/64 preferred_lft 0").
#[derive(Clone, Copy, Debug)]
pub struct End<'a> {
    pub netns: &'a Netns,
    pub name: &'a str,
    pub addresses: &'a [&'a str],
}

/// A veth pair, deleted when dropped (deleting one end deletes both).
#[derive(Debug)]
pub struct VethPair {
    netns: String,
    name: String,
    peer: String,
}

impl VethPair {
    /// Creates the pair directly inside the two namespaces, so that it never appears in the
    /// machine's own namespace, then addresses both ends and brings them up. IPv6 addresses
    /// skip duplicate address detection (`nodad`) so that they are usable at once.
    pub fn new(a: End<'_>, b: End<'_>) -> anyhow::Result<Self> {
        a.netns.ip(&[
            "link",
            "add",
            a.name,
            "type",
            "veth",
            "peer",
            "name",
            b.name,
            "netns",
            b.netns.name(),
        ])?;
        let pair = Self {
            netns: a.netns.name().to_owned(),
            name: a.name.to_owned(),
            peer: b.name.to_owned(),
        };

        for end in [a, b] {
            for address in end.addresses {
                let mut words = address.split_whitespace();
                let prefix = words.next().unwrap_or_default();
                let mut args = vec!["address", "add", prefix, "dev", end.name];
                if prefix.contains(':') {
                    args.push("nodad");
                }
                args.extend(words);
                end.netns.ip(&args)?;
            }
            end.netns.ip(&["link", "set", end.name, "up"])?;
        }
        Ok(pair)
    }

    /// The name of the first end.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the second end.
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // The namespace may already be gone, and the pair with it: nothing to report then.
        if std::path::Path::new("/run/netns")
            .join(&self.netns)
            .exists()
        {
            let _ = ip(&["-n", &self.netns, "link", "del", &self.name]);
        }
    }
}
