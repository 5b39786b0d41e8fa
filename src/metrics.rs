//! Prometheus metrics with MetalLB 0.9–0.12's exact names and labels (spec §9), so existing
//! dashboards and the Helm chart's alerts keep working. Uses the `prometheus` crate, which
//! keeps counter names as given (no `_total` appended).

use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::Arc;

/// Metric names, byte for byte as MetalLB exposes them.
pub mod names {
    /// Work items processed.
    pub const UPDATES_TOTAL: &str = "metallb_k8s_client_updates_total";
    /// Work items that failed and were retried.
    pub const UPDATE_ERRORS_TOTAL: &str = "metallb_k8s_client_update_errors_total";
    /// 1 once a config was loaded.
    pub const CONFIG_LOADED: &str = "metallb_k8s_client_config_loaded_bool";
    /// 1 while the latest config was rejected.
    pub const CONFIG_STALE: &str = "metallb_k8s_client_config_stale_bool";
    /// Usable addresses per pool.
    pub const ADDRESSES_TOTAL: &str = "metallb_allocator_addresses_total";
    /// Addresses in use per pool.
    pub const ADDRESSES_IN_USE: &str = "metallb_allocator_addresses_in_use_total";
    /// Registered by MetalLB but never set; kept for name parity.
    pub const SERVICES_ALLOCATED: &str = "metallb_allocator_services_allocated_total";
    /// metallb-rs addition: the sha256 of the config in force (label `sha256`), value 1.
    pub const CONFIG_INFO: &str = "metallb_rs_config_info";
    /// metallb-rs addition: where the config is read from (label `source`: `configmap` or
    /// `crds`), value 1.
    pub const CONFIG_SOURCE: &str = "metallb_rs_config_source";
    /// Speaker: 1 per (service, protocol, node, ip) this node announces.
    pub const SPEAKER_ANNOUNCED: &str = "metallb_speaker_announced";
    /// Speaker: ARP/NDP requests received for owned IPs.
    pub const L2_REQUESTS_RECEIVED: &str = "metallb_layer2_requests_received";
    /// Speaker: ARP/NDP replies sent.
    pub const L2_RESPONSES_SENT: &str = "metallb_layer2_responses_sent";
    /// Speaker: gratuitous ARP / unsolicited NA packets sent.
    pub const L2_GRATUITOUS_SENT: &str = "metallb_layer2_gratuitous_sent";
    /// metallb-rs addition: frames dropped by the layer 2 responder, by reason.
    pub const L2_DROPPED: &str = "metallb_rs_layer2_dropped_frames_total";
    /// metallb-rs addition: speakers this speaker currently considers alive (itself included).
    pub const SPEAKER_MEMBERS: &str = "metallb_rs_speaker_members_alive";
    /// Liveness datagrams refused, by reason.
    pub const GOSSIP_REJECTED: &str = "metallb_rs_speaker_gossip_rejected_total";
    /// metallb-rs addition: 1 while this speaker is fenced (announces nothing).
    pub const SPEAKER_FENCED: &str = "metallb_rs_speaker_fenced_bool";
    /// Speaker: 1 while the BGP session to `peer` is established.
    pub const BGP_SESSION_UP: &str = "metallb_bgp_session_up";
    /// Speaker: BGP UPDATE messages sent to `peer`.
    pub const BGP_UPDATES_TOTAL: &str = "metallb_bgp_updates_total";
    /// Speaker: prefixes `peer` has been sent.
    pub const BGP_ANNOUNCED_PREFIXES: &str = "metallb_bgp_announced_prefixes_total";
    /// Speaker: prefixes that should be advertised to `peer`.
    pub const BGP_PENDING_PREFIXES: &str = "metallb_bgp_pending_prefixes_total";
    /// metallb-rs addition: BGP messages by `peer`, `direction` (sent/received) and `type`.
    pub const BGP_MESSAGES: &str = "metallb_rs_bgp_messages_total";
    /// metallb-rs addition: NOTIFICATIONs by `peer`, `direction`, `code` and `subcode`.
    pub const BGP_NOTIFICATIONS: &str = "metallb_rs_bgp_notifications_total";
    /// metallb-rs addition: established sessions to `peer` that went down, by `reason`.
    pub const BGP_SESSION_FLAPS: &str = "metallb_rs_bgp_session_flaps_total";
    /// metallb-rs addition: malformed messages from `peer`, by `reason`.
    pub const BGP_DROPPED: &str = "metallb_rs_bgp_malformed_messages_total";
    /// metallb-rs addition: BFD session state of `peer` (RFC 5880 values: 0 AdminDown,
    /// 1 Down, 2 Init, 3 Up).
    pub const BFD_SESSION_STATE: &str = "metallb_rs_bfd_session_state";
    /// metallb-rs addition: BFD sessions to `peer` that left Up, by `diag`nostic.
    pub const BFD_SESSION_FLAPS: &str = "metallb_rs_bfd_session_flaps_total";
    /// metallb-rs addition: BFD Control packets by `peer` and `direction` (sent/received).
    pub const BFD_CONTROL_PACKETS: &str = "metallb_rs_bfd_control_packets_total";
    /// metallb-rs addition: the BFD detection time of `peer` in seconds (0 before the peer
    /// was heard).
    pub const BFD_DETECTION_TIME: &str = "metallb_rs_bfd_detection_time_seconds";
    /// metallb-rs addition: the negotiated BFD transmit interval to `peer` in seconds.
    pub const BFD_TX_INTERVAL: &str = "metallb_rs_bfd_transmit_interval_seconds";
    /// metallb-rs addition: received BFD packets discarded, by `reason`.
    pub const BFD_DISCARDED: &str = "metallb_rs_bfd_discarded_packets_total";
    /// MetalLB 0.13 FRR mode (frr-metrics): 1 while the BFD session to `peer` is up.
    pub const BFD_SESSION_UP: &str = "metallb_bfd_session_up";
    /// MetalLB 0.13 FRR mode: received BFD control packets.
    pub const BFD_CONTROL_PACKET_INPUT: &str = "metallb_bfd_control_packet_input";
    /// MetalLB 0.13 FRR mode: sent BFD control packets.
    pub const BFD_CONTROL_PACKET_OUTPUT: &str = "metallb_bfd_control_packet_output";
    /// MetalLB 0.13 FRR mode: received BFD echo packets (always 0: no echo function).
    pub const BFD_ECHO_PACKET_INPUT: &str = "metallb_bfd_echo_packet_input";
    /// MetalLB 0.13 FRR mode: sent BFD echo packets (always 0: no echo function).
    pub const BFD_ECHO_PACKET_OUTPUT: &str = "metallb_bfd_echo_packet_output";
    /// MetalLB 0.13 FRR mode: BFD session up events.
    pub const BFD_SESSION_UP_EVENTS: &str = "metallb_bfd_session_up_events";
    /// MetalLB 0.13 FRR mode: BFD session down events.
    pub const BFD_SESSION_DOWN_EVENTS: &str = "metallb_bfd_session_down_events";
}

