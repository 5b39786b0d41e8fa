//! Speaker (BGP) benchmarks in the netns lab of `tests/common/lab.rs` with real GoBGP routers
//! (`tests/common/routers.rs`): a real kube-apiserver + etcd, the controller allocating, release
//! speaker processes in a "node" network namespace (only `CAP_NET_RAW`, MetalLB 0.12.1's
//! speaker RBAC, `--log-level info`), GoBGP 3.10 (passive, eBGP AS 64501 ↔ 64500, hold time
//! 9 s) in namespaces of their own on the same bridge. MetalLB 0.12.1's own speaker, built from
//! the Go module proxy by `tests/harness/build-metallb.sh`, runs the same way against the same
//! routers, Services and ConfigMap for the side-by-side numbers.
//!
//! Run (as root): `cargo bench --bench bgp` (starts its own cluster; ~15–25 minutes plus the
//! release build and, the first time, the MetalLB build).
//!
//! What arrives in a router's RIB is observed with a long-running
//! `gobgp monitor global rib -a ipv4 -j --current` whose lines are read as they come (the
//! instant a line is read is the arrival time; a marker route added at the router proves the
//! stream is live before anything is measured). Every wait is bounded.
//!
//! 1. Endpoint becomes Ready → route in GoBGP's RIB: 1 node, `BENCH_EP_SERVICES` (200) Local
//!    Services from 198.19.0.0/24 without endpoints; one at a time the EndpointSlice and the
//!    Endpoints get a ready endpoint on the node (both PATCHes sent at once: our speaker reads
//!    slices, MetalLB 0.12 Endpoints) and the time from sending them to the /32 in the RIB is
//!    taken. The same with MetalLB's speaker.
//! 2. `BENCH_SERVICES` (10,000) Cluster Services from 198.18.0.0/18 (RFC 2544's benchmarking
//!    range), one ready endpoint on the node, IPs allocated before anything is measured. Per
//!    speaker (ours, then MetalLB's), `BENCH_REPEAT` (3) cycles of: (a) ConfigMap edit adding
//!    the peer → all prefixes in the RIB; peer removed by a ConfigMap edit → RIB empty; peer
//!    back; SIGTERM → RIB empty; (b) speaker start (peer configured) → all prefixes in the RIB.
//! 3. Router restart (`BENCH_RESTARTS`, 3, per speaker): with the session up ≥ 31 s (our
//!    reconnect back-off starts over after 30 s up), `kill -9` gobgpd and start it again with the
//!    same config at once: restart → session Established (polled with `gobgp neighbor`, 50 ms)
//!    and → all prefixes back.
//! 4. RSS (VmRSS / VmHWM of `/proc/<pid>/status`) with all prefixes to 1 and to 3 GoBGP peers,
//!    and CPU (utime + stime of `/proc/<pid>/stat`) over `BENCH_IDLE_SECONDS` (30) idle with the
//!    3 sessions up (keepalives every 3 s).
//!
//! Knobs: `BENCH_SERVICES`, `BENCH_EP_SERVICES` (0 skips measurement 1), `BENCH_REPEAT`,
//! `BENCH_RESTARTS`, `BENCH_IDLE_SECONDS`, `BENCH_METALLB` (1; 0 skips MetalLB's speaker),
//! `BENCH_LOG_LEVEL` (`info`; `debug` to see where the time goes in the speaker logs),
//! `BENCH_KEEP_LOGS` (copy the speaker and router logs to this directory before the cluster
//! goes away). Diagnostics: `BENCH_POLL_RIB=1` (also poll `gobgp global rib summary` every
//! 100 ms during (a), to cross-check the monitor), `BENCH_PCAP=FILE` (tcpdump port 179 at
//! router 1 during measurements 2–4; `[bench] mark` lines on stderr give the wall-clock
//! starts), `BENCH_DIAG=1` (ours: glibc `malloc_stats()` into the speaker log via gdb, and
//! `perf record -g` of the idle window into `BENCH_KEEP_LOGS`).

#[path = "../tests/common/cluster.rs"]
mod cluster;

#[path = "../tests/common/lab.rs"]
mod lab;

#[path = "../tests/common/routers.rs"]
mod routers;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use cluster::MetallbRbac;
use futures::{StreamExt as _, TryStreamExt as _};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use lab::{Lab, clock_ticks, cpu_ticks, free_port, line_ns, pct, rss, wall_ns};
use routers::{Kind, Neighbor, Router, RouterConfig};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

/// The routers' AS and ours.
const PEER_ASN: u32 = 64501;
const MY_ASN: u32 = 64500;
/// A route added at the router to prove a monitor's stream is live (TEST-NET-1).
const MARKER: &str = "192.0.2.254/32";
/// Pool of the big benchmark (16,384 addresses) and of the endpoint benchmark.
const BIG_POOL: &str = "198.18.0.0/18";
const EP_POOL: &str = "198.19.0.0/24";
/// Bound of every wait for routes.
const ROUTES_WAIT: Duration = Duration::from_secs(180);

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn log_level() -> String {
    std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// "median (all runs)" of `v`.
fn median_all(v: &[Duration], f: fn(Duration) -> String) -> String {
    if v.is_empty() {
        return "—".into();
    }
    let mut s = v.to_vec();
    let med = pct(&mut s, 0.5);
    let all: Vec<String> = v.iter().map(|d| f(*d)).collect();
    format!("{} ({})", f(med), all.join(", "))
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    pct(&mut s, 0.5)
}

// ---------------------------------------------------------------------------------------
// Process measurements

/// The machine's load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// For each needle, the time from `since` (wall clock, ns) to the first line of `log` at or
/// after `since` that contains it.
fn log_marks(log: &Path, since: i128, needles: &[&str]) -> Vec<Option<Duration>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<(i128, &str)> = text
        .lines()
        .filter_map(|l| Some((line_ns(l)?, l)))
        .filter(|(t, _)| *t >= since)
        .collect();
    needles
        .iter()
        .map(|n| {
            lines
                .iter()
                .find(|(_, l)| l.contains(n))
                .map(|(t, _)| Duration::from_nanos(u64::try_from(t - since).unwrap_or(0)))
        })
        .collect()
}

/// Log lines marking the steps from a speaker start (or a ConfigMap edit) to the session:
/// (label, our message, MetalLB's message).
const MARKS: [(&str, &str, &str); 4] = [
    (
        "process logs its start",
        "Starting metallb-rs speaker",
        "MetalLB speaker starting",
    ),
    ("config loaded", "Config loaded", "config (re)loaded"),
    (
        "session started",
        "Starting BGP session",
        "peer configured, starting BGP session",
    ),
    (
        "Established",
        "BGP session established",
        "BGP session established",
    ),
];

