//! Speaker (layer 2) benchmarks in the netns lab of `tests/common/lab.rs`: a real
//! kube-apiserver + etcd, the controller, and real speaker processes (release build, only
//! `CAP_NET_RAW`, MetalLB 0.12.1's speaker RBAC, default `--log-level info`) in "node" network
//! namespaces on one bridge; a client namespace observes who answers ARP.
//!
//! Run (as root): `cargo bench --bench speaker` (starts its own cluster; ~5 minutes plus the
//! release build).
//!
//! 1. Failover after `kill -9` of the owner (3 nodes): kill → first ARP reply from the new
//!    owner's MAC at the client, which probes every 10 ms (`probe::watch_owner`, in a thread
//!    inside the client namespace). After each trial the killed speaker is restarted and the
//!    handback (restart → first reply from the original owner, which the deterministic election
//!    makes the owner again) is timed too.
//! 2. Planned restart (SIGTERM of the owner): the same.
//! 3. Dual-owner time: probes answered by more than one MAC, counted in every failover window
//!    (the whole watch: before the kill until the new owner answered alone for 1 s), in every
//!    handback window (reported apart: the restarted speaker and the interim owner overlap
//!    there), and in a steady-state window on every service IP.
//! 4. ARP reply latency at 10,000 requests/s spread over 1,000 owned IPs (1 node, 1,000
//!    Services, one distinct IP each, after the gratuitous windows are over).
//! 5. Speaker RSS (VmRSS / VmHWM) idle (config loaded, no Services), with 1,000 announced IPs,
//!    and after the rate test.
//!
//! Knobs: `BENCH_TRIALS` (20 per kind), `BENCH_IPS` (1000), `BENCH_RATE` (10000 requests/s),
//! `BENCH_SECONDS` (10, for the rate and the steady-state windows).

#[path = "../tests/common/cluster.rs"]
mod cluster;

#[path = "../tests/common/lab.rs"]
mod lab;

#[path = "../tests/common/probe.rs"]
mod probe;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};
use cluster::MetallbRbac;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use lab::{Lab, clock_ticks, cpu_ticks, expected_owner, rss};
use metallb_rs::l2::packet::MacAddr;
use metallb_rs::l2::sys::enter_netns;
use probe::{OwnerSample, ProbeReport, ProbeSocket};
use serde_json::json;
use tokio::sync::oneshot;

