//! The speaker's I/O driver: watches, polls, gossip and the announcer around one decision
//! loop. See the [module docs](super) for the design.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ObjectReference;
use prometheus::Registry;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::k8s::events::Recorder;
use crate::k8s::source::{self, ConfigInput};
use crate::l2::announcer::Announcer;
use crate::metrics::{ClientMetrics, SpeakerMetrics};
use crate::reload::Reloader;

use crate::bgp::{self, session::Sessions};

use super::gossip::{Gossip, GossipConfig, LiveView};
use super::state::*;
use super::watches::*;
use super::world::{self, Mode, World};

/// Event source of the speaker.
pub(super) const COMPONENT: &str = "metallb-speaker";
/// Pods list period (MetalLB 0.9–0.12 RBAC grants `list` only, so the list is polled).
pub(super) const POD_POLL: Duration = Duration::from_secs(3);
/// Pods list period when Pods can be watched (the list is then only the apiserver probe).
pub(super) const POD_POLL_WATCHED: Duration = Duration::from_secs(30);
/// Pods list period while this speaker hears less than a majority (the list doubles as the
/// apiserver reachability probe for fencing).
pub(super) const POD_POLL_MINORITY: Duration = Duration::from_secs(1);
/// Event writes in flight at most; more are dropped (logged at debug), never awaited by the
/// decision loop.
pub(super) const EVENT_SLOTS: usize = 16;
/// Timeout of one Event write.
pub(super) const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one Pods list; a slower answer counts as "apiserver unreachable".
pub(super) const API_PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// Speaker flags: every flag and env var of MetalLB 0.9–0.12's speaker, plus ours.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "speaker",
    version,
    about = "metallb-rs speaker: announces LoadBalancer IPs (layer 2: ARP/NDP; BGP)"
)]
pub struct Args {
    /// The flags both binaries share.
    #[command(flatten)]
    pub common: crate::cli::CommonArgs,
    /// Address for /metrics (the node IP in MetalLB's manifests; empty: all addresses).
    #[arg(long, env = "METALLB_HOST", default_value = "")]
    pub host: String,
    /// The node this speaker runs on (required).
    #[arg(long = "node-name", env = "METALLB_NODE_NAME")]
    pub node_name: Option<String>,
    /// Address the liveness gossip binds to (the pod IP = node IP).
    #[arg(long = "ml-bindaddr", env = "METALLB_ML_BIND_ADDR")]
    pub ml_bindaddr: Option<String>,
    /// Port of the liveness gossip.
    #[arg(
        long = "ml-bindport",
        env = "METALLB_ML_BIND_PORT",
        default_value_t = 7946
    )]
    pub ml_bindport: u16,
    /// Label selector of the speaker Pods (e.g. `app=metallb,component=speaker`).
    #[arg(long = "ml-labels", env = "METALLB_ML_LABELS")]
    pub ml_labels: Option<String>,
    /// Namespace of the speaker Pods (0.9; default: the speaker's namespace).
    #[arg(long = "ml-namespace", env = "METALLB_ML_NAMESPACE")]
    pub ml_namespace: Option<String>,
    /// The shared secret authenticating the gossip (the `memberlist` Secret's `secretkey`).
    #[arg(
        long = "ml-secret-key",
        env = "METALLB_ML_SECRET_KEY",
        hide_env_values = true
    )]
    pub ml_secret_key: Option<String>,
    /// MetalLB 0.12's BGP implementation switch (`native` or `frr`); accepted, layer 2 ignores it.
    #[arg(long = "bgp-type", env = "METALLB_BGP_TYPE", default_value = "native")]
    pub bgp_type: String,
    /// Do not announce from nodes labelled
    /// `node.kubernetes.io/exclude-from-external-load-balancers` (MetalLB 0.12 ignores it).
    #[arg(long = "honour-exclude-lb-label", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub honour_exclude_lb_label: bool,
    /// Stay silent while MetalLB Go speakers (Ready speaker Pods with another image that are
    /// not in our gossip) still run: the safe rolling image swap (README).
    #[arg(long = "yield-to-go-speakers", default_value_t = true, action = clap::ArgAction::Set)]
    pub yield_to_go_speakers: bool,
    /// Advertise BGP graceful restart (RFC 4724): routers that support it keep this node's
    /// routes, marked stale, while the speaker restarts (an upgrade or a crash keeps traffic
    /// flowing), but a node that dies keeps attracting traffic for the restart time. Off by
    /// default, as in MetalLB 0.14. SIGTERM always withdraws and closes cleanly.
    #[arg(long = "bgp-graceful-restart", env = "METALLB_BGP_GRACEFUL_RESTART", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub bgp_graceful_restart: bool,
    /// For a peer with a `bfd-profile`, announce only while its BFD session is Up (`false`:
    /// announce as soon as BGP is up, for a router that does not run BFD; BFD Down still
    /// closes the BGP session).
    #[arg(long = "bfd-gates-announcements", env = "METALLB_RS_BFD_GATES_ANNOUNCEMENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub bfd_gates_announcements: bool,
    /// Restart time advertised with graceful restart, in seconds (at most 4095).
    #[arg(long = "bgp-graceful-restart-time", default_value_t = 120, value_parser = clap::value_parser!(u16).range(1..=4095))]
    pub bgp_graceful_restart_time: u16,
    /// Gossip heartbeat interval in milliseconds.
    #[arg(long = "ml-interval-ms", default_value_t = 100)]
    pub ml_interval_ms: u64,
    /// A speaker not heard from for this many milliseconds is dead.
    #[arg(long = "ml-dead-after-ms", default_value_t = 600)]
    pub ml_dead_after_ms: u64,
}

