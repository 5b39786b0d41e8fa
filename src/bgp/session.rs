//! The I/O side of BGP: one tokio task per peer owning its TCP connection, driving the pure
//! [`fsm`] and [`advertise`] cores, and [`Sessions`], the set of
//! those tasks the speaker keeps in line with its config, its Node's labels and its routes.
//!
//! ```text
//!  Sessions::set_peers ──► spawn / Stop(Cease) per peer task
//!  Sessions::set_routes ─► watch<Option<Arc<RouteSet>>> ──► every peer task
//!
//!  peer task:  Fsm::process(now, input) ─► outputs
//!     inputs:  connect result, bytes read (codec::frame_len + decode), timers, commands, routes
//!     outputs: Connect (socket2: MD5, TTL, bind source-address) · Send ─► writer task
//!              Arm/Cancel timers · Established ─► full table + End-of-RIB · Down ─► metrics
//! ```
//!
//! Writes go through a separate writer task so a peer that stops reading (its TCP window
//! full) can never block the session loop: the hold timer still fires and closes the session.
//! Each write is bounded by [`WRITE_TIMEOUT`].
//!
//! As MetalLB (spec §7.1–§7.4): active connect only (never listens on 179), 10 s connect
//! timeout, TCP-MD5 from `password`, bind to `source-address` (an error naming the address
//! when it is not on this host), router ID from `router-id`, else the session's local IPv4
//! address, else the first IPv4 address of the interface holding the local IPv6 address, else
//! the CRC-32 of the node name (little-endian). Differences: `ebgp-multihop` sets the TTL to
//! 255 (MetalLB's native mode ignored it); on removal or shutdown the peer gets its routes
//! withdrawn and a Cease NOTIFICATION instead of a bare TCP close.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::bfd::session::{self as bfd, Bfd};
use crate::config::{BfdProfile, Peer};
use crate::metrics::BgpMetrics;

use super::advertise::{self, PeerParams, RouteSet};
use super::codec;
use super::fsm::{self, Down, Fsm, Input, Output, Timer};
use super::message::{AFI_IPV4, AFI_IPV6, Ctx, Message, SAFI_UNICAST, Update, code};

/// TCP connect timeout (MetalLB: 10 s for connect and OPEN together).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one socket write; a peer that reads nothing for this long is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping session waits for its withdrawals and Cease to be written.
pub const STOP_FLUSH: Duration = Duration::from_secs(2);

/// What a session needs besides the peer's config.
#[derive(Debug, Clone)]
pub struct Options {
    /// This node's name (for the router ID fallback).
    pub node_name: String,
    /// Advertise graceful restart with this restart time (seconds).
    pub graceful_restart: Option<u16>,
    /// Where a session reports a problem the config or the peer must fix (a source-address
    /// not on this host, a peer refusing our OPEN), once per distinct message and session.
    pub problems: Option<mpsc::UnboundedSender<String>>,
    /// A peer with a `bfd-profile` gets its routes only while its BFD session is Up.
    pub bfd_gates_announcements: bool,
}

/// The label MetalLB gives a peer's metrics: `ip:port`, `[v6]:port`.
pub fn peer_label(p: &Peer) -> String {
    SocketAddr::new(p.peer_address, p.port()).to_string()
}

enum Cmd {
    /// Withdraw everything, send Cease with this subcode, end the task.
    Stop(u8),
}

struct Handle {
    peer: Peer,
    cmd: mpsc::Sender<Cmd>,
    task: JoinHandle<()>,
}

/// The BGP sessions of this speaker.
pub struct Sessions {
    opts: Options,
    metrics: BgpMetrics,
    sessions: BTreeMap<String, Handle>,
    routes: watch::Sender<Option<Arc<RouteSet>>>,
    seed: u64,
    /// The BFD sessions of peers with a `bfd-profile`, and the profiles.
    bfd: Bfd,
    bfd_profiles: Vec<BfdProfile>,
}

impl Sessions {
    /// No sessions yet; routes are "not computed yet" until the first [`Self::set_routes`]
    /// (sessions that come up before it wait, so a restart never sends an empty table and
    /// End-of-RIB that would flush a router's stale routes).
    pub fn new(opts: Options, metrics: BgpMetrics) -> Self {
        let seed = std::process::id() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Sessions {
            opts,
            bfd: Bfd::new(metrics.bfd.clone()),
            metrics,
            sessions: BTreeMap::new(),
            routes: watch::channel(None).0,
            seed,
            bfd_profiles: Vec::new(),
        }
    }

    /// The `bfd-profiles` in force: running BFD sessions take changed parameters at once
    /// (with a Poll Sequence, the BGP session untouched). Call before [`Self::set_peers`].
    pub fn set_bfd_profiles(&mut self, profiles: &[BfdProfile]) {
        if self.bfd_profiles == profiles {
            return;
        }
        self.bfd_profiles = profiles.to_vec();
        let peers: Vec<Peer> = self.sessions.values().map(|h| h.peer.clone()).collect();
        self.bfd.set(&bfd::specs_for(&peers, &self.bfd_profiles));
    }

