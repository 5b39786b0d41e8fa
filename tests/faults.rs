//! The controller under faults of its apiserver, on the real apiserver: half-open connections,
//! resets and added latency injected by a TCP proxy between the controller and the apiserver
//! (`tests/common/faultproxy.rs`), and etcd paused (SIGSTOP) for 20 s. After each fault no IP is
//! duplicated, none has moved, and every Service converges once the fault clears.

#[path = "common/cluster.rs"]
mod cluster;

#[path = "common/faultproxy.rs"]
mod faultproxy;

#[path = "common/httpfault.rs"]
mod httpfault;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, ensure};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

use cluster::{Cluster, MetallbRbac, Options};
use faultproxy::{Fault, FaultProxy};
use httpfault::{Answer, HttpFault, Rule};

const CONFIG: &str =
    "address-pools:\n- name: default\n  protocol: layer2\n  addresses: [203.0.113.0/27]\n";
/// How long a Service may take to converge after a fault clears. The longest path is a watch
/// whose connection went half-open: found dead after `k8s::watch::WATCH_TIMEOUT_SECS` + 5 s of
/// silence, then its renewal may land on a pooled connection that died too, given up after
/// `k8s::source::READ_TIMEOUT` (70 s); the pool drops connections idle for 90 s. Without these
/// the watch would wait 295 s, and a renewal on a dead connection forever.
const CONVERGE: Duration = Duration::from_secs(200);

#[derive(Clone)]
struct Env {
    admin: Client,
    ns: String,
    class: String,
    kubeconfig: PathBuf,
}

impl Env {
    async fn new(cluster: &Cluster, prefix: &str) -> Result<Env> {
        let admin = cluster.client().await?;
        let (ns, kubeconfig) = cluster
            .controller_namespace(&admin, prefix, MetallbRbac::V0_12_1)
            .await?;
        cluster::apply_config(&admin, &ns, CONFIG).await?;
        Ok(Env {
            admin,
            class: format!("metallb-rs.test/{ns}"),
            ns,
            kubeconfig,
        })
    }

    /// The controller, talking to `server` (the apiserver or a proxy in front of it, a URL).
    fn controller(&self, dir: &Path, server: Option<String>) -> Result<tokio::process::Child> {
        let mut kubeconfig = self.kubeconfig.clone();
        if let Some(url) = server {
            let mut kc: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&self.kubeconfig)?)?;
            let clusters = kc["clusters"]
                .as_array_mut()
                .ok_or_else(|| anyhow!("no clusters in the kubeconfig"))?;
            for c in clusters {
                c["cluster"]["server"] = json!(url);
            }
            kubeconfig = dir.join(format!("kubeconfig-{}-proxied", self.ns));
            std::fs::write(&kubeconfig, serde_json::to_vec(&kc)?)?;
        }
        let log = std::fs::File::create(dir.join(format!("controller-{}.log", self.ns)))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_controller"))
            .args(["--namespace", &self.ns, "--lb-class", &self.class])
            .args(["--log-level", "debug", "--port", &port.to_string()])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting the controller")
    }

    async fn create(&self, name: &str) -> Result<()> {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": self.class,
                "allocateLoadBalancerNodePorts": false,
                "ports": [{"port": 80, "protocol": "TCP"}],
            },
        }))?;
        Api::<Service>::namespaced(self.admin.clone(), &self.ns)
            .create(&PostParams::default(), &svc)
            .await
            .with_context(|| format!("creating Service {name}"))?;
        Ok(())
    }

    async fn wait_ip(&self, name: &str) -> Result<IpAddr> {
        cluster::wait_service_ip(&self.admin, &self.ns, name, CONVERGE).await
    }

    async fn ips(&self) -> Result<BTreeMap<String, Vec<IpAddr>>> {
        cluster::service_ips(&Api::namespaced(self.admin.clone(), &self.ns)).await
    }

    /// No IP held twice, and every Service of `before` still holds what it held.
    async fn check(
        &self,
        before: &BTreeMap<String, Vec<IpAddr>>,
    ) -> Result<BTreeMap<String, Vec<IpAddr>>> {
        let now = self.ips().await?;
        let mut seen = BTreeSet::new();
        for (name, ips) in &now {
            for ip in ips {
                ensure!(seen.insert(*ip), "{ip} is held twice: {now:?}");
            }
            if let Some(was) = before.get(name) {
                ensure!(was == ips, "{name} moved from {was:?} to {ips:?}");
            }
        }
        Ok(now)
    }
}

