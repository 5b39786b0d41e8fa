//! BFD (RFC 5880/5881) between the speaker and real routers: BIRD 2 (`protocol bfd`, its BGP
//! session with `bfd on`) and FRR's `bfdd`, each in its own network namespace on the harness
//! bridge, the speaker a real process in a "node" namespace (only `CAP_NET_RAW`), with the real
//! kube-apiserver + etcd and the controller. Every check reads both sides: the speaker's
//! metrics and the router's own view (`birdc show bfd sessions`, `show bfd peers json`).
//! No timing thresholds here: measured detection times are in `benches/bfd.rs`.

#[path = "common/cluster.rs"]
mod cluster;

#[path = "common/lab.rs"]
mod lab;

#[path = "common/routers.rs"]
mod routers;

#[path = "common/bfdd.rs"]
mod bfdd;

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Result, ensure};
use cluster::MetallbRbac;
use lab::{Lab, WAIT, in_ns, metric};
use routers::{Kind, Neighbor, Router, RouterConfig};
use serde_json::json;

/// A router of `kind` in a fresh namespace, peering (passively) with node 0 as `nb` says.
async fn router(
    lab: &Lab,
    tag: &str,
    kind: Kind,
    asn: u32,
    nb: impl Fn(&mut Neighbor),
) -> Result<(Router, Ipv4Addr)> {
    let netns = format!("{}r{tag}", lab.nodes[0].netns);
    let addr: Ipv4Addr = lab.cluster.add_node_netns(&netns)?.parse()?;
    let mut n = Neighbor::new(lab.nodes[0].addr.parse()?, 64500);
    nb(&mut n);
    let cfg = RouterConfig {
        router_id: addr,
        asn,
        local_addresses: vec![IpAddr::V4(addr)],
        neighbors: vec![n],
    };
    Ok((Router::start(kind, &netns, &cfg).await?, addr))
}

fn config(profile: &str, peer: Ipv4Addr, pool: &str) -> String {
    format!(
        "bfd-profiles:\n- {profile}\npeers:\n- {{my-asn: 64500, peer-asn: 64501, peer-address: {peer}, hold-time: 9s, bfd-profile: p}}\naddress-pools:\n- name: bgp\n  protocol: bgp\n  addresses: [{pool}]\n"
    )
}