fn marks_text(who: Who, log: &Path, since: i128, from_start: bool, total: Duration) -> String {
    let needles: Vec<&str> = MARKS
        .iter()
        .skip(usize::from(!from_start))
        .map(|(_, ours, theirs)| if who == Who::Ours { *ours } else { *theirs })
        .collect();
    let labels = MARKS.iter().skip(usize::from(!from_start)).map(|m| m.0);
    let mut parts: Vec<String> = labels
        .zip(log_marks(log, since, &needles))
        .map(|(l, d)| format!("{l} +{}", d.map_or("?".into(), ms)))
        .collect();
    parts.push(format!("all in the RIB +{}", ms(total)));
    parts.join(", ")
}

/// GET /metrics from `addr:port` (the body; large with 10,000 announced series).
async fn scrape(addr: &str, port: u16) -> Result<String> {
    let mut s = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((addr, port)),
    )
    .await??;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut body)).await??;
    Ok(body)
}

/// Series of `metallb_speaker_announced` with protocol "bgp" at 1 (both speakers' name).
fn announced_bgp(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("metallb_speaker_announced{")
                && l.contains("protocol=\"bgp\"")
                && l.ends_with(" 1")
        })
        .count()
}

// ---------------------------------------------------------------------------------------
// Routers

/// A router namespace on the harness bridge; returns (netns, address).
fn router_ns(lab: &Lab, tag: &str) -> Result<(String, Ipv4Addr)> {
    let netns = format!("{}r{tag}", lab.nodes[0].netns);
    let addr = lab.cluster.add_node_netns(&netns)?;
    Ok((netns, addr.parse()?))
}

/// A passive GoBGP in a fresh namespace peering with every node (hold time 9 s).
async fn gobgp_router(lab: &Lab, tag: &str) -> Result<(Router, Ipv4Addr)> {
    let (netns, addr) = router_ns(lab, tag)?;
    let neighbors = lab
        .nodes
        .iter()
        .map(|n| Neighbor::new(n.addr.parse().expect("node address"), MY_ASN))
        .collect();
    let cfg = RouterConfig {
        router_id: addr,
        asn: PEER_ASN,
        local_addresses: vec![IpAddr::V4(addr)],
        neighbors,
    };
    Ok((Router::start(Kind::Gobgp, &netns, &cfg).await?, addr))
}

async fn gobgp(r: &Router, args: &[&str]) -> Result<String> {
    let out = r
        .gobgp_cli()?
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "gobgp {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Destinations in the router's IPv4 RIB (`gobgp global rib summary -j`).
async fn rib_count(r: &Router) -> Result<usize> {
    let text = gobgp(r, &["global", "rib", "summary", "-a", "ipv4", "-j"]).await?;
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).with_context(|| format!("rib summary: {text}"))?;
    Ok(v["num_destination"].as_u64().unwrap_or(0) as usize)
}

/// Poll [`rib_count`] every 500 ms (setup waits only, not measurements).
async fn wait_rib_count(r: &Router, n: usize, what: &str) -> Result<()> {
    let t = Instant::now();
    loop {
        let got = rib_count(r).await.unwrap_or(usize::MAX);
        if got == n {
            return Ok(());
        }
        ensure!(
            t.elapsed() < ROUTES_WAIT,
            "{what}: the router holds {got} destinations, want {n}; log:\n{}",
            r.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Wait until the router's neighbour `node` is ACTIVE (listening for it). After a session
/// ends, GoBGP keeps the neighbour IDLE for a few seconds and closes every connection it
/// accepts meanwhile ("Closed an accepted connection ... BGP_FSM_IDLE" in its log); a measured
/// connect starts only once that is over, so the numbers are the speaker's, not GoBGP's
/// hold-down plus the speaker's reconnect back-off.
async fn wait_neighbor_active(r: &Router, node: IpAddr) -> Result<Duration> {
    let t = Instant::now();
    loop {
        let text = gobgp(r, &["neighbor", &node.to_string(), "-j"]).await?;
        let v: serde_json::Value =
            serde_json::from_str(text.trim()).with_context(|| format!("gobgp neighbor: {text}"))?;
        let state = &v["state"]["session_state"];
        if state.as_u64() == Some(3) || state.as_str() == Some("ACTIVE") {
            return Ok(t.elapsed());
        }
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "neighbour {node} still {state} at the router after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One path of a `gobgp monitor global rib -j` line.
#[derive(serde::Deserialize)]
struct MonPath {
    nlri: MonNlri,
    #[serde(default)]
    withdrawal: bool,
}

#[derive(serde::Deserialize)]
struct MonNlri {
    prefix: Option<String>,
}

#[derive(Default)]
struct RibState {
    /// Prefixes of the watched range in the RIB → when they (last) arrived.
    present: HashMap<IpNet, Instant>,
    /// When `present.len()` last changed.
    count_since: Option<Instant>,
    marker: bool,
    lines: u64,
    paths: u64,
    bad_lines: u64,
    closed: bool,
}

/// A running `gobgp monitor global rib -a ipv4 -j --current` at a router, folded into the
/// prefixes of one range it holds.
struct RibMonitor {
    _child: tokio::process::Child,
    state: Arc<Mutex<RibState>>,
    tx: Arc<watch::Sender<u64>>,
}

impl RibMonitor {
    async fn start(r: &Router, range: IpNet) -> Result<RibMonitor> {
        let mut child = r
            .gobgp_cli()?
            .args(["monitor", "global", "rib", "-a", "ipv4", "-j", "--current"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting gobgp monitor")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let state = Arc::new(Mutex::new(RibState::default()));
        let tx = Arc::new(watch::channel(0u64).0);
        let marker: IpNet = MARKER.parse()?;
        {
            let (state, tx) = (state.clone(), tx.clone());
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::with_capacity(1 << 20, stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let at = Instant::now();
                    let parsed: Result<Option<Vec<MonPath>>, _> = serde_json::from_str(&line);
                    let mut s = state.lock().expect("monitor state");
                    s.lines += 1;
                    let Ok(paths) = parsed else {
                        s.bad_lines += 1;
                        continue;
                    };
                    let before = s.present.len();
                    for p in paths.into_iter().flatten() {
                        s.paths += 1;
                        let Some(prefix) = p.nlri.prefix.and_then(|x| x.parse::<IpNet>().ok())
                        else {
                            continue;
                        };
                        if prefix == marker {
                            s.marker = !p.withdrawal;
                        } else if range.contains(&prefix) {
                            if p.withdrawal {
                                s.present.remove(&prefix);
                            } else {
                                s.present.insert(prefix, at);
                            }
                        }
                    }
                    if s.present.len() != before || s.count_since.is_none() {
                        s.count_since = Some(at);
                    }
                    drop(s);
                    tx.send_modify(|v| *v += 1);
                }
                state.lock().expect("monitor state").closed = true;
                tx.send_modify(|v| *v += 1);
            });
        }
        let m = RibMonitor {
            _child: child,
            state,
            tx,
        };
        // Live: a marker route added at the router shows up, and goes again.
        gobgp(r, &["global", "rib", "-a", "ipv4", "add", MARKER]).await?;
        m.wait("the marker route", Duration::from_secs(30), |s| {
            s.marker.then_some(())
        })
        .await?;
        gobgp(r, &["global", "rib", "-a", "ipv4", "del", MARKER]).await?;
        m.wait("the marker route gone", Duration::from_secs(30), |s| {
            (!s.marker).then_some(())
        })
        .await?;
        Ok(m)
    }

    /// Wait until `f` gives a value (checked after every line).
    async fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&RibState) -> Option<T>,
    ) -> Result<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.tx.subscribe();
        loop {
            {
                let s = self.state.lock().expect("monitor state");
                if let Some(v) = f(&s) {
                    return Ok(v);
                }
                if s.closed {
                    bail!(
                        "{what}: the gobgp monitor ended ({} lines, {} prefixes held)",
                        s.lines,
                        s.present.len()
                    );
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let s = self.state.lock().expect("monitor state");
                bail!(
                    "{what}: not within {timeout:?} ({} prefixes held; {} lines, {} paths, {} unparsed)",
                    s.present.len(),
                    s.lines,
                    s.paths,
                    s.bad_lines
                );
            }
        }
    }

    /// The instant the router came to hold exactly `n` prefixes of the range, at or after
    /// `after`.
    async fn wait_count(
        &self,
        n: usize,
        after: Instant,
        timeout: Duration,
        what: &str,
    ) -> Result<Instant> {
        self.wait(what, timeout, |s| {
            (s.present.len() == n)
                .then_some(s.count_since?)
                .map(|t| t.max(after))
        })
        .await
    }

    /// The instant `prefix` arrived, at or after `after`.
    async fn wait_prefix(
        &self,
        prefix: IpNet,
        after: Instant,
        timeout: Duration,
    ) -> Result<Instant> {
        self.wait(&format!("{prefix} in the RIB"), timeout, |s| {
            s.present.get(&prefix).copied().filter(|t| *t >= after)
        })
        .await
    }

    fn count(&self) -> usize {
        self.state.lock().expect("monitor state").present.len()
    }

    fn stats(&self) -> (u64, u64) {
        let s = self.state.lock().expect("monitor state");
        (s.lines, s.paths)
    }
}

// ---------------------------------------------------------------------------------------
// Speakers

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Ours,
    Metallb,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Ours => "metallb-rs",
            Who::Metallb => "MetalLB 0.12.1",
        }
    }
}