/// A watch connection that goes half-open (the path dies with no FIN or RST) is found dead and
/// resumed; resets and slow links are ridden out; nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_reset_and_slow_connections_move_no_ip() -> Result<()> {
    let cluster = Cluster::shared()?;
    let env = Env::new(cluster, "fault-net").await?;
    let upstream: SocketAddr = cluster
        .apiserver_url()
        .trim_start_matches("https://")
        .parse()
        .context("apiserver address")?;
    let proxy = FaultProxy::start(upstream).await?;
    let _ctl = env.controller(cluster.dir(), Some(format!("https://{}", proxy.addr())))?;
    for i in 0..5 {
        env.create(&format!("a{i}")).await?;
    }
    for i in 0..5 {
        env.wait_ip(&format!("a{i}")).await?;
    }
    let mut before = env.check(&BTreeMap::new()).await?;

    // Half-open: every open connection (the Service watch among them) dies silently; new
    // connections work again at once, the dead ones stay dead.
    proxy.set(Fault::HalfOpen);
    env.create("half-open").await?;
    proxy.set(Fault::None);
    env.wait_ip("half-open").await?;
    before = env.check(&before).await?;

    // Reset: every connection gets an RST, and so does every new one for a while.
    let accepted = proxy.accepted();
    proxy.set(Fault::Reset);
    env.create("reset").await?;
    // The controller has tried to reconnect (and been reset) at least once.
    let t = tokio::time::Instant::now();
    while proxy.accepted() == accepted {
        ensure!(t.elapsed() < CONVERGE, "the controller never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.set(Fault::None);
    env.wait_ip("reset").await?;
    before = env.check(&before).await?;

    // A slow link: every chunk both ways 300 ms late.
    proxy.set(Fault::Delay(Duration::from_millis(300)));
    env.create("slow").await?;
    env.wait_ip("slow").await?;
    proxy.set(Fault::None);
    env.check(&before).await?;
    Ok(())
}

/// etcd stopped for 20 s (the apiserver answers nothing that needs storage), with a Service
/// created meanwhile: once etcd runs again, it gets an IP and nothing else moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_paused_for_20_seconds_moves_no_ip() -> Result<()> {
    // Its own cluster: pausing etcd stalls every client of the apiserver.
    let cluster = Cluster::start(&Options::default())?;
    let env = Env::new(&cluster, "fault-etcd").await?;
    let _ctl = env.controller(cluster.dir(), None)?;
    for i in 0..5 {
        env.create(&format!("c{i}")).await?;
    }
    for i in 0..5 {
        env.wait_ip(&format!("c{i}")).await?;
    }
    let before = env.check(&BTreeMap::new()).await?;
    let etcd = std::fs::read_to_string(cluster.dir().join("pids/etcd.pid"))?
        .trim()
        .to_owned();
    let signal = |sig: &str| -> Result<()> {
        let st = std::process::Command::new("kill")
            .args([sig, &etcd])
            .status()?;
        ensure!(st.success(), "kill {sig} {etcd}");
        Ok(())
    };
    signal("-STOP")?;
    // Created while etcd is stopped: the create itself waits (or times out and is repeated).
    let admin_env = env.clone();
    let create = tokio::spawn(async move { admin_env.create("during").await });
    tokio::time::sleep(Duration::from_secs(20)).await;
    signal("-CONT")?;
    match create.await? {
        Ok(()) => {}
        // The apiserver gave up on etcd (timeout) or the object went in anyway.
        Err(e) => {
            eprintln!("create during the pause: {e:#}; creating again");
            if let Err(e) = env.create("during").await {
                ensure!(format!("{e:#}").contains("already exists"), "{e:#}");
            }
        }
    }
    env.wait_ip("during").await?;
    env.check(&before).await?;
    Ok(())
}

/// Apiserver errors on the status writes (503, 500, 409 Conflict, 403 from an admission
/// webhook) and a watch that ends in `410 Gone`, injected at the HTTP level between the
/// controller and `kubectl proxy` (which holds the controller's identity): each failed write
/// is retried with back-off until it lands, the watch relists, and nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_and_gone_watches_move_no_ip() -> Result<()> {
    let cluster = Cluster::shared()?;
    let env = Env::new(cluster, "fault-http").await?;
    let (_kubectl, upstream) = httpfault::kubectl_proxy(cluster.kubectl(), &env.kubeconfig).await?;
    let proxy = HttpFault::start(upstream).await?;
    let _ctl = env.controller(cluster.dir(), Some(format!("http://{}", proxy.addr())))?;
    let log = cluster.dir().join(format!("controller-{}.log", env.ns));
    let with_log = |e: anyhow::Error| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        anyhow!(
            "{e:#}; controller log (last lines first):\n{}",
            tail.join("\n")
        )
    };
    for i in 0..3 {
        env.create(&format!("h{i}")).await?;
    }
    for i in 0..3 {
        env.wait_ip(&format!("h{i}")).await.map_err(with_log)?;
    }
    let mut before = env.check(&BTreeMap::new()).await?;
    let status_write = |answer, count| Rule {
        methods: &["PATCH", "PUT"],
        contains: vec![
            format!("/namespaces/{}/services/", env.ns),
            "/status".into(),
        ],
        answer,
        count,
    };

    for (name, answer, count) in [
        ("unavailable", Answer::Status(503, "ServiceUnavailable"), 3),
        ("internal", Answer::Status(500, "InternalError"), 2),
        ("conflict", Answer::Status(409, "Conflict"), 2),
        ("denied", Answer::Status(403, "Forbidden"), 1),
    ] {
        let was = proxy.injected().len();
        proxy.add(status_write(answer, count));
        env.create(name).await?;
        env.wait_ip(name).await.map_err(with_log)?;
        let hit = proxy.injected().len() - was;
        ensure!(
            hit == count,
            "{name}: {hit} of {count} injected {answer:?} answers were used: {:?}",
            proxy.injected()
        );
        before = env.check(&before).await?;
    }

    // Every open connection ends; the Services watch comes back and gets 410 Gone.
    let was = proxy.injected().len();
    proxy.add(Rule {
        methods: &["GET"],
        contains: vec!["/services".into(), "watch=".into()],
        answer: Answer::WatchGone,
        count: 1,
    });
    proxy.cut_all();
    let t = tokio::time::Instant::now();
    while proxy.injected().len() == was {
        ensure!(t.elapsed() < CONVERGE, "the Services watch never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.create("after-gone").await?;
    env.wait_ip("after-gone").await.map_err(with_log)?;
    env.check(&before).await?;
    Ok(())
}
