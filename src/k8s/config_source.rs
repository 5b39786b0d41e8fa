//! Where the config comes from: the legacy `config` ConfigMap (MetalLB 0.12), the metallb.io
//! objects of the namespace (MetalLB 0.13's CRDs), or `auto`, which follows a switch signal.
//! Both binaries call [`watch_config`]; it delivers [`ConfigInput`]s whose payload the
//! reloader hash-gates and validates the same way whatever the source
//! ([`crate::reload::Payload`]).
//!
//! ```text
//!  ConfigMap ─────────────┐
//!  IPAddressPool, L2Adv., │  one task: per-kind stores,   ┌─ Payload::Legacy(text)
//!  BGPAdv., BGPPeer,      ├─► choose() (pure), debounce ──┤
//!  BFDProfile, Community, │  200 ms, identity gate        └─ Payload::Objects(docs)
//!  basic-auth Secrets ────┘
//! ```
//!
//! `auto` reads the objects when the ConfigMap carries the annotation
//! `metallb-rs.io/config-source: crds` (what `metallb-migrate --from-cluster --apply` sets
//! once the objects it wrote read back as the ConfigMap's config), the ConfigMap when it says
//! `configmap` (what `--rollback` and, during an apply, the pin set), and otherwise the objects
//! when any IPAddressPool exists in the namespace, else the ConfigMap. When RBAC does not let
//! the process list IPAddressPools (MetalLB 0.9–0.12 roles), `auto` reads the ConfigMap with
//! one warning; `crds` logs an error and keeps retrying. Secrets (for `passwordSecret`) are
//! read only when RBAC allows it; otherwise one warning, and a peer naming a Secret is
//! rejected with an Event on that BGPPeer.
//!
//! Errors go on the object at fault: before delivering objects, the source reads them once
//! ([`crd::read_config`], pure) and, when they are rejected because of one object, sets the
//! input's reference to that object, so the binary's rejection Event lands on it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::ApiResource;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WEvent};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::events::{Kind as EventKind, Recorder, reference};
use super::source::{ConfigInput, is_status, watch_configmap};
use crate::config::crd::{self, Document, Kind, ObjectName};
use crate::metrics::ClientMetrics;
use crate::reload::Payload;

/// The ConfigMap annotation `auto` follows: `crds` or `configmap`.
pub const SOURCE_ANNOTATION: &str = "metallb-rs.io/config-source";

/// `--config-source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// The legacy `config` ConfigMap (MetalLB 0.9–0.12).
    #[default]
    Configmap,
    /// The metallb.io objects of the namespace (MetalLB 0.13 CRDs).
    Crds,
    /// The objects once the switch signal says so (or when IPAddressPools exist and the
    /// ConfigMap does not pin itself), else the ConfigMap.
    Auto,
}

/// Which source is read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The ConfigMap.
    ConfigMap,
    /// The metallb.io objects.
    Objects,
}

impl Source {
    /// As the metric label and messages say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::ConfigMap => "configmap",
            Source::Objects => "crds",
        }
    }
}

/// What `auto` sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signals<'a> {
    /// The ConfigMap's [`SOURCE_ANNOTATION`], if set.
    pub annotation: Option<&'a str>,
    /// Whether any IPAddressPool exists in the namespace.
    pub pools_exist: bool,
    /// Whether RBAC lets us read the objects.
    pub objects_readable: bool,
}

/// The source to read (pure; see the module docs for the rules).
pub fn choose(mode: Mode, s: &Signals<'_>) -> Source {
    match mode {
        Mode::Configmap => Source::ConfigMap,
        Mode::Crds => Source::Objects,
        Mode::Auto if !s.objects_readable => Source::ConfigMap,
        Mode::Auto => match s.annotation.map(str::trim) {
            Some("crds") => Source::Objects,
            Some("configmap") => Source::ConfigMap,
            _ if s.pools_exist => Source::Objects,
            _ => Source::ConfigMap,
        },
    }
}

/// The API resource of a metallb.io kind.
pub fn api_resource(kind: Kind) -> ApiResource {
    use super::crds as k;
    match kind {
        Kind::BGPPeer => ApiResource::erase::<k::BGPPeer>(&()),
        Kind::IPAddressPool => ApiResource::erase::<k::IPAddressPool>(&()),
        Kind::BGPAdvertisement => ApiResource::erase::<k::BGPAdvertisement>(&()),
        Kind::L2Advertisement => ApiResource::erase::<k::L2Advertisement>(&()),
        Kind::BFDProfile => ApiResource::erase::<k::BFDProfile>(&()),
        Kind::Community => ApiResource::erase::<k::Community>(&()),
    }
}

