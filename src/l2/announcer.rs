//! The layer 2 announcer: answers ARP who-has and NDP Neighbor Solicitations for the service
//! IPs this node owns, and sends gratuitous ARP / unsolicited Neighbor Advertisements on
//! takeover (spec §6.2–§6.5).
//!
//! # Design
//!
//! * **AF_PACKET, one socket per interface and protocol.** Like mdlayher/arp (which MetalLB
//!   uses) we open a raw `AF_PACKET` socket bound to the interface index with protocol
//!   `ETH_P_ARP`, and another with `ETH_P_IPV6` for NDP (upstream used an ICMPv6 socket; we
//!   build the whole frame with [`crate::l2::packet`], so both paths are the same code shape and
//!   the IPv6 header is exactly what we want: hop limit 255, link-local source). Sockets are
//!   non-promiscuous; the NDP socket carries a BPF filter so only Neighbor Solicitations reach
//!   user space. Each socket is wrapped in a tokio [`AsyncFd`] and served by its own task.
//! * **NA source address.** Solicited NAs are sent from the target address itself (the service
//!   IP), as the Linux kernel does when it answers for its own addresses; unsolicited NAs are
//!   sent from the interface's link-local address. Upstream sent solicited NAs from the
//!   link-local address too; receivers' neighbour caches accept either (RFC 4861 §7.1.2 does
//!   not constrain the source), but tools that match the reply's scope to the target's, like
//!   `ndisc6`, discard a link-local-sourced answer for a global target.
//! * **Interfaces follow netlink.** A task listens on an rtnetlink socket subscribed to
//!   `RTMGRP_LINK | RTMGRP_IPV6_IFADDR`; any message triggers a rescan (link + address dump),
//!   and a slow safety rescan runs every 10 s. Eligibility (spec §6.2, same as upstream): up,
//!   not loopback, not enslaved (`IFLA_MASTER`), not `NOARP`, with a 6-octet MAC; ARP also needs
//!   `BROADCAST`; NDP needs a usable (not tentative) IPv6 link-local address, which is the NA
//!   source.
//! * **Owned set.** A `std::sync::RwLock<Arc<Owned>>` read without awaiting. A responder holds
//!   the read lock while it checks ownership *and* sends the reply (a non-blocking syscall), and
//!   [`Announcer::set_owned`] swaps the set under the write lock, so once `set_owned` returns no
//!   reply or gratuitous packet for a removed IP can still be sent. Per-IP counters are resolved
//!   once per `set_owned`, not per packet.
//! * **NDP multicast groups are refcounted correctly.** For every NDP interface the announcer
//!   keeps the set of solicited-node groups it has joined (via `IPV6_ADD_MEMBERSHIP` on an
//!   unbound UDP/IPv6 socket, which makes the kernel send MLD reports and program the NIC
//!   filter). The wanted groups are recomputed from the whole owned set on every change with a
//!   reference count per group (the number of owned IPs mapping to it, several IPs can share one
//!   group); a group is left exactly when its count drops to zero. This cannot drift, unlike
//!   MetalLB 0.12's `SetBalancer`, which incremented a refcount on every call and never left
//!   groups (spec §6.6).
//! * **Override flag.** Solicited NAs use Override=0 exactly as upstream (mdlayher/ndp reply
//!   in `internal/layer2/ndp.go`), so a client that already has a (possibly stale) cache entry
//!   only updates it on the unsolicited NA (O=1) sent on takeover. We keep O=0 for
//!   wire compatibility with MetalLB 0.9–0.12.
//! * **Gratuitous.** The schedule is the pure [`GratuitousSchedule`]; one task sleeps until its
//!   next wakeup (or a trigger), then sends one round per due IP on every interface: ARP request
//!   and reply (broadcast) for IPv4, unsolicited NA (S=0, O=1) to `ff02::1` for IPv6. An error
//!   on one interface is logged and the round continues on the others.
//!
//! Malformed frames are counted in `metallb_rs_layer2_dropped_frames_total{reason}` and
//! dropped; nothing coming from the network is unwrapped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use socket2::Socket;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::gratuitous::GratuitousSchedule;
use super::packet::{ArpFrame, ArpOperation, MacAddr, NdpFrame, solicited_node_multicast};
use super::sys::{self, IFF_BROADCAST, IFF_LOOPBACK, IFF_NOARP, IFF_UP, InterfaceInfo};
use crate::metrics::Layer2Metrics;

