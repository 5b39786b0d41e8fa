//! What a speaker knows about the cluster, reduced to what layer 2 decisions need, and the pure
//! decisions over it: which speakers are live candidates, and what this node announces.
//!
//! Pure: no kube client, no tokio, no clock. The driver ([`super`]) folds watch events into a
//! [`World`] with the `from_*` helpers and asks [`World::live_speakers`] and
//! [`World::plan`]; every speaker computes the same answer from the same inputs.
//!
//! A speaker is a **live candidate** when all of these hold (issue #6, stricter than MetalLB
//! 0.12, which looked only at memberlist):
//! - its speaker Pod is listed, Ready and not being deleted (when the Pods list is available);
//! - its Node is not NotReady/Unknown and has no `node.kubernetes.io/out-of-service` taint
//!   (a Node we have not seen gives no evidence and does not exclude);
//! - a majority of the speakers hears it, by the hearing reports the liveness gossip carries
//!   ([`World::candidates`]; when gossip runs and is trusted; without gossip the Kubernetes
//!   signals alone decide, which fixes MetalLB #2005: `Cluster` services are announced even
//!   without memberlist);
//! - optionally (`--honour-exclude-lb-label`), its Node lacks the
//!   `node.kubernetes.io/exclude-from-external-load-balancers` label (0.12 ignored it, so the
//!   default ignores it too).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::gossip::LiveView;
use super::liveness;
use crate::config::Config;
use crate::k8s::service as svcs;
use crate::l2::election::TrafficPolicy;
use crate::l2::plan::{self, L2Service, Plan};

/// The speakers electing from their gossip that say they do not hear this one, when that
/// makes this speaker leave itself out of its own election ([`World::candidates`]): only while
/// it decides from Kubernetes signals.
pub fn unheard_by(mode: Mode, gossip: Option<&LiveView>) -> Option<&BTreeSet<String>> {
    gossip
        .map(|v| &v.unheard_by)
        .filter(|u| mode == Mode::KubernetesOnly && !u.is_empty())
}

/// The taint a cluster operator sets on a node that is known to be down.
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";
/// The label that (from MetalLB 0.14) excludes a node from announcing.
pub const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// A LoadBalancer Service, as far as layer 2 cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcInfo {
    /// `status.loadBalancer.ingress[].ip`, in status order.
    pub lb_ips: Vec<IpAddr>,
    /// `spec.externalTrafficPolicy`.
    pub policy: TrafficPolicy,
}

/// A speaker Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerPod {
    /// `spec.nodeName`.
    pub node: String,
    /// `status.podIP` (the node IP: speakers run with hostNetwork).
    pub ip: Option<IpAddr>,
    /// The `Ready` condition is `True` and no deletion is under way.
    pub ready: bool,
    /// The first container's image (to tell MetalLB's Go speakers from ours during a rollout).
    pub image: Option<String>,
}

/// What matters about a Node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// `Ready` condition `False` or `Unknown`.
    pub not_ready: bool,
    /// Tainted `node.kubernetes.io/out-of-service`.
    pub out_of_service: bool,
    /// Labelled `node.kubernetes.io/exclude-from-external-load-balancers`.
    pub exclude_lb: bool,
}

/// The nodes with a ready endpoint of one Service, by the EndpointSlice (or Endpoints object)
/// that reported them. A list, not a map: most Services have one slice, and a map per Service
/// costs a B-tree node of eleven slots, about a kilobyte with its set of nodes (BENCHMARKS.md,
/// speaker memory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadyNodes(Vec<Reported>);

/// A slice's (or Endpoints object's) name and the nodes it reports.
type Reported = (Box<str>, Box<[Box<str>]>);

impl ReadyNodes {
    /// What `source` reports now.
    pub fn set(&mut self, source: &str, nodes: BTreeSet<String>) {
        let nodes: Box<[Box<str>]> = nodes.into_iter().map(String::into_boxed_str).collect();
        match self.0.iter_mut().find(|(s, _)| **s == *source) {
            Some((_, n)) => *n = nodes,
            None => {
                self.0.push((source.into(), nodes));
                self.0.shrink_to_fit();
            }
        }
    }

    /// Forget what `source` reported; true when no source is left.
    pub fn remove(&mut self, source: &str) -> bool {
        self.0.retain(|(s, _)| **s != *source);
        self.0.is_empty()
    }