/// MetalLB 0.12.1's own speaker in node 0's namespace (no memberlist: no ML env).
struct Upstream {
    bin: PathBuf,
    port: u16,
    log: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Upstream {
    fn new(lab: &Lab, bin: &Path, tag: &str) -> Result<Upstream> {
        Ok(Upstream {
            bin: bin.join("speaker"),
            port: free_port()?,
            log: lab
                .cluster
                .dir()
                .join(format!("metallb-speaker-{tag}-{}.log", lab.ns)),
            child: None,
        })
    }

    fn start(&mut self, lab: &Lab) -> Result<()> {
        let n = &lab.nodes[0];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let level = match log_level().as_str() {
            "debug" | "trace" => "debug".to_string(),
            l => l.to_string(),
        };
        let child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &n.netns])
            .args([
                "setpriv",
                "--bounding-set=-all,+net_raw",
                "--inh-caps=-all,+net_raw",
                "--ambient-caps=-all,+net_raw",
                "--",
            ])
            .arg(&self.bin)
            .arg(format!("--node-name={}", n.name))
            .arg(format!("--port={}", self.port))
            .arg("--config=config")
            .arg(format!("--namespace={}", lab.ns))
            .arg(format!("--log-level={level}"))
            .arg("--kubeconfig")
            .arg(&lab.speaker_kc)
            .env_remove("KUBECONFIG")
            .env("METALLB_NODE_NAME", &n.name)
            .env("METALLB_HOST", &n.addr)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting MetalLB's speaker")?;
        self.child = Some(child);
        Ok(())
    }

    async fn sigterm(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let pid = c
                .id()
                .ok_or_else(|| anyhow!("MetalLB speaker already gone"))?;
            lab::run(std::process::Command::new("kill").args(["-TERM", &pid.to_string()]))?;
            if tokio::time::timeout(Duration::from_secs(30), c.wait())
                .await
                .is_err()
            {
                c.kill().await?;
            }
        }
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Error lines in its JSON log (level "error"), but for Services of other namespaces
    /// (MetalLB 0.12 does not filter on `loadBalancerClass`: it sees the other lab's Services,
    /// whose IPs are in no pool of this config, and says so).
    fn errors(&self, ns: &str) -> Vec<String> {
        let ours = format!("\"service\":\"{ns}/");
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"level\":\"error\""))
            .filter(|l| !l.contains("\"service\":\"") || l.contains(&ours))
            .map(str::to_string)
            .collect()
    }
}

/// Error lines counted by their `msg`.
fn by_message(lines: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        let msg = l
            .split("\"msg\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        *m.entry(msg.to_string()).or_default() += 1;
    }
    m
}

/// The speaker under test in node 0: ours (through the lab) or MetalLB's.
struct Speaker<'a> {
    who: Who,
    up: Option<&'a mut Upstream>,
}

