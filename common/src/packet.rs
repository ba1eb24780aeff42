//! The packet parser: Ethernet (up to two VLAN tags), IPv4 with options, IPv6 with its
//! extension-header chain, and the first bytes of TCP, UDP, ICMP and ICMPv6.
//!
//! It runs in the kernel over XDP and tc packet memory and in userspace over byte slices,
//! through [`Packet`]. Every read is bounds-checked; a packet that ends too early is reported
//! under its own [`Reason`], never guessed at.

use crate::{
    Reason,
    maps::{Addr, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, ipv4_mapped, is_ipv4_mapped},
};

/// Read access to a packet's bytes.
pub trait Packet {
    /// The `N` bytes at `offset`, or `None` when the packet ends before `offset + N`.
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
}

impl Packet for [u8] {
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let bytes = self.get(offset..offset.checked_add(N)?)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Some(out)
    }
}

pub const ETH_HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// VLAN tags walked before a packet is refused.
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before a packet is refused.
pub const MAX_IPV6_EXTENSIONS: usize = 8;
/// Bytes of IPv6 extension headers walked before a packet is refused. Besides refusing
/// absurd chains, it keeps every offset bounded, which the verifier needs.
pub const MAX_IPV6_EXTENSION_BYTES: usize = 1024;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;

/// What the parser learnt of a packet. Filled as far as parsing got, so that a drop of a
/// malformed packet can still name its addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    /// 4 or 6; 0 before the IP header is read.
    pub family: u8,
    /// IP protocol of the upper layer (after IPv6 extension headers).
    pub protocol: u8,
    pub source: Addr,
    pub destination: Addr,
    /// Host byte order; 0 for ICMP.
    pub source_port: u16,
    pub destination_port: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Reads `N` bytes at `offset` if they lie before `end` (the end the IP header declares).
#[inline(always)]
fn read_before<P: Packet + ?Sized, const N: usize>(
    pkt: &P,
    offset: usize,
    end: usize,
) -> Option<[u8; N]> {
    if offset + N > end {
        return None;
    }
    pkt.read::<N>(offset)
}

/// Parses a packet that starts with an Ethernet header.
///
/// `Ok(())` means `headers` holds a complete TCP, UDP or ICMP header for the verdict to judge.
/// `Err(reason)` is a verdict already: a pass (`NonIp`, `LaterFragment`) or a drop.
#[inline(always)]
pub fn parse<P: Packet + ?Sized>(pkt: &P, headers: &mut Headers) -> Result<(), Reason> {
    let mut offset = 12;
    let mut ethertype = be16(pkt.read::<2>(offset).ok_or(Reason::TruncatedEthernet)?);
    offset = ETH_HEADER_LEN;

    let mut tags = 0;
    while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        if tags == MAX_VLAN_TAGS {
            return Err(Reason::TooManyVlanTags);
        }
        let tag = pkt.read::<4>(offset).ok_or(Reason::TruncatedVlan)?;
        ethertype = be16([tag[2], tag[3]]);
        offset += 4;
        tags += 1;
    }

    match ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(pkt, offset, headers),
        ETHERTYPE_IPV6 => parse_ipv6(pkt, offset, headers),
        _ => Err(Reason::NonIp),
    }
}

#[inline(always)]
fn parse_ipv4<P: Packet + ?Sized>(
    pkt: &P,
    offset: usize,
    headers: &mut Headers,
) -> Result<(), Reason> {
    let ip = pkt.read::<20>(offset).ok_or(Reason::TruncatedIpv4)?;
    if ip[0] >> 4 != 4 {
        return Err(Reason::BadIpv4Header);
    }
    let header_len = ((ip[0] & 0x0f) as usize) * 4;
    let total_len = be16([ip[2], ip[3]]) as usize;
    if header_len < 20 || total_len < header_len {
        return Err(Reason::BadIpv4Header);
    }
    // The options, and everything the header says follows, must be in the packet.
    let end = offset + total_len;
    pkt.read::<1>(end - 1).ok_or(Reason::TruncatedIpv4)?;

    headers.family = 4;
    headers.protocol = ip[9];
    headers.source = ipv4_mapped([ip[12], ip[13], ip[14], ip[15]]);
    headers.destination = ipv4_mapped([ip[16], ip[17], ip[18], ip[19]]);

    let fragment = be16([ip[6], ip[7]]);
    let fragment_offset = fragment & 0x1fff;
    let more_fragments = fragment & 0x2000 != 0;
    if fragment_offset == 1 {
        return Err(Reason::TinyFragmentOffset);
    }
    if fragment_offset != 0 {
        return Err(Reason::LaterFragment);
    }

    match ip[9] {
        PROTO_TCP | PROTO_UDP | PROTO_ICMP => {
            parse_upper(pkt, offset + header_len, end, more_fragments, headers)
        }
        _ => Err(Reason::ProtocolNotAllowed),
    }
}