/// With BIRD: the BFD session comes Up with the profile's intervals as BIRD sees them; a
/// profile edit renegotiates them without a reset (same BFD session, same BGP session); the
/// router's link going silent makes the speaker declare BFD down and drop BGP (not the
/// 9 s hold timer); a frozen speaker makes BIRD declare BFD down and drop the routes; both
/// recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn bird_up_renegotiation_and_failure_detection_both_ways() -> Result<()> {
    let mut lab = Lab::new("bfb", 1, MetallbRbac::V0_12_1).await?;
    let (bird, b) = router(&lab, "b", Kind::Bird, 64501, |n| n.bfd = Some((100, 3))).await?;
    let n0: IpAddr = lab.nodes[0].addr.parse()?;
    let pool = "203.0.113.208/29";
    lab.set_config(&config(
        "{name: p, receive-interval: 300, transmit-interval: 300, detect-multiplier: 3}",
        b,
        pool,
    ))
    .await?;
    lab.start_speaker(0, &[])?;
    lab.service("web", json!({}), &[0]).await?;
    let ip = lab.wait_ip("web").await?;
    let host = format!("{ip}/32");
    bird.wait_routes("the route", WAIT, |rs| {
        !routers::routes_for(rs, &host).is_empty()
    })
    .await?;
    let bl = format!("peer=\"{b}\"");
    let bgp = format!("peer=\"{b}:179\"");
    lab.wait_metric(
        0,
        |m| {
            metric(m, "metallb_bfd_session_up", &[&bl]) == Some(1.0)
                && metric(m, "metallb_rs_bfd_session_state", &[&bl]) == Some(3.0)
        },
        "BFD up",
    )
    .await?;
    // BIRD's view: it sends every max(its 100 ms, our 300 ms rx) and detects after our
    // multiplier × max(its 100 ms rx, our 300 ms tx).
    let s = wait_bird(&bird, n0, "Up at 0.3/0.9", |s| {
        s.state == "Up" && s.interval == 0.3 && s.timeout == 0.9
    })
    .await?;
    let m = lab.metrics(0).await?;
    // Ours: BIRD's multiplier 3 × max(our rx 300, its tx 100) = 0.9 s; tx max(300, its rx 100).
    ensure!(
        metric(&m, "metallb_rs_bfd_detection_time_seconds", &[&bl]) == Some(0.9)
            && metric(&m, "metallb_rs_bfd_transmit_interval_seconds", &[&bl]) == Some(0.3),
        "{m}"
    );
    ensure!(metric(&m, "metallb_bfd_control_packet_input", &[&bl]).is_some_and(|v| v >= 1.0));
    ensure!(metric(&m, "metallb_bfd_control_packet_output", &[&bl]).is_some_and(|v| v >= 1.0));

    // Edit the profile: 100 ms both ways, multiplier 5. A Poll Sequence, no reset.
    lab.set_config(&config(
        "{name: p, receive-interval: 100, transmit-interval: 100, detect-multiplier: 5}",
        b,
        pool,
    ))
    .await?;
    let s2 = wait_bird(&bird, n0, "renegotiated 0.1/0.5", |s| {
        s.state == "Up" && s.interval == 0.1 && s.timeout == 0.5
    })
    .await?;
    ensure!(
        s2.since == s.since,
        "BIRD's session was reset: {s:?} → {s2:?}"
    );
    let m = lab.metrics(0).await?;
    ensure!(
        metric(&m, "metallb_bfd_session_up_events", &[&bl]) == Some(1.0)
            && metric(&m, "metallb_bfd_session_down_events", &[&bl]) == Some(0.0)
            && metric(&m, "metallb_rs_bgp_session_flaps_total", &[&bgp]).is_none()
            && metric(&m, "metallb_rs_bfd_detection_time_seconds", &[&bl]) == Some(0.3),
        "no reset of BFD or BGP, detection 3 × 100 ms: {m}"
    );

    // The router's link goes silent: its interface goes down inside its namespace (the
    // kernel here has no netem or packet filter), so it sends nothing; the speaker's own link
    // stays up and sees no FIN, no ICMP, just silence.
    in_ns(bird.netns(), &["ip", "link", "set", "eth0", "down"])?;
    lab.wait_metric(
        0,
        |m| {
            metric(
                m,
                "metallb_rs_bgp_session_flaps_total",
                &[&bgp, "reason=\"bfd_down\""],
            ) == Some(1.0)
                && metric(m, "metallb_bfd_session_up", &[&bl]) == Some(0.0)
                && metric(
                    m,
                    "metallb_rs_bfd_session_flaps_total",
                    &[&bl, "diag=\"detection time expired\""],
                ) == Some(1.0)
        },
        "BFD down (detection time) and the BGP session dropped for it",
    )
    .await?;
    in_ns(bird.netns(), &["ip", "link", "set", "eth0", "up"])?;
    lab.wait_metric(
        0,
        |m| {
            metric(m, "metallb_bfd_session_up", &[&bl]) == Some(1.0)
                && metric(m, "metallb_bgp_session_up", &[&bgp]) == Some(1.0)
        },
        "BFD and BGP back",
    )
    .await?;
    bird.wait_routes("the route is back", WAIT, |rs| {
        !routers::routes_for(rs, &host).is_empty()
    })
    .await?;

    // The speaker freezes (no FIN, no Cease: only BFD can tell within BIRD's 9 s hold time).
    let pid = lab
        .speaker_pid(0)
        .ok_or_else(|| anyhow::anyhow!("no speaker"))?;
    lab::run(std::process::Command::new("kill").args(["-STOP", &pid.to_string()]))?;
    let frozen = async {
        wait_bird(&bird, n0, "Down after the freeze", |s| s.state != "Up").await?;
        bird.wait_routes("withdrawn by BIRD on BFD down", WAIT, |rs| {
            routers::routes_for(rs, &host).is_empty()
        })
        .await
    }
    .await;
    let why = bird.bird_last_error(n0).await;
    lab::run(std::process::Command::new("kill").args(["-CONT", &pid.to_string()]))?;
    frozen?;
    let why = why?;
    ensure!(
        why.as_deref() == Some("Error: BFD session down"),
        "BIRD dropped the session for BFD, not its hold timer: {why:?}"
    );
    wait_bird(&bird, n0, "Up again", |s| s.state == "Up").await?;
    bird.wait_routes("the route is back after the thaw", WAIT, |rs| {
        !routers::routes_for(rs, &host).is_empty()
    })
    .await?;

    // kill -9: BIRD sees the BFD session go down too.
    lab.kill9(0).await?;
    wait_bird(&bird, n0, "Down after kill -9", |s| s.state != "Up").await?;
    Ok(())
}

