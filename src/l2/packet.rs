//! Ethernet II, ARP and ICMPv6 Neighbor Discovery codec for the layer 2 announcer. Pure: no
//! sockets, no clock, no logging; decoders take any `&[u8]` and return a value or a
//! [`PacketError`], never panic (fuzzed by `fuzz/fuzz_targets/{arp,ndp}_decode.rs`).
//!
//! Puts on the wire what MetalLB 0.9–0.12 (`internal/layer2/{arp,ndp}.go`, via mdlayher/arp and
//! mdlayher/ndp) puts there, spec §6.3–§6.5:
//!
//! * ARP reply to a who-has for an owned IP: unicast to the requester's sender hardware address,
//!   sender = our MAC + the requested IP, target = the requester ([`ArpFrame::reply`]).
//! * Gratuitous ARP, request **and** reply, both broadcast, sender IP = target IP = the service IP,
//!   target MAC `ff:ff:ff:ff:ff:ff` ([`ArpFrame::gratuitous`]).
//! * Solicited Neighbor Advertisement to the solicitation's source: S=1, O=0, Target Link-Layer
//!   Address option = our MAC ([`NdpFrame::reply`]).
//! * Unsolicited Neighbor Advertisement to `ff02::1`: S=0, O=1, Target Link-Layer Address option
//!   ([`NdpFrame::unsolicited_advertisement`]).
//!
//! Unlike upstream, which used an ICMPv6 socket and let the kernel build the IPv6 header, NDP
//! messages here are whole Ethernet frames (AF_PACKET), so this module also writes the IPv6
//! header (hop limit 255) and the ICMPv6 checksum over the pseudo-header.
//!
//! # Ethernet II (IEEE 802.3 / RFC 894)
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Destination MAC (6 octets)                   |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! |                     Source MAC (6 octets)                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   EtherType (0x0806 ARP,      |  payload (padded to 46 octets, no FCS: the NIC adds it)
//! |              0x86dd IPv6)     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! # ARP for Ethernet/IPv4 (RFC 826), 28 octets
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     HTYPE = 1 (Ethernet)      |     PTYPE = 0x0800 (IPv4)     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   HLEN = 6    |   PLEN = 4    |  OPER (1 request, 2 reply)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            Sender hardware address (SHA, 6 octets)            |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               |  Sender protocol address (SPA |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  4 octets)                    |  Target hardware address (THA |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! |  6 octets)                                                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             Target protocol address (TPA, 4 octets)           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! # IPv6 header (RFC 8200 §3), 40 octets
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Payload Length        | Next Hdr = 58 | Hop Limit=255 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Source Address (16 octets)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |               Destination Address (16 octets)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Hop-by-Hop and Destination Options extension headers (RFC 8200 §4.3, §4.6) are skipped when
//! decoding; any other next header is not NDP.
//!
//! # Neighbor Solicitation (RFC 4861 §4.3) / Advertisement (§4.4)
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Type 135 / 136|   Code = 0    |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|S|O|                   Reserved (NS: all 32 bits)            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   Target Address (16 octets)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Options ...
//! +-+-+-+-+-+-+-+-+-+-+-+-
//!
//! Source (type 1) / Target (type 2) Link-Layer Address option (§4.6.1), Ethernet:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Type 1 / 2  |  Length = 1   |   Link-Layer Address (6 octets)
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The checksum (RFC 4443 §2.3) is the 16-bit one's complement of the one's complement sum of
//! the ICMPv6 message prefixed by the pseudo-header of RFC 8200 §8.1: source address,
//! destination address, upper-layer length (32 bits), 24 zero bits, next header 58.
//!
//! Received NS/NA are validated as RFC 4861 §7.1.1/§7.1.2 ask (hop limit 255, checksum, code 0,
//! length ≥ 24, target not multicast, no zero-length option, DAD solicitations only to a
//! solicited-node group and without a source link-layer option, no solicited NA to multicast).
//! As in Linux, a multicast source address (RFC 4291 §2.7) and a link-layer address option
//! whose length is not 8 octets are rejected too.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Result of this module.
pub type Result<T, E = PacketError> = std::result::Result<T, E>;

/// Ethernet header length (no 802.1Q tag; AF_PACKET delivers tags out of band).
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Minimum Ethernet frame length without FCS; shorter frames are zero-padded on encode.
pub const ETHERNET_MIN_FRAME_LEN: usize = 60;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// ARP hardware type Ethernet (RFC 826 `ar$hrd`).
pub const ARP_HTYPE_ETHERNET: u16 = 1;
/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;
/// IPv6 fixed header length.
pub const IPV6_HEADER_LEN: usize = 40;
/// IPv6 next header value of ICMPv6.
pub const NEXT_HEADER_ICMPV6: u8 = 58;
/// IPv6 next header value of Hop-by-Hop Options.
pub const NEXT_HEADER_HOP_BY_HOP: u8 = 0;
/// IPv6 next header value of Destination Options.
pub const NEXT_HEADER_DEST_OPTS: u8 = 60;
/// Hop limit every NDP message is sent with and must arrive with (RFC 4861 §7.1).
pub const NDP_HOP_LIMIT: u8 = 255;
/// ICMPv6 type of a Neighbor Solicitation.
pub const ICMPV6_NEIGHBOR_SOLICITATION: u8 = 135;
/// ICMPv6 type of a Neighbor Advertisement.
pub const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// NDP option type Source Link-Layer Address.
pub const NDP_OPT_SOURCE_LLA: u8 = 1;
/// NDP option type Target Link-Layer Address.
pub const NDP_OPT_TARGET_LLA: u8 = 2;
/// Length of an NS/NA without options.
pub const NDP_MIN_LEN: usize = 24;
/// The all-nodes link-local multicast group `ff02::1`.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Which layer a truncation was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Ethernet header.
    Ethernet,
    /// ARP packet.
    Arp,
    /// IPv6 header or extension header.
    Ipv6,
    /// ICMPv6 NDP message body.
    Icmpv6,
    /// NDP option.
    NdpOption,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ethernet => "ethernet header",
            Self::Arp => "arp packet",
            Self::Ipv6 => "ipv6 header",
            Self::Icmpv6 => "icmpv6 message",
            Self::NdpOption => "ndp option",
        })
    }
}

/// Why a frame was not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer bytes than the layout needs.
    #[error("truncated {layer}: need {need} bytes, have {have}")]
    Truncated {
        /// Where.
        layer: Layer,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// Not the EtherType this decoder handles.
    #[error("unexpected ethertype {0:#06x}")]
    EtherType(u16),
    /// ARP for another hardware type than Ethernet.
    #[error("arp hardware type {0} is not ethernet")]
    ArpHardwareType(u16),
    /// ARP for another protocol than IPv4.
    #[error("arp protocol type {0:#06x} is not ipv4")]
    ArpProtocolType(u16),
    /// ARP address lengths other than 6 and 4.
    #[error("arp address lengths {hlen}/{plen}, want 6/4")]
    ArpAddressLength {
        /// Hardware address length.
        hlen: u8,
        /// Protocol address length.
        plen: u8,
    },
    /// ARP operation other than request or reply (RARP, InARP, …).
    #[error("unsupported arp operation {0}")]
    ArpOperation(u16),
    /// IP version other than 6 in an IPv6 frame.
    #[error("ip version {0} in an ipv6 frame")]
    IpVersion(u8),
    /// The IPv6 payload is not ICMPv6 (after skipping hop-by-hop/destination options).
    #[error("ipv6 next header {0} is not icmpv6")]
    NextHeader(u8),
    /// ICMPv6 other than a neighbor solicitation or advertisement.
    #[error("icmpv6 type {0} is not a neighbor solicitation or advertisement")]
    NotNdp(u8),
    /// NDP message with a non-zero code.
    #[error("ndp code {0}, want 0")]
    IcmpCode(u8),
    /// NDP message that crossed a router (or was forged off-link).
    #[error("ndp hop limit {0}, want 255")]
    HopLimit(u8),
    /// Wrong ICMPv6 checksum.
    #[error("bad icmpv6 checksum {found:#06x}, want {expected:#06x}")]
    Checksum {
        /// Checksum in the message.
        found: u16,
        /// Checksum computed over the message.
        expected: u16,
    },
    /// IPv6 source address is multicast (RFC 4291 §2.7: never a source).
    #[error("ipv6 source {0} is multicast")]
    MulticastSource(Ipv6Addr),
    /// NDP target address is multicast.
    #[error("ndp target {0} is multicast")]
    MulticastTarget(Ipv6Addr),
    /// NDP option with length 0.
    #[error("zero-length ndp option of type {0}")]
    ZeroLengthOption(u8),
    /// Link-layer address option that is not 8 octets long.
    #[error("ndp link-layer address option of {0} octets, want 8")]
    LinkLayerOptionLength(usize),
    /// Solicitation from `::` not sent to a solicited-node group.
    #[error("duplicate address detection solicitation sent to {0}, not a solicited-node group")]
    DadDestination(Ipv6Addr),
    /// Solicitation from `::` carrying a source link-layer address option.
    #[error("duplicate address detection solicitation with a source link-layer address")]
    DadSourceLla,
    /// Advertisement with the solicited flag sent to a multicast group.
    #[error("solicited neighbor advertisement sent to multicast {0}")]
    SolicitedToMulticast(Ipv6Addr),
}

