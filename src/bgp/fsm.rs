//! The BGP session state machine (RFC 4271 §8, active side only). PURE: no I/O, no tokio, no
//! clock, no global RNG. The driver feeds [`Input`]s with the current [`Instant`] into
//! [`Fsm::process`] and carries out the [`Output`]s in order: connect, send, close, (re)arm and
//! cancel timers, report the session's ups and downs. Reconnect jitter comes from a xorshift
//! generator seeded by [`Config::seed`], so a run is reproducible.
//!
//! ```text
//!            Start / Fired(ConnectRetry)          Connected
//!   Idle ─────────────────────────────► Connect ────────────► OpenSent
//!    ▲  ◄── ConnectFailed / Closed ────────┘    send OPEN,      │ OPEN ok: send KEEPALIVE,
//!    │      (Down, Arm(ConnectRetry))           Arm(Hold 240s)  ▼ Arm(Hold), Arm(Keepalive)
//!    │                                                      OpenConfirm
//!    │  any error, NOTIFICATION, Closed, hold expiry            │ KEEPALIVE
//!    └──────────── (Down, Arm(ConnectRetry)) ◄───────────── Established (Output::Established)
//! ```
//!
//! # Driver contract
//!
//! * One TCP connection at a time. `Connected` / `ConnectFailed` answer an [`Output::Connect`];
//!   a `Connected` that arrives after the FSM gave the attempt up (Idle) is answered with
//!   [`Output::Close`], one that arrives while a connection exists is ignored.
//! * [`Output::Arm`] replaces a pending instance of the timer; a firing the FSM no longer expects
//!   (wrong state, already cancelled) is ignored, so cancel/fire races are harmless.
//! * [`Output::Close`] is emitted on every transition back to Idle, also when the peer closed
//!   first (the driver treats it as idempotent).
//! * Exactly one [`Output::Down`] per connection attempt that started with [`Output::Connect`];
//!   every `Down` except [`Down::Stopped`] is followed in the same batch by exactly one
//!   `Arm(ConnectRetry, ..)`.
//!
//! # Differences from MetalLB's native session (spec §7.1–7.3), on purpose
//!
//! * **OpenConfirm.** MetalLB declared the session up right after sending its KEEPALIVE; we
//!   wait for the peer's KEEPALIVE (RFC 4271 §8.2.2), so a peer that rejects our OPEN with a
//!   NOTIFICATION never counts as up.
//! * **Hold timer enforced.** MetalLB never checked received traffic against the hold time
//!   (issue #777: a silently dead router was never noticed). We send NOTIFICATION 4/0 and drop
//!   the session when nothing arrived for the negotiated hold time.
//! * **OPEN wait.** MetalLB bounded TCP connect plus OPEN exchange by 10 s; the driver bounds
//!   the connect, and OpenSent waits for the peer's OPEN up to the RFC's large hold value
//!   ([`OPEN_SENT_HOLD`], 240 s).
//! * **Back-off.** MetalLB retried after 0 s, 1 s, 2 s … 2 min and reset the back-off after
//!   every successful OPEN exchange, so a peer that accepts the OPEN and drops the session
//!   right away was hammered (issue #1114). We wait `min(MAX_BACKOFF, 1 s × 2^(n-1))` × a jitter
//!   uniform in [0.5, 1) after the n-th consecutive failure, and reset `n` only after a session
//!   stayed Established for [`STABLE`]. `Stop` / `Start` do not reset it either (the first
//!   attempt after `Start` is immediate).
//! * **Errors are answered.** MetalLB closed the TCP connection on a bad OPEN, an unexpected
//!   or malformed message; we first send the NOTIFICATION RFC 4271 §6 prescribes (OPEN errors
//!   2/1, 2/2, 2/3, 2/6; RFC 6608 FSM errors 5/1, 5/2, 5/3; decode errors as the codec reports).
//!   We also check the BGP identifier (0.0.0.0, or ours on an iBGP session → 2/3), which
//!   MetalLB did not.
//! * **Administrative stop sends Cease.** MetalLB closed the socket without a NOTIFICATION; we
//!   send Cease with the driver's subcode (RFC 4486: peer de-configured, admin shutdown …).
//! * **Capabilities.** Our OPEN starts with exactly MetalLB's capabilities (MP IPv4, MP IPv6,
//!   4-octet AS) and adds Route Refresh (RFC 2918), whose requests are reported as
//!   [`Output::RouteRefresh`], and Graceful Restart (RFC 4724) when configured.
//! * **`keepalive-time`** is honoured (the native MetalLB speaker rejected it): the interval is
//!   `min(keepalive-time, hold / 3)`, at least 1 s.
//! * **2-octet-only peers** are accepted also when our AS needs 4 octets (RFC 6793 §4.2; MetalLB
//!   refused with "peer does not support 4-byte ASNs"). [`Negotiated::four_octet_as`] is false
//!   then, and the UPDATE encoder must use AS_TRANS (plus AS4_PATH) for our AS.
//! * A configured hold time of 1 or 2 s (invalid on the wire, rejected by the config parser) is
//!   sent as 3 s; a graceful restart time above 4095 s is sent as 4095 s.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::message::{
    AFI_IPV4, AFI_IPV6, AS_TRANS, Capability, DecodeError, GracefulRestart, Message, Notification,
    Open, SAFI_UNICAST, code,
};

/// How long a session must stay Established for the reconnect back-off to start over.
pub const STABLE: Duration = Duration::from_secs(30);
/// Longest reconnect delay (before jitter), as MetalLB's `backoffMax`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(120);
/// Reconnect delay after the first failure (before jitter).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Hold timer while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes).
pub const OPEN_SENT_HOLD: Duration = Duration::from_secs(240);

/// The only BGP version spoken.
const VERSION: u8 = 4;
/// Largest graceful restart time (12 bits).
const MAX_RESTART_TIME: u16 = 4095;

/// Session parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Our AS.
    pub local_as: u32,
    /// The AS the peer must announce.
    pub peer_as: u32,
    /// configured hold time in seconds (MetalLB `hold-time`, default 90); 0 = no keepalives, no hold timer
    pub hold_time: u16,
    /// configured `keepalive-time` in seconds, if any
    pub keepalive: Option<u16>,
    /// advertise graceful restart (RFC 4724) with this restart time (seconds, <= 4095); None = no GR capability
    pub graceful_restart: Option<u16>,
    /// seed of the reconnect jitter
    pub seed: u64,
}

/// RFC 4271 §8.2.2 states (Active is folded into Connect: we never listen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No connection; waiting for `Start` or the reconnect timer.
    Idle,
    /// TCP connect in progress.
    Connect,
    /// Our OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// Session up.
    Established,
}

/// The timers the driver runs for the FSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Reconnect back-off.
    ConnectRetry,
    /// Nothing received from the peer for the hold time.
    Hold,
    /// Time to send a KEEPALIVE.
    Keepalive,
}

/// What happens to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// administrative start: connect now (first attempt immediately)
    Start,
    /// administrative stop (peer removed, node deselected, shutdown): if a connection exists, send NOTIFICATION Cease/`subcode` then Close; go Idle; no reconnect until Start
    Stop {
        /// Cease subcode (RFC 4486), e.g. [`code::CEASE_PEER_DECONFIGURED`].
        subcode: u8,
    },
    /// TCP connected. `router_id` goes into our OPEN (the driver derives it per connection like MetalLB §7.4); `restarting` sets the GR R bit
    Connected {
        /// Our BGP identifier on this connection.
        router_id: Ipv4Addr,
        /// We restarted and the peer may still hold our routes (GR Restart State bit).
        restarting: bool,
    },
    /// TCP connect failed or timed out
    ConnectFailed,
    /// the connection was closed by the peer, or a read/write failed
    Closed,
    /// A message from the peer.
    Received(Message),
    /// the codec rejected a message
    Malformed(DecodeError),
    /// A timer armed by [`Output::Arm`] expired.
    Fired(Timer),
    /// The peer's BFD session left Up: send Cease/BFD Down (RFC 9384) and drop the
    /// connection at once; reconnect after the back-off.
    BfdDown,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// open a TCP connection (the driver bounds it with its own timeout and answers Connected / ConnectFailed)
    Connect,
    /// Send a message on the connection.
    Send(Message),
    /// close the TCP connection after flushing the Sends output before it
    Close,
    /// (re)arm a timer, replacing any pending instance of it
    Arm(Timer, Duration),
    /// Cancel a timer (no-op when it is not pending).
    Cancel(Timer),
    /// The session is up with these parameters.
    Established(Negotiated),
    /// the session (or the attempt to open it) ended
    Down(Down),
    /// the peer asked for our routes again (RFC 2918)
    RouteRefresh {
        /// Address family.
        afi: u16,
        /// Subsequent address family.
        safi: u8,
    },
}

