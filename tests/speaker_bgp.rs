//! The speaker in BGP mode against real routers: GoBGP, BIRD 2, FRR and exabgp from Debian,
//! each in its own network namespace on the harness bridge, peering with speakers that run as
//! real processes in "node" namespaces (only `CAP_NET_RAW`, MetalLB 0.12.1's speaker RBAC),
//! with the real kube-apiserver + etcd and the controller allocating IPs. What the speakers
//! announced is read back from each router's RIB (`tests/common/routers.rs`).
//!
//! Isolation: every test has its own namespace, `--lb-class`, Nodes, network namespaces and
//! service IPs (203.0.113.0/24 and 2001:db8::/32 split by test).

#[path = "common/cluster.rs"]
mod cluster;

#[path = "common/lab.rs"]
mod lab;

#[path = "common/routers.rs"]
mod routers;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use cluster::MetallbRbac;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use lab::{Lab, WAIT, in_ns, metric};
use routers::{Kind, Neighbor, Route, Router, RouterConfig};
use serde_json::json;

/// A router namespace on the harness bridge; returns (netns, address).
fn router_ns(lab: &Lab, tag: &str) -> Result<(String, Ipv4Addr)> {
    let netns = format!("{}r{tag}", lab.nodes[0].netns);
    let addr = lab.cluster.add_node_netns(&netns)?;
    Ok((netns, addr.parse()?))
}

/// Start a router of `kind` in a fresh namespace, peering (passively) with every node.
async fn router(
    lab: &Lab,
    tag: &str,
    kind: Kind,
    asn: u32,
    tweak: impl Fn(&mut Neighbor),
) -> Result<(Router, Ipv4Addr)> {
    let (netns, addr) = router_ns(lab, tag)?;
    let neighbors = lab
        .nodes
        .iter()
        .map(|n| {
            let mut nb = Neighbor::new(n.addr.parse().expect("node address"), 64500);
            tweak(&mut nb);
            nb
        })
        .collect();
    let cfg = RouterConfig {
        router_id: addr,
        asn,
        local_addresses: vec![IpAddr::V4(addr)],
        neighbors,
    };
    Ok((Router::start(kind, &netns, &cfg).await?, addr))
}

fn node_addr(lab: &Lab, i: usize) -> IpAddr {
    lab.nodes[i].addr.parse().expect("node address")
}

/// Routes for `prefix` with next hops exactly `hops`.
fn hops_are(routes: &[Route], prefix: &str, hops: &[IpAddr]) -> bool {
    let mut got: Vec<IpAddr> = routers::routes_for(routes, prefix)
        .iter()
        .map(|r| r.next_hop)
        .collect();
    got.sort();
    got.dedup();
    let mut want = hops.to_vec();
    want.sort();
    got == want
}

fn peer_label(addr: impl std::fmt::Display) -> String {
    format!("peer=\"{addr}:179\"")
}