    /// Every reported node (a node reported by two sources comes twice).
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.0.iter().flat_map(|(_, n)| n.iter().map(|s| &**s))
    }
}

/// Everything the speaker knows, keyed for cheap updates.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Services handled by us (LoadBalancer, our class), by `namespace/name`.
    pub services: BTreeMap<Arc<str>, SvcInfo>,
    /// Nodes with a ready endpoint, by service key.
    pub endpoints: BTreeMap<Arc<str>, ReadyNodes>,
    /// Speaker Pods by `namespace/name`; `None` while the Pods list is unavailable.
    pub pods: Option<BTreeMap<String, SpeakerPod>>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Honour the exclude-from-external-load-balancers label.
    pub honour_exclude_label: bool,
}

impl World {
    /// The service key `key` as an `Arc` shared with the maps that already hold it (one copy of
    /// each key however many maps and sets hold it: 10,000 Services make that megabytes).
    pub fn key(&self, key: &str) -> Arc<str> {
        self.services
            .get_key_value(key)
            .map(|(k, _)| k)
            .or_else(|| self.endpoints.get_key_value(key).map(|(k, _)| k))
            .map_or_else(|| key.into(), Arc::clone)
    }

    /// The speakers that are live candidates. `me` is this speaker's node; `gossip` the
    /// gossip's alive set (`None` when gossip does not run).
    pub fn live_speakers(&self, me: &str, gossip: Option<&BTreeSet<String>>) -> BTreeSet<String> {
        let mut live: BTreeSet<String> = match &self.pods {
            Some(pods) => pods
                .values()
                .filter(|p| p.ready)
                .map(|p| p.node.clone())
                .collect(),
            // No Pods list (RBAC): gossip's view, or just this node.
            None => match gossip {
                Some(g) => g.clone(),
                None => BTreeSet::from([me.to_string()]),
            },
        };
        if let Some(g) = gossip {
            live.retain(|n| g.contains(n));
        }
        live.retain(|n| match self.nodes.get(n) {
            None => true,
            Some(info) => {
                let excluded = self.honour_exclude_label && info.exclude_lb;
                !info.not_ready && !info.out_of_service && !excluded
            }
        });
        live
    }

    /// The candidates this speaker elects from in `mode`, given what its gossip says
    /// (`None` when gossip does not run).
    ///
    /// - [`Mode::Normal`]: the live speakers ([`World::live_speakers`]) that a majority of
    ///   speakers hears ([`liveness::heard_by_majority`]), not merely those this speaker hears,
    ///   so that speakers whose views differ by a lost link or a refused incarnation still
    ///   elect from the same set.
    /// - [`Mode::KubernetesOnly`]: the live speakers from Kubernetes signals, without this
    ///   speaker itself while a speaker that elects from its gossip says it does not hear this
    ///   one ([`LiveView::unheard_by`]): those speakers elect without it (a mismatched
    ///   secret, or a one-way path), so its own Kubernetes-only election would give their IPs a
    ///   second owner.
    /// - [`Mode::Fenced`]: nobody at all.
    pub fn candidates(&self, me: &str, mode: Mode, gossip: Option<&LiveView>) -> BTreeSet<String> {
        match (mode, gossip) {
            (Mode::Fenced, _) => BTreeSet::new(),
            (Mode::Normal, Some(v)) => {
                let alive = self.listed_alive(me, &v.alive);
                let heard =
                    liveness::heard_by_majority(me, &alive, &v.reports, &self.speaker_nodes());
                self.live_speakers(me, Some(&heard))
            }
            (Mode::Normal, None) => self.live_speakers(me, None),
            (Mode::KubernetesOnly, v) => {
                let mut live = self.live_speakers(me, None);
                if unheard_by(mode, v).is_some() {
                    live.remove(me);
                }
                live
            }
        }
    }

    /// The speakers of a gossip alive set that Kubernetes lists (and `me`): only they count
    /// towards a majority, so that a key holder outside the cluster's speaker Pods (a stale
    /// Pod's node, another cluster sharing the secret) can neither keep a cut-off speaker
    /// unfenced nor sway the election. All of them while the Pods list is unavailable.
    pub fn listed_alive(&self, me: &str, alive: &BTreeSet<String>) -> BTreeSet<String> {
        match &self.pods {
            None => alive.clone(),
            Some(pods) => alive
                .iter()
                .filter(|n| *n == me || pods.values().any(|p| &p.node == *n))
                .cloned()
                .collect(),
        }
    }