/// Safety-net rescan period (netlink is the primary mechanism).
const RESCAN_INTERVAL: Duration = Duration::from_secs(10);
/// Socket receive buffer of a responder: ~2 s of 10k requests/s worth of queued frames.
const RCVBUF: usize = 4 << 20;
/// IPs per gratuitous batch between two yields to the scheduler.
const GRATUITOUS_BATCH: usize = 16;
/// Receive buffer: enough for any non-jumbo frame; longer NS frames are truncated and then
/// rejected by the decoder (counted).
const RECV_BUF: usize = 9216;

/// Per-IP counters, resolved once per ownership change.
struct IpCounters {
    requests: IntCounter,
    responses: IntCounter,
    gratuitous: IntCounter,
}

impl IpCounters {
    fn new(m: &Layer2Metrics, ip: IpAddr) -> Arc<Self> {
        let l = ip.to_string();
        Arc::new(Self {
            requests: m.requests_received.with_label_values(&[&l]),
            responses: m.responses_sent.with_label_values(&[&l]),
            gratuitous: m.gratuitous_sent.with_label_values(&[&l]),
        })
    }
}

/// The owned IPs, split by family for O(1) lookups from the responders.
#[derive(Default)]
struct Owned {
    v4: HashMap<Ipv4Addr, Arc<IpCounters>>,
    v6: HashMap<Ipv6Addr, Arc<IpCounters>>,
}

impl Owned {
    fn build(ips: &BTreeSet<IpAddr>, prev: &Owned, m: &Layer2Metrics) -> Self {
        let mut o = Owned::default();
        for ip in ips {
            match ip {
                IpAddr::V4(v4) => {
                    let c = prev
                        .v4
                        .get(v4)
                        .cloned()
                        .unwrap_or_else(|| IpCounters::new(m, *ip));
                    o.v4.insert(*v4, c);
                }
                IpAddr::V6(v6) => {
                    let c = prev
                        .v6
                        .get(v6)
                        .cloned()
                        .unwrap_or_else(|| IpCounters::new(m, *ip));
                    o.v6.insert(*v6, c);
                }
            }
        }
        // IPs no longer owned lose their series (no unbounded label set over time).
        let gone = prev
            .v4
            .keys()
            .filter(|a| !o.v4.contains_key(a))
            .map(|a| IpAddr::V4(*a))
            .chain(
                prev.v6
                    .keys()
                    .filter(|a| !o.v6.contains_key(a))
                    .map(|a| IpAddr::V6(*a)),
            );
        for ip in gone {
            let l = ip.to_string();
            let _ = m.requests_received.remove_label_values(&[&l]);
            let _ = m.responses_sent.remove_label_values(&[&l]);
            let _ = m.gratuitous_sent.remove_label_values(&[&l]);
        }
        o
    }

    fn contains(&self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.v4.contains_key(v4),
            IpAddr::V6(v6) => self.v6.contains_key(v6),
        }
    }

    fn ips(&self) -> BTreeSet<IpAddr> {
        self.v4
            .keys()
            .map(|ip| IpAddr::V4(*ip))
            .chain(self.v6.keys().map(|ip| IpAddr::V6(*ip)))
            .collect()
    }
}

/// Solicited-node groups wanted for `owned`, with their reference counts (number of owned IPs
/// whose solicited-node address is the group).
pub(crate) fn solicited_groups<'a>(
    owned: impl IntoIterator<Item = &'a Ipv6Addr>,
) -> BTreeMap<Ipv6Addr, usize> {
    let mut groups = BTreeMap::new();
    for ip in owned {
        *groups.entry(solicited_node_multicast(*ip)).or_insert(0) += 1;
    }
    groups
}