impl PacketError {
    /// Whether the frame is broken (count it as malformed) rather than merely not ARP/NDP for
    /// Ethernet/IPv4/IPv6 (ignore it quietly).
    pub fn is_malformed(&self) -> bool {
        !matches!(
            self,
            Self::EtherType(_)
                | Self::ArpHardwareType(_)
                | Self::ArpProtocolType(_)
                | Self::ArpOperation(_)
                | Self::NextHeader(_)
                | Self::NotNdp(_)
        )
    }

    /// A short stable label, for a metric or a debug log field.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "truncated",
            Self::EtherType(_) => "ethertype",
            Self::ArpHardwareType(_) => "arp_hardware_type",
            Self::ArpProtocolType(_) => "arp_protocol_type",
            Self::ArpAddressLength { .. } => "arp_address_length",
            Self::ArpOperation(_) => "arp_operation",
            Self::IpVersion(_) => "ip_version",
            Self::NextHeader(_) => "next_header",
            Self::NotNdp(_) => "not_ndp",
            Self::IcmpCode(_) => "icmp_code",
            Self::HopLimit(_) => "hop_limit",
            Self::Checksum { .. } => "checksum",
            Self::MulticastSource(_) => "multicast_source",
            Self::MulticastTarget(_) => "multicast_target",
            Self::ZeroLengthOption(_) => "zero_length_option",
            Self::LinkLayerOptionLength(_) => "lla_option_length",
            Self::DadDestination(_) => "dad_destination",
            Self::DadSourceLla => "dad_source_lla",
            Self::SolicitedToMulticast(_) => "solicited_to_multicast",
        }
    }
}

