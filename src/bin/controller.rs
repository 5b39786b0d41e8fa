//! metallb-rs controller (drop-in for MetalLB 0.9–0.12's `controller`).
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    metallb_rs::controller::Args::parse().run().await
}
