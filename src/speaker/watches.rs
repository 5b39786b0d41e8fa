//! The speaker's watches and polls: Services, EndpointSlices or Endpoints, Nodes, its own
//! Pods (watched where RBAC allows, else polled), each feeding the decision loop one
//! [`Input`] at a time through [`crate::k8s::watch::forward`].

use super::world;
use crate::k8s::lean::{LeanEndpoints, LeanService, LeanSlice};
use crate::k8s::source;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::watcher::{self, Event as WEvent};
use kube::{Client, Resource as _};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, warn};

use super::driver::*;

/// Whether EndpointSlices can be listed (MetalLB 0.9.6's RBAC does not grant them).
/// Falls back to Endpoints only when the apiserver says no (403 under 0.9.6's RBAC, 404 on
/// clusters without discovery/v1); other errors are retried, so a blip at start does not lock
/// in the fallback.
pub(super) async fn slices_allowed(client: &Client) -> bool {
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
pub(super) async fn watch_kind<K, F>(
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

pub(super) async fn watch_services(client: Client, lb_class: String, tx: mpsc::Sender<Input>) {
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

pub(super) async fn watch_slices(client: Client, tx: mpsc::Sender<Input>) {
    let api: Api<LeanSlice> = Api::all(client);
    watch_kind(
        api,
        watcher::Config::default().page_size(500),
        Kind_::Slices,
        tx,
        |LeanSlice(slice), present| {
            let slice_key = crate::k8s::object_key(&slice.metadata);
            let (svc, nodes) = world::slice_nodes(slice)?;
            Some(Input::Slice(slice_key, svc, present.then_some(nodes)))
        },
    )
    .await;
}

pub(super) async fn watch_endpoints(client: Client, tx: mpsc::Sender<Input>) {
    let api: Api<LeanEndpoints> = Api::all(client);
    watch_kind(
        api,
        watcher::Config::default().page_size(500),
        Kind_::Endpoints,
        tx,
        |LeanEndpoints(ep), present| {
            let key = crate::k8s::object_key(&ep.metadata);
            Some(Input::Endpoints(
                key,
                present.then(|| world::endpoints_nodes(ep)),
            ))
        },
    )
    .await;
}

pub(super) async fn watch_nodes(client: Client, me: String, tx: mpsc::Sender<Input>) {
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
pub(super) async fn pods_watch_allowed(client: &Client, ns: &str) -> bool {
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

pub(super) fn pod_key(p: &Pod) -> String {
    crate::k8s::object_key(p.meta())
}

/// The labels of this node's own DaemonSet Pod in `ns`; `None` when it cannot be found.
pub(super) async fn own_pod_labels(
    client: &Client,
    ns: &str,
    me: &str,
) -> Option<BTreeMap<String, String>> {
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
pub(super) fn selects(selector: &str, labels: &BTreeMap<String, String>) -> bool {
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
pub(super) fn template_selector(labels: &BTreeMap<String, String>) -> String {
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
pub(super) async fn watch_pods(
    client: Client,
    ns: String,
    labels: String,
    tx: mpsc::Sender<Input>,
) {
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
pub(super) async fn poll_pods(
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
pub(super) fn jittered(period: Duration) -> Duration {
    period.mul_f64(0.75 + fastrand::f64() * 0.5)
}