/// A compact update from a watch or poll.
#[derive(Debug)]
pub(super) enum Input {
    Config(ConfigInput),
    /// Start of a (re)list of a kind.
    Relist(Kind_),
    /// End of a (re)list: drop what was not seen.
    RelistDone(Kind_),
    Service(String, Option<(world::SvcInfo, SvcRef)>),
    /// (slice key, service key, ready nodes); `None` nodes = deleted.
    Slice(String, String, Option<BTreeSet<String>>),
    /// (service key, ready nodes); `None` = deleted.
    Endpoints(String, Option<BTreeSet<String>>),
    /// A Node; with its labels when it is this speaker's own (BGP node-selectors).
    Node(
        String,
        Option<(world::NodeInfo, Option<BTreeMap<String, String>>)>,
    ),
    /// A Pods list result (`None`: failed or timed out; `Some(None)` forbidden).
    Pods(Option<Option<BTreeMap<String, world::SpeakerPod>>>),
    /// An apiserver probe result when Pods are watched (the watch delivers the Pods).
    Api(bool),
    Live(LiveView),
    /// A BGP session's problem the config or the peer must fix.
    BgpProblem(String),
    Shutdown,
}

/// The kinds that are relisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind_ {
    Services,
    Slices,
    Endpoints,
    Nodes,
}

impl Args {
    /// Run the speaker until SIGTERM/SIGINT.
    pub async fn run(self) -> anyhow::Result<()> {
        crate::cli::init_tracing(self.common.log_level, self.common.log_format);
        let Some(me) = self.node_name.clone().filter(|n| !n.is_empty()) else {
            anyhow::bail!("must specify --node-name or METALLB_NODE_NAME");
        };
        let ns = source::namespace(self.common.namespace.clone());
        let pods_ns = self
            .ml_namespace
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| ns.clone());
        let client = source::client(self.common.kubeconfig.as_deref()).await?;
        info!(node = %me, namespace = %ns, config = %self.common.config, version = env!("CARGO_PKG_VERSION"), "Starting metallb-rs speaker");
        if self.common.enable_pprof {
            info!("--enable-pprof is accepted for compatibility; there is no pprof endpoint");
        }
        if self.bgp_type != "native" {
            info!(bgp_type = %self.bgp_type, "METALLB_BGP_TYPE is accepted for compatibility; this speaker has one implementation");
        }

