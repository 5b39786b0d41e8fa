//! Layer 2 announcer end to end, on a real Linux bridge: each test builds its own switch
//! namespace with a bridge and host namespaces `a`, `b` (nodes running the [`Announcer`]
//! in-process, on a thread that entered the namespace) and `c` (the client), checks answers
//! with the real `arping` (Habets) and `ndisc6` and with the crate's probe, and removes
//! everything on drop.
//!
//! Needs root (CAP_NET_ADMIN + CAP_NET_RAW). Interface addresses come from 192.0.2.0/24, service
//! IPs from 203.0.113.0/24 and 2001:db8::/32. Namespace names start with `l2a<pid>t<n>-`.

#[path = "common/probe.rs"]
mod probe;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use metallb_rs::l2::announcer::Announcer;
use metallb_rs::l2::packet::{ArpFrame, MacAddr};
use metallb_rs::l2::sys;
use metallb_rs::metrics::Layer2Metrics;
use probe::{GratuitousKind, GratuitousObservation, ProbeSocket};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Serialises the timing-sensitive tests (gratuitous spacing, request rate) against each other.
static TIMING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn timing_lock() -> std::sync::MutexGuard<'static, ()> {
    TIMING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const VIP4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

fn vip6() -> Ipv6Addr {
    "2001:db8:ff::10".parse().unwrap()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// These tests are `#[ignore]`d for `cargo test` and run by `make test` (as root, in CI):
/// fail loudly rather than pass vacuously when run without root.
macro_rules! require_root {
    () => {
        assert!(
            is_root(),
            "layer 2 announcer tests need root (network namespaces)"
        );
    };
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"))
}

fn must(cmd: &str, args: &[&str]) {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bridge in its own namespace plus host namespaces `a`, `b`, `c`, each with `eth0` on the
/// bridge, MAC `02:00:00:<test>:00:<n>`, address `192.0.2.<n>/24` and no IPv6 DAD delay.
struct Topo {
    prefix: String,
    tag: usize,
    pid: u32,
    hosts: Vec<char>,
}

impl Topo {
    fn new() -> Topo {
        let tag = SEQ.fetch_add(1, Ordering::SeqCst) + 1;
        let pid = std::process::id();
        let prefix = format!("l2a{pid}t{tag}-");
        let t = Topo {
            prefix,
            tag,
            pid,
            hosts: vec!['a', 'b', 'c'],
        };
        let sw = t.ns('s');
        must("ip", &["netns", "add", &sw]);
        t.exec_ok('s', &["ip", "link", "add", "br0", "type", "bridge"]);
        t.exec_ok('s', &["ip", "link", "set", "br0", "up"]);
        for (n, h) in t.hosts.clone().into_iter().enumerate() {
            let n = n + 1;
            let ns = t.ns(h);
            must("ip", &["netns", "add", &ns]);
            t.exec_ok(h, &["ip", "link", "set", "lo", "up"]);
            t.no_dad(h);
            let (v, p) = (t.root_name(h, 'v'), t.root_name(h, 'p'));
            must(
                "ip",
                &["link", "add", &v, "type", "veth", "peer", "name", &p],
            );
            must("ip", &["link", "set", &v, "netns", &ns]);
            must("ip", &["link", "set", &p, "netns", &sw]);
            t.exec_ok('s', &["ip", "link", "set", &p, "master", "br0", "up"]);
            t.exec_ok(h, &["ip", "link", "set", &v, "name", "eth0"]);
            t.exec_ok(
                h,
                &[
                    "ip",
                    "link",
                    "set",
                    "eth0",
                    "address",
                    &t.mac(h, 0).to_string(),
                ],
            );
            t.exec_ok(
                h,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("192.0.2.{n}/24"),
                    "dev",
                    "eth0",
                ],
            );
            t.exec_ok(h, &["ip", "link", "set", "eth0", "up"]);
        }
        t
    }

    /// Namespace name of host `h` (`s` = switch).
    fn ns(&self, h: char) -> String {
        format!("{}{h}", self.prefix)
    }

    /// A short unique interface name in the root namespace (IFNAMSIZ = 16).
    fn root_name(&self, h: char, side: char) -> String {
        format!("l2{}{}{h}{side}", self.pid % 100_000, self.tag)
    }

    /// MAC of interface `ifn` of host `h`.
    fn mac(&self, h: char, ifn: u8) -> MacAddr {
        let n = match h {
            'a' => 1,
            'b' => 2,
            'c' => 3,
            _ => 9,
        };
        MacAddr([0x02, ifn, 0, self.tag as u8, 0, n])
    }

    fn no_dad(&self, h: char) {
        self.exec_ok(
            h,
            &[
                "sh",
                "-c",
                "echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad; \
                 echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad",
            ],
        );
    }

    fn exec(&self, h: char, args: &[&str]) -> Output {
        let ns = self.ns(h);
        let mut full = vec!["netns", "exec", ns.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    fn exec_ok(&self, h: char, args: &[&str]) {
        let out = self.exec(h, args);
        assert!(
            out.status.success(),
            "in {h}: {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stdout(&self, h: char, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.exec(h, args).stdout).into_owned()
    }

    /// Runs `f` on a thread inside host `h`'s namespace.
    fn in_ns<R: Send + 'static>(&self, h: char, f: impl FnOnce() -> R + Send + 'static) -> R {
        self.spawn_in(h, f)
            .join()
            .expect("namespace thread panicked")
    }

    fn spawn_in<R: Send + 'static>(
        &self,
        h: char,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> JoinHandle<R> {
        let ns = self.ns(h);
        std::thread::spawn(move || {
            sys::enter_netns(&ns).expect("enter netns");
            f()
        })
    }

    /// Starts an [`Announcer`] in host `h`.
    fn node(&self, h: char) -> Node {
        let metrics = Layer2Metrics::unregistered();
        let m = metrics.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = self.spawn_in(h, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let a = Announcer::start(m).await.expect("announcer start");
                let (back_tx, back_rx) = tokio::sync::oneshot::channel::<Announcer>();
                if tx.send((a, back_tx)).is_err() {
                    return;
                }
                if let Ok(a) = back_rx.await {
                    a.shutdown().await;
                }
            });
        });
        let (announcer, back) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("announcer started");
        let node = Node {
            announcer: Some(announcer),
            back: Some(back),
            thread: Some(thread),
            metrics,
            mac: self.mac(h, 0),
        };
        node.wait_iface("eth0", true, true);
        node
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        for h in self.hosts.iter().copied().chain(['s']) {
            let _ = run("ip", &["netns", "del", &self.ns(h)]);
        }
        for h in self.hosts.clone() {
            for side in ['v', 'p'] {
                let _ = run("ip", &["link", "del", &self.root_name(h, side)]);
            }
        }
    }
}

