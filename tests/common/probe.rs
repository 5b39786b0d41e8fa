//! A layer 2 client probe, for tests and benchmarks: resolves service IPs the way a router or
//! client on the segment would, and records who answers and when.
//!
//! **Blocking API** (std threads, no tokio): every function opens its own `AF_PACKET` socket
//! (`ETH_P_ALL`, bound to one interface, outgoing frames ignored) in the calling thread's
//! network namespace, so a test thread can [`enter_netns`](metallb_rs::sys::enter_netns) the client
//! namespace and call these directly. Receive timestamps are taken in user space right after
//! `recv` returns ([`Instant`]), which is good to a few tens of microseconds on an idle host.
//!
//! * [`arp_probe_rate`]: who-has at a fixed rate, replies matched to requests (per target,
//!   first-in first-out), loss and latency percentiles, and which MAC answered.
//! * [`watch_owner`]: one probe every `interval` (ARP for IPv4, NS for IPv6), recording which
//!   MAC(s) answered each one, for failover timing ("kill → first reply from the new owner").
//! * [`ProbeSocket::observe_gratuitous`]: captures gratuitous ARP (request and reply) and
//!   unsolicited Neighbor Advertisements for an IP, with receive timestamps.
//! * [`send_raw`]: puts an arbitrary frame on the wire (malformed-frame tests).
#![allow(dead_code, unreachable_pub)] // the benchmark uses a subset

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use socket2::Socket;

use metallb_rs::l2::packet::{ArpFrame, ArpOperation, ArpPacket, MacAddr, NdpFrame, NdpMessage};
use metallb_rs::sys::{self, InterfaceInfo};

/// How long replies are still collected after the last request of a rate probe.
pub const REPLY_GRACE: Duration = Duration::from_millis(300);

/// A capture/injection socket on one interface.
#[derive(Debug)]
pub struct ProbeSocket {
    sock: Socket,
    info: InterfaceInfo,
    mac: MacAddr,
}

