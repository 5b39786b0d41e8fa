//! The speaker in layer 2 mode against a real kube-apiserver + etcd and real network
//! namespaces: three "node" namespaces and a client namespace on the harness bridge, speakers
//! running as real processes inside the node namespaces with only `CAP_NET_RAW`, under a
//! ServiceAccount bound to exactly MetalLB's speaker RBAC, the controller allocating IPs.
//!
//! There is no kubelet: each test creates a Ready Node and a Ready speaker Pod (with its pod
//! IP) per simulated node, and flips them to exercise the Kubernetes liveness signals.
//! Answers are observed from the client namespace with the real `arping`, `ndisc6`, `ping`
//! and `tcpdump`.
//!
//! Isolation: every test has its own namespace, `--lb-class`, Node names and network
//! namespaces; service IPs are distinct per test (203.0.113.0/24 split by test).

#[path = "common/cluster.rs"]
mod cluster;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use cluster::{Cluster, MetallbRbac, Options};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const WAIT: Duration = Duration::from_secs(30);

/// One netns cluster for every test of this binary; torn down by the harness watchdog when
/// the test process exits.
fn cluster() -> Result<&'static Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| Cluster::start(&Options { netns: true }).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("starting the netns cluster failed: {e}"))
}

/// A simulated node: a network namespace on the bridge, a Node, a speaker Pod, and (when
/// running) a speaker process.
struct SimNode {
    /// Kubernetes node name.
    name: String,
    netns: String,
    addr: String,
    mac: String,
    /// The host side of the node's veth (to partition the node).
    host_if: String,
    metrics_port: u16,
    log: PathBuf,
    speaker: Option<tokio::process::Child>,
}

struct Lab {
    cluster: &'static Cluster,
    admin: Client,
    ns: String,
    class: String,
    speaker_kc: PathBuf,
    nodes: Vec<SimNode>,
    client_ns: String,
    controller: Option<tokio::process::Child>,
}

fn run(cmd: &mut std::process::Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip_cmd(args: &[&str]) -> Result<String> {
    run(std::process::Command::new("ip").args(args))
}

fn in_ns(netns: &str, args: &[&str]) -> Result<String> {
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", netns]).args(args);
    run(&mut c)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The node MetalLB elects for `ip` among `nodes`: lowest sha256(node "#" ip), computed here
/// independently of the crate's election module.
fn expected_owner<'a>(nodes: impl IntoIterator<Item = &'a str>, ip: IpAddr) -> Option<&'a str> {
    nodes
        .into_iter()
        .min_by_key(|n| Sha256::digest(format!("{n}#{ip}").as_bytes()).to_vec())
}