/// A session comes up with each of GoBGP (eBGP), BIRD (iBGP) and FRR (eBGP); the Service's
/// route appears in each RIB from both nodes (a `Cluster` service with an endpoint on one
/// node is announced by every node) with MetalLB's attributes: AS_PATH `[64500]` on eBGP and
/// empty on iBGP, LOCAL_PREF on iBGP only, the communities (an alias and a literal), and the
/// aggregate of the second advertisement. Then the Flux recipe's ConfigMap, verbatim but for
/// the addresses (two peers of AS 64501, my-asn 64500, one bgp pool with avoid-buggy-ips).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn routes_in_gobgp_bird_and_frr() -> Result<()> {
    let mut lab = Lab::new("bga", 2, MetallbRbac::V0_12_1).await?;
    let (gobgp, g) = router(&lab, "g", Kind::Gobgp, 64501, |_| {}).await?;
    let (bird, b) = router(&lab, "b", Kind::Bird, 64500, |_| {}).await?;
    let (frr, f) = router(&lab, "f", Kind::Frr, 64501, |_| {}).await?;
    lab.set_config(&format!(
        "peers:
- {{my-asn: 64500, peer-asn: 64501, peer-address: {g}, hold-time: 9s}}
- {{my-asn: 64500, peer-asn: 64500, peer-address: {b}, hold-time: 9s}}
- {{my-asn: 64500, peer-asn: 64501, peer-address: {f}, hold-time: 9s}}
bgp-communities:
  web: 64500:100
address-pools:
- name: bgp
  protocol: bgp
  addresses: [203.0.113.64/27]
  bgp-advertisements:
  - {{localpref: 50, communities: [web, '64500:200']}}
  - {{aggregation-length: 28}}
"
    ))
    .await?;
    lab.start_all()?;
    lab.service("web", json!({}), &[0]).await?;
    let ip = lab.wait_ip("web").await?;
    let host = format!("{ip}/32");
    let IpAddr::V4(v4) = ip else {
        return Err(anyhow!("{ip} is not IPv4"));
    };
    let agg = format!("{}/28", Ipv4Addr::from(u32::from(v4) & !0xF));
    let both = [node_addr(&lab, 0), node_addr(&lab, 1)];
    for (r, ibgp) in [(&gobgp, false), (&bird, true), (&frr, false)] {
        let routes = r
            .wait_routes(
                "the service route from both nodes and the aggregate",
                WAIT,
                |rs| hops_are(rs, &host, &both) && hops_are(rs, &agg, &both),
            )
            .await?;
        for route in routers::routes_for(&routes, &host) {
            let want_path: Vec<u32> = if ibgp { vec![] } else { vec![64500] };
            ensure!(route.as_path == want_path, "{:?}: {route:?}", r.kind());
            if ibgp {
                ensure!(route.local_pref == Some(50), "iBGP LOCAL_PREF: {route:?}");
            }
            ensure!(
                route.communities == ["64500:100", "64500:200"],
                "{:?} communities: {route:?}",
                r.kind()
            );
        }
        for route in routers::routes_for(&routes, &agg) {
            ensure!(route.communities.is_empty(), "aggregate: {route:?}");
            if ibgp {
                ensure!(route.local_pref == Some(0), "MetalLB sends 0: {route:?}");
            }
        }
    }
    // MetalLB's metrics, by name and label.
    let m = lab.metrics(0).await?;
    for peer in [g, b, f] {
        let l = peer_label(peer);
        ensure!(
            metric(&m, "metallb_bgp_session_up", &[&l]) == Some(1.0),
            "session_up {l}:\n{m}"
        );
        ensure!(metric(&m, "metallb_bgp_updates_total", &[&l]).is_some_and(|v| v >= 1.0));
        ensure!(metric(&m, "metallb_bgp_announced_prefixes_total", &[&l]) == Some(2.0));
        ensure!(metric(&m, "metallb_bgp_pending_prefixes_total", &[&l]) == Some(2.0));
    }
    ensure!(
        metric(
            &m,
            "metallb_speaker_announced",
            &["protocol=\"bgp\"", &format!("ip=\"{ip}\"")]
        ) == Some(1.0),
        "{m}"
    );
    lab.wait_event("web", "nodeAssigned", "protocol \"bgp\"")
        .await?;

    // The Flux recipe's shape: two firewalls in AS 64501.
    lab.set_config(&format!(
        "peers:
- peer-address: {g}
  peer-asn: 64501
  my-asn: 64500
- peer-address: {f}
  peer-asn: 64501
  my-asn: 64500

address-pools:
- name: bgp
  protocol: bgp
  avoid-buggy-ips: true
  addresses:
  - 203.0.113.64/27
"
    ))
    .await?;
    for r in [&gobgp, &frr] {
        r.wait_routes("only the /32, without communities", WAIT, |rs| {
            hops_are(rs, &host, &both)
                && routers::routes_for(rs, &agg).is_empty()
                && routers::routes_for(rs, &host)
                    .iter()
                    .all(|r| r.communities.is_empty())
        })
        .await?;
    }
    // The iBGP peer was removed: its session is closed and its routes are gone.
    bird.wait_session(both[0], false, WAIT).await?;
    bird.wait_routes("nothing once the peer is removed", WAIT, |rs| rs.is_empty())
        .await?;
    drop(lab);
    Ok(())
}

