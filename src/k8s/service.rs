//! Pure functions over Kubernetes Services: what a Service asks of the allocator, what its
//! status holds, and the status it should get. No I/O (the controller's driver does the writes).
//!
//! Matches MetalLB 0.12 `controller/service.go` (spec §4, §5.1): only `type: LoadBalancer`;
//! family from `spec.clusterIPs` (falling back to `spec.clusterIP`); requested IPs from
//! `spec.loadBalancerIP` or the `loadBalancerIPs` annotation (not both); annotations read under
//! both prefixes `metallb.universe.tf/` and `metallb.io/`, the new one winning.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ObjectReference, Service, ServiceSpec, ServiceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference};

use crate::allocator::{Family, Port, Proto, Request, local_backend_key};

/// Annotation prefixes, newest first (the new one wins when both are set).
pub const PREFIXES: [&str; 2] = ["metallb.io/", "metallb.universe.tf/"];

/// What the controller should do with a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    /// Not ours (not a LoadBalancer, another class): release and clear what we own.
    NotOurs(&'static str),
    /// It has no usable cluster IP: release and clear.
    NoClusterIp(String),
    /// The requested IPs are malformed: `why`, in upstream's words; `request` is the rest of
    /// the request (family, pool, keys, ports; no IPs), which re-asserting a held IP needs.
    Invalid {
        /// Why.
        why: String,
        /// The request without its IPs.
        request: Request,
    },
    /// Allocate for this request.
    Allocate(Request),
}

/// `namespace/name`.
pub fn key(svc: &Service) -> String {
    super::object_key(&svc.metadata)
}

/// An annotation under either prefix (new prefix first).
pub fn annotation<'a>(svc: &'a Service, name: &str) -> Option<&'a str> {
    let ann = svc.metadata.annotations.as_ref()?;
    PREFIXES
        .iter()
        .find_map(|p| ann.get(&format!("{p}{name}")))
        .map(String::as_str)
}

/// The family the Service needs, from its cluster IPs.
pub fn family(svc: &Service) -> Result<Family, String> {
    let spec = svc.spec.as_ref().ok_or("service has no spec")?;
    let ips: Vec<&String> = match &spec.cluster_ips {
        Some(v) if !v.is_empty() => v.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    let parsed: Vec<IpAddr> = ips.iter().filter_map(|s| s.parse().ok()).collect();
    match parsed.as_slice() {
        [a] => Ok(Family::of_ip(*a)),
        [a, b] if a.is_ipv4() != b.is_ipv4() => Ok(Family::Dual),
        [] => Err("service has no cluster IP".into()),
        _ => Err(format!("unsupported cluster IPs {ips:?}")),
    }
}

/// Whether `--lb-class` selects this Service: an empty flag takes class-less Services only.
pub fn class_matches(svc: &Service, lb_class: &str) -> bool {
    let class = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_class.as_deref())
        .unwrap_or_default();
    class == lb_class
}

/// Classify a Service and build its allocation request.
///
/// The requested IPs are read as upstream `getDesiredLbIPs` (controller/service.go:218-252 at
/// v0.12.1): `spec.loadBalancerIP` or the `loadBalancerIPs` annotation, not both; each address
/// as Go 1.16's `net.ParseIP` (leading-zero IPv4 parts are decimal, see
/// [`parse_ip`](crate::config::addr::parse_ip)); an annotation list must be one address or
/// two of different families (`ipfamily.ForAddresses`, internal/ipfamily/ipfamily.go:25-47).
pub fn desired(svc: &Service, lb_class: &str) -> Desired {
    let Some(spec) = &svc.spec else {
        return Desired::NotOurs("no spec");
    };
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return Desired::NotOurs("not a LoadBalancer");
    }
    if !class_matches(svc, lb_class) {
        return Desired::NotOurs("another loadBalancerClass");
    }
    let family = match family(svc) {
        Ok(f) => f,
        Err(e) => return Desired::NoClusterIp(e),
    };
    let mut req = Request::new(family);
    if let Some(pool) = annotation(svc, "address-pool").filter(|s| !s.is_empty()) {
        req = req.pool(pool);
    }
    if let Some(k) = annotation(svc, "allow-shared-ip").filter(|s| !s.is_empty()) {
        req = req.shared(k);
    }
    if spec.external_traffic_policy.as_deref() == Some("Local") {
        let sel = spec.selector.clone().unwrap_or_default();
        req = req.backend(local_backend_key(
            sel.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ));
    }
    let ports = spec.ports.iter().flatten().map(|p| Port {
        proto: match p.protocol.as_deref() {
            Some("UDP") => Proto::Udp,
            Some("SCTP") => Proto::Sctp,
            _ => Proto::Tcp,
        },
        port: u16::try_from(p.port).unwrap_or(0),
    });
    req = req.ports(ports);
    match requested_ips(spec, svc) {
        Ok(ips) => Desired::Allocate(req.ips(ips)),
        Err(why) => Desired::Invalid { why, request: req },
    }
}

