//! Which (IP, service) pairs this node announces in layer 2 mode. Pure: no I/O, no clock.
//!
//! Follows MetalLB 0.12 `speaker/main.go` `handleService` + `layer2_controller.go`
//! `ShouldAnnounce` (spec §6.1), per LoadBalancer Service (filtering on `spec.type` is the
//! caller's job):
//!
//! 1. No IP in the status → not announced (`noIPAllocated`).
//! 2. One pool must contain **all** of the service's IPs (upstream `poolFor`), else not announced
//!    (`ipNotAllowed`). Only pools with `protocol: layer2` concern this module (`notLayer2`
//!    otherwise; the BGP side handles those).
//! 3. The owner is elected by [`election::elect`] on the **first** IP of the status:
//!    candidates per `externalTrafficPolicy`, lowest `sha256(node "#" ip)` wins. The owner
//!    announces every IP of the service (both families of a dual-stack service).
//!
//! Services sharing an IP use the same key, so with equal candidate sets they get the same owner.
//! Upstream can still elect two owners for one IP when sharers' keys or candidate sets differ
//! (a dual-stack service keyed on its IPv4 sharing its IPv6 with a single-stack service, or
//! sharers whose endpoints differ for a moment). Deviation, to keep "one IP, one answering node":
//! when the services using an IP elect different owners, the IP goes to the one of those owners
//! with the lowest `sha256(owner "#" ip)`. When they agree (always, in the upstream-consistent
//! case) this changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::config::{Config, Pool, Protocol};

use super::election::{self, TrafficPolicy};

/// What the planner needs to know about one LoadBalancer Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L2Service {
    /// `namespace/name`.
    pub key: String,
    /// `status.loadBalancer.ingress[].ip` in status order (the first is the election key).
    pub lb_ips: Vec<IpAddr>,
    /// `spec.externalTrafficPolicy`.
    pub policy: TrafficPolicy,
    /// Nodes hosting at least one ready endpoint of the service (EndpointSlice `ready` nil or
    /// true; Endpoints `addresses[]` not also listed as not-ready).
    pub ready_endpoint_nodes: BTreeSet<String>,
}

/// One IP this node answers for, on behalf of one service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Announcement {
    /// The service IP.
    pub ip: IpAddr,
    /// The service key `namespace/name`.
    pub service: String,
}

/// Why this node does not announce a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// No IP in the status.
    NoIpAllocated,
    /// No single pool contains all of the service's IPs.
    IpNotAllowed,
    /// The pool is not a layer 2 pool.
    NotLayer2,
    /// Another node (or nobody) won the election.
    NotOwner {
        /// The elected node, if any.
        owner: Option<String>,
    },
}

impl Skip {
    /// MetalLB's withdraw reason string.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoIpAllocated => "noIPAllocated",
            Self::IpNotAllowed => "ipNotAllowed",
            Self::NotLayer2 => "notLayer2",
            Self::NotOwner { .. } => "notOwner",
        }
    }
}

/// The layer 2 plan of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// What this node announces, sorted by IP then service.
    pub announce: Vec<Announcement>,
    /// Services this node announces nothing for, and why, by service key.
    pub skipped: BTreeMap<String, Skip>,
}

impl Plan {
    /// The IPs to answer ARP/NDP for.
    pub fn ips(&self) -> BTreeSet<IpAddr> {
        self.announce.iter().map(|a| a.ip).collect()
    }
}

/// The pool containing all of `ips` (MetalLB `poolFor`; pools never overlap once validated, so
/// config order only matters for an unvalidated config).
pub fn pool_for<'a>(config: &'a Config, ips: &[IpAddr]) -> Option<&'a Pool> {
    if ips.is_empty() {
        return None;
    }
    config
        .pools
        .iter()
        .find(|p| ips.iter().all(|ip| p.cidrs().any(|c| c.contains(ip))))
}

