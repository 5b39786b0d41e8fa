//! BGP mode of the speaker: native sessions to routers (no FRR sidecar), with MetalLB 0.12's
//! announcement semantics and an RFC 4271 session underneath.
//!
//! ```text
//!  speaker decision loop ──► advertise::desired (pure): services × pools × ads → RouteSet
//!          │                                  │
//!          └─ peers for this node ──► session::Sessions (I/O, one task per peer)
//!                                        ├─ fsm::Fsm (pure RFC 4271 state machine)
//!                                        ├─ advertise::updates (pure Adj-RIB-Out diff → UPDATEs)
//!                                        └─ codec (pure wire format) ── TCP (MD5, TTL: crate::sys)
//! ```
//!
//! - [`message`] and [`codec`]: the messages and their byte-exact wire format.
//! - [`fsm`]: the session state machine, `process(now, input) -> Vec<Output>`.
//! - [`advertise`]: which prefixes this node announces and the UPDATEs that carry a change.
//! - [`session`]: the tokio tasks that own the TCP connections.

pub mod advertise;
pub mod codec;
pub mod fsm;
pub mod message;
pub mod session;