        let registry = Registry::new();
        let client_metrics = ClientMetrics::register(&registry);
        let metrics = SpeakerMetrics::register(&registry);
        let ready = Arc::new(AtomicBool::new(false));
        let host: IpAddr = if self.host.is_empty() {
            IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            self.host
                .parse()
                .with_context(|| format!("--host / METALLB_HOST {:?} is not an IP", self.host))?
        };
        let listener = crate::http::bind(host, self.common.port)
            .with_context(|| format!("binding the metrics port {host}:{}", self.common.port))?;
        tokio::spawn(crate::http::serve(
            listener,
            registry.clone(),
            Some(metrics.announced.clone()),
            ready.clone(),
            crate::http::Liveness::new(
                crate::http::decision_loop().clone(),
                crate::http::SPEAKER_LIVENESS,
            ),
        ));

        let announcer = Announcer::start(metrics.layer2.clone())
            .await
            .context("starting the layer 2 announcer (needs CAP_NET_RAW)")?;
        info!(interfaces = ?announcer.interfaces(), "Layer 2 announcer started");

        let (tx, rx) = mpsc::channel(1024);
        let labels = self.ml_labels.clone().filter(|s| !s.is_empty());
        let secret = self.ml_secret_key.clone().filter(|s| !s.is_empty());
        let gossip = match (
            self.ml_bindaddr.as_deref().filter(|s| !s.is_empty()),
            &labels,
            secret,
        ) {
            (Some(_), Some(_), None) => {
                warn!("{}", super::liveness::NO_SECRET_WARNING);
                None
            }
            (Some(addr), Some(_), Some(secret)) => {
                let ip: IpAddr = addr
                    .parse()
                    .with_context(|| format!("--ml-bindaddr {addr:?} is not an IP"))?;
                let (g, mut view) = Gossip::start(GossipConfig {
                    node_name: me.clone(),
                    bind: SocketAddr::new(ip, self.ml_bindport),
                    secret: Some(secret),
                    interval: Duration::from_millis(self.ml_interval_ms.max(10)),
                    dead_after: Duration::from_millis(self.ml_dead_after_ms.max(50)),
                    rejected_metric: Some(metrics.gossip_rejected.clone()),
                })
                .await
                .context("starting the liveness gossip")?;
                let gtx = tx.clone();
                tokio::spawn(async move {
                    loop {
                        let v = view.borrow_and_update().clone();
                        if gtx.send(Input::Live(v)).await.is_err() {
                            return;
                        }
                        if view.changed().await.is_err() {
                            return;
                        }
                    }
                });
                Some(g)
            }
            _ => {
                info!(
                    "not starting fast dead node detection (gossip), need ml-bindaddr / ml-labels config; Kubernetes signals alone decide liveness"
                );
                None
            }
        };

