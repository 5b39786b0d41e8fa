//! The controller: allocates IPs to `type: LoadBalancer` Services from the legacy config's
//! pools, as MetalLB 0.12 does, and applies ConfigMap edits live.
//!
//! ```text
//!  ConfigMap (API watch) or --config-file (notify) ──┐
//!                                                     ▼
//!  Services (watch, all namespaces) ──► Input channel ──► one loop owns everything:
//!                                                     reload::Reloader (pure, hash-gated)
//!                                                     allocator::Allocator (pure)
//!                                                     k8s::service (pure) ─► status PUT, Events
//! ```
//!
//! One task owns the allocator and makes every decision, so there is no lock and no race on
//! the allocation state. The decision for one Service is the pure [`decide::decide`] (MetalLB's
//! §5.1 table, tested by value); the loop only runs the actions it returns. It keeps each Service as a compact [`Record`] (what the decisions need
//! and what a status write must send back), never as a whole object: Services are parsed as
//! [`LeanService`] (no managed fields) and reduced in the watch task, and status PUT bodies are
//! built from the record. Writes (status PUTs, the optional pool annotation, Events) run as
//! bounded concurrent tasks (`WRITERS`), never two at once for one Service; their results come
//! back into the loop, and a Service that changed meanwhile is converged again. Across processes, a Lease (when RBAC allows it, see
//! [`lease`]) makes sure only one controller writes.
//!
//! Restart safety: nothing is allocated until the Service list is complete; then Services that
//! already have an IP in their status are re-asserted first, oldest first, and only then are
//! new IPs handed out, so a restart never moves or duplicates an IP.
//!
//! RBAC: works under MetalLB 0.9.6's and 0.12.1's controller roles (services list/watch,
//! `services/status` update, core/v1 events, configmaps get/list/watch in its namespace).
//! Status is written with PUT (`update`), not PATCH, because those roles grant only `update`.

pub mod decide;
pub mod lease;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event as WEvent};
use prometheus::Registry;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, info, warn};

use crate::allocator::Allocator;
use crate::k8s::events::{Kind, Recorder};
use crate::k8s::service::{self as svcs, LeanService, Record};
use crate::k8s::source;
use crate::metrics::{AllocatorMetrics, ClientMetrics};
use crate::reload::{Payload, Reload, Reloader};
use decide::Action;

/// Field manager / Event source of our writes.
pub const FIELD_MANAGER: &str = "metallb-rs-controller";

/// The field manager of this process's writes: [`FIELD_MANAGER`] and the Lease identity
/// (`metallb-rs-controller/<pod>_<pid>`), so `managedFields` tell which controller instance
/// wrote a status (two controllers must never both write; the tests check it this way).
pub fn field_manager() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let mut name = format!("{FIELD_MANAGER}/{}", lease::identity());
        // The apiserver limits manager names to 128 characters.
        name.truncate(128);
        name
    })
    .clone()
}

/// How many writes to the apiserver may be in flight at once. Decisions stay in the one loop;
/// only their execution is concurrent (never two writes for the same Service).
const WRITERS: usize = 32;

/// Controller flags: every flag and env var of MetalLB 0.9–0.12's controller, plus ours.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "controller",
    version,
    about = "metallb-rs controller: IP allocation for LoadBalancer Services"
)]
pub struct Args {
    /// The flags both binaries share.
    #[command(flatten)]
    pub common: crate::cli::CommonArgs,
    /// Name of the memberlist Secret to create when absent (0.10+).
    #[arg(long = "ml-secret-name", env = "METALLB_ML_SECRET_NAME")]
    pub ml_secret_name: Option<String>,
    /// Name of the controller Deployment (0.10+; accepted, used as the Lease name).
    #[arg(long, env = "METALLB_DEPLOYMENT")]
    pub deployment: Option<String>,
    /// Seconds a controller Lease stays valid without renewal (renewed every quarter of it; a
    /// leader that cannot renew for three quarters of it stops).
    #[arg(
        long = "lease-duration",
        env = "METALLB_RS_LEASE_DURATION",
        default_value_t = 8,
        hide = true
    )]
    pub lease_duration: u64,
    /// Do not try to take the controller Lease (run alone, as MetalLB does).
    #[arg(long = "disable-leader-election", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub disable_leader_election: bool,
}

