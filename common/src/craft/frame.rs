//! [`Frame`], a builder of Ethernet frames: VLAN tags, IPv4 with options and fragments, IPv6
//! with extension headers, TCP, UDP, ICMP and any other protocol. Length fields and
//! checksums are right unless a method makes them wrong on purpose.

extern crate std;

use std::{vec, vec::Vec};

use crate::{
    maps::{Addr, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP},
    packet::{ETH_HEADER_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN},
};

const MAC_DESTINATION: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_SOURCE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// "No next header": what a frame carries until a transport is chosen.
const NO_NEXT_HEADER: u8 = 59;

pub(super) const HOP_BY_HOP: u8 = 0;
pub(super) const ROUTING: u8 = 43;
pub(super) const FRAGMENT: u8 = 44;
pub(super) const AUTH: u8 = 51;
pub(super) const DEST_OPTS: u8 = 60;

/// An IPv6 address from its eight 16-bit groups: `v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1])`.
pub const fn v6(groups: [u16; 8]) -> Addr {
    let mut addr = [0u8; 16];
    let mut i = 0;
    while i < 8 {
        addr[2 * i] = (groups[i] >> 8) as u8;
        addr[2 * i + 1] = groups[i] as u8;
        i += 1;
    }
    addr
}

/// An IPv6 extension header for [`Frame::ext`]. Its next-header byte is filled in when the
/// frame is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext {
    pub(super) code: u8,
    pub(super) bytes: Vec<u8>,
}

impl Ext {
    /// The next-header code that announces this header.
    pub fn code(&self) -> u8 {
        self.code
    }

    /// Length in bytes, as its length field declares it.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The fragment offset (8-byte units) of a fragment header; 0 for other headers.
    pub fn fragment_offset(&self) -> u16 {
        if self.code == FRAGMENT {
            u16::from_be_bytes([self.bytes[2], self.bytes[3]]) >> 3
        } else {
            0
        }
    }
}

/// An options header (hop-by-hop, destination options, routing) of `len` bytes, rounded up
/// to a multiple of 8 within 8..=2048 and filled with Pad1 options.
fn options_header(code: u8, len: usize) -> Ext {
    let len = len.clamp(8, 2048).div_ceil(8) * 8;
    let mut bytes = vec![0u8; len];
    bytes[1] = (len / 8 - 1) as u8;
    Ext { code, bytes }
}

/// Hop-by-hop options of `len` bytes (8..=2048, a multiple of 8).
pub fn hop_by_hop(len: usize) -> Ext {
    options_header(HOP_BY_HOP, len)
}

/// Destination options of `len` bytes (8..=2048, a multiple of 8).
pub fn dest_opts(len: usize) -> Ext {
    options_header(DEST_OPTS, len)
}

/// A routing header of `len` bytes (8..=2048), of an experimental type with no segments left,
/// which a node ignores.
pub fn routing(len: usize) -> Ext {
    let mut ext = options_header(ROUTING, len);
    ext.bytes[2] = 253;
    ext
}

/// An authentication header of `len` bytes, rounded up to a multiple of 4 within 8..=1028
/// (its length field counts 4-byte words, minus 2).
pub fn auth(len: usize) -> Ext {
    let len = len.clamp(8, 1028).div_ceil(4) * 4;
    let mut bytes = vec![0u8; len];
    bytes[1] = (len / 4 - 2) as u8;
    Ext { code: AUTH, bytes }
}

