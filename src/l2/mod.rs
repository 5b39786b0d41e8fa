//! Layer 2 mode: answering ARP (IPv4) and NDP (IPv6) for the service IPs this node owns.
//!
//! Compatible with MetalLB 0.9–0.12 layer 2 mode (`speaker/layer2_controller.go`,
//! `internal/layer2`): the same owner is elected for every IP as a Go speaker would elect, and
//! the same packets are put on the wire (standard ARP replies, gratuitous ARP request + reply,
//! solicited and unsolicited Neighbor Advertisements).
//!
//! ```text
//!   Config + Services + endpoints + live speakers
//!                      │
//!                      ▼
//!      l2::plan (PURE) ──uses── l2::election (PURE): owner = min sha256(node "#" ip)
//!                      │
//!                      ▼  Vec<Announcement> for this node
//!      announcer (I/O, AF_PACKET) ──uses── l2::packet (PURE): Ethernet/ARP/IPv6/ICMPv6 codec
//! ```
//!
//! [`election`], [`packet`] and [`plan`] are pure: no tokio, no sockets, no clock, no logging.
//! They take values and return values, and are tested by value (byte-exact codec tests, an
//! election parity table computed independently with `sha256sum`).

pub mod announcer;
pub mod election;
pub mod gratuitous;
pub mod packet;
pub mod plan;
pub use crate::sys;