    /// Nodes of every listed speaker Pod, ready or not.
    pub fn speaker_nodes(&self) -> BTreeSet<String> {
        self.pods
            .iter()
            .flat_map(|p| p.values())
            .map(|p| p.node.clone())
            .collect()
    }

    /// Speaker peers to gossip with: the pod IPs of listed speaker Pods other than `me`'s,
    /// ready or not (a speaker that is starting must be heard to become ready).
    pub fn peer_ips(&self, me: &str) -> BTreeSet<IpAddr> {
        self.pods
            .iter()
            .flat_map(|p| p.values())
            .filter(|p| p.node != me)
            .filter_map(|p| p.ip)
            .collect()
    }

    /// How many speakers this speaker expects to hear, itself included (for the majority in
    /// fencing): the speakers Kubernetes considers live (Ready Pod, Node not down), plus this
    /// one. Pods of powered-off nodes stay listed (DaemonSets tolerate everything) and must
    /// not count, or two dead nodes would push the healthy ones into a minority.
    pub fn known_speakers(&self, me: &str) -> usize {
        if self.pods.is_none() {
            return 1;
        }
        let mut nodes = self.live_speakers(me, None);
        nodes.insert(me.to_string());
        nodes.len()
    }

    /// Ready speaker Pods that are not ours: a recognisably MetalLB Go speaker image
    /// ([`is_go_speaker_image`]) other than this speaker's own, not alive in our gossip
    /// (`heard`). Only such images: with gossip broken during an upgrade between two of our
    /// versions, "another image, not heard" would have both versions yield to each other and
    /// every speaker fall silent. During a rolling image swap from
    /// MetalLB's Go speakers these are the Go speakers, which elect among themselves over
    /// memberlist and cannot see us; while any is Ready, our speakers stay silent so one IP
    /// never has a Go owner and a Rust owner at once, in both directions (upgrade and
    /// rollback). An upgrade between two of our versions (different images) is not held up:
    /// our speakers heartbeat before their Pod turns Ready. Empty when our own Pod is not
    /// listed.
    pub fn foreign_speakers(&self, me: &str, heard: &BTreeSet<String>) -> Vec<String> {
        let Some(pods) = &self.pods else {
            return Vec::new();
        };
        let Some(own_image) = pods
            .values()
            .find(|p| p.node == me)
            .and_then(|p| p.image.as_deref())
        else {
            return Vec::new();
        };
        let mut out: Vec<String> = pods
            .values()
            .filter(|p| p.ready && p.node != me && !heard.contains(&p.node))
            .filter(|p| {
                p.image
                    .as_deref()
                    .is_some_and(|i| i != own_image && is_go_speaker_image(i))
            })
            .map(|p| p.node.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The layer 2 plan of `me` under `config` with these live speakers.
    pub fn plan(&self, config: &Config, live: &BTreeSet<String>, me: &str) -> Plan {
        plan::plan(config, &self.service_list(), live, me)
    }

    /// Every handled service with the nodes of its ready endpoints.
    pub fn service_list(&self) -> Vec<L2Service> {
        self.services
            .iter()
            .map(|(key, s)| L2Service {
                key: key.to_string(),
                lb_ips: s.lb_ips.clone(),
                policy: s.policy,
                ready_endpoint_nodes: self
                    .endpoints
                    .get(key)
                    .map(|r| r.nodes().map(str::to_string).collect())
                    .unwrap_or_default(),
            })
            .collect()
    }
}

/// The service key and layer 2 view of a Service, or `None` when we do not handle it (not a
/// LoadBalancer, or another `loadBalancerClass`).
pub fn service_info(svc: &Service, lb_class: &str) -> Option<(String, SvcInfo)> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") || !svcs::class_matches(svc, lb_class) {
        return None;
    }
    Some((
        svcs::key(svc),
        SvcInfo {
            lb_ips: svcs::status_ips(svc),
            policy: TrafficPolicy::from_k8s(spec.external_traffic_policy.as_deref()),
        },
    ))
}

/// Stands for a ready endpoint on no node (a hand-made EndpointSlice or Endpoints pointing
/// outside the cluster): it counts for "the service has a ready endpoint" (`Cluster` services
/// are announced, as MetalLB 0.11–0.12 do) and never matches a speaker's node (`Local`).
pub const OFF_NODE: &str = "";