/// The `(join, leave)` group changes taking `joined` to the groups with a non-zero count.
pub(crate) fn group_changes(
    joined: &BTreeSet<Ipv6Addr>,
    wanted: &BTreeMap<Ipv6Addr, usize>,
) -> (Vec<Ipv6Addr>, Vec<Ipv6Addr>) {
    let join = wanted
        .iter()
        .filter(|(g, n)| **n > 0 && !joined.contains(*g))
        .map(|(g, _)| *g)
        .collect();
    let leave = joined
        .iter()
        .filter(|g| wanted.get(*g).copied().unwrap_or(0) == 0)
        .copied()
        .collect();
    (join, leave)
}

/// What an interface should be served with; a change of any field recreates its responders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Eligible {
    pub(crate) index: u32,
    pub(crate) name: String,
    pub(crate) mac: MacAddr,
    pub(crate) arp: bool,
    pub(crate) ndp: Option<Ipv6Addr>,
}

/// Spec §6.2 eligibility (see the module documentation). `None`: not served at all.
pub(crate) fn eligible(i: &InterfaceInfo) -> Option<Eligible> {
    let mac = i.mac.filter(|m| !m.is_zero() && !m.is_multicast())?;
    if i.flags & IFF_UP == 0
        || i.flags & IFF_LOOPBACK != 0
        || i.flags & IFF_NOARP != 0
        || i.master.is_some()
    {
        return None;
    }
    let e = Eligible {
        index: i.index,
        name: i.name.clone(),
        mac,
        arp: i.flags & IFF_BROADCAST != 0,
        ndp: i.link_local(),
    };
    (e.arp || e.ndp.is_some()).then_some(e)
}

struct NdpIface {
    sock: Arc<AsyncFd<Socket>>,
    link_local: Ipv6Addr,
    membership: Socket,
    joined: Mutex<BTreeSet<Ipv6Addr>>,
}

struct Iface {
    want: Eligible,
    arp: Option<Arc<AsyncFd<Socket>>>,
    ndp: Option<NdpIface>,
    tasks: Vec<JoinHandle<()>>,
}

impl Iface {
    fn sync_groups(&self, wanted: &BTreeMap<Ipv6Addr, usize>) {
        let Some(ndp) = &self.ndp else { return };
        let mut joined = lock(&ndp.joined);
        let (join, leave) = group_changes(&joined, wanted);
        for g in leave {
            match ndp.membership.leave_multicast_v6(&g, self.want.index) {
                Ok(()) => {
                    joined.remove(&g);
                }
                Err(e) => {
                    tracing::warn!(iface = %self.want.name, group = %g, error = %e, "leave multicast group");
                    // The kernel no longer has it either if the device is gone.
                    joined.remove(&g);
                }
            }
        }
        for g in join {
            match ndp.membership.join_multicast_v6(&g, self.want.index) {
                Ok(()) => {
                    joined.insert(g);
                }
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
                    joined.insert(g);
                }
                Err(e) => {
                    tracing::warn!(iface = %self.want.name, group = %g, error = %e, "join multicast group");
                }
            }
        }
    }
}

impl Drop for Iface {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Shared {
    metrics: Layer2Metrics,
    owned: RwLock<Arc<Owned>>,
    ifaces: Mutex<BTreeMap<u32, Arc<Iface>>>,
    schedule: Mutex<GratuitousSchedule>,
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn owned(&self) -> std::sync::RwLockReadGuard<'_, Arc<Owned>> {
        self.owned.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn drop_frame(&self, reason: &str) {
        self.metrics.dropped.with_label_values(&[reason]).inc();
    }