/// The metrics both binaries export about the Kubernetes client and the config.
#[derive(Clone)]
pub struct ClientMetrics {
    /// `metallb_k8s_client_updates_total`.
    pub updates: IntCounter,
    /// `metallb_k8s_client_update_errors_total`.
    pub update_errors: IntCounter,
    /// `metallb_k8s_client_config_loaded_bool`.
    pub config_loaded: IntGauge,
    /// `metallb_k8s_client_config_stale_bool`.
    pub config_stale: IntGauge,
    /// `metallb_rs_config_info{sha256}`.
    pub config_info: IntGaugeVec,
    /// `metallb_rs_config_source{source}`.
    pub config_source: IntGaugeVec,
}

/// The controller's allocator gauges.
#[derive(Clone)]
pub struct AllocatorMetrics {
    /// `metallb_allocator_addresses_total{pool}`.
    pub addresses_total: IntGaugeVec,
    /// `metallb_allocator_addresses_in_use_total{pool}`.
    pub addresses_in_use: IntGaugeVec,
    /// `metallb_allocator_services_allocated_total{pool}`.
    pub services_allocated: IntGaugeVec,
}

/// The speaker's announcement and layer 2 metrics.
#[derive(Clone)]
pub struct SpeakerMetrics {
    /// `metallb_speaker_announced{service,protocol,node,ip}`.
    pub announced: Announced,
    /// Layer 2 responder counters.
    pub layer2: Layer2Metrics,
    /// `metallb_rs_speaker_members_alive`.
    pub members_alive: IntGauge,
    /// `metallb_rs_speaker_fenced_bool`.
    pub fenced: IntGauge,
    /// `metallb_rs_speaker_gossip_rejected_total{reason}`.
    pub gossip_rejected: IntCounterVec,
    /// BGP session metrics.
    pub bgp: BgpMetrics,
}