fn config_input(c: source::ConfigInput) -> Input {
    Input::Config(c.payload, c.reference)
}

/// What the loop reacts to.
#[derive(Debug)]
enum Input {
    /// The config payload (`None`: the ConfigMap or file does not exist), with the object to
    /// attach Events to.
    Config(Option<Payload>, Option<ObjectReference>),
    /// A Service watch event, the Service already reduced to its [`Record`].
    Service(SvcEvent),
}

/// A Service watch event (`namespace/name` keys and compact records, never whole objects).
#[derive(Debug)]
enum SvcEvent {
    /// A (re)list starts.
    Init,
    /// One Service of the (re)list.
    InitApply(String, Box<Record>),
    /// The (re)list is complete.
    InitDone,
    /// A Service was added or changed.
    Apply(String, Box<Record>),
    /// A Service is gone.
    Delete(String),
}

/// The outcome of one write task (sent on its own unbounded channel: at most [`WRITERS`]
/// are outstanding, because the loop drains them whenever it waits for a write slot).
#[derive(Debug)]
struct Written {
    key: String,
    /// The object as the apiserver returned it.
    obj: Option<Box<Record>>,
    /// RBAC refused the pool annotation.
    annotate_forbidden: bool,
    /// The status write failed (error, denial or timeout): retry with back-off.
    failed: bool,
}

impl Args {
    /// Run the controller until it fails or loses its Lease.
    pub async fn run(self) -> anyhow::Result<()> {
        crate::cli::init_tracing(self.common.log_level, self.common.log_format);
        let ns = source::namespace(self.common.namespace.clone());
        let client = source::client(self.common.kubeconfig.as_deref()).await?;
        info!(namespace = %ns, config = %self.common.config, version = env!("CARGO_PKG_VERSION"), "Starting metallb-rs controller");
        if self.common.enable_pprof {
            info!("--enable-pprof is accepted for compatibility; there is no pprof endpoint");
        }

        let registry = Registry::new();
        let client_metrics = ClientMetrics::register(&registry);
        let alloc_metrics = AllocatorMetrics::register(&registry);
        let ready = Arc::new(AtomicBool::new(false));
        let listener = crate::http::bind(std::net::Ipv6Addr::UNSPECIFIED.into(), self.common.port)
            .with_context(|| format!("binding the metrics port {}", self.common.port))?;
        let liveness = crate::http::Liveness::new(crate::http::decision_loop().clone(), LIVENESS);
        tokio::spawn(crate::http::serve(
            listener,
            registry.clone(),
            None,
            ready.clone(),
            liveness,
        ));

        if let Some(name) = &self.ml_secret_name {
            ensure_memberlist_secret(&client, &ns, name).await;
        }
        // SIGTERM (a rolling update, a drain): stop deciding, let in-flight writes finish
        // within the grace, release the Lease so the next controller starts at once, exit 0.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let mut leader = None;
        if !self.disable_leader_election {
            let name = self
                .deployment
                .clone()
                .unwrap_or_else(|| "controller".into());
            let timing = lease::Timing::new(Duration::from_secs(self.lease_duration));
            let lease_name = format!("metallb-rs-{name}");
            tokio::select! {
                l = lease::acquire(client.clone(), &ns, &lease_name, timing) => leader = l,
                _ = term.recv() => {
                    info!("Received SIGTERM while waiting for the Lease; exiting");
                    return Ok(());
                }
            }
        }

        let (tx, rx) = mpsc::channel(1024);
        let recorder = Recorder::new(client.clone(), "metallb-controller", None);
        crate::k8s::config_source::spawn(
            &self.common,
            &client,
            &ns,
            Some(recorder.clone()),
            Some(client_metrics.clone()),
            tx.clone(),
            config_input,
        )?;
        tokio::spawn(watch_services(
            client.clone(),
            self.common.lb_class.clone(),
            tx.clone(),
        ));

        let (written_tx, written_rx) = mpsc::unbounded_channel();
        let mut state = State {
            client,
            recorder,
            lb_class: Arc::from(self.common.lb_class.as_str()),
            alloc: Allocator::new(),
            reload: Reloader::new(),
            services: BTreeMap::new(),
            synced: false,
            config_ref: None,
            released: false,
            annotate: true,
            inflight: HashMap::new(),
            writers: Arc::new(Semaphore::new(WRITERS)),
            written_tx,
            written_rx,
            redo: BTreeSet::new(),
            failures: HashMap::new(),
            retry_at: BTreeSet::new(),
            tasks: tokio::task::JoinSet::new(),
            client_metrics,
            alloc_metrics,
            ready,
        };
        let ended = tokio::select! {
            r = state.run(rx) => Some(r),
            _ = term.recv() => None,
        };
        if let Some(r) = ended {
            return r;
        }
        info!("Received SIGTERM; stopping");
        state.drain(SHUTDOWN_GRACE).await;
        if let Some(l) = leader {
            l.release().await;
        }
        Ok(())
    }
}