impl Speaker<'_> {
    fn start(&mut self, lab: &mut Lab) -> Result<()> {
        match &mut self.up {
            None => lab.start_speaker_with_log_level(0, &log_level(), &[]),
            Some(u) => u.start(lab),
        }
    }

    async fn sigterm(&mut self, lab: &mut Lab) -> Result<()> {
        match &mut self.up {
            None => lab.sigterm(0).await,
            Some(u) => u.sigterm().await,
        }
    }

    fn pid(&self, lab: &Lab) -> Option<u32> {
        match &self.up {
            None => lab.speaker_pid(0),
            Some(u) => u.pid(),
        }
    }

    fn log(&self, lab: &Lab) -> PathBuf {
        match &self.up {
            None => lab.nodes[0].log.clone(),
            Some(u) => u.log.clone(),
        }
    }

    async fn metrics(&self, lab: &Lab) -> Result<String> {
        let n = &lab.nodes[0];
        let port = match &self.up {
            None => n.metrics_port,
            Some(u) => u.port,
        };
        scrape(&n.addr, port).await
    }

    /// Wait until the speaker decided to announce `n` Services over BGP (its
    /// `metallb_speaker_announced` series), peers or not.
    async fn wait_announced(&self, lab: &Lab, n: usize, timeout: Duration) -> Result<Duration> {
        let t = Instant::now();
        loop {
            let got = self
                .metrics(lab)
                .await
                .map(|m| announced_bgp(&m))
                .unwrap_or(0);
            if got >= n {
                return Ok(t.elapsed());
            }
            ensure!(
                t.elapsed() < timeout,
                "{}: {got} of {n} Services announced after {:?}",
                self.who.name(),
                t.elapsed()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Kubernetes objects

fn config(peers: &[Ipv4Addr], pool: &str) -> String {
    let mut s = String::new();
    if !peers.is_empty() {
        s.push_str("peers:\n");
        for p in peers {
            s.push_str(&format!(
                "- {{my-asn: {MY_ASN}, peer-asn: {PEER_ASN}, peer-address: {p}, hold-time: 9s}}\n"
            ));
        }
    }
    s.push_str(&format!(
        "address-pools:\n- name: bench\n  protocol: bgp\n  addresses: [{pool}]\n"
    ));
    s
}

/// Service name → its IPv4 ingress IP, for every Service of the lab that has one.
async fn service_ips(lab: &Lab) -> Result<BTreeMap<String, Ipv4Addr>> {
    let list = Api::<Service>::namespaced(lab.admin.clone(), &lab.ns)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .iter()
        .filter_map(|s| {
            let ip = metallb_rs::k8s::service::status_ips(s)
                .into_iter()
                .find_map(|ip| match ip {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })?;
            Some((s.metadata.name.clone()?, ip))
        })
        .collect())
}

async fn wait_service_ips(lab: &Lab, n: usize) -> Result<BTreeMap<String, Ipv4Addr>> {
    let t = Instant::now();
    loop {
        let ips = service_ips(lab).await?;
        if ips.len() >= n {
            return Ok(ips);
        }
        ensure!(
            t.elapsed() < Duration::from_secs(900),
            "only {} of {n} Services have an IP after {:?}",
            ips.len(),
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// Give Service `name` one ready endpoint on node 0: its EndpointSlice (what our speaker
/// reads) and its Endpoints (what MetalLB 0.12 reads on this apiserver) are PATCHed at once.
async fn endpoint_ready(lab: &Lab, name: &str) -> Result<()> {
    let node = &lab.nodes[0].name;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-x"), "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.0.2.10"], "conditions": {"ready": true}, "nodeName": node}],
        "ports": [{"port": 8080, "protocol": "TCP", "name": ""}],
    }))?;
    let ep: Endpoints = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
        "subsets": [{"addresses": [{"ip": "192.0.2.10", "nodeName": node}], "ports": [{"port": 8080}]}],
    }))?;
    let pp = PatchParams::apply("test").force();
    let slices = Api::<EndpointSlice>::namespaced(lab.admin.clone(), &lab.ns);
    let eps = Api::<Endpoints>::namespaced(lab.admin.clone(), &lab.ns);
    let slice_name = format!("{name}-x");
    let (slice, ep) = (Patch::Apply(&slice), Patch::Apply(&ep));
    let (a, b) = tokio::join!(
        slices.patch(&slice_name, &pp, &slice),
        eps.patch(name, &pp, &ep)
    );
    a?;
    b?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 1. Endpoint Ready → route

struct EpResult {
    latency: Vec<Duration>,
    patch: Vec<Duration>,
}

