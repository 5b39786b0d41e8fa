//! The speaker's I/O driver: watches, polls, gossip and the announcer around one decision
//! loop. See the [module docs](super) for the design.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::watcher::{self, Event as WEvent};
use kube::{Client, Resource as _};
use prometheus::Registry;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::k8s::events::{Kind, Recorder};
use crate::k8s::lean::{LeanEndpoints, LeanService, LeanSlice};
use crate::k8s::source::{self, ConfigInput};
use crate::l2::announcer::Announcer;
use crate::l2::plan::Plan;
use crate::metrics::{ClientMetrics, SpeakerMetrics};
use crate::reload::{Reload, Reloader};

use crate::bgp::{self, session::Sessions};

use super::gossip::{Gossip, GossipConfig, LiveView};
use super::world::{self, Mode, World};

/// Event source of the speaker.
const COMPONENT: &str = "metallb-speaker";
/// Pods list period (MetalLB 0.9–0.12 RBAC grants `list` only, so the list is polled).
const POD_POLL: Duration = Duration::from_secs(3);
/// Pods list period when Pods can be watched (the list is then only the apiserver probe).
const POD_POLL_WATCHED: Duration = Duration::from_secs(30);
/// Pods list period while this speaker hears less than a majority (the list doubles as the
/// apiserver reachability probe for fencing).
const POD_POLL_MINORITY: Duration = Duration::from_secs(1);
/// Event writes in flight at most; more are dropped (logged at debug), never awaited by the
/// decision loop.
const EVENT_SLOTS: usize = 16;
/// Timeout of one Event write.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one Pods list; a slower answer counts as "apiserver unreachable".
const API_PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

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
enum Input {
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
enum Kind_ {
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
        let gossip = match (
            self.ml_bindaddr.as_deref().filter(|s| !s.is_empty()),
            &labels,
        ) {
            (Some(addr), Some(_)) => {
                let ip: IpAddr = addr
                    .parse()
                    .with_context(|| format!("--ml-bindaddr {addr:?} is not an IP"))?;
                let secret = self.ml_secret_key.clone().filter(|s| !s.is_empty());
                if secret.is_none() {
                    warn!("no ml-secret-key set, liveness gossip will not be authenticated");
                }
                let (g, mut view) = Gossip::start(GossipConfig {
                    node_name: me.clone(),
                    bind: SocketAddr::new(ip, self.ml_bindport),
                    secret,
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
struct SvcRef {
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
}

impl SvcRef {
    fn of(svc: &k8s_openapi::api::core::v1::Service) -> Self {
        SvcRef {
            uid: svc.metadata.uid.as_deref().map(Into::into),
            resource_version: svc.metadata.resource_version.as_deref().map(Into::into),
        }
    }

    /// The reference an Event about the Service `key` (`namespace/name`) carries.
    fn reference(&self, key: &str) -> ObjectReference {
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
async fn shutdown_signal() {
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

/// Whether EndpointSlices can be listed (MetalLB 0.9.6's RBAC does not grant them).
/// Falls back to Endpoints only when the apiserver says no (403 under 0.9.6's RBAC, 404 on
/// clusters without discovery/v1); other errors are retried, so a blip at start does not lock
/// in the fallback.
async fn slices_allowed(client: &Client) -> bool {
    let api: Api<EndpointSlice> = Api::all(client.clone());
    let mut delay = Duration::from_millis(200);
    loop {
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return true,
            Err(e) if source::is_status(&e, 403) || source::is_status(&e, 404) => {
                warn!(error = %e, "Cannot list EndpointSlices; reading Endpoints instead");
                return false;
            }
            Err(e) => {
                warn!(error = %e, "Checking EndpointSlice access failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Watch one kind of the world: a relist is bracketed by `Relist`/`RelistDone`, objects are
/// mapped with `f` (`false`: deleted).
async fn watch_kind<K, F>(
    api: Api<K>,
    cfg: watcher::Config,
    kind: Kind_,
    tx: mpsc::Sender<Input>,
    f: F,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    F: Fn(&K, bool) -> Option<Input>,
{
    let what = format!("{kind:?}");
    crate::k8s::watch::forward(api, cfg, &what, tx, |ev| match ev {
        WEvent::Init => Some(Input::Relist(kind)),
        WEvent::InitDone => Some(Input::RelistDone(kind)),
        WEvent::InitApply(o) | WEvent::Apply(o) => f(&o, true),
        WEvent::Delete(o) => f(&o, false),
    })
    .await;
}

async fn watch_services(client: Client, lb_class: String, tx: mpsc::Sender<Input>) {
    let api: Api<LeanService> = Api::all(client);
    watch_kind(
        api,
        watcher::Config::default().page_size(500),
        Kind_::Services,
        tx,
        move |LeanService(svc), present| {
            let key = crate::k8s::service::key(svc);
            let info = present
                .then(|| world::service_info(svc, &lb_class))
                .flatten()
                .map(|(_, info)| (info, SvcRef::of(svc)));
            Some(Input::Service(key, info))
        },
    )
    .await;
}

async fn watch_slices(client: Client, tx: mpsc::Sender<Input>) {
    let api: Api<LeanSlice> = Api::all(client);
    watch_kind(
        api,
        watcher::Config::default().page_size(500),
        Kind_::Slices,
        tx,
        |LeanSlice(slice), present| {
            let slice_key = format!(
                "{}/{}",
                slice.metadata.namespace.as_deref().unwrap_or_default(),
                slice.metadata.name.as_deref().unwrap_or_default()
            );
            let (svc, nodes) = world::slice_nodes(slice)?;
            Some(Input::Slice(slice_key, svc, present.then_some(nodes)))
        },
    )
    .await;
}

async fn watch_endpoints(client: Client, tx: mpsc::Sender<Input>) {
    let api: Api<LeanEndpoints> = Api::all(client);
    watch_kind(
        api,
        watcher::Config::default().page_size(500),
        Kind_::Endpoints,
        tx,
        |LeanEndpoints(ep), present| {
            let key = format!(
                "{}/{}",
                ep.metadata.namespace.as_deref().unwrap_or_default(),
                ep.metadata.name.as_deref().unwrap_or_default()
            );
            Some(Input::Endpoints(
                key,
                present.then(|| world::endpoints_nodes(ep)),
            ))
        },
    )
    .await;
}

async fn watch_nodes(client: Client, me: String, tx: mpsc::Sender<Input>) {
    let api: Api<Node> = Api::all(client);
    watch_kind(
        api,
        watcher::Config::default(),
        Kind_::Nodes,
        tx,
        move |node, present| {
            let name = node.metadata.name.clone()?;
            let labels = (name == me).then(|| node.metadata.labels.clone().unwrap_or_default());
            Some(Input::Node(
                name,
                present.then(|| (world::node_info(node), labels)),
            ))
        },
    )
    .await;
}

/// Whether this speaker may watch Pods in `ns` (MetalLB's manifests grant only `list`; ours
/// add `watch`). Asked with a SelfSubjectAccessReview, which every authenticated user may create.
async fn pods_watch_allowed(client: &Client, ns: &str) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.to_string()),
                verb: Some("watch".into()),
                resource: Some("pods".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&kube::api::PostParams::default(), &review).await {
        Ok(r) => r.status.is_some_and(|s| s.allowed),
        Err(e) => {
            debug!(error = %e, "SelfSubjectAccessReview failed; polling Pods");
            false
        }
    }
}

fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.meta().namespace.as_deref().unwrap_or_default(),
        p.meta().name.as_deref().unwrap_or_default()
    )
}

/// The labels of this node's own DaemonSet Pod in `ns`; `None` when it cannot be found.
async fn own_pod_labels(client: &Client, ns: &str, me: &str) -> Option<BTreeMap<String, String>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().fields(&format!("spec.nodeName={me}"));
    let list = match tokio::time::timeout(API_PROBE_TIMEOUT, api.list(&lp)).await {
        Ok(Ok(list)) => list,
        Ok(Err(e)) => {
            warn!(error = %e, "Cannot list this node's Pods to find the speaker Pod labels");
            return None;
        }
        Err(_) => return None,
    };
    let own = list.items.iter().find(|p| {
        p.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
    })?;
    own.metadata.labels.clone().filter(|l| !l.is_empty())
}

/// Whether an equality selector `k=v,k2=v2` selects `labels` (other selector syntax is
/// trusted as given: true).
fn selects(selector: &str, labels: &BTreeMap<String, String>) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|t| match t.split_once('=') {
            Some((k, v)) if !k.ends_with('!') && !v.starts_with('=') => {
                labels.get(k.trim()).is_some_and(|x| x == v.trim())
            }
            _ => true,
        })
}

/// `k=v,...` of a DaemonSet Pod's labels without `controller-revision-hash` and
/// `pod-template-generation` (set per revision by the DaemonSet controller).
fn template_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "controller-revision-hash" | "pod-template-generation"
            )
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Watch the speaker Pods and send the whole (small) set after every change.
async fn watch_pods(client: Client, ns: String, labels: String, tx: mpsc::Sender<Input>) {
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let cfg = watcher::Config::default().labels(&labels);
    let mut pods: BTreeMap<String, world::SpeakerPod> = BTreeMap::new();
    let mut next: Option<BTreeMap<String, world::SpeakerPod>> = None;
    crate::k8s::watch::forward(api, cfg, "Pods", tx, move |ev| {
        let changed = match ev {
            WEvent::Init => {
                next = Some(BTreeMap::new());
                false
            }
            WEvent::InitApply(p) => {
                if let (Some(n), Some(sp)) = (next.as_mut(), world::speaker_pod(&p)) {
                    n.insert(pod_key(&p), sp);
                }
                false
            }
            WEvent::InitDone => {
                pods = next.take().unwrap_or_default();
                true
            }
            WEvent::Apply(p) => {
                match world::speaker_pod(&p) {
                    Some(sp) => pods.insert(pod_key(&p), sp),
                    None => pods.remove(&pod_key(&p)),
                };
                true
            }
            WEvent::Delete(p) => pods.remove(&pod_key(&p)).is_some(),
        };
        changed.then(|| Input::Pods(Some(Some(pods.clone()))))
    })
    .await;
}

/// Poll the speaker Pods (MetalLB's RBAC grants `list` only). The period comes from `period`
/// (shorter while this speaker hears a minority; any send on it triggers an immediate poll).
/// When the Pods are watched, the list is only the apiserver probe (limit 1).
async fn poll_pods(
    client: Client,
    ns: String,
    labels: String,
    mut period: watch::Receiver<Duration>,
    watched: bool,
    tx: mpsc::Sender<Input>,
) {
    let api: Api<Pod> = Api::namespaced(client, &ns);
    // resourceVersion=0: served from the apiserver's watch cache, not etcd, so N speakers
    // polling cost the cluster N cheap reads per period (MetalLB's RBAC grants only `list`).
    let lp = ListParams::default().labels(&labels).match_any();
    let mut forbidden_logged = false;
    loop {
        if watched {
            let ok = matches!(
                tokio::time::timeout(API_PROBE_TIMEOUT, api.list_metadata(&lp.clone().limit(1)))
                    .await,
                Ok(Ok(_))
            );
            if tx.send(Input::Api(ok)).await.is_err() {
                return;
            }
            let wait = jittered(*period.borrow_and_update());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = period.changed() => if r.is_err() { return },
            }
            continue;
        }
        let result = match tokio::time::timeout(API_PROBE_TIMEOUT, api.list(&lp)).await {
            Ok(Ok(list)) => Some(Some(
                list.items
                    .iter()
                    .filter_map(|p| world::speaker_pod(p).map(|sp| (pod_key(p), sp)))
                    .collect(),
            )),
            Ok(Err(e)) if source::is_status(&e, 403) => {
                if !forbidden_logged {
                    error!(error = %e, "Cannot list speaker Pods (MetalLB's pod-lister Role grants it): without it this speaker knows no peers and announces every IP it handles as if alone");
                    forbidden_logged = true;
                }
                Some(None)
            }
            Ok(Err(e)) => {
                debug!(error = %e, "Listing speaker Pods failed");
                None
            }
            Err(_) => {
                debug!("Listing speaker Pods timed out");
                None
            }
        };
        if tx.send(Input::Pods(result)).await.is_err() {
            return;
        }
        let wait = jittered(*period.borrow_and_update());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = period.changed() => if r.is_err() { return },
        }
    }
}

/// `period` × a uniform factor in [0.75, 1.25): the same mean, but the speakers' polls
/// spread out instead of arriving together after a DaemonSet rollout.
fn jittered(period: Duration) -> Duration {
    period.mul_f64(0.75 + fastrand::f64() * 0.5)
}

/// Everything the loop owns.
struct State {
    me: String,
    recorder: Recorder,
    /// Bounds the Event writes in flight (they run off the loop, with a timeout).
    event_slots: Arc<tokio::sync::Semaphore>,
    /// The start-up gates have passed once.
    started: bool,
    world: World,
    /// Object references of handled Services (for Events).
    /// What an Event about a Service needs beyond its key.
    refs: BTreeMap<String, SvcRef>,
    /// Slice key → service key (to drop slices that vanish during a relist).
    slice_owner: BTreeMap<String, String>,
    /// Keys seen during a running relist, per kind.
    relisting: BTreeMap<Kind_, BTreeSet<String>>,
    synced: BTreeSet<Kind_>,
    expect_synced: BTreeSet<Kind_>,
    pods_seen: bool,
    /// The latest apiserver probe (Pods list) succeeded.
    api_ok: bool,
    gossip_view: Option<LiveView>,
    gossip_port: u16,
    gossip_started: Instant,
    warmup: Duration,
    gossip: Option<Gossip>,
    reload: Reloader,
    config_ref: Option<ObjectReference>,
    announcer: Announcer,
    /// What this node announces: IP → services.
    owned: BTreeMap<IpAddr, Vec<String>>,
    last_live: BTreeSet<String>,
    mode: Mode,
    /// The Pods list period outside minority.
    normal_poll: Duration,
    /// Every node ever heard in our gossip.
    heard_ever: BTreeSet<String>,
    yield_to_go: bool,
    /// Go speakers we currently yield to.
    foreign: Vec<String>,
    /// The BGP sessions.
    bgp: Sessions,
    /// This node's labels (for the peers' node-selectors).
    my_labels: BTreeMap<String, String>,
    /// What this node announces over BGP: IP → services.
    bgp_owned: BTreeMap<IpAddr, Vec<String>>,
    /// The config (sha256) whose BGP warning was last given.
    bgp_warned: Option<String>,
    poll_tx: watch::Sender<Duration>,
    client_metrics: ClientMetrics,
    metrics: SpeakerMetrics,
    ready: Arc<AtomicBool>,
}

impl State {
    async fn run(&mut self, mut rx: mpsc::Receiver<Input>) -> anyhow::Result<()> {
        /// Inputs after which the loop hands freed memory back to the kernel.
        const TRIM_AFTER_INPUTS: usize = 1000;
        // Until the first decision, a tick re-checks the start-up gates (warm-up is a timer);
        // after that every change arrives as an input.
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut churn = 0usize;
        loop {
            crate::http::decision_loop().beat();
            tokio::select! {
                input = rx.recv() => {
                    let Some(input) = input else { break };
                    if matches!(input, Input::Shutdown) {
                        break;
                    }
                    self.apply(input).await;
                    let mut applied = 1;
                    // Fold everything already queued before deciding once.
                    while let Ok(more) = rx.try_recv() {
                        if matches!(more, Input::Shutdown) {
                            return self.shutdown().await;
                        }
                        self.apply(more).await;
                        applied += 1;
                    }
                    self.decide().await;
                    // After a burst (start-up, a relist, a mass change) hand its memory back.
                    churn += applied;
                    if churn >= TRIM_AFTER_INPUTS {
                        churn = 0;
                        crate::sys::release_free_memory_soon();
                    }
                }
                _ = tick.tick(), if !self.started => self.decide().await,
            }
        }
        self.shutdown().await
    }

    /// Post an Event without blocking the loop: a hung apiserver connection must not stop
    /// failover, fencing or shutdown.
    fn event(&self, r: ObjectReference, kind: Kind, reason: &str, msg: String) {
        let Ok(slot) = self.event_slots.clone().try_acquire_owned() else {
            debug!(reason, "Too many Event writes in flight; dropping one");
            return;
        };
        let recorder = self.recorder.clone();
        let reason = reason.to_string();
        tokio::spawn(async move {
            let write = recorder.publish(&r, kind, &reason, &msg);
            if tokio::time::timeout(EVENT_TIMEOUT, write).await.is_err() {
                debug!(reason = %reason, "Event write timed out");
            }
            drop(slot);
        });
    }

    /// Planned stop: go quiet first, then tell the other speakers (they take over on the first
    /// LEAVING heartbeat). The other order leaves both answering for the ~10 ms `leave()`
    /// spends repeating its message; this one leaves nobody answering for about a millisecond.
    async fn shutdown(&mut self) -> anyhow::Result<()> {
        info!("Shutting down: withdrawing announcements and leaving the gossip");
        self.announcer.set_owned(BTreeSet::new());
        self.bgp.shutdown(Duration::from_secs(3)).await;
        if let Some(g) = self.gossip.take() {
            g.leave().await;
        }
        Ok(())
    }

    async fn apply(&mut self, input: Input) {
        self.client_metrics.updates.inc();
        match input {
            Input::Config(c) => {
                if c.reference.is_some() {
                    self.config_ref = c.reference.clone();
                }
                let owned = self.all_announced();
                let outcome = self.reload.offer(c.payload.as_ref(), |cfg| {
                    world::check_announced(cfg, &owned)
                });
                self.handle_reload(outcome).await;
            }
            Input::Relist(k) => {
                self.relisting.insert(k, BTreeSet::new());
            }
            Input::RelistDone(k) => {
                let seen = self.relisting.remove(&k).unwrap_or_default();
                match k {
                    Kind_::Services => {
                        self.world.services.retain(|key, _| seen.contains(key));
                        self.refs.retain(|key, _| seen.contains(key));
                    }
                    Kind_::Slices => {
                        let gone: Vec<(String, String)> = self
                            .slice_owner
                            .iter()
                            .filter(|(s, _)| !seen.contains(*s))
                            .map(|(s, o)| (s.clone(), o.clone()))
                            .collect();
                        for (slice, svc) in gone {
                            self.remove_slice(&slice, &svc);
                        }
                    }
                    Kind_::Endpoints => self.world.endpoints.retain(|key, _| seen.contains(key)),
                    Kind_::Nodes => self.world.nodes.retain(|key, _| seen.contains(key)),
                }
                if k != Kind_::Nodes {
                    // The list pages are gone; hand their memory back (BENCHMARKS.md).
                    crate::sys::release_free_memory();
                }
                self.synced.insert(k);
            }
            Input::Service(key, info) => {
                self.mark_seen(Kind_::Services, &key);
                match info {
                    Some((info, r)) => {
                        self.world.services.insert(key.clone(), info);
                        self.refs.insert(key, r);
                    }
                    None => {
                        self.world.services.remove(&key);
                        self.refs.remove(&key);
                    }
                }
            }
            Input::Slice(slice, svc, nodes) => {
                self.mark_seen(Kind_::Slices, &slice);
                match nodes {
                    Some(nodes) => {
                        if let Some(old) = self.slice_owner.get(&slice).cloned()
                            && old != svc
                        {
                            self.remove_slice(&slice, &old);
                        }
                        self.slice_owner.insert(slice.clone(), svc.clone());
                        self.world
                            .endpoints
                            .entry(svc)
                            .or_default()
                            .insert(slice, nodes);
                    }
                    None => self.remove_slice(&slice, &svc),
                }
            }
            Input::Endpoints(key, nodes) => {
                self.mark_seen(Kind_::Endpoints, &key);
                match nodes {
                    Some(nodes) => {
                        self.world
                            .endpoints
                            .insert(key, BTreeMap::from([("endpoints".to_string(), nodes)]));
                    }
                    None => {
                        self.world.endpoints.remove(&key);
                    }
                }
            }
            Input::Node(name, info) => {
                self.mark_seen(Kind_::Nodes, &name);
                match info {
                    Some((i, labels)) => {
                        if let Some(l) = labels {
                            self.my_labels = l;
                        }
                        self.world.nodes.insert(name, i);
                    }
                    None => {
                        if name == self.me {
                            self.my_labels.clear();
                        }
                        self.world.nodes.remove(&name);
                    }
                }
            }
            Input::Pods(result) => match result {
                Some(pods) => {
                    self.api_ok = true;
                    self.pods_seen = true;
                    self.world.pods = pods;
                    if let Some(g) = &self.gossip {
                        let port = self.gossip_port;
                        g.set_peers(
                            self.world
                                .peer_ips(&self.me)
                                .into_iter()
                                .map(|ip| SocketAddr::new(ip, port))
                                .collect(),
                        );
                    }
                }
                None => {
                    self.api_ok = false;
                    self.client_metrics.update_errors.inc();
                }
            },
            Input::Api(ok) => {
                self.api_ok = ok;
                if !ok {
                    self.client_metrics.update_errors.inc();
                }
            }
            Input::Live(view) => {
                self.heard_ever.extend(view.alive.iter().cloned());
                // A speaker we hear but have not listed yet (it just started): list again now,
                // so both sides elect from the same set without waiting for the next poll.
                if let Some(pods) = &self.world.pods
                    && view
                        .alive
                        .iter()
                        .any(|n| n != &self.me && !pods.values().any(|p| &p.node == n))
                {
                    self.poll_tx.send_modify(|_| {});
                }
                self.gossip_view = Some(view);
            }
            Input::BgpProblem(msg) => {
                error!("{msg}");
                if let Some(r) = self.config_ref.clone() {
                    self.event(r, Kind::Warning, "BGPSessionFailed", msg);
                }
            }
            Input::Shutdown => {}
        }
    }

    fn mark_seen(&mut self, kind: Kind_, key: &str) {
        if let Some(seen) = self.relisting.get_mut(&kind) {
            seen.insert(key.to_string());
        }
    }

    fn remove_slice(&mut self, slice: &str, svc: &str) {
        self.slice_owner.remove(slice);
        if let Some(by) = self.world.endpoints.get_mut(svc) {
            by.remove(slice);
            if by.is_empty() {
                self.world.endpoints.remove(svc);
            }
        }
    }

    async fn handle_reload(&mut self, outcome: Reload) {
        match outcome {
            Reload::Unchanged => {}
            Reload::Applied { sha256, config } => {
                info!(sha256 = %sha256, pools = config.pools.len(), "Config loaded");
                if let Some(r) = self.config_ref.clone() {
                    let msg = format!(
                        "config {} applied on node {}: {} pools",
                        &sha256[..12.min(sha256.len())],
                        self.me,
                        config.pools.len()
                    );
                    self.event(r, Kind::Normal, "ConfigLoaded", msg);
                }
            }
            Reload::Rejected { sha256, why } => {
                self.client_metrics.update_errors.inc();
                warn!(sha256 = %sha256, reason = why.reason(), error = %why, "Config rejected; keeping the previous one");
                if let Some(r) = self.config_ref.clone() {
                    let msg = format!(
                        "config {} rejected by the speaker on node {}, the previous config stays in force: {why}",
                        &sha256[..12.min(sha256.len())],
                        self.me
                    );
                    self.event(r, Kind::Warning, why.reason(), msg);
                }
            }
            Reload::Missing => {
                if self.reload.loaded() {
                    warn!("The config is gone; keeping the last good one (announcements continue)");
                } else {
                    warn!("No config yet: nothing is announced until the ConfigMap exists");
                }
            }
        }
        self.client_metrics.set_config(
            self.reload.loaded(),
            self.reload.stale(),
            self.reload.current_sha256(),
        );
    }

    /// Recompute what this node announces and push the difference out.
    async fn decide(&mut self) {
        let synced = self.expect_synced.is_subset(&self.synced) && self.pods_seen;
        let warm = self.gossip.is_none() || self.gossip_started.elapsed() >= self.warmup;
        self.ready
            .store(synced && self.reload.loaded(), Ordering::Relaxed);
        let Some(config) = self.reload.current().cloned() else {
            return;
        };
        if !synced || !warm {
            return;
        }
        self.started = true;
        let known = self.world.known_speakers(&self.me);
        let gossip_alive = self.gossip_view.as_ref().map(|v| &v.alive);
        let mode = world::mode(
            gossip_alive.map(|a| a.len()),
            known,
            self.api_ok,
            self.heard_ever.len() > 1,
        );
        if mode != self.mode {
            match mode {
                Mode::Normal => info!(known, "Hearing a majority of the speakers"),
                Mode::KubernetesOnly => warn!(
                    known,
                    heard = gossip_alive.map(|a| a.len()).unwrap_or(0),
                    "Hearing less than half of the speakers; deciding from Kubernetes signals alone"
                ),
                Mode::Fenced => warn!(
                    known,
                    "Fenced: neither the apiserver nor a majority of the speakers is reachable; announcing nothing"
                ),
            }
            let _ = self.poll_tx.send(if mode == Mode::Normal {
                self.normal_poll
            } else {
                POD_POLL_MINORITY
            });
            self.mode = mode;
        }
        self.metrics.fenced.set(i64::from(mode == Mode::Fenced));
        let live = match mode {
            Mode::Normal => self.world.live_speakers(&self.me, gossip_alive),
            Mode::KubernetesOnly => self.world.live_speakers(&self.me, None),
            Mode::Fenced => BTreeSet::new(),
        };
        self.metrics
            .members_alive
            .set(gossip_alive.map_or(live.len(), |a| a.len()) as i64);
        let foreign = if self.gossip.is_some() && self.yield_to_go {
            let alive = self
                .gossip_view
                .as_ref()
                .map(|v| v.alive.clone())
                .unwrap_or_default();
            self.world.foreign_speakers(&self.me, &alive)
        } else {
            Vec::new()
        };
        if foreign != self.foreign {
            if foreign.is_empty() {
                info!("No MetalLB Go speaker is Ready any more; announcing");
            } else {
                warn!(nodes = ?foreign, "MetalLB Go speakers are still Ready on these nodes; announcing nothing until they are gone (--yield-to-go-speakers)");
            }
            self.foreign = foreign;
        }
        let plan = if mode == Mode::Fenced || !self.foreign.is_empty() {
            Plan::default()
        } else {
            self.world.plan(&config, &live, &self.me)
        };
        self.push(plan, &live).await;
        self.decide_bgp(&config).await;
    }

    /// Every IP this node announces (layer 2 and BGP), with its services.
    fn all_announced(&self) -> BTreeMap<IpAddr, Vec<String>> {
        let mut all = self.owned.clone();
        for (ip, svcs) in &self.bgp_owned {
            all.entry(*ip).or_default().extend(svcs.iter().cloned());
        }
        all
    }

    /// Retry a config rejected as stale, now that the announcements changed.
    async fn retry_pending(&mut self) {
        if self.reload.has_pending() {
            let owned = self.all_announced();
            if let Some(outcome) = self.reload.retry(|c| world::check_announced(c, &owned)) {
                self.handle_reload(outcome).await;
            }
        }
    }

    /// BGP: run the sessions of the peers that select this node and give them the routes
    /// (spec §7.5–§7.7). Unlike layer 2, BGP announcements do not depend on the liveness
    /// of other speakers, on fencing or on the Go-speaker yield: every eligible node
    /// announces (routers spread traffic over all of them), as in MetalLB.
    async fn decide_bgp(&mut self, config: &crate::config::Config) {
        let peers: Vec<crate::config::Peer> = config
            .peers
            .iter()
            .filter(|p| crate::config::selector::any_matches(&p.node_selectors, &self.my_labels))
            .cloned()
            .collect();
        self.bgp.set_bfd_profiles(&config.bfd_profiles);
        self.bgp.set_peers(&peers);
        let desired = bgp::advertise::desired(config, &self.world.service_list(), &self.me);
        let sha = self.reload.current_sha256().map(str::to_string);
        if self.bgp_warned != sha {
            self.bgp_warned = sha;
            self.warn_bgp(config, &peers);
        }
        let mut owned: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for (svc, ip) in &desired.announced {
            owned.entry(*ip).or_default().push(svc.clone());
        }
        self.bgp.set_routes(desired.routes);
        if owned == self.bgp_owned {
            return;
        }
        let pairs = |m: &BTreeMap<IpAddr, Vec<String>>| -> BTreeSet<(IpAddr, String)> {
            m.iter()
                .flat_map(|(ip, s)| s.iter().map(move |s| (*ip, s.clone())))
                .collect()
        };
        let (old, new) = (pairs(&self.bgp_owned), pairs(&owned));
        for (ip, svc) in old.difference(&new) {
            self.metrics
                .announced
                .remove(svc, "bgp", &self.me, &ip.to_string());
            let why = desired.skipped.get(svc).copied().unwrap_or("notBGP");
            info!(service = %svc, ip = %ip, reason = why, protocol = "bgp", "Withdrawn");
        }
        let mut assigned = BTreeSet::new();
        for (ip, svc) in new.difference(&old) {
            self.metrics
                .announced
                .set(svc, "bgp", &self.me, &ip.to_string());
            info!(service = %svc, ip = %ip, protocol = "bgp", "Announcing from this node");
            assigned.insert(svc.clone());
        }
        self.bgp_owned = owned;
        self.retry_pending().await;
        for svc in assigned {
            if let Some(r) = self.refs.get(&svc).map(|r| r.reference(&svc)) {
                let msg = format!("announcing from node {:?} with protocol \"bgp\"", self.me);
                self.event(r, Kind::Normal, "nodeAssigned", msg);
            }
        }
    }

    /// Say so (log and a Warning Event on the ConfigMap, once per config) when BGP pools
    /// cannot be announced from this node.
    fn warn_bgp(&self, config: &crate::config::Config, peers: &[crate::config::Peer]) {
        let bgp_pools: Vec<&str> = config
            .pools
            .iter()
            .filter(|p| p.protocol == crate::config::Protocol::Bgp)
            .map(|p| p.name.as_str())
            .collect();
        let mut problems = Vec::new();
        if !bgp_pools.is_empty() && peers.is_empty() {
            problems.push(format!(
                "no BGP peer selects node {} (node-selectors), so BGP pools {} are not announced from it",
                self.me,
                bgp_pools.join(", ")
            ));
        }
        for msg in problems {
            warn!("{msg}");
            if let Some(r) = self.config_ref.clone() {
                self.event(r, Kind::Warning, "BGPNotAnnounced", msg);
            }
        }
    }

    async fn push(&mut self, plan: Plan, live: &BTreeSet<String>) {
        let mut owned: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for a in &plan.announce {
            owned.entry(a.ip).or_default().push(a.service.clone());
        }
        if owned == self.owned && *live == self.last_live {
            return;
        }
        let ips: BTreeSet<IpAddr> = owned.keys().copied().collect();
        let before: BTreeSet<IpAddr> = self.owned.keys().copied().collect();
        // Withdrawals and takeovers go to the announcer first, Events and metrics after.
        self.announcer.set_owned(ips.clone());
        if *live != self.last_live {
            // A membership change re-confirms every IP still owned (MetalLB 0.9.4+, #736).
            let kept: BTreeSet<IpAddr> = ips.intersection(&before).copied().collect();
            if !kept.is_empty() {
                self.announcer.refresh(&kept);
            }
            debug!(live = ?live, "Live speakers changed");
            self.last_live = live.clone();
        }
        let old_pairs: BTreeSet<(IpAddr, String)> = self
            .owned
            .iter()
            .flat_map(|(ip, s)| s.iter().map(move |s| (*ip, s.clone())))
            .collect();
        let new_pairs: BTreeSet<(IpAddr, String)> = owned
            .iter()
            .flat_map(|(ip, s)| s.iter().map(move |s| (*ip, s.clone())))
            .collect();
        for (ip, svc) in old_pairs.difference(&new_pairs) {
            self.metrics
                .announced
                .remove(svc, "layer2", &self.me, &ip.to_string());
            let why = plan
                .skipped
                .get(svc)
                .map(|s| s.reason())
                .unwrap_or("notOwner");
            info!(service = %svc, ip = %ip, reason = why, "Withdrawn");
        }
        let mut assigned: BTreeSet<String> = BTreeSet::new();
        for (ip, svc) in new_pairs.difference(&old_pairs) {
            self.metrics
                .announced
                .set(svc, "layer2", &self.me, &ip.to_string());
            info!(service = %svc, ip = %ip, "Announcing from this node");
            assigned.insert(svc.clone());
        }
        self.owned = owned;
        self.retry_pending().await;
        for svc in assigned {
            if let Some(r) = self.refs.get(&svc).map(|r| r.reference(&svc)) {
                let msg = format!(
                    "announcing from node {:?} with protocol \"layer2\"",
                    self.me
                );
                self.event(r, Kind::Normal, "nodeAssigned", msg);
            }
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