/// BGP session metrics: MetalLB's four (label `peer` = `ip:port`, `[v6]:port`), plus ours.
#[derive(Clone)]
pub struct BgpMetrics {
    /// `metallb_bgp_session_up{peer}`.
    pub session_up: IntGaugeVec,
    /// `metallb_bgp_updates_total{peer}`.
    pub updates: IntCounterVec,
    /// `metallb_bgp_announced_prefixes_total{peer}`.
    pub announced_prefixes: IntGaugeVec,
    /// `metallb_bgp_pending_prefixes_total{peer}`.
    pub pending_prefixes: IntGaugeVec,
    /// `metallb_rs_bgp_messages_total{peer,direction,type}`.
    pub messages: IntCounterVec,
    /// `metallb_rs_bgp_notifications_total{peer,direction,code,subcode}`.
    pub notifications: IntCounterVec,
    /// `metallb_rs_bgp_session_flaps_total{peer,reason}`.
    pub flaps: IntCounterVec,
    /// `metallb_rs_bgp_malformed_messages_total{peer,reason}`.
    pub malformed: IntCounterVec,
    /// The BFD sessions of peers with a `bfd-profile`.
    pub bfd: BfdMetrics,
}

/// BFD metrics (label `peer` = the peer's IP address, as MetalLB 0.13's FRR mode labels
/// them): ours under `metallb_rs_bfd_*` plus the names MetalLB 0.13's frr-metrics exported.
#[derive(Clone)]
pub struct BfdMetrics {
    /// `metallb_rs_bfd_session_state{peer}`.
    pub state: IntGaugeVec,
    /// `metallb_rs_bfd_session_flaps_total{peer,diag}`.
    pub flaps: IntCounterVec,
    /// `metallb_rs_bfd_control_packets_total{peer,direction}`.
    pub packets: IntCounterVec,
    /// `metallb_rs_bfd_detection_time_seconds{peer}`.
    pub detection_time: GaugeVec,
    /// `metallb_rs_bfd_transmit_interval_seconds{peer}`.
    pub tx_interval: GaugeVec,
    /// `metallb_rs_bfd_discarded_packets_total{reason}`.
    pub discarded: IntCounterVec,
    /// `metallb_bfd_session_up{peer}` (MetalLB 0.13).
    pub session_up: IntGaugeVec,
    /// `metallb_bfd_control_packet_input{peer}` (MetalLB 0.13).
    pub control_input: IntCounterVec,
    /// `metallb_bfd_control_packet_output{peer}` (MetalLB 0.13).
    pub control_output: IntCounterVec,
    /// `metallb_bfd_echo_packet_input{peer}` (MetalLB 0.13; stays 0).
    pub echo_input: IntCounterVec,
    /// `metallb_bfd_echo_packet_output{peer}` (MetalLB 0.13; stays 0).
    pub echo_output: IntCounterVec,
    /// `metallb_bfd_session_up_events{peer}` (MetalLB 0.13).
    pub up_events: IntCounterVec,
    /// `metallb_bfd_session_down_events{peer}` (MetalLB 0.13).
    pub down_events: IntCounterVec,
}

impl BfdMetrics {
    /// Unregistered metrics (for tests and tools).
    pub fn unregistered() -> Self {
        let peer = &["peer"];
        let ctr = |name: &str, help: &str, labels: &[&str]| {
            must(IntCounterVec::new(Opts::new(name, help), labels))
        };
        let secs = |name: &str, help: &str| must(GaugeVec::new(Opts::new(name, help), peer));
        let gauge = |name: &str, help: &str| must(IntGaugeVec::new(Opts::new(name, help), peer));
        BfdMetrics {
            state: gauge(
                names::BFD_SESSION_STATE,
                "BFD session state (RFC 5880: 0 AdminDown, 1 Down, 2 Init, 3 Up)",
            ),
            flaps: ctr(
                names::BFD_SESSION_FLAPS,
                "BFD sessions that left Up, by diagnostic",
                &["peer", "diag"],
            ),
            packets: ctr(
                names::BFD_CONTROL_PACKETS,
                "BFD Control packets sent and received",
                &["peer", "direction"],
            ),
            detection_time: secs(
                names::BFD_DETECTION_TIME,
                "BFD detection time in seconds (0 before the peer was heard)",
            ),
            tx_interval: secs(
                names::BFD_TX_INTERVAL,
                "BFD periodic transmit interval in seconds, before jitter",
            ),
            discarded: ctr(
                names::BFD_DISCARDED,
                "Received BFD packets discarded, by reason",
                &["reason"],
            ),
            session_up: gauge(
                names::BFD_SESSION_UP,
                "BFD session state (1 is up, 0 is down)",
            ),
            control_input: ctr(
                names::BFD_CONTROL_PACKET_INPUT,
                "Number of received BFD control packets",
                peer,
            ),
            control_output: ctr(
                names::BFD_CONTROL_PACKET_OUTPUT,
                "Number of sent BFD control packets",
                peer,
            ),
            echo_input: ctr(
                names::BFD_ECHO_PACKET_INPUT,
                "Number of received BFD echo packets",
                peer,
            ),
            echo_output: ctr(
                names::BFD_ECHO_PACKET_OUTPUT,
                "Number of sent BFD echo packets",
                peer,
            ),
            up_events: ctr(
                names::BFD_SESSION_UP_EVENTS,
                "Number of BFD session up events",
                peer,
            ),
            down_events: ctr(
                names::BFD_SESSION_DOWN_EVENTS,
                "Number of BFD session down events",
                peer,
            ),
        }
    }

