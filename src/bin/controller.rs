//! metallb-rs controller (drop-in for MetalLB 0.9–0.12's `controller`).
use clap::Parser;

// One loop owns all state; a single-threaded runtime keeps memory and context switches low.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    metallb_rs::controller::Args::parse().run().await
}