/// Wait until BIRD's BFD session with `n` satisfies `pred`.
async fn wait_bird(
    bird: &Router,
    n: IpAddr,
    what: &str,
    pred: impl Fn(&routers::BirdBfd) -> bool,
) -> Result<routers::BirdBfd> {
    let t = std::time::Instant::now();
    let mut last = None;
    loop {
        if let Some(s) = bird.bird_bfd(n).await? {
            if pred(&s) {
                return Ok(s);
            }
            last = Some(s);
        }
        ensure!(
            t.elapsed() < WAIT,
            "BIRD BFD {what} not seen within {WAIT:?}; last {last:?}; log: {}",
            bird.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// With FRR: the BGP session (bgpd) comes up but nothing is announced while BFD is not Up;
/// once bfdd runs, the session comes Up with the profile's values as FRR sees them
/// (`remote-receive-interval` etc.) and the route reaches FRR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn frr_bfdd_up_with_negotiated_intervals_and_announcements_wait_for_it() -> Result<()> {
    let mut lab = Lab::new("bff", 1, MetallbRbac::V0_12_1).await?;
    let (frr, f) = router(&lab, "f", Kind::Frr, 64501, |_| {}).await?;
    let n0: IpAddr = lab.nodes[0].addr.parse()?;
    lab.set_config(&config(
        "{name: p, receive-interval: 300, transmit-interval: 250, detect-multiplier: 4}",
        f,
        "203.0.113.216/29",
    ))
    .await?;
    lab.start_speaker(0, &[])?;
    lab.service("web", json!({}), &[0]).await?;
    let ip = lab.wait_ip("web").await?;
    let host = format!("{ip}/32");
    let bl = format!("peer=\"{f}\"");
    let bgp = format!("peer=\"{f}:179\"");
    // BGP up, one prefix pending, none sent: BFD is not Up yet.
    lab.wait_metric(
        0,
        |m| {
            metric(m, "metallb_bgp_session_up", &[&bgp]) == Some(1.0)
                && metric(m, "metallb_bgp_pending_prefixes_total", &[&bgp]) == Some(1.0)
        },
        "BGP up with the route pending",
    )
    .await?;
    let m = lab.metrics(0).await?;
    ensure!(
        metric(&m, "metallb_bgp_announced_prefixes_total", &[&bgp]) == Some(0.0)
            && metric(&m, "metallb_bfd_session_up", &[&bl]) == Some(0.0),
        "{m}"
    );
    ensure!(
        frr.routes().await?.is_empty(),
        "nothing announced before BFD is up"
    );

    let d = bfdd::Bfdd::start(
        frr.netns(),
        &[bfdd::Peer {
            peer: n0,
            local: IpAddr::V4(f),
            receive_ms: 200,
            transmit_ms: 200,
            multiplier: 3,
            multihop: false,
        }],
    )
    .await?;
    let p = d
        .wait_peer(n0, WAIT, "up with our values", |p| {
            p["status"] == "up"
                && p["remote-receive-interval"] == 300
                && p["remote-transmit-interval"] == 250
                && p["remote-detect-multiplier"] == 4
        })
        .await?;
    ensure!(
        p["receive-interval"] == 200 && p["transmit-interval"] == 200,
        "{p}"
    );
    frr.wait_routes("the route after BFD up", WAIT, |rs| {
        !routers::routes_for(rs, &host).is_empty()
    })
    .await?;
    let m = lab.metrics(0).await?;
    // FRR's multiplier 3 × max(our rx 300, its tx 200); we send every max(250, its rx 200).
    ensure!(
        metric(&m, "metallb_rs_bfd_detection_time_seconds", &[&bl]) == Some(0.9)
            && metric(&m, "metallb_rs_bfd_transmit_interval_seconds", &[&bl]) == Some(0.25)
            && metric(&m, "metallb_bgp_announced_prefixes_total", &[&bgp]) == Some(1.0),
        "{m}"
    );
    Ok(())
}
