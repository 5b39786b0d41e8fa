//! BGP-4 messages (RFC 4271 §4) with the pieces MetalLB's speaker needs: OPEN with
//! capabilities (RFC 5492: multiprotocol RFC 4760, route refresh RFC 2918, 4-octet AS
//! RFC 6793, graceful restart RFC 4724), UPDATE with ORIGIN, AS_PATH, NEXT_HOP, MED,
//! LOCAL_PREF, COMMUNITIES (RFC 1997), MP_REACH_NLRI / MP_UNREACH_NLRI, NOTIFICATION,
//! KEEPALIVE and ROUTE-REFRESH. PURE: values in, bytes out and back; no I/O.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Marker (16 x 0xFF)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Length               |      Type     |  body ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Decoding errors carry the NOTIFICATION (code, subcode, data) RFC 4271 §6 prescribes, so
//! the session answers every malformed message with the right error and never panics.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

/// Length of the fixed header (marker, length, type).
pub const HEADER_LEN: usize = 19;
/// Largest message without the extended-message capability (RFC 4271 §4.1).
pub const MAX_LEN: usize = 4096;
/// AS_TRANS (RFC 6793): the 2-octet stand-in for a 4-octet AS number.
pub const AS_TRANS: u16 = 23456;

/// Address family identifiers.
pub const AFI_IPV4: u16 = 1;
/// IPv6 AFI.
pub const AFI_IPV6: u16 = 2;
/// Unicast SAFI.
pub const SAFI_UNICAST: u8 = 1;

/// What the codec must know about the session to encode and decode AS numbers in AS_PATH
/// (2 or 4 octets; RFC 6793 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ctx {
    /// Both sides advertised the 4-octet AS capability.
    pub four_octet_as: bool,
}

/// A BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Type 1.
    Open(Open),
    /// Type 2.
    Update(Update),
    /// Type 3.
    Notification(Notification),
    /// Type 4.
    Keepalive,
    /// Type 5 (RFC 2918).
    RouteRefresh(RouteRefresh),
}

impl Message {
    /// The message type name, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Open(_) => "open",
            Self::Update(_) => "update",
            Self::Notification(_) => "notification",
            Self::Keepalive => "keepalive",
            Self::RouteRefresh(_) => "route_refresh",
        }
    }
}

/// OPEN (RFC 4271 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Always 4.
    pub version: u8,
    /// My Autonomous System (AS_TRANS when the real AS does not fit in 2 octets).
    pub my_as: u16,
    /// Proposed hold time in seconds (0, or >= 3).
    pub hold_time: u16,
    /// BGP Identifier.
    pub router_id: Ipv4Addr,
    /// Capabilities, from one or more Capabilities optional parameters (RFC 5492), in order.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// The sender's AS: the 4-octet capability's value when present, else `my_as`.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    /// Whether the sender advertised the 4-octet AS capability.
    pub fn four_octet_as(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
    }

    /// Whether the sender advertised this multiprotocol family.
    pub fn supports(&self, afi: u16, safi: u8) -> bool {
        self.capabilities
            .contains(&Capability::Multiprotocol { afi, safi })
    }
}

/// One capability (RFC 5492 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Code 1 (RFC 4760 §8): AFI, reserved octet, SAFI.
    Multiprotocol {
        /// Address family.
        afi: u16,
        /// Subsequent address family.
        safi: u8,
    },
    /// Code 2 (RFC 2918).
    RouteRefresh,
    /// Code 64 (RFC 4724 §3).
    GracefulRestart(GracefulRestart),
    /// Code 65 (RFC 6793): the sender's 4-octet AS.
    FourOctetAs(u32),
    /// Anything else, kept as received.
    Unknown {
        /// Capability code.
        code: u8,
        /// Capability value.
        value: Vec<u8>,
    },
}

/// The graceful restart capability (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// Restart State bit (R): the sender has restarted.
    pub restarting: bool,
    /// Restart Time in seconds (12 bits).
    pub restart_time: u16,
    /// Per family: (AFI, SAFI, Forwarding State bit F).
    pub families: Vec<(u16, u8, bool)>,
}

/// ORIGIN values (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// 0.
    Igp,
    /// 1.
    Egp,
    /// 2 (what MetalLB 0.8–0.12 sends).
    Incomplete,
}

/// One AS_PATH segment (RFC 4271 §4.3).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AsSegment {
    /// Type 1.
    Set(Vec<u32>),
    /// Type 2.
    Sequence(Vec<u32>),
}

