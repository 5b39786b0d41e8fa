//! One owner per IP when the speakers' gossip views differ: another memberlist secret, UDP
//! lost one way, a clock gone back across a restart, and an upgrade between two of our
//! versions while gossip is broken. Real speakers in network namespaces against the real
//! apiserver (the same lab as `speaker_l2.rs`, in a cluster of its own: each cluster has one
//! /27 of node addresses), answers seen with the real `arping`. Design:
//! `src/speaker/mod.rs`, "Partitions and fencing".

#[path = "common/cluster.rs"]
mod cluster;

#[path = "common/lab.rs"]
mod lab;

use anyhow::{Result, ensure};
use cluster::MetallbRbac;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use lab::{Lab, in_ns};
use serde_json::json;

/// Three speakers with gossip; `odd` is the one that wins `ip` among all three, `next` the one
/// that wins it among the other two.
async fn fencing_lab(tag: &str, pool: &str) -> Result<(Lab, std::net::IpAddr, usize, usize)> {
    let lab = Lab::new(tag, 3, MetallbRbac::V0_12_1).await?;
    lab.set_config(&format!(
        "address-pools:\n- name: l2\n  protocol: layer2\n  addresses: [{pool}]\n"
    ))
    .await?;
    lab.service("web", json!({}), &[0, 1, 2]).await?;
    let ip = lab.wait_ip("web").await?;
    let odd = lab.owner_index(&[0, 1, 2], ip)?;
    let rest: Vec<usize> = (0..3).filter(|i| *i != odd).collect();
    let next = lab.owner_index(&rest, ip)?;
    Ok((lab, ip, odd, next))
}

/// A speaker started with another memberlist secret (a rotation half-way) hears nobody and is
/// heard by nobody. It reads in the others' heartbeats (which it cannot authenticate) that
/// they elect without it, and stays out: one owner per IP. Before the fix it elected from the
/// Kubernetes signals alone and answered for the IPs it wins among all three, beside the
/// owner the other two elected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn another_secret_never_gives_an_ip_two_owners() -> Result<()> {
    let (mut lab, ip, odd, next) = fencing_lab("l2s", "203.0.113.144/28").await?;
    for i in (0..3).filter(|i| *i != odd) {
        lab.start_speaker(i, &[])?;
    }
    lab.wait_arp_owner(ip, next).await?;
    lab.start_speaker(odd, &["--ml-secret-key", "rotated"])?;
    // It has decided, alone (the old code said the same) ...
    lab.wait_log(odd, 0, "Hearing less than half of the speakers")
        .await?;
    // ... and stays out.
    lab.assert_only_owner(ip, next, 5, "one speaker with another secret")?;
    lab.wait_log(odd, 0, "do not hear this one").await?;
    lab.wait_metric(
        odd,
        |m| {
            m.lines().any(|l| {
                l.starts_with("metallb_rs_speaker_gossip_rejected_total{reason=\"bad_tag\"}")
            })
        },
        "heartbeats of the other secret rejected",
    )
    .await?;
    // With the cluster's secret it owns the IP again: its silence was the rule at work.
    lab.sigterm(odd).await?;
    lab.start_speaker(odd, &[])?;
    lab.wait_arp_owner(ip, odd).await?;
    Ok(())
}

/// UDP from the owner to one other speaker is lost (an nftables rule in that node's netns),
/// everything else works. The speaker that no longer hears the owner still counts it, because
/// the third speaker's heartbeats say they hear it: one owner. Before the fix that speaker
/// elected without the owner and answered for the IP too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn one_way_udp_never_gives_an_ip_two_owners() -> Result<()> {
    let (mut lab, ip, odd, next) = fencing_lab("l2w", "203.0.113.160/28").await?;
    lab.start_all()?;
    lab.wait_arp_owner(ip, odd).await?;
    let from = lab.log_len(next);
    let (netns, src) = (lab.nodes[next].netns.clone(), lab.nodes[odd].addr.clone());
    let nft = |args: &str| -> Result<String> {
        let argv: Vec<&str> = ["nft"].into_iter().chain(args.split(' ')).collect();
        in_ns(&netns, &argv)
    };
    nft("add table inet lab")?;
    nft("add chain inet lab in { type filter hook input priority 0 ; }")?;
    nft(&format!(
        "add rule inet lab in ip saddr {src} udp dport 7946 drop"
    ))?;
    // `next` hears the owner no more (the condition that gave two owners) ...
    lab.wait_log(next, from, "Speaker dead").await?;
    // ... and the owner alone answers.
    lab.assert_only_owner(ip, odd, 5, "UDP lost from the owner to another speaker")?;
    // The path heals: still one owner; then the owner dies and `next` takes over.
    nft("delete table inet lab")?;
    lab.wait_log(next, from, "Speaker alive").await?;
    lab.assert_only_owner(ip, odd, 5, "healed")?;
    lab.kill9(odd).await?;
    lab.wait_arp_owner(ip, next).await?;
    Ok(())
}