/// `Local`: only nodes with a ready endpoint announce, and the route follows the endpoints;
/// node-selectors: a label change on the Node opens and closes the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn local_policy_and_node_selectors() -> Result<()> {
    let mut lab = Lab::new("bgl", 2, MetallbRbac::V0_12_1).await?;
    let (gobgp, g) = router(&lab, "g", Kind::Gobgp, 64501, |_| {}).await?;
    let pools = "address-pools:\n- name: bgp\n  protocol: bgp\n  addresses: [203.0.113.96/28]\n";
    lab.set_config(&format!(
        "peers:\n- {{my-asn: 64500, peer-asn: 64501, peer-address: {g}, hold-time: 9s}}\n{pools}"
    ))
    .await?;
    lab.start_all()?;
    lab.service("loc", json!({"externalTrafficPolicy": "Local"}), &[0])
        .await?;
    let ip = lab.wait_ip("loc").await?;
    let host = format!("{ip}/32");
    let (n0, n1) = (node_addr(&lab, 0), node_addr(&lab, 1));
    gobgp
        .wait_routes("from node 0 only", WAIT, |rs| hops_are(rs, &host, &[n0]))
        .await?;
    lab.set_endpoints("loc", &[1]).await?;
    gobgp
        .wait_routes("from node 1 only after the endpoint moved", WAIT, |rs| {
            hops_are(rs, &host, &[n1])
        })
        .await?;
    lab.set_endpoints("loc", &[]).await?;
    gobgp
        .wait_routes("withdrawn without endpoints", WAIT, |rs| {
            routers::routes_for(rs, &host).is_empty()
        })
        .await?;
    lab.set_endpoints("loc", &[0, 1]).await?;
    gobgp
        .wait_routes("from both", WAIT, |rs| hops_are(rs, &host, &[n0, n1]))
        .await?;

    // Only nodes labelled bgp=on peer.
    lab.set_config(&format!(
        "peers:\n- my-asn: 64500\n  peer-asn: 64501\n  peer-address: {g}\n  hold-time: 9s\n  node-selectors:\n  - match-labels: {{bgp: 'on'}}\n{pools}"
    ))
    .await?;
    gobgp.wait_session(n0, false, WAIT).await?;
    gobgp.wait_session(n1, false, WAIT).await?;
    gobgp
        .wait_routes("nothing without a selected node", WAIT, |rs| rs.is_empty())
        .await?;
    // Never silent: the speakers say why the BGP pool is not announced from their node.
    lab.wait_event("config", "BGPNotAnnounced", "no BGP peer selects node")
        .await?;
    let nodes: Api<Node> = Api::all(lab.admin.clone());
    let label = |on: Option<&str>| Patch::Merge(json!({"metadata": {"labels": {"bgp": on}}}));
    nodes
        .patch(
            &lab.nodes[1].name,
            &PatchParams::default(),
            &label(Some("on")),
        )
        .await?;
    gobgp.wait_session(n1, true, WAIT).await?;
    gobgp
        .wait_routes("from the labelled node", WAIT, |rs| {
            hops_are(rs, &host, &[n1])
        })
        .await?;
    ensure!(
        !gobgp.session_established(n0).await?,
        "node 0 is not labelled"
    );
    nodes
        .patch(&lab.nodes[1].name, &PatchParams::default(), &label(None))
        .await?;
    gobgp.wait_session(n1, false, WAIT).await?;
    gobgp
        .wait_routes("gone with the label", WAIT, |rs| rs.is_empty())
        .await?;
    Ok(())
}