/// MP_REACH_NLRI (RFC 4760 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    /// Address family.
    pub afi: u16,
    /// Subsequent address family.
    pub safi: u8,
    /// Next hop(s): one address, or for IPv6 a global and a link-local one (RFC 2545 §3).
    pub next_hops: Vec<IpAddr>,
    /// Reachable prefixes (of the family `afi`).
    pub nlri: Vec<IpNet>,
}

/// MP_UNREACH_NLRI (RFC 4760 §4). Empty `withdrawn` with AFI 2 is the IPv6 End-of-RIB
/// marker (RFC 4724 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    /// Address family.
    pub afi: u16,
    /// Subsequent address family.
    pub safi: u8,
    /// Withdrawn prefixes.
    pub withdrawn: Vec<IpNet>,
}

/// An attribute the codec does not model, kept as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAttr {
    /// Attribute flags.
    pub flags: u8,
    /// Attribute type code.
    pub code: u8,
    /// Attribute value.
    pub value: Vec<u8>,
}

/// Path attributes (RFC 4271 §5). Encoded in type-code order: ORIGIN (1), AS_PATH (2),
/// NEXT_HOP (3), MULTI_EXIT_DISC (4), LOCAL_PREF (5), COMMUNITIES (8), MP_REACH_NLRI (14),
/// MP_UNREACH_NLRI (15), then `other`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathAttrs {
    /// ORIGIN.
    pub origin: Option<Origin>,
    /// AS_PATH (`Some(vec![])` is the empty path of iBGP).
    pub as_path: Option<Vec<AsSegment>>,
    /// NEXT_HOP (IPv4 NLRI only).
    pub next_hop: Option<Ipv4Addr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (iBGP only).
    pub local_pref: Option<u32>,
    /// COMMUNITIES, as 32-bit values `high:low`, in wire order.
    pub communities: Vec<u32>,
    /// MP_REACH_NLRI.
    pub mp_reach: Option<MpReach>,
    /// MP_UNREACH_NLRI.
    pub mp_unreach: Option<MpUnreach>,
    /// Everything else, as received.
    pub other: Vec<RawAttr>,
}

/// UPDATE (RFC 4271 §4.3). An UPDATE with nothing at all is the IPv4 End-of-RIB marker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Withdrawn IPv4 routes.
    pub withdrawn: Vec<Ipv4Net>,
    /// Path attributes (empty when the UPDATE only withdraws).
    pub attrs: PathAttrs,
    /// Reachable IPv4 prefixes.
    pub nlri: Vec<Ipv4Net>,
}