/// libfaketime, installed by `make deps` (Debian's `faketime`).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The owner's clock runs an hour ahead, then it restarts with the right time (NTP fixed the
/// clock across a reboot): its wall clock went back, so its new incarnation is older than the
/// one its peers recorded, and they refuse its heartbeats while it hears them. Their reports
/// say nobody hears it, and it stays out: one owner. Before the fix it elected itself beside
/// the owner the others elected. (The clock goes ahead first, not back after, so that TLS to
/// the apiserver stays valid: the harness's certificates start when the cluster starts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn a_clock_gone_back_never_gives_an_ip_two_owners() -> Result<()> {
    ensure!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: run `make deps` (installs Debian's faketime)"
    );
    let (mut lab, ip, odd, next) = fencing_lab("l2t", "203.0.113.176/28").await?;
    for i in (0..3).filter(|i| *i != odd) {
        lab.start_speaker(i, &[])?;
    }
    lab.start_speaker_with_env(
        odd,
        "debug",
        &[],
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", "+3600"),
            ("DONT_FAKE_MONOTONIC", "1"),
        ],
    )?;
    lab.wait_arp_owner(ip, odd).await?;
    lab.kill9(odd).await?;
    lab.wait_arp_owner(ip, next).await?;
    lab.start_speaker(odd, &[])?;
    // It decided hearing both peers (so it trusts its gossip); they refuse it as stale ...
    lab.wait_metric(
        odd,
        |m| m.lines().any(|l| l == "metallb_rs_speaker_members_alive 3"),
        "the restarted speaker hears both peers",
    )
    .await?;
    lab.wait_metric(
        next,
        |m| {
            m.lines().any(|l| {
                l.starts_with(
                    "metallb_rs_speaker_gossip_rejected_total{reason=\"stale_incarnation\"}",
                )
            })
        },
        "the restarted speaker's heartbeats refused as stale",
    )
    .await?;
    // ... and `next` alone answers.
    lab.assert_only_owner(ip, next, 5, "the owner restarted with its clock gone back")?;
    Ok(())
}

/// A rolling upgrade between two of our versions (the two speaker Pods run different images)
/// while gossip is broken (here: each has another memberlist secret, so neither ever hears the
/// other). Neither yields to the other, as they would if any unheard image counted as a Go
/// speaker (everything silent), and the two agree from Kubernetes signals: one owner. A Pod
/// running MetalLB's Go speaker image is still yielded to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn broken_gossip_upgrade_between_our_versions_keeps_one_owner() -> Result<()> {
    let mut lab = Lab::new("l2u", 2, MetallbRbac::V0_12_1).await?;
    lab.set_config(
        "address-pools:\n- name: l2\n  protocol: layer2\n  addresses: [203.0.113.192/28]\n",
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(lab.admin.clone(), &lab.ns);
    let set_image = |i: usize, image: &'static str| {
        let pods = pods.clone();
        async move {
            pods.patch(
                &format!("speaker-{i}"),
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"containers": [{"name": "speaker", "image": image}]}}),
                ),
            )
            .await
        }
    };
    set_image(0, "quay.io/metallb-rs/speaker:v2").await?;
    set_image(1, "quay.io/metallb-rs/speaker:v1").await?;
    lab.service("web", json!({}), &[0, 1]).await?;
    let ip = lab.wait_ip("web").await?;
    let owner = lab.owner_index(&[0, 1], ip)?;
    lab.start_speaker(0, &["--ml-secret-key", "new"])?;
    lab.start_speaker(1, &["--ml-secret-key", "old"])?;
    lab.wait_arp_owner(ip, owner).await?;
    lab.assert_only_owner(ip, owner, 5, "two of our versions, gossip broken")?;
    // Node 1's Pod now runs MetalLB's Go speaker image: node 0 yields to it and answers
    // nothing (node 1 runs our binary here, so it answers only if it wins the IP).
    let from = lab.log_len(0);
    set_image(1, "quay.io/metallb/speaker:v0.12.1").await?;
    lab.wait_log(0, from, "MetalLB Go speakers are still Ready")
        .await?;
    let macs = lab.arping(ip, 3)?;
    ensure!(
        macs.iter().all(|m| lab.index_of_mac(m) == Some(1)),
        "node 0 answered while a Go speaker is Ready: {macs:?}"
    );
    Ok(())
}