    /// The label of every session (configured peer) this speaker runs.
    pub fn peers(&self) -> Vec<String> {
        self.sessions.keys().cloned().collect()
    }

    /// Run exactly the sessions of `peers` (the config's peers selected for this node):
    /// new ones start, removed ones get Cease/Peer De-configured, changed ones are restarted
    /// with Cease/Other Configuration Change. Untouched sessions are left alone.
    pub fn set_peers(&mut self, peers: &[Peer]) {
        let mut wanted: BTreeMap<String, &Peer> = BTreeMap::new();
        for p in peers {
            let key = session_key(p);
            if wanted.insert(key.clone(), p).is_some() {
                warn!(peer = %key, "Two peers with the same address, port, ASN and source; using the last");
            }
        }
        let with_bfd: Vec<Peer> = wanted.values().map(|p| (*p).clone()).collect();
        self.bfd.set(&bfd::specs_for(&with_bfd, &self.bfd_profiles));
        let keys: Vec<String> = self.sessions.keys().cloned().collect();
        for key in keys {
            let subcode = match wanted.get(&key) {
                None => code::CEASE_PEER_DECONFIGURED,
                Some(p) if !self.sessions[&key].peer.effective_eq(p) => code::CEASE_CONFIG_CHANGE,
                Some(_) => continue,
            };
            if let Some(h) = self.sessions.remove(&key) {
                info!(peer = %peer_label(&h.peer), subcode, "Closing BGP session");
                stop(h, subcode);
            }
        }
        for (key, p) in wanted {
            if self.sessions.contains_key(&key) {
                continue;
            }
            info!(peer = %peer_label(p), asn = p.peer_asn, "Starting BGP session");
            let (cmd, cmd_rx) = mpsc::channel(4);
            self.seed = self
                .seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let bfd_up = p
                .bfd_profile
                .as_ref()
                .and_then(|_| self.bfd.subscribe(&bfd::key_of(p)));
            let task = tokio::spawn(run(
                p.clone(),
                self.opts.clone(),
                self.seed,
                cmd_rx,
                (self.routes.subscribe(), bfd_up),
                self.metrics.clone(),
            ));
            self.sessions.insert(
                key,
                Handle {
                    peer: p.clone(),
                    cmd,
                    task,
                },
            );
        }
    }

    /// What every session should announce (each sends only its delta).
    pub fn set_routes(&self, routes: RouteSet) {
        self.routes.send_if_modified(|cur| {
            if cur.as_deref() == Some(&routes) {
                return false;
            }
            *cur = Some(Arc::new(routes));
            true
        });
    }

    /// Withdraw everything and close every session with Cease/Administrative Shutdown,
    /// waiting at most `within` for them to finish.
    pub async fn shutdown(&mut self, within: Duration) {
        let handles: Vec<Handle> = std::mem::take(&mut self.sessions).into_values().collect();
        let mut tasks = Vec::new();
        for h in handles {
            let _ = h.cmd.try_send(Cmd::Stop(code::CEASE_ADMIN_SHUTDOWN));
            tasks.push(h.task);
        }
        let all = futures::future::join_all(tasks);
        if tokio::time::timeout(within, all).await.is_err() {
            warn!("BGP sessions did not close in time");
        }
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        for h in self.sessions.values() {
            h.task.abort();
        }
    }
}

fn session_key(p: &Peer) -> String {
    let src = p.source_address.map(|a| a.to_string()).unwrap_or_default();
    format!("{}/{}/{}", peer_label(p), p.my_asn, src)
}

/// Ask a session to stop and let it finish on its own (bounded by its flush timeout).
fn stop(h: Handle, subcode: u8) {
    if h.cmd.try_send(Cmd::Stop(subcode)).is_err() {
        h.task.abort();
    }
}

/// An open connection.
struct Conn {
    reader: OwnedReadHalf,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    /// Taken by [`Task::stop`] to wait for the final flush.
    writer_task: Option<JoinHandle<()>>,
    local: SocketAddr,
    buf: Vec<u8>,
}

type Connecting = Pin<Box<dyn Future<Output = Result<TcpStream, String>> + Send>>;

