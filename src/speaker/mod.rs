//! The speaker's I/O driver (in progress).

pub mod gossip;
pub mod liveness;