/// Probe interval of the owner watches.
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// Probes the previous owner must answer alone before the event is triggered.
const READY: usize = 10;
/// Probes the expected owner must answer alone (1 s) to end a watch.
const STABLE: usize = 100;
/// The speakers' log level: the speaker's (and MetalLB's) default.
const LOG_LEVEL: &str = "info";

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nearest-rank `q`-quantile of `v` (sorted here).
fn pct(v: &mut [Duration], q: f64) -> Duration {
    v.sort_unstable();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{} µs", d.as_micros())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Runs `f` on a thread of its own inside network namespace `netns` (the thread's namespace
/// changes for good, so never on a shared pool thread).
fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> oneshot::Receiver<Result<T>> {
    let (tx, rx) = oneshot::channel();
    let netns = netns.to_string();
    std::thread::spawn(move || {
        let r = enter_netns(&netns).and_then(|()| f());
        let _ = tx.send(r);
    });
    rx
}

async fn joined<T>(rx: oneshot::Receiver<Result<T>>) -> Result<T> {
    rx.await.map_err(|_| anyhow!("probe thread died"))?
}

/// One owner watch: the samples and the instant their offsets count from.
struct Watch {
    t0: Instant,
    samples: Vec<OwnerSample>,
}

impl Watch {
    /// When the first answer from `mac` to a probe arrived at or after `after`.
    fn first_from(&self, mac: MacAddr, after: Instant) -> Option<Instant> {
        self.samples.iter().find_map(|s| {
            let sent = self.t0 + s.at;
            let arrived = match (s.macs.first(), s.latency) {
                (Some(m), Some(l)) if *m == mac => sent + l,
                // Answered, but not first: somewhere in the window.
                _ if s.macs.contains(&mac) => sent + PROBE_EVERY,
                _ => return None,
            };
            (arrived >= after).then_some(arrived)
        })
    }

    /// Probes answered by more than one MAC.
    fn dual(&self) -> usize {
        self.samples.iter().filter(|s| s.macs.len() > 1).count()
    }

    /// The windows of the probes answered by more than one MAC (sent → next probe sent): an
    /// upper bound of the time two owners answered.
    fn dual_time(&self) -> Duration {
        self.samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.macs.len() > 1)
            .map(|(k, s)| {
                self.samples
                    .get(k + 1)
                    .map_or(PROBE_EVERY, |n| n.at.saturating_sub(s.at))
            })
            .sum()
    }

    /// The probes answered by more than one MAC, for the log: sent time relative to `event`
    /// (negative: before it), the MACs in order of arrival, the first answer's latency.
    fn dual_detail(&self, event: Instant) -> Vec<String> {
        self.samples
            .iter()
            .filter(|s| s.macs.len() > 1)
            .map(|s| {
                let sent = self.t0 + s.at;
                let rel = if sent >= event {
                    format!("+{:.1} ms", (sent - event).as_secs_f64() * 1e3)
                } else {
                    format!("-{:.1} ms", (event - sent).as_secs_f64() * 1e3)
                };
                format!("probe sent {rel}: {:?} first after {:?}", s.macs, s.latency)
            })
            .collect()
    }

    /// Adds the gaps between consecutive probes to `sp`.
    fn spacing(&self, sp: &mut Spacing) {
        for w in self.samples.windows(2) {
            let d = w[1].at.saturating_sub(w[0].at);
            sp.sum += d;
            sp.n += 1;
            sp.max = sp.max.max(d);
        }
    }

    /// Probes answered by nobody.
    fn silent(&self) -> usize {
        self.samples.iter().filter(|s| s.macs.is_empty()).count()
    }
}