/// Everything one session task owns.
struct Task {
    peer: Peer,
    label: String,
    opts: Options,
    fsm: Fsm,
    metrics: BgpMetrics,
    conn: Option<Conn>,
    connecting: Option<Connecting>,
    timers: BTreeMap<Timer, Instant>,
    /// The session's parameters once Established.
    params: Option<PeerParams>,
    /// Initial table and End-of-RIB sent on this session.
    synced: bool,
    /// Adj-RIB-Out: what the peer holds from us (the desired set itself, shared with the
    /// other sessions, when the peer carries all of it).
    sent: Arc<RouteSet>,
    routes: watch::Receiver<Option<Arc<RouteSet>>>,
    /// Reached Established at least once since this process started (for the GR R bit).
    ever_up: bool,
    /// Problems already reported.
    reported: std::collections::BTreeSet<String>,
    /// A writer reported an error.
    write_failed: mpsc::UnboundedReceiver<()>,
    write_failed_tx: mpsc::UnboundedSender<()>,
    /// The peer's BFD session ("Up"), when it has a `bfd-profile`.
    bfd: Option<watch::Receiver<bool>>,
    bfd_up: bool,
}

async fn run(
    peer: Peer,
    opts: Options,
    seed: u64,
    mut cmd: mpsc::Receiver<Cmd>,
    (routes, mut bfd): (
        watch::Receiver<Option<Arc<RouteSet>>>,
        Option<watch::Receiver<bool>>,
    ),
    metrics: BgpMetrics,
) {
    let label = peer_label(&peer);
    metrics.session_up.with_label_values(&[&label]).set(0);
    metrics.updates.with_label_values(&[&label]);
    metrics
        .announced_prefixes
        .with_label_values(&[&label])
        .set(0);
    let (wtx, wrx) = mpsc::unbounded_channel();
    let mut t = Task {
        fsm: Fsm::new(fsm::Config {
            local_as: peer.my_asn,
            peer_as: peer.peer_asn,
            hold_time: u16::try_from(peer.hold_time_secs).unwrap_or(u16::MAX),
            keepalive: peer
                .keepalive_time_secs
                .map(|k| u16::try_from(k).unwrap_or(u16::MAX)),
            graceful_restart: opts.graceful_restart,
            seed,
        }),
        label,
        peer,
        opts,
        metrics,
        conn: None,
        connecting: None,
        timers: BTreeMap::new(),
        params: None,
        synced: false,
        sent: Arc::default(),
        routes,
        ever_up: false,
        reported: Default::default(),
        write_failed: wrx,
        write_failed_tx: wtx,
        bfd_up: bfd.as_mut().is_some_and(|b| *b.borrow_and_update()),
        bfd,
    };
    t.pending();
    t.feed(Input::Start).await;
    loop {
        let next_timer = t
            .timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(k, at)| (*k, *at));
        tokio::select! {
            c = cmd.recv() => {
                let subcode = match c {
                    Some(Cmd::Stop(s)) => s,
                    None => code::CEASE_ADMIN_SHUTDOWN,
                };
                t.stop(subcode).await;
                break;
            }
            r = t.routes.changed() => {
                if r.is_err() {
                    t.stop(code::CEASE_ADMIN_SHUTDOWN).await;
                    break;
                }
                t.pending();
                t.sync_routes();
            }
            res = poll_opt(&mut t.connecting) => {
                t.connecting = None;
                match res {
                    Ok(stream) => t.connected(stream).await,
                    Err(e) => {
                        warn!(peer = %t.label, error = %e, "BGP connect failed");
                        if e.starts_with("source-address") || e.contains("TCP-MD5 password is") {
                            t.problem(format!("BGP peer {}: {e}", t.label));
                        }
                        t.feed(Input::ConnectFailed).await;
                    }
                }
            }
            n = read_opt(&mut t.conn) => t.read(n).await,
            Some(up) = bfd_changed(&mut t.bfd) => t.bfd_changed(up).await,
            Some(()) = t.write_failed.recv() => {
                if t.conn.is_some() {
                    t.feed(Input::Closed).await;
                }
            }
            _ = sleep_opt(next_timer.map(|(_, at)| at)) => {
                if let Some((timer, _)) = next_timer {
                    t.timers.remove(&timer);
                    t.feed(Input::Fired(timer)).await;
                }
            }
        }
    }
    t.metrics.forget(&t.label);
}

/// The next value of the BFD "Up" channel (pending forever without BFD or once it closed).
async fn bfd_changed(rx: &mut Option<watch::Receiver<bool>>) -> Option<bool> {
    if let Some(r) = rx
        && r.changed().await.is_ok()
    {
        return Some(*r.borrow_and_update());
    }
    std::future::pending().await
}

