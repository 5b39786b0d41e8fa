//! The I/O side of BFD: one tokio task owns every BFD session of the speaker, their sockets
//! and their timers, and drives one pure [`Fsm`] per session. [`Bfd`] is its handle, kept in
//! line with the config by [`Bfd::set`]; each session's "Up" is published on a watch channel
//! the BGP session of that peer follows.
//!
//! ```text
//!  Bfd::set(specs) ──► Cmd::{Add, Update, Remove} ──► task
//!  reader tasks: UDP 3784 (v4, v6), 4784 (v4, v6) ─(datagram, TTL)─► task
//!  task: packet::decode ─► GTSM / demultiplex ─► Fsm::process ─► Send (per-session socket,
//!        source port 49152–65535, TTL 255) · timers · State ─► watch<bool>, metrics
//! ```
//!
//! RFC 5881 (single hop): Control packets go to UDP 3784 with TTL / hop limit 255 from a
//! source port in 49152–65535 that is fixed per session and unique on this system; a packet is
//! accepted only if it arrived with TTL / hop limit 255 (the GTSM check of §5; the kernel
//! reports the received value through `IP_RECVTTL` / `IPV6_RECVHOPLIMIT`). A packet with
//! Your Discriminator 0 is matched to a session by its source address.
//!
//! RFC 5883 (multihop, for `ebgp-multihop` peers): UDP 4784, TTL 255 sent, and a packet is
//! accepted when its TTL is at least the profile's `minimum-ttl` (default 254). A packet with
//! Your Discriminator 0 is matched by source address; then by discriminator.
//!
//! The Echo function is not implemented: it needs packets addressed to ourselves to be sent
//! through the peer (crafted link-layer frames or forwarding tricks, CAP_NET_ADMIN/NET_RAW
//! territory), so a profile's `echo-mode` is accepted and logged as not in effect, and we
//! advertise a Required Min Echo RX Interval of 0 (RFC 5880 §6.8.9: the peer sends us none).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::fsm::{self, Fsm, Input, Output, Params, Timer};
use super::packet::{self, State, diag};
use crate::config::BfdProfile;
use crate::metrics::BfdMetrics;

/// UDP port of single-hop Control packets (RFC 5881).
pub const SINGLE_HOP_PORT: u16 = 3784;
/// UDP port of multihop Control packets (RFC 5883).
pub const MULTIHOP_PORT: u16 = 4784;
/// Source ports (RFC 5881 §4).
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// MetalLB 0.12's (FRR's) default `minimum-ttl`.
pub const DEFAULT_MINIMUM_TTL: u8 = 254;

/// Which session: the peer, our source address if configured, single hop or multihop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The peer's address.
    pub peer: IpAddr,
    /// Our source address (`source-address`), if configured.
    pub local: Option<IpAddr>,
    /// RFC 5883 multihop (the BGP peer has `ebgp-multihop`).
    pub multihop: bool,
}

/// What a session runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The session.
    pub key: Key,
    /// The timers and role.
    pub params: Params,
    /// Multihop: the lowest TTL accepted (`minimum-ttl`).
    pub min_ttl: u8,
    /// The profile asks for the Echo function (not implemented: logged when the session
    /// starts or changes).
    pub echo: bool,
}

impl Spec {
    /// The session parameters for `key` from a `bfd-profiles` entry, with MetalLB 0.12's
    /// defaults (FRR's: 300 ms, 300 ms, × 3, minimum TTL 254) for unset fields.
    pub fn from_profile(key: Key, p: &BfdProfile) -> Self {
        let d = Params::default();
        let ms = |v: Option<u32>, def: Duration| v.map_or(def, |v| Duration::from_millis(v.into()));
        Spec {
            key,
            params: Params {
                desired_min_tx: ms(p.transmit_interval, d.desired_min_tx),
                required_min_rx: ms(p.receive_interval, d.required_min_rx),
                detect_mult: p
                    .detect_multiplier
                    .map_or(d.detect_mult, |m| u8::try_from(m).unwrap_or(u8::MAX)),
                passive: p.passive_mode,
            },
            min_ttl: p
                .minimum_ttl
                .map_or(DEFAULT_MINIMUM_TTL, |t| u8::try_from(t).unwrap_or(u8::MAX)),
            echo: p.echo_mode,
        }
    }
}

/// The metric label of a session: the peer's address (as MetalLB 0.13's FRR mode).
pub fn label(key: &Key) -> String {
    key.peer.to_string()
}

