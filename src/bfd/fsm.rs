//! The BFD session state machine (RFC 5880 §6, asynchronous mode). PURE: no I/O, no tokio, no
//! clock, no global RNG. The driver feeds [`Input`]s with the current [`Instant`] into
//! [`Fsm::process`] and carries out the [`Output`]s in order: send packets, (re)arm and cancel
//! the two timers, report state changes. Transmit jitter comes from a generator seeded by
//! [`Config::seed`], so a run is reproducible.
//!
//! ```text
//!                       +--+
//!                       |  | UP, ADMIN DOWN, TIMER
//!                       |  V
//!               DOWN  +------+  INIT
//!        +------------|      |------------+
//!        |            | DOWN |            |
//!        |  +-------->|      |<--------+  |
//!        |  |         +------+         |  |
//!        |  |                          |  |
//!        |  |               ADMIN DOWN,|  |
//!        |  |ADMIN DOWN,          DOWN,|  |
//!        |  |TIMER                TIMER|  |
//!        V  |                          |  V
//!      +------+                      +------+
//! +----|      |                      |      |----+
//! DOWN|  INIT |--------------------->|  UP  |    |INIT, UP
//! +--->|      | INIT, UP             |      |<---+
//!      +------+                      +------+
//! ```
//! (RFC 5880 §6.2; the labels are the state the peer sends, TIMER is detection time expiry.)
//!
//! # What is implemented
//!
//! * §6.8.6 reception: remote state, discriminator, intervals and demand bit are learnt from
//!   every accepted packet; the three-way handshake above; a packet with the A bit is discarded
//!   (no authentication is configured, so "A bit set and no authentication in use" applies).
//! * §6.8.4 detection time (asynchronous mode): the remote Detect Mult × max(our Required Min
//!   RX, the remote Desired Min TX), re-armed on every accepted packet; on expiry Init/Up go
//!   Down with diagnostic 1 and the remote discriminator is forgotten.
//! * §6.8.3 timer rules: while not Up we advertise a Desired Min TX of at least 1 s ("slow"
//!   mode); a change of Desired Min TX or Required Min RX while Up (reaching Up included) starts
//!   a Poll Sequence (§6.5); a larger Desired Min TX and a smaller Required Min RX take effect
//!   only once the peer answered with Final, the other directions at once.
//! * §6.8.7 transmission: interval max(Desired Min TX in use, remote Required Min RX), reduced
//!   by a uniform 0–25 % (10–25 % when Detect Mult is 1); nothing periodic when the remote
//!   Required Min RX is 0 or the peer is in Demand mode with both sides Up; a Poll is answered
//!   at once with Final; a packet whose contents changed is sent at once.
//! * §6.1 passive role: nothing is sent before a packet from the peer taught us its
//!   discriminator.
//! * §6.8.16 administrative control: [`Input::AdminDown`] / [`Input::AdminUp`].
//!
//! Not implemented: Demand mode on our side (we never set D), the Echo function (we advertise
//! a Required Min Echo RX Interval of 0, RFC 5880 §6.8.9), authentication (§6.7).

use std::time::{Duration, Instant};

use super::packet::{Packet, State, diag};

/// Desired Min TX advertised while the session is not Up (RFC 5880 §6.8.3: at least 1 s).
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// The profile values a session runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// bfd.DesiredMinTxInterval once Up (`transmit-interval`).
    pub desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval (`receive-interval`).
    pub required_min_rx: Duration,
    /// bfd.DetectMult (`detect-multiplier`).
    pub detect_mult: u8,
    /// Passive role (`passive-mode`).
    pub passive: bool,
}

impl Default for Params {
    /// MetalLB 0.12's (FRR's) defaults: 300 ms, 300 ms, × 3, active.
    fn default() -> Self {
        Self {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
            passive: false,
        }
    }
}

/// Session configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The profile values.
    pub params: Params,
    /// bfd.LocalDiscr: nonzero, unique among this system's sessions (the driver picks it).
    pub local_disc: u32,
    /// Seed of the transmit jitter.
    pub seed: u64,
}

/// The timers the driver runs for the FSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Time to send the next periodic Control packet.
    Transmit,
    /// Detection time: nothing valid arrived from the peer for this long.
    Detect,
}