impl ProbeSocket {
    /// Opens a probe on interface `iface` of the calling thread's network namespace.
    pub fn open(iface: &str) -> anyhow::Result<Self> {
        let info = sys::interface_by_name(iface)?;
        let mac = info
            .mac
            .with_context(|| format!("{iface} has no ethernet address"))?;
        let sock = sys::open_packet_socket(info.index, sys::ETH_P_ALL)
            .with_context(|| format!("open AF_PACKET socket on {iface}"))?;
        let _ = sys::set_receive_buffer(&sock, 8 << 20);
        Ok(Self { sock, info, mac })
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// The interface as seen when the probe was opened.
    pub fn info(&self) -> &InterfaceInfo {
        &self.info
    }

    /// Sends one whole Ethernet frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let n = self.sock.send(frame)?;
        if n != frame.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short send"));
        }
        Ok(())
    }

    /// Receives one frame into `buf`, waiting until `deadline` at most. `None` on timeout.
    pub fn recv(&self, buf: &mut [u8], deadline: Instant) -> io::Result<Option<(Instant, usize)>> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if !sys::wait_readable(&self.sock, deadline - now)? {
                continue;
            }
            match (&self.sock).read(buf) {
                Ok(n) => return Ok(Some((Instant::now(), n))),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The sender IPv4 address used in requests: the interface's first IPv4 address, or
    /// `0.0.0.0` (an RFC 5227 probe, which responders answer too).
    pub fn sender_ipv4(&self) -> Ipv4Addr {
        self.info
            .ipv4
            .first()
            .copied()
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// A broadcast who-has for `target` from this interface.
    pub fn arp_request(&self, target: Ipv4Addr) -> ArpFrame {
        ArpFrame {
            dst: MacAddr::BROADCAST,
            src: self.mac,
            arp: ArpPacket {
                operation: ArpOperation::Request,
                sender_mac: self.mac,
                sender_ip: self.sender_ipv4(),
                target_mac: MacAddr::ZERO,
                target_ip: target,
            },
        }
    }

    /// A Neighbor Solicitation for `target` from the interface's link-local address to the
    /// target's solicited-node group, with a source link-layer address option.
    pub fn solicitation(&self, target: Ipv6Addr) -> anyhow::Result<NdpFrame> {
        let src = self
            .info
            .link_local()
            .or_else(|| self.info.ipv6.first().map(|(ip, _)| *ip))
            .with_context(|| format!("{} has no IPv6 address", self.info.name))?;
        Ok(NdpFrame::solicitation_for(src, self.mac, target))
    }

    /// The frame resolving `ip` (who-has or NS).
    pub fn request_for(&self, ip: IpAddr) -> anyhow::Result<Vec<u8>> {
        Ok(match ip {
            IpAddr::V4(v4) => self.arp_request(v4).encode().to_vec(),
            IpAddr::V6(v6) => self.solicitation(v6)?.encode(),
        })
    }

    /// Sends one request for `ip` and returns every distinct MAC that answered within
    /// `timeout` (in order of arrival).
    pub fn resolve(&self, ip: IpAddr, timeout: Duration) -> anyhow::Result<Vec<MacAddr>> {
        self.send(&self.request_for(ip)?)?;
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        let mut macs = Vec::new();
        while let Some((_, n)) = self.recv(&mut buf, deadline)? {
            if let Some(mac) = answer_for(buf.get(..n).unwrap_or(&[]), ip, self.mac)
                && !macs.contains(&mac)
            {
                macs.push(mac);
            }
        }
        Ok(macs)
    }

    /// Captures gratuitous ARP (request or reply with sender IP = target IP = `ip`) and
    /// unsolicited Neighbor Advertisements (S=0) for `ip` during `duration`. Offsets are from
    /// the call.
    pub fn observe_gratuitous(
        &self,
        ip: IpAddr,
        duration: Duration,
    ) -> anyhow::Result<Vec<GratuitousObservation>> {
        let start = Instant::now();
        let deadline = start + duration;
        let mut buf = vec![0u8; 65536];
        let mut out = Vec::new();
        while let Some((at, n)) = self.recv(&mut buf, deadline)? {
            if let Some((kind, mac)) = gratuitous_of(buf.get(..n).unwrap_or(&[]), ip) {
                out.push(GratuitousObservation {
                    at: at - start,
                    kind,
                    mac,
                });
            }
        }
        Ok(out)
    }

    /// See [`watch_owner`].
    pub fn watch_owner(
        &self,
        ip: IpAddr,
        interval: Duration,
        max: Duration,
        mut stop: impl FnMut(&[OwnerSample]) -> bool,
    ) -> anyhow::Result<Vec<OwnerSample>> {
        let request = self.request_for(ip)?;
        let start = Instant::now();
        let mut buf = vec![0u8; 65536];
        let mut samples = Vec::new();
        loop {
            let sent = Instant::now();
            self.send(&request)?;
            let window_end = sent + interval;
            let mut sample = OwnerSample {
                at: sent - start,
                macs: Vec::new(),
                latency: None,
            };
            while let Some((at, n)) = self.recv(&mut buf, window_end)? {
                if let Some(mac) = answer_for(buf.get(..n).unwrap_or(&[]), ip, self.mac) {
                    sample.latency.get_or_insert(at - sent);
                    if !sample.macs.contains(&mac) {
                        sample.macs.push(mac);
                    }
                }
            }
            samples.push(sample);
            if stop(&samples) || start.elapsed() >= max {
                return Ok(samples);
            }
        }
    }
}

/// If `frame` answers a request for `ip` sent by `our_mac` — a unicast ARP reply (not a
/// gratuitous one) or a solicited NA addressed to us — the MAC it announces.
pub fn answer_for(frame: &[u8], ip: IpAddr, our_mac: MacAddr) -> Option<MacAddr> {
    match ip {
        IpAddr::V4(v4) => {
            let f = ArpFrame::decode(frame).ok()?;
            (f.arp.operation == ArpOperation::Reply
                && f.arp.sender_ip == v4
                && !f.arp.is_gratuitous()
                && f.dst == our_mac)
                .then_some(f.arp.sender_mac)
        }
        IpAddr::V6(v6) => {
            let f = NdpFrame::decode(frame).ok()?;
            match f.msg {
                NdpMessage::Advertisement(na)
                    if na.target == v6 && na.solicited && f.dst == our_mac =>
                {
                    Some(na.target_lla.unwrap_or(f.src))
                }
                _ => None,
            }
        }
    }
}

/// What kind of gratuitous announcement was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GratuitousKind {
    /// Gratuitous ARP request (sender IP = target IP).
    ArpRequest,
    /// Gratuitous ARP reply (sender IP = target IP).
    ArpReply,
    /// Unsolicited Neighbor Advertisement (S=0).
    UnsolicitedNa,
}