/// The service key and the nodes with a ready endpoint in an EndpointSlice (`ready` nil or
/// true counts as ready, as MetalLB does; [`OFF_NODE`] for one without a node). `None`
/// without the service-name label.
pub fn slice_nodes(slice: &EndpointSlice) -> Option<(String, BTreeSet<String>)> {
    let ns = slice.metadata.namespace.as_deref()?;
    let svc = slice
        .metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")?;
    let nodes = slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .map(|e| {
            e.node_name
                .clone()
                .or_else(|| {
                    e.deprecated_topology
                        .as_ref()
                        .and_then(|t| t.get("kubernetes.io/hostname").cloned())
                })
                .unwrap_or_else(|| OFF_NODE.to_string())
        })
        .collect();
    Some((format!("{ns}/{svc}"), nodes))
}

/// The nodes with a ready address in an Endpoints object (`subsets[].addresses[]`, not
/// `notReadyAddresses`; [`OFF_NODE`] for an address without a node).
pub fn endpoints_nodes(ep: &Endpoints) -> BTreeSet<String> {
    ep.subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.node_name.clone().unwrap_or_else(|| OFF_NODE.to_string()))
        .collect()
}

/// A speaker Pod's view, or `None` when it is not scheduled yet.
pub fn speaker_pod(pod: &Pod) -> Option<SpeakerPod> {
    let node = pod.spec.as_ref()?.node_name.clone()?;
    let status = pod.status.as_ref();
    let ready = pod.metadata.deletion_timestamp.is_none()
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone());
    Some(SpeakerPod {
        node,
        ip,
        ready,
        image,
    })
}

/// A Node's view.
pub fn node_info(node: &Node) -> NodeInfo {
    let not_ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status != "True");
    let out_of_service = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT));
    let exclude_lb = node
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EXCLUDE_LB_LABEL));
    NodeInfo {
        not_ready,
        out_of_service,
        exclude_lb,
    }
}

/// How a speaker decides who is live, given what it can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Gossip (if running) and Kubernetes signals together.
    Normal,
    /// This speaker hears less than half of the speakers it knows but reaches the apiserver:
    /// its gossip view cannot be trusted (it would elect itself for everything), so it decides
    /// from Kubernetes signals alone, like a speaker without gossip. When gossip is broken
    /// everywhere, every speaker lands here and they still agree.
    KubernetesOnly,
    /// It reaches neither a strict majority of the speakers nor the apiserver: it is the
    /// partitioned side and announces nothing, so it cannot keep stealing IPs that the
    /// majority side (which sees it dead) has handed to another node.
    Fenced,
}

/// The [`Mode`] for `heard` speakers alive in gossip (itself included; `None` without gossip)
/// out of `known` expected, with the apiserver reachable or not. `ever_heard_peer`: the gossip
/// has heard at least one other speaker since this one started.
///
/// - Fenced needs both losses ([`super::liveness::fenced`]): no strict majority and no
///   apiserver. Without gossip a speaker is never fenced: it cannot tell a partition from an
///   apiserver restart, and fencing on the apiserver alone would take every IP down during an
///   apiserver upgrade.
/// - Gossip is trusted while it shows at least half of the known speakers, so the survivor of
///   a two-speaker cluster takes over at once when its peer dies (it hears one of two) ...
/// - ... but only once it has ever heard a peer: a gossip that never worked (UDP 7946
///   firewalled, mismatched secrets) says nothing, and trusting it would make each of two
///   speakers elect itself for everything. Kubernetes signals decide instead, and every
///   speaker agrees.
pub fn mode(heard: Option<usize>, known: usize, api_ok: bool, ever_heard_peer: bool) -> Mode {
    let Some(heard) = heard else {
        return Mode::Normal;
    };
    let heard = heard.min(known);
    if super::liveness::fenced(api_ok, heard, known) {
        Mode::Fenced
    } else if known > 1 && !ever_heard_peer {
        Mode::KubernetesOnly
    } else if heard * 2 >= known {
        Mode::Normal
    } else {
        Mode::KubernetesOnly
    }
}

