//! Parse + validate a large legacy config (1,000 pools, 200 peers) and report the median.
//!
//! Run: `cargo bench --bench config_parse` (a plain bench binary, no framework).

use std::time::{Duration, Instant};

#[path = "common/big_config.rs"]
mod big_config;

use big_config::big_config;

fn main() {
    let text = big_config(false, "pool-");
    // Sanity: the input must be valid, or we would be timing the error path.
    let loaded = match metallb_rs::config::load(&text) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("benchmark config is invalid: {e}");
            std::process::exit(1);
        }
    };
    assert_eq!(loaded.config.pools.len(), 1000);
    assert_eq!(loaded.config.peers.len(), 200);
    let mut times: Vec<Duration> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while times.len() < 200 && Instant::now() < deadline {
        let t = Instant::now();
        let r = metallb_rs::config::load(std::hint::black_box(&text));
        times.push(t.elapsed());
        assert!(r.is_ok());
    }
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "config_parse: 1000 pools, 200 peers, {} bytes, {} runs: median {:.2?}, p90 {:.2?}, min {:.2?}",
        text.len(),
        times.len(),
        pct(0.5),
        pct(0.9),
        times[0]
    );
}
