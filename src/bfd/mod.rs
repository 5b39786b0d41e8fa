//! BFD (RFC 5880 asynchronous mode; single hop RFC 5881, multihop RFC 5883) for the BGP
//! sessions of peers with a `bfd-profile`, natively, without an FRR sidecar.
//!
//! ```text
//!  bgp::session::Sessions ──► session::Bfd (one tokio task, all BFD sessions)
//!        ▲  watch<bool> "up"        ├─ fsm::Fsm per session (pure RFC 5880 §6)
//!        └──────────────────────────┤─ packet (pure wire format)
//!                                   └─ UDP 3784 / 4784 (TTL 255 out, TTL checked in: crate::sys)
//! ```
//!
//! - [`packet`]: the Control packet and its byte-exact wire format.
//! - [`fsm`]: the session state machine, `process(now, input) -> Vec<Output>`.
//! - [`session`]: the task that owns the sockets and timers of every session.

pub mod fsm;
pub mod packet;
pub mod session;
