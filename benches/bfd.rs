//! BFD benchmarks in the netns lab of `tests/common/lab.rs`: a real kube-apiserver + etcd, the
//! controller, a release speaker in a "node" namespace (only `CAP_NET_RAW`, `--log-level
//! info`), BIRD 2 (`protocol bfd`, interval 50 ms × 3, BGP hold time 9 s) and FRR `bfdd` in
//! namespaces of their own on the same bridge.
//!
//! Run (as root): `cargo bench --bench bfd` (starts its own cluster; ~5 minutes plus the release
//! build).
//!
//! 1. Detection time, per profile (300 ms × 3, 50 ms × 3; `BENCH_TRIALS`, 20, each): with BFD
//!    and BGP Up, the router's interface goes down inside its namespace (it falls silent; the
//!    speaker's link stays up); the time from just before that command to the speaker's log
//!    line "BFD session down" (its own timestamp). What is measured starts at the moment the
//!    router stops, so it is at most one router transmit interval shorter than the RFC's
//!    "since the last packet" bound, multiplier × interval, and includes the `ip` command's
//!    start (a few ms).
//! 2. The same with no `bfd-profile` and BGP `hold-time: 3s` (the smallest the config takes):
//!    the time to "BGP session down" with reason hold_timer_expired (`BENCH_HOLD_TRIALS`, 5).
//! 3. CPU: 10 BFD sessions at 50 ms × 3, multihop (RFC 5883: 10 `ebgp-multihop` peers whose
//!    addresses live in one `bfdd` namespace, reached through a route; bfdd keys single-hop
//!    sessions by peer and interface, so 10 of them to one speaker address need multihop; their
//!    BGP connections fail and back off, which costs nothing measurable): utime + stime of the speaker over `BENCH_IDLE_SECONDS` (30), next
//!    to bfdd's own.

#[path = "../tests/common/cluster.rs"]
mod cluster;

#[path = "../tests/common/lab.rs"]
mod lab;

#[path = "../tests/common/routers.rs"]
mod routers;