/// TCP-MD5 with GoBGP, BIRD and FRR (and a wrong password fails with a clear log line); an
/// IPv6 session carrying an IPv6 pool; a 2-byte-AS-only peer (exabgp without the 4-octet
/// capability) gets a 2-octet AS_PATH, and AS_TRANS when my-asn needs 4 octets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn md5_ipv6_and_two_byte_as() -> Result<()> {
    let mut lab = Lab::new("bgm", 1, MetallbRbac::V0_12_1).await?;
    let md5 = |n: &mut Neighbor| n.password = Some("s3cret-md5".into());
    let (gobgp, g) = router(&lab, "g", Kind::Gobgp, 64501, md5).await?;
    let (bird, b) = router(&lab, "b", Kind::Bird, 64502, md5).await?;
    let (frr, f) = router(&lab, "f", Kind::Frr, 64503, md5).await?;
    let (exa, e) = router(&lab, "e", Kind::Exabgp, 64504, |n| n.four_octet_as = false).await?;
    // IPv6 between the node and GoBGP.
    let node6: IpAddr = "2001:db8:71::1".parse()?;
    let g6: IpAddr = "2001:db8:71::2".parse()?;
    in_ns(
        &lab.nodes[0].netns,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8:71::1/64",
            "dev",
            "eth0",
            "nodad",
        ],
    )?;
    let (g6ns, _) = router_ns(&lab, "g6")?;
    in_ns(
        &g6ns,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8:71::2/64",
            "dev",
            "eth0",
            "nodad",
        ],
    )?;
    let gobgp6 = Router::start(
        Kind::Gobgp,
        &g6ns,
        &RouterConfig {
            router_id: "198.51.100.250".parse()?,
            asn: 64505,
            local_addresses: vec![g6],
            neighbors: vec![Neighbor::new(node6, 64500)],
        },
    )
    .await?;
    let peers = |frr_pw: &str, extra: &str| {
        format!(
            "peers:
- {{my-asn: 64500, peer-asn: 64501, peer-address: {g}, password: s3cret-md5, hold-time: 9s}}
- {{my-asn: 64500, peer-asn: 64502, peer-address: {b}, password: s3cret-md5, hold-time: 9s}}
- {{my-asn: 64500, peer-asn: 64503, peer-address: {f}, password: {frr_pw}, hold-time: 9s}}
- {{my-asn: 64500, peer-asn: 64504, peer-address: {e}, hold-time: 9s}}
- {{my-asn: 64500, peer-asn: 64505, peer-address: '{g6}', hold-time: 9s}}
{extra}address-pools:
- name: v4
  protocol: bgp
  addresses: [203.0.113.112/29]
- name: v6
  protocol: bgp
  addresses: ['2001:db8:72::/120']
"
        )
    };
    lab.set_config(&peers("s3cret-md5", "")).await?;
    lab.start_all()?;
    lab.service("web", json!({}), &[0]).await?;
    lab.service(
        "web6",
        json!({"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"}),
        &[0],
    )
    .await?;
    let ip = lab.wait_ip("web").await?;
    let ip6 = lab.wait_ip("web6").await?;
    let (host, host6) = (format!("{ip}/32"), format!("{ip6}/128"));
    let n0 = node_addr(&lab, 0);
    for r in [&gobgp, &bird, &frr] {
        r.wait_routes("the route over an MD5 session", WAIT, |rs| {
            hops_are(rs, &host, &[n0])
        })
        .await?;
        ensure!(
            routers::routes_for(&r.routes().await?, &host6).is_empty(),
            "IPv6 prefixes go to IPv6 sessions only"
        );
    }
    let routes = exa
        .wait_routes("the route at the 2-octet peer", WAIT, |rs| {
            hops_are(rs, &host, &[n0])
        })
        .await?;
    ensure!(
        routers::routes_for(&routes, &host)
            .iter()
            .all(|r| r.as_path == [64500]),
        "{routes:?}"
    );
    ensure!(
        exa.neighbor_info(n0).await?.remote_four_octet_as != Some(true),
        "exabgp must not have negotiated 4-octet AS"
    );
    gobgp6
        .wait_routes("the IPv6 route over the IPv6 session", WAIT, |rs| {
            hops_are(rs, &host6, &[node6])
        })
        .await?;
    ensure!(
        routers::routes_for(&gobgp6.routes().await?, &host).is_empty(),
        "IPv4 prefixes go to IPv4 sessions only"
    );

    // A wrong password: FRR's session goes and stays down, and the log says why.
    lab.set_config(&peers("wrong-password", "")).await?;
    frr.wait_session(n0, false, WAIT).await?;
    let t = Instant::now();
    loop {
        let log = speaker_log(&lab, 0);
        if log.contains("TCP-MD5 password mismatch") && log.contains(&f.to_string()) {
            break;
        }
        ensure!(
            t.elapsed() < WAIT * 2,
            "no MD5 hint in the log: {}",
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(
        !frr.session_established(n0).await?,
        "the wrong password must not establish"
    );
    ensure!(
        gobgp.session_established(n0).await?,
        "other sessions stay up"
    );

    // A 4-octet my-asn to a 2-octet peer, which knows us as AS_TRANS (RFC 6793): AS_PATH
    // carries AS_TRANS and AS4_PATH the real path; exabgp merges the two (RFC 6793 §4.2.3),
    // so it shows 4200000001, which it can only know from our AS4_PATH.
    let (exa2, e2) = router(&lab, "e2", Kind::Exabgp, 64506, |n| {
        n.four_octet_as = false;
        n.asn = 23456;
    })
    .await?;
    lab.set_config(&peers(
        "s3cret-md5",
        &format!("- {{my-asn: 4200000001, peer-asn: 64506, peer-address: {e2}, hold-time: 9s}}\n"),
    ))
    .await?;
    exa2.wait_routes("AS_TRANS from a 4-octet my-asn", WAIT, |rs| {
        routers::routes_for(rs, &host)
            .iter()
            .any(|r| r.as_path == [4_200_000_001])
    })
    .await?;

    // What the user must fix is said on the ConfigMap: a source-address not on this host,
    // and a peer refusing our OPEN (FRR: Bad Peer AS for a wrong my-asn).
    lab.set_config(
        &peers(
            "s3cret-md5",
            &format!("- {{my-asn: 64500, peer-asn: 64501, peer-address: {g}, source-address: 192.0.2.99, hold-time: 9s}}\n"),
        )
        .replace("{my-asn: 64500, peer-asn: 64503", "{my-asn: 64599, peer-asn: 64503"),
    )
    .await?;
    lab.wait_event(
        "config",
        "BGPSessionFailed",
        "source-address 192.0.2.99 doesn't exist on this host",
    )
    .await?;
    lab.wait_event("config", "BGPSessionFailed", "Bad Peer AS")
        .await?;
    ensure!(
        gobgp.session_established(n0).await?,
        "other sessions stay up"
    );
    let _ = bird;
    Ok(())
}

/// The hold timer: a router that silently stops (SIGSTOP) is declared dead within the hold
/// time and the session comes back when it does. Graceful restart off: kill -9 of the speaker
/// → the route goes with the session. Graceful restart on: kill -9 leaves the route stale at
/// the router until the speaker is back (End-of-RIB clears the mark). SIGTERM: Cease and a
/// clean withdraw even with graceful restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn hold_timer_graceful_restart_and_sigterm() -> Result<()> {
    let mut lab = Lab::new("bgh", 1, MetallbRbac::V0_12_1).await?;
    let (gobgp, g) = router(&lab, "g", Kind::Gobgp, 64501, |n| {
        n.graceful_restart = Some(120)
    })
    .await?;
    lab.set_config(&format!(
        "peers:\n- {{my-asn: 64500, peer-asn: 64501, peer-address: {g}, hold-time: 9s}}\naddress-pools:\n- name: bgp\n  protocol: bgp\n  addresses: [203.0.113.128/28]\n"
    ))
    .await?;
    lab.start_speaker(0, &[])?;
    lab.service("web", json!({}), &[0]).await?;
    let ip = lab.wait_ip("web").await?;
    let host = format!("{ip}/32");
    let n0 = node_addr(&lab, 0);
    gobgp
        .wait_routes("the route", WAIT, |rs| hops_are(rs, &host, &[n0]))
        .await?;
    let l = peer_label(g);

    // Hold timer: the router stops answering (process frozen, its kernel still ACKs).
    gobgp.pause()?;
    let paused = Instant::now();
    lab.wait_metric(
        0,
        |m| metric(m, "metallb_bgp_session_up", &[&l]) == Some(0.0),
        "session declared down while the router is frozen",
    )
    .await?;
    let detected = paused.elapsed();
    gobgp.resume()?;
    let log = speaker_log(&lab, 0);
    ensure!(
        log.contains("hold_timer_expired"),
        "the hold timer must be why (after {detected:?}): {}",
        lab.logs()
    );
    lab.wait_metric(
        0,
        |m| metric(m, "metallb_bgp_session_up", &[&l]) == Some(1.0),
        "session back after the router resumed",
    )
    .await?;
    gobgp
        .wait_routes("the route is back", WAIT, |rs| hops_are(rs, &host, &[n0]))
        .await?;

    // Without graceful restart a killed speaker's routes go with the session (the router
    // would help, the speaker did not offer it).
    lab.kill9(0).await?;
    gobgp
        .wait_routes("gone at once without GR", WAIT, |rs| {
            routers::routes_for(rs, &host).is_empty()
        })
        .await?;

    // Graceful restart: kill -9 → stale; restart → fresh after End-of-RIB.
    let gr = ["--bgp-graceful-restart", "--bgp-graceful-restart-time=60"];
    lab.start_speaker(0, &gr)?;
    gobgp
        .wait_routes("announced with GR", WAIT, |rs| hops_are(rs, &host, &[n0]))
        .await?;
    lab.kill9(0).await?;
    gobgp.wait_session(n0, false, WAIT).await?;
    let rs = gobgp
        .wait_routes("the route kept as stale", WAIT, |rs| {
            routers::routes_for(rs, &host).iter().any(|r| r.stale)
        })
        .await?;
    ensure!(hops_are(&rs, &host, &[n0]), "{rs:?}");
    lab.start_speaker(0, &gr)?;
    gobgp
        .wait_routes("fresh after End-of-RIB", WAIT, |rs| {
            let r = routers::routes_for(rs, &host);
            !r.is_empty() && r.iter().all(|r| !r.stale)
        })
        .await?;

    // SIGTERM: withdrawn and closed with Cease, GR or not.
    lab.sigterm(0).await?;
    gobgp
        .wait_routes("withdrawn on SIGTERM", WAIT, |rs| {
            routers::routes_for(rs, &host).is_empty()
        })
        .await?;
    let log = speaker_log(&lab, 0);
    ensure!(
        log.contains("Sending BGP NOTIFICATION")
            && (log.contains("subcode=2") || log.contains("\"subcode\":2")),
        "Cease/Administrative Shutdown: {}",
        lab.logs()
    );
    Ok(())
}