impl Lab {
    /// A lab of `n` nodes under MetalLB `rbac`, with the controller running.
    async fn new(tag: &str, n: usize, rbac: MetallbRbac) -> Result<Lab> {
        let cluster = cluster()?;
        let admin = cluster.client().await?;
        let ns = cluster.fresh_namespace(&admin, tag).await?;
        cluster.install_metallb_rbac(&admin, rbac, &ns).await?;
        let speaker_kc = cluster
            .service_account_kubeconfig(&admin, &ns, "speaker")
            .await?;
        let controller_kc = cluster
            .service_account_kubeconfig(&admin, &ns, "controller")
            .await?;
        let class = format!("metallb-rs.test/{ns}");
        let short = format!("{tag}{}", std::process::id() % 10000);
        let mut nodes = Vec::new();
        for i in 0..n {
            let netns = format!("{short}-n{i}");
            let addr = cluster.add_node_netns(&netns)?;
            let link: serde_json::Value =
                serde_json::from_str(&in_ns(&netns, &["ip", "-j", "link", "show", "eth0"])?)?;
            let mac = link[0]["address"]
                .as_str()
                .ok_or_else(|| anyhow!("no MAC on {netns} eth0"))?
                .to_string();
            let peer = link[0]["link_index"]
                .as_u64()
                .ok_or_else(|| anyhow!("no link_index on {netns} eth0"))?;
            let host: serde_json::Value = serde_json::from_str(&ip_cmd(&["-j", "link", "show"])?)?;
            let host_if = host
                .as_array()
                .and_then(|l| l.iter().find(|x| x["ifindex"].as_u64() == Some(peer)))
                .and_then(|x| x["ifname"].as_str())
                .ok_or_else(|| anyhow!("host side of {netns} not found"))?
                .to_string();
            // The service IPs live on lo (as kube-proxy in IPVS mode puts them on kube-ipvs0);
            // the kernel must not answer ARP for them, the speaker does.
            in_ns(&netns, &["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"])?;
            in_ns(
                &netns,
                &["sysctl", "-qw", "net.ipv4.conf.eth0.arp_ignore=1"],
            )?;
            nodes.push(SimNode {
                name: format!("{ns}-n{i}"),
                netns,
                addr,
                mac,
                host_if,
                metrics_port: free_port()?,
                log: cluster.dir().join(format!("speaker-{ns}-n{i}.log")),
                speaker: None,
            });
        }
        let client_ns = format!("{short}-c");
        cluster.add_node_netns(&client_ns)?;
        // Service IPs are on-link for the client (resolved by ARP/NDP on the bridge).
        in_ns(
            &client_ns,
            &["ip", "route", "add", "203.0.113.0/24", "dev", "eth0"],
        )?;
        in_ns(
            &client_ns,
            &["ip", "-6", "route", "add", "2001:db8::/32", "dev", "eth0"],
        )?;
        let mut lab = Lab {
            cluster,
            admin,
            ns,
            class,
            speaker_kc,
            nodes,
            client_ns,
            controller: None,
        };
        for i in 0..n {
            lab.create_node_and_pod(i).await?;
        }
        lab.start_controller(&controller_kc)?;
        Ok(lab)
    }