    /// Lists the interfaces and adds/removes/recreates responders. Holds the interface lock
    /// throughout so a concurrent `set_owned` syncs groups either before or after (never
    /// missing a new interface).
    fn rescan(self: &Arc<Self>) {
        let list = match sys::list_interfaces() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "layer2: listing interfaces failed");
                return;
            }
        };
        let wanted: BTreeMap<u32, Eligible> = list
            .iter()
            .filter_map(eligible)
            .map(|e| (e.index, e))
            .collect();
        let mut ifaces = lock(&self.ifaces);
        ifaces.retain(|idx, i| {
            let keep = wanted.get(idx) == Some(&i.want);
            if !keep {
                tracing::info!(iface = %i.want.name, "layer2: stop serving interface");
                for t in &i.tasks {
                    t.abort();
                }
            }
            keep
        });
        for (idx, want) in wanted {
            if ifaces.contains_key(&idx) {
                continue;
            }
            match self.open_iface(want.clone()) {
                Ok(i) => {
                    tracing::info!(
                        iface = %want.name, arp = i.arp.is_some(), ndp = i.ndp.is_some(),
                        "layer2: serving interface"
                    );
                    ifaces.insert(idx, Arc::new(i));
                }
                Err(e) => {
                    tracing::warn!(iface = %want.name, error = %e, "layer2: cannot open responder");
                }
            }
        }
    }

    fn open_iface(self: &Arc<Self>, want: Eligible) -> io::Result<Iface> {
        let mut tasks = Vec::new();
        let arp = if want.arp {
            let s = sys::open_packet_socket(want.index, sys::ETH_P_ARP)?;
            let _ = sys::set_receive_buffer(&s, RCVBUF);
            s.set_nonblocking(true)?;
            let fd = Arc::new(sys::async_socket(s)?);
            tasks.push(tokio::spawn(arp_responder(
                Arc::clone(self),
                Arc::clone(&fd),
                want.mac,
            )));
            Some(fd)
        } else {
            None
        };
        let ndp = match want.ndp {
            Some(link_local) => {
                let s = sys::open_ndp_socket(want.index)?;
                let _ = sys::set_receive_buffer(&s, RCVBUF);
                s.set_nonblocking(true)?;
                let fd = Arc::new(sys::async_socket(s)?);
                tasks.push(tokio::spawn(ndp_responder(
                    Arc::clone(self),
                    Arc::clone(&fd),
                    want.mac,
                )));
                Some(NdpIface {
                    sock: fd,
                    link_local,
                    membership: sys::open_membership_socket()?,
                    joined: Mutex::new(BTreeSet::new()),
                })
            }
            None => None,
        };
        let iface = Iface {
            want,
            arp,
            ndp,
            tasks,
        };
        let owned = Arc::clone(&self.owned());
        iface.sync_groups(&solicited_groups(owned.v6.keys()));
        Ok(iface)
    }

    /// One gratuitous round for `ip` on every interface. Holds the owned read lock while
    /// sending so a concurrent removal cannot be overtaken.
    fn gratuitous_round(&self, ip: IpAddr, ifaces: &[Arc<Iface>]) {
        let owned = self.owned();
        let counters = match ip {
            IpAddr::V4(v4) => owned.v4.get(&v4),
            IpAddr::V6(v6) => owned.v6.get(&v6),
        };
        let Some(counters) = counters else { return };
        for i in ifaces {
            match ip {
                IpAddr::V4(v4) => {
                    let Some(sock) = &i.arp else { continue };
                    for op in [ArpOperation::Request, ArpOperation::Reply] {
                        let frame = ArpFrame::gratuitous(op, i.want.mac, v4).encode();
                        match send(sock, &frame) {
                            Ok(()) => counters.gratuitous.inc(),
                            Err(e) => tracing::warn!(
                                iface = %i.want.name, %ip, error = %e, "gratuitous arp failed"
                            ),
                        }
                    }
                }
                IpAddr::V6(v6) => {
                    let Some(ndp) = &i.ndp else { continue };
                    let frame = NdpFrame::unsolicited_advertisement(ndp.link_local, v6, i.want.mac)
                        .encode();
                    match send(&ndp.sock, &frame) {
                        Ok(()) => counters.gratuitous.inc(),
                        Err(e) => tracing::warn!(
                            iface = %i.want.name, %ip, error = %e, "unsolicited neighbor advertisement failed"
                        ),
                    }
                }
            }
        }
    }

    fn iface_snapshot(&self) -> Vec<Arc<Iface>> {
        lock(&self.ifaces).values().cloned().collect()
    }
}

fn send(sock: &AsyncFd<Socket>, frame: &[u8]) -> io::Result<()> {
    let n = sock.get_ref().send(frame)?;
    if n != frame.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short send"));
    }
    Ok(())
}