impl Update {
    /// The End-of-RIB marker of a family (RFC 4724 §2).
    pub fn end_of_rib(afi: u16, safi: u8) -> Self {
        if afi == AFI_IPV4 && safi == SAFI_UNICAST {
            return Self::default();
        }
        Self {
            attrs: PathAttrs {
                mp_unreach: Some(MpUnreach {
                    afi,
                    safi,
                    withdrawn: Vec::new(),
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The family this UPDATE is the End-of-RIB marker of, if it is one.
    pub fn end_of_rib_family(&self) -> Option<(u16, u8)> {
        if self.withdrawn.is_empty() && self.nlri.is_empty() {
            if self.attrs == PathAttrs::default() {
                return Some((AFI_IPV4, SAFI_UNICAST));
            }
            if let Some(u) = &self.attrs.mp_unreach
                && u.withdrawn.is_empty()
                && (PathAttrs {
                    mp_unreach: None,
                    ..self.attrs.clone()
                }) == PathAttrs::default()
            {
                return Some((u.afi, u.safi));
            }
        }
        None
    }
}

/// NOTIFICATION (RFC 4271 §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Data.
    pub data: Vec<u8>,
}

/// ROUTE-REFRESH (RFC 2918 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    /// Address family.
    pub afi: u16,
    /// Subsequent address family.
    pub safi: u8,
}

/// NOTIFICATION error codes (RFC 4271 §4.5) and the Cease subcodes (RFC 4486).
pub mod code {
    /// Message Header Error.
    pub const HEADER: u8 = 1;
    /// OPEN Message Error.
    pub const OPEN: u8 = 2;
    /// UPDATE Message Error.
    pub const UPDATE: u8 = 3;
    /// Hold Timer Expired.
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;
    /// ROUTE-REFRESH Message Error (RFC 7313).
    pub const ROUTE_REFRESH: u8 = 7;

    /// Header subcode: Connection Not Synchronized.
    pub const HEADER_NOT_SYNCHRONIZED: u8 = 1;
    /// Header subcode: Bad Message Length.
    pub const HEADER_BAD_LENGTH: u8 = 2;
    /// Header subcode: Bad Message Type.
    pub const HEADER_BAD_TYPE: u8 = 3;

    /// OPEN subcode: Unsupported Version Number.
    pub const OPEN_UNSUPPORTED_VERSION: u8 = 1;
    /// OPEN subcode: Bad Peer AS.
    pub const OPEN_BAD_PEER_AS: u8 = 2;
    /// OPEN subcode: Bad BGP Identifier.
    pub const OPEN_BAD_BGP_ID: u8 = 3;
    /// OPEN subcode: Unsupported Optional Parameter.
    pub const OPEN_UNSUPPORTED_PARAM: u8 = 4;
    /// OPEN subcode: Unacceptable Hold Time.
    pub const OPEN_UNACCEPTABLE_HOLD_TIME: u8 = 6;
    /// OPEN subcode: Unsupported Capability (RFC 5492).
    pub const OPEN_UNSUPPORTED_CAPABILITY: u8 = 7;

    /// UPDATE subcode: Malformed Attribute List.
    pub const UPDATE_MALFORMED_ATTR_LIST: u8 = 1;
    /// UPDATE subcode: Unrecognized Well-known Attribute.
    pub const UPDATE_UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    /// UPDATE subcode: Missing Well-known Attribute.
    pub const UPDATE_MISSING_WELL_KNOWN: u8 = 3;
    /// UPDATE subcode: Attribute Flags Error.
    pub const UPDATE_ATTR_FLAGS: u8 = 4;
    /// UPDATE subcode: Attribute Length Error.
    pub const UPDATE_ATTR_LENGTH: u8 = 5;
    /// UPDATE subcode: Invalid ORIGIN Attribute.
    pub const UPDATE_INVALID_ORIGIN: u8 = 6;
    /// UPDATE subcode: Invalid NEXT_HOP Attribute.
    pub const UPDATE_INVALID_NEXT_HOP: u8 = 8;
    /// UPDATE subcode: Optional Attribute Error.
    pub const UPDATE_OPTIONAL_ATTR: u8 = 9;
    /// UPDATE subcode: Invalid Network Field.
    pub const UPDATE_INVALID_NETWORK: u8 = 10;
    /// UPDATE subcode: Malformed AS_PATH.
    pub const UPDATE_MALFORMED_AS_PATH: u8 = 11;

    /// FSM subcode: Receive Unexpected Message in OpenSent (RFC 6608).
    pub const FSM_IN_OPENSENT: u8 = 1;
    /// FSM subcode: Receive Unexpected Message in OpenConfirm (RFC 6608).
    pub const FSM_IN_OPENCONFIRM: u8 = 2;
    /// FSM subcode: Receive Unexpected Message in Established (RFC 6608).
    pub const FSM_IN_ESTABLISHED: u8 = 3;

    /// Cease subcode: Administrative Shutdown.
    pub const CEASE_ADMIN_SHUTDOWN: u8 = 2;
    /// Cease subcode: Peer De-configured.
    pub const CEASE_PEER_DECONFIGURED: u8 = 3;
    /// Cease subcode: Administrative Reset.
    pub const CEASE_ADMIN_RESET: u8 = 4;
    /// Cease subcode: Connection Rejected.
    pub const CEASE_CONNECTION_REJECTED: u8 = 5;
    /// Cease subcode: Other Configuration Change.
    pub const CEASE_CONFIG_CHANGE: u8 = 6;
    /// Cease subcode: BFD Down (RFC 9384).
    pub const CEASE_BFD_DOWN: u8 = 10;
}

/// A message that cannot be accepted, with the NOTIFICATION that answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} (notification {code}/{subcode})")]
pub struct DecodeError {
    /// NOTIFICATION error code.
    pub code: u8,
    /// NOTIFICATION error subcode.
    pub subcode: u8,
    /// NOTIFICATION data (RFC 4271 §6 says what goes here for each error).
    pub data: Vec<u8>,
    /// What was wrong, for logs and the drop metric's `reason` label (a short fixed string).
    pub what: &'static str,
}

impl DecodeError {
    /// The NOTIFICATION answering this error.
    pub fn notification(&self) -> Notification {
        Notification {
            code: self.code,
            subcode: self.subcode,
            data: self.data.clone(),
        }
    }
}