async fn poll_opt(c: &mut Option<Connecting>) -> Result<TcpStream, String> {
    match c {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn read_opt(c: &mut Option<Conn>) -> std::io::Result<usize> {
    match c {
        Some(conn) => {
            if conn.buf.capacity() - conn.buf.len() < 4096 {
                conn.buf.reserve(16 * 1024);
            }
            conn.reader.read_buf(&mut conn.buf).await
        }
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Task {
    fn ctx(&self) -> Ctx {
        Ctx {
            four_octet_as: self.fsm.negotiated().is_none_or(|n| n.four_octet_as),
        }
    }

    /// BFD went Up (announce, if that waited for it) or Down (drop the session at once).
    async fn bfd_changed(&mut self, up: bool) {
        let was = std::mem::replace(&mut self.bfd_up, up);
        if up && !was {
            info!(peer = %self.label, "BFD up");
            self.sync_routes();
        } else if was && !up {
            warn!(peer = %self.label, "BFD down: closing the BGP session");
            self.feed(Input::BfdDown).await;
        }
    }

    /// Report a problem the user must fix, once per distinct message.
    fn problem(&mut self, msg: String) {
        if self.reported.insert(msg.clone())
            && let Some(tx) = &self.opts.problems
        {
            let _ = tx.send(msg);
        }
    }

    /// `metallb_bgp_pending_prefixes_total`: what this peer should hold.
    fn pending(&self) {
        let n = match (&*self.routes.borrow(), &self.params) {
            (Some(r), Some(p)) => advertise::for_peer(r, p).len(),
            (Some(r), None) => r
                .keys()
                .filter(|n| n.addr().is_ipv4() == self.peer.peer_address.is_ipv4())
                .count(),
            (None, _) => 0,
        };
        self.metrics
            .pending_prefixes
            .with_label_values(&[&self.label])
            .set(n as i64);
    }

    /// Feed the FSM and carry out what it says.
    async fn feed(&mut self, input: Input) {
        let outputs = self.fsm.process(std::time::Instant::now(), input);
        for o in outputs {
            self.output(o).await;
        }
    }

    async fn output(&mut self, o: Output) {
        match o {
            Output::Connect => {
                let peer = self.peer.clone();
                self.connecting = Some(Box::pin(async move { connect(&peer).await }));
            }
            Output::Send(m) => self.send(&m),
            Output::Close => self.close(),
            Output::Arm(timer, d) => {
                self.timers.insert(timer, Instant::now() + d);
            }
            Output::Cancel(timer) => {
                self.timers.remove(&timer);
            }
            Output::Established(n) => {
                let local = self.conn.as_ref().map(|c| c.local);
                info!(
                    peer = %self.label,
                    peer_router_id = %n.peer_router_id,
                    hold_time = n.hold_time,
                    keepalive = n.keepalive,
                    ipv4 = n.ipv4,
                    ipv6 = n.ipv6,
                    four_octet_as = n.four_octet_as,
                    graceful_restart = n.peer_graceful_restart.is_some(),
                    "BGP session established"
                );
                self.ever_up = true;
                self.params = Some(PeerParams {
                    local_as: self.peer.my_asn,
                    peer_as: self.peer.peer_asn,
                    four_octet_as: n.four_octet_as,
                    next_hop_v4: match local {
                        Some(SocketAddr::V4(a)) if n.ipv4 => Some(*a.ip()),
                        _ => None,
                    },
                    next_hop_v6: match local {
                        Some(SocketAddr::V6(a)) if n.ipv6 => Some(*a.ip()),
                        _ => None,
                    },
                });
                self.metrics
                    .session_up
                    .with_label_values(&[&self.label])
                    .set(1);
                self.synced = false;
                self.sent = Arc::default();
                self.pending();
                self.sync_routes();
            }
            Output::Down(d) => {
                let was_up = self.params.take().is_some();
                self.synced = false;
                self.sent = Arc::default();
                self.metrics
                    .session_up
                    .with_label_values(&[&self.label])
                    .set(0);
                self.metrics
                    .announced_prefixes
                    .with_label_values(&[&self.label])
                    .set(0);
                if let Down::Received(n) = &d {
                    self.count_notification("received", n);
                }
                if was_up {
                    self.metrics
                        .flaps
                        .with_label_values(&[&self.label, d.reason()])
                        .inc();
                    warn!(peer = %self.label, reason = d.reason(), detail = ?d, "BGP session down");
                } else if !matches!(d, Down::Stopped) {
                    debug!(peer = %self.label, reason = d.reason(), detail = ?d, "BGP session attempt failed");
                    if let Down::Received(n) = &d {
                        warn!(peer = %self.label, code = n.code, subcode = n.subcode, "The peer refused the BGP session with a NOTIFICATION");
                        if n.code == code::OPEN {
                            self.problem(format!(
                                "BGP peer {} refused our OPEN: {} (check my-asn, peer-asn and router-id)",
                                self.label,
                                notification_text(n.code, n.subcode)
                            ));
                        }
                    }
                }
                self.pending();
            }
            Output::RouteRefresh { afi, safi } => {
                debug!(peer = %self.label, afi, safi, "Route refresh requested; re-sending");
                let routes = self.routes.borrow().clone();
                if self.synced
                    && let Some(routes) = routes
                {
                    self.sent = Arc::default();
                    self.push(&routes);
                }
            }
        }
    }

    /// `metallb_rs_bgp_notifications_total{peer,direction,code,subcode}` += 1.
    fn count_notification(&self, direction: &str, n: &super::message::Notification) {
        self.metrics
            .notifications
            .with_label_values(&[
                &self.label,
                direction,
                &n.code.to_string(),
                &n.subcode.to_string(),
            ])
            .inc();
    }

    /// Encode and queue a message.
    fn send(&mut self, m: &Message) {
        let ctx = self.ctx();
        let Some(conn) = &self.conn else {
            return;
        };
        let mut out = Vec::with_capacity(codec::encoded_len(m, ctx));
        codec::encode(m, ctx, &mut out);
        self.metrics
            .messages
            .with_label_values(&[&self.label, "sent", m.kind()])
            .inc();
        match m {
            Message::Update(_) => self.metrics.updates.with_label_values(&[&self.label]).inc(),
            Message::Notification(n) => {
                self.count_notification("sent", n);
                warn!(peer = %self.label, code = n.code, subcode = n.subcode, "Sending BGP NOTIFICATION");
            }
            _ => {}
        }
        let _ = conn.writer.send(out);
    }

    /// Close the connection (the writer flushes what is queued, bounded by WRITE_TIMEOUT).
    fn close(&mut self) {
        self.connecting = None;
        if let Some(conn) = self.conn.take() {
            // The writer task ends by itself once its queue is drained (or a write times out).
            drop(conn.writer);
            drop(conn.reader);
            drop(conn.writer_task);
        }
    }

    async fn connected(&mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(e) => {
                warn!(peer = %self.label, error = %e, "BGP socket has no local address");
                self.feed(Input::ConnectFailed).await;
                return;
            }
        };
        let (reader, writer) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let failed = self.write_failed_tx.clone();
        let writer_task = tokio::spawn(write_loop(writer, rx, failed));
        self.conn = Some(Conn {
            reader,
            writer: tx,
            writer_task: Some(writer_task),
            local,
            buf: Vec::with_capacity(16 * 1024),
        });
        let router_id = router_id(&self.peer, local.ip(), &self.opts.node_name);
        debug!(peer = %self.label, local = %local, router_id = %router_id, "BGP TCP connected");
        let restarting = self.opts.graceful_restart.is_some() && !self.ever_up;
        self.feed(Input::Connected {
            router_id,
            restarting,
        })
        .await;
    }

    async fn read(&mut self, n: std::io::Result<usize>) {
        match n {
            Ok(0) | Err(_) => {
                if let Err(e) = &n {
                    debug!(peer = %self.label, error = %e, "BGP read failed");
                }
                self.feed(Input::Closed).await;
            }
            Ok(_) => loop {
                let Some(conn) = self.conn.as_mut() else {
                    return;
                };
                let ctx = Ctx {
                    four_octet_as: self.fsm.negotiated().is_none_or(|n| n.four_octet_as),
                };
                let input = match codec::frame_len(&conn.buf) {
                    Ok(None) => return,
                    Ok(Some(len)) => {
                        let r = codec::decode(&conn.buf[..len], ctx);
                        conn.buf.drain(..len);
                        match r {
                            Ok(m) => {
                                self.metrics
                                    .messages
                                    .with_label_values(&[&self.label, "received", m.kind()])
                                    .inc();
                                Input::Received(m)
                            }
                            // RFC 7606: an UPDATE whose contents are malformed is
                            // treated as withdrawing what it carried, without a session
                            // reset. We use nothing a peer sends, so it is counted and
                            // dropped; the session (and our routes at the router) stay.
                            Err(e) if e.code == code::UPDATE && self.params.is_some() => {
                                warn!(peer = %self.label, error = %e, "Malformed UPDATE from the peer ignored (RFC 7606 treat-as-withdraw; we take no routes from peers)");
                                self.metrics
                                    .malformed
                                    .with_label_values(&[&self.label, e.what])
                                    .inc();
                                Input::Received(Message::Update(Update::default()))
                            }
                            Err(e) => self.malformed(e),
                        }
                    }
                    Err(e) => {
                        conn.buf.clear();
                        self.malformed(e)
                    }
                };
                let stop = matches!(input, Input::Malformed(_));
                self.feed(input).await;
                if stop {
                    return;
                }
            },
        }
    }

    fn malformed(&self, e: super::message::DecodeError) -> Input {
        warn!(peer = %self.label, error = %e, "Malformed BGP message");
        self.metrics
            .malformed
            .with_label_values(&[&self.label, e.what])
            .inc();
        Input::Malformed(e)
    }

    /// Send the initial table (then End-of-RIB) or the delta since the last sync.
    fn sync_routes(&mut self) {
        let bfd_wait = self.opts.bfd_gates_announcements && self.bfd.is_some() && !self.bfd_up;
        if self.params.is_none() || bfd_wait {
            return;
        }
        let Some(routes) = self.routes.borrow().clone() else {
            return;
        };
        self.push(&routes);
        if !self.synced {
            self.synced = true;
            let (v4, v6) = self
                .fsm
                .negotiated()
                .map_or((false, false), |n| (n.ipv4, n.ipv6));
            if v4 {
                self.send(&Message::Update(Update::end_of_rib(AFI_IPV4, SAFI_UNICAST)));
            }
            if v6 {
                self.send(&Message::Update(Update::end_of_rib(AFI_IPV6, SAFI_UNICAST)));
            }
            // The initial table's encoding buffers go once the writer has sent them.
            crate::sys::release_free_memory_soon();
        }
    }

    /// Send what takes the peer from `self.sent` to `desired`.
    fn push(&mut self, desired: &Arc<RouteSet>) {
        let Some(p) = self.params else {
            return;
        };
        // With 10,000 routes a copy per peer is megabytes; share it when nothing is filtered.
        let target = if desired.keys().all(|n| p.carries(n)) {
            desired.clone()
        } else {
            Arc::new(advertise::for_peer(desired, &p))
        };
        for u in advertise::updates(&self.sent, &target, &p) {
            self.send(&Message::Update(u));
        }
        self.metrics
            .announced_prefixes
            .with_label_values(&[&self.label])
            .set(target.len() as i64);
        self.sent = target;
    }

    /// Withdraw what the peer holds, send Cease, flush (bounded), close.
    async fn stop(&mut self, subcode: u8) {
        if self.params.is_some() && !self.sent.is_empty() {
            self.push(&Arc::default());
        }
        let writer = self.conn.as_mut().and_then(|c| c.writer_task.take());
        self.feed(Input::Stop { subcode }).await;
        if let Some(task) = writer {
            let abort = task.abort_handle();
            if tokio::time::timeout(STOP_FLUSH, task).await.is_err() {
                abort.abort();
            }
        }
        self.metrics
            .session_up
            .with_label_values(&[&self.label])
            .set(0);
    }
}

/// Write queued messages in order; report a failure (or a write stuck for WRITE_TIMEOUT).
async fn write_loop(
    mut w: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    failed: mpsc::UnboundedSender<()>,
) {
    while let Some(first) = rx.recv().await {
        // Coalesce what is already queued into one write.
        let mut buf = first;
        while buf.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(error = %e, "BGP write failed");
                let _ = failed.send(());
                return;
            }
            Err(_) => {
                debug!("BGP write timed out");
                let _ = failed.send(());
                return;
            }
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, w.shutdown()).await;
}

/// A NOTIFICATION's code and subcode in words (RFC 4271 §4.5, RFC 4486, RFC 5492).
pub fn notification_text(c: u8, sub: u8) -> String {
    let what = match (c, sub) {
        (code::OPEN, code::OPEN_UNSUPPORTED_VERSION) => "Unsupported Version Number",
        (code::OPEN, code::OPEN_BAD_PEER_AS) => "Bad Peer AS",
        (code::OPEN, code::OPEN_BAD_BGP_ID) => "Bad BGP Identifier",
        (code::OPEN, code::OPEN_UNSUPPORTED_PARAM) => "Unsupported Optional Parameter",
        (code::OPEN, code::OPEN_UNACCEPTABLE_HOLD_TIME) => "Unacceptable Hold Time",
        (code::OPEN, code::OPEN_UNSUPPORTED_CAPABILITY) => "Unsupported Capability",
        (code::OPEN, _) => "OPEN Message Error",
        (code::HEADER, _) => "Message Header Error",
        (code::UPDATE, _) => "UPDATE Message Error",
        (code::HOLD_TIMER_EXPIRED, _) => "Hold Timer Expired",
        (code::FSM, _) => "Finite State Machine Error",
        (code::CEASE, code::CEASE_ADMIN_SHUTDOWN) => "Cease: Administrative Shutdown",
        (code::CEASE, code::CEASE_PEER_DECONFIGURED) => "Cease: Peer De-configured",
        (code::CEASE, code::CEASE_ADMIN_RESET) => "Cease: Administrative Reset",
        (code::CEASE, code::CEASE_CONNECTION_REJECTED) => "Cease: Connection Rejected",
        (code::CEASE, code::CEASE_CONFIG_CHANGE) => "Cease: Other Configuration Change",
        (code::CEASE, code::CEASE_BFD_DOWN) => "Cease: BFD Down",
        (code::CEASE, _) => "Cease",
        _ => "unknown error",
    };
    format!("{what} ({c}/{sub})")
}

/// Open the TCP connection to a peer as MetalLB does (spec §7.1 step 2).
async fn connect(peer: &Peer) -> Result<TcpStream, String> {
    let remote = SocketAddr::new(peer.peer_address, peer.port());
    let sock = Socket::new(
        Domain::for_address(remote),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(|e| format!("creating the socket: {e}"))?;
    sock.set_cloexec(true)
        .and_then(|()| sock.set_nonblocking(true))
        .map_err(|e| format!("setting up the socket: {e}"))?;
    if let Some(pw) = peer.password.as_deref().filter(|p| !p.is_empty()) {
        crate::sys::set_tcp_md5(&sock, peer.peer_address, pw.as_bytes())
            .map_err(|e| format!("setting the TCP-MD5 password: {e}"))?;
    }
    if peer.ebgp_multihop {
        let r = match remote {
            SocketAddr::V4(_) => sock.set_ttl_v4(255),
            SocketAddr::V6(_) => sock.set_unicast_hops_v6(255),
        };
        r.map_err(|e| format!("setting the TTL for ebgp-multihop: {e}"))?;
    }
    if let Some(src) = peer.source_address {
        if src.is_ipv4() != remote.is_ipv4() {
            return Err(format!(
                "source-address {src} is not of the peer address's family"
            ));
        }
        sock.bind(&SocketAddr::new(src, 0).into()).map_err(|e| {
            if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
                format!("source-address {src} doesn't exist on this host")
            } else {
                format!("binding to source-address {src}: {e}")
            }
        })?;
    }
    let std_stream: std::net::TcpStream = sock.into();
    let socket = tokio::net::TcpSocket::from_std_stream(std_stream);
    match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(remote)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("connecting to {remote}: {e}")),
        Err(_) => Err(format!(
            "connecting to {remote}: no answer within {}s{}",
            CONNECT_TIMEOUT.as_secs(),
            if peer.password.is_some() {
                " (a TCP-MD5 password mismatch looks like this: the peer drops unsigned or wrongly signed segments)"
            } else {
                ""
            }
        )),
    }
}

