//! UDP driver of the speaker liveness protocol (I/O; the protocol itself, its trade-offs and
//! wire format are in [`super::liveness`]).
//!
//! ```text
//!   set_peers() ──(watch<BTreeSet<SocketAddr>>)──┐
//!   leave()     ──(oneshot)──────────────────────┤
//!                                                ▼
//!   UDP socket (ml-bindaddr:ml-bindport) ◄──► task ── owns liveness::Membership
//!         recv ─► on_datagram ─┐                 │    every interval:   encode ─► send to peers
//!                              └─► alive set ────┤    every interval/2: tick (expiry)
//!                                                ▼
//!                                  watch<LiveView>   (published only when it changes)
//! ```
//!
//! One task owns the socket and the [`Membership`]; the handle talks to it through channels.
//! Dropping the [`Gossip`] handle (or [`Gossip::abort`]) kills the task without a goodbye, like
//! `kill -9`: peers see this speaker dead after `dead_after`. [`Gossip::leave`] sends the
//! `LEAVING` heartbeat three times first, so peers drop it at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::liveness::{Change, MAX_DATAGRAM, Membership, Params, RejectReason, Report};

/// Copies of the `LEAVING` heartbeat sent by [`Gossip::leave`].
const LEAVE_COPIES: usize = 3;
/// Pause between two `LEAVING` copies (spreads them over a short loss burst).
const LEAVE_SPACING: Duration = Duration::from_millis(5);

/// Settings of the liveness driver. `Debug` redacts the secret.
#[derive(Clone)]
pub struct GossipConfig {
    /// This speaker's node name (`METALLB_NODE_NAME`).
    pub node_name: String,
    /// Address to bind and to be reached on (`ml-bindaddr:ml-bindport`); port 0 picks one.
    pub bind: SocketAddr,
    /// The memberlist secret (`METALLB_ML_SECRET_KEY`); `None` or empty: unauthenticated (the
    /// driver does not start the gossip without one, [`super::liveness::NO_SECRET_WARNING`]).
    pub secret: Option<String>,
    /// Heartbeat period.
    pub interval: Duration,
    /// Silence after which a peer is dead.
    pub dead_after: Duration,
    /// Counts refused datagrams by reason (`metallb_rs_speaker_gossip_rejected_total`).
    pub rejected_metric: Option<prometheus::IntCounterVec>,
}

impl std::fmt::Debug for GossipConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            node_name,
            bind,
            secret,
            interval,
            dead_after,
            rejected_metric: _,
        } = self;
        f.debug_struct("GossipConfig")
            .field("node_name", node_name)
            .field("bind", bind)
            .field("secret", &secret.as_ref().map(|_| "<redacted>"))
            .field("interval", interval)
            .field("dead_after", dead_after)
            .finish()
    }
}

impl Default for GossipConfig {
    fn default() -> Self {
        let p = Params::default();
        Self {
            node_name: String::new(),
            bind: SocketAddr::from(([0, 0, 0, 0], 7946)),
            secret: None,
            interval: p.interval,
            dead_after: p.dead_after,
            rejected_metric: None,
        }
    }
}

/// What the speaker knows about its peers' liveness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveView {
    /// Node names of the alive speakers, this one included.
    pub alive: BTreeSet<String>,
    /// Number of peer addresses heartbeats go to, this speaker's own address excluded.
    pub peers_known: usize,
    /// What each alive peer says it hears ([`super::liveness::heard_by_majority`]).
    pub reports: BTreeMap<String, Report>,
    /// Listed speakers that elect from their gossip and say they do not hear this one
    /// ([`Membership::unheard_by`]).
    pub unheard_by: BTreeSet<String>,
}

/// What this speaker tells its peers besides its liveness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Local {
    /// Speakers Kubernetes lists (node names).
    pub expected: BTreeSet<String>,
    /// This speaker elects from its gossip view.
    pub trusts_gossip: bool,
}

/// Handle on the running liveness task.
#[derive(Debug)]
pub struct Gossip {
    peers: watch::Sender<BTreeSet<SocketAddr>>,
    local_state: watch::Sender<Local>,
    leave: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    rejected: Arc<AtomicU64>,
    local: SocketAddr,
}