/// Every metallb.io object of namespace `ns` (and basic-auth Secret when `secrets`), listed
/// once and read into documents exactly as [`watch_config`] reads them (kinds in
/// [`Kind::ALL`] order, by name within a kind). One list per kind; the caller adds timeouts
/// and retries.
pub async fn list_objects(client: &Client, ns: &str, secrets: bool) -> kube::Result<Vec<Document>> {
    let mut stores: BTreeMap<Store, Objects> = BTreeMap::new();
    for kind in Kind::ALL {
        let ar = api_resource(kind);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        let store = stores.entry(Store::Object(kind)).or_default();
        for o in api.list(&ListParams::default()).await?.items {
            store.apply(WEvent::Apply(with_types(o, &ar)));
        }
    }
    if secrets {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let lp = ListParams::default().fields(&secret_selector());
        let store = stores.entry(Store::Secrets).or_default();
        for s in api.list(&lp).await?.items {
            store.apply(value_event(WEvent::Apply(s)));
        }
    }
    Ok(documents(&stores).0)
}

/// An object as JSON with `apiVersion` and `kind` (which list items lack).
fn with_types(mut o: DynamicObject, ar: &ApiResource) -> Value {
    o.types = Some(kube::api::TypeMeta {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
    });
    serde_json::to_value(o).unwrap_or_default()
}

/// Timeout of the access checks at start.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Changes are delivered once the watches have been quiet this long (an `apply` of a dozen
/// objects arrives as a dozen events; one reload for all of them).
const DEBOUNCE: Duration = Duration::from_millis(200);
/// A stream of changes that never goes quiet is still delivered this often.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Whether `list` on this resource is allowed: `Some(false)` when the apiserver says 403 or
/// 404 (no RBAC, or the CRDs are not installed), `None` when it could not say (retry).
async fn can_list<K>(api: &Api<K>, lp: &ListParams) -> Option<bool>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match tokio::time::timeout(CHECK_TIMEOUT, api.list_metadata(&lp.clone().limit(1))).await {
        Ok(Ok(_)) => Some(true),
        Ok(Err(e)) if is_status(&e, 403) || is_status(&e, 404) => {
            warn!(error = %e, "Cannot list");
            Some(false)
        }
        Ok(Err(e)) => {
            warn!(error = %e, "Access check failed; retrying");
            None
        }
        Err(_) => {
            warn!("Access check timed out; retrying");
            None
        }
    }
}