/// Bounds-checked reads from a byte slice; every failure is a [`PacketError::Truncated`].
#[derive(Clone, Copy)]
struct Reader<'a> {
    bytes: &'a [u8],
    layer: Layer,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], layer: Layer) -> Self {
        Self { bytes, layer }
    }

    fn truncated(&self, need: usize) -> PacketError {
        PacketError::Truncated {
            layer: self.layer,
            need,
            have: self.bytes.len(),
        }
    }

    fn slice(&self, at: usize, len: usize) -> Result<&'a [u8]> {
        let end = at.checked_add(len).ok_or(self.truncated(usize::MAX))?;
        self.bytes.get(at..end).ok_or(self.truncated(end))
    }

    fn rest(&self, at: usize) -> Result<&'a [u8]> {
        self.bytes.get(at..).ok_or(self.truncated(at))
    }

    fn array<const N: usize>(&self, at: usize) -> Result<[u8; N]> {
        let s = self.slice(at, N)?;
        <[u8; N]>::try_from(s).map_err(|_| self.truncated(at.saturating_add(N)))
    }

    fn u8(&self, at: usize) -> Result<u8> {
        self.bytes
            .get(at)
            .copied()
            .ok_or(self.truncated(at.saturating_add(1)))
    }

    fn u16(&self, at: usize) -> Result<u16> {
        self.array::<2>(at).map(u16::from_be_bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// Ethernet

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00` (the target hardware address of an ARP request).
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The six octets.
    pub fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Whether this is `ff:ff:ff:ff:ff:ff`.
    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }

    /// Whether the group bit is set (multicast, including broadcast).
    pub fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this is `00:00:00:00:00:00`.
    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(o: [u8; 6]) -> Self {
        Self(o)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A MAC address that is not six colon- or dash-separated hex octets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mac address {0:?}: want six colon-separated hex octets")]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, ParseMacError> {
        let err = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for o in &mut out {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(out))
    }
}

/// An Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetHeader {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// EtherType.
    pub ethertype: u16,
}

impl EthernetHeader {
    /// Splits a frame into its header and payload (which may carry trailing padding).
    pub fn decode(frame: &[u8]) -> Result<(Self, &[u8])> {
        let r = Reader::new(frame, Layer::Ethernet);
        let hdr = Self {
            dst: MacAddr(r.array(0)?),
            src: MacAddr(r.array(6)?),
            ethertype: r.u16(12)?,
        };
        Ok((hdr, r.rest(ETHERNET_HEADER_LEN)?))
    }

    /// The 14 header octets.
    pub fn encode(&self) -> [u8; ETHERNET_HEADER_LEN] {
        let mut b = [0u8; ETHERNET_HEADER_LEN];
        b[0..6].copy_from_slice(&self.dst.0);
        b[6..12].copy_from_slice(&self.src.0);
        b[12..14].copy_from_slice(&self.ethertype.to_be_bytes());
        b
    }

    /// Header + payload, zero-padded to [`ETHERNET_MIN_FRAME_LEN`].
    pub fn frame(&self, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity((ETHERNET_HEADER_LEN + payload.len()).max(60));
        v.extend_from_slice(&self.encode());
        v.extend_from_slice(payload);
        if v.len() < ETHERNET_MIN_FRAME_LEN {
            v.resize(ETHERNET_MIN_FRAME_LEN, 0);
        }
        v
    }
}

// ---------------------------------------------------------------------------------------------
// ARP

/// ARP operation (RFC 826 `ar$op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// 1, who-has.
    Request,
    /// 2, is-at.
    Reply,
}

impl ArpOperation {
    /// The wire value.
    pub fn code(self) -> u16 {
        match self {
            Self::Request => 1,
            Self::Reply => 2,
        }
    }
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket {
    /// Request or reply.
    pub operation: ArpOperation,
    /// Sender hardware address (SHA).
    pub sender_mac: MacAddr,
    /// Sender protocol address (SPA).
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (THA).
    pub target_mac: MacAddr,
    /// Target protocol address (TPA).
    pub target_ip: Ipv4Addr,
}

impl ArpPacket {
    /// Decodes the ARP payload of a frame (trailing padding allowed). Rejects non-Ethernet or
    /// non-IPv4 ARP, address lengths other than 6/4 and operations other than request/reply.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let r = Reader::new(bytes, Layer::Arp);
        // Check the fixed part first so a short packet reports the whole need.
        r.slice(0, ARP_LEN)?;
        let htype = r.u16(0)?;
        if htype != ARP_HTYPE_ETHERNET {
            return Err(PacketError::ArpHardwareType(htype));
        }
        let ptype = r.u16(2)?;
        if ptype != ETHERTYPE_IPV4 {
            return Err(PacketError::ArpProtocolType(ptype));
        }
        let (hlen, plen) = (r.u8(4)?, r.u8(5)?);
        if (hlen, plen) != (6, 4) {
            return Err(PacketError::ArpAddressLength { hlen, plen });
        }
        let operation = match r.u16(6)? {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            op => return Err(PacketError::ArpOperation(op)),
        };
        Ok(Self {
            operation,
            sender_mac: MacAddr(r.array(8)?),
            sender_ip: Ipv4Addr::from(r.array::<4>(14)?),
            target_mac: MacAddr(r.array(18)?),
            target_ip: Ipv4Addr::from(r.array::<4>(24)?),
        })
    }

    /// The 28 octets.
    pub fn encode(&self) -> [u8; ARP_LEN] {
        let mut b = [0u8; ARP_LEN];
        b[0..2].copy_from_slice(&ARP_HTYPE_ETHERNET.to_be_bytes());
        b[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        b[4] = 6;
        b[5] = 4;
        b[6..8].copy_from_slice(&self.operation.code().to_be_bytes());
        b[8..14].copy_from_slice(&self.sender_mac.0);
        b[14..18].copy_from_slice(&self.sender_ip.octets());
        b[18..24].copy_from_slice(&self.target_mac.0);
        b[24..28].copy_from_slice(&self.target_ip.octets());
        b
    }

    /// Whether this is a who-has for `ip`. Replies never are. Whether `ip` is owned is the
    /// caller's decision.
    pub fn is_request_for(&self, ip: Ipv4Addr) -> bool {
        self.operation == ArpOperation::Request && self.target_ip == ip
    }

    /// Whether sender and target protocol address are the same (gratuitous ARP, RFC 5227 §3).
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// The is-at answer to this request: sender = `our_mac` + the requested IP, target = the
    /// requester (mdlayher/arp `Client.Reply`).
    pub fn reply(&self, our_mac: MacAddr) -> Self {
        Self {
            operation: ArpOperation::Reply,
            sender_mac: our_mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    /// A gratuitous ARP of `operation` for `ip`: sender = `mac` + `ip`, target = broadcast +
    /// `ip` (spec §6.5).
    pub fn gratuitous(operation: ArpOperation, mac: MacAddr, ip: Ipv4Addr) -> Self {
        Self {
            operation,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: MacAddr::BROADCAST,
            target_ip: ip,
        }
    }
}

/// An ARP packet with its Ethernet addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpFrame {
    /// Ethernet destination.
    pub dst: MacAddr,
    /// Ethernet source.
    pub src: MacAddr,
    /// The ARP packet.
    pub arp: ArpPacket,
}

impl ArpFrame {
    /// Length of an encoded frame (padded to the Ethernet minimum).
    pub const LEN: usize = ETHERNET_MIN_FRAME_LEN;

    /// Decodes an Ethernet frame carrying ARP.
    pub fn decode(frame: &[u8]) -> Result<Self> {
        let (eth, payload) = EthernetHeader::decode(frame)?;
        if eth.ethertype != ETHERTYPE_ARP {
            return Err(PacketError::EtherType(eth.ethertype));
        }
        Ok(Self {
            dst: eth.dst,
            src: eth.src,
            arp: ArpPacket::decode(payload)?,
        })
    }

    /// The 60-octet frame (42 octets of header and ARP, then zero padding).
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        let eth = EthernetHeader {
            dst: self.dst,
            src: self.src,
            ethertype: ETHERTYPE_ARP,
        };
        b[..ETHERNET_HEADER_LEN].copy_from_slice(&eth.encode());
        b[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + ARP_LEN].copy_from_slice(&self.arp.encode());
        b
    }

    /// Whether the frame is addressed to us: Ethernet broadcast or `our_mac` (MetalLB ignores
    /// any other destination).
    pub fn is_addressed_to(&self, our_mac: MacAddr) -> bool {
        self.dst.is_broadcast() || self.dst == our_mac
    }

    /// Whether this is a who-has for `ip` addressed to `our_mac` (or broadcast).
    pub fn is_request_for(&self, ip: Ipv4Addr, our_mac: MacAddr) -> bool {
        self.is_addressed_to(our_mac) && self.arp.is_request_for(ip)
    }

    /// The unicast ARP reply to this request, sent from `our_mac` to the requester's sender
    /// hardware address.
    pub fn reply(&self, our_mac: MacAddr) -> Self {
        Self {
            dst: self.arp.sender_mac,
            src: our_mac,
            arp: self.arp.reply(our_mac),
        }
    }

    /// A broadcast gratuitous ARP (send both operations each round, spec §6.5).
    pub fn gratuitous(operation: ArpOperation, mac: MacAddr, ip: Ipv4Addr) -> Self {
        Self {
            dst: MacAddr::BROADCAST,
            src: mac,
            arp: ArpPacket::gratuitous(operation, mac, ip),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// IPv6 multicast helpers

/// The solicited-node multicast group of `ip`: `ff02::1:ff00:0/104` + its low 24 bits
/// (RFC 4291 §2.7.1).
pub fn solicited_node_multicast(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// Whether `ip` is a solicited-node multicast group (`ff02::1:ff00:0/104`).
pub fn is_solicited_node_multicast(ip: Ipv6Addr) -> bool {
    let o = ip.octets();
    o[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff]
}

/// The Ethernet address of an IPv6 multicast group: `33:33` + its low 32 bits (RFC 2464 §7).
pub fn ipv6_multicast_mac(group: Ipv6Addr) -> MacAddr {
    let o = group.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The Ethernet address of `ip`'s solicited-node group: `33:33:ff:xx:xx:xx`.
pub fn solicited_node_mac(ip: Ipv6Addr) -> MacAddr {
    ipv6_multicast_mac(solicited_node_multicast(ip))
}

// ---------------------------------------------------------------------------------------------
// ICMPv6 checksum

/// Adds big-endian 16-bit words of `data` (odd tail padded with a zero octet) to `sum`.
fn sum_words(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        if let [hi, lo] = c {
            sum += u64::from(u16::from_be_bytes([*hi, *lo]));
        }
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

/// The folded one's complement sum of the pseudo-header (RFC 8200 §8.1) for an ICMPv6
/// message of `len` octets, plus `parts` (each of even length except possibly the last).
fn icmpv6_sum(src: Ipv6Addr, dst: Ipv6Addr, len: usize, parts: &[&[u8]]) -> u16 {
    let mut sum = sum_words(0, &src.octets());
    sum = sum_words(sum, &dst.octets());
    let len = len as u64;
    sum += (len >> 16) + (len & 0xffff);
    sum += u64::from(NEXT_HEADER_ICMPV6);
    for p in parts {
        sum = sum_words(sum, p);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The ICMPv6 checksum of `icmp` (RFC 4443 §2.3) between `src` and `dst`, computed as if
/// its checksum field (octets 2–3) were zero.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let head = icmp.get(..2).unwrap_or(icmp);
    let tail = icmp.get(4..).unwrap_or(&[]);
    !icmpv6_sum(src, dst, icmp.len(), &[head, tail])
}

/// Whether `icmp` carries a correct checksum: the sum over pseudo-header and message,
/// checksum field included, is all ones.
fn icmpv6_checksum_ok(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> bool {
    icmpv6_sum(src, dst, icmp.len(), &[icmp]) == 0xffff
}

// ---------------------------------------------------------------------------------------------
// IPv6 and NDP

/// A Neighbor Solicitation (RFC 4861 §4.3) with the addresses of its IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborSolicitation {
    /// IPv6 source (`::` for duplicate address detection).
    pub src: Ipv6Addr,
    /// IPv6 destination (usually the target's solicited-node group).
    pub dst: Ipv6Addr,
    /// The address being resolved.
    pub target: Ipv6Addr,
    /// Source Link-Layer Address option (the first, if several).
    pub source_lla: Option<MacAddr>,
}

impl NeighborSolicitation {
    /// Whether this is a duplicate address detection probe (source `::`).
    pub fn is_dad(&self) -> bool {
        self.src.is_unspecified()
    }

    /// Whether to answer it for `ip` as MetalLB does: the target is `ip` and the solicitation
    /// carries a source link-layer address (so DAD probes are never answered). Whether `ip` is
    /// owned is the caller's decision.
    pub fn is_request_for(&self, ip: Ipv6Addr) -> bool {
        self.target == ip && self.source_lla.is_some()
    }

    /// The ICMPv6 message with its checksum.
    pub fn encode_icmpv6(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(NDP_MIN_LEN + 8);
        b.extend_from_slice(&[ICMPV6_NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&self.target.octets());
        if let Some(mac) = self.source_lla {
            push_lla_option(&mut b, NDP_OPT_SOURCE_LLA, mac);
        }
        set_checksum(&mut b, self.src, self.dst);
        b
    }
}

/// A Neighbor Advertisement (RFC 4861 §4.4) with the addresses of its IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborAdvertisement {
    /// IPv6 source.
    pub src: Ipv6Addr,
    /// IPv6 destination.
    pub dst: Ipv6Addr,
    /// The address advertised.
    pub target: Ipv6Addr,
    /// R: the sender is a router.
    pub router: bool,
    /// S: sent in response to a solicitation.
    pub solicited: bool,
    /// O: override an existing cache entry.
    pub override_flag: bool,
    /// Target Link-Layer Address option (the first, if several).
    pub target_lla: Option<MacAddr>,
}

impl NeighborAdvertisement {
    /// The answer to `ns` for its target, from `our_ip` with `our_mac` (MetalLB: S=1, O=0,
    /// TLLA). A DAD solicitation (source `::`) is answered to `ff02::1` with S=0 (RFC 4861
    /// §7.2.4), though MetalLB never answers those.
    pub fn solicited(ns: &NeighborSolicitation, our_ip: Ipv6Addr, our_mac: MacAddr) -> Self {
        let dad = ns.is_dad();
        Self {
            src: our_ip,
            dst: if dad { ALL_NODES } else { ns.src },
            target: ns.target,
            router: false,
            solicited: !dad,
            override_flag: false,
            target_lla: Some(our_mac),
        }
    }

    /// The unsolicited advertisement of `ip` to `ff02::1` (S=0, O=1, TLLA), from `our_ip`.
    pub fn unsolicited(our_ip: Ipv6Addr, ip: Ipv6Addr, our_mac: MacAddr) -> Self {
        Self {
            src: our_ip,
            dst: ALL_NODES,
            target: ip,
            router: false,
            solicited: false,
            override_flag: true,
            target_lla: Some(our_mac),
        }
    }

    fn flags(&self) -> u8 {
        (u8::from(self.router) << 7)
            | (u8::from(self.solicited) << 6)
            | (u8::from(self.override_flag) << 5)
    }

    /// The ICMPv6 message with its checksum.
    pub fn encode_icmpv6(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(NDP_MIN_LEN + 8);
        b.extend_from_slice(&[
            ICMPV6_NEIGHBOR_ADVERTISEMENT,
            0,
            0,
            0,
            self.flags(),
            0,
            0,
            0,
        ]);
        b.extend_from_slice(&self.target.octets());
        if let Some(mac) = self.target_lla {
            push_lla_option(&mut b, NDP_OPT_TARGET_LLA, mac);
        }
        set_checksum(&mut b, self.src, self.dst);
        b
    }
}

fn push_lla_option(b: &mut Vec<u8>, kind: u8, mac: MacAddr) {
    b.extend_from_slice(&[kind, 1]);
    b.extend_from_slice(&mac.0);
}

fn set_checksum(b: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) {
    let c = icmpv6_checksum(src, dst, b);
    if let Some(field) = b.get_mut(2..4) {
        field.copy_from_slice(&c.to_be_bytes());
    }
}

/// A Neighbor Discovery message this codec handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdpMessage {
    /// ICMPv6 type 135.
    Solicitation(NeighborSolicitation),
    /// ICMPv6 type 136.
    Advertisement(NeighborAdvertisement),
}

impl NdpMessage {
    /// IPv6 source.
    pub fn src(&self) -> Ipv6Addr {
        match self {
            Self::Solicitation(m) => m.src,
            Self::Advertisement(m) => m.src,
        }
    }

    /// IPv6 destination.
    pub fn dst(&self) -> Ipv6Addr {
        match self {
            Self::Solicitation(m) => m.dst,
            Self::Advertisement(m) => m.dst,
        }
    }

    /// The ICMPv6 message with its checksum.
    pub fn encode_icmpv6(&self) -> Vec<u8> {
        match self {
            Self::Solicitation(m) => m.encode_icmpv6(),
            Self::Advertisement(m) => m.encode_icmpv6(),
        }
    }

    /// The IPv6 packet: header (hop limit 255, next header 58) + ICMPv6 message.
    pub fn encode_ipv6(&self) -> Vec<u8> {
        let icmp = self.encode_icmpv6();
        let mut b = Vec::with_capacity(IPV6_HEADER_LEN + icmp.len());
        b.extend_from_slice(&[0x60, 0, 0, 0]);
        // NDP messages are a few dozen octets; the cast cannot truncate.
        b.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        b.extend_from_slice(&[NEXT_HEADER_ICMPV6, NDP_HOP_LIMIT]);
        b.extend_from_slice(&self.src().octets());
        b.extend_from_slice(&self.dst().octets());
        b.extend_from_slice(&icmp);
        b
    }

    /// Decodes an IPv6 packet carrying an NS or NA, validating it as RFC 4861 §7.1 asks.
    /// Trailing octets beyond the IPv6 payload length (Ethernet padding) are ignored.
    pub fn decode_ipv6(packet: &[u8]) -> Result<Self> {
        let r = Reader::new(packet, Layer::Ipv6);
        r.slice(0, IPV6_HEADER_LEN)?;
        let version = r.u8(0)? >> 4;
        if version != 6 {
            return Err(PacketError::IpVersion(version));
        }
        let payload_len = usize::from(r.u16(4)?);
        let mut next = r.u8(6)?;
        let hop_limit = r.u8(7)?;
        let src = Ipv6Addr::from(r.array::<16>(8)?);
        let dst = Ipv6Addr::from(r.array::<16>(24)?);
        let mut payload = r.slice(IPV6_HEADER_LEN, payload_len)?;
        // Skip hop-by-hop and destination options headers (RFC 8200 §4.3, §4.6): each is
        // `next header, length in 8-octet units not counting the first 8`, so it always
        // consumes at least 8 octets and the loop ends.
        while next == NEXT_HEADER_HOP_BY_HOP || next == NEXT_HEADER_DEST_OPTS {
            let e = Reader::new(payload, Layer::Ipv6);
            let len = (usize::from(e.u8(1)?) + 1) * 8;
            e.slice(0, len)?;
            next = e.u8(0)?;
            payload = e.rest(len)?;
        }
        if next != NEXT_HEADER_ICMPV6 {
            return Err(PacketError::NextHeader(next));
        }
        Self::decode_icmpv6(src, dst, hop_limit, payload)
    }

    /// Decodes and validates an ICMPv6 NS or NA that arrived from `src` to `dst` with
    /// `hop_limit`.
    pub fn decode_icmpv6(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, icmp: &[u8]) -> Result<Self> {
        let r = Reader::new(icmp, Layer::Icmpv6);
        let kind = r.u8(0)?;
        if kind != ICMPV6_NEIGHBOR_SOLICITATION && kind != ICMPV6_NEIGHBOR_ADVERTISEMENT {
            return Err(PacketError::NotNdp(kind));
        }
        r.slice(0, NDP_MIN_LEN)?;
        if hop_limit != NDP_HOP_LIMIT {
            return Err(PacketError::HopLimit(hop_limit));
        }
        let found = r.u16(2)?;
        if !icmpv6_checksum_ok(src, dst, icmp) {
            return Err(PacketError::Checksum {
                found,
                expected: icmpv6_checksum(src, dst, icmp),
            });
        }
        let code = r.u8(1)?;
        if code != 0 {
            return Err(PacketError::IcmpCode(code));
        }
        if src.is_multicast() {
            return Err(PacketError::MulticastSource(src));
        }
        let target = Ipv6Addr::from(r.array::<16>(8)?);
        if target.is_multicast() {
            return Err(PacketError::MulticastTarget(target));
        }
        let want = if kind == ICMPV6_NEIGHBOR_SOLICITATION {
            NDP_OPT_SOURCE_LLA
        } else {
            NDP_OPT_TARGET_LLA
        };
        let lla = parse_options(r.rest(NDP_MIN_LEN)?, want)?;
        if kind == ICMPV6_NEIGHBOR_SOLICITATION {
            if src.is_unspecified() {
                if !is_solicited_node_multicast(dst) {
                    return Err(PacketError::DadDestination(dst));
                }
                if lla.is_some() {
                    return Err(PacketError::DadSourceLla);
                }
            }
            Ok(Self::Solicitation(NeighborSolicitation {
                src,
                dst,
                target,
                source_lla: lla,
            }))
        } else {
            let flags = r.u8(4)?;
            let solicited = flags & 0x40 != 0;
            if solicited && dst.is_multicast() {
                return Err(PacketError::SolicitedToMulticast(dst));
            }
            Ok(Self::Advertisement(NeighborAdvertisement {
                src,
                dst,
                target,
                router: flags & 0x80 != 0,
                solicited,
                override_flag: flags & 0x20 != 0,
                target_lla: lla,
            }))
        }
    }
}

/// Walks NDP options (RFC 4861 §4.6); returns the first link-layer address option of type
/// `want`. Unknown options are skipped; a zero length or a truncated option is an error.
fn parse_options(mut opts: &[u8], want: u8) -> Result<Option<MacAddr>> {
    let mut found = None;
    while !opts.is_empty() {
        let r = Reader::new(opts, Layer::NdpOption);
        let kind = r.u8(0)?;
        let units = r.u8(1)?;
        if units == 0 {
            return Err(PacketError::ZeroLengthOption(kind));
        }
        let len = usize::from(units) * 8;
        let body = r.slice(0, len)?;
        if kind == NDP_OPT_SOURCE_LLA || kind == NDP_OPT_TARGET_LLA {
            if len != 8 {
                return Err(PacketError::LinkLayerOptionLength(len));
            }
            if kind == want && found.is_none() {
                found = Some(MacAddr(Reader::new(body, Layer::NdpOption).array(2)?));
            }
        }
        opts = r.rest(len)?;
    }
    Ok(found)
}

/// An NDP message with its Ethernet addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdpFrame {
    /// Ethernet destination.
    pub dst: MacAddr,
    /// Ethernet source.
    pub src: MacAddr,
    /// The message and its IPv6 addresses.
    pub msg: NdpMessage,
}

impl NdpFrame {
    /// Decodes an Ethernet frame carrying an IPv6 NS or NA.
    pub fn decode(frame: &[u8]) -> Result<Self> {
        let (eth, payload) = EthernetHeader::decode(frame)?;
        if eth.ethertype != ETHERTYPE_IPV6 {
            return Err(PacketError::EtherType(eth.ethertype));
        }
        Ok(Self {
            dst: eth.dst,
            src: eth.src,
            msg: NdpMessage::decode_ipv6(payload)?,
        })
    }

    /// The whole frame (already longer than the Ethernet minimum).
    pub fn encode(&self) -> Vec<u8> {
        let eth = EthernetHeader {
            dst: self.dst,
            src: self.src,
            ethertype: ETHERTYPE_IPV6,
        };
        eth.frame(&self.msg.encode_ipv6())
    }

    /// The solicitation carried, if this is one.
    pub fn solicitation(&self) -> Option<&NeighborSolicitation> {
        match &self.msg {
            NdpMessage::Solicitation(ns) => Some(ns),
            NdpMessage::Advertisement(_) => None,
        }
    }

    /// The Neighbor Advertisement answering this frame's solicitation for its target, from
    /// `our_ip`/`our_mac` ([`NeighborAdvertisement::solicited`]); unicast to the source
    /// link-layer address (or the Ethernet source without one), or to the all-nodes MAC for a
    /// DAD probe. `None` if this is not a solicitation.
    pub fn reply(&self, our_ip: Ipv6Addr, our_mac: MacAddr) -> Option<Self> {
        let ns = self.solicitation()?;
        let na = NeighborAdvertisement::solicited(ns, our_ip, our_mac);
        let dst = if ns.is_dad() {
            ipv6_multicast_mac(ALL_NODES)
        } else {
            ns.source_lla.unwrap_or(self.src)
        };
        Some(Self {
            dst,
            src: our_mac,
            msg: NdpMessage::Advertisement(na),
        })
    }

    /// The unsolicited advertisement of `ip` to `ff02::1` (`33:33:00:00:00:01`) from
    /// `our_ip`/`our_mac`, sent on takeover (spec §6.5).
    pub fn unsolicited_advertisement(our_ip: Ipv6Addr, ip: Ipv6Addr, our_mac: MacAddr) -> Self {
        Self {
            dst: ipv6_multicast_mac(ALL_NODES),
            src: our_mac,
            msg: NdpMessage::Advertisement(NeighborAdvertisement::unsolicited(our_ip, ip, our_mac)),
        }
    }

    /// A solicitation for `target` from `src_ip`/`src_mac` to the target's solicited-node
    /// group, with a source link-layer address option (what `ndisc6` sends; for tests and the
    /// load generator).
    pub fn solicitation_for(src_ip: Ipv6Addr, src_mac: MacAddr, target: Ipv6Addr) -> Self {
        Self {
            dst: solicited_node_mac(target),
            src: src_mac,
            msg: NdpMessage::Solicitation(NeighborSolicitation {
                src: src_ip,
                dst: solicited_node_multicast(target),
                target,
                source_lla: Some(src_mac),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REQUESTER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    const OUR_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xaa]);
    const REQUESTER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
    const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    const CLIENT_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    const OUR_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xaa);
    const SERVICE_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

    /// Who-has 203.0.113.10 tell 198.51.100.3 (02:00:00:00:00:01), written by hand from the
    /// Ethernet and RFC 826 layouts.
    #[rustfmt::skip]
    const WHO_HAS: [u8; 60] = [
        // Ethernet: dst broadcast, src 02:00:00:00:00:01, type ARP
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x08, 0x06,
        // ARP: htype 1, ptype 0x0800, hlen 6, plen 4, op 1 (request)
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
        // SHA 02:00:00:00:00:01, SPA 198.51.100.3
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0xc6, 0x33, 0x64, 0x03,
        // THA 00:00:00:00:00:00, TPA 203.0.113.10
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xcb, 0x00, 0x71, 0x0a,
        // padding to 60 octets
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// 203.0.113.10 is-at 02:00:00:00:00:aa, to the requester above.
    #[rustfmt::skip]
    const IS_AT: [u8; 60] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x02, 0x00, 0x00, 0x00, 0x00, 0xaa,
        0x08, 0x06,
        // op 2 (reply)
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02,
        // SHA 02:00:00:00:00:aa, SPA 203.0.113.10
        0x02, 0x00, 0x00, 0x00, 0x00, 0xaa, 0xcb, 0x00, 0x71, 0x0a,
        // THA 02:00:00:00:00:01, TPA 198.51.100.3
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0xc6, 0x33, 0x64, 0x03,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// Gratuitous ARP request for 203.0.113.10 from 02:00:00:00:00:aa (spec §6.5).
    #[rustfmt::skip]
    const GARP_REQUEST: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x02, 0x00, 0x00, 0x00, 0x00, 0xaa,
        0x08, 0x06,
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
        // SHA ours, SPA = the service IP
        0x02, 0x00, 0x00, 0x00, 0x00, 0xaa, 0xcb, 0x00, 0x71, 0x0a,
        // THA broadcast, TPA = the service IP
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xcb, 0x00, 0x71, 0x0a,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    // ICMPv6 checksums below were computed independently with this Python 3 script (standard
    // library only; RFC 4443 §2.3 over the RFC 8200 §8.1 pseudo-header):
    //
    //   import ipaddress, struct
    //   def csum(src, dst, icmp):
    //       ph = (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    //             + struct.pack('!I3xB', len(icmp), 58))
    //       data = ph + icmp
    //       if len(data) % 2:
    //           data += b'\0'
    //       s = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    //       while s >> 16:
    //           s = (s & 0xffff) + (s >> 16)
    //       return ~s & 0xffff
    //   t = ipaddress.IPv6Address('2001:db8::10').packed
    //   ns = bytes([135, 0, 0, 0, 0, 0, 0, 0]) + t + bytes([1, 1, 2, 0, 0, 0, 0, 1])
    //   na = bytes([136, 0, 0, 0, 0x40, 0, 0, 0]) + t + bytes([2, 1, 2, 0, 0, 0, 0, 0xaa])
    //   una = bytes([136, 0, 0, 0, 0x20, 0, 0, 0]) + t + bytes([2, 1, 2, 0, 0, 0, 0, 0xaa])
    //   print('ns ', hex(csum('fe80::1', 'ff02::1:ff00:10', ns)))    # ns  0x4b43
    //   print('na ', hex(csum('fe80::aa', 'fe80::1', na)))           # na  0x784
    //   print('una', hex(csum('fe80::aa', 'ff02::1', una)))          # una 0x2702

    /// NS for 2001:db8::10 from fe80::1 / 02:00:00:00:00:01 to its solicited-node group.
    #[rustfmt::skip]
    const NS: [u8; 86] = [
        // Ethernet: dst 33:33:ff:00:00:10, src 02:00:00:00:00:01, type IPv6
        0x33, 0x33, 0xff, 0x00, 0x00, 0x10,
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x86, 0xdd,
        // IPv6: version 6, payload length 32, next header 58, hop limit 255
        0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff,
        // src fe80::1
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
        // dst ff02::1:ff00:10
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0x00, 0x00, 0x10,
        // ICMPv6 type 135, code 0, checksum 0x4b43, reserved
        0x87, 0x00, 0x4b, 0x43, 0x00, 0x00, 0x00, 0x00,
        // target 2001:db8::10
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        // option 1 (source LLA), length 1, 02:00:00:00:00:01
        0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
    ];

    /// Solicited NA answering `NS` from fe80::aa / 02:00:00:00:00:aa (S=1, O=0).
    #[rustfmt::skip]
    const NA: [u8; 86] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x02, 0x00, 0x00, 0x00, 0x00, 0xaa,
        0x86, 0xdd,
        0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff,
        // src fe80::aa
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xaa,
        // dst fe80::1
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
        // ICMPv6 type 136, code 0, checksum 0x0784, flags S (0x40)
        0x88, 0x00, 0x07, 0x84, 0x40, 0x00, 0x00, 0x00,
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        // option 2 (target LLA), length 1, 02:00:00:00:00:aa
        0x02, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0xaa,
    ];

    /// Unsolicited NA of 2001:db8::10 to ff02::1 (S=0, O=1).
    #[rustfmt::skip]
    const UNSOLICITED_NA: [u8; 86] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01,
        0x02, 0x00, 0x00, 0x00, 0x00, 0xaa,
        0x86, 0xdd,
        0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff,
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xaa,
        // dst ff02::1
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
        // checksum 0x2702, flags O (0x20)
        0x88, 0x00, 0x27, 0x02, 0x20, 0x00, 0x00, 0x00,
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        0x02, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0xaa,
    ];

    const ETH_IP6: usize = ETHERNET_HEADER_LEN;
    const ICMP: usize = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN;

    fn who_has() -> ArpFrame {
        ArpFrame {
            dst: MacAddr::BROADCAST,
            src: REQUESTER_MAC,
            arp: ArpPacket {
                operation: ArpOperation::Request,
                sender_mac: REQUESTER_MAC,
                sender_ip: REQUESTER_IP,
                target_mac: MacAddr::ZERO,
                target_ip: SERVICE_IP,
            },
        }
    }

    /// Re-computes the checksum of an NDP frame after a test edited it.
    fn fix_checksum(frame: &mut [u8]) {
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[ETH_IP6 + 8..ETH_IP6 + 24]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[ETH_IP6 + 24..ICMP]).unwrap());
        let c = icmpv6_checksum(src, dst, &frame[ICMP..]);
        frame[ICMP + 2..ICMP + 4].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn encodes_who_has_byte_exact() {
        assert_eq!(who_has().encode(), WHO_HAS);
    }

    #[test]
    fn decodes_who_has_fields() {
        let f = ArpFrame::decode(&WHO_HAS).unwrap();
        assert_eq!(f, who_has());
        assert!(f.is_request_for(SERVICE_IP, OUR_MAC));
        assert!(!f.is_request_for(Ipv4Addr::new(203, 0, 113, 11), OUR_MAC));
        assert!(!f.arp.is_gratuitous());
        // Without the Ethernet padding too.
        assert_eq!(ArpFrame::decode(&WHO_HAS[..42]).unwrap(), f);
    }

    #[test]
    fn encodes_reply_byte_exact_and_unicast_to_requester() {
        let r = ArpFrame::decode(&WHO_HAS).unwrap().reply(OUR_MAC);
        assert_eq!(r.encode(), IS_AT);
        assert_eq!(r.dst, REQUESTER_MAC);
        assert_eq!(ArpFrame::decode(&IS_AT).unwrap(), r);
    }

    #[test]
    fn replies_are_never_requests() {
        let f = ArpFrame::decode(&IS_AT).unwrap();
        assert_eq!(f.arp.operation, ArpOperation::Reply);
        assert!(!f.arp.is_request_for(SERVICE_IP));
        assert!(!f.arp.is_request_for(REQUESTER_IP));
        assert!(!f.is_request_for(REQUESTER_IP, REQUESTER_MAC));
    }

    #[test]
    fn requests_to_another_unicast_mac_are_not_for_us() {
        let mut f = who_has();
        f.dst = MacAddr([0x02, 0, 0, 0, 0, 0xbb]);
        assert!(!f.is_request_for(SERVICE_IP, OUR_MAC));
        f.dst = OUR_MAC;
        assert!(f.is_request_for(SERVICE_IP, OUR_MAC));
    }

    #[test]
    fn encodes_gratuitous_request_and_reply_byte_exact() {
        let req = ArpFrame::gratuitous(ArpOperation::Request, OUR_MAC, SERVICE_IP);
        assert_eq!(req.encode(), GARP_REQUEST);
        assert!(req.arp.is_gratuitous());
        let rep = ArpFrame::gratuitous(ArpOperation::Reply, OUR_MAC, SERVICE_IP);
        let mut want = GARP_REQUEST;
        want[21] = 0x02; // op 2
        assert_eq!(rep.encode(), want);
        assert_eq!(ArpFrame::decode(&want).unwrap(), rep);
        // A gratuitous request is a who-has for the service IP; the owner must not answer its
        // own broadcast, which the caller sees from the sender MAC.
        assert_eq!(req.arp.sender_mac, OUR_MAC);
    }

    #[test]
    fn rejects_non_ethernet_ipv4_arp() {
        let cases: [(usize, u8, PacketError); 5] = [
            (15, 0x06, PacketError::ArpHardwareType(6)),
            (16, 0x86, PacketError::ArpProtocolType(0x8600)),
            (18, 0x08, PacketError::ArpAddressLength { hlen: 8, plen: 4 }),
            (
                19,
                0x10,
                PacketError::ArpAddressLength { hlen: 6, plen: 16 },
            ),
            (21, 0x03, PacketError::ArpOperation(3)),
        ];
        for (at, byte, want) in cases {
            let mut b = WHO_HAS;
            b[at] = byte;
            assert_eq!(ArpFrame::decode(&b), Err(want), "byte {at} = {byte:#x}");
        }
        let mut b = WHO_HAS;
        b[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        assert_eq!(ArpFrame::decode(&b), Err(PacketError::EtherType(0x0800)));
        assert!(!PacketError::EtherType(0x0800).is_malformed());
        assert!(!PacketError::ArpOperation(3).is_malformed());
    }

    #[test]
    fn rejects_every_truncation_of_an_arp_frame() {
        for n in 0..42 {
            let err = ArpFrame::decode(&WHO_HAS[..n]).unwrap_err();
            assert!(matches!(err, PacketError::Truncated { .. }), "{n}: {err}");
            assert!(err.is_malformed());
        }
        assert_eq!(
            ArpFrame::decode(&WHO_HAS[..20]),
            Err(PacketError::Truncated {
                layer: Layer::Arp,
                need: 28,
                have: 6
            })
        );
        assert_eq!(
            ArpFrame::decode(&WHO_HAS[..20]).unwrap_err().to_string(),
            "truncated arp packet: need 28 bytes, have 6"
        );
    }

    #[test]
    fn solicited_node_group_and_mac() {
        assert_eq!(
            solicited_node_multicast(SERVICE_IP6),
            "ff02::1:ff00:10".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            solicited_node_mac(SERVICE_IP6).to_string(),
            "33:33:ff:00:00:10"
        );
        let ip: Ipv6Addr = "2001:db8::abcd:ef12".parse().unwrap();
        assert_eq!(
            solicited_node_multicast(ip),
            "ff02::1:ffcd:ef12".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            solicited_node_mac(ip),
            MacAddr([0x33, 0x33, 0xff, 0xcd, 0xef, 0x12])
        );
        assert!(is_solicited_node_multicast(solicited_node_multicast(ip)));
        assert!(!is_solicited_node_multicast(ALL_NODES));
        assert_eq!(
            ipv6_multicast_mac(ALL_NODES).to_string(),
            "33:33:00:00:00:01"
        );
    }

    #[test]
    fn icmpv6_checksums_match_independent_computation() {
        assert_eq!(
            icmpv6_checksum(
                CLIENT_LL,
                solicited_node_multicast(SERVICE_IP6),
                &NS[ICMP..]
            ),
            0x4b43
        );
        assert_eq!(icmpv6_checksum(OUR_LL, CLIENT_LL, &NA[ICMP..]), 0x0784);
        assert_eq!(
            icmpv6_checksum(OUR_LL, ALL_NODES, &UNSOLICITED_NA[ICMP..]),
            0x2702
        );
        // The field's own value does not matter.
        let mut m = NA[ICMP..].to_vec();
        m[2] = 0x12;
        m[3] = 0x34;
        assert_eq!(icmpv6_checksum(OUR_LL, CLIENT_LL, &m), 0x0784);
    }

    #[test]
    fn encodes_solicitation_byte_exact() {
        let f = NdpFrame::solicitation_for(CLIENT_LL, REQUESTER_MAC, SERVICE_IP6);
        assert_eq!(f.encode(), NS);
    }

    #[test]
    fn decodes_solicitation_fields() {
        let f = NdpFrame::decode(&NS).unwrap();
        assert_eq!(f.dst, solicited_node_mac(SERVICE_IP6));
        assert_eq!(f.src, REQUESTER_MAC);
        let ns = f.solicitation().unwrap();
        assert_eq!(
            *ns,
            NeighborSolicitation {
                src: CLIENT_LL,
                dst: solicited_node_multicast(SERVICE_IP6),
                target: SERVICE_IP6,
                source_lla: Some(REQUESTER_MAC),
            }
        );
        assert!(ns.is_request_for(SERVICE_IP6));
        assert!(!ns.is_dad());
    }

    #[test]
    fn encodes_solicited_advertisement_byte_exact() {
        let reply = NdpFrame::decode(&NS)
            .unwrap()
            .reply(OUR_LL, OUR_MAC)
            .unwrap();
        assert_eq!(reply.encode(), NA);
        let NdpMessage::Advertisement(na) = reply.msg else {
            panic!("not an advertisement");
        };
        assert!(na.solicited && !na.override_flag && !na.router);
        assert_eq!(NdpFrame::decode(&NA).unwrap(), reply);
        assert_eq!(reply.reply(OUR_LL, OUR_MAC), None);
    }

    #[test]
    fn encodes_unsolicited_advertisement_byte_exact() {
        let f = NdpFrame::unsolicited_advertisement(OUR_LL, SERVICE_IP6, OUR_MAC);
        assert_eq!(f.encode(), UNSOLICITED_NA);
        assert_eq!(NdpFrame::decode(&UNSOLICITED_NA).unwrap(), f);
        let NdpMessage::Advertisement(na) = f.msg else {
            panic!("not an advertisement");
        };
        assert!(!na.solicited && na.override_flag);
        assert_eq!(na.dst, ALL_NODES);
    }

    #[test]
    fn reply_without_source_lla_goes_to_ethernet_source() {
        let mut f = NdpFrame::decode(&NS).unwrap();
        if let NdpMessage::Solicitation(ns) = &mut f.msg {
            ns.source_lla = None;
        }
        f.src = MacAddr([0x02, 0, 0, 0, 0, 0x77]);
        let bytes = f.encode();
        assert_eq!(bytes.len(), 78);
        let d = NdpFrame::decode(&bytes).unwrap();
        assert!(!d.solicitation().unwrap().is_request_for(SERVICE_IP6));
        assert_eq!(
            d.reply(OUR_LL, OUR_MAC).unwrap().dst,
            MacAddr([0x02, 0, 0, 0, 0, 0x77])
        );
    }

    #[test]
    fn dad_probe_is_decoded_but_not_a_request() {
        let dad = NdpFrame {
            dst: solicited_node_mac(SERVICE_IP6),
            src: REQUESTER_MAC,
            msg: NdpMessage::Solicitation(NeighborSolicitation {
                src: Ipv6Addr::UNSPECIFIED,
                dst: solicited_node_multicast(SERVICE_IP6),
                target: SERVICE_IP6,
                source_lla: None,
            }),
        };
        let d = NdpFrame::decode(&dad.encode()).unwrap();
        assert_eq!(d, dad);
        let ns = d.solicitation().unwrap();
        assert!(ns.is_dad());
        assert!(!ns.is_request_for(SERVICE_IP6));
        // RFC 4861 §7.2.4: a DAD probe is answered to all-nodes, not solicited.
        let r = d.reply(OUR_LL, OUR_MAC).unwrap();
        assert_eq!(r.dst, ipv6_multicast_mac(ALL_NODES));
        let NdpMessage::Advertisement(na) = r.msg else {
            panic!("not an advertisement");
        };
        assert_eq!(na.dst, ALL_NODES);
        assert!(!na.solicited);
        assert!(NdpFrame::decode(&r.encode()).is_ok());
    }

    #[test]
    fn rejects_invalid_dad_probes() {
        let mut dad = NeighborSolicitation {
            src: Ipv6Addr::UNSPECIFIED,
            dst: solicited_node_multicast(SERVICE_IP6),
            target: SERVICE_IP6,
            source_lla: Some(REQUESTER_MAC),
        };
        let ip = NdpMessage::Solicitation(dad).encode_ipv6();
        assert_eq!(NdpMessage::decode_ipv6(&ip), Err(PacketError::DadSourceLla));
        dad.source_lla = None;
        dad.dst = ALL_NODES;
        let ip = NdpMessage::Solicitation(dad).encode_ipv6();
        assert_eq!(
            NdpMessage::decode_ipv6(&ip),
            Err(PacketError::DadDestination(ALL_NODES))
        );
    }

    #[test]
    fn rejects_invalid_ndp() {
        // Hop limit 64: crossed a router or forged off-link.
        let mut b = NS;
        b[ETH_IP6 + 7] = 64;
        assert_eq!(NdpFrame::decode(&b), Err(PacketError::HopLimit(64)));
        // Bad checksum.
        let mut b = NS;
        b[ICMP + 3] ^= 0x01;
        assert_eq!(
            NdpFrame::decode(&b),
            Err(PacketError::Checksum {
                found: 0x4b42,
                expected: 0x4b43
            })
        );
        // Code 1.
        let mut b = NS;
        b[ICMP + 1] = 1;
        fix_checksum(&mut b);
        assert_eq!(NdpFrame::decode(&b), Err(PacketError::IcmpCode(1)));
        // Multicast source.
        let mut b = NS;
        b[ETH_IP6 + 8] = 0xff;
        fix_checksum(&mut b);
        assert!(matches!(
            NdpFrame::decode(&b),
            Err(PacketError::MulticastSource(_))
        ));
        // Multicast target.
        let mut b = NS;
        b[ICMP + 8] = 0xff;
        fix_checksum(&mut b);
        assert!(matches!(
            NdpFrame::decode(&b),
            Err(PacketError::MulticastTarget(_))
        ));
        // Zero-length option.
        let mut b = NS;
        b[ICMP + 25] = 0;
        fix_checksum(&mut b);
        assert_eq!(NdpFrame::decode(&b), Err(PacketError::ZeroLengthOption(1)));
        // Option longer than the message.
        let mut b = NS;
        b[ICMP + 25] = 2;
        fix_checksum(&mut b);
        assert!(matches!(
            NdpFrame::decode(&b),
            Err(PacketError::Truncated {
                layer: Layer::NdpOption,
                need: 16,
                have: 8
            })
        ));
        // Not IPv6 inside.
        let mut b = NS;
        b[ETH_IP6] = 0x45;
        assert_eq!(NdpFrame::decode(&b), Err(PacketError::IpVersion(4)));
        // UDP, not ICMPv6.
        let mut b = NS;
        b[ETH_IP6 + 6] = 17;
        let e = NdpFrame::decode(&b).unwrap_err();
        assert_eq!(e, PacketError::NextHeader(17));
        assert!(!e.is_malformed());
        // Echo request, not NDP.
        let mut b = NS;
        b[ICMP] = 128;
        assert_eq!(NdpFrame::decode(&b), Err(PacketError::NotNdp(128)));
        // Payload length beyond the frame.
        let mut b = NS;
        b[ETH_IP6 + 5] = 0x21;
        assert!(matches!(
            NdpFrame::decode(&b),
            Err(PacketError::Truncated {
                layer: Layer::Ipv6,
                ..
            })
        ));
        // ARP is not NDP.
        assert_eq!(
            NdpFrame::decode(&WHO_HAS),
            Err(PacketError::EtherType(ETHERTYPE_ARP))
        );
    }

    #[test]
    fn rejects_link_layer_option_of_wrong_length() {
        // SLLA with length 2 (16 octets), as Linux does.
        let mut b = NS.to_vec();
        b[ICMP + 25] = 2;
        b.extend_from_slice(&[0; 8]);
        b[ETH_IP6 + 5] = 40;
        fix_checksum(&mut b);
        assert_eq!(
            NdpFrame::decode(&b),
            Err(PacketError::LinkLayerOptionLength(16))
        );
    }

    #[test]
    fn rejects_solicited_advertisement_to_multicast() {
        let mut na = NeighborAdvertisement::unsolicited(OUR_LL, SERVICE_IP6, OUR_MAC);
        na.solicited = true;
        let ip = NdpMessage::Advertisement(na).encode_ipv6();
        assert_eq!(
            NdpMessage::decode_ipv6(&ip),
            Err(PacketError::SolicitedToMulticast(ALL_NODES))
        );
    }

    #[test]
    fn skips_unknown_options_and_keeps_the_first_lla() {
        // Append a nonce option (type 14, RFC 3971) and a second SLLA.
        let mut b = NS.to_vec();
        b.extend_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]);
        b.extend_from_slice(&[1, 1, 0x02, 0, 0, 0, 0, 0x99]);
        b[ETH_IP6 + 5] = 48;
        fix_checksum(&mut b);
        let f = NdpFrame::decode(&b).unwrap();
        assert_eq!(f.solicitation().unwrap().source_lla, Some(REQUESTER_MAC));
    }

    #[test]
    fn skips_hop_by_hop_and_destination_options() {
        let mut b = NS[..ICMP].to_vec();
        // next header: hop-by-hop, which says destination options, which says ICMPv6.
        b[ETH_IP6 + 6] = NEXT_HEADER_HOP_BY_HOP;
        b.extend_from_slice(&[NEXT_HEADER_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]); // PadN
        b.extend_from_slice(&[
            NEXT_HEADER_ICMPV6,
            1,
            1,
            12,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ]);
        b.extend_from_slice(&NS[ICMP..]);
        b[ETH_IP6 + 5] = 32 + 24;
        let f = NdpFrame::decode(&b).unwrap();
        assert_eq!(f.msg, NdpFrame::decode(&NS).unwrap().msg);
        // A truncated extension header.
        b[ETH_IP6 + 5] = 4;
        b.truncate(ICMP + 4);
        assert!(matches!(
            NdpFrame::decode(&b),
            Err(PacketError::Truncated {
                layer: Layer::Ipv6,
                ..
            })
        ));
    }

    #[test]
    fn ignores_ethernet_padding_after_the_ipv6_payload() {
        let mut b = NS.to_vec();
        b.extend_from_slice(&[0xee; 10]);
        assert_eq!(
            NdpFrame::decode(&b).unwrap(),
            NdpFrame::decode(&NS).unwrap()
        );
    }

    #[test]
    fn rejects_every_truncation_of_an_ndp_frame() {
        for n in 0..NS.len() {
            let err = NdpFrame::decode(&NS[..n]).unwrap_err();
            assert!(matches!(err, PacketError::Truncated { .. }), "{n}: {err}");
        }
    }

    #[test]
    fn short_frames_are_padded() {
        let eth = EthernetHeader {
            dst: MacAddr::BROADCAST,
            src: OUR_MAC,
            ethertype: 0x88b5,
        };
        let f = eth.frame(&[1, 2, 3]);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[14..17], &[1, 2, 3]);
        assert!(f[17..].iter().all(|b| *b == 0));
        assert_eq!(EthernetHeader::decode(&f).unwrap().0, eth);
    }

    #[test]
    fn mac_parse_and_display() {
        let m: MacAddr = "02:00:00:00:00:AA".parse().unwrap();
        assert_eq!(m, OUR_MAC);
        assert_eq!(m.to_string(), "02:00:00:00:00:aa");
        assert_eq!("02-00-00-00-00-aa".parse::<MacAddr>().unwrap(), OUR_MAC);
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:aa:bb",
            "2:0:0:0:0:aa",
            "zz:00:00:00:00:00",
            "+2:00:00:00:00:aa",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(MacAddr::BROADCAST.is_multicast() && MacAddr::BROADCAST.is_broadcast());
        assert!(solicited_node_mac(SERVICE_IP6).is_multicast());
        assert!(!OUR_MAC.is_multicast());
        assert!(MacAddr::ZERO.is_zero());
    }

    fn arb_mac() -> impl Strategy<Value = MacAddr> {
        any::<[u8; 6]>().prop_map(MacAddr)
    }

    fn arb_ip6() -> impl Strategy<Value = Ipv6Addr> {
        any::<[u8; 16]>().prop_map(Ipv6Addr::from)
    }

    fn arb_arp() -> impl Strategy<Value = ArpFrame> {
        (
            arb_mac(),
            arb_mac(),
            any::<bool>(),
            arb_mac(),
            any::<[u8; 4]>(),
            arb_mac(),
            any::<[u8; 4]>(),
        )
            .prop_map(|(dst, src, req, sha, spa, tha, tpa)| ArpFrame {
                dst,
                src,
                arp: ArpPacket {
                    operation: if req {
                        ArpOperation::Request
                    } else {
                        ArpOperation::Reply
                    },
                    sender_mac: sha,
                    sender_ip: spa.into(),
                    target_mac: tha,
                    target_ip: tpa.into(),
                },
            })
    }

    /// Valid NS/NA frames (non-multicast target, unicast source, no solicited NA to multicast).
    fn arb_ndp() -> impl Strategy<Value = NdpFrame> {
        (
            arb_mac(),
            arb_mac(),
            arb_ip6(),
            arb_ip6(),
            arb_ip6(),
            any::<bool>(),
            any::<[bool; 3]>(),
            proptest::option::of(arb_mac()),
        )
            .prop_filter(
                "valid per RFC 4861 §7.1",
                |(_, _, src, dst, target, ns, [_, s, _], _)| {
                    !target.is_multicast()
                        && !src.is_unspecified()
                        && !src.is_multicast()
                        && (*ns || !*s || !dst.is_multicast())
                },
            )
            .prop_map(
                |(dmac, smac, src, dst, target, ns, [r, s, o], lla)| NdpFrame {
                    dst: dmac,
                    src: smac,
                    msg: if ns {
                        NdpMessage::Solicitation(NeighborSolicitation {
                            src,
                            dst,
                            target,
                            source_lla: lla,
                        })
                    } else {
                        NdpMessage::Advertisement(NeighborAdvertisement {
                            src,
                            dst,
                            target,
                            router: r,
                            solicited: s,
                            override_flag: o,
                            target_lla: lla,
                        })
                    },
                },
            )
    }

    proptest! {
        #[test]
        fn arp_roundtrips(f in arb_arp()) {
            let b = f.encode();
            prop_assert_eq!(ArpFrame::decode(&b), Ok(f));
        }

        #[test]
        fn ndp_roundtrips(f in arb_ndp()) {
            let b = f.encode();
            prop_assert_eq!(NdpFrame::decode(&b), Ok(f));
        }

        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ArpFrame::decode(&b);
            let _ = NdpFrame::decode(&b);
            let _ = ArpPacket::decode(&b);
            let _ = NdpMessage::decode_ipv6(&b);
        }

        #[test]
        fn decoders_never_panic_on_mutated_frames(
            idx in any::<proptest::sample::Index>(),
            val in any::<u8>(),
            cut in any::<proptest::sample::Index>(),
        ) {
            for base in [&WHO_HAS[..], &NS[..], &NA[..], &UNSOLICITED_NA[..]] {
                let mut b = base.to_vec();
                let i = idx.index(b.len());
                b[i] = val;
                b.truncate(cut.index(b.len() + 1));
                let _ = ArpFrame::decode(&b);
                let _ = NdpFrame::decode(&b);
            }
        }

        #[test]
        fn any_bit_flip_in_the_icmpv6_part_is_rejected(
            f in arb_ndp(),
            bit in any::<proptest::sample::Index>(),
        ) {
            // Source/destination addresses (pseudo-header) and the whole ICMPv6 message.
            let mut b = f.encode();
            let span = b.len() - (ETH_IP6 + 8);
            let i = ETH_IP6 + 8 + bit.index(span * 8) / 8;
            b[i] ^= 1 << (bit.index(span * 8) % 8);
            prop_assert!(NdpFrame::decode(&b).is_err());
        }
    }
}