    /// Create and register.
    pub fn register(reg: &Registry) -> Self {
        let m = Self::unregistered();
        for g in [&m.state, &m.session_up] {
            must(reg.register(Box::new(g.clone())));
        }
        for g in [&m.detection_time, &m.tx_interval] {
            must(reg.register(Box::new(g.clone())));
        }
        for c in [
            &m.flaps,
            &m.packets,
            &m.discarded,
            &m.control_input,
            &m.control_output,
            &m.echo_input,
            &m.echo_output,
            &m.up_events,
            &m.down_events,
        ] {
            must(reg.register(Box::new(c.clone())));
        }
        m
    }

    /// Create the series of a new session (MetalLB 0.13's appear with the session).
    pub fn start(&self, peer: &str) {
        for c in [
            &self.control_input,
            &self.control_output,
            &self.echo_input,
            &self.echo_output,
            &self.up_events,
            &self.down_events,
        ] {
            c.with_label_values(&[peer]);
        }
        self.session_up.with_label_values(&[peer]).set(0);
        self.state.with_label_values(&[peer]).set(1);
    }

    /// Drop the gauges of a removed session (counters stay).
    pub fn forget(&self, peer: &str) {
        for g in [&self.state, &self.session_up] {
            let _ = g.remove_label_values(&[peer]);
        }
        for g in [&self.detection_time, &self.tx_interval] {
            let _ = g.remove_label_values(&[peer]);
        }
    }
}

impl BgpMetrics {
    /// Unregistered metrics (for tests and tools).
    pub fn unregistered() -> Self {
        let gauge =
            |name: &str, help: &str| must(IntGaugeVec::new(Opts::new(name, help), &["peer"]));
        let ctr = |name: &str, help: &str, labels: &[&str]| {
            must(IntCounterVec::new(Opts::new(name, help), labels))
        };
        BgpMetrics {
            session_up: gauge(
                names::BGP_SESSION_UP,
                "BGP session state (1 is up, 0 is down)",
            ),
            updates: ctr(
                names::BGP_UPDATES_TOTAL,
                "Number of BGP UPDATE messages sent",
                &["peer"],
            ),
            announced_prefixes: gauge(
                names::BGP_ANNOUNCED_PREFIXES,
                "Number of prefixes currently being advertised on the BGP session",
            ),
            pending_prefixes: gauge(
                names::BGP_PENDING_PREFIXES,
                "Number of prefixes that should be advertised on the BGP session",
            ),
            messages: ctr(
                names::BGP_MESSAGES,
                "BGP messages sent and received, by type",
                &["peer", "direction", "type"],
            ),
            notifications: ctr(
                names::BGP_NOTIFICATIONS,
                "BGP NOTIFICATION messages sent and received, by error code and subcode",
                &["peer", "direction", "code", "subcode"],
            ),
            flaps: ctr(
                names::BGP_SESSION_FLAPS,
                "Established BGP sessions that went down, by reason",
                &["peer", "reason"],
            ),
            malformed: ctr(
                names::BGP_DROPPED,
                "Malformed BGP messages received (answered with a NOTIFICATION), by reason",
                &["peer", "reason"],
            ),
            bfd: BfdMetrics::unregistered(),
        }
    }

    /// Create and register.
    pub fn register(reg: &Registry) -> Self {
        let mut m = Self::unregistered();
        m.bfd = BfdMetrics::register(reg);
        for g in [&m.session_up, &m.announced_prefixes, &m.pending_prefixes] {
            must(reg.register(Box::new(g.clone())));
        }
        for c in [
            &m.updates,
            &m.messages,
            &m.notifications,
            &m.flaps,
            &m.malformed,
        ] {
            must(reg.register(Box::new(c.clone())));
        }
        m
    }