/// `can_list`, retried with back-off until the apiserver answers.
async fn allowed<K>(api: &Api<K>, lp: &ListParams) -> bool
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut delay = Duration::from_millis(200);
    loop {
        if let Some(ok) = can_list(api, lp).await {
            return ok;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The field selector of the Secrets a `passwordSecret` may name.
fn secret_selector() -> String {
    format!("type={}", crd::BASIC_AUTH_SECRET_TYPE)
}

/// What the binaries hand to [`watch_config`] besides the channel.
#[derive(Clone)]
pub struct Options {
    /// `--config-source`.
    pub mode: Mode,
    /// The namespace of the ConfigMap and the objects.
    pub namespace: String,
    /// The ConfigMap's name.
    pub configmap: String,
    /// Posts the source-switch Event (Normal `ConfigSourceChanged`).
    pub recorder: Option<Recorder>,
    /// Sets `metallb_rs_config_source{source}`.
    pub metrics: Option<ClientMetrics>,
}

/// Start watching the config where the shared flags say (`--config-file`, else
/// `--config-source`); every observation is sent, mapped by `wrap`, on `tx`. The one call
/// both binaries make.
pub fn spawn<T: Send + 'static>(
    common: &crate::cli::CommonArgs,
    client: &Client,
    namespace: &str,
    recorder: Option<Recorder>,
    metrics: Option<ClientMetrics>,
    tx: mpsc::Sender<T>,
    wrap: impl Fn(ConfigInput) -> T + Send + 'static,
) -> anyhow::Result<()> {
    match &common.config_file {
        Some(_) if common.config_source != Mode::Configmap => anyhow::bail!(
            "--config-file reads a legacy config file: it cannot be combined with --config-source={:?}",
            common.config_source
        ),
        Some(path) => {
            tokio::spawn(super::source::watch_file(path.clone(), tx, wrap));
        }
        None => {
            let opts = Options {
                mode: common.config_source,
                namespace: namespace.to_string(),
                configmap: common.config.clone(),
                recorder,
                metrics,
            };
            tokio::spawn(watch_config(client.clone(), opts, tx, wrap));
        }
    }
    Ok(())
}

/// Watch the config source chosen by `opts.mode` and send every new observation, mapped by
/// `wrap`, until the receiver is gone.
pub async fn watch_config<T: Send + 'static>(
    client: Client,
    opts: Options,
    tx: mpsc::Sender<T>,
    wrap: impl Fn(ConfigInput) -> T + Send + 'static,
) {
    let ns = opts.namespace.clone();
    if opts.mode == Mode::Configmap {
        if let Some(m) = &opts.metrics {
            m.set_source(Source::ConfigMap.as_str());
        }
        return watch_configmap(client, ns, opts.configmap.clone(), tx, wrap).await;
    }
    let pools: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &api_resource(Kind::IPAddressPool));
    let readable = allowed(&pools, &ListParams::default()).await;
    if !readable {
        match opts.mode {
            Mode::Auto => {
                warn!(
                    namespace = %ns,
                    "--config-source=auto: cannot list metallb.io IPAddressPools (RBAC, see manifests/rbac-crd-mode.yaml, or the CRDs are not installed); reading the ConfigMap"
                );
                if let Some(m) = &opts.metrics {
                    m.set_source(Source::ConfigMap.as_str());
                }
                return watch_configmap(client, ns, opts.configmap.clone(), tx, wrap).await;
            }
            _ => error!(
                namespace = %ns,
                "--config-source=crds: cannot list metallb.io IPAddressPools (grant manifests/rbac-crd-mode.yaml and install the CRDs); retrying"
            ),
        }
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secrets_readable =
        allowed(&secrets, &ListParams::default().fields(&secret_selector())).await;
    if !secrets_readable {
        warn!(namespace = %ns, "Cannot list basic-auth Secrets (RBAC): BGPPeers naming a passwordSecret will be rejected");
    }
    run(client, opts, secrets_readable, tx, wrap).await;
}

/// One watch event, tagged with its stream.
enum Ev {
    Object(Kind, watcher::Result<WEvent<Value>>),
    Secret(watcher::Result<WEvent<Secret>>),
    ConfigMap(watcher::Result<WEvent<ConfigMap>>),
}

/// Which store a stream fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Store {
    Object(Kind),
    Secrets,
    ConfigMap,
}

/// Objects of one store by name, and the (re)list being collected.
#[derive(Default)]
struct Objects {
    items: BTreeMap<String, Value>,
    relist: Option<BTreeMap<String, Value>>,
}