    async fn create_node_and_pod(&self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        let nodes: Api<Node> = Api::all(self.admin.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n.name, "labels": {"kubernetes.io/hostname": n.name, "metallb-rs.test/ns": self.ns}},
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
        self.set_node_ready(i, true).await?;
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), &self.ns);
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("speaker-{i}"), "labels": {"app": "metallb", "component": "speaker"}},
            "spec": {
                "nodeName": n.name,
                "serviceAccountName": "speaker",
                "automountServiceAccountToken": false,
                "hostNetwork": true,
                "containers": [{"name": "speaker", "image": "metallb-rs/speaker:test"}],
            },
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        self.set_pod_ready(i, true).await
    }

    async fn set_node_ready(&self, i: usize, ready: bool) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.admin.clone());
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        nodes
            .patch_status(
                &self.nodes[i].name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": [{
                    "type": "Ready", "status": if ready { "True" } else { "False" },
                    "reason": "Test", "message": "set by the test",
                    "lastHeartbeatTime": now, "lastTransitionTime": now,
                }]}})),
            )
            .await?;
        Ok(())
    }

    async fn set_pod_ready(&self, i: usize, ready: bool) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), &self.ns);
        let addr = &self.nodes[i].addr;
        pods.patch_status(
            &format!("speaker-{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Running", "podIP": addr, "podIPs": [{"ip": addr}], "hostIP": addr,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            }})),
        )
        .await?;
        Ok(())
    }

    fn start_controller(&mut self, kc: &std::path::Path) -> Result<()> {
        let log = self
            .cluster
            .dir()
            .join(format!("controller-{}.log", self.ns));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_controller"))
            .args(["--namespace", &self.ns, "--lb-class", &self.class])
            .args(["--port", &free_port()?.to_string(), "--log-level", "debug"])
            .arg("--kubeconfig")
            .arg(kc)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("starting the controller")?;
        self.controller = Some(child);
        Ok(())
    }

    /// Start node `i`'s speaker inside its namespace with only CAP_NET_RAW.
    fn start_speaker(&mut self, i: usize, extra: &[&str]) -> Result<()> {
        let n = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)?;
        let child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &n.netns])
            .args([
                "setpriv",
                "--bounding-set=-all,+net_raw",
                "--inh-caps=-all,+net_raw",
                "--ambient-caps=-all,+net_raw",
                "--",
            ])
            .arg(env!("CARGO_BIN_EXE_speaker"))
            .args(["--namespace", &self.ns, "--lb-class", &self.class])
            .args([
                "--port",
                &n.metrics_port.to_string(),
                "--log-level",
                "debug",
            ])
            .arg("--kubeconfig")
            .arg(&self.speaker_kc)
            .args(extra)
            .env_remove("KUBECONFIG")
            .env("METALLB_NODE_NAME", &n.name)
            .env("METALLB_HOST", &n.addr)
            .env("METALLB_ML_BIND_ADDR", &n.addr)
            .env("METALLB_ML_LABELS", "app=metallb,component=speaker")
            .env("METALLB_ML_SECRET_KEY", format!("secret-{}", self.ns))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting a speaker")?;
        self.nodes[i].speaker = Some(child);
        Ok(())
    }

    fn start_all(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.start_speaker(i, &[])?;
        }
        Ok(())
    }

    /// SIGKILL node `i`'s speaker.
    async fn kill9(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.nodes[i].speaker.take() {
            c.kill().await?;
        }
        Ok(())
    }

    /// SIGTERM node `i`'s speaker (a planned restart) and wait for it to exit.
    async fn sigterm(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.nodes[i].speaker.take() {
            // `ip netns exec` execs the speaker, so the child's pid is the speaker's.
            let pid = c.id().ok_or_else(|| anyhow!("speaker already gone"))?;
            run(std::process::Command::new("kill").args(["-TERM", &pid.to_string()]))?;
            let status = tokio::time::timeout(WAIT, c.wait()).await??;
            ensure!(
                status.success(),
                "speaker exited with {status} after SIGTERM"
            );
        }
        Ok(())
    }

    async fn set_config(&self, payload: &str) -> Result<()> {
        let cm: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "config"}, "data": {"config": payload},
        }))?;
        Api::<ConfigMap>::namespaced(self.admin.clone(), &self.ns)
            .patch(
                "config",
                &PatchParams::apply("test").force(),
                &Patch::Apply(&cm),
            )
            .await?;
        Ok(())
    }

    /// A LoadBalancer Service of our class with one ready endpoint on node `endpoint_on`.
    async fn service(
        &self,
        name: &str,
        extra_spec: serde_json::Value,
        endpoint_on: &[usize],
    ) -> Result<()> {
        let mut spec = json!({
            "type": "LoadBalancer", "loadBalancerClass": self.class,
            "allocateLoadBalancerNodePorts": false,
            "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": name},
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec,
        }))?;
        Api::<Service>::namespaced(self.admin.clone(), &self.ns)
            .create(&PostParams::default(), &svc)
            .await?;
        self.set_endpoints(name, endpoint_on).await
    }

    /// Replace the service's EndpointSlice (and Endpoints) with one ready endpoint per node.
    async fn set_endpoints(&self, name: &str, on: &[usize]) -> Result<()> {
        let endpoints: Vec<serde_json::Value> = on
            .iter()
            .enumerate()
            .map(|(k, i)| json!({"addresses": [format!("192.0.2.{}", k + 10)], "conditions": {"ready": true}, "nodeName": self.nodes[*i].name}))
            .collect();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-x"), "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"port": 8080, "protocol": "TCP", "name": ""}],
        }))?;
        Api::<EndpointSlice>::namespaced(self.admin.clone(), &self.ns)
            .patch(
                &format!("{name}-x"),
                &PatchParams::apply("test").force(),
                &Patch::Apply(&slice),
            )
            .await?;
        let addresses: Vec<serde_json::Value> = on
            .iter()
            .enumerate()
            .map(|(k, i)| json!({"ip": format!("192.0.2.{}", k + 10), "nodeName": self.nodes[*i].name}))
            .collect();
        let ep: k8s_openapi::api::core::v1::Endpoints = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
            "subsets": if addresses.is_empty() { json!([]) } else { json!([{"addresses": addresses, "ports": [{"port": 8080}]}]) },
        }))?;
        Api::<k8s_openapi::api::core::v1::Endpoints>::namespaced(self.admin.clone(), &self.ns)
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&ep),
            )
            .await?;
        Ok(())
    }

    async fn wait_ip(&self, name: &str) -> Result<IpAddr> {
        let api: Api<Service> = Api::namespaced(self.admin.clone(), &self.ns);
        let t = Instant::now();
        loop {
            let s = api.get_status(name).await?;
            if let Some(ip) = metallb_rs::k8s::service::status_ips(&s).first() {
                return Ok(*ip);
            }
            ensure!(
                t.elapsed() < WAIT,
                "service {name} got no IP within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn names(&self, idx: &[usize]) -> Vec<&str> {
        idx.iter().map(|i| self.nodes[*i].name.as_str()).collect()
    }

    fn index_of_mac(&self, mac: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.mac.eq_ignore_ascii_case(mac))
    }

    fn index_of_name(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The MACs answering `count` ARP requests for `ip` from the client (real `arping`).
    fn arping(&self, ip: IpAddr, count: u32) -> Result<Vec<String>> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.client_ns, "arping", "-i", "eth0"])
            .args(["-c", &count.to_string(), "-W", "0.2", "-w", "3"])
            .arg(ip.to_string())
            .output()
            .context("running arping")?;
        Ok(parse_arping(&String::from_utf8_lossy(&out.stdout)))
    }

    /// The Target link-layer addresses answering an NDP solicitation for `ip` (real `ndisc6`).
    fn ndisc6(&self, ip: IpAddr) -> Result<Vec<String>> {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.client_ns,
                "ndisc6",
                "-m",
                "-n",
                "-r",
                "3",
                "-w",
                "500",
            ])
            .arg(ip.to_string())
            .arg("eth0")
            .output()
            .context("running ndisc6")?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter(|l| l.contains("Target link-layer address"))
            .filter_map(|l| {
                l.split(':')
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join(":")
                    .split_whitespace()
                    .next()
                    .map(str::to_string)
            })
            .collect())
    }

    /// Wait until ARP for `ip` is answered only by node `want`'s MAC (three answers in a row).
    async fn wait_arp_owner(&self, ip: IpAddr, want: usize) -> Result<Duration> {
        let t = Instant::now();
        loop {
            let macs = self.arping(ip, 3)?;
            let distinct: BTreeSet<&String> = macs.iter().collect();
            if macs.len() == 3 && distinct.len() == 1 && self.index_of_mac(&macs[0]) == Some(want) {
                return Ok(t.elapsed());
            }
            if t.elapsed() > WAIT {
                bail!(
                    "ARP for {ip}: wanted only {} ({}), got {macs:?}; logs: {}",
                    self.nodes[want].name,
                    self.nodes[want].mac,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn metrics(&self, i: usize) -> Result<String> {
        let n = &self.nodes[i];
        let mut s = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect((n.addr.as_str(), n.metrics_port)),
        )
        .await??;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await?;
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut body)).await??;
        Ok(body)
    }

    async fn wait_metric(&self, i: usize, pred: impl Fn(&str) -> bool, what: &str) -> Result<()> {
        let t = Instant::now();
        loop {
            if let Ok(m) = self.metrics(i).await
                && pred(&m)
            {
                return Ok(());
            }
            ensure!(
                t.elapsed() < WAIT,
                "node {i}: {what} not seen in metrics within {WAIT:?}; logs: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_event(&self, object: &str, reason: &str, needle: &str) -> Result<Event> {
        let api: Api<Event> = Api::namespaced(self.admin.clone(), &self.ns);
        let t = Instant::now();
        loop {
            let list = api.list(&ListParams::default()).await?;
            if let Some(e) = list.items.into_iter().find(|e| {
                e.involved_object.name.as_deref() == Some(object)
                    && e.reason.as_deref() == Some(reason)
                    && e.message.as_deref().is_some_and(|m| m.contains(needle))
            }) {
                return Ok(e);
            }
            ensure!(
                t.elapsed() < WAIT,
                "no {reason} Event on {object} containing {needle:?}; logs: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The tail of every speaker log, for failure messages (the cluster dir is removed when
    /// the test process exits).
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(25)..].join("\n");
                format!("\n==== {} ====\n{tail}", n.log.display())
            })
            .collect()
    }

    fn partition(&self, i: usize, cut: bool) -> Result<()> {
        let n = &self.nodes[i];
        if cut {
            ip_cmd(&["link", "set", &n.host_if, "nomaster"])?;
        } else {
            let bridge = std::fs::read_to_string(self.cluster.dir().join("netns/bridge"))?;
            ip_cmd(&["link", "set", &n.host_if, "master", bridge.trim()])?;
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Speakers and the controller die with their Child (kill_on_drop); the namespaces go
        // with the cluster. Node objects are cluster-scoped: remove ours.
        let admin = self.admin.clone();
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    let api: Api<Node> = Api::all(admin);
                    for n in names {
                        let _ = api.delete(&n, &DeleteParams::default()).await;
                    }
                });
            }
        })
        .join();
    }
}

