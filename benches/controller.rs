//! Controller benchmarks against the real kube-apiserver + etcd of `tests/harness`.
//!
//! Run: `cargo bench --bench controller` (starts its own cluster; ~4-6 minutes on 2 cores).
//!
//! 1. Service create → IP in status, p50/p99 over sequential creations;
//! 2. N Services (default 10,000; `BENCH_SERVICES`) created while the controller is down, then
//!    the controller started: time until all have IPs (the apiserver's own creation rate on 2
//!    cores, ~70/s, would otherwise dominate), and the controller's peak RSS (VmHWM);
//! 3. ConfigMap edit → config applied (the new sha256 is live on /metrics), p50/p99.
//!
//! The controller runs under a ServiceAccount bound to MetalLB 0.12.1's controller RBAC, as a
//! drop-in deployment does. Services are IPv6 single-stack from 2001:db8::/64 (the documentation prefix): no IPv4
//! documentation range is large enough for 10,000 Services.

#[path = "../tests/common/cluster.rs"]
mod cluster;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use cluster::Cluster;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServicePort, ServiceSpec};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn svc(name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            ip_families: Some(vec!["IPv6".into()]),
            ip_family_policy: Some("SingleStack".into()),
            allocate_load_balancer_node_ports: Some(false),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn config(extra_pools: usize) -> String {
    let mut s = String::from(
        "address-pools:\n- name: v6\n  protocol: layer2\n  addresses: ['2001:db8::/64']\n",
    );
    for i in 0..extra_pools {
        s.push_str(&format!(
            "- name: extra{i}\n  protocol: layer2\n  addresses: ['192.0.2.{i}/32']\n"
        ));
    }
    s
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let n: usize = std::env::var("BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let c = Cluster::shared()?;
    let admin = c.client().await?;
    let ns = c.fresh_namespace(&admin, "bench").await?;
    // Run as users do: under MetalLB 0.12.1's controller RBAC (our manifest grants the same
    // plus Leases), not as the cluster admin.
    c.install_metallb_rbac(&admin, cluster::MetallbRbac::V0_12_1, &ns)
        .await?;
    let kubeconfig = c
        .service_account_kubeconfig(&admin, &ns, "controller")
        .await?;
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let set_config = |payload: String| {
        let cms = cms.clone();
        async move {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some("config".into()),
                    ..Default::default()
                },
                data: Some([("config".to_string(), payload)].into()),
                ..Default::default()
            };
            cms.patch(
                "config",
                &PatchParams::apply("bench").force(),
                &Patch::Apply(&cm),
            )
            .await
        }
    };
    set_config(config(0)).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_controller"))
            .args([
                "--namespace",
                &ns,
                "--port",
                &port.to_string(),
                "--log-level",
                "warn",
                "--disable-leader-election",
            ])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the controller")
    };
    let mut child = spawn()?;
    let pid = child.id().unwrap_or(0);
    let t = Instant::now();
    while !cluster::scrape_metrics(port)
        .await
        .map(|m| m.contains("metallb_k8s_client_config_loaded_bool 1"))
        .unwrap_or(false)
    {
        if t.elapsed() > Duration::from_secs(30) {
            bail!("controller not ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_idle = rss_kib(pid);

    // 1. Latency: create → IP in status, seen through a watch.
    let api: Api<Service> = Api::namespaced(admin.clone(), &ns);
    let mut stream = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    // Let the watch finish its initial list first, so every creation shows up as an Apply.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(watcher::Event::InitDone))) => break,
            Ok(Some(_)) => {}
            _ => bail!("the watch did not start"),
        }
    }
    let mut lat = Vec::new();
    for i in 0..200 {
        let name = format!("lat{i}");
        let t = Instant::now();
        api.create(&PostParams::default(), &svc(&name)).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                Ok(Some(Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s))))
                    if s.metadata.name.as_deref() == Some(&name)
                        && !metallb_rs::k8s::service::status_ips(&s).is_empty() =>
                {
                    break;
                }
                Ok(Some(_)) => {}
                _ => bail!("no IP for {name}"),
            }
        }
        lat.push(t.elapsed());
    }
    drop(stream);
    println!(
        "create→IP over {} Services: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        lat.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );

    // 2. N Services created while the controller is down, then one controller start.
    child.kill().await?;
    let t = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..n {
        let api = api.clone();
        let permit = sem.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let r = api
                .create(&PostParams::default(), &svc(&format!("bulk{i}")))
                .await;
            drop(permit);
            r.map(|_| ())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let created = t.elapsed();
    let t = Instant::now();
    let mut child = spawn()?;
    let pid = child.id().unwrap_or(0);
    let mut peak = 0;
    loop {
        peak = peak.max(rss_kib(pid));
        let Ok(m) = cluster::scrape_metrics(port).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let in_use = m
            .lines()
            .find(|l| l.starts_with("metallb_allocator_addresses_in_use_total{pool=\"v6\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if in_use >= n + 200 {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("only {in_use} allocated after 600s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Allocation is done when the allocator counts them; statuses follow: wait for the last.
    let last = format!("bulk{}", n - 1);
    while metallb_rs::k8s::service::status_ips(&api.get_status(&last).await?).is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = t.elapsed();
    peak = peak.max(rss_kib(pid));
    println!(
        "{n} pending Services (created in {created:.1?} with the controller down): controller start → all with IPs {all:.1?}; controller RSS idle {} MiB, peak {} MiB",
        rss_idle / 1024,
        peak / 1024
    );

    // 3. ConfigMap edit → applied.
    let mut lat = Vec::new();
    for i in 1..=30 {
        let payload = config(i);
        let sha = metallb_rs::config::input::sha256_hex(payload.as_bytes());
        let t = Instant::now();
        set_config(payload).await?;
        let want = format!("metallb_rs_config_info{{sha256=\"{sha}\"}} 1");
        while !cluster::scrape_metrics(port).await?.contains(&want) {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("config {i} not applied");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lat.push(t.elapsed());
    }
    println!(
        "ConfigMap edit→applied over {} edits (with {} Services): p50 {:.1?}, p99 {:.1?}",
        lat.len(),
        n + 200,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    child.kill().await?;
    Ok(())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}
