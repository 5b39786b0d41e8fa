//! A layer 2 lab for tests and benchmarks: a netns cluster (real kube-apiserver + etcd on the
//! harness bridge), "node" network namespaces with a Node, a Ready speaker Pod and a speaker
//! process each (only `CAP_NET_RAW`, under MetalLB's speaker RBAC), a client namespace, and
//! the controller. Used as `#[path = "common/lab.rs"] mod lab;` next to `mod cluster;`.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::{Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::{Cluster, MetallbRbac, Options};

pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// One netns cluster for every test of this binary; torn down by the harness watchdog when
/// the test process exits.
pub(crate) fn cluster() -> Result<&'static Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| Cluster::start(&Options { netns: true }).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("starting the netns cluster failed: {e}"))
}

/// A simulated node: a network namespace on the bridge, a Node, a speaker Pod, and (when
/// running) a speaker process.
pub(crate) struct SimNode {
    /// Kubernetes node name.
    pub(crate) name: String,
    pub(crate) netns: String,
    pub(crate) addr: String,
    pub(crate) mac: String,
    /// The host side of the node's veth (to partition the node).
    pub(crate) host_if: String,
    pub(crate) metrics_port: u16,
    pub(crate) log: PathBuf,
    pub(crate) speaker: Option<tokio::process::Child>,
}

pub(crate) struct Lab {
    pub(crate) cluster: &'static Cluster,
    pub(crate) admin: Client,
    pub(crate) ns: String,
    pub(crate) class: String,
    pub(crate) speaker_kc: PathBuf,
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) client_ns: String,
    pub(crate) controller: Option<tokio::process::Child>,
}

pub(crate) fn run(cmd: &mut std::process::Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn ip_cmd(args: &[&str]) -> Result<String> {
    run(std::process::Command::new("ip").args(args))
}

pub(crate) fn in_ns(netns: &str, args: &[&str]) -> Result<String> {
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", netns]).args(args);
    run(&mut c)
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The node MetalLB elects for `ip` among `nodes`: lowest sha256(node "#" ip), computed here
/// independently of the crate's election module.
pub(crate) fn expected_owner<'a>(
    nodes: impl IntoIterator<Item = &'a str>,
    ip: IpAddr,
) -> Option<&'a str> {
    nodes
        .into_iter()
        .min_by_key(|n| Sha256::digest(format!("{n}#{ip}").as_bytes()).to_vec())
}

/// A "node" network namespace `netns` on the cluster bridge for Kubernetes node `name`: its
/// address, MAC and host-side veth; service IPs on its `lo` are not answered by the kernel
/// (the speaker answers). The speaker's metrics port is MetalLB's 7472 until set otherwise.
pub(crate) fn sim_node(
    cluster: &Cluster,
    netns: &str,
    name: &str,
    log: PathBuf,
) -> Result<SimNode> {
    let addr = cluster.add_node_netns(netns)?;
    let link: serde_json::Value =
        serde_json::from_str(&in_ns(netns, &["ip", "-j", "link", "show", "eth0"])?)?;
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
    in_ns(netns, &["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"])?;
    in_ns(netns, &["sysctl", "-qw", "net.ipv4.conf.eth0.arp_ignore=1"])?;
    Ok(SimNode {
        name: name.to_string(),
        netns: netns.to_string(),
        addr,
        mac,
        host_if,
        metrics_port: 7472,
        log,
        speaker: None,
    })
}

/// A client namespace `netns` on the cluster bridge with the service prefixes on-link
/// (resolved by ARP/NDP on the bridge).
pub(crate) fn client_netns(cluster: &Cluster, netns: &str) -> Result<()> {
    cluster.add_node_netns(netns)?;
    in_ns(
        netns,
        &["ip", "route", "add", "203.0.113.0/24", "dev", "eth0"],
    )?;
    in_ns(
        netns,
        &["ip", "-6", "route", "add", "2001:db8::/32", "dev", "eth0"],
    )?;
    Ok(())
}

