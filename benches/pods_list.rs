//! What the speakers' Pods reads cost the apiserver at scale (issue: the Pods list under
//! MetalLB's `list`-only RBAC must not grow as N²).
//!
//! `BENCH_NODES` (300) Ready Nodes and speaker Pods exist in the real kube-apiserver of
//! `tests/harness`; `BENCH_SPEAKERS` (as many) real speaker processes run in one network
//! namespace on the harness bridge, one per simulated node (`METALLB_NODE_NAME`), gossip off
//! (`--ml-bindaddr=`, so the Pods reads are the speakers' only view of each other), no
//! Services. Over a window of `BENCH_WINDOW_SECONDS` (30) the apiserver's own metrics give
//! the rate of Pods LIST and WATCH requests, how many LISTs the watch cache served, and the
//! bytes they returned; the apiserver's CPU comes from `/proc`. Two phases:
//!
//! 1. MetalLB's speaker RBAC (Pods `list` only): every speaker lists the speaker Pods every
//!    3 s (jittered ±10 %) with `resourceVersion=0`, so the cluster sends N/3 LISTs per second,
//!    each of N Pods: requests grow as N, bytes as N².
//! 2. Our manifest's extra `watch` on Pods: one watch per speaker, no periodic LIST.
//!
//! Run as root: `cargo bench --bench pods_list` (results go to BENCHMARKS.md by hand).

#[path = "../tests/common/cluster.rs"]
mod cluster;

#[path = "../tests/common/lab.rs"]
mod lab;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use cluster::{Cluster, MetallbRbac};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use lab::{clock_ticks, cpu_ticks};

/// Metrics port of the first speaker (the others follow) in the bench's network namespace.
const METRICS_PORT_BASE: u16 = 17_000;
use serde_json::json;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sum of the samples of `name` whose labels contain every one of `labels`.
fn sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            (rest.starts_with('{') || rest.is_empty()).then_some(())?;
            labels
                .iter()
                .all(|want| rest.contains(want))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The counters a phase reads, from the apiserver's `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    lists: f64,
    /// A gauge (open Pods watches), not a counter.
    open_watches: f64,
    cache_lists: f64,
    list_bytes: f64,
    apiserver_ticks: u64,
}

async fn counters(cluster: &Cluster, apiserver: Option<u32>) -> Result<Counters> {
    let out = cluster
        .kubectl()
        .args(["get", "--raw", "/metrics"])
        .output()
        .await
        .context("kubectl get --raw /metrics")?;
    ensure!(
        out.status.success(),
        "kubectl get --raw /metrics: {}",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let pods = r#"resource="pods""#;
    Ok(Counters {
        lists: sum(&text, "apiserver_request_total", &[pods, r#"verb="LIST""#]),
        open_watches: sum(
            &text,
            "apiserver_longrunning_requests",
            &[pods, r#"verb="WATCH""#],
        ),
        // The label is `resource_prefix="/pods"` before Kubernetes 1.33, `resource="pods"` after.
        cache_lists: sum(&text, "apiserver_cache_list_total", &[pods])
            + sum(
                &text,
                "apiserver_cache_list_total",
                &[r#"resource_prefix="/pods""#],
            ),
        list_bytes: sum(
            &text,
            "apiserver_response_sizes_sum",
            &[pods, r#"verb="LIST""#],
        ),
        apiserver_ticks: apiserver.and_then(cpu_ticks).unwrap_or(0),
    })
}

fn apiserver_pid(cluster: &Cluster) -> Option<u32> {
    std::fs::read_to_string(cluster.dir().join("pids/kube-apiserver.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

struct Speakers {
    children: Vec<tokio::process::Child>,
}

impl Speakers {
    fn start(
        netns: &str,
        addr: &str,
        ns: &str,
        kc: &std::path::Path,
        nodes: &[String],
        logs: &std::path::Path,
    ) -> Result<Speakers> {
        let mut children = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            // The namespace is the bench's own: fixed ports cannot collide there.
            let port = METRICS_PORT_BASE + u16::try_from(i)?;
            let log = std::fs::File::create(logs.join(format!("{node}.log")))?;
            let child = tokio::process::Command::new("ip")
                .args(["netns", "exec", netns])
                .arg(env!("CARGO_BIN_EXE_speaker"))
                .args(["--namespace", ns, "--lb-class", &format!("bench/{ns}")])
                .args(["--port", &port.to_string(), "--log-level", "info"])
                .arg("--kubeconfig")
                .arg(kc)
                .arg("--ml-bindaddr=")
                .env_remove("KUBECONFIG")
                .env("METALLB_NODE_NAME", node)
                .env("METALLB_HOST", addr)
                .env("METALLB_ML_LABELS", "app=metallb,component=speaker")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .context("starting a speaker")?;
            children.push(child);
        }
        Ok(Speakers { children })
    }

    async fn stop(mut self) {
        for c in &mut self.children {
            let _ = c.kill().await;
        }
    }
}

/// Waits until every speaker logged that it reads Pods the way `needle` says.
async fn wait_all_logged(logs: &std::path::Path, nodes: &[String], needle: &str) -> Result<()> {
    let t = Instant::now();
    loop {
        let missing = nodes
            .iter()
            .filter(|n| {
                !std::fs::read_to_string(logs.join(format!("{n}.log")))
                    .unwrap_or_default()
                    .contains(needle)
            })
            .count();
        if missing == 0 {
            return Ok(());
        }
        ensure!(
            t.elapsed() < Duration::from_secs(600),
            "{missing} speakers did not log {needle:?} within 10 min (logs in {})",
            logs.display()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

struct Phase {
    name: &'static str,
    secs: f64,
    d: Counters,
}

async fn measure(
    name: &'static str,
    cluster: &Cluster,
    window: Duration,
    apiserver: Option<u32>,
) -> Result<Phase> {
    let before = counters(cluster, apiserver).await?;
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let after = counters(cluster, apiserver).await?;
    let secs = t.elapsed().as_secs_f64();
    Ok(Phase {
        name,
        secs,
        d: Counters {
            lists: after.lists - before.lists,
            open_watches: after.open_watches,
            cache_lists: after.cache_lists - before.cache_lists,
            list_bytes: after.list_bytes - before.list_bytes,
            apiserver_ticks: after.apiserver_ticks.saturating_sub(before.apiserver_ticks),
        },
    })
}

async fn create_nodes_and_pods(
    admin: &Client,
    ns: &str,
    nodes: &[String],
    addr: &str,
) -> Result<()> {
    let node_api: Api<Node> = Api::all(admin.clone());
    let pod_api: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    for (i, name) in nodes.iter().enumerate() {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "metallb-rs.test/ns": ns}},
        }))?;
        node_api.create(&PostParams::default(), &node).await?;
        node_api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": [{
                    "type": "Ready", "status": "True", "reason": "Bench", "message": "bench",
                    "lastHeartbeatTime": now, "lastTransitionTime": now,
                }]}})),
            )
            .await?;
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("speaker-{i}"), "labels": {"app": "metallb", "component": "speaker"}},
            "spec": {
                "nodeName": name, "serviceAccountName": "speaker",
                "automountServiceAccountToken": false, "hostNetwork": true,
                "containers": [{"name": "speaker", "image": "metallb-rs/speaker:bench"}],
            },
        }))?;
        pod_api.create(&PostParams::default(), &pod).await?;
        pod_api
            .patch_status(
                &format!("speaker-{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "phase": "Running", "podIP": addr, "podIPs": [{"ip": addr}], "hostIP": addr,
                    "conditions": [{"type": "Ready", "status": "True"}],
                }})),
            )
            .await?;
    }
    Ok(())
}