#[path = "../tests/common/bfdd.rs"]
mod bfdd;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use cluster::MetallbRbac;
use lab::{Lab, clock_ticks, cpu_ticks, in_ns, line_ns, metric, pct, wall_ns};
use routers::{Kind, Neighbor, Router, RouterConfig};
use serde_json::json;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// Wait for the first line of node 0's log at or after `since` that contains `needle`; the
/// time from `since` to its timestamp.
async fn wait_log(lab: &Lab, since: i128, needle: &str) -> Result<Duration> {
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(&lab.nodes[0].log).unwrap_or_default();
        if let Some(at) = text
            .lines()
            .filter(|l| l.contains(needle))
            .filter_map(line_ns)
            .find(|t| *t >= since)
        {
            return Ok(Duration::from_nanos(u64::try_from(at - since)?));
        }
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "{needle:?} not logged within 60 s: {}",
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config(peers: &[Ipv4Addr], profile: Option<&str>, hold: &str, multihop: bool) -> String {
    let mut s = String::new();
    if let Some(p) = profile {
        s.push_str(&format!("bfd-profiles:\n- {p}\n"));
    }
    s.push_str("peers:\n");
    for a in peers {
        let bfd = if profile.is_some() {
            ", bfd-profile: p"
        } else {
            ""
        };
        s.push_str(&format!(
            "- {{my-asn: 64500, peer-asn: 64501, peer-address: {a}, hold-time: {hold}{bfd}, ebgp-multihop: {multihop}}}\n"
        ));
    }
    s.push_str("address-pools:\n- name: bgp\n  protocol: bgp\n  addresses: [198.18.0.0/28]\n");
    s
}

/// BFD Up (`bfd`; BGP may still be in its reconnect back-off) or else BGP Up, polled.
async fn wait_up(lab: &Lab, b: Ipv4Addr, bfd: bool) -> Result<()> {
    let bl = format!("peer=\"{b}\"");
    let bgp = format!("peer=\"{b}:179\"");
    let t = Instant::now();
    loop {
        if let Ok(m) = lab.metrics(0).await
            && if bfd {
                metric(&m, "metallb_bfd_session_up", &[&bl]) == Some(1.0)
            } else {
                metric(&m, "metallb_bgp_session_up", &[&bgp]) == Some(1.0)
            }
        {
            return Ok(());
        }
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "not up: {}",
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One trial: the router falls silent; how long until `needle` is logged.
async fn trial(lab: &Lab, bird: &Router, b: Ipv4Addr, needle: &str, bfd: bool) -> Result<Duration> {
    wait_up(lab, b, bfd).await?;
    // Let a few packets flow at the session's rate first.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let since = wall_ns();
    in_ns(bird.netns(), &["ip", "link", "set", "eth0", "down"])?;
    let d = wait_log(lab, since, needle).await;
    in_ns(bird.netns(), &["ip", "link", "set", "eth0", "up"])?;
    d
}

fn summary(v: &[Duration]) -> String {
    let mut s = v.to_vec();
    let (p50, p99, max) = (pct(&mut s, 0.5), pct(&mut s, 0.99), pct(&mut s, 1.0));
    let min = s.first().copied().unwrap_or_default();
    format!(
        "p50 {}, p99 {}, min {}, max {} (n = {})",
        ms(p50),
        ms(p99),
        ms(min),
        ms(max),
        v.len()
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let trials: usize = env_or("BENCH_TRIALS", 20);
    let hold_trials: usize = env_or("BENCH_HOLD_TRIALS", 5);
    let idle: u64 = env_or("BENCH_IDLE_SECONDS", 30);
    let mut lab = Lab::new("bfdbench", 1, MetallbRbac::V0_12_1).await?;
    let n0: IpAddr = lab.nodes[0].addr.parse()?;

    // BIRD with BFD at 50 ms × 3.
    let netns = format!("{}rb", lab.nodes[0].netns);
    let b: Ipv4Addr = lab.cluster.add_node_netns(&netns)?.parse()?;
    let mut nb = Neighbor::new(n0, 64500);
    nb.bfd = Some((50, 3));
    let bird = Router::start(
        Kind::Bird,
        &netns,
        &RouterConfig {
            router_id: b,
            asn: 64501,
            local_addresses: vec![IpAddr::V4(b)],
            neighbors: vec![nb],
        },
    )
    .await?;
    lab.set_config(&config(&[b], Some("{name: p}"), "9s", false))
        .await?;
    lab.start_speaker_with_log_level(0, "info", &[])?;
    lab.service("web", json!({}), &[0]).await?;
    lab.wait_ip("web").await?;

    println!("## BFD detection time (router falls silent → speaker logs BFD down)\n");
    for (interval, mult) in [(300u32, 3u32), (50, 3)] {
        lab.set_config(&config(
            &[b],
            Some(&format!(
                "{{name: p, receive-interval: {interval}, transmit-interval: {interval}, detect-multiplier: {mult}}}"
            )),
            "9s",
            false,
        ))
        .await?;
        let mut v = Vec::new();
        for _ in 0..trials {
            v.push(trial(&lab, &bird, b, "BFD session down", true).await?);
        }
        let bound = Duration::from_millis(u64::from(interval * mult));
        let over = v.iter().filter(|d| **d > bound).count();
        println!(
            "- profile {interval} ms × {mult} (bound {}): {}; {over} of {} above the bound",
            ms(bound),
            summary(&v),
            v.len()
        );
    }

    lab.set_config(&config(&[b], None, "3s", false)).await?;
    let mut v = Vec::new();
    for _ in 0..hold_trials {
        v.push(trial(&lab, &bird, b, "hold_timer_expired", false).await?);
    }
    println!("- no BFD, BGP hold time 3 s: {}", summary(&v));
    drop(bird);

    // CPU with 10 sessions at 50 ms.
    let netns = format!("{}rf", lab.nodes[0].netns);
    let f: Ipv4Addr = lab.cluster.add_node_netns(&netns)?.parse()?;
    let peers: Vec<Ipv4Addr> = (1..=10).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
    for p in &peers {
        in_ns(
            &netns,
            &["ip", "addr", "add", &format!("{p}/32"), "dev", "eth0"],
        )?;
    }
    in_ns(
        &lab.nodes[0].netns,
        &["ip", "route", "add", "192.0.2.0/28", "via", &f.to_string()],
    )?;
    let d = bfdd::Bfdd::start(
        &netns,
        &peers
            .iter()
            .map(|p| bfdd::Peer {
                peer: n0,
                local: IpAddr::V4(*p),
                receive_ms: 50,
                transmit_ms: 50,
                multiplier: 3,
                multihop: true,
            })
            .collect::<Vec<_>>(),
    )
    .await?;
    lab.set_config(&config(
        &peers,
        Some("{name: p, receive-interval: 50, transmit-interval: 50, detect-multiplier: 3}"),
        "9s",
        true,
    ))
    .await?;
    let t = Instant::now();
    loop {
        let m = lab.metrics(0).await.unwrap_or_default();
        let up = peers
            .iter()
            .filter(|p| {
                metric(&m, "metallb_bfd_session_up", &[&format!("peer=\"{p}\"")]) == Some(1.0)
            })
            .count();
        if up == peers.len() {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "{up} of 10 BFD sessions up; bfdd: {}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = lab.speaker_pid(0).ok_or_else(|| anyhow!("no speaker"))?;
    let bfdd_pid: Option<u32> = lab::run(std::process::Command::new("pgrep").args(["-n", "bfdd"]))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let (c0, b0) = (cpu_ticks(pid), bfdd_pid.and_then(cpu_ticks));
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let (c1, b1) = (cpu_ticks(pid), bfdd_pid.and_then(cpu_ticks));
    let hz = clock_ticks() as f64;
    let pct_of = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2} %", (b - a) as f64 / hz / idle as f64 * 100.0),
        _ => "?".into(),
    };
    let m = lab.metrics(0).await?;
    let sent: f64 = peers
        .iter()
        .filter_map(|p| {
            metric(
                &m,
                "metallb_bfd_control_packet_output",
                &[&format!("peer=\"{p}\"")],
            )
        })
        .sum();
    println!(
        "\n## CPU, 10 multihop BFD sessions at 50 ms × 3 ({idle} s)\n\n- speaker: {} of one core; bfdd (FRR, the 10 peers): {}; {sent:.0} packets sent by the speaker in total since start",
        pct_of(c0, c1),
        pct_of(b0, b1)
    );
    drop(d);
    Ok(())
}