/// On SIGTERM, how long in-flight writes may take before they are abandoned (well within
/// Kubernetes' default 30 s termination grace).
const SHUTDOWN_GRACE: Duration = REQUEST_TIMEOUT;

/// Create the memberlist Secret when absent (MetalLB 0.10+ does this for the speakers).
async fn ensure_memberlist_secret(client: &Client, ns: &str, name: &str) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    match timed(api.get_opt(name)).await {
        Ok(Some(_)) => {}
        Ok(None) | Err(_) => {
            let key = match random_hex(64) {
                Ok(k) => k,
                Err(e) => {
                    warn!(error = %e, "Cannot read randomness for the memberlist key");
                    return;
                }
            };
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(ns.into()),
                    ..Default::default()
                },
                string_data: Some(BTreeMap::from([("secretkey".to_string(), key)])),
                ..Default::default()
            };
            match timed(api.create(&PostParams::default(), &secret)).await {
                Ok(_) => info!(secret = name, "Created the memberlist Secret"),
                Err(RequestError::Api(kube::Error::Api(e))) if e.code == 409 => {}
                Err(e) => {
                    warn!(secret = name, error = %e, "Cannot create the memberlist Secret; speakers need it")
                }
            }
        }
    }
}

/// `n` random bytes from the OS, hex-encoded.
fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

async fn watch_services(client: Client, lb_class: String, tx: mpsc::Sender<Input>) {
    // LeanService: list pages and watch events are parsed without managedFields, and each
    // Service is reduced to its Record here, before it is queued.
    let api: Api<LeanService> = Api::all(client);
    let record = |s: LeanService| {
        let key = svcs::key(&s.0);
        (key, Box::new(Record::new(s.0, &lb_class)))
    };
    let cfg = watcher::Config::default().page_size(LIST_PAGE);
    crate::k8s::watch::forward(api, cfg, "Service", tx, |ev| {
        let ev = match ev {
            WEvent::Init => SvcEvent::Init,
            WEvent::InitApply(s) => {
                let (k, r) = record(s);
                SvcEvent::InitApply(k, r)
            }
            WEvent::InitDone => SvcEvent::InitDone,
            WEvent::Apply(s) => {
                let (k, r) = record(s);
                SvcEvent::Apply(k, r)
            }
            WEvent::Delete(s) => SvcEvent::Delete(svcs::key(&s.0)),
        };
        Some(Input::Service(ev))
    })
    .await;
}

/// The loop ticks at least this often when idle (it bumps its heartbeat on every iteration).
const IDLE_TICK: Duration = Duration::from_secs(5);
/// `/healthz` fails once the loop has not ticked for this long (six idle ticks).
const LIVENESS: Duration = Duration::from_secs(30);