/// Reload sends only deltas: adding a peer does not touch the other session, changing a
/// community re-sends just that pool's prefixes (packed in one UPDATE), removing an unused pool
/// sends nothing, and switching a pool to layer 2 withdraws it from BGP in one UPDATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn reload_sends_only_deltas() -> Result<()> {
    let mut lab = Lab::new("bgr", 1, MetallbRbac::V0_12_1).await?;
    let (gobgp, g) = router(&lab, "g", Kind::Gobgp, 64501, |_| {}).await?;
    let (bird, b) = router(&lab, "b", Kind::Bird, 64502, |_| {}).await?;
    let peer_g =
        format!("- {{my-asn: 64500, peer-asn: 64501, peer-address: {g}, hold-time: 9s}}\n");
    let peer_b =
        format!("- {{my-asn: 64500, peer-asn: 64502, peer-address: {b}, hold-time: 9s}}\n");
    let pools = |comm: &str, p2: &str, extra: bool| {
        format!(
            "address-pools:
- name: p1
  protocol: bgp
  addresses: [203.0.113.144/29]
  bgp-advertisements: [{{communities: ['{comm}']}}]
- name: p2
  protocol: {p2}
  addresses: [203.0.113.152/29]
{}",
            if extra {
                "- name: unused\n  protocol: bgp\n  addresses: [203.0.113.160/29]\n"
            } else {
                ""
            }
        )
    };
    lab.set_config(&format!(
        "peers:\n{peer_g}{}",
        pools("64500:1", "bgp", true)
    ))
    .await?;
    lab.start_all()?;
    // IPs pinned by spec.loadBalancerIP (p1: a1, a2; p2: b1), so no allocation race.
    let pinned = [
        ("a1", "203.0.113.145"),
        ("a2", "203.0.113.146"),
        ("b1", "203.0.113.153"),
    ];
    for (name, ip) in pinned {
        lab.service(name, json!({"loadBalancerIP": ip}), &[0])
            .await?;
    }
    let mut ips = Vec::new();
    for (name, want) in pinned {
        let got = lab.wait_ip(name).await?;
        ensure!(got.to_string() == want, "{name}: {got} instead of {want}");
        ips.push(format!("{want}/32"));
    }
    let n0 = node_addr(&lab, 0);
    gobgp
        .wait_routes("three routes", WAIT, |rs| {
            ips.iter().all(|p| hops_are(rs, p, &[n0]))
        })
        .await?;
    let lg = peer_label(g);
    let updates = |m: &str| metric(m, "metallb_bgp_updates_total", &[&lg]).unwrap_or(-1.0);
    let flaps = |m: &str| {
        metric(
            m,
            "metallb_rs_bgp_messages_total",
            &[&lg, "direction=\"sent\"", "type=\"open\""],
        )
        .unwrap_or(-1.0)
    };
    let m0 = lab.metrics(0).await?;
    let (u0, o0) = (updates(&m0), flaps(&m0));

    // Add a peer: the new session gets everything, the old one nothing.
    lab.set_config(&format!(
        "peers:\n{peer_g}{peer_b}{}",
        pools("64500:1", "bgp", true)
    ))
    .await?;
    bird.wait_routes("three routes at the new peer", WAIT, |rs| {
        ips.iter().all(|p| hops_are(rs, p, &[n0]))
    })
    .await?;
    let m1 = lab.metrics(0).await?;
    ensure!(
        updates(&m1) == u0,
        "no UPDATE to the untouched peer: {u0} -> {}",
        updates(&m1)
    );
    ensure!(flaps(&m1) == o0, "the untouched session was not reopened");

    // Change p1's community: one UPDATE with both of its prefixes.
    lab.set_config(&format!(
        "peers:\n{peer_g}{peer_b}{}",
        pools("64500:2", "bgp", true)
    ))
    .await?;
    gobgp
        .wait_routes("the new community on p1's routes", WAIT, |rs| {
            ips[..2].iter().all(|p| {
                routers::routes_for(rs, p)
                    .iter()
                    .all(|r| r.communities == ["64500:2"])
            })
        })
        .await?;
    let m2 = lab.metrics(0).await?;
    ensure!(
        updates(&m2) == u0 + 1.0,
        "one UPDATE: {u0} -> {}",
        updates(&m2)
    );

    // Remove the unused pool: nothing to send.
    lab.set_config(&format!(
        "peers:\n{peer_g}{peer_b}{}",
        pools("64500:2", "bgp", false)
    ))
    .await?;
    wait_config(
        &lab,
        &pools("64500:2", "bgp", false),
        &format!("peers:\n{peer_g}{peer_b}"),
    )
    .await?;
    // p2 to layer 2: one withdraw UPDATE (observed at the router first, then counted).
    lab.set_config(&format!(
        "peers:\n{peer_g}{peer_b}{}",
        pools("64500:2", "layer2", false)
    ))
    .await?;
    gobgp
        .wait_routes("p2's route withdrawn", WAIT, |rs| {
            routers::routes_for(rs, &ips[2]).is_empty() && hops_are(rs, &ips[0], &[n0])
        })
        .await?;
    let m3 = lab.metrics(0).await?;
    ensure!(
        updates(&m3) == u0 + 2.0,
        "removing an unused pool sends nothing and the switch one withdraw: {u0} -> {}",
        updates(&m3)
    );
    Ok(())
}

/// Node `i`'s speaker log, without terminal colour codes.
fn speaker_log(lab: &Lab, i: usize) -> String {
    let raw = std::fs::read_to_string(&lab.nodes[i].log).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Wait until node 0's speaker runs the config `peers` + `pools` (its sha256 in
/// `metallb_rs_config_info`).
async fn wait_config(lab: &Lab, pools: &str, peers: &str) -> Result<()> {
    use sha2::{Digest, Sha256};
    let payload = format!("{peers}{pools}");
    let sha: String = Sha256::digest(payload.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    lab.wait_metric(
        0,
        |m| metric(m, "metallb_rs_config_info", &[&sha]) == Some(1.0),
        &format!("config {sha} in force"),
    )
    .await
}
