//! The speaker liveness driver over real UDP sockets on loopback addresses 127.0.0.2–127.0.0.6
//! (ephemeral ports). Timing assertions are deliberately loose (a few seconds): the build
//! machine is small and shared. `measure_detection_times` prints real numbers with
//! `cargo test --test gossip -- --nocapture`.
//!
//! "Killing" a speaker is [`Gossip::abort`] (dropping the handle does the same without waiting):
//! the task stops without sending `LEAVING`, as with `kill -9`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use metallb_rs::speaker::gossip::{Gossip, GossipConfig, LiveView};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

const INTERVAL: Duration = Duration::from_millis(100);
const DEAD_AFTER: Duration = Duration::from_millis(600);
/// Generous bound for "eventually" on a loaded 2-core machine.
const EVENTUALLY: Duration = Duration::from_secs(3);

fn lo(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))
}

fn cfg(name: &str, ip: IpAddr, port: u16, secret: Option<&str>) -> GossipConfig {
    GossipConfig {
        node_name: name.into(),
        bind: SocketAddr::new(ip, port),
        secret: secret.map(str::to_owned),
        interval: INTERVAL,
        dead_after: DEAD_AFTER,
        rejected_metric: None,
    }
}

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

struct Node {
    gossip: Gossip,
    view: watch::Receiver<LiveView>,
}

/// Starts `names[i]` on 127.0.0.(2+i) and tells every node all addresses (its own included).
async fn cluster(names: &[&str], secret: Option<&str>) -> Vec<Node> {
    let mut nodes = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let ip = lo(2 + u8::try_from(i).unwrap());
        let (gossip, view) = Gossip::start(cfg(n, ip, 0, secret)).await.unwrap();
        nodes.push(Node { gossip, view });
    }
    let all: BTreeSet<SocketAddr> = nodes.iter().map(|n| n.gossip.local_addr()).collect();
    for n in &nodes {
        n.gossip.set_peers(all.clone());
    }
    nodes
}