enum Cmd {
    Add(Spec, watch::Sender<bool>),
    Update(Spec),
    Remove(Key),
}

/// The BFD sessions of this speaker (a handle on their task).
pub struct Bfd {
    specs: BTreeMap<Key, (Spec, watch::Receiver<bool>)>,
    cmd: Option<mpsc::UnboundedSender<Cmd>>,
    task: Option<JoinHandle<()>>,
    metrics: BfdMetrics,
}

impl Bfd {
    /// No sessions; the task starts with the first one.
    pub fn new(metrics: BfdMetrics) -> Self {
        Bfd {
            specs: BTreeMap::new(),
            cmd: None,
            task: None,
            metrics,
        }
    }

    /// Run exactly these sessions: new ones start, removed ones send AdminDown and end, changed
    /// parameters reach the running session (a Poll Sequence, no reset).
    pub fn set(&mut self, specs: &[Spec]) {
        let wanted: BTreeMap<Key, Spec> = specs.iter().map(|s| (s.key, *s)).collect();
        let keys: Vec<Key> = self.specs.keys().copied().collect();
        for k in keys {
            if !wanted.contains_key(&k) {
                self.specs.remove(&k);
                self.send(Cmd::Remove(k));
            }
        }
        for (k, s) in wanted {
            let known = self.specs.get(&k).map(|(old, _)| *old);
            if s.echo && known != Some(s) {
                warn!(peer = %k.peer, "echo-mode is not supported; the BFD session runs without the Echo function");
            }
            match self.specs.get_mut(&k) {
                Some((old, _)) if *old == s => {}
                Some((old, _)) => {
                    *old = s;
                    self.send(Cmd::Update(s));
                }
                None => {
                    let (tx, rx) = watch::channel(false);
                    self.specs.insert(k, (s, rx));
                    self.send(Cmd::Add(s, tx));
                }
            }
        }
    }

    /// "The session is Up", for a session in the last [`Self::set`].
    pub fn subscribe(&self, key: &Key) -> Option<watch::Receiver<bool>> {
        self.specs.get(key).map(|(_, rx)| rx.clone())
    }

    fn send(&mut self, c: Cmd) {
        let tx = self.cmd.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            self.task = Some(tokio::spawn(run(rx, self.metrics.clone())));
            tx
        });
        let _ = tx.send(c);
    }
}