/// The layer 2 plan of node `me`, given every LoadBalancer service and the live speakers.
pub fn plan(
    config: &Config,
    services: &[L2Service],
    live_speakers: &BTreeSet<String>,
    me: &str,
) -> Plan {
    let mut plan = Plan::default();
    // Per IP: the owners elected by the services using it, with those services.
    let mut by_ip: BTreeMap<IpAddr, Vec<(&str, &str)>> = BTreeMap::new();
    for svc in services {
        let Some(first) = svc.lb_ips.first() else {
            plan.skipped.insert(svc.key.clone(), Skip::NoIpAllocated);
            continue;
        };
        let Some(pool) = pool_for(config, &svc.lb_ips) else {
            plan.skipped.insert(svc.key.clone(), Skip::IpNotAllowed);
            continue;
        };
        if pool.protocol != Protocol::Layer2 {
            plan.skipped.insert(svc.key.clone(), Skip::NotLayer2);
            continue;
        }
        match election::elect(svc.policy, &svc.ready_endpoint_nodes, live_speakers, *first) {
            Some(owner) => {
                for ip in &svc.lb_ips {
                    by_ip.entry(*ip).or_default().push((owner, &svc.key));
                }
                if owner != me {
                    plan.skipped.insert(
                        svc.key.clone(),
                        Skip::NotOwner {
                            owner: Some(owner.to_string()),
                        },
                    );
                }
            }
            None => {
                plan.skipped
                    .insert(svc.key.clone(), Skip::NotOwner { owner: None });
            }
        }
    }
    for (ip, users) in by_ip {
        // Normally every user elected the same owner; otherwise settle on one (module docs).
        let owner = election::owner(users.iter().map(|(o, _)| o), ip);
        if owner != Some(me) {
            continue;
        }
        for (_, service) in users {
            plan.announce.push(Announcement {
                ip,
                service: service.to_string(),
            });
            // A service announced here through a shared IP is not "skipped" on this node.
            plan.skipped.remove(service);
        }
    }
    plan.announce.sort();
    plan.announce.dedup();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_payload;

    const CONFIG: &str = r#"
address-pools:
- name: l2
  protocol: layer2
  addresses:
  - 203.0.113.0/24
  - 2001:db8::/64
- name: bgp
  protocol: bgp
  addresses:
  - 198.51.100.0/24
peers:
- peer-address: 192.0.2.1
  peer-asn: 64500
  my-asn: 64501
"#;

    fn config() -> Config {
        parse_payload(CONFIG).expect("test config")
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn svc(key: &str, ips: &[&str], policy: TrafficPolicy, ready: &[&str]) -> L2Service {
        L2Service {
            key: key.to_string(),
            lb_ips: ips.iter().map(|s| s.parse().expect("test ip")).collect(),
            policy,
            ready_endpoint_nodes: set(ready),
        }
    }

    fn ann(ip: &str, service: &str) -> Announcement {
        Announcement {
            ip: ip.parse().expect("test ip"),
            service: service.to_string(),
        }
    }

    const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

    /// Every node's plan; asserts that no IP is announced by two nodes.
    fn plans(services: &[L2Service], live: &BTreeSet<String>) -> BTreeMap<&'static str, Plan> {
        let cfg = config();
        let out: BTreeMap<_, _> = NODES
            .iter()
            .map(|n| (*n, plan(&cfg, services, live, n)))
            .collect();
        let mut seen = BTreeMap::new();
        for (node, p) in &out {
            for ip in p.ips() {
                if let Some(other) = seen.insert(ip, *node) {
                    panic!("{ip} announced by {other} and {node}");
                }
            }
        }
        out
    }

    #[test]
    fn cluster_service_is_announced_by_the_elected_node_only() {
        // 203.0.113.10 among node-a/b/c: node-c (see the election parity table).
        let s = [svc(
            "default/web",
            &["203.0.113.10"],
            TrafficPolicy::Cluster,
            &["node-a"],
        )];
        let p = plans(&s, &set(&NODES));
        assert_eq!(p["node-c"].announce, [ann("203.0.113.10", "default/web")]);
        assert!(p["node-a"].announce.is_empty());
        assert_eq!(
            p["node-a"].skipped["default/web"],
            Skip::NotOwner {
                owner: Some("node-c".into())
            }
        );
    }

    #[test]
    fn local_service_is_announced_by_a_node_with_an_endpoint() {
        let s = [svc(
            "default/web",
            &["203.0.113.10"],
            TrafficPolicy::Local,
            &["node-a", "node-b"],
        )];
        let p = plans(&s, &set(&NODES));
        // node-a (9397…) < node-b (d84a…).
        assert_eq!(p["node-a"].announce, [ann("203.0.113.10", "default/web")]);
        assert!(p["node-c"].announce.is_empty());
    }

    #[test]
    fn no_ready_endpoint_means_nobody_announces() {
        let s = [svc(
            "default/web",
            &["203.0.113.10"],
            TrafficPolicy::Cluster,
            &[],
        )];
        let p = plans(&s, &set(&NODES));
        for n in NODES {
            assert!(p[n].announce.is_empty());
            assert_eq!(p[n].skipped["default/web"], Skip::NotOwner { owner: None });
        }
    }

    #[test]
    fn bgp_pools_and_foreign_ips_are_not_announced() {
        let s = [
            svc(
                "default/bgp",
                &["198.51.100.7"],
                TrafficPolicy::Cluster,
                &["node-a"],
            ),
            svc(
                "default/stray",
                &["192.0.2.9"],
                TrafficPolicy::Cluster,
                &["node-a"],
            ),
            svc("default/pending", &[], TrafficPolicy::Cluster, &["node-a"]),
            // Two IPs from two different pools: no single pool holds both.
            svc(
                "default/split",
                &["203.0.113.9", "198.51.100.9"],
                TrafficPolicy::Cluster,
                &["node-a"],
            ),
        ];
        let p = plans(&s, &set(&NODES));
        for n in NODES {
            assert!(p[n].announce.is_empty());
            assert_eq!(p[n].skipped["default/bgp"], Skip::NotLayer2);
            assert_eq!(p[n].skipped["default/stray"], Skip::IpNotAllowed);
            assert_eq!(p[n].skipped["default/pending"], Skip::NoIpAllocated);
            assert_eq!(p[n].skipped["default/split"], Skip::IpNotAllowed);
            assert_eq!(p[n].skipped["default/pending"].reason(), "noIPAllocated");
        }
    }

    #[test]
    fn services_sharing_an_ip_get_the_same_owner() {
        let s = [
            svc(
                "default/dns-tcp",
                &["203.0.113.11"],
                TrafficPolicy::Cluster,
                &["node-b"],
            ),
            svc(
                "default/dns-udp",
                &["203.0.113.11"],
                TrafficPolicy::Cluster,
                &["node-c"],
            ),
        ];
        let p = plans(&s, &set(&NODES));
        // 203.0.113.11 among node-a/b/c: node-a.
        assert_eq!(
            p["node-a"].announce,
            [
                ann("203.0.113.11", "default/dns-tcp"),
                ann("203.0.113.11", "default/dns-udp")
            ]
        );
        assert!(p["node-b"].announce.is_empty() && p["node-c"].announce.is_empty());
    }

    #[test]
    fn dual_stack_service_is_keyed_on_its_first_ip() {
        // First IP 203.0.113.10 → node-c announces both; 2001:db8::1 alone would elect node-b.
        let s = [svc(
            "default/dual",
            &["203.0.113.10", "2001:db8::1"],
            TrafficPolicy::Cluster,
            &["node-a"],
        )];
        let p = plans(&s, &set(&NODES));
        assert_eq!(
            p["node-c"].announce,
            [
                ann("203.0.113.10", "default/dual"),
                ann("2001:db8::1", "default/dual")
            ]
        );
    }

    #[test]
    fn conflicting_owners_of_a_shared_ip_are_settled_on_one_node() {
        // default/dual is keyed on 203.0.113.10 (node-c); default/v6 on 2001:db8::1 (node-b).
        // Upstream would have node-c and node-b both answer for 2001:db8::1; here the lower of
        // sha256("node-b#2001:db8::1") = 1aee… and sha256("node-c#2001:db8::1") = bb83… wins.
        let s = [
            svc(
                "default/dual",
                &["203.0.113.10", "2001:db8::1"],
                TrafficPolicy::Cluster,
                &["node-a"],
            ),
            svc(
                "default/v6",
                &["2001:db8::1"],
                TrafficPolicy::Cluster,
                &["node-a"],
            ),
        ];
        let p = plans(&s, &set(&NODES));
        assert_eq!(p["node-c"].announce, [ann("203.0.113.10", "default/dual")]);
        assert_eq!(
            p["node-b"].announce,
            [
                ann("2001:db8::1", "default/dual"),
                ann("2001:db8::1", "default/v6")
            ]
        );
        assert!(!p["node-b"].skipped.contains_key("default/dual"));
    }

    #[test]
    fn dead_owner_hands_over() {
        let s = [svc(
            "default/web",
            &["203.0.113.10"],
            TrafficPolicy::Cluster,
            &["node-a"],
        )];
        let p = plans(&s, &set(&["node-a", "node-b"]));
        // node-c gone: node-a (9397…) < node-b (d84a…).
        assert_eq!(p["node-a"].announce, [ann("203.0.113.10", "default/web")]);
        assert!(p["node-c"].announce.is_empty());
    }

    #[test]
    fn pool_for_needs_one_pool_holding_every_ip() {
        let cfg = config();
        let ip = |s: &str| s.parse::<IpAddr>().expect("test ip");
        assert_eq!(
            pool_for(&cfg, &[ip("203.0.113.1")]).map(|p| p.name.as_str()),
            Some("l2")
        );
        assert_eq!(
            pool_for(&cfg, &[ip("203.0.113.1"), ip("2001:db8::5")]).map(|p| p.name.as_str()),
            Some("l2")
        );
        assert_eq!(
            pool_for(&cfg, &[ip("198.51.100.1")]).map(|p| p.name.as_str()),
            Some("bgp")
        );
        assert!(pool_for(&cfg, &[ip("203.0.113.1"), ip("198.51.100.1")]).is_none());
        assert!(pool_for(&cfg, &[]).is_none());
    }
}