/// What the two OPENs agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's AS (4-octet capability value, else the OPEN's `my_as`).
    pub peer_as: u32,
    /// The peer's BGP identifier.
    pub peer_router_id: Ipv4Addr,
    /// min(our hold time, the peer's), seconds; 0 = no hold timer and no keepalives.
    pub hold_time: u16,
    /// KEEPALIVE interval in seconds (0 when `hold_time` is 0).
    pub keepalive: u16,
    /// Both sides advertised 4-octet AS support (we always do): AS_PATH uses 4-octet ASNs.
    pub four_octet_as: bool,
    /// The peer takes IPv4 unicast (advertised it, or advertised no multiprotocol capability).
    pub ipv4: bool,
    /// The peer takes IPv6 unicast.
    pub ipv6: bool,
    /// The peer advertised Route Refresh.
    pub route_refresh: bool,
    /// The peer's graceful restart capability.
    pub peer_graceful_restart: Option<GracefulRestart>,
}

/// Why a session (or the attempt to open one) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// TCP connect failed.
    ConnectFailed,
    /// The connection was closed or failed.
    Closed,
    /// Nothing arrived for the hold time (we sent NOTIFICATION 4/0).
    HoldTimerExpired,
    /// We sent this NOTIFICATION.
    Sent(Notification),
    /// The peer sent this NOTIFICATION.
    Received(Notification),
    /// Administrative stop.
    Stopped,
    /// BFD declared the peer down (we sent Cease/BFD Down).
    BfdDown,
}

impl Down {
    /// short fixed label for metrics/logs: "connect_failed", "closed", "hold_timer_expired", "notification_sent", "notification_received", "stopped", "bfd_down"
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ConnectFailed => "connect_failed",
            Self::Closed => "closed",
            Self::HoldTimerExpired => "hold_timer_expired",
            Self::Sent(_) => "notification_sent",
            Self::Received(_) => "notification_received",
            Self::Stopped => "stopped",
            Self::BfdDown => "bfd_down",
        }
    }
}

/// One BGP session's state machine.
#[derive(Debug, Clone)]
pub struct Fsm {
    cfg: Config,
    state: State,
    /// Between `Start` and `Stop`. Invariant: `!started` implies `state == Idle`.
    started: bool,
    /// Our BGP identifier on the current connection.
    router_id: Ipv4Addr,
    /// Set from OpenConfirm on, cleared in Idle.
    negotiated: Option<Negotiated>,
    /// When the current session reached Established.
    established_at: Option<Instant>,
    /// Consecutive failures since the last stable session.
    failures: u32,
    /// xorshift64 state (never 0).
    rng: u64,
}

