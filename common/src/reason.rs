//! Why a packet was passed or dropped: one code per counter, the same in kernel and agent.

/// The reason behind a verdict. The value indexes the counters array, so it must stay below
/// [`Reason::COUNT`]. Codes below [`Reason::FIRST_DROP`] pass; the others drop (in enforce mode).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// ARP, LLDP and anything else that is not IPv4 or IPv6.
    NonIp = 0,
    /// TCP that does not open a connection (no SYN, or SYN+ACK): replies to the host's own
    /// connections and segments of established ones.
    TcpNotNew = 1,
    /// A new connection or datagram to a declared endpoint, from an allowed source.
    Endpoint = 2,
    /// A new connection or datagram covered by a live grant for its source.
    Grant = 3,
    /// UDP answering a flow the host itself sent.
    UdpReply = 4,
    /// ICMP or ICMPv6 the network needs (errors, echo reply, neighbour discovery).
    IcmpEssential = 5,
    /// Other ICMP, passed because the policy says `icmp = "all"`.
    IcmpAllowed = 6,
    /// A non-first fragment: it cannot complete a first fragment that was dropped.
    LaterFragment = 7,

    /// A new TCP connection or UDP datagram to a port that nothing opens.
    PortClosed = 16,
    /// The port is declared, but not for this source address.
    SourceNotAllowed = 17,
    /// ICMP that is neither essential nor allowed by the policy.
    IcmpBlocked = 18,
    /// An IP protocol other than TCP, UDP and ICMP (SCTP, GRE, ESP, ...).
    ProtocolNotAllowed = 19,
    /// A granted port whose grant has expired.
    GrantExpired = 20,
    /// A segment of an established TCP connection to a port whose gate cuts connections when
    /// their grant ends, from a source without a live grant.
    GrantEnded = 21,

    TruncatedEthernet = 32,
    TruncatedVlan = 33,
    TooManyVlanTags = 34,
    TruncatedIpv4 = 35,
    BadIpv4Header = 36,
    TruncatedIpv6 = 37,
    BadIpv6Header = 38,
    TruncatedIpv6Extension = 39,
    Ipv6ExtensionChainTooLong = 40,
    BadIpv6Extension = 41,
    TruncatedTcp = 42,
    BadTcpHeader = 43,
    TruncatedUdp = 44,
    TruncatedIcmp = 45,
    /// A first fragment that does not hold the whole TCP or UDP header.
    ShortFirstFragment = 46,
    /// An IPv4 fragment at offset 1 (8 bytes), which can overwrite TCP flags (RFC 1858).
    TinyFragmentOffset = 47,
}

impl Reason {
    /// Size of the counters array: every code is below it.
    pub const COUNT: usize = 64;
    /// The first code that drops.
    pub const FIRST_DROP: u8 = 16;
    /// The first code that means the packet itself is malformed.
    pub const FIRST_MALFORMED: u8 = 32;

    /// Every reason, in code order.
    pub const ALL: [Reason; 30] = [
        Reason::NonIp,
        Reason::TcpNotNew,
        Reason::Endpoint,
        Reason::Grant,
        Reason::UdpReply,
        Reason::IcmpEssential,
        Reason::IcmpAllowed,
        Reason::LaterFragment,
        Reason::PortClosed,
        Reason::SourceNotAllowed,
        Reason::IcmpBlocked,
        Reason::ProtocolNotAllowed,
        Reason::GrantExpired,
        Reason::GrantEnded,
        Reason::TruncatedEthernet,
        Reason::TruncatedVlan,
        Reason::TooManyVlanTags,
        Reason::TruncatedIpv4,
        Reason::BadIpv4Header,
        Reason::TruncatedIpv6,
        Reason::BadIpv6Header,
        Reason::TruncatedIpv6Extension,
        Reason::Ipv6ExtensionChainTooLong,
        Reason::BadIpv6Extension,
        Reason::TruncatedTcp,
        Reason::BadTcpHeader,
        Reason::TruncatedUdp,
        Reason::TruncatedIcmp,
        Reason::ShortFirstFragment,
        Reason::TinyFragmentOffset,
    ];

    /// Whether the packet passes in enforce mode.
    #[inline(always)]
    pub const fn passes(self) -> bool {
        (self as u8) < Self::FIRST_DROP
    }

    /// Whether the packet is malformed (a subset of the drops).
    #[inline(always)]
    pub const fn is_malformed(self) -> bool {
        (self as u8) >= Self::FIRST_MALFORMED
    }

    /// The code back as a reason, for codes read from a map or an event.
    pub const fn from_code(code: u8) -> Option<Reason> {
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i] as u8 == code {
                return Some(Self::ALL[i]);
            }
            i += 1;
        }
        None
    }

    /// The name used in events, metrics and status (snake_case, stable).
    pub const fn name(self) -> &'static str {
        match self {
            Reason::NonIp => "non_ip",
            Reason::TcpNotNew => "tcp_not_new",
            Reason::Endpoint => "endpoint",
            Reason::Grant => "grant",
            Reason::UdpReply => "udp_reply",
            Reason::IcmpEssential => "icmp_essential",
            Reason::IcmpAllowed => "icmp_allowed",
            Reason::LaterFragment => "later_fragment",
            Reason::PortClosed => "port_closed",
            Reason::SourceNotAllowed => "source_not_allowed",
            Reason::IcmpBlocked => "icmp_blocked",
            Reason::ProtocolNotAllowed => "protocol_not_allowed",
            Reason::GrantExpired => "grant_expired",
            Reason::GrantEnded => "grant_ended",
            Reason::TruncatedEthernet => "truncated_ethernet",
            Reason::TruncatedVlan => "truncated_vlan",
            Reason::TooManyVlanTags => "too_many_vlan_tags",
            Reason::TruncatedIpv4 => "truncated_ipv4",
            Reason::BadIpv4Header => "bad_ipv4_header",
            Reason::TruncatedIpv6 => "truncated_ipv6",
            Reason::BadIpv6Header => "bad_ipv6_header",
            Reason::TruncatedIpv6Extension => "truncated_ipv6_extension",
            Reason::Ipv6ExtensionChainTooLong => "ipv6_extension_chain_too_long",
            Reason::BadIpv6Extension => "bad_ipv6_extension",
            Reason::TruncatedTcp => "truncated_tcp",
            Reason::BadTcpHeader => "bad_tcp_header",
            Reason::TruncatedUdp => "truncated_udp",
            Reason::TruncatedIcmp => "truncated_icmp",
            Reason::ShortFirstFragment => "short_first_fragment",
            Reason::TinyFragmentOffset => "tiny_fragment_offset",
        }
    }
}