/// MACs in Habets arping output lines "60 bytes from aa:bb:cc:dd:ee:ff (203.0.113.1): ...".
fn parse_arping(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split("bytes from ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|m| m.to_ascii_lowercase())
        .collect()
}

const POOLS: &str = "address-pools:\n- name: l2\n  protocol: layer2\n  addresses:\n  - 203.0.113.0/27\n  - 2001:db8:6::/120\n";

/// ARP and NDP answered by exactly the elected node, `ping` works through it, the owner
/// exposes `metallb_speaker_announced` and posts `nodeAssigned`; then failover: kill -9 of the
/// owner hands the IP to the next node, SIGTERM hands it over faster, and a restarted speaker
/// settles back to exactly one owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn arp_ndp_owner_and_failover() -> Result<()> {
    let mut lab = Lab::new("l2a", 3, MetallbRbac::V0_12_1).await?;
    lab.set_config(POOLS).await?;
    lab.start_all()?;
    lab.service("web", json!({}), &[0, 1, 2]).await?;
    lab.service(
        "web6",
        json!({"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"}),
        &[0, 1, 2],
    )
    .await?;
    let ip = lab.wait_ip("web").await?;
    let ip6 = lab.wait_ip("web6").await?;
    ensure!(ip.is_ipv4() && ip6.is_ipv6(), "families: {ip} {ip6}");
    let all = lab.names(&[0, 1, 2]);
    let owner = lab
        .index_of_name(expected_owner(all.iter().copied(), ip).ok_or_else(|| anyhow!("no owner"))?)
        .ok_or_else(|| anyhow!("owner not a node"))?;
    lab.wait_arp_owner(ip, owner).await?;
    // Exactly one answer per request, from the elected node.
    let macs = lab.arping(ip, 5)?;
    ensure!(macs.len() == 5, "5 requests, answers {macs:?}");
    ensure!(
        macs.iter().all(|m| lab.index_of_mac(m) == Some(owner)),
        "answers {macs:?}"
    );

    let owner6 = lab
        .index_of_name(expected_owner(all.iter().copied(), ip6).ok_or_else(|| anyhow!("no owner"))?)
        .ok_or_else(|| anyhow!("owner not a node"))?;
    let t = Instant::now();
    let tlla = loop {
        let t6 = lab.ndisc6(ip6)?;
        if !t6.is_empty() || t.elapsed() > WAIT {
            break t6;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        tlla.len() == 1 && lab.index_of_mac(&tlla[0]) == Some(owner6),
        "NDP for {ip6}: wanted {} got {tlla:?}",
        lab.nodes[owner6].mac
    );

    // ping through the owner: the IP is on its lo, the kernel does not answer ARP for it.
    in_ns(
        &lab.nodes[owner].netns,
        &["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"],
    )?;
    in_ns(
        &lab.client_ns,
        &["ping", "-c", "2", "-W", "2", &ip.to_string()],
    )?;

    let ip_s = ip.to_string();
    let owner_name = lab.nodes[owner].name.clone();
    let line = format!(
        "metallb_speaker_announced{{ip=\"{ip_s}\",node=\"{owner_name}\",protocol=\"layer2\",service=\"{}/web\"}} 1",
        lab.ns
    );
    lab.wait_metric(owner, |m| m.lines().any(|l| l == line), &line)
        .await?;
    for i in (0..3).filter(|i| *i != owner) {
        let m = lab.metrics(i).await?;
        ensure!(
            !m.lines().any(|l| l.starts_with("metallb_speaker_announced")
                && l.contains(&format!("ip=\"{ip_s}\""))),
            "node {i} announces {ip_s} too:\n{m}"
        );
    }
    let m = lab.metrics(owner).await?;
    ensure!(
        m.lines().any(|l| l.starts_with(&format!(
            "metallb_layer2_requests_received{{ip=\"{ip_s}\"}}"
        ))),
        "no request counter for {ip_s}"
    );
    lab.wait_event("web", "nodeAssigned", &owner_name).await?;

    // kill -9 the owner: the next in the election order answers.
    let rest: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let next = lab
        .index_of_name(expected_owner(lab.names(&rest), ip).ok_or_else(|| anyhow!("no owner"))?)
        .ok_or_else(|| anyhow!("next owner not a node"))?;
    lab.kill9(owner).await?;
    let killed = lab.wait_arp_owner(ip, next).await?;
    eprintln!("kill -9: ARP answered by the new owner after {killed:?}");

    // The killed speaker comes back: exactly one owner again, the elected one.
    lab.start_speaker(owner, &[])?;
    lab.wait_arp_owner(ip, owner).await?;

    // SIGTERM (planned): leaves the gossip, the next owner takes over at once.
    lab.sigterm(owner).await?;
    let planned = lab.wait_arp_owner(ip, next).await?;
    eprintln!("SIGTERM: ARP answered by the new owner after {planned:?}");
    Ok(())
}

/// The owner's node is cut off the bridge (its veth leaves the bridge, its link stays up): the
/// other speakers see it dead and take over; the cut-off speaker reaches neither the apiserver
/// nor a majority and fences itself (announces nothing). Restored: exactly one owner again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn partition_fences_the_cut_off_node() -> Result<()> {
    let mut lab = Lab::new("l2p", 3, MetallbRbac::V0_12_1).await?;
    lab.set_config(
        "address-pools:\n- name: l2\n  protocol: layer2\n  addresses: [203.0.113.32/27]\n",
    )
    .await?;
    lab.start_all()?;
    lab.service("web", json!({}), &[0, 1, 2]).await?;
    let ip = lab.wait_ip("web").await?;
    let all = lab.names(&[0, 1, 2]);
    let owner = lab
        .index_of_name(expected_owner(all.iter().copied(), ip).ok_or_else(|| anyhow!("no owner"))?)
        .ok_or_else(|| anyhow!("owner not a node"))?;
    lab.wait_arp_owner(ip, owner).await?;
    let rest: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let next = lab
        .index_of_name(expected_owner(lab.names(&rest), ip).ok_or_else(|| anyhow!("no owner"))?)
        .ok_or_else(|| anyhow!("next owner not a node"))?;

    lab.partition(owner, true)?;
    let took = lab.wait_arp_owner(ip, next).await?;
    eprintln!("partition: the majority side answers after {took:?}");
    // The cut-off speaker says it is fenced.
    let t = Instant::now();
    loop {
        let log = std::fs::read_to_string(&lab.nodes[owner].log).unwrap_or_default();
        if log.contains("Fenced") {
            break;
        }
        ensure!(
            t.elapsed() < WAIT,
            "the partitioned speaker did not fence itself; log {}",
            lab.nodes[owner].log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    lab.partition(owner, false)?;
    lab.wait_metric(
        owner,
        |m| m.lines().any(|l| l == "metallb_rs_speaker_fenced_bool 0"),
        "unfenced",
    )
    .await?;
    lab.wait_arp_owner(ip, owner).await?;
    let macs = lab.arping(ip, 5)?;
    ensure!(
        macs.len() == 5 && macs.iter().all(|m| lab.index_of_mac(m) == Some(owner)),
        "after healing, answers {macs:?}"
    );
    Ok(())
}

/// Kubernetes signals: a speaker Pod turning NotReady, its Node turning NotReady, or the
/// out-of-service taint each move the IP away; `Local` services follow their endpoints; a
/// service without ready endpoints is not announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn kubernetes_signals_move_the_ip() -> Result<()> {
    let mut lab = Lab::new("l2k", 3, MetallbRbac::V0_12_1).await?;
    lab.set_config(
        "address-pools:\n- name: l2\n  protocol: layer2\n  addresses: [203.0.113.64/27]\n",
    )
    .await?;
    lab.start_all()?;
    lab.service("web", json!({}), &[0, 1, 2]).await?;
    let ip = lab.wait_ip("web").await?;
    let all = lab.names(&[0, 1, 2]);
    let owner = lab
        .index_of_name(expected_owner(all.iter().copied(), ip).ok_or_else(|| anyhow!("no owner"))?)
        .ok_or_else(|| anyhow!("owner not a node"))?;
    lab.wait_arp_owner(ip, owner).await?;
    let rest: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let next = lab
        .index_of_name(expected_owner(lab.names(&rest), ip).ok_or_else(|| anyhow!("no owner"))?)
        .ok_or_else(|| anyhow!("next owner not a node"))?;

    lab.set_pod_ready(owner, false).await?;
    lab.wait_arp_owner(ip, next).await?;
    lab.set_pod_ready(owner, true).await?;
    lab.wait_arp_owner(ip, owner).await?;

    lab.set_node_ready(owner, false).await?;
    lab.wait_arp_owner(ip, next).await?;
    lab.set_node_ready(owner, true).await?;
    lab.wait_arp_owner(ip, owner).await?;

    let nodes: Api<Node> = Api::all(lab.admin.clone());
    nodes
        .patch(
            &lab.nodes[owner].name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}]}})),
        )
        .await?;
    lab.wait_arp_owner(ip, next).await?;
    nodes
        .patch(
            &lab.nodes[owner].name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await?;
    lab.wait_arp_owner(ip, owner).await?;

    // Local: only nodes with a ready endpoint are candidates.
    lab.service("local", json!({"externalTrafficPolicy": "Local"}), &[next])
        .await?;
    let lip = lab.wait_ip("local").await?;
    lab.wait_arp_owner(lip, next).await?;
    // No ready endpoint at all: nobody answers.
    lab.set_endpoints("local", &[]).await?;
    let t = Instant::now();
    loop {
        if lab.arping(lip, 2)?.is_empty() {
            break;
        }
        ensure!(t.elapsed() < WAIT, "{lip} still answered without endpoints");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Live reload on the speakers: a config stranding an announced IP is rejected (Warning Event
/// from the speaker, stale metric) and the IP keeps being answered; a pool added live serves a
/// new Service; a gratuitous ARP burst (request + reply, 5 rounds ~1.1 s apart) follows a
/// takeover. Runs under MetalLB 0.9.6's RBAC: no EndpointSlices, so Endpoints are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn reload_and_gratuitous_under_0_9_rbac() -> Result<()> {
    let mut lab = Lab::new("l2r", 2, MetallbRbac::V0_9_6).await?;
    let pool_a = "address-pools:\n- name: a\n  protocol: layer2\n  addresses: [203.0.113.96/28]\n";
    lab.set_config(pool_a).await?;
    lab.start_all()?;
    lab.service("web", json!({}), &[0, 1]).await?;
    let ip = lab.wait_ip("web").await?;
    let owner = lab
        .index_of_name(expected_owner(lab.names(&[0, 1]), ip).ok_or_else(|| anyhow!("no owner"))?)
        .ok_or_else(|| anyhow!("owner not a node"))?;
    lab.wait_arp_owner(ip, owner).await?;
    let other = 1 - owner;

    // Move the pool elsewhere: stranding, rejected by the controller and the speakers.
    lab.set_config(
        "address-pools:\n- name: a\n  protocol: layer2\n  addresses: [203.0.113.112/28]\n",
    )
    .await?;
    lab.wait_metric(
        owner,
        |m| {
            m.lines()
                .any(|l| l == "metallb_k8s_client_config_stale_bool 1")
        },
        "stale",
    )
    .await?;
    lab.wait_event("config", "StaleConfig", &lab.nodes[owner].name)
        .await?;
    lab.wait_arp_owner(ip, owner).await?;

    // Add a pool instead: accepted live, a new Service is answered.
    lab.set_config(&format!("{pool_a}- name: b\n  protocol: layer2\n  addresses: [203.0.113.112/28]\n  auto-assign: true\n"))
        .await?;
    lab.wait_metric(
        owner,
        |m| {
            m.lines()
                .any(|l| l == "metallb_k8s_client_config_stale_bool 0")
        },
        "not stale",
    )
    .await?;

    // Gratuitous burst on takeover, observed by tcpdump in the client namespace.
    let mut dump = tokio::process::Command::new("ip")
        .args(["netns", "exec", &lab.client_ns, "stdbuf", "-oL"])
        .args([
            "tcpdump", "-l", "-n", "-e", "-tt", "-i", "eth0", "arp", "and", "host",
        ])
        .arg(ip.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = dump
        .stdout
        .take()
        .ok_or_else(|| anyhow!("tcpdump stdout"))?;
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        while let Ok(Ok(Some(l))) = tokio::time::timeout_at(deadline, lines.next_line()).await {
            got.push(l);
        }
        got
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    lab.kill9(owner).await?;
    lab.wait_arp_owner(ip, other).await?;
    let lines = reader.await?;
    let mac = &lab.nodes[other].mac;
    let grat: Vec<(f64, bool)> = lines
        .iter()
        .filter(|l| l.to_ascii_lowercase().contains(mac) && l.contains("ff:ff:ff:ff:ff:ff"))
        .filter_map(|l| {
            let ts: f64 = l.split_whitespace().next()?.parse().ok()?;
            let is_reply = l.contains("Reply");
            Some((ts, is_reply))
        })
        .collect();
    let requests = grat.iter().filter(|(_, r)| !r).count();
    let replies = grat.iter().filter(|(_, r)| *r).count();
    ensure!(
        requests >= 5 && replies >= 5,
        "gratuitous from the new owner: {requests} requests, {replies} replies; tcpdump:\n{}",
        lines.join("\n")
    );
    let times: Vec<f64> = grat.iter().filter(|(_, r)| !r).map(|(t, _)| *t).collect();
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    ensure!(
        gaps.iter().take(4).all(|g| (0.8..=1.8).contains(g)),
        "gratuitous spacing {gaps:?}"
    );
    let m = lab.metrics(other).await?;
    ensure!(
        m.lines()
            .any(|l| l.starts_with(&format!("metallb_layer2_gratuitous_sent{{ip=\"{ip}\"}}"))),
        "no gratuitous counter"
    );
    Ok(())
}