impl Fsm {
    /// A stopped session in Idle: nothing happens until [`Input::Start`].
    pub fn new(cfg: Config) -> Self {
        let rng = match splitmix64(cfg.seed) {
            0 => 0x9e37_79b9_7f4a_7c15,
            x => x,
        };
        Self {
            cfg,
            state: State::Idle,
            started: false,
            router_id: Ipv4Addr::UNSPECIFIED,
            negotiated: None,
            established_at: None,
            failures: 0,
            rng,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The session parameters, while Established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated
            .as_ref()
            .filter(|_| self.state == State::Established)
    }

    /// Feed one input; returns what the driver must do, in order.
    #[must_use]
    pub fn process(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                if !self.started {
                    self.started = true;
                    self.state = State::Connect;
                    out.push(Output::Connect);
                }
            }
            Input::Stop { subcode } => self.stop(now, subcode, &mut out),
            Input::Connected {
                router_id,
                restarting,
            } => match self.state {
                State::Connect => {
                    self.router_id = router_id;
                    self.state = State::OpenSent;
                    out.push(Output::Send(Message::Open(self.our_open(restarting))));
                    out.push(Output::Arm(Timer::Hold, OPEN_SENT_HOLD));
                }
                // An attempt we gave up on completed anyway: drop that connection.
                State::Idle => out.push(Output::Close),
                // A connection already exists; the driver runs one at a time.
                State::OpenSent | State::OpenConfirm | State::Established => {}
            },
            Input::ConnectFailed => {
                if self.state == State::Connect {
                    self.down(now, Down::ConnectFailed, &mut out);
                }
            }
            Input::Closed => {
                if self.state != State::Idle {
                    self.down(now, Down::Closed, &mut out);
                }
            }
            Input::Received(msg) => self.received(now, msg, &mut out),
            Input::Malformed(e) => {
                if self.connected() {
                    self.fail(now, e.notification(), &mut out);
                }
            }
            Input::Fired(timer) => self.fired(now, timer, &mut out),
            Input::BfdDown => {
                if self.connected() {
                    out.push(Output::Send(Message::Notification(Notification {
                        code: code::CEASE,
                        subcode: code::CEASE_BFD_DOWN,
                        data: Vec::new(),
                    })));
                    self.down(now, Down::BfdDown, &mut out);
                }
            }
        }
        out
    }

    /// A TCP connection exists.
    fn connected(&self) -> bool {
        matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        )
    }

    fn stop(&mut self, now: Instant, subcode: u8, out: &mut Vec<Output>) {
        if !self.started {
            return;
        }
        self.started = false;
        match self.state {
            State::Idle => out.push(Output::Cancel(Timer::ConnectRetry)),
            State::Connect => {
                out.push(Output::Cancel(Timer::ConnectRetry));
                self.down(now, Down::Stopped, out);
            }
            State::OpenSent | State::OpenConfirm | State::Established => {
                out.push(Output::Send(Message::Notification(Notification {
                    code: code::CEASE,
                    subcode,
                    data: Vec::new(),
                })));
                self.down(now, Down::Stopped, out);
            }
        }
    }

    fn received(&mut self, now: Instant, msg: Message, out: &mut Vec<Output>) {
        match (self.state, msg) {
            // No connection: a message read before the close was processed.
            (State::Idle | State::Connect, _) => {}
            (_, Message::Notification(n)) => self.down(now, Down::Received(n), out),
            (State::OpenSent, Message::Open(open)) => match self.check_open(&open) {
                Ok(neg) => {
                    out.push(Output::Send(Message::Keepalive));
                    if neg.hold_time == 0 {
                        out.push(Output::Cancel(Timer::Hold));
                    } else {
                        out.push(Output::Arm(Timer::Hold, secs(neg.hold_time)));
                        out.push(Output::Arm(Timer::Keepalive, secs(neg.keepalive)));
                    }
                    self.negotiated = Some(neg);
                    self.state = State::OpenConfirm;
                }
                Err(n) => self.fail(now, n, out),
            },
            (State::OpenSent, _) => self.fail(now, fsm_error(code::FSM_IN_OPENSENT), out),
            (State::OpenConfirm, Message::Keepalive) => {
                self.rearm_hold(out);
                if let Some(neg) = &self.negotiated {
                    out.push(Output::Established(neg.clone()));
                }
                self.state = State::Established;
                self.established_at = Some(now);
            }
            (State::OpenConfirm, _) => self.fail(now, fsm_error(code::FSM_IN_OPENCONFIRM), out),
            (State::Established, Message::Open(_)) => {
                self.fail(now, fsm_error(code::FSM_IN_ESTABLISHED), out)
            }
            (State::Established, Message::Keepalive | Message::Update(_)) => self.rearm_hold(out),
            (State::Established, Message::RouteRefresh(rr)) => {
                self.rearm_hold(out);
                // RFC 2918 §4: ignore families we did not advertise.
                if rr.safi == SAFI_UNICAST && (rr.afi == AFI_IPV4 || rr.afi == AFI_IPV6) {
                    out.push(Output::RouteRefresh {
                        afi: rr.afi,
                        safi: rr.safi,
                    });
                }
            }
        }
    }

    fn fired(&mut self, now: Instant, timer: Timer, out: &mut Vec<Output>) {
        let hold = self.negotiated.as_ref().map_or(0, |n| n.hold_time);
        let keepalive = self.negotiated.as_ref().map_or(0, |n| n.keepalive);
        match (timer, self.state) {
            (Timer::ConnectRetry, State::Idle) if self.started => {
                self.state = State::Connect;
                out.push(Output::Connect);
            }
            (Timer::Hold, State::OpenSent) => self.hold_expired(now, out),
            (Timer::Hold, State::OpenConfirm | State::Established) if hold > 0 => {
                self.hold_expired(now, out)
            }
            (Timer::Keepalive, State::OpenConfirm | State::Established) if keepalive > 0 => {
                out.push(Output::Send(Message::Keepalive));
                out.push(Output::Arm(Timer::Keepalive, secs(keepalive)));
            }
            // Stale: cancelled, or armed for a state we left.
            _ => {}
        }
    }

    fn hold_expired(&mut self, now: Instant, out: &mut Vec<Output>) {
        out.push(Output::Send(Message::Notification(Notification {
            code: code::HOLD_TIMER_EXPIRED,
            subcode: 0,
            data: Vec::new(),
        })));
        self.down(now, Down::HoldTimerExpired, out);
    }

    fn rearm_hold(&self, out: &mut Vec<Output>) {
        if let Some(neg) = &self.negotiated
            && neg.hold_time > 0
        {
            out.push(Output::Arm(Timer::Hold, secs(neg.hold_time)));
        }
    }

    /// Send `n`, then go down with `Down::Sent(n)`.
    fn fail(&mut self, now: Instant, n: Notification, out: &mut Vec<Output>) {
        out.push(Output::Send(Message::Notification(n.clone())));
        self.down(now, Down::Sent(n), out);
    }

    /// Back to Idle: close, cancel the session timers, report, and unless stopped schedule the
    /// reconnect.
    fn down(&mut self, now: Instant, why: Down, out: &mut Vec<Output>) {
        if self.state == State::Established
            && let Some(at) = self.established_at
            && now.saturating_duration_since(at) >= STABLE
        {
            self.failures = 0;
        }
        self.state = State::Idle;
        self.negotiated = None;
        self.established_at = None;
        out.push(Output::Close);
        out.push(Output::Cancel(Timer::Hold));
        out.push(Output::Cancel(Timer::Keepalive));
        let stopped = why == Down::Stopped;
        out.push(Output::Down(why));
        if !stopped {
            self.failures = self.failures.saturating_add(1);
            let delay = self.backoff();
            out.push(Output::Arm(Timer::ConnectRetry, delay));
        }
    }

    /// `min(MAX_BACKOFF, INITIAL_BACKOFF × 2^(n-1))` × uniform [0.5, 1) for `n` failures.
    fn backoff(&mut self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(16);
        let base = INITIAL_BACKOFF
            .saturating_mul(1 << doublings)
            .min(MAX_BACKOFF);
        // (2^32 + x) / 2^33 with x uniform in [0, 2^32): a factor in [0.5, 1).
        let x = u128::from(self.next_random() >> 32);
        let nanos = (base.as_nanos() * ((1u128 << 32) + x)) >> 33;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn our_open(&self, restarting: bool) -> Open {
        let local_as = self.cfg.local_as;
        let mut capabilities = vec![
            Capability::Multiprotocol {
                afi: AFI_IPV4,
                safi: SAFI_UNICAST,
            },
            Capability::Multiprotocol {
                afi: AFI_IPV6,
                safi: SAFI_UNICAST,
            },
            Capability::FourOctetAs(local_as),
            Capability::RouteRefresh,
        ];
        if let Some(restart_time) = self.cfg.graceful_restart {
            capabilities.push(Capability::GracefulRestart(GracefulRestart {
                restarting,
                restart_time: restart_time.min(MAX_RESTART_TIME),
                families: vec![
                    (AFI_IPV4, SAFI_UNICAST, true),
                    (AFI_IPV6, SAFI_UNICAST, true),
                ],
            }));
        }
        Open {
            version: VERSION,
            my_as: u16::try_from(local_as).unwrap_or(AS_TRANS),
            hold_time: self.our_hold_time(),
            router_id: self.router_id,
            capabilities,
        }
    }

    /// The configured hold time, made valid for the wire (0 or >= 3).
    fn our_hold_time(&self) -> u16 {
        match self.cfg.hold_time {
            1 | 2 => 3,
            h => h,
        }
    }

    /// RFC 4271 §6.2 checks, in the RFC's order, then what the OPENs agree on.
    fn check_open(&self, open: &Open) -> Result<Negotiated, Notification> {
        let open_error = |subcode, data| Notification {
            code: code::OPEN,
            subcode,
            data,
        };
        if open.version != VERSION {
            // Data: the largest version we support, as 2 octets.
            return Err(open_error(
                code::OPEN_UNSUPPORTED_VERSION,
                u16::from(VERSION).to_be_bytes().to_vec(),
            ));
        }
        let peer_as = open.asn();
        if peer_as != self.cfg.peer_as {
            return Err(open_error(code::OPEN_BAD_PEER_AS, Vec::new()));
        }
        if matches!(open.hold_time, 1 | 2) {
            return Err(open_error(code::OPEN_UNACCEPTABLE_HOLD_TIME, Vec::new()));
        }
        let ibgp = self.cfg.local_as == self.cfg.peer_as;
        if open.router_id.is_unspecified() || (ibgp && open.router_id == self.router_id) {
            return Err(open_error(code::OPEN_BAD_BGP_ID, Vec::new()));
        }

        let hold_time = self.our_hold_time().min(open.hold_time);
        let keepalive = if hold_time == 0 {
            0
        } else {
            let third = hold_time / 3;
            match self.cfg.keepalive {
                Some(k) if k > 0 => k.min(third),
                _ => third,
            }
            .max(1)
        };
        let any_mp = open
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::Multiprotocol { .. }));
        Ok(Negotiated {
            peer_as,
            peer_router_id: open.router_id,
            hold_time,
            keepalive,
            four_octet_as: open.four_octet_as(),
            ipv4: open.supports(AFI_IPV4, SAFI_UNICAST) || !any_mp,
            ipv6: open.supports(AFI_IPV6, SAFI_UNICAST),
            route_refresh: open
                .capabilities
                .iter()
                .any(|c| matches!(c, Capability::RouteRefresh)),
            peer_graceful_restart: open.capabilities.iter().find_map(|c| match c {
                Capability::GracefulRestart(gr) => Some(gr.clone()),
                _ => None,
            }),
        })
    }
}

/// RFC 6608 Finite State Machine Error with this subcode.
fn fsm_error(subcode: u8) -> Notification {
    Notification {
        code: code::FSM,
        subcode,
        data: Vec::new(),
    }
}

fn secs(s: u16) -> Duration {
    Duration::from_secs(u64::from(s))
}

