//! Migrate a 1,000-pool legacy config into metallb.io objects end to end (load + validate +
//! migrate + render YAML, as `metallb-migrate` does) and report the median. Goal (issue 3):
//! under 100 ms.
//!
//! Run: `cargo bench --bench migrate` (a plain bench binary, no framework).

use std::fmt::Write;
use std::time::{Duration, Instant};

use metallb_rs::migrate::{Request, Source, convert};

/// 1,000 pools (half layer2 with a CIDR, a range and an IPv6 /120 and a name that needs
/// normalizing; half bgp with avoid-buggy-ips and an advertisement with three communities),
/// 200 peers with node selectors and passwords, two community aliases.
fn big_config() -> String {
    let mut s = String::from("peers:\n");
    for i in 0..200u32 {
        let _ = write!(
            s,
            "- my-asn: 64500\n  peer-asn: {}\n  peer-address: 198.51.{}.{}\n  hold-time: 9s\n  password: pw{i}\n  node-selectors:\n  - match-labels: {{rack: r{}}}\n",
            64600 + i,
            100 + i / 250,
            1 + i % 250,
            i % 10
        );
    }
    s.push_str("bgp-communities:\n  no-export: 65535:65281\n  gold: 64500:1\naddress-pools:\n");
    for i in 0..1000u32 {
        let (a, b) = (10 + i / 256, i % 256);
        if i % 2 == 0 {
            let _ = write!(
                s,
                "- name: Pool_{i}\n  protocol: layer2\n  addresses:\n  - 10.{a}.{b}.0/25\n  - 10.{a}.{b}.130-10.{a}.{b}.200\n  - 2001:db8:{i:x}::/120\n"
            );
        } else {
            let _ = write!(
                s,
                "- name: pool-{i}\n  protocol: bgp\n  avoid-buggy-ips: true\n  addresses: [10.{a}.{b}.0/24]\n  bgp-advertisements:\n  - aggregation-length: 32\n    localpref: 100\n    communities: [no-export, gold, 64500:{i}]\n"
            );
        }
    }
    s
}

fn main() {
    let text = big_config();
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