/// An announcer running on its own thread in a node namespace; shut down on drop.
struct Node {
    announcer: Option<Announcer>,
    back: Option<tokio::sync::oneshot::Sender<Announcer>>,
    thread: Option<JoinHandle<()>>,
    metrics: Layer2Metrics,
    mac: MacAddr,
}

impl Node {
    fn ann(&self) -> &Announcer {
        self.announcer.as_ref().expect("running")
    }

    fn own(&self, ips: &[IpAddr]) {
        self.ann().set_owned(ips.iter().copied().collect());
    }

    /// Waits until `iface` is (or is not) served, with NDP if `ndp`. Returns the wait.
    fn wait_iface(&self, iface: &str, present: bool, ndp: bool) -> Duration {
        let start = Instant::now();
        loop {
            let list = if ndp {
                self.ann().ndp_interfaces()
            } else {
                self.ann().interfaces()
            };
            if list.iter().any(|i| i == iface) == present {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(8),
                "{iface} present={present} ndp={ndp}: still {list:?} after 8 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `ip` labels of the per-IP request counter series.
    fn ip_series(&self) -> Vec<String> {
        use prometheus::core::Collector as _;
        self.metrics
            .requests_received
            .collect()
            .iter()
            .flat_map(|f| f.get_metric().iter())
            .flat_map(|m| m.get_label().iter())
            .map(|l| l.value().to_string())
            .collect()
    }

    fn counter(&self, which: &str, label: &str) -> u64 {
        let vec = match which {
            "requests" => &self.metrics.requests_received,
            "responses" => &self.metrics.responses_sent,
            "gratuitous" => &self.metrics.gratuitous_sent,
            "dropped" => &self.metrics.dropped,
            _ => unreachable!(),
        };
        vec.with_label_values(&[label]).get()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let (Some(a), Some(back)) = (self.announcer.take(), self.back.take()) {
            let _ = back.send(a);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set(ips: &[IpAddr]) -> BTreeSet<IpAddr> {
    ips.iter().copied().collect()
}

/// MACs answering one request for `ip` from the client's `iface`.
fn resolve(t: &Topo, iface: &'static str, ip: IpAddr) -> Vec<MacAddr> {
    t.in_ns('c', move || {
        ProbeSocket::open(iface)
            .expect("probe")
            .resolve(ip, Duration::from_millis(300))
            .expect("resolve")
    })
}

fn igmp6(t: &Topo, h: char) -> String {
    t.stdout(h, &["cat", "/proc/net/igmp6"])
}

/// `ff02::1:ff00:10`, the solicited-node group of 2001:db8:ff::10, as /proc/net/igmp6 prints it.
const GROUP_10: &str = "ff0200000000000000000001ff000010";

#[test]
#[ignore = "requires root + netns; run by make test"]
fn answers_for_owned_ips_only_and_follows_ownership() {
    require_root!();
    let t = Topo::new();
    let a = t.node('a');
    let b = t.node('b');
    let (v4, v6) = (IpAddr::V4(VIP4), IpAddr::V6(vip6()));

    // Nobody owns anything yet.
    assert!(resolve(&t, "eth0", v4).is_empty());
    assert!(resolve(&t, "eth0", v6).is_empty());

    a.own(&[v4, v6]);
    assert_eq!(
        resolve(&t, "eth0", v4),
        vec![a.mac],
        "exactly one MAC (A) answers ARP"
    );
    assert_eq!(
        resolve(&t, "eth0", v6),
        vec![a.mac],
        "exactly one MAC (A) answers NS"
    );
    assert!(
        igmp6(&t, 'a').contains(GROUP_10),
        "A joined the solicited-node group"
    );
    assert!(!igmp6(&t, 'b').contains(GROUP_10));

    // A short rate probe: every request answered, only by A.
    let report = t.in_ns('c', || {
        probe::arp_probe_rate("eth0", &[VIP4], 500, Duration::from_millis(600)).expect("probe")
    });
    eprintln!("rate probe: {report:?}");
    assert!(report.sent >= 250, "{report:?}");
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.received, report.sent, "{report:?}");
    assert_eq!(
        report.replies_by_mac.keys().copied().collect::<Vec<_>>(),
        vec![a.mac]
    );

    // The real tools.
    let mac_a = a.mac.to_string();
    {
        assert!(have("arping"), "arping is missing (make deps installs it)");
        let out = t.stdout('c', &["arping", "-c", "3", "-i", "eth0", "203.0.113.10"]);
        eprintln!("arping:\n{out}");
        assert!(
            out.to_lowercase().contains(&mac_a),
            "arping sees A's MAC: {out}"
        );
        assert!(!out.to_lowercase().contains(&b.mac.to_string()));
    }
    {
        assert!(have("ndisc6"), "ndisc6 is missing (make deps installs it)");
        let out = t.stdout('c', &["ndisc6", "-n", "-r", "3", "2001:db8:ff::10", "eth0"]);
        eprintln!("ndisc6:\n{out}");
        let out = out.to_lowercase();
        assert!(out.contains("target link-layer address"), "{out}");
        assert!(out.contains(&mac_a), "ndisc6 sees A's MAC: {out}");
    }

    // Failover A -> B, watched from the client every 10 ms.
    let mac_b = b.mac;
    let watcher = t.spawn_in('c', move || {
        let started = Instant::now();
        let samples = probe::watch_owner(
            "eth0",
            IpAddr::V4(VIP4),
            Duration::from_millis(10),
            Duration::from_secs(5),
            |s| s.len() >= 5 && s.iter().rev().take(5).all(|x| x.macs == vec![mac_b]),
        )
        .expect("watch");
        (started, samples)
    });
    std::thread::sleep(Duration::from_millis(300));
    // Requests and responses counted per owned IP (read while A still owns them).
    let l4 = VIP4.to_string();
    let (a_req4, a_resp4) = (a.counter("requests", &l4), a.counter("responses", &l4));
    let a_resp6 = a.counter("responses", "2001:db8:ff::10");
    let moved_at = Instant::now();
    a.own(&[]);
    b.own(&[v4, v6]);
    let (started, samples) = watcher.join().expect("watcher");
    let moved = moved_at.duration_since(started);
    // A gave the IPs away: its per-IP series are gone, B's exist.
    assert!(
        !a.ip_series().contains(&v4.to_string()) && !a.ip_series().contains(&v6.to_string()),
        "A keeps series for IPs it no longer owns: {:?}",
        a.ip_series()
    );
    assert!(
        b.ip_series().contains(&v4.to_string()),
        "{:?}",
        b.ip_series()
    );
    let first_b = samples
        .iter()
        .find(|s| s.macs.contains(&mac_b))
        .expect("B answered");
    assert!(
        samples.iter().all(|s| s.macs.len() <= 1),
        "never two owners at once"
    );
    assert!(
        samples
            .iter()
            .filter(|s| s.at > moved + Duration::from_millis(5))
            .all(|s| !s.macs.contains(&a.mac)),
        "A silent after set_owned returned"
    );
    eprintln!(
        "failover: {} samples, moved at {moved:?}, first reply from B for the probe sent at {:?} (latency {:?})",
        samples.len(),
        first_b.at,
        first_b.latency
    );
    // How fast B takes over is a benchmark (BENCHMARKS.md, `cargo bench --bench speaker`), not
    // a threshold here: that B answers at all, and A and B never both, is what this asserts.
    assert_eq!(resolve(&t, "eth0", v4), vec![mac_b]);
    assert_eq!(resolve(&t, "eth0", v6), vec![mac_b]);
    assert!(!igmp6(&t, 'a').contains(GROUP_10), "A left the group");
    assert!(igmp6(&t, 'b').contains(GROUP_10), "B joined the group");

    let b_resp4 = b.counter("responses", &l4);
    // Removed everywhere: no answer at all.
    b.own(&[]);
    assert!(resolve(&t, "eth0", v4).is_empty());
    assert!(resolve(&t, "eth0", v6).is_empty());
    assert!(!igmp6(&t, 'b').contains(GROUP_10), "B left the group");
    {
        assert!(have("arping"), "arping is missing (make deps installs it)");
        let out = t.exec(
            'c',
            &["arping", "-c", "2", "-w", "1", "-i", "eth0", "203.0.113.10"],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(
            !text.contains(&mac_a) && !text.contains(&mac_b.to_string()),
            "{text}"
        );
    }

    // Metrics: requests and responses counted per owned IP, series gone with the IP.
    // (The owner watch was probing while these were read: no equality between the two.)
    assert!(a_req4 >= report.sent && a_resp4 >= report.sent);
    assert!(a_resp6 >= 1);
    assert!(b_resp4 >= 1);
    assert!(b.ip_series().is_empty(), "{:?}", b.ip_series());
    assert_eq!(b.counter("dropped", "truncated"), 0);
}

fn rounds(obs: &[GratuitousObservation], kind: GratuitousKind, mac: MacAddr) -> Vec<Duration> {
    assert!(obs.iter().all(|o| o.mac == mac), "announced MAC: {obs:?}");
    obs.iter()
        .filter(|o| o.kind == kind)
        .map(|o| o.at)
        .collect()
}

fn assert_spacing(times: &[Duration], what: &str) {
    for w in times.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(900) && gap <= Duration::from_millis(1600),
            "{what}: gap {gap:?} in {times:?}"
        );
    }
}

#[test]
#[ignore = "requires root + netns; run by make test"]
fn gratuitous_rounds_on_takeover_refresh_and_removal() {
    require_root!();
    let _serial = timing_lock();
    let t = Topo::new();
    let a = t.node('a');
    let (v4, v6) = (IpAddr::V4(VIP4), IpAddr::V6(vip6()));
    let removed = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 20));
    let refreshed = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 21));

