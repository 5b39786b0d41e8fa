//! The speaker (layer 2 mode): answers ARP and NDP for the LoadBalancer IPs this node wins,
//! hands them over fast when a speaker dies, and applies config edits live.
//!
//! (in progress)

mod driver;
pub mod gossip;
pub mod liveness;
pub mod world;

pub use driver::Args;
