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

#[path = "common/lab.rs"]
mod lab;

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use cluster::MetallbRbac;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use lab::{Lab, WAIT, in_ns};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

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
    let owner = lab.owner_index(&[0, 1, 2], ip)?;
    lab.wait_arp_owner(ip, owner).await?;
    // Answered by the elected node alone.
    lab.assert_only_owner(ip, owner, 5, "elected")?;

    let owner6 = lab.owner_index(&[0, 1, 2], ip6)?;
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
    // Nobody else ever claimed it, not even for a moment at start-up.
    let events: Api<Event> = Api::namespaced(lab.admin.clone(), &lab.ns);
    let claims: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some("web"))
        .filter(|e| e.reason.as_deref() == Some("nodeAssigned"))
        .filter_map(|e| e.message)
        .collect();
    ensure!(
        claims.len() == 1 && claims[0].contains(&owner_name),
        "nodeAssigned events for web: {claims:?}"
    );

    // kill -9 the owner: the next in the election order answers.
    let rest: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let next = lab.owner_index(&rest, ip)?;
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
    // Our manifest's extra: Pods `watch` (MetalLB's grants `list` only). The speakers then
    // watch Pods, and the list is only their apiserver probe while they hear a minority.
    lab.cluster
        .grant_speaker_pod_watch(&lab.admin, &lab.ns)
        .await?;
    lab.set_config(
        "address-pools:\n- name: l2\n  protocol: layer2\n  addresses: [203.0.113.32/27]\n",
    )
    .await?;
    lab.start_all()?;
    lab.service("web", json!({}), &[0, 1, 2]).await?;
    let ip = lab.wait_ip("web").await?;
    let owner = lab.owner_index(&[0, 1, 2], ip)?;
    lab.wait_arp_owner(ip, owner).await?;
    let rest: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let next = lab.owner_index(&rest, ip)?;

    let log = std::fs::read_to_string(&lab.nodes[owner].log).unwrap_or_default();
    ensure!(
        log.contains("Watching speaker Pods"),
        "speaker did not watch Pods:{}",
        lab.logs()
    );

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
    lab.assert_only_owner(ip, owner, 5, "after healing")?;
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
    let owner = lab.owner_index(&[0, 1, 2], ip)?;
    lab.wait_arp_owner(ip, owner).await?;
    let rest: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let next = lab.owner_index(&rest, ip)?;

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
    lab.wait_arp_silent(lip, "without endpoints").await?;

    // A rolling image swap from MetalLB: a Ready Go speaker (another image, not in our
    // gossip) makes every one of ours go silent; once it is gone, the owner answers again.
    let go_node = format!("{}-go", lab.ns);
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": go_node},
    }))?;
    nodes.create(&PostParams::default(), &node).await?;
    let pods: Api<Pod> = Api::namespaced(lab.admin.clone(), &lab.ns);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "speaker-go", "labels": {"app": "metallb", "component": "speaker"}},
        "spec": {"nodeName": go_node, "serviceAccountName": "speaker",
                 "automountServiceAccountToken": false, "hostNetwork": true,
                 "containers": [{"name": "speaker", "image": "quay.io/metallb/speaker:v0.12.1"}]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    pods.patch_status(
        "speaker-go",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "192.0.2.99",
            "conditions": [{"type": "Ready", "status": "True"}]}})),
    )
    .await?;
    lab.wait_arp_silent(ip, "while a Go speaker is Ready")
        .await?;
    pods.delete("speaker-go", &DeleteParams::default()).await?;
    lab.wait_arp_owner(ip, owner).await?;
    let _ = nodes.delete(&go_node, &DeleteParams::default()).await;
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
    let owner = lab.owner_index(&[0, 1], ip)?;
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

    // The pool switches to BGP: layer 2 withdraws at once (nobody answers); back to layer 2:
    // answered again by the same owner.
    let bgp = "peers:\n- peer-address: 192.0.2.1\n  peer-asn: 64500\n  my-asn: 64501\naddress-pools:\n- name: a\n  protocol: bgp\n  addresses: [203.0.113.96/28]\n";
    lab.set_config(bgp).await?;
    lab.wait_arp_silent(ip, "by layer 2 in a BGP pool").await?;
    lab.set_config(pool_a).await?;
    lab.wait_arp_owner(ip, owner).await?;

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

/// Without gossip (no `ml-bindaddr`, as MetalLB manifests without memberlist): `Cluster`
/// services are still announced (MetalLB #2005), liveness comes from Kubernetes alone (a
/// speaker Pod turning NotReady moves the IP). The config comes from a mounted file
/// (`--config-file`), replaced the way kubelet does it, and reloads live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn without_gossip_from_a_mounted_config_file() -> Result<()> {
    let mut lab = Lab::new("l2f", 2, MetallbRbac::V0_12_1).await?;
    let layer2 = "address-pools:\n- name: a\n  protocol: layer2\n  addresses: [203.0.113.128/28]\n";
    lab.set_config(layer2).await?;
    let dir = lab.cluster.dir().join(format!("mounted-{}", lab.ns));
    std::fs::create_dir_all(&dir)?;
    let write = |payload: &str| -> Result<()> {
        let tmp = dir.join(".config.tmp");
        std::fs::write(&tmp, payload)?;
        std::fs::rename(&tmp, dir.join("config"))?;
        Ok(())
    };
    write(layer2)?;
    let file = dir.join("config");
    let file = file.to_string_lossy().to_string();
    // Gossip off: node 0 has no gossip address, node 1 no memberlist secret (unauthenticated
    // heartbeats could be forged, so the speaker does not start the gossip).
    lab.start_speaker(0, &["--ml-bindaddr=", "--config-file", &file])?;
    lab.start_speaker(1, &["--ml-secret-key=", "--config-file", &file])?;
    lab.service("web", json!({}), &[0, 1]).await?;
    let ip = lab.wait_ip("web").await?;
    let owner = lab.owner_index(&[0, 1], ip)?;
    lab.wait_arp_owner(ip, owner).await?;
    lab.wait_log(0, 0, "not starting fast dead node detection")
        .await?;
    lab.wait_log(
        1,
        0,
        "not starting fast dead node detection (gossip): no ml-secret-key",
    )
    .await?;
    // Kubernetes says the owner's speaker is not ready: the other node takes over.
    lab.set_pod_ready(owner, false).await?;
    lab.wait_arp_owner(ip, 1 - owner).await?;
    lab.set_pod_ready(owner, true).await?;
    lab.wait_arp_owner(ip, owner).await?;
    // The mounted file changes: the pool becomes BGP, layer 2 withdraws.
    write(
        "peers:\n- peer-address: 192.0.2.1\n  peer-asn: 64500\n  my-asn: 64501\naddress-pools:\n- name: a\n  protocol: bgp\n  addresses: [203.0.113.128/28]\n",
    )?;
    lab.wait_arp_silent(ip, "after the file switched to BGP")
        .await?;
    write(layer2)?;
    lab.wait_arp_owner(ip, owner).await?;
    Ok(())
}