impl Lab {
    /// A lab of `n` nodes under MetalLB `rbac`, with the controller running.
    pub(crate) async fn new(tag: &str, n: usize, rbac: MetallbRbac) -> Result<Lab> {
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
            let log = cluster.dir().join(format!("speaker-{ns}-n{i}.log"));
            let mut node = sim_node(
                cluster,
                &format!("{short}-n{i}"),
                &format!("{ns}-n{i}"),
                log,
            )?;
            node.metrics_port = free_port()?;
            nodes.push(node);
        }
        let client_ns = format!("{short}-c");
        client_netns(cluster, &client_ns)?;
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
        lab.start_controller(&controller_kc, &[])?;
        Ok(lab)
    }

    pub(crate) async fn create_node_and_pod(&self, i: usize) -> Result<()> {
        self.create_node(i).await?;
        let n = &self.nodes[i];
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

    /// Create node `i`'s Node object (labelled as a kubelet labels it) and make it Ready.
    pub(crate) async fn create_node(&self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        let nodes: Api<Node> = Api::all(self.admin.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n.name, "labels": {
                "kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux",
                "metallb-rs.test/ns": self.ns,
            }},
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
        self.set_node_ready(i, true).await
    }

    pub(crate) async fn set_node_ready(&self, i: usize, ready: bool) -> Result<()> {
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

    pub(crate) async fn set_pod_ready(&self, i: usize, ready: bool) -> Result<()> {
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

    /// (Re)start the controller with `extra` arguments (the running one is killed).
    pub(crate) fn start_controller(&mut self, kc: &std::path::Path, extra: &[&str]) -> Result<()> {
        if let Some(mut old) = self.controller.take() {
            let _ = old.start_kill();
        }
        let log = self
            .cluster
            .dir()
            .join(format!("controller-{}.log", self.ns));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_controller"))
            .args(["--namespace", &self.ns, "--lb-class", &self.class])
            .args(["--port", &free_port()?.to_string(), "--log-level", "debug"])
            .arg("--kubeconfig")
            .arg(kc)
            .args(extra)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            // Logs go to stdout (as MetalLB's); panics and exit errors to stderr: keep both.
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::OpenOptions::new().append(true).open(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("starting the controller")?;
        self.controller = Some(child);
        Ok(())
    }

    /// Start node `i`'s speaker inside its namespace with only CAP_NET_RAW.
    pub(crate) fn start_speaker(&mut self, i: usize, extra: &[&str]) -> Result<()> {
        self.start_speaker_with_log_level(i, "debug", extra)
    }

    /// [`Lab::start_speaker`] with `--log-level level` (tests use `debug`; benchmarks run the
    /// speaker's default, `info`).
    pub(crate) fn start_speaker_with_log_level(
        &mut self,
        i: usize,
        level: &str,
        extra: &[&str],
    ) -> Result<()> {
        self.start_speaker_with_env(i, level, extra, &[])
    }

    /// [`Lab::start_speaker_with_log_level`] with extra environment variables.
    pub(crate) fn start_speaker_with_env(
        &mut self,
        i: usize,
        level: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<()> {
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
            .args(["--port", &n.metrics_port.to_string(), "--log-level", level])
            .arg("--kubeconfig")
            .arg(&self.speaker_kc)
            .args(extra)
            .env_remove("KUBECONFIG")
            .env("METALLB_NODE_NAME", &n.name)
            .env("METALLB_HOST", &n.addr)
            .env("METALLB_ML_BIND_ADDR", &n.addr)
            .env("METALLB_ML_LABELS", "app=metallb,component=speaker")
            .env("METALLB_ML_SECRET_KEY", format!("secret-{}", self.ns))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            // Logs go to stdout (as MetalLB's); panics and exit errors to stderr: keep both.
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting a speaker")?;
        self.nodes[i].speaker = Some(child);
        Ok(())
    }

    pub(crate) fn start_all(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.start_speaker(i, &[])?;
        }
        Ok(())
    }

    /// The pid of node `i`'s running speaker (`ip netns exec` and `setpriv` exec, so the
    /// child's pid is the speaker's own).
    pub(crate) fn speaker_pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].speaker.as_ref().and_then(|c| c.id())
    }

    /// Create LoadBalancer Services `names` (as [`Lab::service`], endpoints on `endpoint_on`)
    /// with up to `concurrency` in flight.
    pub(crate) async fn services_parallel(
        &self,
        names: &[String],
        endpoint_on: &[usize],
        concurrency: usize,
    ) -> Result<()> {
        use futures::{StreamExt as _, TryStreamExt as _};
        futures::stream::iter(names)
            .map(|name| self.service(name, json!({}), endpoint_on))
            .buffer_unordered(concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// SIGKILL node `i`'s speaker.
    pub(crate) async fn kill9(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.nodes[i].speaker.take() {
            c.kill().await?;
        }
        Ok(())
    }

    /// SIGTERM node `i`'s speaker (a planned restart) and wait for it to exit.
    pub(crate) async fn sigterm(&mut self, i: usize) -> Result<()> {
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

    pub(crate) async fn set_config(&self, payload: &str) -> Result<()> {
        crate::cluster::apply_config(&self.admin, &self.ns, payload).await
    }

    /// A LoadBalancer Service of our class with one ready endpoint on node `endpoint_on`.
    pub(crate) async fn service(
        &self,
        name: &str,
        extra_spec: serde_json::Value,
        endpoint_on: &[usize],
    ) -> Result<()> {
        let mut spec = json!({
            "type": "LoadBalancer",
            "allocateLoadBalancerNodePorts": false,
            "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": name},
        });
        // An empty class: a Service without one (what MetalLB's own deploy files handle).
        if !self.class.is_empty() {
            spec["loadBalancerClass"] = json!(self.class);
        }
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
    pub(crate) async fn set_endpoints(&self, name: &str, on: &[usize]) -> Result<()> {
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

    pub(crate) async fn wait_ip(&self, name: &str) -> Result<IpAddr> {
        crate::cluster::wait_service_ip(&self.admin, &self.ns, name, WAIT).await
    }

    pub(crate) fn names(&self, idx: &[usize]) -> Vec<&str> {
        idx.iter().map(|i| self.nodes[*i].name.as_str()).collect()
    }

    pub(crate) fn index_of_mac(&self, mac: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.mac.eq_ignore_ascii_case(mac))
    }

    /// The index of the node MetalLB elects for `ip` among the nodes `among` (by
    /// [`expected_owner`]).
    pub(crate) fn owner_index(&self, among: &[usize], ip: IpAddr) -> Result<usize> {
        let name = expected_owner(self.names(among), ip)
            .ok_or_else(|| anyhow!("no candidate for {ip}"))?;
        self.index_of_name(name)
            .ok_or_else(|| anyhow!("elected {name} is not a lab node"))
    }

    pub(crate) fn index_of_name(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The MACs answering `count` ARP requests for `ip` from the client (real `arping`).
    pub(crate) fn arping(&self, ip: IpAddr, count: u32) -> Result<Vec<String>> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.client_ns, "arping", "-i", "eth0"])
            .args(["-c", &count.to_string(), "-W", "0.2", "-w", "3"])
            .arg(ip.to_string())
            .output()
            .context("running arping")?;
        Ok(parse_arping(&String::from_utf8_lossy(&out.stdout)))
    }

    /// The Target link-layer addresses answering an NDP solicitation for `ip` (real `ndisc6`).
    pub(crate) fn ndisc6(&self, ip: IpAddr) -> Result<Vec<String>> {
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
    pub(crate) async fn wait_arp_owner(&self, ip: IpAddr, want: usize) -> Result<Duration> {
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

    /// ARP for `ip`, `count` requests: answered, and only by node `want`. A second owner shows
    /// as answers from another MAC. The number of answers is not checked: on a loaded machine
    /// a reply may miss arping's deadline.
    pub(crate) fn assert_only_owner(
        &self,
        ip: IpAddr,
        want: usize,
        count: u32,
        when: &str,
    ) -> Result<()> {
        let macs = self.arping(ip, count)?;
        ensure!(
            !macs.is_empty() && macs.iter().all(|m| self.index_of_mac(m) == Some(want)),
            "{when}: wanted only {} to answer for {ip}, got {macs:?}; logs: {}",
            self.nodes[want].name,
            self.logs()
        );
        Ok(())
    }

    /// Wait until nobody answers ARP for `ip` (`why`: what should have silenced it).
    pub(crate) async fn wait_arp_silent(&self, ip: IpAddr, why: &str) -> Result<()> {
        let t = Instant::now();
        loop {
            if self.arping(ip, 2)?.is_empty() {
                return Ok(());
            }
            ensure!(t.elapsed() < WAIT, "{ip} still answered {why}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Length of node `i`'s speaker log so far (to wait for lines written after it).
    pub(crate) fn log_len(&self, i: usize) -> usize {
        std::fs::read_to_string(&self.nodes[i].log).map_or(0, |l| l.len())
    }

    /// Wait until node `i`'s speaker log has a line containing `needle` after byte `from`.
    pub(crate) async fn wait_log(&self, i: usize, from: usize, needle: &str) -> Result<()> {
        let t = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
            if log.get(from..).is_some_and(|l| l.contains(needle)) {
                return Ok(());
            }
            ensure!(
                t.elapsed() < WAIT,
                "no {needle:?} in {} within {WAIT:?}; logs: {}",
                self.nodes[i].log.display(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn metrics(&self, i: usize) -> Result<String> {
        let n = &self.nodes[i];
        scrape(&n.addr, n.metrics_port).await
    }

    pub(crate) async fn wait_metric(
        &self,
        i: usize,
        pred: impl Fn(&str) -> bool,
        what: &str,
    ) -> Result<()> {
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

    pub(crate) async fn wait_event(
        &self,
        object: &str,
        reason: &str,
        needle: &str,
    ) -> Result<Event> {
        crate::cluster::wait_event(&self.admin, &self.ns, object, reason, needle, WAIT)
            .await
            .with_context(|| format!("speaker logs: {}", self.logs()))
    }

    /// The tail of every speaker log, for failure messages (the cluster dir is removed when
    /// the test process exits).
    pub(crate) fn logs(&self) -> String {
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

    pub(crate) fn partition(&self, i: usize, cut: bool) -> Result<()> {
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

/// CPU ticks (user + system) of `pid` from `/proc/<pid>/stat`.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`).
pub(crate) fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// (VmRSS, VmHWM) of `pid` in KiB.
pub(crate) fn rss(pid: u32) -> (u64, u64) {
    (
        proc_status_kib(pid, "VmRSS").unwrap_or(0),
        proc_status_kib(pid, "VmHWM").unwrap_or(0),
    )
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...), in KiB.
pub(crate) fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// GET `/metrics` from `addr:port` (HTTP/1.0, 2 s timeouts); returns the whole reply.
pub(crate) async fn scrape(addr: &str, port: u16) -> Result<String> {
    let mut s = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect((addr, port)),
    )
    .await??;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut body)).await??;
    Ok(body)
}

/// MACs in Habets arping output lines "60 bytes from aa:bb:cc:dd:ee:ff (203.0.113.1): ...".
pub(crate) fn parse_arping(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split("bytes from ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|m| m.to_ascii_lowercase())
        .collect()
}

/// Nearest-rank `q`-quantile of `v` (sorted here).
pub(crate) fn pct(v: &mut [Duration], q: f64) -> Duration {
    v.sort_unstable();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Wall-clock now, in nanoseconds since the epoch (to compare with log timestamps).
pub(crate) fn wall_ns() -> i128 {
    k8s_openapi::jiff::Timestamp::now().as_nanosecond()
}

/// The timestamp of a log line, in nanoseconds since the epoch: ours (`2026-…Z` first, after
/// the ANSI colour codes, or JSON `"timestamp":"2026-…Z"`) or MetalLB's JSON (`"ts":"2026-…Z"`).
pub(crate) fn line_ns(line: &str) -> Option<i128> {
    let text = match (line.find("\"timestamp\":\""), line.find("\"ts\":\"")) {
        (Some(i), _) => line[i + 13..].split('"').next()?.to_string(),
        (None, Some(i)) => line[i + 6..].split('"').next()?.to_string(),
        (None, None) => {
            let mut plain = String::new();
            let mut esc = false;
            for c in line.chars().take(80) {
                match (esc, c) {
                    (false, '\x1b') => esc = true,
                    (true, 'm') => esc = false,
                    (true, _) => {}
                    (false, c) => plain.push(c),
                }
            }
            plain.split_whitespace().next()?.to_string()
        }
    };
    text.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_nanosecond())
}

/// The value of the first series of `name` whose label text contains every `labels` item.
pub(crate) fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}