/// A fragment header at `offset_units` (8-byte units, 13 bits) with the more-fragments flag.
pub fn fragment(offset_units: u16, more: bool) -> Ext {
    let field = (offset_units << 3) | more as u16;
    let [high, low] = field.to_be_bytes();
    Ext {
        code: FRAGMENT,
        bytes: vec![0, 0, high, low, 0, 0, 0x12, 0x34],
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Network {
    Other {
        ethertype: u16,
    },
    V4 {
        source: [u8; 4],
        destination: [u8; 4],
        options: Vec<u8>,
        fragment: u16,
    },
    V6 {
        source: Addr,
        destination: Addr,
        exts: Vec<Ext>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transport {
    Tcp {
        source_port: u16,
        destination_port: u16,
        flags: u8,
    },
    Udp {
        source_port: u16,
        destination_port: u16,
    },
    Icmp {
        icmp_type: u8,
        code: u8,
    },
    Other {
        protocol: u8,
        len: usize,
    },
}

/// Fields set wrong on purpose, and cuts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Damage {
    total_length: Option<u16>,
    payload_length: Option<u16>,
    version: Option<u8>,
    ihl: Option<u8>,
    clip_transport: Option<usize>,
    truncate: Option<usize>,
}

/// An Ethernet frame to build, e.g.
/// `Frame::ipv4([10, 0, 0, 5], HOST_V4).vlan(100).tcp(40000, 22, TCP_SYN).build()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// VLAN tags, outermost first: TPID and TCI.
    pub(super) tags: Vec<(u16, u16)>,
    pub(super) network: Network,
    pub(super) transport: Transport,
    pub(super) payload: usize,
    pub(super) damage: Damage,
}

impl Frame {
    fn new(network: Network) -> Self {
        let transport = Transport::Other {
            protocol: NO_NEXT_HEADER,
            len: 0,
        };
        Self {
            tags: Vec::new(),
            network,
            transport,
            payload: 0,
            damage: Damage::default(),
        }
    }

    /// An IPv4 packet, carrying nothing until a transport is chosen.
    pub fn ipv4(source: [u8; 4], destination: [u8; 4]) -> Self {
        Self::new(Network::V4 {
            source,
            destination,
            options: Vec::new(),
            fragment: 0,
        })
    }

    /// An IPv6 packet, carrying nothing until a transport is chosen.
    pub fn ipv6(source: Addr, destination: Addr) -> Self {
        Self::new(Network::V6 {
            source,
            destination,
            exts: Vec::new(),
        })
    }

    /// A frame of another ethertype (ARP is 0x0806, LLDP 0x88cc); give it bytes with
    /// [`Frame::payload`].
    pub fn non_ip(ethertype: u16) -> Self {
        Self::new(Network::Other { ethertype })
    }

    /// Adds an 802.1Q tag inside those already there.
    pub fn vlan(mut self, id: u16) -> Self {
        self.tags.push((ETHERTYPE_VLAN, id & 0x0fff));
        self
    }

    /// Adds an 802.1ad (QinQ service) tag inside those already there.
    pub fn qinq(mut self, id: u16) -> Self {
        self.tags.push((ETHERTYPE_QINQ, id & 0x0fff));
        self
    }

    /// IPv4 options, padded with zeros (end of options) to a multiple of 4 bytes. More than
    /// 40 bytes overflow the IHL field, which then lies.
    pub fn ipv4_options(mut self, bytes: &[u8]) -> Self {
        let Network::V4 { options, .. } = &mut self.network else {
            panic!("ipv4_options on a frame that is not IPv4");
        };
        *options = bytes.to_vec();
        options.resize(bytes.len().div_ceil(4) * 4, 0);
        self
    }

    /// Makes the packet a fragment at `offset_units` (8-byte units): IPv4 sets the header's
    /// fragment field, IPv6 appends a fragment header to the chain.
    pub fn fragment(mut self, offset_units: u16, more: bool) -> Self {
        match &mut self.network {
            Network::V4 { fragment, .. } => {
                *fragment = (offset_units & 0x1fff) | ((more as u16) << 13)
            }
            Network::V6 { exts, .. } => exts.push(fragment(offset_units, more)),
            Network::Other { .. } => panic!("fragment on a frame that is not IP"),
        }
        self
    }

    /// Appends an IPv6 extension header to the chain.
    pub fn ext(mut self, ext: Ext) -> Self {
        let Network::V6 { exts, .. } = &mut self.network else {
            panic!("ext on a frame that is not IPv6");
        };
        exts.push(ext);
        self
    }

    pub fn tcp(mut self, source_port: u16, destination_port: u16, flags: u8) -> Self {
        self.transport = Transport::Tcp {
            source_port,
            destination_port,
            flags,
        };
        self
    }

    pub fn udp(mut self, source_port: u16, destination_port: u16) -> Self {
        self.transport = Transport::Udp {
            source_port,
            destination_port,
        };
        self
    }

    /// ICMP on IPv4, ICMPv6 on IPv6.
    pub fn icmp(mut self, icmp_type: u8, code: u8) -> Self {
        self.transport = Transport::Icmp { icmp_type, code };
        self
    }

    /// Any other IP protocol (or IPv6 next header), with `len` bytes of its own.
    pub fn protocol(mut self, protocol: u8, len: usize) -> Self {
        self.transport = Transport::Other { protocol, len };
        self
    }

    /// `len` bytes of data after the transport header.
    pub fn payload(mut self, len: usize) -> Self {
        self.payload = len;
        self
    }

    /// Wrong on purpose: the IPv4 total length.
    pub fn total_length(mut self, value: u16) -> Self {
        self.damage.total_length = Some(value);
        self
    }

    /// Wrong on purpose: the IPv6 payload length.
    pub fn payload_length(mut self, value: u16) -> Self {
        self.damage.payload_length = Some(value);
        self
    }

    /// Wrong on purpose: the IP version nibble.
    pub fn version(mut self, value: u8) -> Self {
        self.damage.version = Some(value & 0x0f);
        self
    }

    /// Wrong on purpose: the IPv4 header length, in 4-byte words.
    pub fn ihl(mut self, value: u8) -> Self {
        self.damage.ihl = Some(value & 0x0f);
        self
    }

    /// Cuts the transport header and payload to `len` bytes before the IP length fields are
    /// computed: the IP header then declares a short transport header, as a tiny first
    /// fragment does.
    pub fn clip_transport(mut self, len: usize) -> Self {
        self.damage.clip_transport = Some(len);
        self
    }

    /// Cuts the built frame to `len` bytes, whatever its headers say.
    pub fn truncate(mut self, len: usize) -> Self {
        self.damage.truncate = Some(len);
        self
    }

    /// Where the IP header starts: after Ethernet and the VLAN tags.
    pub fn network_offset(&self) -> usize {
        ETH_HEADER_LEN + 4 * self.tags.len()
    }

    /// Where the transport header starts: after the IP header, options and extensions.
    pub fn transport_offset(&self) -> usize {
        self.network_offset()
            + match &self.network {
                Network::Other { .. } => 0,
                Network::V4 { options, .. } => 20 + options.len(),
                Network::V6 { exts, .. } => 40 + exts.iter().map(Ext::len).sum::<usize>(),
            }
    }

    /// The IP protocol of the transport, as the header announces it.
    pub fn protocol_number(&self) -> u8 {
        match self.transport {
            Transport::Tcp { .. } => PROTO_TCP,
            Transport::Udp { .. } => PROTO_UDP,
            Transport::Icmp { .. } if matches!(self.network, Network::V6 { .. }) => PROTO_ICMPV6,
            Transport::Icmp { .. } => PROTO_ICMP,
            Transport::Other { protocol, .. } => protocol,
        }
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.transport_offset() + 64 + self.payload);
        out.extend_from_slice(&MAC_DESTINATION);
        out.extend_from_slice(&MAC_SOURCE);
        for (tpid, tci) in &self.tags {
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&tci.to_be_bytes());
        }

        let mut transport = self.transport_bytes();
        if let Some(len) = self.damage.clip_transport {
            transport.truncate(len);
        }
        match &self.network {
            Network::Other { ethertype } => {
                out.extend_from_slice(&ethertype.to_be_bytes());
                out.extend(pattern(self.payload));
                transport.clear();
            }
            Network::V4 {
                source,
                destination,
                options,
                fragment,
            } => {
                out.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
                let header_len = 20 + options.len();
                let total = self
                    .damage
                    .total_length
                    .unwrap_or((header_len + transport.len()) as u16);
                let version_ihl = (self.damage.version.unwrap_or(4) << 4)
                    | self.damage.ihl.unwrap_or((header_len / 4) as u8 & 0x0f);
                let mut header = vec![version_ihl, 0];
                header.extend_from_slice(&total.to_be_bytes());
                header.extend_from_slice(&[0x12, 0x34]);
                header.extend_from_slice(&fragment.to_be_bytes());
                header.extend_from_slice(&[64, self.protocol_number(), 0, 0]);
                header.extend_from_slice(source);
                header.extend_from_slice(destination);
                header.extend_from_slice(options);
                let sum = checksum(&header);
                header[10..12].copy_from_slice(&sum.to_be_bytes());
                out.extend(header);

                let pseudo = [&source[..], &destination[..], &[0, self.protocol_number()]].concat();
                self.fill_checksum(&mut transport, pseudo);
            }
            Network::V6 {
                source,
                destination,
                exts,
            } => {
                out.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
                let chain_len: usize = exts.iter().map(Ext::len).sum();
                let payload = self
                    .damage
                    .payload_length
                    .unwrap_or((chain_len + transport.len()) as u16);
                let first = exts.first().map_or(self.protocol_number(), Ext::code);
                out.extend_from_slice(&[self.damage.version.unwrap_or(6) << 4, 0, 0, 0]);
                out.extend_from_slice(&payload.to_be_bytes());
                out.extend_from_slice(&[first, 64]);
                out.extend_from_slice(source);
                out.extend_from_slice(destination);
                for (i, ext) in exts.iter().enumerate() {
                    let next = exts.get(i + 1).map_or(self.protocol_number(), Ext::code);
                    out.push(next);
                    out.extend_from_slice(&ext.bytes[1..]);
                }

                let pseudo = [&source[..], &destination[..], &[0, self.protocol_number()]].concat();
                self.fill_checksum(&mut transport, pseudo);
            }
        }
        out.extend(transport);

        if let Some(len) = self.damage.truncate {
            out.truncate(len);
        }
        out
    }

    /// The transport header and payload, checksum left zero.
    fn transport_bytes(&self) -> Vec<u8> {
        let mut out = match self.transport {
            Transport::Tcp {
                source_port,
                destination_port,
                flags,
            } => {
                let [s0, s1] = source_port.to_be_bytes();
                let [d0, d1] = destination_port.to_be_bytes();
                vec![
                    s0, s1, d0, d1, 0, 0, 0x10, 0, 0, 0, 0, 0, 0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0,
                ]
            }
            Transport::Udp {
                source_port,
                destination_port,
            } => {
                let [s0, s1] = source_port.to_be_bytes();
                let [d0, d1] = destination_port.to_be_bytes();
                let [l0, l1] = ((8 + self.payload) as u16).to_be_bytes();
                vec![s0, s1, d0, d1, l0, l1, 0, 0]
            }
            Transport::Icmp { icmp_type, code } => vec![icmp_type, code, 0, 0, 0, 1, 0, 1],
            Transport::Other { len, .. } => pattern(len).collect(),
        };
        out.extend(pattern(self.payload));
        out
    }

    /// Fills in the TCP, UDP or ICMP checksum, when the transport header is whole. `pseudo`
    /// holds the addresses and protocol; ICMP over IPv4 has no pseudo-header.
    fn fill_checksum(&self, transport: &mut [u8], mut pseudo: Vec<u8>) {
        let at = match self.transport {
            Transport::Tcp { .. } => 16,
            Transport::Udp { .. } => 6,
            Transport::Icmp { .. } => 2,
            Transport::Other { .. } => return,
        };
        if self.damage.clip_transport.is_some() || transport.len() < at + 2 {
            return;
        }
        if self.protocol_number() == PROTO_ICMP {
            pseudo.clear();
        } else {
            pseudo.extend_from_slice(&(transport.len() as u16).to_be_bytes());
        }
        pseudo.extend_from_slice(transport);
        let sum = match checksum(&pseudo) {
            // UDP sends a computed 0 as all ones: 0 means "no checksum".
            0 if at == 6 => 0xffff,
            sum => sum,
        };
        transport[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }
}

/// `len` bytes of filler that is not all zeros.
fn pattern(len: usize) -> impl Iterator<Item = u8> {
    (0..len).map(|i| 0xa5 ^ i as u8)
}

/// The Internet checksum (RFC 1071) of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