/// Spreads a seed over the state space (a bijection, so distinct seeds give distinct streams).
pub(crate) fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::message::{RouteRefresh, Update};
    use proptest::prelude::*;

    const OUR_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
    const LOCAL_AS: u32 = 64512;
    const PEER_AS: u32 = 64513;

    fn cfg() -> Config {
        Config {
            local_as: LOCAL_AS,
            peer_as: PEER_AS,
            hold_time: 90,
            keepalive: None,
            graceful_restart: None,
            seed: 7,
        }
    }

    fn mp(afi: u16) -> Capability {
        Capability::Multiprotocol {
            afi,
            safi: SAFI_UNICAST,
        }
    }

    /// What a typical router sends.
    fn peer_open(hold_time: u16) -> Open {
        Open {
            version: 4,
            my_as: PEER_AS as u16,
            hold_time,
            router_id: PEER_ID,
            capabilities: vec![
                mp(AFI_IPV4),
                mp(AFI_IPV6),
                Capability::RouteRefresh,
                Capability::FourOctetAs(PEER_AS),
            ],
        }
    }

    fn connected() -> Input {
        Input::Connected {
            router_id: OUR_ID,
            restarting: false,
        }
    }

    fn notification(code: u8, subcode: u8) -> Notification {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    fn recv_open(open: Open) -> Input {
        Input::Received(Message::Open(open))
    }

    /// Drives a fresh FSM to `target` with the standard peer.
    fn fsm_in(cfg: Config, target: State, now: Instant) -> Fsm {
        let mut fsm = Fsm::new(cfg);
        let steps = [
            (State::Connect, Input::Start),
            (State::OpenSent, connected()),
            (State::OpenConfirm, recv_open(peer_open(90))),
            (State::Established, Input::Received(Message::Keepalive)),
        ];
        for (state, input) in steps {
            if fsm.state() == target {
                break;
            }
            let _ = fsm.process(now, input);
            assert_eq!(fsm.state(), state);
        }
        assert_eq!(fsm.state(), target);
        fsm
    }

    fn retry_delay(out: &[Output]) -> Option<Duration> {
        out.iter().find_map(|o| match o {
            Output::Arm(Timer::ConnectRetry, d) => Some(*d),
            _ => None,
        })
    }

    /// The outputs of going down with `why` and then arming the reconnect (delay from `out`).
    fn down_outputs(out: &[Output], why: Down) -> Vec<Output> {
        let mut v = vec![
            Output::Close,
            Output::Cancel(Timer::Hold),
            Output::Cancel(Timer::Keepalive),
            Output::Down(why),
        ];
        if let Some(d) = retry_delay(out) {
            v.push(Output::Arm(Timer::ConnectRetry, d));
        }
        v
    }

    /// `[base/2, base)` with `base` the un-jittered delay after `n` failures.
    fn assert_jittered(d: Duration, n: u32) {
        let base = Duration::from_secs(1u64 << (n - 1).min(10)).min(MAX_BACKOFF);
        assert!(
            d >= base / 2 && d < base,
            "delay {d:?} after {n} failures outside [{:?}, {base:?})",
            base / 2
        );
    }

    #[test]
    fn bfd_down_sends_cease_10_and_reconnects_after_the_back_off() {
        let now = Instant::now();
        let mut fsm = fsm_in(cfg(), State::Established, now);
        let out = fsm.process(now, Input::BfdDown);
        let mut want = vec![Output::Send(Message::Notification(notification(
            code::CEASE,
            code::CEASE_BFD_DOWN,
        )))];
        want.extend(down_outputs(&out, Down::BfdDown));
        assert_eq!(out, want);
        assert_jittered(retry_delay(&out).expect("reconnect armed"), 1);
        assert_eq!(Down::BfdDown.reason(), "bfd_down");
        // Without a connection there is nothing to tear down.
        assert!(fsm.process(now, Input::BfdDown).is_empty());
    }

    #[test]
    fn happy_path_reaches_established_with_exact_outputs() {
        let now = Instant::now();
        let mut fsm = Fsm::new(cfg());
        assert_eq!(fsm.state(), State::Idle);

        assert_eq!(fsm.process(now, Input::Start), vec![Output::Connect]);
        assert_eq!(fsm.state(), State::Connect);

        let our_open = Open {
            version: 4,
            my_as: 64512,
            hold_time: 90,
            router_id: OUR_ID,
            capabilities: vec![
                mp(AFI_IPV4),
                mp(AFI_IPV6),
                Capability::FourOctetAs(64512),
                Capability::RouteRefresh,
            ],
        };
        assert_eq!(
            fsm.process(now, connected()),
            vec![
                Output::Send(Message::Open(our_open)),
                Output::Arm(Timer::Hold, Duration::from_secs(240)),
            ]
        );
        assert_eq!(fsm.state(), State::OpenSent);

        assert_eq!(
            fsm.process(now, recv_open(peer_open(180))),
            vec![
                Output::Send(Message::Keepalive),
                Output::Arm(Timer::Hold, Duration::from_secs(90)),
                Output::Arm(Timer::Keepalive, Duration::from_secs(30)),
            ]
        );
        assert_eq!(fsm.state(), State::OpenConfirm);

        let negotiated = Negotiated {
            peer_as: PEER_AS,
            peer_router_id: PEER_ID,
            hold_time: 90,
            keepalive: 30,
            four_octet_as: true,
            ipv4: true,
            ipv6: true,
            route_refresh: true,
            peer_graceful_restart: None,
        };
        assert_eq!(
            fsm.process(now, Input::Received(Message::Keepalive)),
            vec![
                Output::Arm(Timer::Hold, Duration::from_secs(90)),
                Output::Established(negotiated.clone()),
            ]
        );
        assert_eq!(fsm.state(), State::Established);
        assert_eq!(fsm.negotiated(), Some(&negotiated));
    }

    #[test]
    fn four_octet_local_as_is_sent_as_as_trans_with_the_upstream_capability_prefix() {
        let mut fsm = Fsm::new(Config {
            local_as: 4_200_000_000,
            ..cfg()
        });
        let now = Instant::now();
        let _ = fsm.process(now, Input::Start);
        let out = fsm.process(now, connected());
        let Some(Output::Send(Message::Open(open))) = out.first() else {
            panic!("no OPEN in {out:?}");
        };
        assert_eq!(open.version, 4);
        assert_eq!(open.my_as, AS_TRANS);
        assert_eq!(open.my_as, 23456);
        assert_eq!(open.asn(), 4_200_000_000);
        assert_eq!(
            open.capabilities[..3],
            [
                mp(AFI_IPV4),
                mp(AFI_IPV6),
                Capability::FourOctetAs(4_200_000_000)
            ],
            "exactly MetalLB's OPEN first"
        );
        assert_eq!(open.capabilities[3..], [Capability::RouteRefresh]);
    }

    #[test]
    fn waits_for_the_peers_keepalive_before_established() {
        let now = Instant::now();
        let mut fsm = fsm_in(cfg(), State::OpenConfirm, now);
        assert_eq!(fsm.negotiated(), None, "not up in OpenConfirm");
        // Our own keepalives go out meanwhile, but the session is not up.
        let out = fsm.process(now, Input::Fired(Timer::Keepalive));
        assert_eq!(
            out,
            vec![
                Output::Send(Message::Keepalive),
                Output::Arm(Timer::Keepalive, Duration::from_secs(30))
            ]
        );
        assert_eq!(fsm.state(), State::OpenConfirm);
        let out = fsm.process(now, Input::Received(Message::Keepalive));
        assert!(out.iter().any(|o| matches!(o, Output::Established(_))));
        assert!(fsm.negotiated().is_some());
    }

    /// (name, config, the peer's OPEN, the OPEN error subcode and data expected, if any)
    type OpenCase = (&'static str, Config, Open, Option<(u8, Vec<u8>)>);

    #[test]
    fn each_open_error_is_answered_with_its_notification() {
        let ibgp = Config {
            peer_as: LOCAL_AS,
            ..cfg()
        };
        let ibgp_open = |id| Open {
            my_as: LOCAL_AS as u16,
            router_id: id,
            capabilities: vec![Capability::FourOctetAs(LOCAL_AS)],
            ..peer_open(90)
        };
        let cases: Vec<OpenCase> = vec![
            (
                "version 3",
                cfg(),
                Open {
                    version: 3,
                    ..peer_open(90)
                },
                Some((code::OPEN_UNSUPPORTED_VERSION, vec![0, 4])),
            ),
            (
                "wrong AS in the 4-octet capability",
                cfg(),
                Open {
                    capabilities: vec![Capability::FourOctetAs(65000)],
                    ..peer_open(90)
                },
                Some((code::OPEN_BAD_PEER_AS, vec![])),
            ),
            (
                "wrong 2-octet AS",
                cfg(),
                Open {
                    my_as: 65000,
                    capabilities: vec![],
                    ..peer_open(90)
                },
                Some((code::OPEN_BAD_PEER_AS, vec![])),
            ),
            (
                "AS_TRANS from a 2-octet peer configured with a 4-octet AS",
                Config {
                    peer_as: 4_200_000_001,
                    ..cfg()
                },
                Open {
                    my_as: AS_TRANS,
                    capabilities: vec![],
                    ..peer_open(90)
                },
                Some((code::OPEN_BAD_PEER_AS, vec![])),
            ),
            (
                "hold 1",
                cfg(),
                peer_open(1),
                Some((code::OPEN_UNACCEPTABLE_HOLD_TIME, vec![])),
            ),
            (
                "hold 2",
                cfg(),
                peer_open(2),
                Some((code::OPEN_UNACCEPTABLE_HOLD_TIME, vec![])),
            ),
            ("hold 3", cfg(), peer_open(3), None),
            ("hold 0", cfg(), peer_open(0), None),
            (
                "identifier 0.0.0.0",
                cfg(),
                Open {
                    router_id: Ipv4Addr::UNSPECIFIED,
                    ..peer_open(90)
                },
                Some((code::OPEN_BAD_BGP_ID, vec![])),
            ),
            (
                "our identifier on iBGP",
                ibgp.clone(),
                ibgp_open(OUR_ID),
                Some((code::OPEN_BAD_BGP_ID, vec![])),
            ),
            ("another identifier on iBGP", ibgp, ibgp_open(PEER_ID), None),
            (
                "our identifier on eBGP is fine (RFC 6286)",
                cfg(),
                Open {
                    router_id: OUR_ID,
                    ..peer_open(90)
                },
                None,
            ),
        ];
        for (name, cfg, open, want) in cases {
            let now = Instant::now();
            let mut fsm = fsm_in(cfg, State::OpenSent, now);
            let out = fsm.process(now, recv_open(open));
            match want {
                Some((subcode, data)) => {
                    let n = Notification {
                        code: code::OPEN,
                        subcode,
                        data,
                    };
                    let mut want = vec![Output::Send(Message::Notification(n.clone()))];
                    want.extend(down_outputs(&out, Down::Sent(n)));
                    assert_eq!(out, want, "{name}");
                    assert!(retry_delay(&out).is_some(), "{name}: reconnects");
                    assert_eq!(fsm.state(), State::Idle, "{name}");
                }
                None => {
                    assert_eq!(out[0], Output::Send(Message::Keepalive), "{name}");
                    assert_eq!(fsm.state(), State::OpenConfirm, "{name}");
                }
            }
        }
    }

    #[test]
    fn two_octet_only_peer_negotiates_without_four_octet_as() {
        let now = Instant::now();
        let mut fsm = fsm_in(cfg(), State::OpenSent, now);
        let open = Open {
            capabilities: vec![mp(AFI_IPV4)],
            ..peer_open(90)
        };
        let _ = fsm.process(now, recv_open(open));
        let out = fsm.process(now, Input::Received(Message::Keepalive));
        let Some(Output::Established(neg)) = out.last() else {
            panic!("not established: {out:?}");
        };
        assert!(!neg.four_octet_as);
        assert_eq!(neg.peer_as, PEER_AS);
        assert!(neg.ipv4 && !neg.ipv6 && !neg.route_refresh);
    }

    #[test]
    fn address_families_follow_the_peers_multiprotocol_capabilities() {
        // (peer capabilities, ipv4, ipv6)
        let cases = [
            (vec![], true, false), // RFC 4760 §8: no MP capability = IPv4 unicast
            (vec![Capability::RouteRefresh], true, false),
            (vec![mp(AFI_IPV4)], true, false),
            (vec![mp(AFI_IPV6)], false, true),
            (vec![mp(AFI_IPV4), mp(AFI_IPV6)], true, true),
            (
                vec![Capability::Multiprotocol {
                    afi: AFI_IPV4,
                    safi: 128,
                }],
                false,
                false,
            ),
        ];
        for (caps, ipv4, ipv6) in cases {
            let now = Instant::now();
            let mut fsm = fsm_in(cfg(), State::OpenSent, now);
            let open = Open {
                capabilities: caps.clone(),
                ..peer_open(90)
            };
            let _ = fsm.process(now, recv_open(open));
            let _ = fsm.process(now, Input::Received(Message::Keepalive));
            let neg = fsm.negotiated().expect("established");
            assert_eq!((neg.ipv4, neg.ipv6), (ipv4, ipv6), "{caps:?}");
        }
    }

    #[test]
    fn hold_timer_expiry_sends_4_0_and_reports_hold_timer_expired() {
        for state in [State::OpenSent, State::OpenConfirm, State::Established] {
            let now = Instant::now();
            let mut fsm = fsm_in(cfg(), state, now);
            let out = fsm.process(now, Input::Fired(Timer::Hold));
            let mut want = vec![Output::Send(Message::Notification(notification(4, 0)))];
            want.extend(down_outputs(&out, Down::HoldTimerExpired));
            assert_eq!(out, want, "{state:?}");
            assert!(retry_delay(&out).is_some());
            assert_eq!(fsm.state(), State::Idle);
            assert_eq!(fsm.negotiated(), None);
        }
    }

    #[test]
    fn hold_time_zero_means_no_keepalives_and_no_hold_timer() {
        // Zero on our side, on the peer's, on both.
        for (ours, theirs) in [(0, 90), (90, 0), (0, 0)] {
            let now = Instant::now();
            let mut fsm = fsm_in(
                Config {
                    hold_time: ours,
                    ..cfg()
                },
                State::OpenSent,
                now,
            );
            let out = fsm.process(now, recv_open(peer_open(theirs)));
            assert_eq!(
                out,
                vec![
                    Output::Send(Message::Keepalive),
                    Output::Cancel(Timer::Hold)
                ]
            );
            let out = fsm.process(now, Input::Received(Message::Keepalive));
            assert!(
                matches!(out.as_slice(), [Output::Established(n)] if n.hold_time == 0 && n.keepalive == 0)
            );
            for input in [
                Input::Received(Message::Keepalive),
                Input::Received(Message::Update(Update::default())),
                Input::Fired(Timer::Hold),
                Input::Fired(Timer::Keepalive),
            ] {
                assert_eq!(fsm.process(now, input), vec![]);
            }
            assert_eq!(fsm.state(), State::Established);
        }
    }

    #[test]
    fn keepalive_is_min_of_configured_and_a_third_of_hold() {
        // (our hold, configured keepalive, peer hold, negotiated hold, keepalive)
        let cases = [
            (90, None, 90, 90, 30),
            (90, None, 180, 90, 30),
            (180, None, 30, 30, 10),
            (90, Some(10), 90, 90, 10),
            (90, Some(60), 90, 90, 30),
            (90, Some(0), 90, 90, 30),
            (3, None, 90, 3, 1),
            (4, Some(1), 90, 4, 1),
            (5, None, 90, 5, 1),
            (65535, None, 65535, 65535, 21845),
            (1, None, 90, 3, 1), // invalid config raised to 3
        ];
        for (ours, ka, theirs, hold, keepalive) in cases {
            let now = Instant::now();
            let mut fsm = fsm_in(
                Config {
                    hold_time: ours,
                    keepalive: ka,
                    ..cfg()
                },
                State::OpenSent,
                now,
            );
            let out = fsm.process(now, recv_open(peer_open(theirs)));
            let case = format!("ours {ours} keepalive {ka:?} theirs {theirs}");
            assert_eq!(
                out,
                vec![
                    Output::Send(Message::Keepalive),
                    Output::Arm(Timer::Hold, secs(hold)),
                    Output::Arm(Timer::Keepalive, secs(keepalive)),
                ],
                "{case}"
            );
            let _ = fsm.process(now, Input::Received(Message::Keepalive));
            let neg = fsm.negotiated().expect("established");
            assert_eq!((neg.hold_time, neg.keepalive), (hold, keepalive), "{case}");
            assert_eq!(
                fsm.process(now, Input::Fired(Timer::Keepalive)),
                vec![
                    Output::Send(Message::Keepalive),
                    Output::Arm(Timer::Keepalive, secs(keepalive))
                ],
                "{case}"
            );
        }
    }

    #[test]
    fn received_messages_rearm_the_hold_timer() {
        let now = Instant::now();
        let mut fsm = fsm_in(
            Config {
                hold_time: 30,
                ..cfg()
            },
            State::Established,
            now,
        );
        let hold = Output::Arm(Timer::Hold, Duration::from_secs(30));
        assert_eq!(
            fsm.process(now, Input::Received(Message::Keepalive)),
            vec![hold.clone()]
        );
        let update = Update {
            nlri: vec!["192.0.2.0/24".parse().expect("prefix")],
            ..Default::default()
        };
        assert_eq!(
            fsm.process(now, Input::Received(Message::Update(update))),
            vec![hold.clone()],
            "UPDATE contents are ignored"
        );
        assert_eq!(
            fsm.process(
                now,
                Input::Received(Message::RouteRefresh(RouteRefresh { afi: 1, safi: 1 }))
            ),
            vec![hold, Output::RouteRefresh { afi: 1, safi: 1 }]
        );
        assert_eq!(fsm.state(), State::Established);
    }

    #[test]
    fn unexpected_messages_are_fsm_errors_per_state() {
        let rr = Message::RouteRefresh(RouteRefresh { afi: 1, safi: 1 });
        let upd = Message::Update(Update::default());
        let open = Message::Open(peer_open(90));
        let cases = [
            (State::OpenSent, Message::Keepalive, code::FSM_IN_OPENSENT),
            (State::OpenSent, upd.clone(), code::FSM_IN_OPENSENT),
            (State::OpenSent, rr.clone(), code::FSM_IN_OPENSENT),
            (State::OpenConfirm, open.clone(), code::FSM_IN_OPENCONFIRM),
            (State::OpenConfirm, upd, code::FSM_IN_OPENCONFIRM),
            (State::OpenConfirm, rr, code::FSM_IN_OPENCONFIRM),
            (State::Established, open, code::FSM_IN_ESTABLISHED),
        ];
        for (state, msg, subcode) in cases {
            let now = Instant::now();
            let mut fsm = fsm_in(cfg(), state, now);
            let kind = msg.kind();
            let out = fsm.process(now, Input::Received(msg));
            let n = notification(code::FSM, subcode);
            let mut want = vec![Output::Send(Message::Notification(n.clone()))];
            want.extend(down_outputs(&out, Down::Sent(n)));
            assert_eq!(out, want, "{kind} in {state:?}");
            assert!(retry_delay(&out).is_some());
            assert_eq!(fsm.state(), State::Idle);
        }
    }

    #[test]
    fn a_notification_from_the_peer_ends_the_session_without_an_answer() {
        for state in [State::OpenSent, State::OpenConfirm, State::Established] {
            let now = Instant::now();
            let mut fsm = fsm_in(cfg(), state, now);
            let n = notification(code::CEASE, code::CEASE_ADMIN_SHUTDOWN);
            let out = fsm.process(now, Input::Received(Message::Notification(n.clone())));
            let why = Down::Received(n);
            assert_eq!(why.reason(), "notification_received");
            assert_eq!(out, down_outputs(&out, why), "{state:?}");
            assert!(retry_delay(&out).is_some());
            assert_eq!(fsm.state(), State::Idle);
        }
    }

    #[test]
    fn a_malformed_message_is_answered_with_the_codecs_notification() {
        let err = DecodeError {
            code: code::UPDATE,
            subcode: code::UPDATE_INVALID_ORIGIN,
            data: vec![0x40, 1, 1, 7],
            what: "bad origin",
        };
        for state in [State::OpenSent, State::OpenConfirm, State::Established] {
            let now = Instant::now();
            let mut fsm = fsm_in(cfg(), state, now);
            let out = fsm.process(now, Input::Malformed(err.clone()));
            let n = err.notification();
            let mut want = vec![Output::Send(Message::Notification(n.clone()))];
            want.extend(down_outputs(&out, Down::Sent(n)));
            assert_eq!(out, want, "{state:?}");
        }
        // No connection: nothing to answer on.
        for state in [State::Idle, State::Connect] {
            let mut fsm = fsm_in(cfg(), state, Instant::now());
            assert_eq!(
                fsm.process(Instant::now(), Input::Malformed(err.clone())),
                []
            );
            assert_eq!(fsm.state(), state);
        }
    }

    #[test]
    fn closed_and_connect_failed_go_down_and_schedule_a_reconnect() {
        let now = Instant::now();
        let mut fsm = fsm_in(cfg(), State::Connect, now);
        let out = fsm.process(now, Input::ConnectFailed);
        assert_eq!(out, down_outputs(&out, Down::ConnectFailed));
        assert_jittered(retry_delay(&out).expect("retry"), 1);
        assert_eq!(fsm.state(), State::Idle);

        assert_eq!(
            fsm.process(now, Input::Fired(Timer::ConnectRetry)),
            vec![Output::Connect]
        );
        assert_eq!(fsm.state(), State::Connect);

        for state in [State::OpenSent, State::OpenConfirm, State::Established] {
            let mut fsm = fsm_in(cfg(), state, now);
            let out = fsm.process(now, Input::Closed);
            assert_eq!(out, down_outputs(&out, Down::Closed), "{state:?}");
            assert!(retry_delay(&out).is_some());
            // Once is enough: a second report of the same close is ignored.
            assert_eq!(fsm.process(now, Input::Closed), []);
            assert_eq!(fsm.process(now, Input::ConnectFailed), []);
        }
    }

    /// Fails `n` connection attempts in a row; returns the reconnect delays.
    fn fail_attempts(fsm: &mut Fsm, now: Instant, n: usize) -> Vec<Duration> {
        let mut delays = Vec::new();
        for _ in 0..n {
            if fsm.state() == State::Idle {
                assert_eq!(
                    fsm.process(now, Input::Fired(Timer::ConnectRetry)),
                    [Output::Connect]
                );
            }
            let out = fsm.process(now, Input::ConnectFailed);
            delays.push(retry_delay(&out).expect("retry armed"));
        }
        delays
    }

    #[test]
    fn backoff_doubles_from_one_second_and_is_capped() {
        let now = Instant::now();
        let mut fsm = fsm_in(cfg(), State::Connect, now);
        let delays = fail_attempts(&mut fsm, now, 20);
        for (i, d) in delays.iter().enumerate() {
            assert_jittered(*d, i as u32 + 1);
            assert!(*d <= MAX_BACKOFF);
        }
        // From the 8th failure on the base is capped at 2 minutes.
        assert!(delays[7..].iter().all(|d| *d >= MAX_BACKOFF / 2));
    }

    #[test]
    fn jitter_is_deterministic_per_seed_and_differs_between_seeds() {
        let now = Instant::now();
        let run = |seed| {
            let mut fsm = fsm_in(Config { seed, ..cfg() }, State::Connect, now);
            fail_attempts(&mut fsm, now, 12)
        };
        assert_eq!(run(1), run(1));
        assert_eq!(run(0), run(0));
        assert_ne!(run(1), run(2));
        assert_ne!(run(0), run(1));
        // The jitter actually spreads: capped delays are not all equal.
        let capped = &run(3)[8..];
        assert!(capped.iter().any(|d| *d != capped[0]), "{capped:?}");
    }

    #[test]
    fn backoff_does_not_reset_after_a_short_session() {
        // The peer accepts the OPEN and drops the session at once (MetalLB #1114).
        let mut now = Instant::now();
        let mut fsm = fsm_in(cfg(), State::Connect, now);
        for n in 1..=10u32 {
            if fsm.state() == State::Idle {
                let _ = fsm.process(now, Input::Fired(Timer::ConnectRetry));
            }
            let _ = fsm.process(now, connected());
            let _ = fsm.process(now, recv_open(peer_open(90)));
            let out = fsm.process(now, Input::Received(Message::Keepalive));
            assert!(matches!(out.last(), Some(Output::Established(_))));
            now += STABLE - Duration::from_millis(1);
            let out = fsm.process(now, Input::Closed);
            assert_jittered(retry_delay(&out).expect("retry"), n);
        }
    }

    #[test]
    fn backoff_resets_after_a_session_that_stayed_up_for_stable() {
        let mut now = Instant::now();
        let mut fsm = fsm_in(cfg(), State::Connect, now);
        let _ = fail_attempts(&mut fsm, now, 6);
        let _ = fsm.process(now, Input::Fired(Timer::ConnectRetry));
        for input in [
            connected(),
            recv_open(peer_open(90)),
            Input::Received(Message::Keepalive),
        ] {
            let _ = fsm.process(now, input);
        }
        assert_eq!(fsm.state(), State::Established);
        now += STABLE;
        let out = fsm.process(now, Input::Closed);
        assert_jittered(retry_delay(&out).expect("retry"), 1);
        // And it grows again from there.
        let delays = fail_attempts(&mut fsm, now, 3);
        for (i, d) in delays.iter().enumerate() {
            assert_jittered(*d, i as u32 + 2);
        }
    }

    #[test]
    fn stop_sends_cease_with_the_subcode_and_never_reconnects_until_start() {
        for state in [State::OpenSent, State::OpenConfirm, State::Established] {
            let now = Instant::now();
            let mut fsm = fsm_in(cfg(), state, now);
            let out = fsm.process(
                now,
                Input::Stop {
                    subcode: code::CEASE_PEER_DECONFIGURED,
                },
            );
            assert_eq!(
                out,
                vec![
                    Output::Send(Message::Notification(notification(6, 3))),
                    Output::Close,
                    Output::Cancel(Timer::Hold),
                    Output::Cancel(Timer::Keepalive),
                    Output::Down(Down::Stopped),
                ],
                "{state:?}"
            );
            assert_eq!(fsm.state(), State::Idle);
            // Nothing brings it back but Start.
            for input in [
                Input::Fired(Timer::ConnectRetry),
                Input::Fired(Timer::Hold),
                Input::Fired(Timer::Keepalive),
                Input::Closed,
                Input::ConnectFailed,
                Input::Received(Message::Keepalive),
                Input::Stop { subcode: 2 },
            ] {
                assert_eq!(fsm.process(now, input), []);
                assert_eq!(fsm.state(), State::Idle);
            }
            assert_eq!(fsm.process(now, Input::Start), [Output::Connect]);
        }
    }

    #[test]
    fn stop_while_connecting_abandons_the_attempt() {
        let now = Instant::now();
        let mut fsm = fsm_in(cfg(), State::Connect, now);
        let out = fsm.process(now, Input::Stop { subcode: 2 });
        assert_eq!(
            out,
            vec![
                Output::Cancel(Timer::ConnectRetry),
                Output::Close,
                Output::Cancel(Timer::Hold),
                Output::Cancel(Timer::Keepalive),
                Output::Down(Down::Stopped),
            ]
        );
        // The connect completing anyway gets closed, and no OPEN goes out.
        assert_eq!(fsm.process(now, connected()), [Output::Close]);
        assert_eq!(fsm.state(), State::Idle);
    }

    #[test]
    fn stop_while_waiting_to_reconnect_cancels_the_retry_without_a_down() {
        let now = Instant::now();
        let mut fsm = fsm_in(cfg(), State::Connect, now);
        let _ = fsm.process(now, Input::ConnectFailed);
        assert_eq!(
            fsm.process(now, Input::Stop { subcode: 2 }),
            [Output::Cancel(Timer::ConnectRetry)]
        );
        assert_eq!(fsm.process(now, Input::Fired(Timer::ConnectRetry)), []);
        assert_eq!(fsm.state(), State::Idle);
        // A fresh FSM has not been started: Stop does nothing.
        assert_eq!(Fsm::new(cfg()).process(now, Input::Stop { subcode: 2 }), []);
    }

    #[test]
    fn start_while_started_is_ignored() {
        for state in [
            State::Connect,
            State::OpenSent,
            State::OpenConfirm,
            State::Established,
        ] {
            let now = Instant::now();
            let mut fsm = fsm_in(cfg(), state, now);
            assert_eq!(fsm.process(now, Input::Start), []);
            assert_eq!(fsm.state(), state);
        }
        // Waiting for the reconnect: Start does not skip the back-off.
        let now = Instant::now();
        let mut fsm = fsm_in(cfg(), State::Connect, now);
        let _ = fsm.process(now, Input::ConnectFailed);
        assert_eq!(fsm.process(now, Input::Start), []);
        assert_eq!(fsm.state(), State::Idle);
    }

    #[test]
    fn stale_timer_firings_are_ignored() {
        let cases = [
            (State::Idle, Timer::ConnectRetry), // never started
            (State::Idle, Timer::Hold),
            (State::Idle, Timer::Keepalive),
            (State::Connect, Timer::ConnectRetry),
            (State::Connect, Timer::Hold),
            (State::Connect, Timer::Keepalive),
            (State::OpenSent, Timer::ConnectRetry),
            (State::OpenSent, Timer::Keepalive),
            (State::OpenConfirm, Timer::ConnectRetry),
            (State::Established, Timer::ConnectRetry),
        ];
        for (state, timer) in cases {
            let now = Instant::now();
            let mut fsm = fsm_in(cfg(), state, now);
            assert_eq!(
                fsm.process(now, Input::Fired(timer)),
                [],
                "{timer:?} in {state:?}"
            );
            assert_eq!(fsm.state(), state);
        }
        // Keepalive armed in a session that went down, fired after the reconnect started.
        let now = Instant::now();
        let mut fsm = fsm_in(cfg(), State::Established, now);
        let _ = fsm.process(now, Input::Closed);
        let _ = fsm.process(now, Input::Fired(Timer::ConnectRetry));
        let _ = fsm.process(now, connected());
        assert_eq!(fsm.process(now, Input::Fired(Timer::Keepalive)), []);
        assert_eq!(fsm.state(), State::OpenSent);
    }

    #[test]
    fn messages_without_a_connection_are_ignored() {
        for state in [State::Idle, State::Connect] {
            let now = Instant::now();
            let mut fsm = fsm_in(cfg(), state, now);
            for msg in [
                Message::Keepalive,
                Message::Open(peer_open(90)),
                Message::Notification(notification(6, 2)),
            ] {
                assert_eq!(fsm.process(now, Input::Received(msg)), []);
            }
            assert_eq!(fsm.state(), state);
        }
    }

    #[test]
    fn graceful_restart_capability_content() {
        // (configured restart time, restarting, sent restart time)
        for (time, restarting, sent) in [(120, false, 120), (120, true, 120), (5000, false, 4095)] {
            let mut fsm = Fsm::new(Config {
                graceful_restart: Some(time),
                ..cfg()
            });
            let now = Instant::now();
            let _ = fsm.process(now, Input::Start);
            let out = fsm.process(
                now,
                Input::Connected {
                    router_id: OUR_ID,
                    restarting,
                },
            );
            let Some(Output::Send(Message::Open(open))) = out.first() else {
                panic!("no OPEN in {out:?}");
            };
            assert_eq!(
                open.capabilities,
                vec![
                    mp(AFI_IPV4),
                    mp(AFI_IPV6),
                    Capability::FourOctetAs(LOCAL_AS),
                    Capability::RouteRefresh,
                    Capability::GracefulRestart(GracefulRestart {
                        restarting,
                        restart_time: sent,
                        families: vec![(1, 1, true), (2, 1, true)],
                    }),
                ]
            );
        }
    }

    #[test]
    fn peers_graceful_restart_capability_is_reported() {
        let gr = GracefulRestart {
            restarting: true,
            restart_time: 90,
            families: vec![(1, 1, false)],
        };
        let now = Instant::now();
        let mut fsm = fsm_in(cfg(), State::OpenSent, now);
        let mut open = peer_open(90);
        open.capabilities
            .push(Capability::GracefulRestart(gr.clone()));
        let _ = fsm.process(now, recv_open(open));
        let _ = fsm.process(now, Input::Received(Message::Keepalive));
        assert_eq!(
            fsm.negotiated()
                .and_then(|n| n.peer_graceful_restart.as_ref()),
            Some(&gr)
        );
    }

    #[test]
    fn route_refresh_is_reported_for_the_families_we_advertise() {
        let now = Instant::now();
        let mut fsm = fsm_in(cfg(), State::Established, now);
        let rr = |afi, safi| Input::Received(Message::RouteRefresh(RouteRefresh { afi, safi }));
        let hold = Output::Arm(Timer::Hold, Duration::from_secs(90));
        assert_eq!(
            fsm.process(now, rr(2, 1)),
            [hold.clone(), Output::RouteRefresh { afi: 2, safi: 1 }]
        );
        // RFC 2918 §4: a family we did not advertise is ignored.
        assert_eq!(fsm.process(now, rr(1, 128)), vec![hold.clone()]);
        assert_eq!(fsm.process(now, rr(25, 70)), [hold]);
        assert_eq!(fsm.state(), State::Established);
    }

    #[test]
    fn down_reason_labels() {
        let n = notification(6, 2);
        let cases = [
            (Down::ConnectFailed, "connect_failed"),
            (Down::Closed, "closed"),
            (Down::HoldTimerExpired, "hold_timer_expired"),
            (Down::Sent(n.clone()), "notification_sent"),
            (Down::Received(n), "notification_received"),
            (Down::Stopped, "stopped"),
        ];
        for (down, label) in cases {
            assert_eq!(down.reason(), label);
        }
    }

    fn any_input() -> impl Strategy<Value = Input> {
        let open = (0u8..12).prop_map(|k| {
            let base = peer_open(90);
            Message::Open(match k {
                0 => Open { version: 3, ..base },
                1 => Open {
                    capabilities: vec![],
                    my_as: 1,
                    ..base
                },
                2 => peer_open(0),
                3 => peer_open(2),
                _ => base,
            })
        });
        let msg = prop_oneof![
            6 => open,
            6 => Just(Message::Keepalive),
            1 => Just(Message::Update(Update::default())),
            1 => (any::<u8>(), any::<u8>()).prop_map(|(c, s)| Message::Notification(notification(c, s))),
            1 => (0u16..3, 0u8..3).prop_map(|(afi, safi)| Message::RouteRefresh(RouteRefresh { afi, safi })),
        ];
        let timer = prop_oneof![
            Just(Timer::ConnectRetry),
            Just(Timer::Hold),
            Just(Timer::Keepalive)
        ];
        prop_oneof![
            1 => Just(Input::Start),
            1 => any::<u8>().prop_map(|subcode| Input::Stop { subcode }),
            4 => any::<bool>().prop_map(|restarting| Input::Connected { router_id: OUR_ID, restarting }),
            1 => Just(Input::ConnectFailed),
            1 => Just(Input::Closed),
            12 => msg.prop_map(Input::Received),
            1 => Just(Input::Malformed(DecodeError { code: 1, subcode: 2, data: vec![0, 5], what: "bad length" })),
            4 => timer.prop_map(Input::Fired),
        ]
    }

    /// A random input, or the rest of a handshake (so that sessions do get established).
    fn any_op() -> impl Strategy<Value = Vec<Input>> {
        prop_oneof![
            4 => any_input().prop_map(|i| vec![i]),
            1 => Just(vec![connected(), recv_open(peer_open(90)), Input::Received(Message::Keepalive)]),
        ]
    }

    proptest! {
        /// Random input sequences: no panic, Established only after an OPEN and a KEEPALIVE
        /// since the connection opened, one Down per attempt, and every Down but Stopped
        /// followed by exactly one reconnect timer.
        #[test]
        fn random_inputs_keep_the_invariants(
            hold in prop_oneof![Just(0u16), Just(3), Just(90)],
            seed: u64,
            steps in proptest::collection::vec((any_op(), 0u64..100), 1..150),
        ) {
            let steps = steps.into_iter().flat_map(|(inputs, dt)| {
                inputs.into_iter().enumerate().map(move |(i, input)| (input, if i == 0 { dt } else { 0 }))
            });
            let mut fsm = Fsm::new(Config { hold_time: hold, seed, ..cfg() });
            let mut now = Instant::now();
            let mut stopped = true;
            let mut in_attempt = false;
            let (mut got_open, mut got_keepalive) = (false, false);
            for (input, dt) in steps {
                now += Duration::from_secs(dt);
                let before = fsm.state();
                match &input {
                    Input::Start => stopped = false,
                    Input::Stop { .. } => stopped = true,
                    Input::Received(Message::Open(_)) if before == State::OpenSent => got_open = true,
                    Input::Received(Message::Keepalive) if got_open => got_keepalive = true,
                    _ => {}
                }
                let out = fsm.process(now, input.clone());
                if matches!(input, Input::Connected { .. })
                    && matches!(out.first(), Some(Output::Send(Message::Open(_))))
                {
                    prop_assert_eq!(before, State::Connect);
                    got_open = false;
                    got_keepalive = false;
                }
                let downs: Vec<usize> = out.iter().enumerate()
                    .filter(|(_, o)| matches!(o, Output::Down(_))).map(|(i, _)| i).collect();
                prop_assert!(downs.len() <= 1, "{:?}", out);
                let retries: Vec<Duration> = out.iter().filter_map(|o| match o {
                    Output::Arm(Timer::ConnectRetry, d) => Some(*d),
                    _ => None,
                }).collect();
                match downs.first().map(|&i| (i, &out[i])) {
                    Some((i, Output::Down(why))) => {
                        prop_assert!(in_attempt, "Down without an attempt: {:?}", out);
                        in_attempt = false;
                        prop_assert_eq!(fsm.state(), State::Idle);
                        if *why == Down::Stopped {
                            prop_assert!(retries.is_empty(), "{:?}", out);
                        } else {
                            prop_assert_eq!(retries.len(), 1, "{:?}", out);
                            prop_assert!(matches!(out.get(i + 1), Some(Output::Arm(Timer::ConnectRetry, _))), "{:?}", out);
                            prop_assert!(retries[0] >= INITIAL_BACKOFF / 2 && retries[0] <= MAX_BACKOFF);
                        }
                    }
                    _ => prop_assert!(retries.is_empty(), "retry without Down: {:?}", out),
                }
                for o in &out {
                    match o {
                        Output::Connect => {
                            prop_assert!(!stopped, "connect while stopped");
                            prop_assert!(!in_attempt, "two attempts at once");
                            in_attempt = true;
                        }
                        Output::Established(_) => {
                            prop_assert!(got_open && got_keepalive, "established without OPEN + KEEPALIVE");
                            prop_assert_eq!(before, State::OpenConfirm);
                        }
                        _ => {}
                    }
                }
                prop_assert_eq!(fsm.negotiated().is_some(), fsm.state() == State::Established);
                prop_assert_eq!(in_attempt, fsm.state() != State::Idle);
                if stopped {
                    prop_assert_eq!(fsm.state(), State::Idle);
                }
            }
        }
    }
}