/// The requested addresses (empty: none), or why the request is malformed, in upstream's
/// words.
fn requested_ips(spec: &ServiceSpec, svc: &Service) -> Result<Vec<IpAddr>, String> {
    use crate::config::addr::parse_ip;
    let from_spec = spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty());
    let from_ann = annotation(svc, "loadBalancerIPs").filter(|s| !s.is_empty());
    match (from_spec, from_ann) {
        (None, None) => Ok(Vec::new()),
        (Some(_), Some(_)) => Err(
            "service can not have both metallb.universe.tf/loadBalancerIPs and svc.Spec.LoadBalancerIP".into(),
        ),
        (Some(ip), None) => parse_ip(ip.trim())
            .map(|ip| vec![ip])
            .ok_or_else(|| format!("invalid spec.loadBalancerIP {ip:?}")),
        (None, Some(list)) => {
            let ips = list
                .split(',')
                .map(|s| parse_ip(s.trim()))
                .collect::<Option<Vec<IpAddr>>>()
                .ok_or_else(|| format!("invalid metallb.universe.tf/loadBalancerIPs: {list:?}"))?;
            for_addresses(&ips)?;
            Ok(ips)
        }
    }
}

/// The family of an address list as upstream `ipfamily.ForAddresses`
/// (internal/ipfamily/ipfamily.go:25-47 at v0.12.1), with its error texts.
pub fn for_addresses(ips: &[IpAddr]) -> Result<Family, String> {
    use crate::allocator::quote_ips;
    match ips {
        [a] => Ok(Family::of_ip(*a)),
        [a, b] if a.is_ipv4() != b.is_ipv4() => Ok(Family::Dual),
        [_, _] => Err(format!(
            "IPFamilyForAddresses: same address family {}",
            quote_ips(ips)
        )),
        _ => Err(format!(
            "IPFamilyForAddresses: invalid ips length {} {}",
            ips.len(),
            quote_ips(ips)
        )),
    }
}

/// The IPs in `status.loadBalancer.ingress` (unparsable entries skipped).
pub fn status_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
        .collect()
}

/// Whether the status holds anything (hostname entries included).
pub fn has_status(svc: &Service) -> bool {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| !i.is_empty())
}

/// The Service with its `status.loadBalancer` set to exactly `ips` (empty: cleared).
pub fn with_status(svc: &Service, ips: &[IpAddr]) -> Service {
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
    let mut out = svc.clone();
    let status = out.status.get_or_insert_with(ServiceStatus::default);
    status.load_balancer = Some(LoadBalancerStatus {
        ingress: (!ips.is_empty()).then(|| {
            ips.iter()
                .map(|ip| LoadBalancerIngress {
                    ip: Some(ip.to_string()),
                    ..Default::default()
                })
                .collect()
        }),
    });
    out
}

pub use crate::k8s::lean::LeanService;