/// Reads frames from `sock` forever, calling `handle` for each.
async fn serve(sock: Arc<AsyncFd<Socket>>, mut handle: impl FnMut(&[u8])) {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let mut guard = match sock.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "layer2: responder socket failed");
                return;
            }
        };
        loop {
            match guard.try_io(|s| s.get_ref().read(&mut buf)) {
                Ok(Ok(n)) => handle(buf.get(..n).unwrap_or(&[])),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => {
                    // ENETDOWN and friends: the rescan will recreate or remove us.
                    tracing::debug!(error = %e, "layer2: receive failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
                Err(_would_block) => break,
            }
        }
    }
}

async fn arp_responder(shared: Arc<Shared>, sock: Arc<AsyncFd<Socket>>, mac: MacAddr) {
    let tx = Arc::clone(&sock);
    serve(sock, move |buf| {
        let frame = match ArpFrame::decode(buf) {
            Ok(f) => f,
            Err(e) => {
                if e.is_malformed() {
                    shared.drop_frame(e.reason());
                }
                return;
            }
        };
        if frame.arp.operation != ArpOperation::Request
            || !frame.is_addressed_to(mac)
            || frame.src == mac
            || frame.arp.is_gratuitous()
        {
            return;
        }
        let owned = shared.owned();
        let Some(c) = owned.v4.get(&frame.arp.target_ip) else {
            return;
        };
        c.requests.inc();
        match send(&tx, &frame.reply(mac).encode()) {
            Ok(()) => c.responses.inc(),
            Err(e) => tracing::debug!(error = %e, "arp reply failed"),
        }
    })
    .await;
}

async fn ndp_responder(shared: Arc<Shared>, sock: Arc<AsyncFd<Socket>>, mac: MacAddr) {
    let tx = Arc::clone(&sock);
    serve(sock, move |buf| {
        let frame = match NdpFrame::decode(buf) {
            Ok(f) => f,
            Err(e) => {
                if e.is_malformed() {
                    shared.drop_frame(e.reason());
                }
                return;
            }
        };
        let Some(ns) = frame.solicitation() else {
            return;
        };
        // Never answer DAD probes; MetalLB drops solicitations without a source LLA.
        if ns.source_lla.is_none()
            || frame.src == mac
            || (!frame.dst.is_multicast() && frame.dst != mac)
        {
            return;
        }
        let owned = shared.owned();
        let Some(c) = owned.v6.get(&ns.target) else {
            return;
        };
        c.requests.inc();
        // Source = the target itself, as Linux does for its own addresses (see module docs).
        let Some(reply) = frame.reply(ns.target, mac) else {
            return;
        };
        match send(&tx, &reply.encode()) {
            Ok(()) => c.responses.inc(),
            Err(e) => tracing::debug!(error = %e, "neighbor advertisement failed"),
        }
    })
    .await;
}