/// Waits until `pred` holds for the view, or panics after `within`.
async fn wait_for(
    view: &mut watch::Receiver<LiveView>,
    within: Duration,
    what: &str,
    pred: impl Fn(&LiveView) -> bool,
) -> Duration {
    let start = Instant::now();
    let res = timeout(within, view.wait_for(|v| pred(v)))
        .await
        .map(|r| r.map(|_| ()));
    match res {
        Ok(Ok(())) => start.elapsed(),
        Ok(Err(_)) => panic!("{what}: gossip task ended"),
        Err(_) => panic!(
            "{what}: not reached within {within:?}, view {:?}",
            *view.borrow()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_alive_then_kill_then_leave() {
    let mut nodes = cluster(&["a", "b", "c", "d", "e"], Some("s3cret")).await;
    let everyone = names(&["a", "b", "c", "d", "e"]);
    for n in &mut nodes {
        wait_for(&mut n.view, EVENTUALLY, "all alive", |v| {
            v.alive == everyone
        })
        .await;
        assert_eq!(n.view.borrow().peers_known, 4, "own address is not a peer");
        assert_eq!(n.gossip.rejected(), 0);
    }

    // kill -9 "e": the others see it dead after dead_after, not before.
    let killed = Instant::now();
    nodes.pop().unwrap().gossip.abort().await;
    let without_e = names(&["a", "b", "c", "d"]);
    for n in &mut nodes {
        wait_for(&mut n.view, EVENTUALLY, "e dead", |v| v.alive == without_e).await;
    }
    let detect = killed.elapsed();
    // The last heartbeat arrived at most a round or two before the kill.
    assert!(detect >= DEAD_AFTER / 2, "dead too early: {detect:?}");

    // "d" leaves: seen dead well before dead_after.
    let d = nodes.pop().unwrap();
    let left = Instant::now();
    d.gossip.leave().await;
    let without_d = names(&["a", "b", "c"]);
    for n in &mut nodes {
        wait_for(&mut n.view, EVENTUALLY, "d left", |v| v.alive == without_d).await;
    }
    let detect = left.elapsed();
    assert!(
        detect < DEAD_AFTER,
        "leave not faster than dead_after: {detect:?}"
    );
    for n in &nodes {
        assert_eq!(n.gossip.rejected(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_never_alive_and_counted() {
    let mut nodes = cluster(&["a", "b"], Some("right")).await;
    let ab: BTreeSet<SocketAddr> = nodes.iter().map(|n| n.gossip.local_addr()).collect();
    let (intruder, mut intruder_view) = Gossip::start(cfg("x", lo(4), 0, Some("wrong")))
        .await
        .unwrap();
    let (plain, _plain_view) = Gossip::start(cfg("y", lo(5), 0, None)).await.unwrap();
    let mut all = ab.clone();
    all.insert(intruder.local_addr());
    all.insert(plain.local_addr());
    for n in &nodes {
        n.gossip.set_peers(all.clone());
    }
    intruder.set_peers(all.clone());
    plain.set_peers(all.clone());

    for n in &mut nodes {
        wait_for(&mut n.view, EVENTUALLY, "a, b alive", |v| {
            v.alive == names(&["a", "b"])
        })
        .await;
    }
    // Many heartbeats of the intruders arrive (both the wrong tag and the missing tag are
    // counted as rejected); they must never show up.
    let deadline = Instant::now() + EVENTUALLY;
    while nodes.iter().any(|n| n.gossip.rejected() < 10) {
        assert!(
            Instant::now() < deadline,
            "intruders' heartbeats not rejected: {:?}",
            nodes
                .iter()
                .map(|n| n.gossip.rejected())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for n in &nodes {
        assert_eq!(n.view.borrow().alive, names(&["a", "b"]));
    }
    assert_eq!(intruder_view.borrow_and_update().alive, names(&["x"]));
    assert!(intruder.rejected() > 0);
    assert!(
        plain.rejected() > 0,
        "authenticated heartbeats rejected without a secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_datagram_is_rejected() {
    let mut nodes = cluster(&["a", "b"], Some("k")).await;
    // A sniffer among a's peers captures one of its heartbeats.
    let sniffer = UdpSocket::bind((lo(6), 0)).await.unwrap();
    let mut peers: BTreeSet<SocketAddr> = nodes.iter().map(|n| n.gossip.local_addr()).collect();
    peers.insert(sniffer.local_addr().unwrap());
    nodes[0].gossip.set_peers(peers);
    wait_for(&mut nodes[1].view, EVENTUALLY, "a alive at b", |v| {
        v.alive.contains("a")
    })
    .await;
    let mut buf = [0u8; 1024];
    let (len, _) = timeout(EVENTUALLY, sniffer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let captured = buf[..len].to_vec();
    // a sends each round to b and the sniffer alike: two more rounds at the sniffer and b has
    // newer heartbeats of a than the captured one.
    for _ in 0..2 {
        timeout(EVENTUALLY, sniffer.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
    }
    let before = nodes[1].gossip.rejected();
    let b_addr = nodes[1].gossip.local_addr();
    for _ in 0..3 {
        sniffer.send_to(&captured, b_addr).await.unwrap();
    }
    let deadline = Instant::now() + EVENTUALLY;
    while nodes[1].gossip.rejected() < before + 3 {
        assert!(Instant::now() < deadline, "replays not all rejected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Junk is rejected too, and nothing crashed.
    sniffer.send_to(b"hello", b_addr).await.unwrap();
    sniffer.send_to(&[0xff; 2000], b_addr).await.unwrap();
    let deadline = Instant::now() + EVENTUALLY;
    while nodes[1].gossip.rejected() < before + 5 {
        assert!(Instant::now() < deadline, "junk not rejected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(nodes[1].view.borrow().alive, names(&["a", "b"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_speaker_is_alive_again() {
    let mut nodes = cluster(&["a", "b", "c"], Some("k")).await;
    let abc = names(&["a", "b", "c"]);
    for n in &mut nodes {
        wait_for(&mut n.view, EVENTUALLY, "all alive", |v| v.alive == abc).await;
    }
    let c_addr = nodes[2].gossip.local_addr();
    let all: BTreeSet<SocketAddr> = nodes.iter().map(|n| n.gossip.local_addr()).collect();

    // Crash and come back on the same address: a new incarnation, sequence numbers from 1.
    nodes.pop().unwrap().gossip.abort().await;
    for n in &mut nodes {
        wait_for(&mut n.view, EVENTUALLY, "c dead", |v| {
            v.alive == names(&["a", "b"])
        })
        .await;
    }
    let (c, mut c_view) = Gossip::start(cfg("c", c_addr.ip(), c_addr.port(), Some("k")))
        .await
        .unwrap();
    c.set_peers(all.clone());
    for n in &mut nodes {
        wait_for(&mut n.view, EVENTUALLY, "c back", |v| v.alive == abc).await;
    }
    wait_for(&mut c_view, EVENTUALLY, "c sees all", |v| v.alive == abc).await;

    // Graceful restart: leave, then a new process right away.
    c.leave().await;
    for n in &mut nodes {
        wait_for(&mut n.view, EVENTUALLY, "c left", |v| {
            v.alive == names(&["a", "b"])
        })
        .await;
    }
    let (c, _c_view) = Gossip::start(cfg("c", c_addr.ip(), c_addr.port(), Some("k")))
        .await
        .unwrap();
    c.set_peers(all);
    for n in &mut nodes {
        wait_for(&mut n.view, EVENTUALLY, "c back after leave", |v| {
            v.alive == abc
        })
        .await;
        assert_eq!(
            n.gossip.rejected(),
            0,
            "old incarnation traffic is not replayed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_is_published_only_on_change() {
    let mut nodes = cluster(&["a", "b"], Some("s")).await;
    for n in &mut nodes {
        wait_for(&mut n.view, EVENTUALLY, "both alive", |v| {
            v.alive.len() == 2
        })
        .await;
    }
    let mut view = nodes[0].view.clone();
    view.mark_unchanged();
    // Twenty heartbeat rounds, nothing changes: no publication.
    assert!(
        timeout(INTERVAL * 20, view.changed()).await.is_err(),
        "published without a change: {:?}",
        *view.borrow()
    );
    // Re-setting the same peers is no change either.
    let peers: BTreeSet<SocketAddr> = nodes.iter().map(|n| n.gossip.local_addr()).collect();
    nodes[0].gossip.set_peers(peers);
    assert!(timeout(INTERVAL * 3, view.changed()).await.is_err());
    // Forgetting the peer changes peers_known at once; a still heartbeats b, because b keeps
    // reaching it (a speaker answers whoever authenticated to it), so b keeps a alive.
    nodes[0].gossip.set_peers(BTreeSet::new());
    timeout(EVENTUALLY, view.changed()).await.unwrap().unwrap();
    {
        let v = view.borrow();
        assert_eq!((&v.alive, v.peers_known), (&names(&["a", "b"]), 0));
    }
    tokio::time::sleep(DEAD_AFTER * 3).await;
    assert_eq!(nodes[1].view.borrow().alive, names(&["a", "b"]));
    // b goes away: a, which no longer lists it, expires it all the same.
    let b = nodes.pop().unwrap();
    b.gossip.abort().await;
    wait_for(&mut nodes[0].view, EVENTUALLY, "b expired at a", |v| {
        v.alive == names(&["a"]) && v.peers_known == 0
    })
    .await;
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Detection time after a kill (abort) and after a leave, median and worst of 10 trials with the
/// default timers (interval 100 ms, dead_after 600 ms). Loose sanity bounds only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_detection_times() {
    const TRIALS: usize = 10;
    let mut after_abort = Vec::new();
    let mut after_leave = Vec::new();
    for trial in 0..TRIALS * 2 {
        let mut nodes = cluster(&["a", "b", "c"], Some("k")).await;
        let abc = names(&["a", "b", "c"]);
        for n in &mut nodes {
            wait_for(&mut n.view, EVENTUALLY, "all alive", |v| v.alive == abc).await;
        }
        // Let the steady state settle for a few rounds.
        tokio::time::sleep(INTERVAL * 3).await;
        let c = nodes.pop().unwrap();
        let start = Instant::now();
        // Stop concurrently, so the clock measures what the peers see, not the stop call.
        let stop = tokio::spawn(async move {
            if trial % 2 == 0 {
                c.gossip.abort().await;
            } else {
                c.gossip.leave().await;
            }
        });
        let ab = names(&["a", "b"]);
        for n in &mut nodes {
            wait_for(&mut n.view, EVENTUALLY, "c dead", |v| v.alive == ab).await;
        }
        let took = start.elapsed();
        stop.await.unwrap();
        if trial % 2 == 0 {
            after_abort.push(took);
        } else {
            after_leave.push(took);
        }
    }
    let (ma, mla) = (median(after_abort.clone()), median(after_leave.clone()));
    println!(
        "detection after kill:  median {ma:?}, min {:?}, max {:?} (dead_after {DEAD_AFTER:?})",
        after_abort.iter().min().unwrap(),
        after_abort.iter().max().unwrap(),
    );
    println!(
        "detection after leave: median {mla:?}, min {:?}, max {:?}",
        after_leave.iter().min().unwrap(),
        after_leave.iter().max().unwrap(),
    );
    assert!(mla < ma, "leave must be faster than a kill");
    assert!(mla < DEAD_AFTER);
    assert!(ma >= DEAD_AFTER / 2);
}

/// Nobody else on the node can bind the gossip port while a speaker holds it, not even with
/// `SO_REUSEADDR` (with that option on our socket, a second socket with it could take the
/// heartbeats).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gossip_port_cannot_be_shared() {
    let (g, _view) = Gossip::start(cfg("solo", lo(7), 0, Some("k")))
        .await
        .unwrap();
    let addr = g.local_addr();
    let thief = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    thief.set_reuse_address(true).unwrap();
    let err = thief
        .bind(&addr.into())
        .expect_err("a second socket must not bind the gossip address");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    // A restarted speaker rebinds the same port at once.
    drop(thief);
    g.abort().await;
    let (again, _v) = Gossip::start(cfg("solo", lo(7), addr.port(), Some("k")))
        .await
        .expect("rebinding after a stop");
    assert_eq!(again.local_addr(), addr);
}

/// Refused datagrams reach `metallb_rs_speaker_gossip_rejected_total{reason}`, per reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_datagrams_are_counted_by_reason() {
    let registry = prometheus::Registry::new();
    let metrics = metallb_rs::metrics::SpeakerMetrics::register(&registry);
    let mut c = cfg("a", lo(2), 0, Some("k"));
    c.rejected_metric = Some(metrics.gossip_rejected.clone());
    let (g, _view) = Gossip::start(c).await.unwrap();
    let sender = UdpSocket::bind((lo(6), 0)).await.unwrap();
    sender.send_to(b"x", g.local_addr()).await.unwrap();
    sender.send_to(&[0xff; 64], g.local_addr()).await.unwrap();
    let count = |reason: &str| metrics.gossip_rejected.with_label_values(&[reason]).get();
    let deadline = Instant::now() + EVENTUALLY;
    while g.rejected() < 2 {
        assert!(Instant::now() < deadline, "junk not rejected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(count("too_short") + count("bad_magic"), 2);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        text.contains("metallb_rs_speaker_gossip_rejected_total{reason=\"too_short\"} 1"),
        "{text}"
    );
    g.abort().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_speaker_with_another_secret_learns_that_it_is_not_heard() {
    use metallb_rs::speaker::gossip::Local;
    let mut nodes = cluster(&["b", "c"], Some("right")).await;
    let (odd, mut odd_view) = Gossip::start(cfg("a", lo(4), 0, Some("rotated")))
        .await
        .unwrap();
    let mut all: BTreeSet<SocketAddr> = nodes.iter().map(|n| n.gossip.local_addr()).collect();
    all.insert(odd.local_addr());
    let listed = names(&["a", "b", "c"]);
    for n in &nodes {
        n.gossip.set_peers(all.clone());
    }
    odd.set_peers(all.clone());
    odd.set_local(Local {
        expected: listed.clone(),
        trusts_gossip: false,
    });
    // Before b and c say they elect from their gossip, "a" is told nothing.
    for n in &mut nodes {
        n.gossip.set_local(Local {
            expected: listed.clone(),
            trusts_gossip: false,
        });
        wait_for(&mut n.view, EVENTUALLY, "b, c alive", |v| {
            v.alive == names(&["b", "c"])
        })
        .await;
    }
    // b's report of c (and c's of b): heard, "a" not.
    wait_for(&mut nodes[0].view, EVENTUALLY, "c's report at b", |v| {
        v.reports
            .get("c")
            .is_some_and(|r| r.hears.hears("b") == Some(true) && r.hears.hears("a") == Some(false))
    })
    .await;
    assert!(odd.rejected() > 0, "the other secret's heartbeats arrive");
    assert!(odd_view.borrow_and_update().unheard_by.is_empty());
    for n in &nodes {
        n.gossip.set_local(Local {
            expected: listed.clone(),
            trusts_gossip: true,
        });
    }
    wait_for(
        &mut odd_view,
        EVENTUALLY,
        "a learns b and c do not hear it",
        |v| v.unheard_by == names(&["b", "c"]) && v.alive == names(&["a"]),
    )
    .await;
    // Once they stop saying so (here: they stop), it forgets within dead_after.
    for n in nodes {
        n.gossip.abort().await;
    }
    wait_for(&mut odd_view, EVENTUALLY, "claims expire", |v| {
        v.unheard_by.is_empty()
    })
    .await;
}