/// One captured gratuitous announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GratuitousObservation {
    /// Receive time, from the start of the observation.
    pub at: Duration,
    /// Kind.
    pub kind: GratuitousKind,
    /// Announced MAC (ARP sender hardware address; NA target link-layer address, else the
    /// Ethernet source).
    pub mac: MacAddr,
}

/// If `frame` is a gratuitous announcement of `ip`, its kind and announced MAC.
pub fn gratuitous_of(frame: &[u8], ip: IpAddr) -> Option<(GratuitousKind, MacAddr)> {
    match ip {
        IpAddr::V4(v4) => {
            let f = ArpFrame::decode(frame).ok()?;
            if f.arp.sender_ip != v4 || f.arp.target_ip != v4 {
                return None;
            }
            let kind = match f.arp.operation {
                ArpOperation::Request => GratuitousKind::ArpRequest,
                ArpOperation::Reply => GratuitousKind::ArpReply,
            };
            Some((kind, f.arp.sender_mac))
        }
        IpAddr::V6(v6) => {
            let f = NdpFrame::decode(frame).ok()?;
            match f.msg {
                NdpMessage::Advertisement(na) if na.target == v6 && !na.solicited => Some((
                    GratuitousKind::UnsolicitedNa,
                    na.target_lla.unwrap_or(f.src),
                )),
                _ => None,
            }
        }
    }
}

/// One probe of [`watch_owner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerSample {
    /// When the request was sent, from the start of the watch.
    pub at: Duration,
    /// Distinct MACs that answered before the next probe, in order of arrival (empty: no
    /// answer; more than one: split brain).
    pub macs: Vec<MacAddr>,
    /// Time to the first answer.
    pub latency: Option<Duration>,
}

impl OwnerSample {
    /// The first MAC that answered.
    pub fn owner(&self) -> Option<MacAddr> {
        self.macs.first().copied()
    }
}

/// Probes `ip` every `interval` (ARP for IPv4, NS for IPv6) from `iface` and records which
/// MAC(s) answered each probe, until `stop(samples so far)` is true or `max` elapsed. Answers
/// arriving after `interval` are attributed to the next probe. Use an interval of 20 ms or
/// less for failover measurements.
pub fn watch_owner(
    iface: &str,
    ip: IpAddr,
    interval: Duration,
    max: Duration,
    stop: impl FnMut(&[OwnerSample]) -> bool,
) -> anyhow::Result<Vec<OwnerSample>> {
    ProbeSocket::open(iface)?.watch_owner(ip, interval, max, stop)
}

/// Captures gratuitous announcements of `ip` on `iface` for `duration` (see
/// [`ProbeSocket::observe_gratuitous`]; open a [`ProbeSocket`] first if the trigger must not
/// race the start of the capture).
pub fn observe_gratuitous(
    iface: &str,
    ip: IpAddr,
    duration: Duration,
) -> anyhow::Result<Vec<GratuitousObservation>> {
    ProbeSocket::open(iface)?.observe_gratuitous(ip, duration)
}