async fn monitor_links(shared: Arc<Shared>, mut mon: Option<AsyncFd<Socket>>) {
    let mut buf = vec![0u8; 1 << 16];
    let mut tick = tokio::time::interval(RESCAN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let mut failed = false;
        match &mon {
            Some(m) => {
                tokio::select! {
                    r = m.readable() => match r {
                        Ok(mut guard) => {
                            // Drain everything queued; any message means "rescan". ENOBUFS
                            // (lost notifications) is covered by the rescan too.
                            loop {
                                match guard.try_io(|s| s.get_ref().read(&mut buf)) {
                                    Ok(Ok(_)) => {}
                                    Ok(Err(e)) => {
                                        tracing::debug!(error = %e, "netlink monitor");
                                        break;
                                    }
                                    Err(_would_block) => break,
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "netlink monitor failed; rescanning every 10 s");
                            failed = true;
                        }
                    },
                    _ = tick.tick() => {}
                }
            }
            None => {
                tick.tick().await;
            }
        }
        if failed {
            mon = None;
        }
        shared.rescan();
    }
}

async fn gratuitous_loop(shared: Arc<Shared>) {
    loop {
        let wake = lock(&shared.schedule).next_wakeup();
        let notified = shared.wake.notified();
        match wake {
            Some(at) => {
                let at = tokio::time::Instant::from_std(at);
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => notified.await,
        }
        let due = lock(&shared.schedule).poll(Instant::now());
        if due.is_empty() {
            continue;
        }
        let ifaces = shared.iface_snapshot();
        for (n, ip) in due.into_iter().enumerate() {
            shared.gratuitous_round(ip, &ifaces);
            // Thousands of IPs taken over at once: let the responders (possibly on this
            // same thread) answer in between.
            if n % GRATUITOUS_BATCH == GRATUITOUS_BATCH - 1 {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// The layer 2 announcer of one speaker. See the module documentation.
pub struct Announcer {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer")
            .field("interfaces", &self.interfaces())
            .field("owned", &self.owned())
            .finish()
    }
}

impl Announcer {
    /// Opens responders on every eligible interface and follows link changes (rtnetlink, plus
    /// a 10 s safety rescan). Spawns tokio tasks on the current runtime; sockets are created in
    /// the calling thread's network namespace.
    pub async fn start(metrics: Layer2Metrics) -> anyhow::Result<Announcer> {
        let shared = Arc::new(Shared {
            metrics,
            owned: RwLock::new(Arc::new(Owned::default())),
            ifaces: Mutex::new(BTreeMap::new()),
            schedule: Mutex::new(GratuitousSchedule::new()),
            wake: Notify::new(),
        });
        // Subscribe before the first scan so no change between the two is missed.
        let mon = match sys::open_link_monitor().and_then(sys::async_socket) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "layer2: no netlink link monitor; rescanning every 10 s");
                None
            }
        };
        // Fail loudly if we cannot even list interfaces (no netlink at all).
        sys::list_interfaces().map_err(|e| anyhow::anyhow!("list interfaces: {e}"))?;
        shared.rescan();
        let tasks = vec![
            tokio::spawn(monitor_links(Arc::clone(&shared), mon)),
            tokio::spawn(gratuitous_loop(Arc::clone(&shared))),
        ];
        Ok(Announcer { shared, tasks })
    }

    /// Replaces the set of IPs this node answers for. New IPs start a gratuitous window
    /// immediately; removed IPs are not answered nor announced any more once this returns, and
    /// solicited-node groups no owned IP needs any more are left.
    pub fn set_owned(&self, ips: BTreeSet<IpAddr>) {
        let s = &self.shared;
        let new = {
            let mut w = s.owned.write().unwrap_or_else(PoisonError::into_inner);
            let new = Arc::new(Owned::build(&ips, &w, &s.metrics));
            let old = std::mem::replace(&mut *w, Arc::clone(&new));
            // Windows: cancel removed, open for added. Done under the write lock so the
            // gratuitous task never sees a removed IP as due-and-owned.
            let mut sched = lock(&s.schedule);
            sched.retain(|ip| new.contains(ip));
            let now = Instant::now();
            for ip in &ips {
                if !old.contains(ip) {
                    sched.trigger(*ip, now);
                }
            }
            new
        };
        drop(new);
        s.wake.notify_one();
        // Under the interface lock, from the owned set current at that point: concurrent
        // calls (or a rescan) apply memberships in a consistent order, the last one wins.
        let ifaces = lock(&s.ifaces);
        let owned = Arc::clone(&s.owned());
        let wanted = solicited_groups(owned.v6.keys());
        for i in ifaces.values() {
            i.sync_groups(&wanted);
        }
    }

    /// Re-triggers the gratuitous window of these IPs (those not owned are ignored), as MetalLB
    /// does on every re-confirmation of ownership.
    pub fn refresh(&self, ips: &BTreeSet<IpAddr>) {
        let s = &self.shared;
        {
            let owned = s.owned();
            let mut sched = lock(&s.schedule);
            let now = Instant::now();
            for ip in ips.iter().filter(|ip| owned.contains(ip)) {
                sched.trigger(*ip, now);
            }
        }
        s.wake.notify_one();
    }

    /// Names of the interfaces currently served (ARP and/or NDP), sorted by index.
    pub fn interfaces(&self) -> Vec<String> {
        lock(&self.shared.ifaces)
            .values()
            .map(|i| i.want.name.clone())
            .collect()
    }

    /// Names of the interfaces with an NDP responder.
    pub fn ndp_interfaces(&self) -> Vec<String> {
        lock(&self.shared.ifaces)
            .values()
            .filter(|i| i.ndp.is_some())
            .map(|i| i.want.name.clone())
            .collect()
    }

    /// The IPs currently owned.
    pub fn owned(&self) -> BTreeSet<IpAddr> {
        self.shared.owned().ips()
    }

    /// Forces an interface rescan now (normally driven by netlink).
    pub fn rescan(&self) {
        self.shared.rescan();
    }

    /// Stops all tasks and closes all sockets (multicast groups are left with them).
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        let ifaces = std::mem::take(&mut *lock(&self.shared.ifaces));
        for i in ifaces.values() {
            for t in &i.tasks {
                t.abort();
            }
        }
        drop(ifaces);
        // Give aborted responder tasks a chance to be dropped (releasing their sockets).
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(flags: u32) -> InterfaceInfo {
        InterfaceInfo {
            index: 2,
            name: "eth0".into(),
            flags,
            mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            master: None,
            ipv4: vec![],
            ipv6: vec![("fe80::1".parse().unwrap(), 0)],
        }
    }

    #[test]
    fn eligibility_follows_spec() {
        let up = IFF_UP | IFF_BROADCAST;
        let e = eligible(&info(up)).unwrap();
        assert!(e.arp);
        assert_eq!(e.ndp, Some("fe80::1".parse().unwrap()));
        assert_eq!(eligible(&info(IFF_BROADCAST)), None, "down");
        assert_eq!(eligible(&info(up | IFF_NOARP)), None, "noarp");
        assert_eq!(eligible(&info(up | IFF_LOOPBACK)), None, "loopback");
        let mut slave = info(up);
        slave.master = Some(7);
        assert_eq!(eligible(&slave), None, "enslaved");
        // No broadcast: NDP only.
        let e = eligible(&info(IFF_UP)).unwrap();
        assert!(!e.arp && e.ndp.is_some());
        // No broadcast, no link-local: nothing.
        let mut i = info(IFF_UP);
        i.ipv6.clear();
        assert_eq!(eligible(&i), None);
        // Tentative link-local: ARP only until DAD finishes.
        let mut i = info(up);
        i.ipv6 = vec![("fe80::1".parse().unwrap(), sys::IFA_F_TENTATIVE)];
        assert_eq!(eligible(&i).unwrap().ndp, None);
        // No MAC (e.g. tun).
        let mut i = info(up);
        i.mac = None;
        assert_eq!(eligible(&i), None);
    }

    #[test]
    fn groups_are_refcounted() {
        // Two addresses sharing the low 24 bits share a solicited-node group.
        let a: Ipv6Addr = "2001:db8::1:10".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1::1:10".parse().unwrap();
        let c: Ipv6Addr = "2001:db8::20".parse().unwrap();
        let g_ab = solicited_node_multicast(a);
        assert_eq!(g_ab, solicited_node_multicast(b));
        let wanted = solicited_groups([&a, &b, &c]);
        assert_eq!(wanted.get(&g_ab), Some(&2));
        let (join, leave) = group_changes(&BTreeSet::new(), &wanted);
        assert_eq!(join.len(), 2);
        assert!(leave.is_empty());
        let joined: BTreeSet<_> = join.into_iter().collect();
        // Drop a: group still needed by b.
        let (join, leave) = group_changes(&joined, &solicited_groups([&b, &c]));
        assert!(join.is_empty() && leave.is_empty());
        // Drop b too: left.
        let (join, leave) = group_changes(&joined, &solicited_groups([&c]));
        assert!(join.is_empty());
        assert_eq!(leave, vec![g_ab]);
        // Nothing owned: everything left.
        let (_, leave) = group_changes(&joined, &solicited_groups([]));
        assert_eq!(leave.len(), 2);
    }
}