/// The BGP identifier for a session (spec §7.4).
fn router_id(peer: &Peer, local: IpAddr, node: &str) -> Ipv4Addr {
    if let Some(IpAddr::V4(id)) = peer.router_id {
        return id;
    }
    match local {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => crate::sys::list_interfaces()
            .ok()
            .and_then(|ifs| {
                ifs.into_iter()
                    .find(|i| i.ipv6.iter().any(|(v6, _)| *v6 == a))
                    .and_then(|i| i.ipv4.first().copied())
            })
            .unwrap_or_else(|| node_router_id(node)),
    }
}

/// MetalLB's last-resort router ID: the CRC-32 (IEEE) of the node name, little-endian.
pub fn node_router_id(node: &str) -> Ipv4Addr {
    Ipv4Addr::from(crc32fast::hash(node.as_bytes()).to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_labels_are_metallb_s() {
        let mut p = Peer {
            my_asn: 64500,
            peer_asn: 64501,
            peer_address: "198.51.100.2".parse().unwrap(),
            peer_port: None,
            hold_time_secs: 90,
            keepalive_time_secs: None,
            router_id: None,
            source_address: None,
            node_selectors: vec![],
            password: None,
            bfd_profile: None,
            ebgp_multihop: false,
        };
        assert_eq!(peer_label(&p), "198.51.100.2:179");
        p.peer_address = "2001:db8:1::2".parse().unwrap();
        p.peer_port = Some(1179);
        assert_eq!(peer_label(&p), "[2001:db8:1::2]:1179");
    }

    fn peer(addr: &str, port: u16) -> Peer {
        Peer {
            my_asn: 64500,
            peer_asn: 64501,
            peer_address: addr.parse().unwrap(),
            peer_port: Some(port),
            hold_time_secs: 90,
            keepalive_time_secs: None,
            router_id: None,
            source_address: None,
            node_selectors: vec![],
            password: None,
            bfd_profile: None,
            ebgp_multihop: false,
        }
    }

    #[tokio::test]
    async fn a_source_address_not_on_this_host_is_named_in_the_error() {
        let mut p = peer("127.0.0.1", 1);
        p.source_address = Some("192.0.2.77".parse().unwrap());
        let err = connect(&p).await.expect_err("must not bind");
        assert!(
            err.contains("source-address 192.0.2.77 doesn't exist on this host"),
            "{err}"
        );
    }

    /// Read one whole message from a raw peer socket.
    async fn read_msg(s: &mut TcpStream, buf: &mut Vec<u8>) -> Message {
        loop {
            if let Some(n) = codec::frame_len(buf).expect("valid framing from the speaker") {
                let m = codec::decode(
                    &buf[..n],
                    Ctx {
                        four_octet_as: true,
                    },
                )
                .expect("decodes");
                buf.drain(..n);
                return m;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
                .await
                .expect("the speaker sends within 10 s")
                .expect("read");
            assert!(n > 0, "the speaker closed early");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// A raw TCP peer on loopback: the session opens, the initial table and End-of-RIB
    /// arrive, a malformed UPDATE is counted and ignored (RFC 7606), a message with a broken
    /// marker is answered with NOTIFICATION 1/1 and counted, and stopping sends the
    /// withdrawal then Cease.
    #[tokio::test]
    async fn malformed_messages_get_the_rfc_notification_and_are_counted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let metrics = BgpMetrics::unregistered();
        let mut sessions = Sessions::new(
            Options {
                node_name: "n1".into(),
                graceful_restart: None,
                problems: None,
                bfd_gates_announcements: true,
            },
            metrics.clone(),
        );
        let routes = RouteSet::from([(
            "203.0.113.10/32".parse().unwrap(),
            advertise::RouteAttrs::default(),
        )]);
        sessions.set_routes(routes);
        sessions.set_peers(&[peer("127.0.0.1", port)]);
        let (mut s, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the speaker connects")
            .unwrap();
        let mut buf = Vec::new();
        let Message::Open(open) = read_msg(&mut s, &mut buf).await else {
            panic!("OPEN first");
        };
        assert_eq!((open.asn(), open.hold_time), (64500, 90));
        let mut out = Vec::new();
        let ours = Message::Open(super::super::message::Open {
            version: 4,
            my_as: 64501,
            hold_time: 90,
            router_id: "192.0.2.1".parse().unwrap(),
            capabilities: vec![
                super::super::message::Capability::Multiprotocol { afi: 1, safi: 1 },
                super::super::message::Capability::FourOctetAs(64501),
            ],
        });
        codec::encode(&ours, Ctx::default(), &mut out);
        codec::encode(&Message::Keepalive, Ctx::default(), &mut out);
        s.write_all(&out).await.unwrap();
        assert_eq!(read_msg(&mut s, &mut buf).await, Message::Keepalive);
        let Message::Update(u) = read_msg(&mut s, &mut buf).await else {
            panic!("the table");
        };
        assert_eq!(u.nlri, vec!["203.0.113.10/32".parse().unwrap()]);
        assert_eq!(
            read_msg(&mut s, &mut buf).await,
            Message::Update(Update::end_of_rib(AFI_IPV4, SAFI_UNICAST))
        );
        let label = format!("127.0.0.1:{port}");
        assert_eq!(metrics.session_up.with_label_values(&[&label]).get(), 1);
        // An UPDATE with ORIGIN 7: counted, ignored (RFC 7606), the session stays.
        let mut upd = vec![0xFFu8; 16];
        upd.extend_from_slice(&[0, 27, 2, 0, 0, 0, 4, 0x40, 1, 1, 7]);
        s.write_all(&upd).await.unwrap();
        // A KEEPALIVE whose marker is broken.
        let mut bad = vec![0xFFu8; 19];
        bad[3] = 0;
        bad[16..19].copy_from_slice(&[0, 19, 4]);
        s.write_all(&bad).await.unwrap();
        let Message::Notification(n) = read_msg(&mut s, &mut buf).await else {
            panic!("a NOTIFICATION");
        };
        assert_eq!(
            (n.code, n.subcode),
            (code::HEADER, code::HEADER_NOT_SYNCHRONIZED)
        );
        assert_eq!(
            metrics
                .malformed
                .with_label_values(&[&label, "bad marker"])
                .get(),
            1
        );
        // The speaker closes the connection and will reconnect: accept it, open, stop.
        let (mut s, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the speaker reconnects after its back-off")
            .unwrap();
        let mut buf = Vec::new();
        assert!(matches!(read_msg(&mut s, &mut buf).await, Message::Open(_)));
        s.write_all(&out).await.unwrap();
        assert_eq!(read_msg(&mut s, &mut buf).await, Message::Keepalive);
        assert!(matches!(
            read_msg(&mut s, &mut buf).await,
            Message::Update(_)
        ));
        assert!(matches!(
            read_msg(&mut s, &mut buf).await,
            Message::Update(_)
        ));
        sessions.set_peers(&[]);
        let Message::Update(w) = read_msg(&mut s, &mut buf).await else {
            panic!("the withdrawal");
        };
        assert_eq!(w.withdrawn, vec!["203.0.113.10/32".parse().unwrap()]);
        let Message::Notification(n) = read_msg(&mut s, &mut buf).await else {
            panic!("Cease");
        };
        assert_eq!(
            (n.code, n.subcode),
            (code::CEASE, code::CEASE_PEER_DECONFIGURED)
        );
    }

    #[test]
    fn router_id_falls_back_to_the_crc32_of_the_node_name() {
        let crc = crc32fast::hash(b"node1");
        let id = node_router_id("node1");
        assert_eq!(u32::from_le_bytes(id.octets()), crc);
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }
}