async fn run(cluster: &'static Cluster) -> Result<Vec<Phase>> {
    let n: usize = env_or("BENCH_NODES", 300);
    let speakers: usize = env_or("BENCH_SPEAKERS", n).min(n);
    let window = Duration::from_secs(env_or("BENCH_WINDOW_SECONDS", 30));
    let admin = cluster.client().await?;
    let ns = cluster.fresh_namespace(&admin, "podsl").await?;
    cluster
        .install_metallb_rbac(&admin, MetallbRbac::V0_12_1, &ns)
        .await?;
    let kc = cluster
        .service_account_kubeconfig(&admin, &ns, "speaker")
        .await?;
    let netns = format!("podsl{}", std::process::id() % 10000);
    let addr = cluster.add_node_netns(&netns)?;
    let nodes: Vec<String> = (0..n).map(|i| format!("{netns}-n{i}")).collect();
    eprintln!("creating {n} Nodes and speaker Pods");
    create_nodes_and_pods(&admin, &ns, &nodes, &addr).await?;
    let logs: PathBuf = cluster.dir().join(format!("pods-list-{ns}"));
    std::fs::create_dir_all(&logs)?;
    let apiserver = apiserver_pid(cluster);
    let running = &nodes[..speakers];
    let mut phases = Vec::new();

    eprintln!("starting {speakers} speakers (MetalLB's RBAC: Pods list only)");
    let s = Speakers::start(&netns, &addr, &ns, &kc, running, &logs)?;
    wait_all_logged(&logs, running, "Polling speaker Pods").await?;
    // One more poll period, so that every speaker is past its start-up reads.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let name = "Pods `list` only (MetalLB's RBAC)";
    phases.push(measure(name, cluster, window, apiserver).await?);
    eprintln!("{}", row(&phases[0]));
    s.stop().await;

    cluster.grant_speaker_pod_watch(&admin, &ns).await?;
    for n in running {
        let _ = std::fs::remove_file(logs.join(format!("{n}.log")));
    }
    eprintln!("starting {speakers} speakers (Pods watch granted)");
    let s = Speakers::start(&netns, &addr, &ns, &kc, running, &logs)?;
    wait_all_logged(&logs, running, "Watching speaker Pods").await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    phases.push(measure("Pods `watch` (our manifest)", cluster, window, apiserver).await?);
    eprintln!("{}", row(&phases[1]));
    s.stop().await;

    let node_api: Api<Node> = Api::all(admin.clone());
    for name in &nodes {
        let _ = node_api.delete(name, &DeleteParams::default()).await;
    }
    Ok(phases)
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench targets without `--bench`: nothing to do.
        return Ok(());
    }
    let cluster = lab::cluster()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let phases = rt.block_on(run(cluster))?;
    let n: usize = env_or("BENCH_NODES", 300);
    let speakers: usize = env_or("BENCH_SPEAKERS", n).min(n);
    println!("\n{n} Nodes and speaker Pods, {speakers} speakers\n");
    println!(
        "| phase | Pods LIST/s | of them from the watch cache | LIST MB/s | open Pods watches | apiserver CPU |"
    );
    println!("|---|---|---|---|---|---|");
    for p in &phases {
        println!("{}", row(p));
    }
    Ok(())
}

/// One table row of a phase.
fn row(p: &Phase) -> String {
    let d = p.d;
    let hz = clock_ticks() as f64;
    format!(
        "| {} | {:.1} | {:.0} % | {:.2} | {:.0} | {:.0} % |",
        p.name,
        d.lists / p.secs,
        if d.lists > 0.0 {
            100.0 * d.cache_lists / d.lists
        } else {
            0.0
        },
        d.list_bytes / p.secs / 1e6,
        d.open_watches,
        100.0 * d.apiserver_ticks as f64 / hz / p.secs,
    )
}