        crate::k8s::config_source::spawn(
            &self.common,
            &client,
            &ns,
            Some(Recorder::new(client.clone(), COMPONENT, Some(me.clone()))),
            Some(client_metrics.clone()),
            tx.clone(),
            Input::Config,
        )?;
        tokio::spawn(watch_services(
            client.clone(),
            self.common.lb_class.clone(),
            tx.clone(),
        ));
        let use_slices = !self.common.disable_epslices && slices_allowed(&client).await;
        if use_slices {
            tokio::spawn(watch_slices(client.clone(), tx.clone()));
        } else {
            tokio::spawn(watch_endpoints(client.clone(), tx.clone()));
        }
        tokio::spawn(watch_nodes(client.clone(), me.clone(), tx.clone()));
        // The speaker Pods are those labelled like this node's own DaemonSet Pod when
        // METALLB_ML_LABELS is unset (MetalLB's chart with `speaker.memberlist.enabled=false`)
        // or does not select that Pod (Charmed Kubernetes' charm passes the manifests' labels
        // while Juju labels the Pods its own way): with a selector matching no speaker, no
        // node would ever be a candidate.
        let own = own_pod_labels(&client, &pods_ns, &me).await;
        let labels = match (labels, own) {
            (Some(l), Some(own)) if !selects(&l, &own) => {
                let derived = template_selector(&own);
                warn!(ml_labels = %l, selector = %derived, "METALLB_ML_LABELS does not select this speaker's own Pod; selecting speaker Pods by its labels instead");
                derived
            }
            (Some(l), _) => l,
            (None, Some(own)) => template_selector(&own),
            (None, None) => "app=metallb,component=speaker".into(),
        };
        let pods_watched = pods_watch_allowed(&client, &pods_ns).await;
        let normal_poll = if pods_watched {
            info!("Watching speaker Pods (RBAC allows it)");
            tokio::spawn(watch_pods(
                client.clone(),
                pods_ns.clone(),
                labels.clone(),
                tx.clone(),
            ));
            POD_POLL_WATCHED
        } else {
            info!(period = ?POD_POLL, "Polling speaker Pods (RBAC grants list, not watch, as in MetalLB's manifests)");
            POD_POLL
        };
        let (poll_tx, poll_rx) = watch::channel(normal_poll);
        tokio::spawn(poll_pods(
            client.clone(),
            pods_ns,
            labels,
            poll_rx,
            pods_watched,
            tx.clone(),
        ));
        {
            let tx = tx.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = tx.send(Input::Shutdown).await;
            });
        }

        // BGP sessions report what the user must fix; it reaches the loop as an input.
        let (problems, mut problems_rx) = mpsc::unbounded_channel::<String>();
        {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(p) = problems_rx.recv().await {
                    if tx.send(Input::BgpProblem(p)).await.is_err() {
                        return;
                    }
                }
            });
        }
        let mut state = State {
            me: me.clone(),
            recorder: Recorder::new(client.clone(), COMPONENT, Some(me.clone())),
            event_slots: Arc::new(tokio::sync::Semaphore::new(EVENT_SLOTS)),
            started: false,
            world: World {
                honour_exclude_label: self.honour_exclude_lb_label,
                ..Default::default()
            },
            refs: BTreeMap::new(),
            slice_owner: BTreeMap::new(),
            relisting: BTreeMap::new(),
            synced: BTreeSet::new(),
            expect_synced: BTreeSet::from([
                Kind_::Services,
                if use_slices {
                    Kind_::Slices
                } else {
                    Kind_::Endpoints
                },
                Kind_::Nodes,
            ]),
            pods_seen: false,
            api_ok: true,
            gossip_view: None,
            gossip_port: self.ml_bindport,
            gossip_started: Instant::now(),
            warmup: Duration::from_millis(self.ml_dead_after_ms.max(50) * 2),
            gossip,
            reload: Reloader::new(),
            config_ref: None,
            announcer,
            owned: BTreeMap::new(),
            last_live: BTreeSet::new(),
            mode: Mode::Normal,
            unheard: false,
            normal_poll,
            heard_ever: BTreeSet::new(),
            yield_to_go: self.yield_to_go_speakers,
            foreign: Vec::new(),
            bgp: Sessions::new(
                bgp::session::Options {
                    node_name: me.clone(),
                    graceful_restart: self
                        .bgp_graceful_restart
                        .then_some(self.bgp_graceful_restart_time),
                    problems: Some(problems),
                    bfd_gates_announcements: self.bfd_gates_announcements,
                },
                metrics.bgp.clone(),
            ),
            my_labels: BTreeMap::new(),
            bgp_owned: BTreeMap::new(),
            bgp_warned: None,
            poll_tx,
            client_metrics,
            metrics,
            ready,
        };
        state.run(rx).await
    }
}

