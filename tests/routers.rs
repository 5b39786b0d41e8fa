//! Self-test of `tests/common/routers.rs`: a GoBGP announcer and the four test routers
//! (GoBGP, BIRD 2, FRR, exabgp) on a bridge in network namespaces; no Kubernetes. The
//! parsers also have root-free tests on captured output.

#[path = "common/routers.rs"]
mod routers;

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, Result, ensure};
use routers::{Kind, Neighbor, Route, Router, RouterConfig, WAIT, routes_for};

const ANNOUNCER_AS: u32 = 64500;
const V4: &str = "203.0.113.10/32";
const V6: &str = "2001:db8:ff::10/128";

/// A bridge namespace and `n` host namespaces, host `i` at 198.51.100.(10+i)/24 and
/// 2001:db8:1::(10+i)/64 on its eth0; all deleted on drop.
struct Net {
    prefix: String,
    hosts: usize,
}

impl Net {
    fn new(tag: &str, hosts: usize) -> Result<Net> {
        let prefix = format!("rt{}{tag}", std::process::id() % 10000);
        let net = Net { prefix, hosts };
        net.delete();
        let sw = net.switch();
        ip(&["netns", "add", &sw])?;
        in_ns(&sw, &["ip", "link", "add", "br0", "type", "bridge"])?;
        in_ns(&sw, &["ip", "link", "set", "br0", "up"])?;
        for i in 0..hosts {
            let ns = net.host(i);
            let (v, p) = (format!("{}v{i}", net.prefix), format!("{}p{i}", net.prefix));
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &v, "type", "veth", "peer", "name", &p])?;
            ip(&["link", "set", &v, "netns", &ns])?;
            ip(&["link", "set", &p, "netns", &sw])?;
            in_ns(&sw, &["ip", "link", "set", &p, "master", "br0", "up"])?;
            in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
            in_ns(&ns, &["ip", "link", "set", &v, "name", "eth0"])?;
            let v4 = format!("{}/24", net.v4(i));
            let v6 = format!("{}/64", net.v6(i));
            in_ns(&ns, &["ip", "addr", "add", &v4, "dev", "eth0"])?;
            in_ns(
                &ns,
                &["ip", "-6", "addr", "add", &v6, "dev", "eth0", "nodad"],
            )?;
            in_ns(&ns, &["ip", "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    fn host(&self, i: usize) -> String {
        format!("{}-h{i}", self.prefix)
    }

    fn v4(&self, i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10 + i as u8))
    }

    fn v6(&self, i: usize) -> IpAddr {
        format!("2001:db8:1::{}", 10 + i)
            .parse()
            .expect("an address")
    }

    fn router_id(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 51, 100, 10 + i as u8)
    }

    fn delete(&self) {
        for i in 0..self.hosts {
            let _ = ip(&["netns", "del", &self.host(i)]);
        }
        let _ = ip(&["netns", "del", &self.switch()]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.delete();
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("ip").args(args).output()?;
    ensure!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn in_ns(ns: &str, args: &[&str]) -> Result<()> {
    let mut a = vec!["netns", "exec", ns];
    a.extend_from_slice(args);
    ip(&a)
}

/// The config of host `i` (AS `asn`) peering with the announcer on host 0 over IPv4 and
/// IPv6 (two sessions), `edit` applied to both neighbours.
fn receiver(net: &Net, i: usize, asn: u32, edit: impl Fn(&mut Neighbor)) -> RouterConfig {
    let mut neighbors = vec![
        Neighbor::new(net.v4(0), ANNOUNCER_AS),
        Neighbor::new(net.v6(0), ANNOUNCER_AS),
    ];
    neighbors.iter_mut().for_each(edit);
    RouterConfig {
        router_id: net.router_id(i),
        asn,
        local_addresses: vec![net.v4(i), net.v6(i)],
        neighbors,
    }
}

/// The announcer on host 0: active neighbours mirroring each receiver's (same password,
/// GR, 4-octet AS capability).
fn announcer(net: &Net, receivers: &[(usize, &RouterConfig)]) -> RouterConfig {
    let mut neighbors = Vec::new();
    for (i, r) in receivers {
        for n in &r.neighbors {
            let addr = if n.address.is_ipv4() {
                net.v4(*i)
            } else {
                net.v6(*i)
            };
            neighbors.push(Neighbor {
                active: true,
                four_octet_as: true,
                ..Neighbor {
                    address: addr,
                    asn: r.asn,
                    ..n.clone()
                }
            });
        }
    }
    RouterConfig {
        router_id: net.router_id(0),
        asn: ANNOUNCER_AS,
        local_addresses: vec![net.v4(0), net.v6(0)],
        neighbors,
    }
}

/// Fails (never skips) when a router is missing: `make deps` installs them.
fn require_routers() -> Result<()> {
    let missing: Vec<Kind> = Kind::ALL.into_iter().filter(|k| !k.installed()).collect();
    ensure!(
        missing.is_empty(),
        "routers not installed: {missing:?} (make deps installs gobgpd, bird2, frr, exabgp)"
    );
    Ok(())
}

fn one(routes: &[Route], prefix: &str, from: IpAddr) -> Option<Route> {
    routes_for(routes, prefix)
        .into_iter()
        .find(|r| r.from == Some(from))
}

#[tokio::test]
#[ignore = "requires root and network namespaces; run by make test"]
async fn every_router_receives_what_gobgp_announces() -> Result<()> {
    require_routers()?;
    let net = Net::new("r", 5)?;
    let md5 = |n: &mut Neighbor| {
        if n.address.is_ipv4() {
            n.password = Some("s3cret".into());
        }
    };
    // Host 1: GoBGP over iBGP (sees LOCAL_PREF); 2: BIRD with MD5; 3: FRR with MD5;
    // 4: exabgp with MD5 and without the 4-octet AS capability.
    let cfgs = [
        (1, Kind::Gobgp, receiver(&net, 1, ANNOUNCER_AS, |_| {})),
        (2, Kind::Bird, receiver(&net, 2, 64502, md5)),
        (3, Kind::Frr, receiver(&net, 3, 64503, md5)),
        (
            4,
            Kind::Exabgp,
            receiver(&net, 4, 64504, |n| {
                md5(n);
                n.four_octet_as = false;
            }),
        ),
    ];
    let mut receivers = Vec::new();
    for (i, kind, cfg) in &cfgs {
        receivers.push(Router::start(*kind, &net.host(*i), cfg).await?);
    }
    let list: Vec<(usize, &RouterConfig)> = cfgs.iter().map(|(i, _, c)| (*i, c)).collect();
    let ann = Router::start(Kind::Gobgp, &net.host(0), &announcer(&net, &list)).await?;
    ann.announce(V4, &["64500:100", "64500:7"], Some(200))
        .await?;
    ann.announce(V6, &["64500:6"], None).await?;

    for r in &receivers {
        let ibgp = r.config().asn == ANNOUNCER_AS;
        let (v4, v6) = (net.v4(0), net.v6(0));
        let routes = r
            .wait_routes("both routes from the announcer", WAIT, |rs| {
                one(rs, V4, v4).is_some() && one(rs, V6, v6).is_some()
            })
            .await?;
        let a = one(&routes, V4, v4).expect("waited for");
        let want_path: Vec<u32> = if ibgp { vec![] } else { vec![ANNOUNCER_AS] };
        ensure!(a.next_hop == v4, "{}: {a:?}", r.kind());
        ensure!(a.as_path == want_path, "{}: {a:?}", r.kind());
        ensure!(
            a.communities == ["64500:7", "64500:100"],
            "{}: {a:?}",
            r.kind()
        );
        ensure!(!a.stale, "{}: {a:?}", r.kind());
        if ibgp {
            ensure!(a.local_pref == Some(200), "{}: {a:?}", r.kind());
        }
        let b = one(&routes, V6, v6).expect("waited for");
        ensure!(b.next_hop == v6, "{}: {b:?}", r.kind());
        ensure!(b.as_path == want_path, "{}: {b:?}", r.kind());
        ensure!(b.communities == ["64500:6"], "{}: {b:?}", r.kind());

        for n in [v4, v6] {
            let info = r.neighbor_info(n).await?;
            ensure!(info.established, "{} with {n}: {info:?}", r.kind());
            ensure!(
                info.remote_router_id == Some(net.router_id(0)),
                "{} with {n}: {info:?}",
                r.kind()
            );
        }
    }
    // What the announcer saw of the receivers' capabilities.
    let exa = ann.neighbor_info(net.v4(4)).await?;
    ensure!(exa.remote_four_octet_as == Some(false), "exabgp: {exa:?}");
    let bird = ann.neighbor_info(net.v4(2)).await?;
    ensure!(bird.remote_four_octet_as == Some(true), "bird: {bird:?}");
    ensure!(ann.routes().await?.is_empty(), "receivers export nothing");

    ann.withdraw(V4).await?;
    for r in &receivers {
        r.wait_routes("the IPv4 route withdrawn", WAIT, |rs| {
            routes_for(rs, V4).is_empty() && !routes_for(rs, V6).is_empty()
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
#[ignore = "requires root and network namespaces; run by make test"]
async fn bird_and_frr_as_two_byte_as_peers() -> Result<()> {
    require_routers()?;
    let net = Net::new("t", 3)?;
    let two_byte = |n: &mut Neighbor| n.four_octet_as = false;
    let cfgs = [
        (1, Kind::Bird, receiver(&net, 1, 64501, two_byte)),
        (2, Kind::Frr, receiver(&net, 2, 64502, two_byte)),
    ];
    let mut receivers = Vec::new();
    for (i, kind, cfg) in &cfgs {
        receivers.push(Router::start(*kind, &net.host(*i), cfg).await?);
    }
    let list: Vec<(usize, &RouterConfig)> = cfgs.iter().map(|(i, _, c)| (*i, c)).collect();
    let ann = Router::start(Kind::Gobgp, &net.host(0), &announcer(&net, &list)).await?;
    ann.announce(V4, &["64500:100"], None).await?;
    let from = net.v4(0);
    for (r, (i, _, _)) in receivers.iter().zip(&cfgs) {
        let routes = r
            .wait_routes("the IPv4 route", WAIT, |rs| one(rs, V4, from).is_some())
            .await?;
        let a = one(&routes, V4, from).expect("waited for");
        ensure!(a.as_path == [ANNOUNCER_AS], "{}: {a:?}", r.kind());
        let info = ann.wait_session(net.v4(*i), true, WAIT).await?;
        ensure!(
            info.remote_four_octet_as == Some(false),
            "{}: {info:?}",
            r.kind()
        );
    }
    Ok(())
}

#[tokio::test]
#[ignore = "requires root and network namespaces; run by make test"]
async fn graceful_restart_keeps_stale_routes() -> Result<()> {
    require_routers()?;
    let net = Net::new("g", 4)?;
    let gr = |n: &mut Neighbor| n.graceful_restart = Some(30);
    let cfgs: Vec<(usize, Kind, RouterConfig)> = [Kind::Gobgp, Kind::Bird, Kind::Frr]
        .into_iter()
        .enumerate()
        .map(|(j, k)| (j + 1, k, receiver(&net, j + 1, 64501 + j as u32, gr)))
        .collect();
    let mut receivers = Vec::new();
    for (i, kind, cfg) in &cfgs {
        receivers.push(Router::start(*kind, &net.host(*i), cfg).await?);
    }
    let list: Vec<(usize, &RouterConfig)> = cfgs.iter().map(|(i, _, c)| (*i, c)).collect();
    let mut ann = Router::start(Kind::Gobgp, &net.host(0), &announcer(&net, &list)).await?;
    ann.announce(V4, &["64500:100"], None).await?;
    let from = net.v4(0);
    for r in &receivers {
        r.wait_routes("the route, not stale", WAIT, |rs| {
            one(rs, V4, from).is_some_and(|r| !r.stale)
        })
        .await?;
    }
    // A crash: the sessions drop without a NOTIFICATION; the routes stay, stale.
    ann.kill().await?;
    for r in &receivers {
        r.wait_routes("the route kept as stale", WAIT, |rs| {
            one(rs, V4, from).is_some_and(|r| r.stale)
        })
        .await?;
        ensure!(!r.session_established(from).await?, "{}", r.kind());
    }
    // Back with the same route: refreshed, no longer stale.
    ann.restart().await?;
    ann.announce(V4, &["64500:100"], None).await?;
    for r in &receivers {
        r.wait_routes("the route refreshed after the restart", WAIT, |rs| {
            one(rs, V4, from).is_some_and(|r| !r.stale)
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
#[ignore = "requires root and network namespaces; run by make test"]
async fn paused_router_times_out_and_comes_back() -> Result<()> {
    require_routers()?;
    let net = Net::new("p", 2)?;
    let cfg = receiver(&net, 1, 64501, |n| n.hold_time = 3);
    let bird = Router::start(Kind::Bird, &net.host(1), &cfg).await?;
    let ann = Router::start(Kind::Gobgp, &net.host(0), &announcer(&net, &[(1, &cfg)])).await?;
    let peer = net.v4(1);
    ann.wait_session(peer, true, WAIT).await?;
    bird.pause()?;
    // No keepalives from the stopped daemon: the announcer's hold timer expires.
    ann.wait_session(peer, false, WAIT).await?;
    bird.resume()?;
    ann.wait_session(peer, true, WAIT)
        .await
        .context("after resume")?;
    Ok(())
}

// Root-free tests of the parsers on captured output.

const BIRD_ROUTES: &str = "BIRD 2.0.12 ready.
Table master4:
203.0.113.10/32      unicast [n0 07:44:11.053] * (100) [AS64500?]
\tvia 198.51.100.1 on eth0
\tType: BGP univ
\tBGP.origin: Incomplete
\tBGP.as_path: 64500 64510
\tBGP.next_hop: 198.51.100.1
\tBGP.local_pref: 100
\tBGP.community: (64500,100) (64500,7)
                     unicast [n1 07:44:12.000] (100) [AS64501i]
\tvia 198.51.100.2 on eth0
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 64501
\tBGP.next_hop: 198.51.100.2
\tBGP.local_pref: 100

Table master6:
2001:db8:ff::10/128  unicast [n2 07:44:15.050] * (100) [AS64500?]
\tvia 2001:db8:1::1 on eth0
\tType: BGP univ
\tBGP.as_path: 64500
\tBGP.next_hop: 2001:db8:1::1 fe80::1
\tBGP.local_pref: 100
";

#[test]
fn bird_routes_parse() {
    let peers: [IpAddr; 3] = [
        "198.51.100.1".parse().unwrap(),
        "198.51.100.2".parse().unwrap(),
        "2001:db8:1::1".parse().unwrap(),
    ];
    let routes = routers::parse_bird_routes(BIRD_ROUTES, &|p: &str| {
        peers
            .get(p.strip_prefix('n')?.parse::<usize>().ok()?)
            .copied()
    })
    .unwrap();
    assert_eq!(routes.len(), 3, "{routes:#?}");
    assert_eq!(routes[0].as_path, [64500, 64510]);
    assert_eq!(routes[0].communities, ["64500:7", "64500:100"]);
    assert_eq!(routes[0].local_pref, Some(100));
    assert_eq!(routes[1].from, Some(peers[1]));
    assert_eq!(routes[1].next_hop, peers[1]);
    assert!(routes[1].communities.is_empty());
    assert_eq!(routes[2].next_hop, peers[2]);
    assert_eq!(routes[2].prefix.to_string(), V6);
}

#[test]
fn exabgp_events_fold() {
    let ev = r#"{ "exabgp": "4.0.1", "type": "state", "neighbor": { "address": { "local": "198.51.100.4", "peer": "198.51.100.1" }, "asn": { "local": 64503, "peer": 64500 } , "state": "up" } }
{ "exabgp": "4.0.1", "type": "update", "neighbor": { "address": { "local": "198.51.100.4", "peer": "198.51.100.1" }, "asn": { "local": 64503, "peer": 64500 } , "direction": "receive", "message": { "update": { "attribute": { "origin": "incomplete", "as-path": [ 64500 ], "confederation-path": [], "community": [ [ 64500, 100 ], [ 64500, 7 ] ] }, "announce": { "ipv4 unicast": { "198.51.100.1": [ { "nlri": "203.0.113.10/32" }, { "nlri": "203.0.113.11/32" } ] } } } } } }
{ "exabgp": "4.0.1", "type": "update", "neighbor": { "address": { "local": "198.51.100.4", "peer": "198.51.100.1" }, "asn": { "local": 64503, "peer": 64500 } , "direction": "receive", "message": { "update": { "withdraw": { "ipv4 unicast": [ { "nlri": "203.0.113.11/32" } ] } } } } }
{ "exabgp": "4.0.1", "type": "upd"#;
    let s = routers::exabgp_fold(ev).unwrap();
    assert_eq!(s.routes.len(), 1, "{s:#?}");
    assert_eq!(s.routes[0].communities, ["64500:7", "64500:100"]);
    assert_eq!(s.routes[0].as_path, [64500]);
    let peer: IpAddr = "198.51.100.1".parse().unwrap();
    assert!(s.neighbors[&peer].established);
    let down = format!(
        "{ev}\n{}",
        r#"{ "type": "state", "neighbor": { "address": { "local": "198.51.100.4", "peer": "198.51.100.1" }, "state": "down" } }"#
    );
    let s = routers::exabgp_fold(&down).unwrap();
    assert!(s.routes.is_empty() && !s.neighbors[&peer].established);
}

#[test]
fn gobgp_rib_parses() {
    let text = r#"{"203.0.113.10/32":[{"nlri":{"prefix":"203.0.113.10/32"},"age":1,"best":true,"attrs":[{"type":1,"value":2},{"type":2,"as_paths":[{"segment_type":2,"num":1,"asns":[64500]}]},{"type":3,"nexthop":"198.51.100.1"},{"type":5,"value":200},{"type":8,"communities":[4227072100,4227072007]}],"stale":true,"source-id":"198.51.100.1","neighbor-ip":"198.51.100.1"}]}"#;
    let r = routers::parse_gobgp_rib(text).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].communities, ["64500:7", "64500:100"]);
    assert_eq!(r[0].local_pref, Some(200));
    assert!(r[0].stale);
}

#[test]
fn frr_routes_parse() {
    let text = r#"{"routes": { "203.0.113.10/32": [{"prefix":"203.0.113.10/32","version":3},{"aspath":{"string":"64500","segments":[{"type":"as-sequence","list":[64500]}],"length":1},"stale":true,"origin":"incomplete","valid":true,"community":{"string":"64500:7 64500:100 noExport","list":["64500:7","64500:100","noExport"]},"locPrf":150,"nexthops":[{"ip":"198.51.100.1","afi":"ipv4","used":true}],"peer":{"peerId":"198.51.100.1","routerId":"0.0.0.0","type":"external"}}] } }"#;
    let r = routers::parse_frr_routes(text).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].communities, ["64500:7", "64500:100", "65535:65281"]);
    assert_eq!(r[0].local_pref, Some(150));
    assert!(r[0].stale);
}