/// What happens to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Begin: an active session sends its first packet at once.
    Start,
    /// An accepted ([`super::packet::decode`]) packet that the driver matched to this session.
    Received(Packet),
    /// A timer armed by [`Output::Arm`] expired.
    Fired(Timer),
    /// New profile values (live reload): applied with a Poll Sequence, never a reset.
    SetParams(Params),
    /// Administratively down (§6.8.16): send AdminDown, stop detecting.
    AdminDown,
    /// Leave AdminDown.
    AdminUp,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this Control packet now.
    Send(Packet),
    /// (Re)arm a timer, replacing a pending instance.
    Arm(Timer, Duration),
    /// Cancel a timer (no-op when it is not pending).
    Cancel(Timer),
    /// The session changed state.
    State {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
        /// Our diagnostic (why we left Up, or `diag::NONE`).
        diag: u8,
    },
    /// A packet was discarded by a session-level rule of §6.8.6 (fixed label).
    Discarded(&'static str),
}

/// One BFD session.
#[derive(Debug, Clone)]
pub struct Fsm {
    params: Params,
    state: State,
    local_disc: u32,
    local_diag: u8,
    remote_disc: u32,
    remote_state: State,
    remote_demand: bool,
    /// bfd.RemoteMinRxInterval, µs (starts at 1, §6.8.1).
    remote_min_rx: u32,
    /// The peer's last Desired Min TX, µs.
    remote_desired_tx: u32,
    /// The peer's last Detect Mult (0 before any packet).
    remote_mult: u8,
    /// Desired Min TX our transmit interval uses (may lag the advertised one, §6.8.3).
    tx_in_use: Duration,
    /// Required Min RX our detection time uses (may lag the advertised one).
    rx_in_use: Duration,
    /// A Poll Sequence is running.
    polling: bool,
    /// Parameters changed during the running Poll Sequence: poll again after its Final.
    poll_again: bool,
    /// What we last sent (compared to send changes at once).
    last_sent: Option<Packet>,
    /// When we last sent a periodic packet.
    last_tx: Option<Instant>,
    /// Transmit interval the Transmit timer was armed with.
    armed_interval: Option<Duration>,
    started: bool,
    rng: u64,
}

impl Fsm {
    /// A session in Down that does nothing until [`Input::Start`].
    pub fn new(cfg: Config) -> Self {
        let slow = cfg.params.desired_min_tx.max(SLOW_TX);
        Self {
            params: cfg.params,
            state: State::Down,
            local_disc: cfg.local_disc,
            local_diag: diag::NONE,
            remote_disc: 0,
            remote_state: State::Down,
            remote_demand: false,
            remote_min_rx: 1,
            remote_desired_tx: 0,
            remote_mult: 0,
            tx_in_use: slow,
            rx_in_use: cfg.params.required_min_rx,
            polling: false,
            poll_again: false,
            last_sent: None,
            last_tx: None,
            armed_interval: None,
            started: false,
            rng: cfg.seed,
        }
    }

    /// The session state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The peer's last reported state.
    pub fn remote_state(&self) -> State {
        self.remote_state
    }

    /// Our diagnostic.
    pub fn diag(&self) -> u8 {
        self.local_diag
    }

    /// The profile values in force.
    pub fn params(&self) -> Params {
        self.params
    }

    /// The peer's discriminator (0 while unknown).
    pub fn remote_disc(&self) -> u32 {
        self.remote_disc
    }

    /// A Poll Sequence is running.
    pub fn polling(&self) -> bool {
        self.polling
    }

    /// The detection time (§6.8.4), once a packet from the peer arrived.
    pub fn detection_time(&self) -> Option<Duration> {
        if self.remote_mult == 0 {
            return None;
        }
        let remote_tx = Duration::from_micros(u64::from(self.remote_desired_tx));
        Some(self.rx_in_use.max(remote_tx) * u32::from(self.remote_mult))
    }

    /// The periodic transmit interval before jitter (§6.8.7), or None when nothing periodic
    /// may be sent.
    pub fn tx_interval(&self) -> Option<Duration> {
        if self.remote_min_rx == 0 {
            return None;
        }
        let remote_rx = Duration::from_micros(u64::from(self.remote_min_rx));
        Some(self.tx_in_use.max(remote_rx))
    }

    /// bfd.DesiredMinTxInterval as advertised now.
    fn advertised_tx(&self) -> Duration {
        if self.state == State::Up {
            self.params.desired_min_tx
        } else {
            self.params.desired_min_tx.max(SLOW_TX)
        }
    }

    /// Feed one input; returns what the driver must do, in order.
    #[must_use]
    pub fn process(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        let mut owe_final = false;
        match input {
            Input::Start => {
                if !self.started {
                    self.started = true;
                    self.transmit(now, &mut out);
                }
            }
            Input::Received(p) => owe_final = self.received(p, &mut out),
            Input::Fired(Timer::Transmit) => self.transmit(now, &mut out),
            Input::Fired(Timer::Detect) => self.detect_expired(&mut out),
            Input::SetParams(p) => self.set_params(p, &mut out),
            Input::AdminDown => {
                if self.state != State::AdminDown {
                    self.polling = false;
                    self.poll_again = false;
                    self.change(State::AdminDown, diag::ADMIN_DOWN, &mut out);
                    out.push(Output::Cancel(Timer::Detect));
                }
            }
            Input::AdminUp => {
                if self.state == State::AdminDown {
                    self.change(State::Down, diag::NONE, &mut out);
                }
            }
        }
        if self.started {
            self.retime(now, &mut out);
            self.send_if_changed(owe_final, &mut out);
        }
        out
    }