/// Sends one raw Ethernet frame on `iface`.
pub fn send_raw(iface: &str, frame: &[u8]) -> anyhow::Result<()> {
    Ok(ProbeSocket::open(iface)?.send(frame)?)
}

/// Result of [`arp_probe_rate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeReport {
    /// Requests sent.
    pub sent: u64,
    /// Requests that failed to send.
    pub send_errors: u64,
    /// Replies matched to a request.
    pub received: u64,
    /// Requests without a reply by the end of the grace period.
    pub lost: u64,
    /// Replies for a target with no outstanding request (duplicates from a second owner, or
    /// replies arriving after their request was counted lost).
    pub unmatched: u64,
    /// Median request→reply latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Maximum latency.
    pub max: Duration,
    /// Replies (matched or not) per answering MAC.
    pub replies_by_mac: BTreeMap<MacAddr, u64>,
    /// Achieved send rate over the sending period.
    pub achieved_rate: u64,
}

/// The `q`-quantile (0..=1) of sorted `v` (nearest rank), zero if empty.
pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sends who-has requests for `targets` (round robin) from `iface` at `rate_per_s` for
/// `duration`, matches unicast replies to requests (first-in first-out per target) and reports
/// loss, latency percentiles and answering MACs. Requests go out from a separate thread on
/// an absolute schedule (no drift; a late sender catches up). Replies are collected until
/// [`REPLY_GRACE`] after the last request.
pub fn arp_probe_rate(
    iface: &str,
    targets: &[Ipv4Addr],
    rate_per_s: u32,
    duration: Duration,
) -> anyhow::Result<ProbeReport> {
    anyhow::ensure!(!targets.is_empty(), "no targets");
    anyhow::ensure!(rate_per_s > 0, "rate must be positive");
    let probe = ProbeSocket::open(iface)?;
    let tx = probe.sock.try_clone().context("clone probe socket")?;
    let frames: Vec<(Ipv4Addr, [u8; ArpFrame::LEN])> = targets
        .iter()
        .map(|t| (*t, probe.arp_request(*t).encode()))
        .collect();
    let pending: Arc<Mutex<HashMap<Ipv4Addr, VecDeque<Instant>>>> = Arc::default();
    let total = (duration.as_secs_f64() * f64::from(rate_per_s))
        .round()
        .max(1.0) as u64;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate_per_s));
    let start = Instant::now() + Duration::from_millis(5);
    let sender = {
        let pending = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("arp-probe-tx".into())
            .spawn(move || {
                let (mut sent, mut errors) = (0u64, 0u64);
                for i in 0..total {
                    let at = start + period.mul_f64(i as f64);
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                    let Some((target, frame)) = frames.get((i as usize) % frames.len()) else {
                        break;
                    };
                    let t = Instant::now();
                    pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(*target)
                        .or_default()
                        .push_back(t);
                    match tx.send(frame) {
                        Ok(_) => sent += 1,
                        Err(_) => {
                            errors += 1;
                            if let Some(q) = pending
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .get_mut(target)
                            {
                                q.pop_back();
                            }
                        }
                    }
                }
                (sent, errors, Instant::now())
            })
            .context("spawn sender")?
    };
    let mut report = ProbeReport::default();
    let mut latencies = Vec::with_capacity(total as usize);
    let mut buf = vec![0u8; 65536];
    while !sender.is_finished() {
        let deadline = Instant::now() + Duration::from_millis(20);
        if let Some((at, n)) = probe.recv(&mut buf, deadline)? {
            record_reply(&probe, &buf[..n], at, &pending, &mut report, &mut latencies);
        }
    }
    let (sent, errors, finished) = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))?;
    let end = finished + REPLY_GRACE;
    while let Some((at, n)) = probe.recv(&mut buf, end)? {
        record_reply(&probe, &buf[..n], at, &pending, &mut report, &mut latencies);
    }
    report.sent = sent;
    report.send_errors = errors;
    report.lost = pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .map(|q| q.len() as u64)
        .sum();
    let send_time = finished.saturating_duration_since(start).as_secs_f64();
    report.achieved_rate = if send_time > 0.0 {
        (sent as f64 / send_time).round() as u64
    } else {
        sent
    };
    latencies.sort_unstable();
    report.p50 = percentile(&latencies, 0.50);
    report.p99 = percentile(&latencies, 0.99);
    report.max = latencies.last().copied().unwrap_or_default();
    Ok(report)
}