    /// Drop MetalLB's series of `peer` (MetalLB deletes them when the session is closed;
    /// our own counters stay, so a flapping peer's history survives its removal).
    pub fn forget(&self, peer: &str) {
        for g in [
            &self.session_up,
            &self.announced_prefixes,
            &self.pending_prefixes,
        ] {
            let _ = g.remove_label_values(&[peer]);
        }
        let _ = self.updates.remove_label_values(&[peer]);
    }
}

/// Counters of the layer 2 responder (labels as MetalLB: `ip`), plus our drop counter.
#[derive(Clone)]
pub struct Layer2Metrics {
    /// `metallb_layer2_requests_received{ip}`.
    pub requests_received: IntCounterVec,
    /// `metallb_layer2_responses_sent{ip}`.
    pub responses_sent: IntCounterVec,
    /// `metallb_layer2_gratuitous_sent{ip}`.
    pub gratuitous_sent: IntCounterVec,
    /// `metallb_rs_layer2_dropped_frames_total{reason}`.
    pub dropped: IntCounterVec,
}

impl Layer2Metrics {
    /// Unregistered counters (for tests and tools).
    pub fn unregistered() -> Self {
        let ctr = |name: &str, help: &str, label: &str| {
            must(IntCounterVec::new(Opts::new(name, help), &[label]))
        };
        Layer2Metrics {
            requests_received: ctr(
                names::L2_REQUESTS_RECEIVED,
                "Number of layer2 requests received for owned IPs",
                "ip",
            ),
            responses_sent: ctr(
                names::L2_RESPONSES_SENT,
                "Number of layer2 responses sent for owned IPs",
                "ip",
            ),
            gratuitous_sent: ctr(
                names::L2_GRATUITOUS_SENT,
                "Number of gratuitous layer2 packets sent for owned IPs",
                "ip",
            ),
            dropped: ctr(
                names::L2_DROPPED,
                "Frames dropped by the layer2 responder, by reason",
                "reason",
            ),
        }
    }

    /// Create and register.
    pub fn register(reg: &Registry) -> Self {
        let m = Self::unregistered();
        for c in [
            &m.requests_received,
            &m.responses_sent,
            &m.gratuitous_sent,
            &m.dropped,
        ] {
            must(reg.register(Box::new(c.clone())));
        }
        m
    }
}

impl SpeakerMetrics {
    /// Create and register.
    pub fn register(reg: &Registry) -> Self {
        let announced = Announced::new();
        let members_alive = must(IntGauge::new(
            names::SPEAKER_MEMBERS,
            "Speakers this speaker considers alive, itself included.",
        ));
        let fenced = must(IntGauge::new(
            names::SPEAKER_FENCED,
            "1 while this speaker is fenced (it reaches neither the API server nor a majority of speakers) and announces nothing.",
        ));
        let gossip_rejected = must(IntCounterVec::new(
            Opts::new(
                names::GOSSIP_REJECTED,
                "Liveness datagrams refused (malformed, unauthenticated, replayed, from an unknown sender, ...), by reason.",
            ),
            &["reason"],
        ));
        must(reg.register(Box::new(announced.clone())));
        must(reg.register(Box::new(members_alive.clone())));
        must(reg.register(Box::new(fenced.clone())));
        must(reg.register(Box::new(gossip_rejected.clone())));
        SpeakerMetrics {
            announced,
            layer2: Layer2Metrics::register(reg),
            members_alive,
            fenced,
            gossip_rejected,
            bgp: BgpMetrics::register(reg),
        }
    }
}

/// `metallb_speaker_announced{service,protocol,node,ip}`, every series with value 1.
///
/// A compact collector instead of an `IntGaugeVec`: the `prometheus` crate keeps a copy of the
/// metric's description (help text, label names) and protobuf label pairs in every child,
/// about 1.5 KiB per announced Service; with 10,000 Services that was a quarter of the
/// speaker's memory (BENCHMARKS.md, "Speaker, BGP"). Here a series costs its label values.
/// Scrapes render exactly what the `IntGaugeVec` did (labels sorted by name).
#[derive(Clone)]
pub struct Announced {
    desc: prometheus::core::Desc,
    series: Arc<std::sync::Mutex<AnnouncedSet>>,
}