    /// §6.8.6 from "If the A bit is set" on. Returns whether a Final is owed.
    fn received(&mut self, p: Packet, out: &mut Vec<Output>) -> bool {
        if p.auth.is_some() {
            out.push(Output::Discarded("authentication not in use"));
            return false;
        }
        if p.your_disc != 0 && p.your_disc != self.local_disc {
            out.push(Output::Discarded("unknown your discriminator"));
            return false;
        }
        self.remote_disc = p.my_disc;
        self.remote_state = p.state;
        self.remote_demand = p.demand;
        self.remote_min_rx = p.required_min_rx;
        self.remote_desired_tx = p.desired_min_tx;
        self.remote_mult = p.detect_mult;
        if p.final_ && self.polling {
            self.polling = false;
            self.tx_in_use = self.advertised_tx();
            self.rx_in_use = self.params.required_min_rx;
            if std::mem::take(&mut self.poll_again) {
                self.polling = true;
            }
        }
        if self.state == State::AdminDown {
            return false;
        }
        if let Some(d) = self.detection_time() {
            out.push(Output::Arm(Timer::Detect, d));
        }
        match (self.state, p.state) {
            (State::Init | State::Up, State::AdminDown) => {
                self.change(State::Down, diag::NEIGHBOR_DOWN, out)
            }
            (State::Down, State::Down) => self.change(State::Init, diag::NONE, out),
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                self.change(State::Up, diag::NONE, out)
            }
            (State::Up, State::Down) => self.change(State::Down, diag::NEIGHBOR_DOWN, out),
            _ => {}
        }
        p.poll
    }

    fn detect_expired(&mut self, out: &mut Vec<Output>) {
        if matches!(self.state, State::Init | State::Up) {
            self.change(State::Down, diag::DETECTION_TIME_EXPIRED, out);
        }
        if self.state != State::AdminDown {
            // §6.8.1: the remote discriminator is forgotten when detection time expires.
            self.remote_disc = 0;
            self.remote_state = State::Down;
            self.remote_demand = false;
            self.remote_min_rx = 1;
            self.remote_mult = 0;
        }
    }

    fn set_params(&mut self, p: Params, out: &mut Vec<Output>) {
        let old = self.params;
        self.params = p;
        if old.desired_min_tx == p.desired_min_tx && old.required_min_rx == p.required_min_rx {
            return;
        }
        if self.state == State::Up {
            // §6.8.3: lower tx and higher rx at once; the rest after the Poll's Final.
            self.tx_in_use = self.tx_in_use.min(self.advertised_tx());
            self.rx_in_use = self.rx_in_use.max(p.required_min_rx);
            self.start_poll();
        } else {
            self.tx_in_use = self.advertised_tx();
            self.rx_in_use = p.required_min_rx;
        }
        if self.state != State::AdminDown
            && let Some(d) = self.detection_time()
            && old.required_min_rx < p.required_min_rx
        {
            out.push(Output::Arm(Timer::Detect, d));
        }
    }

    fn start_poll(&mut self) {
        if self.polling {
            self.poll_again = true;
        } else {
            self.polling = true;
        }
    }

    /// Move to `to` with diagnostic `d`, applying the timer rules that depend on the state.
    fn change(&mut self, to: State, d: u8, out: &mut Vec<Output>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.local_diag = d;
        if to == State::Up {
            // Leaving slow mode changes bfd.DesiredMinTxInterval: verify it with a Poll.
            if self.params.desired_min_tx != self.tx_in_use {
                self.tx_in_use = self.tx_in_use.min(self.params.desired_min_tx);
                self.start_poll();
            }
        } else {
            self.polling = false;
            self.poll_again = false;
            self.tx_in_use = self.advertised_tx();
            self.rx_in_use = self.params.required_min_rx;
        }
        out.push(Output::State { from, to, diag: d });
    }

    /// May periodic packets be sent now (§6.8.7)?
    fn may_send(&self) -> bool {
        !(self.params.passive && self.remote_disc == 0)
            && self.remote_min_rx != 0
            && !(self.remote_demand && self.state == State::Up && self.remote_state == State::Up)
    }

    fn packet(&self, poll: bool, final_: bool) -> Packet {
        Packet {
            diag: self.local_diag,
            state: self.state,
            poll,
            final_,
            cpi: false,
            demand: false,
            detect_mult: self.params.detect_mult,
            my_disc: self.local_disc,
            your_disc: self.remote_disc,
            desired_min_tx: micros(self.advertised_tx()),
            required_min_rx: micros(self.params.required_min_rx),
            required_min_echo_rx: 0,
            auth: None,
        }
    }

    fn transmit(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.armed_interval = None;
        if self.may_send() {
            let p = self.packet(self.polling, false);
            self.last_sent = Some(p.clone());
            out.push(Output::Send(p));
        }
        self.last_tx = Some(now);
        self.arm_transmit(now, out);
    }

    /// Arm the Transmit timer one jittered interval after the last periodic packet.
    fn arm_transmit(&mut self, now: Instant, out: &mut Vec<Output>) {
        // With no periodic transmission allowed, check again at the slow rate.
        let interval = self.tx_interval().unwrap_or(SLOW_TX);
        let jittered = self.jitter(interval);
        let since = self
            .last_tx
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let wait = jittered.saturating_sub(since);
        self.armed_interval = Some(interval);
        out.push(Output::Arm(Timer::Transmit, wait));
    }

    /// Re-arm the Transmit timer when the interval it was armed with is no longer right.
    fn retime(&mut self, now: Instant, out: &mut Vec<Output>) {
        let want = self.tx_interval().unwrap_or(SLOW_TX);
        if self.armed_interval.is_some_and(|a| a != want) {
            self.arm_transmit(now, out);
        }
    }

    /// Send a packet at once when a Final is owed or the contents changed (§6.8.7).
    fn send_if_changed(&mut self, owe_final: bool, out: &mut Vec<Output>) {
        let p = self.packet(self.polling && !owe_final, owe_final);
        let same = self.last_sent.as_ref().is_some_and(|l| {
            let mut l = l.clone();
            l.poll = p.poll;
            l.final_ = p.final_;
            l == p
        });
        // An unchanged packet still goes out at once when it starts a Poll Sequence.
        let new_poll = p.poll && self.last_sent.as_ref().is_some_and(|l| !l.poll);
        if owe_final || ((!same || new_poll) && self.may_send()) {
            self.last_sent = Some(p.clone());
            out.push(Output::Send(p));
        }
    }

    /// `interval` reduced by a uniform 0–25 % (10–25 % with Detect Mult 1), §6.8.7.
    fn jitter(&mut self, interval: Duration) -> Duration {
        self.rng = self.rng.wrapping_add(1);
        let r = crate::bgp::fsm::splitmix64(self.rng);
        // Fraction in [0, 1) with 16 bits of resolution.
        let frac = (r >> 48) as u32;
        let (lo, span) = if self.params.detect_mult == 1 {
            (75u64, 15u64)
        } else {
            (75, 25)
        };
        // percent × 65536: lo×65536 + span×frac, giving lo% … (lo+span)% exclusive.
        let scaled = lo * 65536 + span * u64::from(frac);
        let nanos = interval.as_nanos() as u64;
        Duration::from_nanos(
            (u128::from(nanos) * u128::from(scaled) / (100 * 65536)).min(u128::from(u64::MAX))
                as u64,
        )
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 0x1111;
    const PEER: u32 = 0x2222;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn cfg(tx: u64, rx: u64, mult: u8) -> Config {
        Config {
            params: Params {
                desired_min_tx: ms(tx),
                required_min_rx: ms(rx),
                detect_mult: mult,
                passive: false,
            },
            local_disc: ME,
            seed: 7,
        }
    }

    /// A packet from the peer.
    fn from_peer(state: State, your: u32, tx: u64, rx: u64, mult: u8) -> Packet {
        Packet {
            diag: 0,
            state,
            poll: false,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: mult,
            my_disc: PEER,
            your_disc: your,
            desired_min_tx: (tx * 1000) as u32,
            required_min_rx: (rx * 1000) as u32,
            required_min_echo_rx: 0,
            auth: None,
        }
    }

    /// The peer's Final.
    fn fin(tx: u64, rx: u64) -> Input {
        Input::Received(Packet {
            final_: true,
            ..from_peer(State::Up, ME, tx, rx, 3)
        })
    }

    /// The peer's Poll.
    fn poll(tx: u64, rx: u64) -> Input {
        Input::Received(Packet {
            poll: true,
            ..from_peer(State::Up, ME, tx, rx, 3)
        })
    }

    fn set_tx(f: &Fsm, tx: u64) -> Input {
        Input::SetParams(Params {
            desired_min_tx: ms(tx),
            ..f.params()
        })
    }

    fn set_rx(f: &Fsm, rx: u64) -> Input {
        Input::SetParams(Params {
            required_min_rx: ms(rx),
            ..f.params()
        })
    }

    fn sends(out: &[Output]) -> Vec<&Packet> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn states(out: &[Output]) -> Vec<(State, State, u8)> {
        out.iter()
            .filter_map(|o| match o {
                Output::State { from, to, diag } => Some((*from, *to, *diag)),
                _ => None,
            })
            .collect()
    }

    fn armed(out: &[Output], t: Timer) -> Option<Duration> {
        out.iter().rev().find_map(|o| match o {
            Output::Arm(x, d) if *x == t => Some(*d),
            _ => None,
        })
    }

    /// Bring a session to Up through Down → Init → Up against a peer with `peer_tx`/`peer_rx`,
    /// answering our Poll with Final. Returns the FSM.
    fn up(c: Config, peer_tx: u64, peer_rx: u64, now: Instant) -> Fsm {
        let mut f = Fsm::new(c);
        let out = f.process(now, Input::Start);
        let first = sends(&out);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].state, State::Down);
        assert_eq!(first[0].your_disc, 0);
        assert_eq!(first[0].desired_min_tx, 1_000_000, "slow while not Up");
        let out = f.process(
            now,
            Input::Received(from_peer(State::Down, 0, 1000, peer_rx, 3)),
        );
        assert_eq!(states(&out), vec![(State::Down, State::Init, 0)]);
        let out = f.process(
            now,
            Input::Received(from_peer(State::Up, ME, 1000, peer_rx, 3)),
        );
        assert_eq!(states(&out), vec![(State::Init, State::Up, 0)]);
        let _ = f.process(now, fin(peer_tx, peer_rx));
        assert!(!f.polling());
        f
    }

    #[test]
    fn three_way_handshake_reaches_up_and_the_first_packets_say_so() {
        let now = Instant::now();
        let mut f = Fsm::new(cfg(300, 300, 3));
        let out = f.process(now, Input::Start);
        assert_eq!(sends(&out).len(), 1, "the first packet at once");
        let t = armed(&out, Timer::Transmit).expect("periodic");
        assert!(t >= ms(750) && t <= ms(1000), "{t:?}");
        let out = f.process(
            now,
            Input::Received(from_peer(State::Down, 0, 1000, 1000, 3)),
        );
        // Init is sent at once, carrying the peer's discriminator.
        let s = sends(&out);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].state, s[0].your_disc), (State::Init, PEER));
        assert_eq!(armed(&out, Timer::Detect), Some(ms(3000)));
        let out = f.process(
            now,
            Input::Received(from_peer(State::Up, ME, 1000, 1000, 3)),
        );
        assert_eq!(f.state(), State::Up);
        // Up: the 300 ms Desired Min TX is announced with a Poll.
        let s = sends(&out);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].state, State::Up);
        assert!(s[0].poll && !s[0].final_);
        assert_eq!(s[0].desired_min_tx, 300_000);
        assert!(f.polling());
    }

    #[test]
    fn init_from_the_peer_goes_straight_to_up() {
        let now = Instant::now();
        let mut f = Fsm::new(cfg(300, 300, 3));
        let _ = f.process(now, Input::Start);
        let out = f.process(
            now,
            Input::Received(from_peer(State::Init, ME, 1000, 1000, 3)),
        );
        assert_eq!(states(&out), vec![(State::Down, State::Up, 0)]);
    }

    #[test]
    fn up_from_the_peer_while_down_is_ignored() {
        let now = Instant::now();
        let mut f = Fsm::new(cfg(300, 300, 3));
        let _ = f.process(now, Input::Start);
        let out = f.process(
            now,
            Input::Received(from_peer(State::Up, ME, 1000, 1000, 3)),
        );
        assert!(states(&out).is_empty());
        assert_eq!(f.state(), State::Down);
    }

    #[test]
    fn negotiated_intervals_and_detection_time() {
        let now = Instant::now();
        // We want 300/300 ×3, the peer 500 tx, 200 rx, ×3.
        let mut f = up(cfg(300, 300, 3), 500, 200, now);
        // Detection = remote mult 3 × max(our rx 300, their tx 500).
        assert_eq!(f.detection_time(), Some(ms(1500)));
        // Transmit = max(our tx 300, their rx 200).
        assert_eq!(f.tx_interval(), Some(ms(300)));
        // Their rx grows to 700: we slow down to 700 at once.
        let out = f.process(now, Input::Received(from_peer(State::Up, ME, 500, 700, 5)));
        assert_eq!(f.tx_interval(), Some(ms(700)));
        // The remote multiplier is the one that counts: 5 × 500.
        assert_eq!(f.detection_time(), Some(ms(2500)));
        assert_eq!(armed(&out, Timer::Detect), Some(ms(2500)));
        let t = armed(&out, Timer::Transmit).expect("re-armed for the slower rate");
        assert!(t <= ms(700) && t >= ms(525), "{t:?}");
    }

    #[test]
    fn detection_time_expiry_takes_the_session_down_with_diag_1() {
        let now = Instant::now();
        let mut f = up(cfg(50, 50, 3), 50, 50, now);
        assert_eq!(f.detection_time(), Some(ms(150)));
        let out = f.process(now, Input::Fired(Timer::Detect));
        assert_eq!(
            states(&out),
            vec![(State::Up, State::Down, diag::DETECTION_TIME_EXPIRED)]
        );
        assert_eq!(f.remote_disc(), 0);
        // Down is sent at once, slow, without the peer's discriminator.
        let s = sends(&out);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].state, s[0].diag, s[0].your_disc, s[0].desired_min_tx),
            (State::Down, 1, 0, 1_000_000)
        );
        // Periodic transmission is back to ~1 s.
        assert_eq!(f.tx_interval(), Some(SLOW_TX));
        // A second expiry in Down changes nothing.
        let out = f.process(now, Input::Fired(Timer::Detect));
        assert!(states(&out).is_empty());
    }

    #[test]
    fn peer_down_or_admin_down_takes_us_down_with_diag_3() {
        let now = Instant::now();
        let mut f = up(cfg(300, 300, 3), 300, 300, now);
        let out = f.process(
            now,
            Input::Received(from_peer(State::Down, 0, 1000, 1000, 3)),
        );
        assert_eq!(states(&out), vec![(State::Up, State::Down, 3)]);
        let mut f = up(cfg(300, 300, 3), 300, 300, now);
        let out = f.process(
            now,
            Input::Received(from_peer(State::AdminDown, ME, 1000, 1000, 3)),
        );
        assert_eq!(states(&out), vec![(State::Up, State::Down, 3)]);
        // AdminDown while already Down: stays Down, no diag change.
        let out = f.process(
            now,
            Input::Received(from_peer(State::AdminDown, ME, 1000, 1000, 3)),
        );
        assert!(states(&out).is_empty());
    }

    #[test]
    fn init_goes_down_on_detection_expiry_and_on_admin_down() {
        let now = Instant::now();
        let mut f = Fsm::new(cfg(300, 300, 3));
        let _ = f.process(now, Input::Start);
        let _ = f.process(
            now,
            Input::Received(from_peer(State::Down, 0, 1000, 1000, 3)),
        );
        assert_eq!(f.state(), State::Init);
        let out = f.process(now, Input::Fired(Timer::Detect));
        assert_eq!(states(&out), vec![(State::Init, State::Down, 1)]);
        let _ = f.process(
            now,
            Input::Received(from_peer(State::Down, 0, 1000, 1000, 3)),
        );
        let out = f.process(
            now,
            Input::Received(from_peer(State::AdminDown, ME, 1000, 1000, 3)),
        );
        assert_eq!(states(&out), vec![(State::Init, State::Down, 3)]);
    }

    #[test]
    fn poll_is_answered_at_once_with_final() {
        let now = Instant::now();
        let mut f = up(cfg(300, 300, 3), 300, 300, now);
        let out = f.process(now, poll(300, 300));
        let s = sends(&out);
        assert_eq!(s.len(), 1);
        assert!(s[0].final_ && !s[0].poll);
    }

    #[test]
    fn final_answers_even_while_our_own_poll_runs() {
        let now = Instant::now();
        let mut f = up(cfg(300, 300, 3), 300, 300, now);
        let _ = f.process(now, set_tx(&f, 100));
        assert!(f.polling());
        let out = f.process(now, poll(300, 300));
        let s = sends(&out);
        assert_eq!(s.len(), 1);
        assert!(s[0].final_ && !s[0].poll, "never both bits");
        // Our poll goes on in the periodic packets.
        let out = f.process(now, Input::Fired(Timer::Transmit));
        assert!(sends(&out)[0].poll);
    }

    #[test]
    fn slower_tx_waits_for_final_faster_applies_at_once() {
        let now = Instant::now();
        let mut f = up(cfg(300, 300, 3), 100, 100, now);
        assert_eq!(f.tx_interval(), Some(ms(300)));
        // Slower: 300 → 1000. Poll sent at once; tx stays 300 until Final.
        let out = f.process(now, set_tx(&f, 1000));
        let s = sends(&out);
        assert_eq!(s.len(), 1);
        assert!(s[0].poll);
        assert_eq!(s[0].desired_min_tx, 1_000_000);
        assert_eq!(f.tx_interval(), Some(ms(300)));
        assert_eq!(f.state(), State::Up, "no reset");
        // Periodic packets carry the Poll bit.
        let out = f.process(now, Input::Fired(Timer::Transmit));
        assert!(sends(&out)[0].poll);
        let _ = f.process(now, fin(100, 100));
        assert!(!f.polling());
        assert_eq!(f.tx_interval(), Some(ms(1000)));
        let out = f.process(now, Input::Fired(Timer::Transmit));
        assert!(!sends(&out)[0].poll);
        // Faster: 1000 → 50 at once.
        let _ = f.process(now, set_tx(&f, 50));
        assert_eq!(f.tx_interval(), Some(ms(100)), "bounded by the peer's rx");
        assert!(f.polling());
    }

    #[test]
    fn smaller_rx_shortens_detection_only_after_final() {
        let now = Instant::now();
        let mut f = up(cfg(300, 300, 3), 50, 50, now);
        assert_eq!(f.detection_time(), Some(ms(900)));
        let out = f.process(now, set_rx(&f, 100));
        assert_eq!(sends(&out)[0].required_min_rx, 100_000);
        assert_eq!(f.detection_time(), Some(ms(900)));
        let _ = f.process(now, fin(50, 50));
        assert_eq!(f.detection_time(), Some(ms(300)));
        // Larger rx lengthens detection at once (and re-arms it).
        let out = f.process(now, set_rx(&f, 2000));
        assert_eq!(f.detection_time(), Some(ms(6000)));
        assert_eq!(armed(&out, Timer::Detect), Some(ms(6000)));
    }

    #[test]
    fn a_change_during_a_poll_polls_again() {
        let now = Instant::now();
        let mut f = up(cfg(300, 300, 3), 50, 50, now);
        let p = f.params();
        let _ = f.process(
            now,
            Input::SetParams(Params {
                desired_min_tx: ms(400),
                ..p
            }),
        );
        let _ = f.process(
            now,
            Input::SetParams(Params {
                desired_min_tx: ms(500),
                ..p
            }),
        );
        let fin = Packet {
            final_: true,
            ..from_peer(State::Up, ME, 50, 50, 3)
        };
        let _ = f.process(now, Input::Received(fin.clone()));
        assert!(f.polling(), "second poll for the second change");
        let _ = f.process(now, Input::Received(fin));
        assert!(!f.polling());
        assert_eq!(f.tx_interval(), Some(ms(500)));
    }

    #[test]
    fn parameter_changes_while_down_apply_without_poll() {
        let now = Instant::now();
        let mut f = Fsm::new(cfg(300, 300, 3));
        let _ = f.process(now, Input::Start);
        let _ = f.process(now, Input::Fired(Timer::Transmit));
        let out = f.process(
            now,
            Input::SetParams(Params {
                detect_mult: 5,
                required_min_rx: ms(50),
                ..f.params()
            }),
        );
        assert!(!f.polling());
        let s = sends(&out);
        assert_eq!(s.len(), 1, "changed contents go out at once");
        assert_eq!((s[0].detect_mult, s[0].required_min_rx), (5, 50_000));
        assert!(!s[0].poll);
    }

    #[test]
    fn detect_multiplier_change_is_sent_without_poll() {
        let now = Instant::now();
        let mut f = up(cfg(300, 300, 3), 300, 300, now);
        let out = f.process(
            now,
            Input::SetParams(Params {
                detect_mult: 7,
                ..f.params()
            }),
        );
        let s = sends(&out);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].detect_mult, 7);
        assert!(!f.polling());
        assert_eq!(f.state(), State::Up);
    }

    #[test]
    fn jitter_stays_within_75_to_100_percent_and_is_seeded() {
        let now = Instant::now();
        let run = |seed: u64, mult: u8| {
            let mut f = up(
                Config {
                    seed,
                    ..cfg(100, 100, mult)
                },
                100,
                100,
                now,
            );
            let mut v = Vec::new();
            let mut t = now;
            for _ in 0..400 {
                let out = f.process(t, Input::Fired(Timer::Transmit));
                let d = armed(&out, Timer::Transmit).expect("re-armed");
                v.push(d);
                t += d;
            }
            v
        };
        let a = run(1, 3);
        assert_eq!(a, run(1, 3));
        assert_ne!(a, run(2, 3));
        assert!(a.iter().all(|d| *d >= ms(75) && *d <= ms(100)), "{a:?}");
        assert!(a.iter().any(|d| *d < ms(80)) && a.iter().any(|d| *d > ms(95)));
        let b = run(1, 1);
        assert!(b.iter().all(|d| *d >= ms(75) && *d <= ms(90)), "{b:?}");
    }

    #[test]
    fn slow_transmission_while_not_up() {
        let now = Instant::now();
        let mut f = Fsm::new(cfg(50, 50, 3));
        let _ = f.process(now, Input::Start);
        let out = f.process(now, Input::Fired(Timer::Transmit));
        let d = armed(&out, Timer::Transmit).expect("armed");
        assert!(d >= ms(750) && d <= ms(1000), "{d:?}");
        assert_eq!(sends(&out)[0].desired_min_tx, 1_000_000);
        assert_eq!(sends(&out)[0].required_min_rx, 50_000);
    }

    #[test]
    fn passive_mode_waits_for_the_peer() {
        let now = Instant::now();
        let mut c = cfg(300, 300, 3);
        c.params.passive = true;
        let mut f = Fsm::new(c);
        let _ = f.process(now, Input::Start);
        for _ in 0..3 {
            let out = f.process(now, Input::Fired(Timer::Transmit));
            assert!(sends(&out).is_empty());
        }
        let out = f.process(
            now,
            Input::Received(from_peer(State::Down, 0, 1000, 1000, 3)),
        );
        let s = sends(&out);
        assert_eq!((s.len(), s[0].state), (1, State::Init));
        // After detection expiry the discriminator is gone: silent again.
        let _ = f.process(now, Input::Fired(Timer::Detect));
        let out = f.process(now, Input::Fired(Timer::Transmit));
        assert!(sends(&out).is_empty());
    }

    #[test]
    fn zero_remote_min_rx_or_remote_demand_stops_periodic_packets() {
        let now = Instant::now();
        let mut f = up(cfg(300, 300, 3), 300, 300, now);
        let _ = f.process(now, Input::Received(from_peer(State::Up, ME, 300, 0, 3)));
        let out = f.process(now, Input::Fired(Timer::Transmit));
        assert!(sends(&out).is_empty());
        let mut f = up(cfg(300, 300, 3), 300, 300, now);
        let _ = f.process(
            now,
            Input::Received(Packet {
                demand: true,
                ..from_peer(State::Up, ME, 300, 300, 3)
            }),
        );
        let out = f.process(now, Input::Fired(Timer::Transmit));
        assert!(sends(&out).is_empty());
        // A Poll is still answered.
        let out = f.process(
            now,
            Input::Received(Packet {
                demand: true,
                poll: true,
                ..from_peer(State::Up, ME, 300, 300, 3)
            }),
        );
        assert!(sends(&out)[0].final_);
    }

    #[test]
    fn session_level_discards() {
        let now = Instant::now();
        let mut f = up(cfg(300, 300, 3), 300, 300, now);
        let out = f.process(
            now,
            Input::Received(Packet {
                auth: Some(super::super::packet::Auth {
                    kind: 1,
                    data: vec![1, b'x'],
                }),
                ..from_peer(State::Down, ME, 300, 300, 3)
            }),
        );
        assert_eq!(out, vec![Output::Discarded("authentication not in use")]);
        let out = f.process(
            now,
            Input::Received(from_peer(State::Down, 99, 300, 300, 3)),
        );
        assert_eq!(out, vec![Output::Discarded("unknown your discriminator")]);
        assert_eq!(f.state(), State::Up);
    }

    #[test]
    fn admin_down_and_back() {
        let now = Instant::now();
        let mut f = up(cfg(300, 300, 3), 300, 300, now);
        let out = f.process(now, Input::AdminDown);
        assert_eq!(states(&out), vec![(State::Up, State::AdminDown, 7)]);
        assert!(out.contains(&Output::Cancel(Timer::Detect)));
        let s = sends(&out);
        assert_eq!((s[0].state, s[0].diag), (State::AdminDown, 7));
        // Packets are ignored while AdminDown.
        let out = f.process(now, Input::Received(from_peer(State::Down, 0, 300, 300, 3)));
        assert!(states(&out).is_empty());
        let out = f.process(now, Input::AdminUp);
        assert_eq!(states(&out), vec![(State::AdminDown, State::Down, 0)]);
        let out = f.process(now, Input::Received(from_peer(State::Down, 0, 300, 300, 3)));
        assert_eq!(states(&out), vec![(State::Down, State::Init, 0)]);
    }

    #[test]
    fn unchanged_packets_are_not_resent_between_periodic_ones() {
        let now = Instant::now();
        let mut f = up(cfg(300, 300, 3), 300, 300, now);
        let _ = f.process(now, Input::Fired(Timer::Transmit));
        for _ in 0..5 {
            let out = f.process(now, Input::Received(from_peer(State::Up, ME, 300, 300, 3)));
            assert!(sends(&out).is_empty());
            assert!(states(&out).is_empty());
        }
    }
}