    // Observers are open before the trigger; each watches one IP.
    let observe = |ip: IpAddr, secs: f64| {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = t.spawn_in('c', move || {
            let p = ProbeSocket::open("eth0").expect("probe");
            tx.send(()).expect("ready");
            p.observe_gratuitous(ip, Duration::from_secs_f64(secs))
                .expect("observe")
        });
        rx.recv().expect("observer ready");
        h
    };
    let o4 = observe(v4, 6.0);
    let o6 = observe(v6, 6.0);
    a.own(&[v4, v6]);
    let (obs4, obs6) = (o4.join().unwrap(), o6.join().unwrap());
    let req = rounds(&obs4, GratuitousKind::ArpRequest, a.mac);
    let rep = rounds(&obs4, GratuitousKind::ArpReply, a.mac);
    let na = rounds(&obs6, GratuitousKind::UnsolicitedNa, a.mac);
    eprintln!("gratuitous ARP requests at {req:?}\nreplies at {rep:?}\nunsolicited NA at {na:?}");
    assert_eq!(req.len(), 5, "{obs4:?}");
    assert_eq!(rep.len(), 5, "{obs4:?}");
    assert_eq!(na.len(), 5, "{obs6:?}");
    assert_spacing(&req, "arp requests");
    assert_spacing(&rep, "arp replies");
    assert_spacing(&na, "unsolicited NA");
    assert_eq!(
        a.counter("gratuitous", &VIP4.to_string()),
        10,
        "request + reply per round"
    );
    assert_eq!(a.counter("gratuitous", "2001:db8:ff::10"), 5);

