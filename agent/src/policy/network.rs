//! Network names and addresses as the policy file writes them: interface names, source
//! prefixes and listen addresses. Each check returns the message of what is wrong.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The kernel's limit on an interface name, IFNAMSIZ less the terminating NUL.
const MAX_INTERFACE_NAME: usize = 15;

/// Checks a name of `interfaces` the way the kernel's `dev_valid_name` does, and refuses
/// loopback, which the guard never attaches to.
pub(super) fn interface_name(name: &str) -> Result<(), String> {
    if name == "lo" {
        return Err("interfaces: \"lo\" is loopback, which is never guarded".to_owned());
    }

    let valid = !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if !valid {
        return Err(format!(
            "interfaces: expected an interface name of 1 to 15 bytes without '/', ':' or \
             whitespace, or \"*\", found {name:?}"
        ));
    }
    Ok(())
}

/// Reads a source of `from`: a prefix such as "10.0.0.0/8", or an address standing for its
/// host prefix. A prefix with host bits set is refused rather than silently widened.
pub(super) fn source_prefix(text: &str) -> Result<IpNet, String> {
    let prefix = match text.parse::<IpNet>() {
        Ok(prefix) => prefix,
        Err(_) => text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            format!(
                "from: expected an address or a prefix such as \"10.0.0.0/8\" or \
                 \"2001:db8::/32\", found {text:?}"
            )
        })?,
    };

    let network = prefix.trunc();
    if network != prefix {
        return Err(format!(
            "from: {text:?} has host bits set: expected \"{network}\""
        ));
    }
    Ok(prefix)
}

/// Reads a listen address such as "0.0.0.0:8443" or "[::]:8443", refusing port 0.
pub(super) fn listen_address(key: &str, text: &str) -> Result<SocketAddr, String> {
    let address = text.parse::<SocketAddr>().map_err(|_| {
        format!(
            "{key}: expected an address and port such as \"0.0.0.0:8443\" or \"[::]:8443\", \
             found {text:?}"
        )
    })?;

    if address.port() == 0 {
        return Err(format!(
            "{key}: expected a port from 1 to 65535, found {text:?}"
        ));
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        assert!(interface_name("eth0").is_ok());
        assert!(interface_name("enp0s31f6.100").is_ok());
        assert!(interface_name("").is_err());
        assert!(interface_name("a-name-of-16-byt").is_err());
        assert!(interface_name("eth0:1").is_err());
        assert!(interface_name("eth 0").is_err());
        assert!(interface_name("a/b").is_err());
        assert!(interface_name("..").is_err());
    }

    #[test]
    fn loopback_interface_is_refused_with_its_reason() {
        let message = interface_name("lo").unwrap_err();

        assert!(message.contains("never guarded"), "{message}");
    }

    #[test]
    fn bare_address_is_its_host_prefix() {
        assert_eq!(
            source_prefix("192.0.2.7"),
            Ok("192.0.2.7/32".parse().unwrap())
        );
        assert_eq!(
            source_prefix("2001:db8::7"),
            Ok("2001:db8::7/128".parse().unwrap())
        );
    }

    #[test]
    fn prefix_with_host_bits_names_the_corrected_prefix() {
        assert_eq!(
            source_prefix("10.1.2.3/8"),
            Err("from: \"10.1.2.3/8\" has host bits set: expected \"10.0.0.0/8\"".to_owned())
        );
    }

    #[test]
    fn listen_address_needs_a_port() {
        assert!(listen_address("listen", "[::]:8443").is_ok());
        assert!(listen_address("listen", "0.0.0.0").is_err());
        assert!(listen_address("listen", "0.0.0.0:0").is_err());
    }
}