/// Every single apiserver request of the controller (other than watches) must answer within
/// this time; a stalled one counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Back-off of a failed Service write: from this, doubling per failure…
const RETRY_MIN: Duration = Duration::from_millis(250);
/// …up to this (MetalLB's workqueue goes on to 1000 s; a pending Service should not wait that
/// long once the apiserver is back).
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A failed apiserver request: its error, or no answer in time.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("no answer within {REQUEST_TIMEOUT:?}")]
    Timeout,
}

/// Run one apiserver request with [`REQUEST_TIMEOUT`].
async fn timed<T>(f: impl Future<Output = kube::Result<T>>) -> Result<T, RequestError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r.map_err(RequestError::from),
        Err(_) => Err(RequestError::Timeout),
    }
}

/// The delay before retry number `attempt` (1-based) of a failed write: capped exponential,
/// with "equal jitter" (uniformly within the upper half) from `seed`, so Services that failed
/// together do not retry in lockstep. Pure.
fn retry_delay(attempt: u32, seed: u64) -> Duration {
    let exp = RETRY_MIN.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let d = exp.min(RETRY_MAX);
    let half = d / 2;
    // seed / 2^64 of the half, in whole microseconds.
    let micros = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
    let extra = u64::try_from((u128::from(micros) * u128::from(seed)) >> 64).unwrap_or(0);
    half + Duration::from_micros(extra)
}

/// A random-enough seed per (key, attempt) from the process's random hash keys.
fn jitter_seed(key: &str, attempt: u32) -> u64 {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default).hash_one((key, attempt))
}

/// Services per list page of the initial (re)list.
const LIST_PAGE: u32 = 100;

/// `namespace/name` → (namespace, name).
fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// PUT `ips` as the Service's status, built from its record (metadata as last read, with its
/// resourceVersion as precondition). On a conflict, read the Service again: if it already has
/// that status we are done, otherwise retry from the fresh copy (twice). `Ok(None)`: the
/// Service is gone.
async fn put_status(
    api: &Api<LeanService>,
    key: &str,
    rec: &Record,
    ips: &[IpAddr],
    lb_class: &str,
) -> Result<Option<Record>, RequestError> {
    let pp = PostParams {
        field_manager: Some(field_manager()),
        ..Default::default()
    };
    let (ns, name) = split_key(key);
    let mut target = rec.status_body(ns, name, ips);
    let mut attempt = 0;
    loop {
        match timed(api.replace_status(name, &pp, &target)).await {
            Ok(updated) => return Ok(Some(Record::new(updated.0, lb_class))),
            Err(RequestError::Api(kube::Error::Api(e))) if e.code == 404 => return Ok(None),
            Err(RequestError::Api(kube::Error::Api(e))) if e.code == 409 && attempt < 2 => {
                attempt += 1;
                let fresh = Record::new(timed(api.get(name)).await?.0, lb_class);
                if fresh.status_is(ips) {
                    return Ok(Some(fresh));
                }
                target = fresh.status_body(ns, name, ips);
            }
            Err(e) => return Err(e),
        }
    }
}

struct State {
    client: Client,
    recorder: Recorder,
    lb_class: Arc<str>,
    alloc: Allocator,
    reload: Reloader,
    /// Every Service by `namespace/name`, as compact records (see [`Record`]).
    services: BTreeMap<String, Record>,
    synced: bool,
    config_ref: Option<ObjectReference>,
    /// Set when IPs were released: waiting Services and a stale config get another try.
    released: bool,
    /// Whether RBAC lets us write the `ip-allocated-from-pool` annotation (until a 403).
    annotate: bool,
    /// Services with a write in flight; `true` when they changed meanwhile (converge again).
    inflight: HashMap<String, bool>,
    /// Bounds concurrent writes to the apiserver.
    writers: Arc<Semaphore>,
    /// Write results.
    written_tx: mpsc::UnboundedSender<Written>,
    written_rx: mpsc::UnboundedReceiver<Written>,
    /// Services to converge again once the current input is handled.
    redo: BTreeSet<String>,
    /// Consecutive failed writes per Service.
    failures: HashMap<String, u32>,
    /// Services whose failed write is retried at a time (converged again then).
    retry_at: BTreeSet<(tokio::time::Instant, String)>,
    /// The write tasks (finished ones are reaped as their results come in).
    tasks: tokio::task::JoinSet<()>,
    client_metrics: ClientMetrics,
    alloc_metrics: AllocatorMetrics,
    ready: Arc<AtomicBool>,
}

