//! [`Frame::expected`]: what a correct parser makes of a frame, worked out from how the frame
//! was built rather than from its bytes, so that tests can check the parser against it.

use super::frame::{
    AUTH, DEST_OPTS, Damage, FRAGMENT, Frame, HOP_BY_HOP, Network, ROUTING, Transport,
};
use crate::{
    Reason,
    maps::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, ipv4_mapped, is_ipv4_mapped},
    packet::{
        ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN, Headers,
        MAX_IPV6_EXTENSION_BYTES, MAX_IPV6_EXTENSIONS, MAX_VLAN_TAGS,
    },
};

impl Frame {
    /// What a correct parser makes of this frame, worked out from how it was built rather than
    /// from its bytes: `Ok` with the headers to judge, or the reason it stops at. `None` for a
    /// frame damaged on purpose, whose outcome depends on the exact bytes.
    pub fn expected(&self) -> Option<Result<Headers, Reason>> {
        if self.damage != Damage::default() {
            return None;
        }
        if self.tags.len() > MAX_VLAN_TAGS {
            return Some(Err(Reason::TooManyVlanTags));
        }

        let mut headers = Headers {
            protocol: self.protocol_number(),
            ..Headers::default()
        };
        match &self.network {
            Network::Other { ethertype } => {
                let ip_or_tag = [
                    ETHERTYPE_IPV4,
                    ETHERTYPE_IPV6,
                    ETHERTYPE_VLAN,
                    ETHERTYPE_QINQ,
                ];
                return if ip_or_tag.contains(ethertype) {
                    None
                } else {
                    Some(Err(Reason::NonIp))
                };
            }
            Network::V4 {
                source,
                destination,
                fragment,
                ..
            } => {
                headers.family = 4;
                headers.source = ipv4_mapped(*source);
                headers.destination = ipv4_mapped(*destination);
                match fragment & 0x1fff {
                    0 => {}
                    1 => return Some(Err(Reason::TinyFragmentOffset)),
                    _ => return Some(Err(Reason::LaterFragment)),
                }
                if ![PROTO_TCP, PROTO_UDP, PROTO_ICMP].contains(&headers.protocol) {
                    return Some(Err(Reason::ProtocolNotAllowed));
                }
            }
            Network::V6 {
                source,
                destination,
                exts,
            } => {
                headers.family = 6;
                headers.source = *source;
                headers.destination = *destination;
                if is_ipv4_mapped(source) {
                    return Some(Err(Reason::BadIpv6Header));
                }
                let mut chain_len = 0;
                for (i, ext) in exts.iter().enumerate() {
                    if i == MAX_IPV6_EXTENSIONS {
                        return Some(Err(Reason::Ipv6ExtensionChainTooLong));
                    }
                    if ext.code == HOP_BY_HOP && i != 0 {
                        return Some(Err(Reason::BadIpv6Extension));
                    }
                    if ext.fragment_offset() != 0 {
                        return Some(Err(Reason::LaterFragment));
                    }
                    chain_len += ext.len();
                    if chain_len > MAX_IPV6_EXTENSION_BYTES {
                        return Some(Err(Reason::Ipv6ExtensionChainTooLong));
                    }
                }
                // Raw bytes announced as an extension header: the walk goes on into them.
                if [HOP_BY_HOP, ROUTING, FRAGMENT, AUTH, DEST_OPTS].contains(&headers.protocol) {
                    return None;
                }
                if ![PROTO_TCP, PROTO_UDP, PROTO_ICMPV6].contains(&headers.protocol) {
                    return Some(Err(Reason::ProtocolNotAllowed));
                }
            }
        }

        match self.transport {
            Transport::Tcp {
                source_port,
                destination_port,
                flags,
            } => {
                headers.source_port = source_port;
                headers.destination_port = destination_port;
                headers.tcp_flags = flags;
            }
            Transport::Udp {
                source_port,
                destination_port,
            } => {
                headers.source_port = source_port;
                headers.destination_port = destination_port;
            }
            Transport::Icmp { icmp_type, .. } => headers.icmp_type = icmp_type,
            // Raw bytes under a protocol the parser reads: the outcome depends on them.
            Transport::Other { .. } => return None,
        }
        Some(Ok(headers))
    }
}