/// What the controller keeps of one Service between events: what [`desired`] made of it, its
/// status, and what a status write must send back. A few hundred bytes instead of the whole
/// object. Its `namespace/name` is the key it is stored under.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// `metadata.uid` (for Events).
    pub uid: Option<Box<str>>,
    /// `metadata.resourceVersion` (the status write's precondition).
    pub resource_version: Option<Box<str>>,
    /// `metadata.creationTimestamp` (restart order: oldest first).
    pub created: Option<k8s_openapi::jiff::Timestamp>,
    /// `spec.type` is `LoadBalancer`.
    pub load_balancer: bool,
    /// [`desired`] for the controller's `--lb-class`.
    pub desired: Desired,
    /// [`status_ips`].
    pub ips: Box<[IpAddr]>,
    /// [`has_status`].
    pub has_status: bool,
    /// The `ip-allocated-from-pool` annotation (either prefix).
    pub pool_annotation: Option<Box<str>>,
    /// What a status PUT must carry back unchanged (None when there is nothing).
    kept: Option<Box<Kept>>,
}

/// The parts of a Service a status PUT persists from its body and the controller does not
/// otherwise keep: the apiserver's Service status strategy resets only `spec` to the stored
/// one, so labels, annotations (kubectl's last-applied copy), finalizers, owner references and
/// status conditions must be sent back as they are.
#[derive(Clone, Debug, PartialEq, Default)]
struct Kept {
    generate_name: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    finalizers: Option<Vec<String>>,
    owner_references: Option<Vec<OwnerReference>>,
    conditions: Option<Vec<Condition>>,
}

impl Record {
    /// The record of `svc` for a controller of `lb_class`. Takes the Service apart (what it
    /// must send back moves into the record instead of being copied).
    pub fn new(svc: Service, lb_class: &str) -> Record {
        let desired = desired(&svc, lb_class);
        let ips = status_ips(&svc).into_boxed_slice();
        let has_status = has_status(&svc);
        let pool_annotation = annotation(&svc, "ip-allocated-from-pool").map(Box::from);
        let load_balancer =
            svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
        let m = svc.metadata;
        let kept = Kept {
            generate_name: m.generate_name,
            labels: m.labels.filter(|l| !l.is_empty()),
            annotations: m.annotations.filter(|a| !a.is_empty()),
            finalizers: m.finalizers.filter(|f| !f.is_empty()),
            owner_references: m.owner_references.filter(|o| !o.is_empty()),
            conditions: svc
                .status
                .and_then(|s| s.conditions)
                .filter(|c| !c.is_empty()),
        };
        Record {
            uid: m.uid.map(String::into_boxed_str),
            resource_version: m.resource_version.map(String::into_boxed_str),
            created: m.creation_timestamp.map(|t| t.0),
            load_balancer,
            desired,
            ips,
            has_status,
            pool_annotation,
            kept: (kept != Kept::default()).then(|| Box::new(kept)),
        }
    }

    /// `metadata.resourceVersion` as a number (etcd revisions), if it is one.
    pub fn revision(&self) -> Option<u64> {
        self.resource_version.as_deref()?.parse().ok()
    }