impl Objects {
    fn apply(&mut self, ev: WEvent<Value>) -> bool {
        let name = |v: &Value| {
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match ev {
            WEvent::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            WEvent::InitApply(v) => {
                if let Some(r) = &mut self.relist {
                    r.insert(name(&v), v);
                }
                false
            }
            WEvent::InitDone => {
                if let Some(r) = self.relist.take() {
                    self.items = r;
                }
                true
            }
            WEvent::Apply(v) => {
                self.items.insert(name(&v), v);
                true
            }
            WEvent::Delete(v) => {
                self.items.remove(&name(&v));
                true
            }
        }
    }
}

fn value_event<K: serde::Serialize>(ev: WEvent<K>) -> WEvent<Value> {
    map_event(ev, |k| serde_json::to_value(k).unwrap_or_default())
}

fn map_event<K, V>(ev: WEvent<K>, v: impl Fn(K) -> V) -> WEvent<V> {
    match ev {
        WEvent::Init => WEvent::Init,
        WEvent::InitApply(k) => WEvent::InitApply(v(k)),
        WEvent::InitDone => WEvent::InitDone,
        WEvent::Apply(k) => WEvent::Apply(v(k)),
        WEvent::Delete(k) => WEvent::Delete(v(k)),
    }
}

/// The reference of an object read as JSON (for Events).
fn value_reference(v: &Value) -> ObjectReference {
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    ObjectReference {
        api_version: s("/apiVersion"),
        kind: s("/kind"),
        name: s("/metadata/name"),
        namespace: s("/metadata/namespace"),
        uid: s("/metadata/uid"),
        resource_version: s("/metadata/resourceVersion"),
        ..Default::default()
    }
}

async fn run<T>(
    client: Client,
    opts: Options,
    secrets_readable: bool,
    tx: mpsc::Sender<T>,
    wrap: impl Fn(ConfigInput) -> T,
) {
    let ns = opts.namespace.clone();
    let mut streams: Vec<BoxStream<'static, Ev>> = Vec::new();
    let mut expect: BTreeSet<Store> = BTreeSet::new();
    for kind in Kind::ALL {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &api_resource(kind));
        let ar = api_resource(kind);
        streams.push(
            watcher::watcher(
                api,
                watcher::Config::default().timeout(super::watch::WATCH_TIMEOUT_SECS),
            )
            .default_backoff()
            .map(move |e| {
                // The apiserver omits apiVersion/kind in list items: restore them.
                Ev::Object(kind, e.map(|ev| map_event(ev, |o| with_types(o, &ar))))
            })
            .boxed(),
        );
        expect.insert(Store::Object(kind));
    }
    if secrets_readable {
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let cfg = watcher::Config::default()
            .fields(&secret_selector())
            .timeout(super::watch::WATCH_TIMEOUT_SECS);
        streams.push(
            watcher::watcher(api, cfg)
                .default_backoff()
                .map(Ev::Secret)
                .boxed(),
        );
        expect.insert(Store::Secrets);
    }
    if opts.mode == Mode::Auto {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let cfg = watcher::Config::default()
            .fields(&format!("metadata.name={}", opts.configmap))
            .timeout(super::watch::WATCH_TIMEOUT_SECS);
        streams.push(
            watcher::watcher(api, cfg)
                .default_backoff()
                .map(Ev::ConfigMap)
                .boxed(),
        );
        expect.insert(Store::ConfigMap);
    }
    let mut all = futures::stream::select_all(streams);
    let mut stores: BTreeMap<Store, Objects> = BTreeMap::new();
    let mut synced: BTreeSet<Store> = BTreeSet::new();
    let mut last: Option<(Source, Option<String>)> = None;
    // Since when changes wait to be delivered (`None`: nothing waits).
    let mut dirty: Option<tokio::time::Instant> = None;
    loop {
        let next = if let Some(since) = dirty {
            // Deliver once quiet for DEBOUNCE, or after MAX_DELAY of steady changes.
            let wait = DEBOUNCE.min(MAX_DELAY.saturating_sub(since.elapsed()));
            match tokio::time::timeout(wait, all.next()).await {
                Ok(n) => n,
                Err(_) => {
                    dirty = None;
                    if synced == expect {
                        let (input, source) = observe(&opts, &stores);
                        let id = input.payload.as_ref().map(Payload::identity);
                        if last.as_ref() != Some(&(source, id.clone())) {
                            announce_source(&opts, last.as_ref().map(|l| l.0), source, &input);
                            last = Some((source, id));
                            if tx.send(wrap(input)).await.is_err() {
                                return;
                            }
                        }
                    }
                    continue;
                }
            }
        } else {
            all.next().await
        };
        let Some(ev) = next else { return };
        let (store, ev) = match ev {
            Ev::Object(k, Ok(ev)) => (Store::Object(k), ev),
            Ev::Secret(Ok(ev)) => (Store::Secrets, value_event(ev)),
            Ev::ConfigMap(Ok(ev)) => (Store::ConfigMap, value_event(ev)),
            Ev::Object(k, Err(e)) => {
                warn!(kind = %k, error = %e, "metallb.io watch failed; retrying");
                continue;
            }
            Ev::Secret(Err(e)) => {
                warn!(error = %e, "Secret watch failed; retrying");
                continue;
            }
            Ev::ConfigMap(Err(e)) => {
                warn!(error = %e, "ConfigMap watch failed; retrying");
                continue;
            }
        };
        if matches!(ev, WEvent::InitDone) {
            synced.insert(store);
        }
        if stores.entry(store).or_default().apply(ev) && dirty.is_none() {
            dirty = Some(tokio::time::Instant::now());
        }
    }
}