impl Drop for Bfd {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// One datagram from a reader task.
struct Rx {
    data: [u8; 64],
    len: usize,
    from: SocketAddr,
    ttl: Option<u8>,
    multihop: bool,
}

/// One session in the task.
struct Sess {
    spec: Spec,
    label: String,
    fsm: Fsm,
    sock: Option<UdpSocket>,
    up: watch::Sender<bool>,
    timers: [Option<Instant>; 2],
}

fn slot(t: Timer) -> usize {
    match t {
        Timer::Transmit => 0,
        Timer::Detect => 1,
    }
}

struct Task {
    sessions: BTreeMap<Key, Sess>,
    by_disc: HashMap<u32, Key>,
    /// Reader tasks by (multihop, ipv6); None when binding failed.
    readers: HashMap<(bool, bool), Option<JoinHandle<()>>>,
    rx_tx: mpsc::Sender<Rx>,
    metrics: BfdMetrics,
    rng: u64,
}

async fn run(mut cmds: mpsc::UnboundedReceiver<Cmd>, metrics: BfdMetrics) {
    let (rx_tx, mut rx) = mpsc::channel::<Rx>(1024);
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x2545_f491_4f6c_dd1d);
    let mut t = Task {
        sessions: BTreeMap::new(),
        by_disc: HashMap::new(),
        readers: HashMap::new(),
        rx_tx,
        metrics,
        rng: seed,
    };
    loop {
        let next = t
            .sessions
            .iter()
            .flat_map(|(k, s)| {
                [Timer::Transmit, Timer::Detect]
                    .into_iter()
                    .filter_map(move |tm| s.timers[slot(tm)].map(|at| (at, *k, tm)))
            })
            .min_by_key(|(at, _, _)| *at);
        tokio::select! {
            c = cmds.recv() => match c {
                Some(c) => t.command(c),
                None => break,
            },
            Some(d) = rx.recv() => t.received(d),
            _ = sleep_opt(next.map(|(at, _, _)| at)) => {
                if let Some((_, key, timer)) = next {
                    t.fire(key, timer);
                }
            }
        }
    }
    for (_, h) in t.readers.drain() {
        if let Some(h) = h {
            h.abort();
        }
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Task {
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        crate::bgp::fsm::splitmix64(self.rng)
    }

    fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Add(spec, up) => self.add(spec, up),
            Cmd::Update(spec) => {
                let Some(s) = self.sessions.get_mut(&spec.key) else {
                    return;
                };
                info!(peer = %s.label, params = ?spec.params, "BFD parameters changed");
                s.spec = spec;
                self.feed(spec.key, Input::SetParams(spec.params));
            }
            Cmd::Remove(key) => {
                self.feed(key, Input::AdminDown);
                if let Some(s) = self.sessions.remove(&key) {
                    info!(peer = %s.label, "BFD session removed");
                    self.by_disc.retain(|_, k| *k != key);
                    self.metrics.forget(&s.label);
                }
            }
        }
    }

    fn add(&mut self, spec: Spec, up: watch::Sender<bool>) {
        let key = spec.key;
        let ipv6 = key.peer.is_ipv6();
        self.ensure_reader(key.multihop, ipv6);
        let disc = loop {
            let d = self.next_random() as u32;
            if d != 0 && !self.by_disc.contains_key(&d) {
                break d;
            }
        };
        let sock = match self.open_sender(&key) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(peer = %key.peer, error = %e, "Cannot open the BFD socket; the session stays down");
                None
            }
        };
        let label = label(&key);
        self.metrics.start(&label);
        info!(peer = %label, multihop = key.multihop, local_discriminator = disc, params = ?spec.params, "Starting BFD session");
        let seed = self.next_random();
        self.by_disc.insert(disc, key);
        self.sessions.insert(
            key,
            Sess {
                spec,
                label,
                fsm: Fsm::new(fsm::Config {
                    params: spec.params,
                    local_disc: disc,
                    seed,
                }),
                sock,
                up,
                timers: [None, None],
            },
        );
        self.feed(key, Input::Start);
    }

    /// Start the reader of (multihop, family) unless it runs.
    fn ensure_reader(&mut self, multihop: bool, ipv6: bool) {
        if matches!(self.readers.get(&(multihop, ipv6)), Some(Some(_))) {
            return;
        }
        let port = if multihop {
            MULTIHOP_PORT
        } else {
            SINGLE_HOP_PORT
        };
        let ip: IpAddr = if ipv6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let h = match open_receiver(SocketAddr::new(ip, port)) {
            Ok(sock) => Some(tokio::spawn(read_loop(sock, multihop, self.rx_tx.clone()))),
            Err(e) => {
                warn!(port, ipv6, error = %e, "Cannot listen for BFD packets; sessions on this port stay down");
                None
            }
        };
        self.readers.insert((multihop, ipv6), h);
    }

    /// A UDP socket from a free source port in 49152–65535, TTL 255.
    fn open_sender(&mut self, key: &Key) -> std::io::Result<UdpSocket> {
        let ip = key.local.unwrap_or(match key.peer {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        });
        let span = u64::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
        let mut last = None;
        for _ in 0..64 {
            let port = SOURCE_PORTS.start() + (self.next_random() % span) as u16;
            match open_sender(SocketAddr::new(ip, port)) {
                Ok(s) => return Ok(s),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free source port")))
    }

    fn received(&mut self, d: Rx) {
        let p = match packet::decode(&d.data[..d.len]) {
            Ok(p) => p,
            Err(e) => {
                debug!(from = %d.from, error = %e, "BFD packet discarded");
                self.discard(e.what);
                return;
            }
        };
        let peer = canonical(d.from.ip());
        let key = if p.your_disc != 0 {
            self.by_disc.get(&p.your_disc).copied()
        } else {
            self.sessions
                .keys()
                .find(|k| k.peer == peer && k.multihop == d.multihop)
                .copied()
        };
        let Some(key) = key.filter(|k| k.peer == peer && k.multihop == d.multihop) else {
            self.discard("no session");
            return;
        };
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        // GTSM (RFC 5881 §5) / the multihop minimum TTL (RFC 5883 §5).
        let min_ttl = if key.multihop { s.spec.min_ttl } else { 255 };
        if d.ttl.is_none_or(|t| t < min_ttl) {
            self.discard("ttl");
            return;
        }
        self.metrics
            .packets
            .with_label_values(&[&s.label, "received"])
            .inc();
        self.metrics
            .control_input
            .with_label_values(&[&s.label])
            .inc();
        self.feed(key, Input::Received(p));
    }

    fn discard(&self, reason: &str) {
        self.metrics.discarded.with_label_values(&[reason]).inc();
    }

    fn fire(&mut self, key: Key, timer: Timer) {
        if let Some(s) = self.sessions.get_mut(&key) {
            s.timers[slot(timer)] = None;
        }
        self.feed(key, Input::Fired(timer));
    }

    fn feed(&mut self, key: Key, input: Input) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let now = Instant::now();
        let out = s.fsm.process(now.into_std(), input);
        for o in out {
            match o {
                Output::Send(p) => {
                    let mut buf = Vec::with_capacity(packet::encoded_len(&p));
                    packet::encode(&p, &mut buf);
                    let port = if key.multihop {
                        MULTIHOP_PORT
                    } else {
                        SINGLE_HOP_PORT
                    };
                    let sent = s
                        .sock
                        .as_ref()
                        .map(|sock| sock.try_send_to(&buf, SocketAddr::new(key.peer, port)));
                    match sent {
                        Some(Ok(_)) => {
                            self.metrics
                                .packets
                                .with_label_values(&[&s.label, "sent"])
                                .inc();
                            self.metrics
                                .control_output
                                .with_label_values(&[&s.label])
                                .inc();
                        }
                        Some(Err(e)) => debug!(peer = %s.label, error = %e, "BFD send failed"),
                        None => {}
                    }
                }
                Output::Arm(t, d) => s.timers[slot(t)] = Some(now + d),
                Output::Cancel(t) => s.timers[slot(t)] = None,
                Output::State { from, to, diag: d } => {
                    let m = &self.metrics;
                    m.state
                        .with_label_values(&[&s.label])
                        .set(i64::from(state_value(to)));
                    m.session_up
                        .with_label_values(&[&s.label])
                        .set(i64::from(to == State::Up));
                    if to == State::Up {
                        m.up_events.with_label_values(&[&s.label]).inc();
                        info!(peer = %s.label, remote_discriminator = s.fsm.remote_disc(), "BFD session up");
                    }
                    if from == State::Up {
                        m.down_events.with_label_values(&[&s.label]).inc();
                        m.flaps.with_label_values(&[&s.label, diag::name(d)]).inc();
                        warn!(peer = %s.label, to = %to, diag = diag::name(d), remote_diag = s.fsm.diag(), "BFD session down");
                    } else {
                        debug!(peer = %s.label, from = %from, to = %to, "BFD state");
                    }
                    s.up.send_replace(to == State::Up);
                }
                Output::Discarded(r) => self.metrics.discarded.with_label_values(&[r]).inc(),
            }
        }
        let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        self.metrics
            .detection_time
            .with_label_values(&[&s.label])
            .set(secs(s.fsm.detection_time()));
        self.metrics
            .tx_interval
            .with_label_values(&[&s.label])
            .set(secs(s.fsm.tx_interval()));
    }
}