impl Gossip {
    /// Binds the UDP socket and spawns the task. The receiver sees the initial view (only this
    /// speaker alive) and then every change of it.
    pub async fn start(cfg: GossipConfig) -> anyhow::Result<(Gossip, watch::Receiver<LiveView>)> {
        let GossipConfig {
            node_name,
            bind,
            secret,
            interval,
            dead_after,
            rejected_metric,
        } = cfg;
        let params = Params {
            interval,
            dead_after,
            secret,
            ..Params::default()
        };
        let membership = Membership::new(node_name, incarnation(), params)
            .context("invalid speaker liveness settings")?;
        let socket =
            bind_socket(bind).with_context(|| format!("binding liveness socket {bind}"))?;
        let local = socket.local_addr()?;
        info!(
            %local,
            node = membership.node_name(),
            incarnation = membership.incarnation(),
            "Speaker liveness started"
        );
        let view = LiveView {
            alive: membership.alive(),
            peers_known: 0,
            reports: BTreeMap::new(),
            unheard_by: BTreeSet::new(),
        };
        let (view_tx, view_rx) = watch::channel(view);
        let (peers_tx, peers_rx) = watch::channel(BTreeSet::new());
        let (local_tx, local_rx) = watch::channel(Local::default());
        let (leave_tx, leave_rx) = oneshot::channel();
        let rejected = Arc::new(AtomicU64::new(0));
        let driver = Driver {
            socket,
            local,
            membership,
            view: view_tx,
            peers: peers_rx,
            local_state: local_rx,
            rejected: rejected.clone(),
            rejected_metric,
            warned: BTreeSet::new(),
        };
        let task = tokio::spawn(driver.run(leave_rx));
        Ok((
            Gossip {
                peers: peers_tx,
                local_state: local_tx,
                leave: Some(leave_tx),
                task: Some(task),
                rejected,
                local,
            },
            view_rx,
        ))
    }

    /// Replaces the peer addresses (speaker pod IP : bind port). This speaker's own address may
    /// be included; it is ignored.
    pub fn set_peers(&self, peers: BTreeSet<SocketAddr>) {
        self.peers.send_replace(peers);
    }

    /// Sets what the heartbeats say besides liveness: the listed speakers and whether this
    /// one elects from its gossip view.
    pub fn set_local(&self, local: Local) {
        self.local_state.send_if_modified(|cur| {
            let changed = *cur != local;
            *cur = local;
            changed
        });
    }

