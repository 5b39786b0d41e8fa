//! metallb-rs speaker (drop-in for MetalLB 0.9–0.12's `speaker`, layer 2 mode).
use clap::Parser;

// The decision loop is one task; packet I/O runs on its own tasks. Two worker threads keep ARP
// answers flowing while the loop is busy.
fn main() -> anyhow::Result<()> {
    metallb_rs::sys::tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(metallb_rs::speaker::Args::parse().run())
}