/// The speaker-side stale check (MetalLB: "service has no configuration under new config"):
/// every IP this node announces must still be in some pool of the new config.
pub fn check_announced(
    config: &Config,
    announced: &BTreeMap<IpAddr, Vec<String>>,
) -> Result<(), String> {
    let stranded: Vec<String> = announced
        .iter()
        .filter(|(ip, _)| plan::pool_for(config, &[**ip]).is_none())
        .map(|(ip, svcs)| format!("{} announces {ip}", svcs.join(", ")))
        .collect();
    if stranded.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "new config not compatible with announced IPs: {} (no pool contains them)",
            stranded.join("; ")
        ))
    }
}

/// Whether a container image is MetalLB's Go speaker as its manifests, chart and packagers
/// name it: `…/metallb/speaker[:tag][@digest]` (MetalLB's own, Charmed Kubernetes) or
/// `…/metallb-speaker…` (bitnami). Our images (`metallb-rs/…`) are not, whatever their tag.
pub fn is_go_speaker_image(image: &str) -> bool {
    let path = image.split('@').next().unwrap_or_default();
    let mut segs: Vec<&str> = path.split('/').collect();
    if let Some(last) = segs.last_mut() {
        *last = last.split(':').next().unwrap_or_default();
    }
    match segs.as_slice() {
        [.., parent, "speaker"] => *parent == "metallb",
        [.., last] => *last == "metallb-speaker",
        [] => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(xs: &[&str]) -> BTreeSet<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    fn pod(node: &str, ready: bool) -> SpeakerPod {
        SpeakerPod {
            node: node.into(),
            ip: None,
            ready,
            image: Some("metallb-rs/speaker:1".into()),
        }
    }

    fn world(pods: &[(&str, bool)]) -> World {
        World {
            pods: Some(
                pods.iter()
                    .map(|(n, r)| (format!("ns/speaker-{n}"), pod(n, *r)))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn live_needs_ready_pod_and_gossip() {
        let w = world(&[("a", true), ("b", true), ("c", false)]);
        assert_eq!(w.live_speakers("a", None), set(&["a", "b"]));
        assert_eq!(w.live_speakers("a", Some(&set(&["a", "c"]))), set(&["a"]));
    }

    #[test]
    fn node_conditions_exclude() {
        let mut w = world(&[("a", true), ("b", true), ("c", true)]);
        w.nodes.insert(
            "b".into(),
            NodeInfo {
                not_ready: true,
                ..Default::default()
            },
        );
        w.nodes.insert(
            "c".into(),
            NodeInfo {
                out_of_service: true,
                ..Default::default()
            },
        );
        assert_eq!(w.live_speakers("a", None), set(&["a"]));
    }

    #[test]
    fn exclude_label_only_when_honoured() {
        let mut w = world(&[("a", true), ("b", true)]);
        w.nodes.insert(
            "b".into(),
            NodeInfo {
                exclude_lb: true,
                ..Default::default()
            },
        );
        assert_eq!(w.live_speakers("a", None), set(&["a", "b"]));
        w.honour_exclude_label = true;
        assert_eq!(w.live_speakers("a", None), set(&["a"]));
    }

    #[test]
    fn without_pods_list_gossip_or_self_decides() {
        let w = World::default();
        assert_eq!(w.live_speakers("a", None), set(&["a"]));
        assert_eq!(
            w.live_speakers("a", Some(&set(&["a", "b"]))),
            set(&["a", "b"])
        );
    }

    #[test]
    fn known_and_peers() {
        let mut w = world(&[("a", true), ("b", false)]);
        if let Some(p) = w.pods.as_mut() {
            for (i, sp) in p.values_mut().enumerate() {
                sp.ip = Some(IpAddr::from([192, 0, 2, i as u8 + 1]));
            }
        }
        // Only b is not Ready: it is not expected to be heard.
        assert_eq!(w.known_speakers("z"), 2);
        assert_eq!(w.known_speakers("a"), 1);
        assert_eq!(w.peer_ips("a").len(), 1);
    }

    #[test]
    fn go_speakers_are_foreign_until_heard() {
        let mut w = world(&[("a", true), ("b", true), ("c", true), ("d", false)]);
        if let Some(p) = w.pods.as_mut() {
            for (k, sp) in p.iter_mut() {
                if k.ends_with("-c") || k.ends_with("-d") {
                    sp.image = Some("quay.io/metallb/speaker:v0.12.1".into());
                }
            }
        }
        // c is a Ready Go speaker; d is not Ready; b runs our image.
        assert_eq!(
            w.foreign_speakers("a", &set(&["a", "b"])),
            vec!["c".to_string()]
        );
        // A different image that speaks our gossip (an upgrade between our versions) is ours.
        assert!(w.foreign_speakers("a", &set(&["a", "b", "c"])).is_empty());
        // Our own Pod unknown: no basis to compare.
        assert!(w.foreign_speakers("z", &set(&[])).is_empty());
    }

    /// An upgrade between two of our versions while gossip is broken (nobody heard): neither
    /// version yields to the other, so not every speaker falls silent.
    #[test]
    fn our_other_version_is_never_yielded_to() {
        let mut w = world(&[("a", true), ("b", true)]);
        if let Some(p) = w.pods.as_mut() {
            for (k, sp) in p.iter_mut() {
                sp.image = Some(if k.ends_with("-a") {
                    "registry.example/metallb-rs/speaker:0.1.0".into()
                } else {
                    "registry.example/metallb-rs/speaker:0.2.0".into()
                });
            }
        }
        assert!(w.foreign_speakers("a", &set(&["a"])).is_empty());
        assert!(w.foreign_speakers("b", &set(&["b"])).is_empty());
    }

    #[test]
    fn go_speaker_images_are_recognised() {
        for go in [
            "metallb/speaker:v0.9.3",
            "quay.io/metallb/speaker:v0.12.1",
            "quay.io/metallb/speaker@sha256:0123",
            "docker.io/bitnami/metallb-speaker:0.12.1-debian-10-r0",
            "registry.example:5000/mirror/metallb/speaker:v0.11.0",
        ] {
            assert!(is_go_speaker_image(go), "{go}");
        }
        for ours in [
            "metallb-rs/speaker:test",
            "ghcr.io/example/metallb-rs/speaker:0.1.0",
            "registry.example:5000/speaker:v1",
            "",
        ] {
            assert!(!is_go_speaker_image(ours), "{ours}");
        }
    }

    #[test]
    fn endpoints_off_node_count_for_cluster_only() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "namespace": "ns", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["192.0.2.50"], "conditions": {"ready": true}}],
        }))
        .expect("slice");
        let (key, nodes) = slice_nodes(&slice).expect("labelled");
        assert_eq!(key, "ns/db");
        assert_eq!(nodes, set(&[OFF_NODE]));
        let live = set(&["a", "b"]);
        let ip: IpAddr = "203.0.113.1".parse().expect("ip");
        assert!(crate::l2::election::elect(TrafficPolicy::Cluster, &nodes, &live, ip).is_some());
        assert!(crate::l2::election::elect(TrafficPolicy::Local, &nodes, &live, ip).is_none());
    }

    /// A lab in miniature: `n` speakers, all Ready and reaching the apiserver; `link(i, j)`
    /// says whether UDP from `i` reaches `j`, `key(i)` is each one's memberlist secret and
    /// `stale(i)` whether every other speaker refuses `i`'s heartbeats as from an older
    /// incarnation (its clock went back across a reboot); `ever_heard(i)`: `i`'s gossip heard a
    /// peer before the fault (a restarted speaker's has not). Each speaker's gossip view, reports
    /// and mode are built the way the driver builds them; returns every speaker's candidates.
    fn views(
        ever_heard: impl Fn(usize) -> bool,
        n: usize,
        link: impl Fn(usize, usize) -> bool,
        key: impl Fn(usize) -> u8,
        stale: impl Fn(usize) -> bool,
    ) -> Vec<BTreeSet<String>> {
        use crate::speaker::liveness::{Hears, Report};
        let name = |i: usize| format!("node-{i}");
        let names: Vec<String> = (0..n).map(name).collect();
        let pods: Vec<(&str, bool)> = names.iter().map(|s| (s.as_str(), true)).collect();
        let w = world(&pods);
        let known: BTreeSet<String> = names.iter().cloned().collect();
        let accepted = |i: usize, j: usize| i != j && link(i, j) && key(i) == key(j) && !stale(i);
        let alive: Vec<BTreeSet<String>> = (0..n)
            .map(|j| {
                (0..n)
                    .filter(|&i| i == j || accepted(i, j))
                    .map(name)
                    .collect()
            })
            .collect();
        let report: Vec<Hears> = alive.iter().map(|a| Hears::of(a, &known)).collect();
        let mode: Vec<Mode> = (0..n)
            .map(|j| {
                let ever = ever_heard(j) || alive[j].len() > 1;
                mode(Some(alive[j].len()), w.known_speakers(&name(j)), true, ever)
            })
            .collect();
        (0..n)
            .map(|j| {
                let me = name(j);
                let reports = (0..n)
                    .filter(|&i| accepted(i, j))
                    .map(|i| {
                        let r = Report {
                            hears: report[i].clone(),
                            trusts_gossip: mode[i] == Mode::Normal,
                        };
                        (name(i), r)
                    })
                    .collect();
                // Every datagram that arrives, authenticated or not, may say "I do not hear you".
                let unheard_by = (0..n)
                    .filter(|&i| i != j && link(i, j))
                    .filter(|&i| mode[i] == Mode::Normal && report[i].hears(&me) == Some(false))
                    .map(name)
                    .collect();
                let view = LiveView {
                    alive: alive[j].clone(),
                    peers_known: n - 1,
                    reports,
                    unheard_by,
                };
                w.candidates(&me, mode[j], Some(&view))
            })
            .collect()
    }

    /// How many speakers announce `ip` (each announces when it wins among its candidates).
    fn owners(views: &[BTreeSet<String>], ip: IpAddr) -> Vec<String> {
        views
            .iter()
            .enumerate()
            .filter_map(|(j, c)| {
                let me = format!("node-{j}");
                (crate::l2::election::owner(c.iter(), ip) == Some(me.as_str())).then_some(me)
            })
            .collect()
    }

    /// Cluster sizes 2 to 5, with the fault present since the start (gossip never heard a
    /// peer where it cuts everything) or appearing later.
    fn worlds() -> impl Iterator<Item = (bool, usize)> {
        [false, true]
            .into_iter()
            .flat_map(|ever| (2..=5).map(move |n| (ever, n)))
    }

    fn assert_one_owner(what: &str, views: &[BTreeSet<String>]) {
        for last in 1..=40u8 {
            let ip = IpAddr::from([192, 0, 2, last]);
            let o = owners(views, ip);
            assert_eq!(
                o.len(),
                1,
                "{what}: {ip} owned by {o:?}; candidates {views:?}"
            );
        }
    }

    #[test]
    fn one_owner_when_one_speaker_has_another_secret() {
        // Failed before: the speaker with the other secret hears nobody, decides from
        // Kubernetes alone and elects itself for some IPs the others also announce.
        for (ever, n) in worlds() {
            for odd in 0..n {
                // The secret is read at start: the odd one has just restarted.
                let ever_heard = |i| ever && i != odd;
                let v = views(
                    ever_heard,
                    n,
                    |_, _| true,
                    |i| u8::from(i == odd),
                    |_| false,
                );
                assert_one_owner(
                    &format!("ever heard {ever}, {n} speakers, node-{odd} with another secret"),
                    &v,
                );
            }
        }
        // Every speaker with its own secret: all decide from Kubernetes and agree.
        for ever in [false, true] {
            let v = views(|_| ever, 4, |_, _| true, |i| i as u8, |_| false);
            assert_one_owner("every secret different", &v);
        }
    }

    #[test]
    fn one_owner_when_udp_is_one_way() {
        // Failed before for a lost path between two of three: the speaker that does not hear
        // the other elects without it, the others with it.
        for (ever, n) in worlds() {
            for a in 0..n {
                for b in 0..n {
                    if a == b {
                        continue;
                    }
                    let v = views(|_| ever, n, |i, j| !(i == a && j == b), |_| 0, |_| false);
                    assert_one_owner(
                        &format!("ever heard {ever}, {n} speakers, node-{a} -> node-{b} lost"),
                        &v,
                    );
                }
                let v = views(|_| ever, n, |i, _| i != a, |_| 0, |_| false);
                assert_one_owner(
                    &format!("ever heard {ever}, {n} speakers, nothing from node-{a} arrives"),
                    &v,
                );
                let v = views(|_| ever, n, |_, j| j != a, |_| 0, |_| false);
                assert_one_owner(
                    &format!("ever heard {ever}, {n} speakers, nothing reaches node-{a}"),
                    &v,
                );
            }
        }
    }

    #[test]
    fn one_owner_when_a_clock_went_back() {
        // Failed before: the others refuse the rebooted speaker's heartbeats (older
        // incarnation) while it hears them all and elects itself.
        for (ever, n) in worlds() {
            for odd in 0..n {
                let v = views(|_| ever, n, |_, _| true, |_| 0, |i| i == odd);
                assert_one_owner(
                    &format!("ever heard {ever}, {n} speakers, node-{odd}'s clock went back"),
                    &v,
                );
            }
        }
    }

    #[test]
    fn only_listed_speakers_count_towards_a_majority() {
        // Failed before: "x" and "y" (alive in gossip, not listed) made "a" hear 3 of 3 known
        // although it hears none of its listed peers; cut off from the apiserver, it was not
        // fenced.
        let w = world(&[("a", true), ("b", true), ("c", true)]);
        let alive = set(&["a", "x", "y"]);
        assert_eq!(w.listed_alive("a", &alive), set(&["a"]));
        let heard = w.listed_alive("a", &alive).len();
        assert_eq!(
            mode(Some(heard), w.known_speakers("a"), false, true),
            Mode::Fenced
        );
        let view = LiveView {
            alive,
            peers_known: 2,
            reports: BTreeMap::new(),
            unheard_by: BTreeSet::new(),
        };
        assert_eq!(w.candidates("a", Mode::Normal, Some(&view)), set(&["a"]));
    }

    /// Each slice's report replaces its previous one; a service's nodes are the union over
    /// its slices, and the last slice gone says so.
    #[test]
    fn ready_nodes_by_slice() {
        let mut r = ReadyNodes::default();
        r.set("s1", set(&["a", "b"]));
        r.set("s2", set(&["c"]));
        r.set("s1", set(&["b"]));
        let nodes: BTreeSet<String> = r.nodes().map(str::to_string).collect();
        assert_eq!(nodes, set(&["b", "c"]));
        assert!(!r.remove("s1"));
        assert!(!r.remove("unknown"));
        assert_eq!(r.nodes().collect::<Vec<_>>(), ["c"]);
        assert!(r.remove("s2"));
        assert_eq!(r.nodes().count(), 0);
    }

    #[test]
    fn modes() {
        assert_eq!(mode(None, 3, false, true), Mode::Normal);
        assert_eq!(mode(Some(2), 3, false, true), Mode::Normal);
        assert_eq!(mode(Some(1), 3, true, true), Mode::KubernetesOnly);
        assert_eq!(mode(Some(1), 3, false, true), Mode::Fenced);
        // Two of four is not a majority (fenced without the apiserver) but is half (trusted).
        assert_eq!(mode(Some(2), 4, false, true), Mode::Fenced);
        assert_eq!(mode(Some(2), 4, true, true), Mode::Normal);
        // The survivor of two takes over; cut off from everything, it is fenced.
        assert_eq!(mode(Some(1), 2, true, true), Mode::Normal);
        assert_eq!(mode(Some(1), 2, false, true), Mode::Fenced);
        assert_eq!(mode(Some(1), 5, true, true), Mode::KubernetesOnly);
        // Gossip that never heard anyone (firewalled, wrong secret): Kubernetes decides.
        assert_eq!(mode(Some(1), 2, true, false), Mode::KubernetesOnly);
        assert_eq!(mode(Some(1), 1, true, false), Mode::Normal);
        assert_eq!(mode(Some(3), 4, false, true), Mode::Normal);
        // Alone in the cluster: always a majority of one.
        assert_eq!(mode(Some(1), 1, false, true), Mode::Normal);
        // Stale gossip members beyond the known set do not make a majority.
        assert_eq!(mode(Some(9), 4, false, true), Mode::Normal);
    }

    #[test]
    fn stale_check_names_service_and_ip() {
        let cfg = crate::config::parse_payload(
            "address-pools:\n- name: p\n  protocol: layer2\n  addresses: [203.0.113.0/28]\n",
        )
        .expect("config");
        let mut ann = BTreeMap::new();
        ann.insert("203.0.113.1".parse().expect("ip"), vec!["ns/a".to_string()]);
        assert!(check_announced(&cfg, &ann).is_ok());
        ann.insert(
            "203.0.113.99".parse().expect("ip"),
            vec!["ns/b".to_string()],
        );
        let err = check_announced(&cfg, &ann).expect_err("stranded");
        assert!(err.contains("ns/b announces 203.0.113.99"), "{err}");
        assert!(!err.contains("ns/a"), "{err}");
    }
}