fn record_reply(
    probe: &ProbeSocket,
    frame: &[u8],
    at: Instant,
    pending: &Mutex<HashMap<Ipv4Addr, VecDeque<Instant>>>,
    report: &mut ProbeReport,
    latencies: &mut Vec<Duration>,
) {
    let Ok(f) = ArpFrame::decode(frame) else {
        return;
    };
    let target = f.arp.sender_ip;
    let Some(mac) = answer_for(frame, IpAddr::V4(target), probe.mac) else {
        return;
    };
    *report.replies_by_mac.entry(mac).or_insert(0) += 1;
    let sent_at = pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_mut(&target)
        .and_then(VecDeque::pop_front);
    match sent_at {
        Some(t) => {
            report.received += 1;
            latencies.push(at.saturating_duration_since(t));
        }
        None => report.unmatched += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xc]);
    const NODE: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);

    #[test]
    fn classifies_arp_answers_and_gratuitous() {
        let vip = Ipv4Addr::new(203, 0, 113, 10);
        let req = ArpFrame {
            dst: MacAddr::BROADCAST,
            src: ME,
            arp: ArpPacket {
                operation: ArpOperation::Request,
                sender_mac: ME,
                sender_ip: Ipv4Addr::new(192, 0, 2, 3),
                target_mac: MacAddr::ZERO,
                target_ip: vip,
            },
        };
        let reply = req.reply(NODE).encode();
        assert_eq!(answer_for(&reply, vip.into(), ME), Some(NODE));
        assert_eq!(answer_for(&reply, vip.into(), NODE), None, "not to us");
        assert_eq!(answer_for(&req.encode(), vip.into(), ME), None, "request");
        assert_eq!(gratuitous_of(&reply, vip.into()), None);
        for (op, kind) in [
            (ArpOperation::Request, GratuitousKind::ArpRequest),
            (ArpOperation::Reply, GratuitousKind::ArpReply),
        ] {
            let g = ArpFrame::gratuitous(op, NODE, vip).encode();
            assert_eq!(gratuitous_of(&g, vip.into()), Some((kind, NODE)));
            assert_eq!(
                gratuitous_of(&g, Ipv4Addr::new(203, 0, 113, 11).into()),
                None
            );
            assert_eq!(
                answer_for(&g, vip.into(), ME),
                None,
                "gratuitous is no answer"
            );
        }
        assert_eq!(answer_for(&[1, 2, 3], vip.into(), ME), None);
    }

    #[test]
    fn classifies_ndp_answers_and_unsolicited() {
        let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let me_ll: Ipv6Addr = "fe80::c".parse().unwrap();
        let node_ll: Ipv6Addr = "fe80::a".parse().unwrap();
        let ns = NdpFrame::solicitation_for(me_ll, ME, vip);
        let na = ns.reply(node_ll, NODE).unwrap().encode();
        assert_eq!(answer_for(&na, vip.into(), ME), Some(NODE));
        assert_eq!(gratuitous_of(&na, vip.into()), None);
        let u = NdpFrame::unsolicited_advertisement(node_ll, vip, NODE).encode();
        assert_eq!(
            gratuitous_of(&u, vip.into()),
            Some((GratuitousKind::UnsolicitedNa, NODE))
        );
        assert_eq!(answer_for(&u, vip.into(), ME), None);
        assert_eq!(answer_for(&ns.encode(), vip.into(), ME), None);
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_micros(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_micros(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_micros(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(percentile(&v[..1], 0.99), Duration::from_micros(1));
    }
}