/// The parts of a Service's object reference not in its `namespace/name` key (a few dozen
/// bytes per Service instead of a whole `ObjectReference`).
#[derive(Debug, Clone)]
pub(super) struct SvcRef {
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
}

impl SvcRef {
    pub(super) fn of(svc: &k8s_openapi::api::core::v1::Service) -> Self {
        SvcRef {
            uid: svc.metadata.uid.as_deref().map(Into::into),
            resource_version: svc.metadata.resource_version.as_deref().map(Into::into),
        }
    }

    /// The reference an Event about the Service `key` (`namespace/name`) carries.
    pub(super) fn reference(&self, key: &str) -> ObjectReference {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(ns.to_string()),
            name: Some(name.to_string()),
            uid: self.uid.as_deref().map(Into::into),
            resource_version: self.resource_version.as_deref().map(Into::into),
            ..Default::default()
        }
    }
}

/// SIGTERM or SIGINT.
pub(super) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {

    /// The speaker Pods' selector from the own Pod's labels, and when METALLB_ML_LABELS
    /// selects that Pod.
    #[test]
    fn own_pod_selector_and_matching() {
        let labels: BTreeMap<String, String> = [
            ("app.kubernetes.io/component", "speaker"),
            ("app.kubernetes.io/name", "metallb"),
            ("controller-revision-hash", "5d8f"),
            ("pod-template-generation", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            template_selector(&labels),
            "app.kubernetes.io/component=speaker,app.kubernetes.io/name=metallb"
        );
        assert!(selects("app.kubernetes.io/name=metallb", &labels));
        assert!(selects(" app.kubernetes.io/name = metallb ,", &labels));
        assert!(!selects("app=metallb,component=speaker", &labels));
        assert!(selects("app!=x", &labels), "other syntax is trusted");
    }

    use super::*;
    use clap::Parser as _;

    #[test]
    fn service_references_are_rebuilt_from_the_key() {
        let mut svc = k8s_openapi::api::core::v1::Service::default();
        svc.metadata.namespace = Some("shop".into());
        svc.metadata.name = Some("web".into());
        svc.metadata.uid = Some("u-1".into());
        svc.metadata.resource_version = Some("42".into());
        let full = crate::k8s::events::reference(&svc);
        let key = crate::k8s::service::key(&svc);
        assert_eq!(SvcRef::of(&svc).reference(&key), full);
    }

    #[test]
    fn pod_polls_are_spread_around_the_period() {
        let p = Duration::from_secs(10);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(p)).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= p.mul_f64(0.75) && *w < p.mul_f64(1.25))
        );
        assert!(waits.iter().any(|w| *w < p) && waits.iter().any(|w| *w > p));
    }

    /// What MetalLB 0.9–0.12 manifests and Helm charts pass, Go-flag style included.
    #[test]
    fn accepts_metallb_speaker_arguments() {
        let a = Args::try_parse_from([
            "speaker",
            "--port=7472",
            "--config=config",
            "--log-level=info",
            "--ml-bindport=7946",
            "--ml-labels=app=metallb,component=speaker",
            "--disable-epslices=true",
            "--enable-pprof",
            "--node-name",
            "n1",
        ])
        .expect("MetalLB speaker arguments");
        assert_eq!(a.common.port, 7472);
        assert_eq!(a.common.config, "config");
        assert!(a.common.disable_epslices && a.common.enable_pprof);
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        let b = Args::try_parse_from(["speaker", "--disable-epslices=false", "--log-level", "all"])
            .expect("explicit false");
        assert!(!b.common.disable_epslices);
        assert!(b.yield_to_go_speakers);
        assert!(Args::try_parse_from(["speaker", "--log-level=verbose"]).is_err());
    }
}