async fn endpoint_trials(
    lab: &Lab,
    router: &Router,
    names: &[String],
    ips: &BTreeMap<String, Ipv4Addr>,
) -> Result<EpResult> {
    let mon = RibMonitor::start(router, EP_POOL.parse()?).await?;
    ensure!(
        mon.count() == 0,
        "{} routes before any endpoint is ready",
        mon.count()
    );
    let mut out = EpResult {
        latency: Vec::new(),
        patch: Vec::new(),
    };
    for name in names {
        let ip = ips[name];
        let prefix = IpNet::new(IpAddr::V4(ip), 32)?;
        let t0 = Instant::now();
        endpoint_ready(lab, name).await?;
        out.patch.push(t0.elapsed());
        let at = mon
            .wait_prefix(prefix, t0, Duration::from_secs(30))
            .await
            .with_context(|| format!("endpoint of {name} ready"))?;
        out.latency.push(at - t0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(out)
}

fn ep_row(who: Who, n: usize, r: &mut EpResult, goal: &str, note: &str) -> String {
    format!(
        "| endpoint Ready (EndpointSlice + Endpoints PATCHes sent) → /32 in GoBGP's RIB, {n} Local Services one at a time, {} | p50 {}, p99 {}, max {} (the PATCHes themselves: p50 {}){note} | {goal} |",
        who.name(),
        ms(pct(&mut r.latency, 0.5)),
        ms(pct(&mut r.latency, 0.99)),
        ms(pct(&mut r.latency, 1.0)),
        ms(pct(&mut r.patch, 0.5)),
    )
}

async fn endpoints_bench(n: usize, metallb: Option<&Path>) -> Result<Vec<String>> {
    let mut lab = Lab::new("bgpe", 1, MetallbRbac::V0_12_1).await?;
    let (router, g) = gobgp_router(&lab, "g").await?;
    let n0: IpAddr = lab.nodes[0].addr.parse()?;
    lab.set_config(&config(&[g], EP_POOL)).await?;
    lab.start_speaker_with_log_level(0, &log_level(), &[])?;
    let names: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
    futures::stream::iter(&names)
        .map(|name| lab.service(name, json!({"externalTrafficPolicy": "Local"}), &[]))
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let ips = wait_service_ips(&lab, n).await?;
    router
        .wait_session(n0, true, Duration::from_secs(60))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!(
        "[bench] endpoints: {n} Services with IPs; load {}",
        loadavg()
    );
    let mut rows = Vec::new();
    let mut ours = endpoint_trials(&lab, &router, &names, &ips).await?;
    rows.push(ep_row(Who::Ours, n, &mut ours, "p99 < 100 ms", ""));
    let mut up_log: Option<PathBuf> = None;
    if let Some(bin) = metallb {
        let r: Result<String> = async {
            lab.sigterm(0).await?;
            wait_rib_count(&router, 0, "withdrawn on SIGTERM").await?;
            futures::stream::iter(&names)
                .map(|name| lab.set_endpoints(name, &[]))
                .buffer_unordered(16)
                .try_collect::<Vec<()>>()
                .await?;
            let mut up = Upstream::new(&lab, bin, "ep")?;
            up_log = Some(up.log.clone());
            wait_neighbor_active(&router, n0).await?;
            up.start(&lab)?;
            router
                .wait_session(n0, true, Duration::from_secs(60))
                .await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            ensure!(
                rib_count(&router).await? == 0,
                "MetalLB announces before any endpoint is ready"
            );
            let mut theirs = endpoint_trials(&lab, &router, &names, &ips).await?;
            let errors = up.errors(&lab.ns);
            for e in errors.iter().take(5) {
                eprintln!(
                    "[bench] MetalLB error log line: {}",
                    e.chars().take(300).collect::<String>()
                );
            }
            up.sigterm().await?;
            Ok(ep_row(
                Who::Metallb,
                n,
                &mut theirs,
                "— (its FRR mode: 3–4 s, upstream #2900)",
                &format!("; {} error lines in its log", errors.len()),
            ))
        }
        .await;
        rows.push(r.unwrap_or_else(|e| {
            format!("| endpoint Ready → route, MetalLB 0.12.1 | failed: {e:#} | — |")
        }));
    }
    keep_logs(&lab, &[&router], &up_log.into_iter().collect::<Vec<_>>());
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// 2–4. 10,000 Services

#[derive(Default)]
struct Cycles {
    /// ConfigMap edit adding the peer → all in the RIB.
    add: Vec<Duration>,
    /// ConfigMap edit removing the peer → RIB empty.
    remove: Vec<Duration>,
    /// SIGTERM → RIB empty.
    sigterm: Vec<Duration>,
    /// Speaker start → all in the RIB.
    start: Vec<Duration>,
    /// Speaker start → every Service decided (metric), the first cycle, no peer.
    first_sync: Option<Duration>,
    /// RSS once every Service is decided, before any peer.
    rss_synced: Option<(u64, u64)>,
    /// Seconds the speaker needed to settle (a 5 s window under 10% of a core) before the
    /// idle window, and the inputs (`metallb_k8s_client_updates_total`) it processed in it.
    settle: Option<Duration>,
    idle_inputs: Option<f64>,
    /// Where the time of the last (a) and (b) went, from the speaker's log.
    add_marks: Option<String>,
    start_marks: Option<String>,
    /// Monitor lines / paths seen for one full table (the first add).
    lines_paths: Option<(u64, u64)>,
    /// RSS with all prefixes to one peer (after the last start).
    rss_one: Option<(u64, u64)>,
    restart_established: Vec<Duration>,
    restart_routes: Vec<Duration>,
    restart_ready: Vec<Duration>,
    rss_three: Option<(u64, u64)>,
    idle_cpu: Option<(f64, f64)>,
}

/// The cycles of measurement 2 for one speaker; it ends running with the peer configured.
async fn cycles(
    lab: &mut Lab,
    sp: &mut Speaker<'_>,
    router: &Router,
    g: Ipv4Addr,
    n: usize,
    repeat: usize,
    out: &mut Cycles,
) -> Result<()> {
    let who = sp.who;
    let node: IpAddr = lab.nodes[0].addr.parse()?;
    let range: IpNet = BIG_POOL.parse()?;
    let with_peer = config(&[g], BIG_POOL);
    let without = config(&[], BIG_POOL);
    lab.set_config(&without).await?;
    let t = Instant::now();
    sp.start(lab)?;
    sp.wait_announced(lab, n, Duration::from_secs(900)).await?;
    out.first_sync = Some(t.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    if let Some(pid) = sp.pid(lab) {
        out.rss_synced = Some(rss(pid));
    }
    eprintln!(
        "[bench] {}: all {n} Services decided {:?} after start (no peer); load {}",
        who.name(),
        t.elapsed(),
        loadavg()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    for k in 0..repeat {
        let mon = RibMonitor::start(router, range).await?;
        ensure!(mon.count() == 0, "{} routes before the peer", mon.count());

        // (a) ConfigMap edit adding the peer → all n.
        wait_neighbor_active(router, node).await?;
        let (t0, w0) = (Instant::now(), wall_ns());
        eprintln!("[bench] mark {} (a) {k} t0 {w0}", who.name());
        lab.set_config(&with_peer).await?;
        let (at, polled) = tokio::join!(
            mon.wait_count(n, t0, ROUTES_WAIT, "all prefixes after the peer was added"),
            poll_rib(router, n, t0)
        );
        let at = at?;
        if let Some(p) = polled {
            eprintln!(
                "[bench] {} (a) {k}: monitor {:?}, `rib summary` polled every 100 ms {:?}",
                who.name(),
                at - t0,
                p
            );
        }
        out.add.push(at - t0);
        out.add_marks = Some(marks_text(who, &sp.log(lab), w0, false, at - t0));
        if out.lines_paths.is_none() {
            out.lines_paths = Some(mon.stats());
        }
        let held = rib_count(router).await?;
        ensure!(held == n, "gobgp rib summary says {held}, want {n}");

        // Peer removed → empty.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t0 = Instant::now();
        eprintln!("[bench] mark {} remove {k} t0 {}", who.name(), wall_ns());
        lab.set_config(&without).await?;
        let at = mon
            .wait_count(0, t0, ROUTES_WAIT, "RIB empty after the peer was removed")
            .await?;
        out.remove.push(at - t0);

        // Peer back, then SIGTERM → empty.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t0 = Instant::now();
        lab.set_config(&with_peer).await?;
        mon.wait_count(n, t0, ROUTES_WAIT, "all prefixes again")
            .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t0 = Instant::now();
        sp.sigterm(lab).await?;
        let at = mon
            .wait_count(0, t0, ROUTES_WAIT, "RIB empty after SIGTERM")
            .await?;
        out.sigterm.push(at - t0);

        // (b) speaker start with the peer configured → all n.
        tokio::time::sleep(Duration::from_secs(1)).await;
        wait_neighbor_active(router, node).await?;
        let (t0, w0) = (Instant::now(), wall_ns());
        eprintln!("[bench] mark {} (b) {k} t0 {w0}", who.name());
        sp.start(lab)?;
        let at = mon
            .wait_count(n, t0, ROUTES_WAIT, "all prefixes after the speaker started")
            .await?;
        out.start.push(at - t0);
        out.start_marks = Some(marks_text(who, &sp.log(lab), w0, true, at - t0));
        eprintln!(
            "[bench] {} cycle {k}: add {:?}, remove {:?}, SIGTERM {:?}, start {:?}; load {}",
            who.name(),
            out.add.last(),
            out.remove.last(),
            out.sigterm.last(),
            out.start.last(),
            loadavg()
        );
        eprintln!(
            "[bench] {} cycle {k}: (a) {}; (b) {}",
            who.name(),
            out.add_marks.as_deref().unwrap_or("?"),
            out.start_marks.as_deref().unwrap_or("?")
        );
        if k + 1 < repeat {
            // Back to "running, no peer".
            lab.set_config(&without).await?;
            mon.wait_count(0, Instant::now(), ROUTES_WAIT, "RIB empty")
                .await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    if let Some(pid) = sp.pid(lab) {
        out.rss_one = Some(rss(pid));
    }
    Ok(())
}

/// With `BENCH_POLL_RIB=1`: when `gobgp global rib summary`, polled every 100 ms, first
/// showed `n` destinations (a cross-check of the monitor; the polling costs CPU).
async fn poll_rib(r: &Router, n: usize, t0: Instant) -> Option<Duration> {
    if env_or("BENCH_POLL_RIB", 0) == 0 {
        return None;
    }
    while t0.elapsed() < ROUTES_WAIT {
        if rib_count(r).await.ok() == Some(n) {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// With `BENCH_DIAG=1` (ours only): glibc's `malloc_stats()` (called with gdb; printed to the
/// speaker's stderr, i.e. its log) and a `perf record -g` of the idle window, into
/// `BENCH_KEEP_LOGS` (or /tmp).
fn diag_dir() -> Option<PathBuf> {
    (env_or("BENCH_DIAG", 0) != 0)
        .then(|| PathBuf::from(std::env::var("BENCH_KEEP_LOGS").unwrap_or_else(|_| "/tmp".into())))
}

fn malloc_stats(pid: u32) {
    let out = std::process::Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "call (void)malloc_stats()",
            "-ex",
            "call (int)malloc_trim(0)",
            "-ex",
            "call (void)malloc_stats()",
        ])
        .stdin(Stdio::null())
        .output();
    eprintln!(
        "[bench] malloc_stats, malloc_trim(0), malloc_stats via gdb: {}; VmRSS after: {}",
        out.map(|o| o.status.to_string())
            .unwrap_or_else(|e| e.to_string()),
        mib(rss(pid).0)
    );
}

/// CPU ticks of `pid` over 5 s windows until one uses less than 10% of a core (at most
/// 600 s): a speaker still converging is not idle.
async fn settle(pid: u32) -> Duration {
    let t = Instant::now();
    let hz = clock_ticks() as f64;
    while t.elapsed() < Duration::from_secs(600) {
        let a = cpu_ticks(pid).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let b = cpu_ticks(pid).unwrap_or(0);
        if ((b.saturating_sub(a)) as f64 / hz / 5.0) < 0.10 {
            break;
        }
    }
    t.elapsed()
}

fn client_updates(metrics: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with("metallb_k8s_client_updates_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Measurement 3 for one speaker (running, peer configured, all routes in): kill -9 the router
/// and start it again, `restarts` times.
async fn restarts(
    router: &mut Router,
    node: IpAddr,
    n: usize,
    restarts: usize,
    who: Who,
    out: &mut Cycles,
) -> Result<()> {
    let range: IpNet = BIG_POOL.parse()?;
    let mut up_since = Instant::now();
    for k in 0..restarts {
        // The session must have been up 30 s for our back-off to start over at 1 s.
        let up_for = Duration::from_secs(31);
        let waited = up_since.elapsed();
        if waited < up_for {
            tokio::time::sleep(up_for - waited).await;
        }
        router.kill().await?;
        let t0 = Instant::now();
        router.restart().await?;
        out.restart_ready.push(t0.elapsed());
        let mon = RibMonitor::start(router, range).await?;
        let established = async {
            loop {
                if router.session_established(node).await.unwrap_or(false) {
                    return Ok::<Duration, anyhow::Error>(t0.elapsed());
                }
                ensure!(t0.elapsed() < ROUTES_WAIT, "no session after the restart");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let (est, all) = tokio::join!(
            established,
            mon.wait_count(n, t0, ROUTES_WAIT, "all prefixes after the router restart")
        );
        let est = est?;
        let all = all?;
        out.restart_established.push(est);
        out.restart_routes.push(all - t0);
        up_since = all;
        eprintln!(
            "[bench] {} router restart {k}: ready {:?}, Established {:?}, all {n} {:?}",
            who.name(),
            out.restart_ready.last(),
            est,
            all - t0
        );
    }
    Ok(())
}

/// Measurement 4 for one speaker (running): 3 peers, all routes at each, RSS, idle CPU.
async fn three_peers(
    lab: &Lab,
    sp: &Speaker<'_>,
    routers: &[&Router],
    addrs: &[Ipv4Addr],
    n: usize,
    idle: Duration,
    out: &mut Cycles,
) -> Result<()> {
    lab.set_config(&config(addrs, BIG_POOL)).await?;
    for r in routers {
        wait_rib_count(r, n, "all prefixes at each of 3 peers").await?;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = sp.pid(lab).ok_or_else(|| anyhow!("no speaker pid"))?;
    out.rss_three = Some(rss(pid));
    out.settle = Some(settle(pid).await);
    let diag = diag_dir().filter(|_| sp.who == Who::Ours);
    if diag.is_some() {
        malloc_stats(pid);
    }
    let perf = diag.map(|d| {
        let data = d.join("perf-idle.data");
        std::process::Command::new("perf")
            .args(["record", "-g", "-q", "-o"])
            .arg(&data)
            .args(["-p", &pid.to_string(), "--", "sleep"])
            .arg(idle.as_secs().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    });
    let u0 = sp
        .metrics(lab)
        .await
        .ok()
        .as_deref()
        .and_then(client_updates);
    let a = cpu_ticks(pid);
    let wall = Instant::now();
    tokio::time::sleep(idle).await;
    let b = cpu_ticks(pid);
    let u1 = sp
        .metrics(lab)
        .await
        .ok()
        .as_deref()
        .and_then(client_updates);
    if let (Some(a), Some(b)) = (a, b) {
        let cpu_s = (b - a) as f64 / clock_ticks() as f64;
        out.idle_cpu = Some((cpu_s * 1e3, cpu_s / wall.elapsed().as_secs_f64() * 100.0));
    }
    if let (Some(a), Some(b)) = (u0, u1) {
        out.idle_inputs = Some(b - a);
    }
    if let Some(Ok(mut c)) = perf {
        let _ = c.wait();
    }
    for r in routers {
        let held = rib_count(r).await?;
        ensure!(held == n, "a router lost routes while idle: {held} of {n}");
    }
    Ok(())
}

struct Big {
    /// MetalLB's error lines by message.
    metallb_errors: Option<BTreeMap<String, usize>>,
    ours: Cycles,
    theirs: Option<Result<Cycles>>,
    created: Duration,
    allocated: Duration,
}

async fn big_bench(
    n: usize,
    repeat: usize,
    nrestarts: usize,
    idle: Duration,
    metallb: Option<&Path>,
) -> Result<Big> {
    let mut lab = Lab::new("bgpb", 1, MetallbRbac::V0_12_1).await?;
    let node: IpAddr = lab.nodes[0].addr.parse()?;
    let (mut g1, a1) = gobgp_router(&lab, "1").await?;
    let (g2, a2) = gobgp_router(&lab, "2").await?;
    let (g3, a3) = gobgp_router(&lab, "3").await?;
    lab.set_config(&config(&[], BIG_POOL)).await?;
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let t = Instant::now();
    lab.services_parallel(&names, &[0], 32).await?;
    let created = t.elapsed();
    eprintln!(
        "[bench] {n} Services created in {created:?}; load {}",
        loadavg()
    );
    wait_service_ips(&lab, n).await?;
    let allocated = t.elapsed();
    eprintln!("[bench] all {n} have IPs after {allocated:?}");

    // BENCH_PCAP=FILE: what reaches router 1 on port 179 (headers), to tell the speaker's
    // time from GoBGP's; the "[bench] mark" lines give the wall-clock starts.
    let _pcap = match std::env::var("BENCH_PCAP") {
        Ok(file) => Some(
            tokio::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    g1.netns(),
                    "tcpdump",
                    "-i",
                    "eth0",
                    "-s",
                    "96",
                ])
                .args(["-w", &file, "tcp", "port", "179"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting tcpdump")?,
        ),
        Err(_) => None,
    };
    let mut ours = Cycles::default();
    let mut sp = Speaker {
        who: Who::Ours,
        up: None,
    };
    cycles(&mut lab, &mut sp, &g1, a1, n, repeat, &mut ours).await?;
    restarts(&mut g1, node, n, nrestarts, Who::Ours, &mut ours).await?;
    three_peers(
        &lab,
        &sp,
        &[&g1, &g2, &g3],
        &[a1, a2, a3],
        n,
        idle,
        &mut ours,
    )
    .await?;
    sp.sigterm(&mut lab).await?;
    for r in [&g1, &g2, &g3] {
        wait_rib_count(r, 0, "withdrawn on SIGTERM").await?;
    }

    let mut up = match metallb {
        Some(bin) => Some(Upstream::new(&lab, bin, "big")?),
        None => None,
    };
    let theirs = match up.as_mut() {
        None => None,
        Some(u) => {
            let mut theirs = Cycles::default();
            let mut sp = Speaker {
                who: Who::Metallb,
                up: Some(u),
            };
            let r = async {
                cycles(&mut lab, &mut sp, &g1, a1, n, repeat, &mut theirs).await?;
                restarts(&mut g1, node, n, nrestarts, Who::Metallb, &mut theirs).await?;
                three_peers(
                    &lab,
                    &sp,
                    &[&g1, &g2, &g3],
                    &[a1, a2, a3],
                    n,
                    idle,
                    &mut theirs,
                )
                .await
            }
            .await;
            let _ = sp.sigterm(&mut lab).await;
            Some(r.map(|()| theirs))
        }
    };
    let mut metallb_errors = None;
    if let Some(u) = &up {
        let errors = u.errors(&lab.ns);
        metallb_errors = Some(by_message(&errors));
        eprintln!(
            "[bench] MetalLB speaker log {}: {} error lines",
            u.log.display(),
            errors.len()
        );
        for e in errors.iter().take(5) {
            eprintln!(
                "[bench] MetalLB error log line: {}",
                e.chars().take(300).collect::<String>()
            );
        }
    }
    keep_logs(
        &lab,
        &[&g1, &g2, &g3],
        &up.iter().map(|u| u.log.clone()).collect::<Vec<_>>(),
    );
    Ok(Big {
        metallb_errors,
        ours,
        theirs,
        created,
        allocated,
    })
}

/// Copy the speaker, MetalLB and router logs to `BENCH_KEEP_LOGS` (the cluster dir goes away
/// with the process).
fn keep_logs(lab: &Lab, routers: &[&Router], extra: &[PathBuf]) {
    let Ok(dir) = std::env::var("BENCH_KEEP_LOGS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let _ = std::fs::create_dir_all(&dir);
    let mut files: Vec<PathBuf> = lab.nodes.iter().map(|n| n.log.clone()).collect();
    files.extend(extra.iter().cloned());
    for f in files {
        if let Some(name) = f.file_name() {
            let _ = std::fs::copy(&f, dir.join(name));
        }
    }
    for r in routers {
        let _ = std::fs::copy(
            r.dir().join("router.log"),
            dir.join(format!("{}.log", r.netns())),
        );
    }
}

fn ratio(theirs: Duration, ours: Duration) -> String {
    if ours.is_zero() {
        return "—".into();
    }
    format!("{:.1}×", theirs.as_secs_f64() / ours.as_secs_f64())
}

fn big_rows(b: &Big, n: usize) -> Vec<String> {
    let o = &b.ours;
    let t = b.theirs.as_ref().and_then(|r| r.as_ref().ok());
    let theirs = |f: &dyn Fn(&Cycles) -> String| t.map_or_else(|| "—".to_string(), f);
    let mut rows = vec![format!(
        "| setup: {n} Services created (32 in flight, with EndpointSlice + Endpoints) / all with IPs from our controller | {} / {} | — | — |",
        secs(b.created),
        secs(b.allocated)
    )];
    rows.push(format!(
        "| speaker start → all {n} Services decided (`metallb_speaker_announced`, no peer yet) | {} | {} | — |",
        o.first_sync.map_or("—".into(), secs),
        theirs(&|c| c.first_sync.map_or("—".into(), secs))
    ));
    rows.push(format!(
        "| (a) ConfigMap edit adding the peer → all {n} prefixes in GoBGP's RIB (median (runs)) | {} | {} | < 2 s; MetalLB ≥ 5× slower: {} |",
        median_all(&o.add, secs),
        theirs(&|c| median_all(&c.add, secs)),
        t.map_or("—".into(), |c| ratio(median(&c.add), median(&o.add)))
    ));
    rows.push(format!(
        "| (b) speaker start (peer configured) → all {n} prefixes in the RIB | {} | {} | ratio {} |",
        median_all(&o.start, secs),
        theirs(&|c| median_all(&c.start, secs)),
        t.map_or("—".into(), |c| ratio(median(&c.start), median(&o.start)))
    ));
    rows.push(format!(
        "| ConfigMap edit removing the peer → RIB empty (all {n} withdrawn) | {} | {} | — |",
        median_all(&o.remove, ms),
        theirs(&|c| median_all(&c.remove, ms))
    ));
    rows.push(format!(
        "| SIGTERM of the speaker → RIB empty | {} | {} | — |",
        median_all(&o.sigterm, ms),
        theirs(&|c| median_all(&c.sigterm, ms))
    ));
    rows.push(format!(
        "| router kill -9 + restart: restart → gobgpd ready (API up, listening) | {} | {} | — |",
        median_all(&o.restart_ready, ms),
        theirs(&|c| median_all(&c.restart_ready, ms))
    ));
    rows.push(format!(
        "| router restart → session Established (`gobgp neighbor`, polled every 50 ms) | {} | {} | — |",
        median_all(&o.restart_established, ms),
        theirs(&|c| median_all(&c.restart_established, ms))
    ));
    rows.push(format!(
        "| router restart → all {n} prefixes back in its RIB | {} | {} | — |",
        median_all(&o.restart_routes, ms),
        theirs(&|c| median_all(&c.restart_routes, ms))
    ));
    let rss_s =
        |r: Option<(u64, u64)>| r.map_or("—".into(), |(a, b)| format!("{} / {}", mib(a), mib(b)));
    rows.push(format!(
        "| speaker RSS, {n} Services decided, no peer yet: VmRSS / VmHWM | {} | {} | — |",
        rss_s(o.rss_synced),
        theirs(&|c| rss_s(c.rss_synced))
    ));
    rows.push(format!(
        "| speaker RSS, {n} prefixes × 1 peer: VmRSS / VmHWM | {} | {} | — |",
        rss_s(o.rss_one),
        theirs(&|c| rss_s(c.rss_one))
    ));
    rows.push(format!(
        "| speaker RSS, {n} prefixes × 3 peers: VmRSS / VmHWM | {} | {} | VmRSS < 40 MiB |",
        rss_s(o.rss_three),
        theirs(&|c| rss_s(c.rss_three))
    ));
    let cpu_s = |c: Option<(f64, f64)>| {
        c.map_or("—".into(), |(ms, pct)| {
            format!("{ms:.0} ms CPU ({pct:.2}% of a core)")
        })
    };
    rows.push(format!(
        "| speaker CPU idle over {} s, 3 sessions up (keepalive 3 s), {n} prefixes each | {} | {} | — |",
        env_or("BENCH_IDLE_SECONDS", 30u64),
        cpu_s(o.idle_cpu),
        theirs(&|c| cpu_s(c.idle_cpu))
    ));
    let settle_s = |c: &Cycles| {
        format!(
            "settled after {}; {} inputs in the window",
            c.settle.map_or("?".into(), secs),
            c.idle_inputs.map_or("?".into(), |x| format!("{x:.0}"))
        )
    };
    rows.push(format!(
        "| before the idle window: time until a 5 s window used < 10% of a core; inputs processed in the window (`metallb_k8s_client_updates_total`) | {} | {} | — |",
        settle_s(o),
        theirs(&|c| settle_s(c))
    ));
    rows.push(format!(
        "| gobgp monitor lines / paths for the first full table | {} | {} | — |",
        o.lines_paths
            .map_or("—".into(), |(l, p)| format!("{l} / {p}")),
        theirs(&|c| c
            .lines_paths
            .map_or("—".into(), |(l, p)| format!("{l} / {p}")))
    ));
    rows.push(format!(
        "| where the time of the last (a) went (log timestamps after the edit) | {} | {} | — |",
        o.add_marks.as_deref().unwrap_or("—"),
        theirs(&|c| c.add_marks.clone().unwrap_or("—".into()))
    ));
    rows.push(format!(
        "| where the time of the last (b) went (log timestamps after the start) | {} | {} | — |",
        o.start_marks.as_deref().unwrap_or("—"),
        theirs(&|c| c.start_marks.clone().unwrap_or("—".into()))
    ));
    if let Some(e) = &b.metallb_errors {
        let total: usize = e.values().sum();
        let what: Vec<String> = e.iter().map(|(m, c)| format!("{c}× \"{m}\"")).collect();
        rows.push(format!(
            "| error lines in MetalLB's log (but for the other lab's Services) | — | {total}: {} | — |",
            what.join(", ")
        ));
    }
    if let Some(Err(e)) = &b.theirs {
        rows.push(format!("| MetalLB 0.12.1 part | failed: {e:#} | | |"));
    }
    rows
}

/// `tests/harness/build-metallb.sh` (cached after the first build): MetalLB's bin directory.
fn metallb_bin() -> Result<PathBuf> {
    let out =
        std::process::Command::new(cluster::repo_root().join("tests/harness/build-metallb.sh"))
            .stderr(Stdio::inherit())
            .output()
            .context("running tests/harness/build-metallb.sh")?;
    ensure!(out.status.success(), "build-metallb.sh failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let dir = text
        .lines()
        .last()
        .ok_or_else(|| anyhow!("build-metallb.sh printed nothing"))?;
    Ok(PathBuf::from(dir.trim()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let n: usize = env_or("BENCH_SERVICES", 10_000);
    let n_ep: usize = env_or("BENCH_EP_SERVICES", 200);
    let repeat: usize = env_or("BENCH_REPEAT", 3);
    let nrestarts: usize = env_or("BENCH_RESTARTS", 3);
    let idle = Duration::from_secs(env_or("BENCH_IDLE_SECONDS", 30));
    let metallb = if env_or("BENCH_METALLB", 1) != 0 {
        Some(metallb_bin()?)
    } else {
        None
    };
    ensure!(
        n <= 16_000 && n_ep <= 250,
        "BENCH_SERVICES ≤ 16,000 ({BIG_POOL}), BENCH_EP_SERVICES ≤ 250 ({EP_POOL})"
    );
    let started = Instant::now();
    let load_start = loadavg();
    let mut rows = if n_ep > 0 {
        endpoints_bench(n_ep, metallb.as_deref()).await?
    } else {
        Vec::new()
    };
    let big = big_bench(n, repeat, nrestarts, idle, metallb.as_deref()).await?;
    let big_rows = big_rows(&big, n);
    println!(
        "\nload average at start: {load_start}; at the end: {}",
        loadavg()
    );
    println!("\n| measurement | result | goal |\n|---|---|---|");
    for r in rows.drain(..) {
        println!("{r}");
    }
    println!(
        "\n| measurement ({n} Services) | metallb-rs | MetalLB 0.12.1 | goal |\n|---|---|---|---|"
    );
    for r in big_rows {
        println!("{r}");
    }
    println!("\n(total {:.0} s)", started.elapsed().as_secs_f64());
    if let Some(Err(e)) = big.theirs {
        return Err(e.context("the MetalLB 0.12.1 part failed"));
    }
    Ok(())
}