/// Watches `ip` from the client namespace every 10 ms. `ready` fires once `pre` (if any) has
/// answered alone for [`READY`] probes in a row; after that the watch ends when `post` has
/// answered alone for `stable` probes in a row (`None`: never), or after `max`.
fn spawn_watch(
    netns: &str,
    ip: IpAddr,
    pre: Option<MacAddr>,
    post: MacAddr,
    stable: Option<usize>,
    max: Duration,
) -> (oneshot::Receiver<()>, oneshot::Receiver<Result<Watch>>) {
    let (ready_tx, ready_rx) = oneshot::channel();
    let done = in_netns(netns, move || {
        let sock = ProbeSocket::open("eth0")?;
        let mut ready_tx = Some(ready_tx);
        let mut ready_at: Option<usize> = None;
        let alone = |s: &[OwnerSample], mac: MacAddr, k: usize| {
            s.len() >= k && s[s.len() - k..].iter().all(|x| x.macs == [mac])
        };
        let t0 = Instant::now();
        let samples = sock.watch_owner(ip, PROBE_EVERY, max, |s| match ready_at {
            None => {
                if pre.is_none_or(|m| alone(s, m, READY)) {
                    ready_at = Some(s.len());
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                false
            }
            Some(r) => stable.is_some_and(|k| s.len() >= r + k && alone(s, post, k)),
        })?;
        Ok(Watch { t0, samples })
    });
    (ready_rx, done)
}

/// Waits for a watch to be ready; if it ended first, its error.
async fn ready(
    ready: oneshot::Receiver<()>,
    done: oneshot::Receiver<Result<Watch>>,
    what: &str,
) -> Result<oneshot::Receiver<Result<Watch>>> {
    match ready.await {
        Ok(()) => Ok(done),
        Err(_) => match joined(done).await {
            Ok(w) => Err(anyhow!(
                "{what}: the expected owner never answered alone ({} probes, last {:?})",
                w.samples.len(),
                w.samples.last()
            )),
            Err(e) => Err(e.context(what.to_string())),
        },
    }
}

/// Gaps between consecutive probes of the owner watches (the requested interval is 10 ms).
#[derive(Default)]
struct Spacing {
    sum: Duration,
    n: u32,
    max: Duration,
}

impl Spacing {
    fn mean(&self) -> Duration {
        self.sum.checked_div(self.n).unwrap_or_default()
    }
}

struct Target {
    ip: IpAddr,
    owner: usize,
    next: usize,
}

#[derive(Default)]
struct Trials {
    failover: Vec<Duration>,
    handback: Vec<Duration>,
    dual_failover: usize,
    dual_handback: usize,
    dual_failover_time: Duration,
    dual_handback_time: Duration,
    probes_failover: usize,
    probes_handback: usize,
    silent_failover: usize,
    spacing: Spacing,
}

impl Trials {
    fn row(&mut self, what: &str, goal: &str) -> String {
        let n = self.failover.len();
        let (p50, p99, max) = (
            pct(&mut self.failover, 0.5),
            pct(&mut self.failover, 0.99),
            pct(&mut self.failover, 1.0),
        );
        format!(
            "| {what}: event → first reply from the new owner ({n} trials) | p50 {}, p99 {}, max {} | {goal} |",
            ms(p50),
            ms(p99),
            ms(max)
        )
    }
}

/// One trial: stop the owner of `t.ip` (SIGKILL or SIGTERM), time the takeover by `t.next`,
/// restart the owner, time the handback.
async fn trial(
    lab: &mut Lab,
    macs: &[MacAddr],
    t: &Target,
    term: bool,
    out: &mut Trials,
) -> Result<()> {
    let what = if term { "SIGTERM" } else { "kill -9" };
    let (r, done) = spawn_watch(
        &lab.client_ns,
        t.ip,
        Some(macs[t.owner]),
        macs[t.next],
        Some(STABLE),
        Duration::from_secs(30),
    );
    let done = ready(r, done, what).await?;
    let at = Instant::now();
    if term {
        lab.sigterm(t.owner).await?;
    } else {
        lab.kill9(t.owner).await?;
    }
    let w = joined(done).await?;
    let first = w.first_from(macs[t.next], at).with_context(|| {
        format!(
            "{what} of node {} for {}: node {} never answered; logs: {}",
            t.owner,
            t.ip,
            t.next,
            lab.logs()
        )
    })?;
    out.failover.push(first - at);
    for d in w.dual_detail(at) {
        eprintln!(
            "[bench] {what} of n{} for {}: dual owner: {d}",
            t.owner, t.ip
        );
    }
    w.spacing(&mut out.spacing);
    out.dual_failover += w.dual();
    out.dual_failover_time += w.dual_time();
    out.silent_failover += w.silent();
    out.probes_failover += w.samples.len();

    let (r, done) = spawn_watch(
        &lab.client_ns,
        t.ip,
        Some(macs[t.next]),
        macs[t.owner],
        Some(STABLE),
        Duration::from_secs(60),
    );
    let done = ready(r, done, "handback").await?;
    let at = Instant::now();
    lab.start_speaker_with_log_level(t.owner, LOG_LEVEL, &[])?;
    let w = joined(done).await?;
    let first = w.first_from(macs[t.owner], at).with_context(|| {
        format!(
            "restart of node {} for {}: it never answered again; logs: {}",
            t.owner,
            t.ip,
            lab.logs()
        )
    })?;
    out.handback.push(first - at);
    for d in w.dual_detail(at) {
        eprintln!(
            "[bench] restart of n{} for {}: dual owner: {d}",
            t.owner, t.ip
        );
    }
    w.spacing(&mut out.spacing);
    out.dual_handback += w.dual();
    out.dual_handback_time += w.dual_time();
    out.probes_handback += w.samples.len();
    Ok(())
}

/// Parts 1–3 on a 3-node lab; returns the table rows.
async fn failover(trials: usize, window: Duration) -> Result<Vec<String>> {
    let mut lab = Lab::new("bl2f", 3, MetallbRbac::V0_12_1).await?;
    lab.set_config(
        "address-pools:\n- name: bench\n  protocol: layer2\n  addresses: [203.0.113.128/27]\n",
    )
    .await?;
    for i in 0..3 {
        lab.start_speaker_with_log_level(i, LOG_LEVEL, &[])?;
    }
    let macs: Vec<MacAddr> = lab
        .nodes
        .iter()
        .map(|n| n.mac.parse::<MacAddr>().map_err(|e| anyhow!("{e}")))
        .collect::<Result<_>>()?;
    // Several IPs, so the owner (and the next in line) varies between trials.
    let mut targets = Vec::new();
    for k in 0..5 {
        let name = format!("f{k}");
        lab.service(&name, json!({}), &[0, 1, 2]).await?;
        let ip = lab.wait_ip(&name).await?;
        let all = lab.names(&[0, 1, 2]);
        let owner = expected_owner(all, ip)
            .and_then(|n| lab.index_of_name(n))
            .ok_or_else(|| anyhow!("no owner for {ip}"))?;
        let rest: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
        let next = expected_owner(lab.names(&rest), ip)
            .and_then(|n| lab.index_of_name(n))
            .ok_or_else(|| anyhow!("no next owner for {ip}"))?;
        lab.wait_arp_owner(ip, owner).await?;
        targets.push(Target { ip, owner, next });
    }
    let owners: BTreeSet<usize> = targets.iter().map(|t| t.owner).collect();
    eprintln!(
        "[bench] failover targets: {}",
        targets
            .iter()
            .map(|t| format!("{} n{}→n{}", t.ip, t.owner, t.next))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut kill = Trials::default();
    let mut term = Trials::default();
    for k in 0..trials {
        let t = &targets[k % targets.len()];
        trial(&mut lab, &macs, t, false, &mut kill).await?;
        eprintln!(
            "[bench] kill -9 #{k}: failover {:?}, handback {:?}",
            kill.failover.last().copied().unwrap_or_default(),
            kill.handback.last().copied().unwrap_or_default()
        );
    }
    for k in 0..trials {
        let t = &targets[k % targets.len()];
        trial(&mut lab, &macs, t, true, &mut term).await?;
        eprintln!(
            "[bench] SIGTERM #{k}: failover {:?}, handback {:?}",
            term.failover.last().copied().unwrap_or_default(),
            term.handback.last().copied().unwrap_or_default()
        );
    }

    // Steady state: every service IP watched at once.
    let watches: Vec<_> = targets
        .iter()
        .map(|t| spawn_watch(&lab.client_ns, t.ip, None, macs[t.owner], None, window))
        .collect();
    let (mut dual, mut silent, mut probes, mut wrong) = (0, 0, 0, 0);
    let mut dual_time = Duration::ZERO;
    for ((_, done), t) in watches.into_iter().zip(&targets) {
        let w = joined(done).await?;
        w.spacing(&mut kill.spacing);
        for (k, s) in w.samples.iter().enumerate() {
            if s.macs.is_empty() {
                eprintln!(
                    "[bench] steady state {}: unanswered probe at {:?}; next {:?}",
                    t.ip,
                    s.at,
                    w.samples.get(k + 1)
                );
            }
        }
        dual += w.dual();
        dual_time += w.dual_time();
        silent += w.silent();
        probes += w.samples.len();
        wrong += w
            .samples
            .iter()
            .filter(|s| s.macs.iter().any(|m| *m != macs[t.owner]))
            .count();
    }

    let handback = |t: &mut Trials| {
        format!(
            "p50 {}, p99 {}, max {}",
            ms(pct(&mut t.handback, 0.5)),
            ms(pct(&mut t.handback, 0.99)),
            ms(pct(&mut t.handback, 1.0))
        )
    };
    let mut rows = vec![
        kill.row("kill -9 of the owner", "p99 < 1.5 s"),
        term.row("SIGTERM of the owner (planned restart)", "p99 < 0.5 s"),
        format!(
            "| dual-owner probes in the failover windows, kill -9 / SIGTERM ({} / {} probes) | {} (≤ {}) / {} (≤ {}) | 0 |",
            kill.probes_failover,
            term.probes_failover,
            kill.dual_failover,
            ms(kill.dual_failover_time),
            term.dual_failover,
            ms(term.dual_failover_time)
        ),
        format!(
            "| dual-owner probes in a {}-s steady-state window on {} IPs ({probes} probes; {silent} unanswered, {wrong} answered by a non-owner) | {dual} (≤ {}) | 0 |",
            window.as_secs(),
            targets.len(),
            ms(dual_time)
        ),
        format!(
            "| restart of the stopped speaker → first reply from it again (handback; kill -9 / SIGTERM trials) | {} / {} | — |",
            handback(&mut kill),
            handback(&mut term)
        ),
        format!(
            "| dual-owner probes during the handbacks ({} probes) | {} (≤ {}) | — |",
            kill.probes_handback + term.probes_handback,
            kill.dual_handback + term.dual_handback,
            ms(kill.dual_handback_time + term.dual_handback_time)
        ),
    ];
    let spacing = Spacing {
        sum: kill.spacing.sum + term.spacing.sum,
        n: kill.spacing.n + term.spacing.n,
        max: kill.spacing.max.max(term.spacing.max),
    };
    rows.push(format!(
        "| unanswered probes in the failover windows (the outage) | kill -9 {}, SIGTERM {} | — |",
        kill.silent_failover, term.silent_failover
    ));
    rows.push(format!(
        "| actual spacing of the `watch_owner` probes (interval 10 ms; {} gaps) | mean {:.1} ms, max {:.1} ms | — |",
        spacing.n,
        spacing.mean().as_secs_f64() * 1e3,
        spacing.max.as_secs_f64() * 1e3
    ));
    eprintln!("[bench] owners among the targets: {owners:?}");
    Ok(rows)
}

async fn rate_probe(
    lab: &Lab,
    ips: &[Ipv4Addr],
    rate: u32,
    duration: Duration,
) -> Result<ProbeReport> {
    let ips = ips.to_vec();
    joined(in_netns(&lab.client_ns, move || {
        probe::arp_probe_rate("eth0", &ips, rate, duration)
    }))
    .await
}

fn announced(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with("metallb_speaker_announced{") && l.ends_with(" 1"))
        .count()
}

/// Parts 4–5 on a 1-node lab; returns the table rows.
async fn many_ips(n: usize, rate: u32, duration: Duration) -> Result<Vec<String>> {
    let mut lab = Lab::new("bl2m", 1, MetallbRbac::V0_12_1).await?;
    // 198.18.0.0/15 is the benchmarking range (RFC 2544); a /22 holds 1,024.
    lab.set_config(
        "address-pools:\n- name: bench\n  protocol: layer2\n  addresses: [198.18.0.0/22]\n",
    )
    .await?;
    lab.start_speaker_with_log_level(0, LOG_LEVEL, &[])?;
    let pid = lab
        .speaker_pid(0)
        .ok_or_else(|| anyhow!("no speaker pid"))?;
    lab.wait_metric(
        0,
        |m| {
            m.lines()
                .any(|l| l == "metallb_k8s_client_config_loaded_bool 1")
        },
        "config loaded",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle_rss, idle_hwm) = rss(pid);

    let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    let t = Instant::now();
    lab.services_parallel(&names, &[0], 32).await?;
    let created = t.elapsed();
    loop {
        let got = lab.metrics(0).await.map(|m| announced(&m)).unwrap_or(0);
        if got >= n {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(300),
            "only {got} of {n} IPs announced after {:?}; logs: {}",
            t.elapsed(),
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_announced = t.elapsed();
    let svcs = Api::<Service>::namespaced(lab.admin.clone(), &lab.ns)
        .list(&ListParams::default())
        .await?;
    let ips: BTreeSet<Ipv4Addr> = svcs
        .items
        .iter()
        .flat_map(metallb_rs::k8s::service::status_ips)
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    ensure!(
        ips.len() == n,
        "{} distinct IPv4 service IPs, want {n}",
        ips.len()
    );
    let ips: Vec<Ipv4Addr> = ips.into_iter().collect();
    // Every IP answers (each asked once).
    let t = Instant::now();
    loop {
        let r = rate_probe(
            &lab,
            &ips,
            2_000,
            Duration::from_secs_f64(n as f64 / 2_000.0),
        )
        .await?;
        if r.lost == 0 && r.received == r.sent {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "not every IP answers: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_answer = all_announced + t.elapsed();
    // Steady state: the gratuitous windows (5 rounds ~1.1 s apart) of the last takeover are over.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (full_rss, full_hwm) = rss(pid);

    let ticks = cpu_ticks(pid);
    let wall = Instant::now();
    let r = rate_probe(&lab, &ips, rate, duration).await?;
    let cpu = match (ticks, cpu_ticks(pid)) {
        (Some(a), Some(b)) => {
            format!(
                "{:.0}%",
                (b - a) as f64 / clock_ticks() as f64 / wall.elapsed().as_secs_f64() * 100.0
            )
        }
        _ => "?".into(),
    };
    let (after_rss, after_hwm) = rss(pid);
    let macs: Vec<String> = r
        .replies_by_mac
        .iter()
        .map(|(m, c)| format!("{m}: {c}"))
        .collect();
    eprintln!("[bench] rate probe: {r:?}");
    Ok(vec![
        format!(
            "| {n} Services created ({} in flight) → all {n} IPs announced (metric) / answering ARP | created in {:.1} s; announced at {:.1} s; answering at {:.1} s | — |",
            32,
            created.as_secs_f64(),
            all_announced.as_secs_f64(),
            all_answer.as_secs_f64()
        ),
        format!(
            "| ARP at {rate}/s over {n} owned IPs for {} s: sent (achieved rate) / lost / unmatched | {} ({}/s) / {} / {} | no loss |",
            duration.as_secs(),
            r.sent,
            r.achieved_rate,
            r.lost,
            r.unmatched
        ),
        format!(
            "| ARP reply latency at {rate}/s (request sent → reply received at the client) | p50 {}, p99 {}, max {} | p99 < 1 ms |",
            us(r.p50),
            us(r.p99),
            us(r.max)
        ),
        format!(
            "| answering MACs / speaker CPU during the rate test | {} / {cpu} of one core | — |",
            macs.join(", ")
        ),
        format!(
            "| speaker RSS idle (config loaded, no Services): VmRSS / VmHWM | {} / {} | < 20 MiB |",
            mib(idle_rss),
            mib(idle_hwm)
        ),
        format!(
            "| speaker RSS with {n} announced IPs: VmRSS / VmHWM | {} / {} | < 30 MiB |",
            mib(full_rss),
            mib(full_hwm)
        ),
        format!(
            "| speaker RSS after the rate test: VmRSS / VmHWM | {} / {} | — |",
            mib(after_rss),
            mib(after_hwm)
        ),
    ])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let trials: usize = env_or("BENCH_TRIALS", 20);
    let n: usize = env_or("BENCH_IPS", 1000);
    let rate: u32 = env_or("BENCH_RATE", 10_000);
    let secs: u64 = env_or("BENCH_SECONDS", 10);
    let window = Duration::from_secs(secs);
    let started = Instant::now();
    let mut rows = failover(trials, window).await?;
    rows.extend(many_ips(n, rate, window).await?);
    println!("\n| measurement | result | goal |\n|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!("\n(total {:.0} s)", started.elapsed().as_secs_f64());
    Ok(())
}
