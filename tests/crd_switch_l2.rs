//! The live source switch under layer 2 load, in the netns lab (see tests/speaker_l2.rs):
//! speakers and the controller run with `--config-source=auto` under MetalLB 0.12.1's RBAC
//! plus `manifests/rbac-crd-mode.yaml`; `metallb-migrate --from-cluster --apply` switches them
//! to the metallb.io objects and `--rollback` back. Throughout, no Service's IP changes, every
//! speaker announces the same set, and `arping` from the client keeps being answered by the
//! elected node only.

#[path = "common/cluster.rs"]
mod cluster;

#[path = "common/lab.rs"]
mod lab;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use cluster::MetallbRbac;
use kube::api::Api;
use lab::{Lab, WAIT};

/// 512 addresses for 500 Services (never 198.51.100.0/24: the lab bridge); the client
/// resolves 203.0.113.0/24 on-link (the probe).
const LEGACY: &str = "address-pools:\n- name: Lab_Pool\n  protocol: layer2\n  addresses:\n  - 203.0.113.0/24\n  - 192.0.2.0/24\n";

/// Every Service's IPs.
async fn ips(lab: &Lab) -> Result<BTreeMap<String, Vec<IpAddr>>> {
    cluster::service_ips(&Api::namespaced(lab.admin.clone(), &lab.ns)).await
}

/// The IPs node `i`'s speaker announces (`metallb_speaker_announced` series).
async fn announced(lab: &Lab, i: usize) -> Result<BTreeSet<String>> {
    let m = lab.metrics(i).await?;
    Ok(m.lines()
        .filter(|l| l.starts_with("metallb_speaker_announced{") && l.ends_with(" 1"))
        .filter_map(|l| {
            l.split("ip=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .collect())
}

async fn wait_source(lab: &Lab, n: usize, source: &str) -> Result<()> {
    let line = format!("metallb_rs_config_source{{source=\"{source}\"}} 1");
    for i in 0..n {
        let t = Instant::now();
        loop {
            match lab.metrics(i).await {
                Ok(m) if m.lines().any(|l| l == line) => break,
                Ok(m) => ensure!(
                    t.elapsed() < WAIT,
                    "node {i}: no {line:?}; {:?}",
                    m.lines()
                        .filter(|l| l.contains("config"))
                        .collect::<Vec<_>>()
                ),
                Err(e) => ensure!(t.elapsed() < WAIT, "node {i}: scrape failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

fn migrate(lab: &Lab, arg: &str) -> Result<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metallb-migrate"))
        .args(["--from-cluster", "--services", "--namespace", &lab.ns, arg])
        .env("KUBECONFIG", lab.cluster.kubeconfig())
        .stdin(Stdio::null())
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(out.status.success(), "metallb-migrate {arg}: {err}");
    Ok(err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn source_switch_and_rollback_keep_ips_announcements_and_arp_owner() -> Result<()> {
    let mut lab = Lab::new("crdsw", 2, MetallbRbac::V0_12_1).await?;
    lab.cluster
        .install_crd_mode_rbac(&lab.admin, &lab.ns)
        .await?;
    // The lab's controller reads the ConfigMap only; run it in auto mode instead.
    let kc = lab
        .cluster
        .service_account_kubeconfig(&lab.admin, &lab.ns, "controller")
        .await?;
    lab.start_controller(&kc, &["--config-source", "auto"])?;
    let log = lab.cluster.dir().join(format!("controller-{}.log", lab.ns));
    lab.set_config(LEGACY).await?;
    for i in 0..2 {
        lab.start_speaker(i, &["--config-source", "auto"])?;
    }
    const N: usize = 500;
    let names: Vec<String> = (0..N).map(|k| format!("s{k}")).collect();
    lab.services_parallel(&names, &[0, 1], 16).await?;
    let t = Instant::now();
    loop {
        let have = ips(&lab).await?.values().filter(|v| !v.is_empty()).count();
        if have == N {
            break;
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        ensure!(
            t.elapsed() < WAIT * 4,
            "{have} of {N} Services got an IP; controller log (last lines first):\n{}",
            tail.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_source(&lab, 2, "configmap").await?;
    let before = ips(&lab).await?;
    // Wait until every IP is announced by its elected node.
    let all: BTreeSet<String> = before.values().flatten().map(IpAddr::to_string).collect();
    let t = Instant::now();
    let (a0, a1) = loop {
        let (a0, a1) = (announced(&lab, 0).await?, announced(&lab, 1).await?);
        if a0.union(&a1).cloned().collect::<BTreeSet<_>>() == all && a0.is_disjoint(&a1) {
            break (a0, a1);
        }
        ensure!(
            t.elapsed() < WAIT,
            "announcements did not settle: {a0:?} {a1:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // One probed IP and its owner's MAC.
    let probe: IpAddr = before
        .values()
        .flatten()
        .copied()
        .find(|ip| ip.to_string().starts_with("203.0.113."))
        .context("no IP in 203.0.113.0/24")?;
    let owner = if a0.contains(&probe.to_string()) {
        0
    } else {
        1
    };
    lab.wait_arp_owner(probe, owner).await?;
    let owner_mac = lab.nodes[owner].mac.clone();

    // arping the probed IP for as long as the switch and the rollback take.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (stop, client_ns) = (stop.clone(), lab.client_ns.clone());
        tokio::task::spawn_blocking(move || {
            let mut answers: Vec<String> = Vec::new();
            let mut probes = 0;
            while !stop.load(Ordering::Relaxed) {
                probes += 1;
                let out = std::process::Command::new("ip")
                    .args(["netns", "exec", &client_ns, "arping", "-i", "eth0"])
                    .args(["-c", "1", "-W", "0.2", "-w", "1"])
                    .arg(probe.to_string())
                    .output();
                if let Ok(o) = out {
                    answers.extend(lab::parse_arping(&String::from_utf8_lossy(&o.stdout)));
                }
            }
            (probes, answers)
        })
    };

    migrate(&lab, "--apply")?;
    wait_source(&lab, 2, "crds").await?;
    ensure!(ips(&lab).await? == before, "IPs changed across the switch");
    ensure!(
        announced(&lab, 0).await? == a0 && announced(&lab, 1).await? == a1,
        "announcements changed across the switch"
    );
    migrate(&lab, "--rollback")?;
    wait_source(&lab, 2, "configmap").await?;
    ensure!(
        ips(&lab).await? == before,
        "IPs changed across the rollback"
    );
    ensure!(
        announced(&lab, 0).await? == a0 && announced(&lab, 1).await? == a1,
        "announcements changed across the rollback"
    );
    stop.store(true, Ordering::Relaxed);
    let (probes, answers) = prober.await?;
    ensure!(
        !answers.is_empty(),
        "no arping answer at all in {probes} probes"
    );
    ensure!(
        answers.iter().all(|m| m.eq_ignore_ascii_case(&owner_mac)),
        "answers from another node than {owner_mac}: {answers:?}"
    );
    eprintln!(
        "{probes} probes, {} answers, all from the elected node",
        answers.len()
    );
    Ok(())
}
