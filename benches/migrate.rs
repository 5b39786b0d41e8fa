//! Migrate a 1,000-pool legacy config into metallb.io objects end to end (load + validate +
//! migrate + render YAML, as `metallb-migrate` does) and report the median. Goal (issue 3):
//! under 100 ms.
//!
//! Run: `cargo bench --bench migrate` (a plain bench binary, no framework).

use std::time::{Duration, Instant};

use metallb_rs::migrate::{Request, Source, convert};

#[path = "common/big_config.rs"]
mod big_config;

use big_config::big_config;

fn main() {
    let text = big_config(true, "Pool_");
    let req = Request {
        input: Source {
            name: "big.yaml",
            text: &text,
        },
        only_data: false,
        namespace: None,
        password_secrets: true,
        services: None,
    };
    // Sanity: the input must migrate, or we would be timing the error path.
    let out = match convert(&req) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("benchmark config does not migrate: {e}");
            std::process::exit(1);
        }
    };
    assert_eq!(out.migration.renames.len(), 500);
    let yaml_len = out.yaml.len();
    let mut times: Vec<Duration> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while times.len() < 100 && Instant::now() < deadline {
        let t = Instant::now();
        let r = convert(std::hint::black_box(&req));
        times.push(t.elapsed());
        assert!(r.is_ok());
    }
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "migrate: 1000 pools, 200 peers, {} bytes in, {yaml_len} bytes out, {} runs: median {:.2?}, p90 {:.2?}, min {:.2?}",
        text.len(),
        times.len(),
        pct(0.5),
        pct(0.9),
        times[0]
    );
}