    /// Number of datagrams rejected so far (malformed, unauthenticated, replayed, …).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Graceful shutdown: sends the `LEAVING` heartbeat three times to all peers, then stops.
    pub async fn leave(mut self) {
        if let Some(tx) = self.leave.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Hard stop without `LEAVING` (what `kill -9` looks like to the peers); waits until the
    /// socket is closed. Dropping the handle does the same without waiting.
    pub async fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Gossip {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Start time in UNIX nanoseconds, strictly increasing within the process.
fn incarnation() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(1);
    let prev = LAST.fetch_max(now, Ordering::Relaxed);
    if prev >= now {
        // Same or earlier reading than a previous start in this process: go one past it.
        LAST.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        now
    }
}

/// The gossip socket, without `SO_REUSEADDR`: with it, any local process could bind the same
/// address and port (with the option too) and take the heartbeats. UDP has no TIME_WAIT, so a
/// restarted speaker rebinds at once without it.
fn bind_socket(bind: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    socket.bind(&bind.into())?;
    UdpSocket::from_std(socket.into())
}

struct Driver {
    socket: UdpSocket,
    local: SocketAddr,
    membership: Membership,
    view: watch::Sender<LiveView>,
    peers: watch::Receiver<BTreeSet<SocketAddr>>,
    local_state: watch::Receiver<Local>,
    rejected: Arc<AtomicU64>,
    rejected_metric: Option<prometheus::IntCounterVec>,
    /// Reject reasons already logged at warn level (later ones go to debug).
    warned: BTreeSet<&'static str>,
}

impl Driver {
    async fn run(mut self, mut leave: oneshot::Receiver<()>) {
        let interval = self.membership.params().interval;
        let mut send = tokio::time::interval(interval);
        send.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut expire = tokio::time::interval((interval / 2).max(Duration::from_millis(1)));
        expire.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // One byte more than the largest valid datagram, so oversized ones show as too long.
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        let mut peers_open = true;
        let mut local_open = true;
        loop {
            tokio::select! {
                res = self.socket.recv_from(&mut buf) => match res {
                    Ok((len, src)) => self.on_datagram(&buf[..len], src),
                    Err(error) => {
                        // E.g. ECONNREFUSED from an ICMP error; not fatal for a datagram socket.
                        debug!(%error, "Liveness receive failed");
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                },
                _ = send.tick() => {
                    let hb = self.membership.encode_heartbeat(false);
                    self.send_to_peers(&hb).await;
                }
                _ = expire.tick() => {
                    let changes = self.membership.tick(Instant::now().into_std());
                    self.apply(changes);
                }
                res = self.peers.changed(), if peers_open => {
                    if res.is_err() {
                        peers_open = false;
                        continue;
                    }
                    let peers = self.peers.borrow_and_update().clone();
                    if self.membership.set_peers(peers, self.local) {
                        debug!(peers = self.membership.peers().len(), "Liveness peers updated");
                        self.publish();
                    }
                }
                res = self.local_state.changed(), if local_open => {
                    if res.is_err() {
                        local_open = false;
                        continue;
                    }
                    let Local { expected, trusts_gossip } = self.local_state.borrow_and_update().clone();
                    self.membership.set_local(expected, trusts_gossip);
                    self.apply([]);
                }
                _ = &mut leave => break,
            }
        }
        for i in 0..LEAVE_COPIES {
            if i > 0 {
                tokio::time::sleep(LEAVE_SPACING).await;
            }
            let hb = self.membership.encode_heartbeat(true);
            self.send_to_peers(&hb).await;
        }
        info!("Speaker liveness left");
    }

    async fn send_to_peers(&self, datagram: &[u8]) {
        for peer in self.membership.targets() {
            if let Err(error) = self.socket.send_to(datagram, peer).await {
                debug!(%peer, %error, "Liveness heartbeat not sent");
            }
        }
    }

    fn on_datagram(&mut self, bytes: &[u8], src: SocketAddr) {
        let result = self
            .membership
            .on_datagram(Instant::now().into_std(), bytes, src);
        if result.is_err() && self.membership.take_report_change() {
            self.publish();
        }
        match result {
            Ok(change) => self.apply(change),
            // Our own heartbeat echoed back (own address in the peer list on a wildcard bind).
            Err(RejectReason::Loopback) => {}
            Err(reason) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.rejected_metric {
                    m.with_label_values(&[reason.label()]).inc();
                }
                if self.warned.insert(reason.label()) {
                    warn!(%src, %reason, "Rejected liveness datagram (further ones logged at debug)");
                } else {
                    debug!(%src, %reason, "Rejected liveness datagram");
                }
            }
        }
    }

    fn apply(&mut self, changes: impl IntoIterator<Item = Change>) {
        let mut any = self.membership.take_report_change();
        for change in changes {
            any = true;
            match change {
                Change::Up { node } => info!(%node, "Speaker alive"),
                Change::Down { node, reason } => info!(%node, ?reason, "Speaker dead"),
                Change::Restarted { node } => info!(%node, "Speaker restarted"),
            }
        }
        if any {
            self.publish();
        }
    }

    /// Publishes the view if it differs from the last one published.
    fn publish(&self) {
        let view = LiveView {
            alive: self.membership.alive(),
            peers_known: self.membership.peers().len(),
            reports: self.membership.reports(),
            unheard_by: self.membership.unheard_by(),
        };
        self.view.send_if_modified(|cur| {
            if *cur == view {
                false
            } else {
                *cur = view;
                true
            }
        });
    }
}