#[inline(always)]
fn parse_ipv6<P: Packet + ?Sized>(
    pkt: &P,
    offset: usize,
    headers: &mut Headers,
) -> Result<(), Reason> {
    let ip = pkt.read::<40>(offset).ok_or(Reason::TruncatedIpv6)?;
    if ip[0] >> 4 != 6 {
        return Err(Reason::BadIpv6Header);
    }
    let end = offset + 40 + be16([ip[4], ip[5]]) as usize;
    pkt.read::<1>(end - 1).ok_or(Reason::TruncatedIpv6)?;

    headers.family = 6;
    let mut source = [0u8; 16];
    let mut destination = [0u8; 16];
    source.copy_from_slice(&ip[8..24]);
    destination.copy_from_slice(&ip[24..40]);
    headers.source = source;
    headers.destination = destination;
    // An IPv4-mapped source would be judged as the IPv4 address it maps, against its grants
    // and prefixes; no node may send one (RFC 4291 2.5.5.2), and Linux drops them too.
    if is_ipv4_mapped(&source) {
        return Err(Reason::BadIpv6Header);
    }

    let mut next = ip[6];
    let mut cursor = offset + 40;
    let mut first_fragment = false;
    let mut walked = 0;
    while walked < MAX_IPV6_EXTENSIONS {
        let length = match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH => {
                // Hop-by-hop options are only valid right after the fixed header (RFC 8200).
                if next == IPV6_HOP_BY_HOP && walked != 0 {
                    return Err(Reason::BadIpv6Extension);
                }
                let ext =
                    read_before::<P, 2>(pkt, cursor, end).ok_or(Reason::TruncatedIpv6Extension)?;
                let length = if next == IPV6_AUTH {
                    (ext[1] as usize + 2) * 4
                } else {
                    (ext[1] as usize + 1) * 8
                };
                next = ext[0];
                length
            }
            IPV6_FRAGMENT => {
                let ext =
                    read_before::<P, 4>(pkt, cursor, end).ok_or(Reason::TruncatedIpv6Extension)?;
                let fragment = be16([ext[2], ext[3]]);
                if fragment >> 3 != 0 {
                    headers.protocol = ext[0];
                    return Err(Reason::LaterFragment);
                }
                // A repeated fragment header must not forget that an earlier one was first.
                first_fragment |= fragment & 1 != 0;
                next = ext[0];
                8
            }
            _ => break,
        };
        cursor += length;
        if cursor - offset - 40 > MAX_IPV6_EXTENSION_BYTES {
            return Err(Reason::Ipv6ExtensionChainTooLong);
        }
        walked += 1;
    }
    headers.protocol = next;

    match next {
        PROTO_TCP | PROTO_UDP | PROTO_ICMPV6 => {
            parse_upper(pkt, cursor, end, first_fragment, headers)
        }
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH | IPV6_FRAGMENT => {
            Err(Reason::Ipv6ExtensionChainTooLong)
        }
        _ => Err(Reason::ProtocolNotAllowed),
    }
}

/// Parses the TCP, UDP or ICMP header at `offset`, which must end before `end`.
#[inline(always)]
fn parse_upper<P: Packet + ?Sized>(
    pkt: &P,
    offset: usize,
    end: usize,
    first_fragment: bool,
    headers: &mut Headers,
) -> Result<(), Reason> {
    let truncated = |whole: Reason| {
        if first_fragment {
            Reason::ShortFirstFragment
        } else {
            whole
        }
    };
    match headers.protocol {
        PROTO_TCP => {
            // The whole fixed header must be here, flags included, or a later fragment could
            // supply them.
            if offset + 20 > end {
                return Err(truncated(Reason::TruncatedTcp));
            }
            let tcp = pkt
                .read::<14>(offset)
                .ok_or(truncated(Reason::TruncatedTcp))?;
            if tcp[12] >> 4 < 5 {
                return Err(Reason::BadTcpHeader);
            }
            headers.source_port = be16([tcp[0], tcp[1]]);
            headers.destination_port = be16([tcp[2], tcp[3]]);
            headers.tcp_flags = tcp[13];
            Ok(())
        }
        PROTO_UDP => {
            let udp =
                read_before::<P, 4>(pkt, offset, end).ok_or(truncated(Reason::TruncatedUdp))?;
            if offset + 8 > end {
                return Err(truncated(Reason::TruncatedUdp));
            }
            headers.source_port = be16([udp[0], udp[1]]);
            headers.destination_port = be16([udp[2], udp[3]]);
            Ok(())
        }
        _ => {
            let icmp = read_before::<P, 4>(pkt, offset, end).ok_or(Reason::TruncatedIcmp)?;
            headers.icmp_type = icmp[0];
            Ok(())
        }
    }
}