/// One series' label values: service, protocol, node, IP.
type Series = (Arc<str>, &'static str, Arc<str>, Box<str>);

/// The series. The service key is the speaker's own `Arc` and the node (one per speaker) is
/// shared, so a series costs one IP string.
#[derive(Default)]
struct AnnouncedSet {
    series: std::collections::BTreeSet<Series>,
    /// The node label of the latest series added.
    node: Option<Arc<str>>,
}

impl Announced {
    fn new() -> Self {
        let desc = must(prometheus::core::Desc::new(
            names::SPEAKER_ANNOUNCED.to_string(),
            "Services being announced from this node. This is desired state, it does not guarantee that the routing protocols have converged.".to_string(),
            vec!["service".into(), "protocol".into(), "node".into(), "ip".into()],
            Default::default(),
        ));
        Announced {
            desc,
            series: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AnnouncedSet> {
        // A panic while holding the lock cannot leave the set inconsistent: recover it.
        self.series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds the series (value 1).
    pub fn set(&self, service: impl Into<Arc<str>>, protocol: &'static str, node: &str, ip: &str) {
        let mut set = self.lock();
        let node = match &set.node {
            Some(n) if **n == *node => n.clone(),
            _ => set.node.insert(node.into()).clone(),
        };
        set.series
            .insert((service.into(), protocol, node, ip.into()));
    }

    /// Removes the series; whether it existed.
    pub fn remove(
        &self,
        service: impl Into<Arc<str>>,
        protocol: &'static str,
        node: &str,
        ip: &str,
    ) -> bool {
        self.lock()
            .series
            .remove(&(service.into(), protocol, node.into(), ip.into()))
    }

    /// How many series there are.
    pub fn len(&self) -> usize {
        self.lock().series.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl prometheus::core::Collector for Announced {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    /// Nothing: the family is written as text by [`render_with`], straight from the label
    /// values. Built as protobuf families (10,000 `Metric`s, four `LabelPair`s each) a scrape
    /// cost megabytes that glibc kept afterwards.
    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        Vec::new()
    }
}

impl Announced {
    /// The family in the text exposition format, byte for byte as `TextEncoder` writes an
    /// `IntGaugeVec` (labels sorted by name; nothing when there is no series).
    fn write_text(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let set = &self.lock().series;
        if set.is_empty() {
            return;
        }
        let name = &self.desc.fq_name;
        let help = self.desc.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        // Label values rarely need escaping: no copy then (10,000 rows per scrape).
        fn esc(v: &str) -> std::borrow::Cow<'_, str> {
            if v.contains(['\\', '"', '\n']) {
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
                    .into()
            } else {
                v.into()
            }
        }
        // One allocation of the final size (megabytes with 10,000 series), not a doubling
        // chain through the allocator's heap.
        let row = name.len() + r#"{ip="",node="",protocol="",service=""} 1"#.len() + 1;
        out.reserve(
            set.iter()
                .map(|(s, p, n, i)| row + s.len() + p.len() + n.len() + i.len())
                .sum(),
        );
        // `gather` orders a family's series by their label values, labels sorted by name.
        let mut rows: Vec<_> = set.iter().collect();
        rows.sort_by(|a, b| (&a.3, &a.2, a.1, &a.0).cmp(&(&b.3, &b.2, b.1, &b.0)));
        for (service, protocol, node, ip) in rows {
            let _ = writeln!(
                out,
                "{name}{{ip=\"{}\",node=\"{}\",protocol=\"{}\",service=\"{}\"}} 1",
                esc(ip),
                esc(node),
                esc(protocol),
                esc(service)
            );
        }
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Registration only fails for invalid or duplicate names, which are constants here.
    match r {
        Ok(v) => v,
        Err(e) => panic!("metric definition error (a bug): {e}"),
    }
}

impl ClientMetrics {
    /// Create and register.
    pub fn register(reg: &Registry) -> Self {
        let updates = must(IntCounter::new(
            names::UPDATES_TOTAL,
            "Number of k8s object updates that have been processed.",
        ));
        let update_errors = must(IntCounter::new(
            names::UPDATE_ERRORS_TOTAL,
            "Number of k8s object updates that failed for some reason.",
        ));
        let config_loaded = must(IntGauge::new(
            names::CONFIG_LOADED,
            "1 if the MetalLB configuration was successfully loaded at least once.",
        ));
        let config_stale = must(IntGauge::new(
            names::CONFIG_STALE,
            "1 if running on a stale configuration, because the latest config failed to load.",
        ));
        let config_info = must(IntGaugeVec::new(
            Opts::new(
                names::CONFIG_INFO,
                "The configuration in force, by sha256 of its payload.",
            ),
            &["sha256"],
        ));
        for c in [&updates, &update_errors] {
            must(reg.register(Box::new(c.clone())));
        }
        for g in [&config_loaded, &config_stale] {
            must(reg.register(Box::new(g.clone())));
        }
        must(reg.register(Box::new(config_info.clone())));
        let config_source = must(IntGaugeVec::new(
            Opts::new(
                names::CONFIG_SOURCE,
                "Where the configuration is read from: the ConfigMap (configmap) or the metallb.io objects (crds).",
            ),
            &["source"],
        ));
        must(reg.register(Box::new(config_source.clone())));
        ClientMetrics {
            updates,
            update_errors,
            config_loaded,
            config_stale,
            config_info,
            config_source,
        }
    }

    /// Publish where the config is read from.
    pub fn set_source(&self, source: &str) {
        self.config_source.reset();
        self.config_source.with_label_values(&[source]).set(1);
    }

    /// Publish the reload state.
    pub fn set_config(&self, loaded: bool, stale: bool, sha256: Option<&str>) {
        self.config_loaded.set(i64::from(loaded));
        self.config_stale.set(i64::from(stale));
        self.config_info.reset();
        if let Some(h) = sha256 {
            self.config_info.with_label_values(&[h]).set(1);
        }
    }
}

impl AllocatorMetrics {
    /// Create and register.
    pub fn register(reg: &Registry) -> Self {
        let vec = |name: &str, help: &str| must(IntGaugeVec::new(Opts::new(name, help), &["pool"]));
        let m = AllocatorMetrics {
            addresses_total: vec(
                names::ADDRESSES_TOTAL,
                "Number of usable IP addresses, per pool",
            ),
            addresses_in_use: vec(
                names::ADDRESSES_IN_USE,
                "Number of IP addresses in use, per pool",
            ),
            services_allocated: vec(
                names::SERVICES_ALLOCATED,
                "Number of services allocated, per pool",
            ),
        };
        for g in [
            &m.addresses_total,
            &m.addresses_in_use,
            &m.services_allocated,
        ] {
            must(reg.register(Box::new(g.clone())));
        }
        m
    }
}

/// Render a registry in the Prometheus text format.
pub fn render(reg: &Registry) -> String {
    render_with(reg, None)
}

/// [`render`], with the speaker's `metallb_speaker_announced` family written in its place
/// (families are sorted by name, as `gather` sorts them).
pub fn render_with(reg: &Registry, announced: Option<&Announced>) -> String {
    let families = reg.gather();
    let mut buf = Vec::new();
    let enc = TextEncoder::new();
    match announced {
        None => {
            let _ = enc.encode(&families, &mut buf);
        }
        Some(a) => {
            let at = families.partition_point(|f| f.name() < a.desc.fq_name.as_str());
            let _ = enc.encode(&families[..at], &mut buf);
            a.write_text(&mut buf);
            let _ = enc.encode(&families[at..], &mut buf);
        }
    }
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name MetalLB's controller exposes (spec §9), byte for byte.
    #[test]
    fn controller_metric_names_match_metallb() {
        let reg = Registry::new();
        let c = ClientMetrics::register(&reg);
        let a = AllocatorMetrics::register(&reg);
        c.updates.inc();
        c.set_config(true, false, Some("abc"));
        for v in [
            &a.addresses_total,
            &a.addresses_in_use,
            &a.services_allocated,
        ] {
            v.with_label_values(&["default"]).set(0);
        }
        let text = render(&reg);
        for name in [
            "metallb_k8s_client_updates_total",
            "metallb_k8s_client_update_errors_total",
            "metallb_k8s_client_config_loaded_bool",
            "metallb_k8s_client_config_stale_bool",
            "metallb_allocator_addresses_total{pool=\"default\"}",
            "metallb_allocator_addresses_in_use_total{pool=\"default\"}",
            "metallb_allocator_services_allocated_total{pool=\"default\"}",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing in\n{text}"
            );
        }
        assert!(text.contains("metallb_k8s_client_updates_total 1"));
        assert!(text.contains("metallb_rs_config_info{sha256=\"abc\"} 1"));
    }

    /// The compact `metallb_speaker_announced` renders byte for byte as an `IntGaugeVec` of
    /// the same name and help would, and forgets removed series.
    #[test]
    fn announced_renders_as_a_gauge_vec() {
        let series = [
            ("ns/b", "bgp", "n1", "198.51.100.7"),
            ("ns/a", "layer2", "n1", "2001:db8::1"),
            ("ns/a", "layer2", "n1", "203.0.113.1"),
            ("ns/c", "bgp", "odd\"node\\with\nescapes", "198.51.100.8"),
        ];
        let (vec_reg, ours_reg) = (Registry::new(), Registry::new());
        let vec = IntGaugeVec::new(
            Opts::new(
                names::SPEAKER_ANNOUNCED,
                "Services being announced from this node. This is desired state, it does not guarantee that the routing protocols have converged.",
            ),
            &["service", "protocol", "node", "ip"],
        )
        .unwrap();
        vec_reg.register(Box::new(vec.clone())).unwrap();
        let ours = SpeakerMetrics::register(&ours_reg).announced;
        let only = |text: String| -> Vec<String> {
            text.lines()
                .filter(|l| l.contains(names::SPEAKER_ANNOUNCED))
                .map(str::to_string)
                .collect()
        };
        let render_ours = |reg: &Registry| render_with(reg, Some(&ours));
        assert!(only(render_ours(&ours_reg)).is_empty());
        for (s, p, n, ip) in series {
            vec.with_label_values(&[s, p, n, ip]).set(1);
            ours.set(s, p, n, ip);
        }
        ours.set("ns/a", "layer2", "n1", "203.0.113.1");
        assert_eq!(ours.len(), 4);
        assert_eq!(only(render_ours(&ours_reg)), only(render(&vec_reg)));
        assert_eq!(
            only(render_ours(&ours_reg)).len(),
            6,
            "HELP, TYPE and 4 series"
        );
        assert!(ours.remove("ns/b", "bgp", "n1", "198.51.100.7"));
        assert!(!ours.remove("ns/b", "bgp", "n1", "198.51.100.7"));
        vec.remove_label_values(&["ns/b", "bgp", "n1", "198.51.100.7"])
            .unwrap();
        assert_eq!(only(render_ours(&ours_reg)), only(render(&vec_reg)));
        for (s, p, n, ip) in &series[1..] {
            ours.remove(*s, p, n, ip);
        }
        assert!(ours.is_empty() && only(render_ours(&ours_reg)).is_empty());
    }

    /// Every name MetalLB's speaker exposes in layer 2 mode (spec §9), byte for byte.
    #[test]
    fn speaker_metric_names_match_metallb() {
        let reg = Registry::new();
        let s = SpeakerMetrics::register(&reg);
        s.announced.set("ns/svc", "layer2", "node-a", "203.0.113.1");
        for c in [
            &s.layer2.requests_received,
            &s.layer2.responses_sent,
            &s.layer2.gratuitous_sent,
        ] {
            c.with_label_values(&["203.0.113.1"]).inc();
        }
        let text = render_with(&reg, Some(&s.announced));
        for line in [
            "metallb_speaker_announced{ip=\"203.0.113.1\",node=\"node-a\",protocol=\"layer2\",service=\"ns/svc\"} 1",
            "metallb_layer2_requests_received{ip=\"203.0.113.1\"} 1",
            "metallb_layer2_responses_sent{ip=\"203.0.113.1\"} 1",
            "metallb_layer2_gratuitous_sent{ip=\"203.0.113.1\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn bfd_metric_names_match_metallb_0_13_frr_mode() {
        let reg = Registry::new();
        let s = SpeakerMetrics::register(&reg);
        s.bgp.bfd.start("198.51.100.2");
        s.bgp
            .bfd
            .session_up
            .with_label_values(&["198.51.100.2"])
            .set(1);
        s.bgp
            .bfd
            .control_input
            .with_label_values(&["198.51.100.2"])
            .inc();
        let text = render(&reg);
        for line in [
            "# HELP metallb_bfd_session_up BFD session state (1 is up, 0 is down)",
            "# TYPE metallb_bfd_control_packet_input counter",
            "metallb_bfd_session_up{peer=\"198.51.100.2\"} 1",
            "metallb_bfd_control_packet_input{peer=\"198.51.100.2\"} 1",
            "metallb_bfd_control_packet_output{peer=\"198.51.100.2\"} 0",
            "metallb_bfd_echo_packet_input{peer=\"198.51.100.2\"} 0",
            "metallb_bfd_echo_packet_output{peer=\"198.51.100.2\"} 0",
            "metallb_bfd_session_up_events{peer=\"198.51.100.2\"} 0",
            "metallb_bfd_session_down_events{peer=\"198.51.100.2\"} 0",
            "metallb_rs_bfd_session_state{peer=\"198.51.100.2\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