impl State {
    async fn run(&mut self, mut rx: mpsc::Receiver<Input>) -> anyhow::Result<()> {
        let mut init: BTreeMap<String, Record> = BTreeMap::new();
        let heartbeat = crate::http::decision_loop().clone();
        let mut idle = tokio::time::interval(IDLE_TICK);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            heartbeat.beat();
            let next_retry = self.retry_at.first().map(|(t, _)| *t);
            let input = tokio::select! {
                _ = idle.tick() => continue,
                _ = sleep_until_some(next_retry) => {
                    let now = tokio::time::Instant::now();
                    while let Some((t, key)) = self.retry_at.first().cloned() && t <= now {
                        self.retry_at.pop_first();
                        self.redo.insert(key);
                    }
                    self.follow_up().await;
                    continue;
                }
                i = rx.recv() => match i {
                    Some(i) => i,
                    None => break,
                },
                Some(w) = self.written_rx.recv() => {
                    self.apply_written(w);
                    self.follow_up().await;
                    continue;
                }
            };
            self.client_metrics.updates.inc();
            match input {
                Input::Config(payload, obj) => {
                    if obj.is_some() {
                        self.config_ref = obj;
                    }
                    self.offer_config(payload.as_ref()).await;
                }
                Input::Service(ev) => match ev {
                    SvcEvent::Init => init.clear(),
                    SvcEvent::InitApply(k, r) => {
                        init.insert(k, *r);
                    }
                    SvcEvent::InitDone => {
                        // A (re)list completed: it is the truth. Forget what vanished meanwhile.
                        let gone: Vec<String> = self
                            .services
                            .keys()
                            .filter(|k| !init.contains_key(*k))
                            .cloned()
                            .collect();
                        self.services = std::mem::take(&mut init);
                        for k in gone {
                            self.released |= self.alloc.unassign(&k);
                        }
                        self.synced = true;
                        self.converge_all().await;
                    }
                    SvcEvent::Apply(k, r) => {
                        if !self.cache(k.clone(), *r) {
                            // An older version than the one our own write returned.
                            continue;
                        }
                        if self.synced {
                            self.converge(&k).await;
                        }
                    }
                    SvcEvent::Delete(k) => {
                        self.services.remove(&k);
                        self.failures.remove(&k);
                        self.retry_at.retain(|(_, r)| r != &k);
                        if self.alloc.unassign(&k) {
                            debug!(service = %k, "Released the IPs of a deleted Service");
                            self.released = true;
                        }
                    }
                },
            }
            self.follow_up().await;
        }
        anyhow::bail!("all watches ended")
    }

    /// Stop writing: wait up to `grace` for the writes in flight, then abandon the rest.
    async fn drain(&mut self, grace: Duration) {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            warn!(
                writes = self.tasks.len(),
                "Abandoning Service writes still in flight"
            );
            self.tasks.shutdown().await;
        }
    }

    /// Record a finished write (cache, flags); what needs converging again goes to `redo`.
    fn apply_written(&mut self, w: Written) {
        while self.tasks.try_join_next().is_some() {}
        let Written {
            key,
            obj,
            annotate_forbidden,
            failed,
        } = w;
        let dirty = self.inflight.remove(&key).unwrap_or(false);
        if failed && self.services.contains_key(&key) {
            // Retry until it lands (MetalLB re-queues with its rate limiter, k8s.go:448-450).
            let n = self.failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            let delay = retry_delay(*n, jitter_seed(&key, *n));
            debug!(service = %key, attempt = *n, ?delay, "Retrying the Service write");
            self.retry_at.retain(|(_, k)| k != &key);
            self.retry_at
                .insert((tokio::time::Instant::now() + delay, key.clone()));
        } else {
            self.failures.remove(&key);
        }
        if annotate_forbidden && self.annotate {
            self.annotate = false;
            warn!(
                "RBAC does not allow updating Services (MetalLB 0.9-0.12 roles): not writing metallb.io/ip-allocated-from-pool"
            );
        }
        if let (Some(obj), true) = (obj, self.services.contains_key(&key)) {
            self.cache(key.clone(), *obj);
        }
        if dirty {
            self.redo.insert(key);
        }
    }

    /// Work that follows any input: converge what changed during a write, retry after
    /// releases, publish metrics.
    async fn follow_up(&mut self) {
        if self.synced {
            while let Some(key) = self.redo.pop_first() {
                self.converge(&key).await;
            }
        }
        if std::mem::take(&mut self.released) {
            self.after_release().await;
        }
        self.publish_metrics();
    }

    /// Something freed IPs: a stale config may now fit, and waiting Services may get an IP.
    async fn after_release(&mut self) {
        if self.reload.has_pending() {
            let alloc = &self.alloc;
            if let Some(outcome) = self
                .reload
                .retry(|c| alloc.can_accept(c).map_err(|e| e.to_string()))
            {
                self.handle_reload(outcome).await;
                return;
            }
        }
        let waiting: Vec<String> = self
            .services
            .iter()
            .filter(|(k, _)| self.alloc.ips_of(k).is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for k in waiting {
            self.converge(&k).await;
        }
    }

    async fn offer_config(&mut self, payload: Option<&Payload>) {
        let alloc = &self.alloc;
        let outcome = self
            .reload
            .offer(payload, |c| alloc.can_accept(c).map_err(|e| e.to_string()));
        self.handle_reload(outcome).await;
    }

    async fn handle_reload(&mut self, outcome: Reload) {
        match outcome {
            Reload::Unchanged => {}
            Reload::Applied { sha256, config } => {
                if let Err(e) = self.alloc.set_pools(&config) {
                    // Cannot happen: the reloader asked can_accept in the same task.
                    warn!(error = %e, "Config accepted by the check but refused by the allocator");
                    return;
                }
                info!(sha256 = %sha256, pools = config.pools.len(), peers = config.peers.len(), "Config loaded");
                if let Some(r) = self.config_ref.clone() {
                    let msg = format!(
                        "config {} applied: {} pools, {} peers",
                        &sha256[..12.min(sha256.len())],
                        config.pools.len(),
                        config.peers.len()
                    );
                    self.recorder.post(&r, Kind::Normal, "ConfigLoaded", &msg);
                }
                if self.synced {
                    self.converge_all().await;
                }
            }
            Reload::Rejected { sha256, why } => {
                self.client_metrics.update_errors.inc();
                warn!(sha256 = %sha256, reason = why.reason(), error = %why, "Config rejected; keeping the previous one");
                if let Some(r) = self.config_ref.clone() {
                    let msg = format!(
                        "config {} rejected, the previous config stays in force: {why}",
                        &sha256[..12.min(sha256.len())]
                    );
                    self.recorder.post(&r, Kind::Warning, why.reason(), &msg);
                }
            }
            Reload::Missing => {
                if self.reload.loaded() {
                    warn!("The config is gone; keeping the last good one (nothing is released)");
                    if let Some(r) = self.config_ref.clone() {
                        let msg = "the config ConfigMap was deleted: the last good config stays in force and nothing is released; re-create it to change the config";
                        self.recorder.post(&r, Kind::Warning, "ConfigMissing", msg);
                    }
                } else {
                    warn!("No config yet: MetalLB will not allocate until the ConfigMap exists");
                }
            }
        }
        self.ready
            .store(self.synced && self.reload.loaded(), Ordering::Relaxed);
    }

    /// Cache a Service unless the cached copy is newer (our write's response can overtake the
    /// watch events of earlier writes; an older copy would only cause a redundant write).
    /// resourceVersions are etcd revisions; when one does not parse, the new copy wins.
    fn cache(&mut self, key: String, rec: Record) -> bool {
        if let (Some(old), Some(new)) = (
            self.services.get(&key).and_then(Record::revision),
            rec.revision(),
        ) && new < old
        {
            return false;
        }
        self.services.insert(key, rec);
        true
    }

    /// Converge every Service: those holding an IP first, oldest first, then the rest.
    async fn converge_all(&mut self) {
        let mut keys: Vec<(bool, Option<k8s_openapi::jiff::Timestamp>, String)> = self
            .services
            .iter()
            .map(|(k, s)| (!s.has_status, s.created, k.clone()))
            .collect();
        keys.sort();
        for (_, _, k) in keys {
            self.converge(&k).await;
        }
        self.ready
            .store(self.synced && self.reload.loaded(), Ordering::Relaxed);
    }

    /// MetalLB's per-Service convergence (spec §5.1): [`decide::decide`] makes every
    /// decision; this only runs its actions (and adds the pool annotation where RBAC allows).
    async fn converge(&mut self, key: &str) {
        let Some(svc) = self.services.get(key).cloned() else {
            return;
        };
        if self.reload.current().is_none() {
            debug!(service = %key, "Not processing, still waiting for config");
            return;
        }
        let actions = decide::decide(key, &svc, &mut self.alloc, self.synced);
        let mut status = None;
        for a in actions {
            match a {
                Action::Event {
                    kind,
                    reason,
                    message,
                } => self.event(key, &svc, kind, reason, &message),
                Action::Status(ips) => status = Some(ips),
                Action::Released => self.released = true,
            }
        }
        let held = self.alloc.ips_of(key).is_some();
        let pool = match (self.annotate, held) {
            (true, true) => self.alloc.pool_of_service(key).map(str::to_string),
            _ => None,
        }
        .filter(|p| svc.pool_annotation.as_deref() != Some(p.as_str()));
        if status.is_some() || pool.is_some() {
            self.write(key, &svc, status, pool).await;
        }
    }

    /// Queue an Event about a Service (never waits: the recorder writes it in the background).
    fn event(&self, key: &str, svc: &Record, kind: Kind, reason: &str, msg: &str) {
        let (ns, name) = split_key(key);
        self.recorder
            .post(&svc.reference(ns, name), kind, reason, msg);
    }

    /// Write a Service: its status (PUT on the status subresource: RBAC grants `update`, not
    /// `patch`) when `ips` is set, then, best effort, `metallb.io/ip-allocated-from-pool` when
    /// `pool` is set (MetalLB 0.9–0.12 RBAC cannot update Services: the first 403 turns it
    /// off). The write runs as its own task; its result comes back as a [`Written`]. A
    /// Service that changes while its write is in flight is converged again afterwards.
    async fn write(
        &mut self,
        key: &str,
        svc: &Record,
        ips: Option<Vec<IpAddr>>,
        pool: Option<String>,
    ) {
        if let Some(dirty) = self.inflight.get_mut(key) {
            *dirty = true;
            return;
        }
        // Back-pressure: at most WRITERS write tasks exist at any time (each holds a copy of
        // its Service's record), however many Services need a write. While all are busy, take
        // in their results: each task releases its slot just before reporting.
        let permit = loop {
            if let Ok(p) = self.writers.clone().try_acquire_owned() {
                break p;
            }
            match self.written_rx.recv().await {
                Some(w) => self.apply_written(w),
                None => return,
            }
        };
        let key = key.to_string();
        self.inflight.insert(key.clone(), false);
        let (ns, _) = split_key(&key);
        let api: Api<LeanService> = Api::namespaced(self.client.clone(), ns);
        let svc = svc.clone();
        let (tx, errors, lb_class) = (
            self.written_tx.clone(),
            self.client_metrics.update_errors.clone(),
            self.lb_class.clone(),
        );
        self.tasks.spawn(async move {
            let (_, name) = split_key(&key);
            let (mut annotate_forbidden, mut failed) = (false, false);
            let mut obj = match &ips {
                Some(ips) => put_status(&api, &key, &svc, ips, &lb_class)
                    .await
                    .unwrap_or_else(|e| {
                        errors.inc();
                        failed = true;
                        warn!(service = %key, error = %e, "Cannot write the Service status; will retry");
                        None
                    }),
                None => Some(svc),
            };
            if let (Some(pool), Some(current)) = (pool, obj.as_ref()) {
                const ANN: &str = "metallb.io/ip-allocated-from-pool";
                if current.pool_annotation.as_deref() != Some(pool.as_str()) {
                    let patch = serde_json::json!({"metadata": {"annotations": {ANN: pool}}});
                    let pp = kube::api::PatchParams {
                        field_manager: Some(field_manager()),
                        ..Default::default()
                    };
                    match timed(api.patch(name, &pp, &kube::api::Patch::Merge(&patch))).await {
                        Ok(o) => obj = Some(Record::new(o.0, &lb_class)),
                        Err(RequestError::Api(kube::Error::Api(e))) if e.code == 403 => {
                            annotate_forbidden = true
                        }
                        Err(e) => {
                            debug!(service = %key, error = %e, "Cannot annotate the Service with its pool")
                        }
                    }
                }
            }
            // Release the slot, then report (the unbounded send never waits).
            drop(permit);
            let _ = tx.send(Written {
                key,
                obj: obj.map(Box::new),
                annotate_forbidden,
                failed,
            });
        });
    }

    fn publish_metrics(&self) {
        self.client_metrics.set_config(
            self.reload.loaded(),
            self.reload.stale(),
            self.reload.current_sha256(),
        );
        self.alloc_metrics.addresses_total.reset();
        self.alloc_metrics.addresses_in_use.reset();
        for s in self.alloc.stats() {
            let l = [s.name.as_str()];
            self.alloc_metrics
                .addresses_total
                .with_label_values(&l)
                .set(s.addresses_total);
            self.alloc_metrics
                .addresses_in_use
                .with_label_values(&l)
                .set(i64::try_from(s.addresses_in_use).unwrap_or(i64::MAX));
        }
    }
}