/// Log, count and post an Event when the source changes (and once at start).
fn announce_source(opts: &Options, before: Option<Source>, now: Source, input: &ConfigInput) {
    if before == Some(now) {
        return;
    }
    info!(source = now.as_str(), mode = ?opts.mode, "Reading the config from {}", describe(now));
    if let Some(m) = &opts.metrics {
        m.set_source(now.as_str());
    }
    if let (Some(before), Some(r), Some(rec)) = (before, &input.reference, &opts.recorder) {
        let msg = format!(
            "config source switched from {} to {}",
            describe(before),
            describe(now)
        );
        rec.post(r, EventKind::Normal, "ConfigSourceChanged", &msg);
    }
}

fn describe(s: Source) -> &'static str {
    match s {
        Source::ConfigMap => "the ConfigMap",
        Source::Objects => "the metallb.io objects",
    }
}

/// The documents of the stores: objects in [`Kind::ALL`] order, by name within a kind, then
/// the Secrets; and each object's reference.
fn documents(
    stores: &BTreeMap<Store, Objects>,
) -> (Vec<Document>, BTreeMap<ObjectName, ObjectReference>) {
    let mut refs = BTreeMap::new();
    let mut docs = Vec::new();
    for kind in Kind::ALL {
        for (name, v) in stores
            .get(&Store::Object(kind))
            .map(|s| &s.items)
            .into_iter()
            .flatten()
        {
            refs.insert(ObjectName::new(kind, name), value_reference(v));
            docs.push(Document::from_value(v.clone()).unwrap_or_else(Document::Invalid));
        }
    }
    for v in stores
        .get(&Store::Secrets)
        .map(|s| s.items.values())
        .into_iter()
        .flatten()
    {
        // Only basic-auth Secrets are listed; one that does not read is not a candidate.
        if let Ok(d @ Document::Secret(_)) = Document::from_value(v.clone()) {
            docs.push(d);
        }
    }
    (docs, refs)
}

/// The input the stores stand for, and which source it is from.
fn observe(opts: &Options, stores: &BTreeMap<Store, Objects>) -> (ConfigInput, Source) {
    let empty = Objects::default();
    let store = |s: Store| stores.get(&s).unwrap_or(&empty);
    let cm = store(Store::ConfigMap).items.get(&opts.configmap);
    let pools = &store(Store::Object(Kind::IPAddressPool)).items;
    let signals = Signals {
        annotation: cm
            .and_then(|c| c.pointer("/metadata/annotations"))
            .and_then(|a| a.get(SOURCE_ANNOTATION))
            .and_then(Value::as_str),
        pools_exist: !pools.is_empty(),
        objects_readable: true,
    };
    let source = choose(opts.mode, &signals);
    let cm_ref = cm.and_then(|v| serde_json::from_value::<ConfigMap>(v.clone()).ok());
    if source == Source::ConfigMap {
        let input = match cm_ref {
            Some(c) => ConfigInput {
                payload: Some(Payload::Legacy(super::source::config_payload(&c))),
                reference: Some(reference(&c)),
            },
            None => ConfigInput {
                payload: None,
                reference: None,
            },
        };
        return (input, source);
    }
    let (docs, refs) = documents(stores);
    let whole = cm_ref
        .as_ref()
        .map(reference)
        .or_else(|| pools.values().next().map(value_reference));
    let blamed = match crd::read_config(&docs) {
        Err(e) => e.object().and_then(|o| refs.get(o)).cloned(),
        Ok(_) => None,
    };
    let input = ConfigInput {
        payload: Some(Payload::Objects(std::sync::Arc::new(docs))),
        reference: blamed.or(whole),
    };
    (input, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_annotation_then_the_pools() {
        let s = |annotation, pools_exist, objects_readable| Signals {
            annotation,
            pools_exist,
            objects_readable,
        };
        assert_eq!(choose(Mode::Auto, &s(None, false, true)), Source::ConfigMap);
        assert_eq!(choose(Mode::Auto, &s(None, true, true)), Source::Objects);
        assert_eq!(
            choose(Mode::Auto, &s(Some("configmap"), true, true)),
            Source::ConfigMap
        );
        assert_eq!(
            choose(Mode::Auto, &s(Some("crds"), false, true)),
            Source::Objects
        );
        assert_eq!(
            choose(Mode::Auto, &s(Some("crds"), true, false)),
            Source::ConfigMap,
            "without RBAC for the objects, auto stays on the ConfigMap"
        );
        assert_eq!(
            choose(Mode::Configmap, &s(Some("crds"), true, true)),
            Source::ConfigMap
        );
        assert_eq!(
            choose(Mode::Crds, &s(Some("configmap"), false, true)),
            Source::Objects
        );
    }
}