fn state_value(s: State) -> u8 {
    match s {
        State::AdminDown => 0,
        State::Down => 1,
        State::Init => 2,
        State::Up => 3,
    }
}

/// An IPv4-mapped IPv6 sender as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_cloexec(true)?;
    sock.set_nonblocking(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    Ok(sock)
}

/// The socket BFD packets are sent from: bound to `addr`, TTL / hop limit 255.
fn open_sender(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = udp_socket(addr)?;
    match addr {
        SocketAddr::V4(_) => sock.set_ttl_v4(255)?,
        SocketAddr::V6(_) => sock.set_unicast_hops_v6(255)?,
    }
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// The socket a port's BFD packets arrive on, reporting each packet's TTL.
fn open_receiver(addr: SocketAddr) -> std::io::Result<tokio::io::unix::AsyncFd<Socket>> {
    let sock = udp_socket(addr)?;
    crate::sys::set_recv_ttl(&sock, addr.is_ipv6())?;
    sock.bind(&addr.into())?;
    crate::sys::async_socket(sock)
}

async fn read_loop(sock: tokio::io::unix::AsyncFd<Socket>, multihop: bool, out: mpsc::Sender<Rx>) {
    let mut buf = [0u8; 64];
    loop {
        let Ok(mut guard) = sock.readable().await else {
            return;
        };
        match guard.try_io(|s| crate::sys::recv_with_ttl(s.get_ref(), &mut buf)) {
            Ok(Ok(d)) => {
                let rx = Rx {
                    data: buf,
                    len: d.len.min(buf.len()),
                    from: d.from,
                    ttl: d.ttl,
                    multihop,
                };
                if let Err(mpsc::error::TrySendError::Closed(_)) = out.try_send(rx) {
                    return;
                }
            }
            Ok(Err(e)) => debug!(error = %e, "BFD receive failed"),
            Err(_would_block) => {}
        }
    }
}

/// For the BGP sessions: the BFD session of each peer that names a profile.
pub fn specs_for(peers: &[crate::config::Peer], profiles: &[BfdProfile]) -> Vec<Spec> {
    let mut out: Vec<Spec> = Vec::new();
    for p in peers {
        let Some(name) = &p.bfd_profile else {
            continue;
        };
        let Some(profile) = profiles.iter().find(|b| &b.name == name) else {
            continue;
        };
        let key = key_of(p);
        if out.iter().any(|s| s.key == key) {
            continue;
        }
        out.push(Spec::from_profile(key, profile));
    }
    out
}

/// The BFD session a BGP peer uses.
pub fn key_of(p: &crate::config::Peer) -> Key {
    Key {
        peer: p.peer_address,
        local: p.source_address,
        multihop: p.ebgp_multihop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_defaults_are_metallb_0_12_s() {
        let key = Key {
            peer: "198.51.100.2".parse().unwrap(),
            local: None,
            multihop: false,
        };
        let s = Spec::from_profile(
            key,
            &BfdProfile {
                name: "p".into(),
                ..Default::default()
            },
        );
        assert_eq!(s.params, Params::default());
        assert_eq!(s.params.desired_min_tx, Duration::from_millis(300));
        assert_eq!(s.min_ttl, 254);
        let s = Spec::from_profile(
            key,
            &BfdProfile {
                name: "p".into(),
                receive_interval: Some(50),
                transmit_interval: Some(60),
                detect_multiplier: Some(5),
                passive_mode: true,
                minimum_ttl: Some(10),
                ..Default::default()
            },
        );
        assert_eq!(
            s.params,
            Params {
                desired_min_tx: Duration::from_millis(60),
                required_min_rx: Duration::from_millis(50),
                detect_mult: 5,
                passive: true,
            }
        );
        assert_eq!(s.min_ttl, 10);
    }

    /// The task on loopback against a hand-written peer at 127.0.0.2: a packet that arrives
    /// with TTL 64 is discarded and counted (GTSM); the same packet with TTL 255 moves the
    /// session to Init.
    #[tokio::test]
    async fn gtsm_discards_ttl_below_255_and_a_valid_packet_drives_the_session() {
        match std::net::UdpSocket::bind("0.0.0.0:3784") {
            Ok(s) => drop(s),
            Err(_) => return, // a BFD speaker runs on this host: port 3784 is not ours to test
        }
        let metrics = BfdMetrics::unregistered();
        let mut bfd = Bfd::new(metrics.clone());
        let key = Key {
            peer: "127.0.0.2".parse().unwrap(),
            local: Some("127.0.0.1".parse().unwrap()),
            multihop: false,
        };
        bfd.set(&[Spec {
            key,
            params: Params::default(),
            min_ttl: 254,
            echo: false,
        }]);
        let mut up = bfd.subscribe(&key).unwrap();
        let tx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        tx.bind(&"127.0.0.2:50000".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        tx.set_ttl_v4(64).unwrap();
        let mut b = Vec::new();
        packet::encode(
            &packet::Packet {
                diag: 0,
                state: State::Down,
                poll: false,
                final_: false,
                cpi: false,
                demand: false,
                detect_mult: 3,
                my_disc: 77,
                your_disc: 0,
                desired_min_tx: 1_000_000,
                required_min_rx: 20_000,
                required_min_echo_rx: 0,
                auth: None,
            },
            &mut b,
        );
        let to: SocketAddr = "127.0.0.1:3784".parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while metrics.discarded.with_label_values(&["ttl"]).get() == 0 {
            tx.send_to(&b, &to.into()).unwrap();
            assert!(Instant::now() < deadline, "TTL 64 packet not discarded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!*up.borrow_and_update());
        assert_eq!(metrics.state.with_label_values(&["127.0.0.2"]).get(), 1);
        tx.set_ttl_v4(255).unwrap();
        tx.send_to(&b, &to.into()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while metrics.state.with_label_values(&["127.0.0.2"]).get() != 2 {
            assert!(Instant::now() < deadline, "no Init");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(bfd);
    }
}
