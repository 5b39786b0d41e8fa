//! The pure allocator alone (issue 5): 100k automatic allocations from an IPv4 /15, the same
//! under avoid-buggy-ips, from an IPv6 /64 and dual stack; 100k Services sharing addresses in
//! pairs; 1M release/allocate cycles on a half-full /16; and the reload checks
//! (`can_accept`, `set_pools`) with 100k addresses in use.
//!
//! Run: `cargo bench --bench allocator` (a plain bench binary, no framework).

use std::hint::black_box;
use std::time::{Duration, Instant};

use metallb_rs::allocator::{Allocator, Family, Port, Request};
use metallb_rs::config::{Config, parse_payload};

const N: usize = 100_000;
const CYCLES: usize = 1_000_000;

fn config(pools: &[(&str, &str, bool)]) -> Config {
    let mut y = String::from("address-pools:\n");
    for (name, addrs, buggy) in pools {
        y.push_str(&format!(
            "- name: {name}\n  protocol: layer2\n  avoid-buggy-ips: {buggy}\n  addresses: [{addrs}]\n"
        ));
    }
    match parse_payload(&y) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("benchmark config is invalid: {e}");
            std::process::exit(1);
        }
    }
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("ns{}/svc-{i}", i % 100)).collect()
}

fn per_op(d: Duration, ops: usize) -> String {
    format!("{:.0} ns/op", d.as_nanos() as f64 / ops as f64)
}

/// Allocate `N` Services with `req(i)`; print and return the allocator.
fn fill(label: &str, cfg: &Config, svcs: &[String], req: impl Fn(usize) -> Request) -> Allocator {
    let reqs: Vec<Request> = (0..svcs.len()).map(&req).collect();
    let mut a = Allocator::new();
    if a.set_pools(cfg).is_err() {
        unreachable!("an empty allocator accepts any config");
    }
    let t = Instant::now();
    for (s, r) in svcs.iter().zip(&reqs) {
        if let Err(e) = a.allocate(s, r) {
            eprintln!("{label}: allocation of {s} failed: {e}");
            std::process::exit(1);
        }
    }
    let d = t.elapsed();
    let st = &a.stats()[0];
    println!(
        "allocator: {label}: {} allocations in {d:.2?} ({}), {} addresses in use of {}",
        svcs.len(),
        per_op(d, svcs.len()),
        st.addresses_in_use,
        st.addresses_total
    );
    a
}

/// A small deterministic PRNG (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

fn main() {
    let svcs = keys(N);
    let v4 = || Request::new(Family::V4).ports([Port::tcp(80)]);

    let slash15 = config(&[("p", "10.0.0.0/15", false)]);
    let mut a = fill("IPv4 /15", &slash15, &svcs, |_| v4());
    fill(
        "IPv4 /15 avoid-buggy-ips",
        &config(&[("p", "10.0.0.0/15", true)]),
        &svcs,
        |_| v4(),
    );
    fill(
        "IPv6 /64",
        &config(&[("p", "'2001:db8::/64'", false)]),
        &svcs,
        |_| Request::new(Family::V6).ports([Port::tcp(80)]),
    );
    fill(
        "dual stack /15 + /64",
        &config(&[("p", "'10.0.0.0/15', '2001:db8::/64'", false)]),
        &svcs,
        |_| Request::new(Family::Dual).ports([Port::tcp(80)]),
    );
    fill("IPv4 /15, shared in pairs", &slash15, &svcs, |i| {
        Request::new(Family::V4)
            .shared(format!("k{}", i / 2))
            .ports([Port::tcp(if i % 2 == 0 { 80 } else { 443 })])
    });

    // Reload checks with 100k addresses in use (the IPv4 /15 allocator).
    let same = slash15.clone();
    let grown = config(&[
        ("extra", "192.168.0.0/24", false),
        ("p", "10.0.0.0/15", false),
    ]);
    let shrunk = config(&[("p", "10.0.0.0/16", false)]);
    let t = Instant::now();
    let ok = a.can_accept(black_box(&grown)).is_ok();
    let d_accept = t.elapsed();
    let t = Instant::now();
    let stale = a.can_accept(black_box(&shrunk)).err();
    let d_reject = t.elapsed();
    let t = Instant::now();
    let applied = a.set_pools(black_box(&same)).is_ok() && a.set_pools(&grown).is_ok();
    let d_set = t.elapsed() / 2;
    assert!(ok && applied);
    println!(
        "allocator: reload with {N} in use: can_accept {d_accept:.2?}, rejecting can_accept {d_reject:.2?} ({} stranded), set_pools {d_set:.2?}",
        stale.map_or(0, |s| s.stranded.len())
    );

    // 1M release/allocate cycles on a /16 kept half full, releasing at random.
    let cfg = config(&[("p", "10.0.0.0/16", false)]);
    let pool_keys = keys(65_536);
    let mut a = Allocator::new();
    if a.set_pools(&cfg).is_err() {
        unreachable!("an empty allocator accepts any config");
    }
    let req = v4();
    let (mut live, mut down): (Vec<usize>, Vec<usize>) = (0..65_536).partition(|i| i % 2 == 0);
    for i in &live {
        if a.allocate(&pool_keys[*i], &req).is_err() {
            unreachable!("the pool has room");
        }
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t = Instant::now();
    for _ in 0..CYCLES {
        let out = live.swap_remove(rng.below(live.len()));
        a.unassign(&pool_keys[out]);
        down.push(out);
        let back = down.swap_remove(rng.below(down.len()));
        if a.allocate(&pool_keys[back], &req).is_err() {
            unreachable!("the pool has room");
        }
        live.push(back);
    }
    let d = t.elapsed();
    println!(
        "allocator: {CYCLES} release+allocate cycles on a half-full /16 in {d:.2?} ({}), {} in use",
        per_op(d, CYCLES),
        a.stats()[0].addresses_in_use
    );
}
