//! Pure functions over Kubernetes Services: what a Service asks of the allocator, what its
//! status holds, and the status it should get. No I/O (the controller's driver does the writes).
//!
//! Matches MetalLB 0.12 `controller/service.go` (spec §4, §5.1): only `type: LoadBalancer`;
//! family from `spec.clusterIPs` (falling back to `spec.clusterIP`); requested IPs from
//! `spec.loadBalancerIP` or the `loadBalancerIPs` annotation (not both); annotations read under
//! both prefixes `metallb.universe.tf/` and `metallb.io/`, the new one winning.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

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
    /// The request is malformed (event `LoadBalancerFailed`).
    Invalid(String),
    /// Allocate for this request.
    Allocate(Request),
}

/// `namespace/name`.
pub fn key(svc: &Service) -> String {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or_default(),
        svc.metadata.name.as_deref().unwrap_or_default()
    )
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
    let from_spec = spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty());
    let from_ann = annotation(svc, "loadBalancerIPs").filter(|s| !s.trim().is_empty());
    let ips: Vec<IpAddr> = match (from_spec, from_ann) {
        (Some(_), Some(_)) => {
            return Desired::Invalid(
                "service can not have both metallb.universe.tf/loadBalancerIPs and svc.Spec.LoadBalancerIP".into(),
            );
        }
        (Some(ip), None) => match ip.trim().parse() {
            Ok(ip) => vec![ip],
            Err(_) => return Desired::Invalid(format!("invalid spec.loadBalancerIP {ip:?}")),
        },
        (None, Some(list)) => {
            let parsed: Result<Vec<IpAddr>, _> =
                list.split(',').map(|s| s.trim().parse()).collect();
            match parsed {
                Ok(v) => v,
                Err(_) => {
                    return Desired::Invalid(format!(
                        "invalid metallb.universe.tf/loadBalancerIPs: {list:?}"
                    ));
                }
            }
        }
        (None, None) => Vec::new(),
    };
    let mut req = Request::new(family).ips(ips);
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
    Desired::Allocate(req.ports(ports))
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
        assert!(matches!(desired(&s, ""), Desired::Invalid(_)));
        let s = svc(&[("metallb.universe.tf/loadBalancerIPs", "192.0.2.1, nope")]);
        assert!(matches!(desired(&s, ""), Desired::Invalid(_)));
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
}
