//! The gratuitous announcement schedule (spec §6.5), as a pure state machine: it takes
//! [`Instant`]s as values and returns which IPs are due for a round. No tokio, no clock reads,
//! no sockets; the announcer asks it what to send and when to wake up next.
//!
//! MetalLB keeps a per-IP "spam window": the first trigger sends a round immediately, then a
//! 1100 ms ticker re-sends while `now < last_trigger + 5 s`, so one trigger yields rounds at
//! t ≈ 0, 1.1, 2.2, 3.3 and 4.4 s. A trigger while the window is open extends it (the ticker
//! phase is kept); a trigger after it closed opens a new window and sends immediately. An IP
//! that stops being owned is [cancelled](GratuitousSchedule::cancel) and is never due again.
//!
//! If the caller wakes up late, the missed rounds are not sent in a burst: the next round is
//! scheduled one interval after the late one.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Time between two rounds of one window (MetalLB issue #172: 1100 ms).
pub const ROUND_INTERVAL: Duration = Duration::from_millis(1100);
/// How long after the last trigger rounds keep being sent.
pub const WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    last_trigger: Instant,
    next_round: Instant,
}

/// Per-IP gratuitous windows. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct GratuitousSchedule {
    windows: BTreeMap<IpAddr, Window>,
}

impl GratuitousSchedule {
    /// No open window.
    pub fn new() -> Self {
        Self::default()
    }

    /// (Re)confirms ownership of `ip` at `now`: opens a window with a round due at `now`, or
    /// extends the open one to `now + WINDOW`.
    pub fn trigger(&mut self, ip: IpAddr, now: Instant) {
        match self.windows.get_mut(&ip) {
            Some(w) if now < w.last_trigger + WINDOW || w.next_round > now => {
                w.last_trigger = w.last_trigger.max(now);
            }
            _ => {
                self.windows.insert(
                    ip,
                    Window {
                        last_trigger: now,
                        next_round: now,
                    },
                );
            }
        }
    }

    /// Forgets `ip` (no longer owned): it is not due again until triggered anew.
    pub fn cancel(&mut self, ip: &IpAddr) {
        self.windows.remove(ip);
    }

    /// Keeps only the windows of IPs for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&IpAddr) -> bool) {
        self.windows.retain(|ip, _| keep(ip));
    }

    /// The IPs due for a round at `now`, in ascending order; advances their schedule. Windows
    /// that closed are dropped.
    pub fn poll(&mut self, now: Instant) -> Vec<IpAddr> {
        let mut due = Vec::new();
        self.windows.retain(|ip, w| {
            if w.next_round > now {
                return true;
            }
            if now >= w.last_trigger + WINDOW {
                return false;
            }
            due.push(*ip);
            let mut next = w.next_round + ROUND_INTERVAL;
            if next <= now {
                next = now + ROUND_INTERVAL;
            }
            w.next_round = next;
            true
        });
        due
    }

    /// When [`poll`](Self::poll) next has something to do (a round or a window to close), or
    /// `None` if no window is open.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.windows.values().map(|w| w.next_round).min()
    }

    /// Whether `ip` has an open window.
    pub fn is_active(&self, ip: &IpAddr) -> bool {
        self.windows.contains_key(ip)
    }

    /// Number of open windows.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no window is open.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Drives the schedule like the announcer does (sleep until next_wakeup, poll) and
    /// returns the offsets (ms) of the rounds for `ip`, with triggers injected at `triggers`.
    fn simulate(triggers: &[u64], cancel_at: Option<u64>, ip: IpAddr) -> Vec<u64> {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = GratuitousSchedule::new();
        let mut events: Vec<u64> = triggers.to_vec();
        events.sort_unstable();
        let mut rounds = Vec::new();
        let mut now_ms = 0;
        let mut pending = events.into_iter().peekable();
        loop {
            // Next event: a trigger, a cancel, or the schedule's wakeup.
            let wake = s.next_wakeup().map(|w| (w - t0).as_millis() as u64);
            let trig = pending.peek().copied();
            let cancel = cancel_at.filter(|c| *c >= now_ms && s.is_active(&ip));
            let next = [wake, trig, cancel].into_iter().flatten().min();
            let Some(next) = next else { break };
            now_ms = next;
            if trig == Some(next) {
                pending.next();
                s.trigger(ip, at(next));
            }
            if cancel == Some(next) {
                s.cancel(&ip);
            }
            for d in s.poll(at(next)) {
                assert_eq!(d, ip);
                rounds.push(next);
            }
            assert!(now_ms < 60_000, "runaway");
        }
        rounds
    }

    #[test]
    fn one_trigger_gives_five_rounds() {
        assert_eq!(
            simulate(&[0], None, ip("203.0.113.1")),
            vec![0, 1100, 2200, 3300, 4400]
        );
    }

    #[test]
    fn retrigger_extends_window_keeping_phase() {
        // Trigger at 0 and 2000: window until 7000, ticker phase from 0.
        assert_eq!(
            simulate(&[0, 2000], None, ip("2001:db8::1")),
            vec![0, 1100, 2200, 3300, 4400, 5500, 6600]
        );
    }

    #[test]
    fn trigger_after_window_closed_sends_immediately() {
        assert_eq!(
            simulate(&[0, 8000], None, ip("203.0.113.1")),
            vec![0, 1100, 2200, 3300, 4400, 8000, 9100, 10200, 11300, 12400]
        );
    }

    #[test]
    fn cancel_stops_rounds() {
        assert_eq!(simulate(&[0], Some(1500), ip("203.0.113.1")), vec![0, 1100]);
    }

    #[test]
    fn late_poll_does_not_burst() {
        let t0 = Instant::now();
        let mut s = GratuitousSchedule::new();
        let a = ip("203.0.113.1");
        s.trigger(a, t0);
        assert_eq!(s.poll(t0), vec![a]);
        // Woken 3 s late: one round, the next one interval later.
        let late = t0 + Duration::from_millis(4000);
        assert_eq!(s.poll(late), vec![a]);
        assert!(s.poll(late).is_empty());
        assert_eq!(s.next_wakeup(), Some(late + ROUND_INTERVAL));
        // 5100 >= 0 + 5 s: window closed, dropped.
        assert!(s.poll(late + ROUND_INTERVAL).is_empty());
        assert!(s.is_empty());
        assert_eq!(s.next_wakeup(), None);
    }

    #[test]
    fn several_ips_independent_and_sorted() {
        let t0 = Instant::now();
        let mut s = GratuitousSchedule::new();
        let (a, b) = (ip("203.0.113.2"), ip("203.0.113.1"));
        s.trigger(a, t0);
        s.trigger(b, t0 + Duration::from_millis(500));
        assert_eq!(s.poll(t0 + Duration::from_millis(500)), vec![b, a]);
        assert_eq!(s.len(), 2);
        s.retain(|ip| *ip == a);
        assert!(!s.is_active(&b));
        assert_eq!(s.poll(t0 + ROUND_INTERVAL), vec![a]);
        // Not due before its time.
        assert!(s.poll(t0 + Duration::from_millis(1200)).is_empty());
    }

    #[test]
    fn repeated_triggers_at_same_instant_send_once() {
        let t0 = Instant::now();
        let mut s = GratuitousSchedule::new();
        let a = ip("203.0.113.1");
        s.trigger(a, t0);
        s.trigger(a, t0);
        assert_eq!(s.poll(t0), vec![a]);
        s.trigger(a, t0);
        assert!(s.poll(t0).is_empty());
    }
}