/// Sleep until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn retry_back_off_doubles_with_jitter_up_to_a_cap() {
        for seed in [0, 1 << 63, u64::MAX, jitter_seed("ns/a", 3)] {
            let mut prev_max = Duration::ZERO;
            for attempt in 1..=40 {
                let d = retry_delay(attempt, seed);
                let full = RETRY_MIN
                    .saturating_mul(1 << (attempt - 1).min(16))
                    .min(RETRY_MAX);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d:?} of {full:?}"
                );
                assert!(full >= prev_max);
                prev_max = full;
            }
            assert_eq!(prev_max, RETRY_MAX);
        }
        // Different Services spread out.
        assert_ne!(
            retry_delay(5, jitter_seed("ns/a", 5)),
            retry_delay(5, jitter_seed("ns/b", 5))
        );
    }

    /// What MetalLB 0.9–0.12 manifests and Helm charts pass, Go-flag style included.
    #[test]
    fn accepts_metallb_controller_arguments() {
        let a = Args::try_parse_from([
            "controller",
            "--port=7472",
            "--config=config",
            "--log-level=info",
            "--disable-epslices=true",
            "--enable-pprof",
            "--ml-secret-name=memberlist",
            "--deployment=controller",
        ])
        .expect("MetalLB controller arguments");
        assert_eq!(a.common.port, 7472);
        assert!(a.common.disable_epslices && a.common.enable_pprof && !a.disable_leader_election);
        assert_eq!(a.ml_secret_name.as_deref(), Some("memberlist"));
        assert!(Args::try_parse_from(["controller", "--log-level=verbose"]).is_err());
    }
}