    /// The body of a status PUT (`services/status`) that sets `status.loadBalancer` to exactly
    /// `ips` (empty: cleared) and changes nothing else: metadata as it was read (the
    /// resourceVersion makes it conditional), no spec (the apiserver keeps the stored one).
    /// Ingress entries carry `ipMode: VIP`, as the apiserver's defaulting would have set.
    pub fn status_body(&self, namespace: &str, name: &str, ips: &[IpAddr]) -> LeanService {
        use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus};
        let k = self.kept.as_deref().cloned().unwrap_or_default();
        LeanService(Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                uid: self.uid.as_deref().map(String::from),
                resource_version: self.resource_version.as_deref().map(String::from),
                generate_name: k.generate_name,
                labels: k.labels,
                annotations: k.annotations,
                finalizers: k.finalizers,
                owner_references: k.owner_references,
                ..Default::default()
            },
            spec: None,
            status: Some(ServiceStatus {
                conditions: k.conditions,
                load_balancer: Some(LoadBalancerStatus {
                    ingress: (!ips.is_empty()).then(|| {
                        ips.iter()
                            .map(|ip| LoadBalancerIngress {
                                ip: Some(ip.to_string()),
                                // What the apiserver defaults for a LoadBalancer (1.30+), and
                                // requires; it cannot default it here: the body has no spec.
                                ip_mode: Some("VIP".into()),
                                ..Default::default()
                            })
                            .collect()
                    }),
                }),
            }),
        })
    }

    /// Whether the status already is exactly `ips` (empty: no status at all).
    pub fn status_is(&self, ips: &[IpAddr]) -> bool {
        *self.ips == *ips && (!ips.is_empty() || !self.has_status)
    }

    /// The Event reference to this Service.
    pub fn reference(&self, namespace: &str, name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            uid: self.uid.as_deref().map(String::from),
            resource_version: self.resource_version.as_deref().map(String::from),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use std::collections::BTreeMap;

    fn svc(ann: &[(&str, &str)]) -> Service {
        Service {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                annotations: Some(
                    ann.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                cluster_ips: Some(vec!["10.96.0.10".into()]),
                ports: Some(vec![ServicePort {
                    port: 80,
                    protocol: Some("UDP".into()),
                    ..Default::default()
                }]),
                selector: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn builds_a_request_from_annotations_with_the_new_prefix_winning() {
        let s = svc(&[
            ("metallb.universe.tf/address-pool", "old"),
            ("metallb.io/address-pool", "new"),
            ("metallb.universe.tf/allow-shared-ip", "k"),
        ]);
        let Desired::Allocate(r) = desired(&s, "") else {
            panic!()
        };
        assert_eq!(r.pool.as_deref(), Some("new"));
        assert_eq!(r.sharing_key, "k");
        assert_eq!(r.family, Family::V4);
        assert_eq!(
            r.ports,
            vec![Port {
                proto: Proto::Udp,
                port: 80
            }]
        );
        assert_eq!(key(&s), "shop/web");
    }

    #[test]
    fn refuses_both_request_forms_and_bad_ips() {
        let mut s = svc(&[("metallb.universe.tf/loadBalancerIPs", "192.0.2.1")]);
        s.spec.as_mut().unwrap().load_balancer_ip = Some("192.0.2.2".into());
        assert!(matches!(desired(&s, ""), Desired::Invalid { .. }));
        let s = svc(&[("metallb.universe.tf/loadBalancerIPs", "192.0.2.1, nope")]);
        assert!(matches!(desired(&s, ""), Desired::Invalid { .. }));
        // Upstream's ipfamily.ForAddresses errors, word for word.
        let s = svc(&[("metallb.io/loadBalancerIPs", "192.0.2.1,192.0.2.2")]);
        let Desired::Invalid { why, request } = desired(&s, "") else {
            panic!()
        };
        assert_eq!(
            why,
            r#"IPFamilyForAddresses: same address family ["192.0.2.1" "192.0.2.2"]"#
        );
        assert!(request.ips.is_empty() && request.ports.len() == 1);
        let s = svc(&[(
            "metallb.io/loadBalancerIPs",
            "192.0.2.1,2001:db8::1,192.0.2.3",
        )]);
        let Desired::Invalid { why, .. } = desired(&s, "") else {
            panic!()
        };
        assert_eq!(
            why,
            r#"IPFamilyForAddresses: invalid ips length 3 ["192.0.2.1" "2001:db8::1" "192.0.2.3"]"#
        );
        // Leading zeros are decimal (Go 1.16's net.ParseIP).
        let mut s = svc(&[]);
        s.spec.as_mut().unwrap().load_balancer_ip = Some("192.000.002.010".into());
        let Desired::Allocate(r) = desired(&s, "") else {
            panic!()
        };
        assert_eq!(r.ips, vec!["192.0.2.10".parse::<IpAddr>().unwrap()]);
        let s = svc(&[("metallb.io/loadBalancerIPs", "192.0.2.1, 2001:db8::1")]);
        let Desired::Allocate(r) = desired(&s, "") else {
            panic!()
        };
        assert_eq!(r.ips.len(), 2);
    }

    #[test]
    fn filters_type_class_and_family() {
        let mut s = svc(&[]);
        s.spec.as_mut().unwrap().load_balancer_class = Some("other".into());
        assert!(matches!(desired(&s, ""), Desired::NotOurs(_)));
        assert!(matches!(desired(&s, "other"), Desired::Allocate(_)));
        let mut s = svc(&[]);
        s.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert!(matches!(desired(&s, ""), Desired::NotOurs(_)));
        let mut s = svc(&[]);
        s.spec.as_mut().unwrap().cluster_ips =
            Some(vec!["10.96.0.1".into(), "fd00:10:96::1".into()]);
        let Desired::Allocate(r) = desired(&s, "") else {
            panic!()
        };
        assert_eq!(r.family, Family::Dual);
        let mut s = svc(&[]);
        s.spec.as_mut().unwrap().cluster_ips = Some(vec!["None".into()]);
        assert!(matches!(desired(&s, ""), Desired::NoClusterIp(_)));
    }

    #[test]
    fn local_policy_uses_the_selector_as_backend_key() {
        let mut s = svc(&[]);
        s.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        let Desired::Allocate(r) = desired(&s, "") else {
            panic!()
        };
        assert_eq!(r.backend_key, "app=web");
    }

    #[test]
    fn status_round_trips() {
        let s = svc(&[]);
        let ips: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        let w = with_status(&s, &ips);
        assert_eq!(status_ips(&w), ips);
        assert!(has_status(&w));
        assert!(!has_status(&with_status(&w, &[])));
    }

    #[test]
    fn lean_services_skip_managed_fields_and_keep_what_a_status_write_sends_back() {
        let json = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "42",
                "creationTimestamp": "2024-01-02T03:04:05Z",
                "labels": {"app": "web"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{}",
                    "metallb.universe.tf/ip-allocated-from-pool": "a"
                },
                "finalizers": ["service.kubernetes.io/load-balancer-cleanup"],
                "managedFields": [{"manager": "kubectl", "operation": "Update"}]
            },
            "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.10"], "ports": [{"port": 80}]},
            "status": {
                "loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]},
                "conditions": [{"type": "T", "status": "True", "lastTransitionTime": "2024-01-02T03:04:05Z", "reason": "R", "message": ""}]
            }
        });
        let lean: LeanService = serde_json::from_value(json).unwrap();
        assert!(lean.0.metadata.managed_fields.is_none());
        let rec = Record::new(lean.0.clone(), "");
        assert!(matches!(rec.desired, Desired::Allocate(_)));
        assert_eq!(rec.revision(), Some(42));
        assert_eq!(rec.pool_annotation.as_deref(), Some("a"));
        assert!(rec.status_is(&["192.0.2.1".parse().unwrap()]));
        assert!(!rec.status_is(&[]));

        let body = rec.status_body("shop", "web", &[]).0;
        assert_eq!(body.metadata.name.as_deref(), Some("web"));
        assert_eq!(body.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(body.metadata.annotations, lean.0.metadata.annotations);
        assert_eq!(body.metadata.labels, lean.0.metadata.labels);
        assert_eq!(body.metadata.finalizers, lean.0.metadata.finalizers);
        assert!(body.spec.is_none());
        let st = body.status.unwrap();
        assert_eq!(st.conditions.map(|c| c.len()), Some(1));
        assert!(!has_status(&Service {
            status: Some(ServiceStatus {
                conditions: None,
                load_balancer: st.load_balancer
            }),
            ..Default::default()
        }));

        let ips: Vec<IpAddr> = vec!["2001:db8::1".parse().unwrap()];
        let body = rec.status_body("shop", "web", &ips);
        let wire = serde_json::to_value(&body).unwrap();
        assert_eq!(wire["kind"], "Service");
        assert_eq!(
            wire["status"]["loadBalancer"]["ingress"][0]["ip"],
            "2001:db8::1"
        );
        let back: LeanService = serde_json::from_value(wire).unwrap();
        assert_eq!(status_ips(&back.0), ips);
    }

    #[test]
    fn records_without_user_metadata_stay_small() {
        let rec = Record::new(svc(&[]), "");
        assert!(rec.kept.is_none());
        assert_eq!(rec.reference("shop", "web").name.as_deref(), Some("web"));
    }
}