    // `removed` stops with its ownership; `refreshed` gets its window extended by refresh().
    let o_removed = observe(removed, 4.0);
    let o_refreshed = observe(refreshed, 8.0);
    a.own(&[removed, refreshed]);
    std::thread::sleep(Duration::from_millis(1500));
    a.own(&[refreshed]);
    std::thread::sleep(Duration::from_millis(500));
    a.ann().refresh(&set(&[refreshed, removed]));
    let obs_removed = o_removed.join().unwrap();
    let obs_refreshed = o_refreshed.join().unwrap();
    let rm = rounds(&obs_removed, GratuitousKind::ArpRequest, a.mac);
    let rf = rounds(&obs_refreshed, GratuitousKind::ArpRequest, a.mac);
    eprintln!("removed at 1.5 s: rounds {rm:?}\nrefreshed at 2.0 s: rounds {rf:?}");
    assert_eq!(rm.len(), 2, "rounds at 0 and 1.1 s only: {rm:?}");
    assert_eq!(rf.len(), 7, "window extended to 7 s: {rf:?}");
    assert_spacing(&rf, "refreshed");
}

#[test]
#[ignore = "requires root + netns; run by make test"]
fn malformed_frames_are_counted_and_responder_keeps_answering() {
    require_root!();
    let t = Topo::new();
    let a = t.node('a');
    let (v4, v6) = (IpAddr::V4(VIP4), IpAddr::V6(vip6()));
    a.own(&[v4, v6]);
    assert_eq!(resolve(&t, "eth0", v4), vec![a.mac]);

    t.in_ns('c', move || {
        let p = ProbeSocket::open("eth0").expect("probe");
        // ARP with a hardware address length of 7.
        let mut bad_len = p.arp_request(VIP4).encode();
        bad_len[14 + 4] = 7;
        // Truncated ARP: the Ethernet header and 10 octets.
        let good = p.arp_request(VIP4).encode();
        let truncated = &good[..24];
        // NS with a broken checksum.
        let mut bad_sum = p.solicitation(vip6()).expect("ns").encode();
        bad_sum[14 + 40 + 2] ^= 0xff;
        for _ in 0..3 {
            p.send(&bad_len).expect("send");
            p.send(truncated).expect("send");
            p.send(&bad_sum).expect("send");
        }
        // Garbage with the ARP EtherType and random-looking bytes.
        let mut junk = ArpFrame::decode(&good).expect("own frame").encode();
        for (i, b) in junk.iter_mut().enumerate().skip(14) {
            *b = (i as u8).wrapping_mul(151);
        }
        p.send(&junk).expect("send");
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    while a.counter("dropped", "checksum") < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(a.counter("dropped", "arp_address_length"), 3);
    assert_eq!(a.counter("dropped", "checksum"), 3);
    eprintln!(
        "dropped: truncated={} arp_address_length={} checksum={}",
        a.counter("dropped", "truncated"),
        a.counter("dropped", "arp_address_length"),
        a.counter("dropped", "checksum")
    );
    // Still answering.
    assert_eq!(resolve(&t, "eth0", v4), vec![a.mac]);
    assert_eq!(resolve(&t, "eth0", v6), vec![a.mac]);
}

#[test]
#[ignore = "requires root + netns; run by make test"]
fn interfaces_added_removed_and_enslaved_follow_netlink() {
    require_root!();
    let t = Topo::new();
    let a = t.node('a');
    let (v4, v6) = (IpAddr::V4(VIP4), IpAddr::V6(vip6()));
    a.own(&[v4, v6]);

    // A new point-to-point veth between A and the client, added after start.
    let (x, y) = (t.root_name('x', 'v'), t.root_name('x', 'p'));
    must(
        "ip",
        &["link", "add", &x, "type", "veth", "peer", "name", &y],
    );
    must("ip", &["link", "set", &x, "netns", &t.ns('a')]);
    must("ip", &["link", "set", &y, "netns", &t.ns('c')]);
    let mac_a1 = t.mac('a', 1);
    t.exec_ok('a', &["ip", "link", "set", &x, "name", "eth1"]);
    t.exec_ok(
        'a',
        &["ip", "link", "set", "eth1", "address", &mac_a1.to_string()],
    );
    t.exec_ok('c', &["ip", "link", "set", &y, "name", "eth1"]);
    t.exec_ok('c', &["ip", "link", "set", "eth1", "up"]);
    let added = Instant::now();
    t.exec_ok('a', &["ip", "link", "set", "eth1", "up"]);
    let arp_wait = a.wait_iface("eth1", true, false);
    let ndp_wait = a.wait_iface("eth1", true, true);
    eprintln!(
        "eth1 served (ARP) {arp_wait:?} and (NDP) {ndp_wait:?} after link up ({:?} total)",
        added.elapsed()
    );
    assert!(
        arp_wait < Duration::from_secs(5),
        "netlink, not the 10 s rescan"
    );
    // No IPv4 address on either eth1: the probe asks from 0.0.0.0.
    assert_eq!(resolve(&t, "eth1", v4), vec![mac_a1]);
    assert_eq!(resolve(&t, "eth1", v6), vec![mac_a1]);
    assert!(
        t.stdout('a', &["cat", "/proc/net/igmp6"])
            .lines()
            .any(|l| l.contains("eth1") && l.contains(GROUP_10)),
        "groups joined on the new interface"
    );
    assert_eq!(resolve(&t, "eth0", v4), vec![a.mac], "eth0 still served");

    // Down: no longer served.
    t.exec_ok('a', &["ip", "link", "set", "eth1", "down"]);
    a.wait_iface("eth1", false, false);
    assert!(resolve(&t, "eth1", v4).is_empty());

    // Up again, then enslaved to a bridge: enslaved interfaces are not served.
    t.exec_ok('a', &["ip", "link", "set", "eth1", "up"]);
    a.wait_iface("eth1", true, false);
    t.exec_ok('a', &["ip", "link", "add", "br9", "type", "bridge"]);
    t.exec_ok('a', &["ip", "link", "set", "eth1", "master", "br9"]);
    a.wait_iface("eth1", false, false);

    // Deleted.
    t.exec_ok('a', &["ip", "link", "del", "eth1"]);
    a.wait_iface("eth1", false, false);
    assert_eq!(a.ann().interfaces(), vec!["eth0".to_string()]);
}

#[test]
#[ignore = "requires root + netns; run by make test"]
fn sustains_10k_arp_requests_per_second_for_1000_owned_ips() {
    require_root!();
    let _serial = timing_lock();
    let t = Topo::new();
    let a = t.node('a');
    let targets: Vec<Ipv4Addr> = (0..1000u32)
        .map(|i| {
            Ipv4Addr::from(
                u32::from(Ipv4Addr::new(203, 0, 113, 0)) + (i % 250) + (i / 250) * 0x10000,
            )
        })
        .collect();
    let owned: Vec<IpAddr> = targets.iter().map(|ip| IpAddr::V4(*ip)).collect();
    a.own(&owned);
    // Let the 1000 gratuitous windows pass their first round.
    std::thread::sleep(Duration::from_millis(200));
    let report = t.in_ns('c', move || {
        probe::arp_probe_rate("eth0", &targets, 10_000, Duration::from_secs(2)).expect("probe")
    });
    eprintln!(
        "10k/s x 1000 IPs: sent {} received {} lost {} unmatched {} p50 {:?} p99 {:?} max {:?} rate {}/s",
        report.sent,
        report.received,
        report.lost,
        report.unmatched,
        report.p50,
        report.p99,
        report.max,
        report.achieved_rate
    );
    assert!(report.sent >= 19_000, "{report:?}");
    assert_eq!(report.replies_by_mac.len(), 1);
    // Sanity bounds only: CI runs debug builds on shared cores, where the scheduler alone can
    // stall a thread for 100 ms; the release benchmark is where p99 < 1 ms is asserted.
    assert!(report.lost * 100 <= report.sent, "{report:?}");
    assert!(report.p99 < Duration::from_millis(500), "{report:?}");
}
