//! The controller's decision for one Service, as a pure function: MetalLB 0.12.1's
//! `convergeBalancer` (controller/service.go:37-169 at v0.12.1; spec §5.1) over a [`Record`]
//! and the allocator, returning what the driver must do. No I/O, no clock: the driver in
//! `controller/mod.rs` runs the [`Action`]s (status PUT, Events) and nothing else decides.
//!
//! The upstream order matters and is kept:
//!
//! 1. not a LoadBalancer (or not our class), no cluster IP → release and clear;
//! 2. the IPs in the status are re-asserted (`Assign`) **before** the request is validated
//!    (service.go:96 before :114), so a Service whose request became malformed keeps its IP and
//!    the IP stays reserved, also right after a restart;
//! 3. a held IP is dropped when `Assign` fails, the requested pool differs (:106) or the
//!    requested IPs differ (:120); a malformed request with a held IP is a `LoadBalancerFailed`
//!    Warning and nothing else (:115-118);
//! 4. with nothing held: wait for the initial list (:129), else allocate; a failure (malformed
//!    requests included, `allocateIPs` :189-191) is an `AllocationFailed` Warning (:136), a
//!    success an `IPAllocated` Event (:143);
//! 5. the status becomes exactly the IPs held (:163-167).

use std::collections::BTreeSet;
use std::net::IpAddr;

use tracing::{debug, info};

use crate::allocator::{Allocator, Request, quote_ips};
use crate::k8s::events::Kind;
use crate::k8s::service::{Desired, Record, for_addresses};

/// One thing the driver must do for the Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Post an Event about the Service.
    Event {
        /// Normal or Warning.
        kind: Kind,
        /// The reason (upstream's).
        reason: &'static str,
        /// The message (upstream's format).
        message: String,
    },
    /// Write `status.loadBalancer` as exactly these IPs (empty: cleared). Only emitted when the
    /// status differs.
    Status(Vec<IpAddr>),
    /// The Service released IPs it held: Services waiting for an IP get another try.
    Released,
}

/// Decide what converging Service `key` takes, updating `alloc` as upstream does. `synced`:
/// the initial Service list is complete (new IPs may be handed out). The caller has a config.
pub fn decide(key: &str, rec: &Record, alloc: &mut Allocator, synced: bool) -> Vec<Action> {
    let mut out = Vec::new();
    // What the Service held before: in the allocator, or re-asserted from its status below.
    let mut held_before: Vec<IpAddr> = alloc
        .ips_of(key)
        .map(<[IpAddr]>::to_vec)
        .unwrap_or_default();
    let (request, invalid) = match &rec.desired {
        Desired::NotOurs(why) => {
            // A LoadBalancer of another class is not ours: clear only what we owned.
            let owned = alloc.unassign(key);
            if (owned || !rec.load_balancer) && !rec.status_is(&[]) {
                debug!(service = %key, why, "Clearing the status of a Service that is not ours");
                out.push(Action::Status(Vec::new()));
            }
            if owned {
                out.push(Action::Released);
            }
            return out;
        }
        Desired::NoClusterIp(why) => {
            debug!(service = %key, why, "No cluster IP, clearing");
            let owned = alloc.unassign(key);
            if !rec.status_is(&[]) {
                out.push(Action::Status(Vec::new()));
            }
            if owned {
                out.push(Action::Released);
            }
            return out;
        }
        Desired::Invalid { why, request } => (request, Some(why.as_str())),
        Desired::Allocate(request) => (request, None),
    };

    // Steps 2-3: re-assert the current status.
    let current: Vec<IpAddr> = rec.ips.to_vec();
    let mut ips: Vec<IpAddr> = Vec::new();
    if current.is_empty() {
        // Upstream unassigns here (service.go:67-68). Our status writes are asynchronous: what
        // we hold may be on its way to the status, so a valid request keeps it through
        // `allocate` (which re-checks it); a malformed one releases it, as upstream.
        if invalid.is_some() {
            alloc.unassign(key);
        }
    } else {
        match for_addresses(&current) {
            Err(e) => {
                // service.go:70-75: reported, nothing re-asserted, nothing cleared.
                out.push(warning(
                    "nolbIPsIPFamily",
                    format!(
                        "Failed to retrieve LBIPs IPFamily for {}: {e}",
                        quote_ips(&current)
                    ),
                ));
                return out;
            }
            Ok(f) if f != request.family => {
                // service.go:84-87; the request is then not validated here (:93).
                info!(service = %key, "The IP family changed, clearing");
                alloc.unassign(key);
            }
            Ok(_) => {
                ips = keep_current(key, &current, request, alloc, &mut held_before);
                if let Some(why) = invalid {
                    // service.go:114-118: the held IP stays (when `Assign` kept it).
                    out.push(warning(
                        "LoadBalancerFailed",
                        format!("invalid requested loadbalancer IPs: {why}"),
                    ));
                    finish(key, rec, &ips, &held_before, &mut out);
                    return out;
                }
                if !ips.is_empty() && !request.ips.is_empty() && set(&request.ips) != set(&ips) {
                    info!(service = %key, ips = %quote_ips(&ips), "A different IP was requested, clearing");
                    alloc.unassign(key);
                    ips.clear();
                }
            }
        }
    }

    // Step 4: allocate.
    if ips.is_empty() {
        if !synced {
            debug!(service = %key, "Not synced yet, cannot allocate IP; will retry after sync");
            return out;
        }
        let result = match invalid {
            Some(why) => Err(why.to_string()),
            None => alloc.allocate(key, request).map_err(|e| e.to_string()),
        };
        match result {
            Ok(new) => {
                info!(service = %key, ips = %quote_ips(&new), "IP allocated");
                out.push(Action::Event {
                    kind: Kind::Normal,
                    reason: "IPAllocated",
                    message: format!("Assigned IP {}", quote_ips(&new)),
                });
                ips = new;
            }
            Err(e) => {
                debug!(service = %key, error = %e, "IP allocation failed");
                out.push(warning(
                    "AllocationFailed",
                    format!("Failed to allocate IP for {key:?}: {e}"),
                ));
            }
        }
    }
    finish(key, rec, &ips, &held_before, &mut out);
    out
}

/// Re-assert `current` for `key` (service.go:96-110): the IPs still held afterwards, or none
/// when the config no longer allows them or another pool was requested. What `Assign` took
/// goes to `held` (it is released if not kept).
fn keep_current(
    key: &str,
    current: &[IpAddr],
    request: &Request,
    alloc: &mut Allocator,
    held: &mut Vec<IpAddr>,
) -> Vec<IpAddr> {
    if let Err(e) = alloc.assign(key, current, request) {
        info!(service = %key, ips = %quote_ips(current), error = %e, "Current IP not allowed by config, clearing");
        alloc.unassign(key);
        return Vec::new();
    }
    held.extend(current);
    if let Some(pool) = request.pool.as_deref()
        && !alloc.service_pool_is(key, pool)
    {
        info!(service = %key, ips = %quote_ips(current), "A different pool was requested, clearing");
        alloc.unassign(key);
        return Vec::new();
    }
    current.to_vec()
}

/// Step 5: the status write (when it differs) and the release notice.
fn finish(key: &str, rec: &Record, ips: &[IpAddr], held_before: &[IpAddr], out: &mut Vec<Action>) {
    if !rec.status_is(ips) {
        out.push(Action::Status(ips.to_vec()));
    }
    if !held_before.iter().all(|ip| ips.contains(ip)) {
        debug!(service = %key, "Released IPs");
        out.push(Action::Released);
    }
}

fn warning(reason: &'static str, message: String) -> Action {
    Action::Event {
        kind: Kind::Warning,
        reason,
        message,
    }
}

fn set(ips: &[IpAddr]) -> BTreeSet<IpAddr> {
    ips.iter().copied().collect()
}

#[cfg(test)]
mod tests {
    //! The §5.1 table by value: (Service as stored, allocator before) → (actions, allocator
    //! after).
    use super::*;
    use crate::allocator::Family;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const CONFIG: &str = "address-pools:\n- name: a\n  protocol: layer2\n  addresses: [192.0.2.0/30]\n- name: b\n  protocol: layer2\n  auto-assign: false\n  addresses: [198.51.100.0/30]\n- name: ds\n  protocol: layer2\n  auto-assign: false\n  addresses: ['2001:db8::/126', 203.0.113.0/30]\n";

    fn alloc() -> Allocator {
        let mut a = Allocator::new();
        let c = crate::config::parse_payload(CONFIG).expect("test config");
        a.set_pools(&c).expect("empty allocator");
        a
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| ip(s)).collect()
    }

    /// A LoadBalancer Service with these annotations, `loadBalancerIP` and status.
    fn svc(ann: &[(&str, &str)], lb_ip: Option<&str>, status: &[&str]) -> Record {
        let svc = Service {
            metadata: ObjectMeta {
                name: Some("s".into()),
                namespace: Some("ns".into()),
                annotations: Some(
                    ann.iter()
                        .map(|(k, v)| (format!("metallb.universe.tf/{k}"), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                cluster_ips: Some(vec!["10.96.0.10".into()]),
                load_balancer_ip: lb_ip.map(String::from),
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        status
                            .iter()
                            .map(|s| LoadBalancerIngress {
                                ip: Some(s.to_string()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }),
                ..Default::default()
            }),
        };
        Record::new(svc, "")
    }

    fn dual(mut r: Record) -> Record {
        if let Desired::Allocate(req) | Desired::Invalid { request: req, .. } = &mut r.desired {
            req.family = Family::Dual;
        }
        r
    }

    fn event(kind: Kind, reason: &'static str, message: &str) -> Action {
        Action::Event {
            kind,
            reason,
            message: message.into(),
        }
    }

    fn status(v: &[&str]) -> Action {
        Action::Status(ips(v))
    }

    const KEY: &str = "ns/s";
    const TWO_V4: (&str, &str) = ("loadBalancerIPs", "192.0.2.1,192.0.2.2");

    struct Row {
        name: &'static str,
        rec: Record,
        /// Another Service holding 192.0.2.0 before.
        other: bool,
        synced: bool,
        want: Vec<Action>,
        /// What `KEY` holds afterwards.
        holds: Option<Vec<IpAddr>>,
    }

    #[test]
    fn convergence_table() {
        let lbf = |m: &str| {
            event(
                Kind::Warning,
                "LoadBalancerFailed",
                &format!("invalid requested loadbalancer IPs: {m}"),
            )
        };
        let af = |m: &str| {
            event(
                Kind::Warning,
                "AllocationFailed",
                &format!("Failed to allocate IP for \"ns/s\": {m}"),
            )
        };
        let ok = |m: &str| event(Kind::Normal, "IPAllocated", &format!("Assigned IP {m}"));
        let same_family = r#"IPFamilyForAddresses: same address family ["192.0.2.1" "192.0.2.2"]"#;
        let both = "service can not have both metallb.universe.tf/loadBalancerIPs and svc.Spec.LoadBalancerIP";
        let rows = vec![
            Row {
                name: "new Service: first free IP, IPAllocated, status",
                rec: svc(&[], None, &[]),
                other: false,
                synced: true,
                want: vec![ok(r#"["192.0.2.0"]"#), status(&["192.0.2.0"])],
                holds: Some(ips(&["192.0.2.0"])),
            },
            Row {
                name: "not synced: nothing handed out",
                rec: svc(&[], None, &[]),
                other: false,
                synced: false,
                want: vec![],
                holds: None,
            },
            Row {
                name: "held IP re-asserted before sync, no write, no Event",
                rec: svc(&[], None, &["192.0.2.3"]),
                other: false,
                synced: false,
                want: vec![],
                holds: Some(ips(&["192.0.2.3"])),
            },
            Row {
                name: "held IP + malformed request (two IPv4): kept, LoadBalancerFailed (item 2)",
                rec: svc(&[TWO_V4], None, &["192.0.2.3"]),
                other: false,
                synced: true,
                want: vec![lbf(same_family)],
                holds: Some(ips(&["192.0.2.3"])),
            },
            Row {
                name: "held IP + both request forms, before sync: kept and reserved (item 1)",
                rec: svc(
                    &[("loadBalancerIPs", "192.0.2.3")],
                    Some("192.0.2.3"),
                    &["192.0.2.3"],
                ),
                other: false,
                synced: false,
                want: vec![lbf(both)],
                holds: Some(ips(&["192.0.2.3"])),
            },
            Row {
                name: "no IP + malformed request: AllocationFailed (allocateIPs path)",
                rec: svc(&[TWO_V4], None, &[]),
                other: false,
                synced: true,
                want: vec![af(same_family)],
                holds: None,
            },
            Row {
                name: "held IP not allowed by config + malformed: cleared, LoadBalancerFailed",
                rec: svc(&[TWO_V4], None, &["192.0.2.99"]),
                other: false,
                synced: true,
                want: vec![lbf(same_family), status(&[])],
                holds: None,
            },
            Row {
                name: "held IP taken by another (restart order): re-allocated",
                rec: svc(&[], None, &["192.0.2.0"]),
                other: true,
                synced: true,
                want: vec![ok(r#"["192.0.2.1"]"#), status(&["192.0.2.1"])],
                holds: Some(ips(&["192.0.2.1"])),
            },
            Row {
                name: "different IP requested: moved, old one released",
                rec: svc(&[], Some("192.0.2.2"), &["192.0.2.3"]),
                other: false,
                synced: true,
                want: vec![
                    ok(r#"["192.0.2.2"]"#),
                    status(&["192.0.2.2"]),
                    Action::Released,
                ],
                holds: Some(ips(&["192.0.2.2"])),
            },
            Row {
                name: "requested IP outside every pool: released, AllocationFailed, cleared (differentIPRequested)",
                rec: svc(&[], Some("10.1.1.1"), &["192.0.2.3"]),
                other: false,
                synced: true,
                want: vec![
                    af(r#"["10.1.1.1"] is not allowed in config"#),
                    status(&[]),
                    Action::Released,
                ],
                holds: None,
            },
            Row {
                name: "different pool requested: moved",
                rec: svc(&[("address-pool", "b")], None, &["192.0.2.3"]),
                other: false,
                synced: true,
                want: vec![
                    ok(r#"["198.51.100.0"]"#),
                    status(&["198.51.100.0"]),
                    Action::Released,
                ],
                holds: Some(ips(&["198.51.100.0"])),
            },
            Row {
                name: "leading-zero request is decimal (Go 1.16)",
                rec: svc(&[], Some("192.000.002.002"), &[]),
                other: false,
                synced: true,
                want: vec![ok(r#"["192.0.2.2"]"#), status(&["192.0.2.2"])],
                holds: Some(ips(&["192.0.2.2"])),
            },
            Row {
                name: "dual stack from a pool listing IPv6 first: status in pool order",
                rec: dual(svc(&[("address-pool", "ds")], None, &[])),
                other: false,
                synced: true,
                want: vec![
                    ok(r#"["2001:db8::" "203.0.113.0"]"#),
                    status(&["2001:db8::", "203.0.113.0"]),
                ],
                holds: Some(ips(&["2001:db8::", "203.0.113.0"])),
            },
            Row {
                name: "dual stack requested IPv4 first: status in request order",
                rec: dual(svc(
                    &[("loadBalancerIPs", "203.0.113.2, 2001:db8::2")],
                    None,
                    &[],
                )),
                other: false,
                synced: true,
                want: vec![
                    ok(r#"["203.0.113.2" "2001:db8::2"]"#),
                    status(&["203.0.113.2", "2001:db8::2"]),
                ],
                holds: Some(ips(&["203.0.113.2", "2001:db8::2"])),
            },
            Row {
                name: "dual stack held in the other order than requested: kept as is",
                rec: dual(svc(
                    &[("loadBalancerIPs", "203.0.113.2,2001:db8::2")],
                    None,
                    &["2001:db8::2", "203.0.113.2"],
                )),
                other: false,
                synced: true,
                want: vec![],
                holds: Some(ips(&["2001:db8::2", "203.0.113.2"])),
            },
            Row {
                name: "status with two IPv4: nolbIPsIPFamily, untouched",
                rec: svc(&[], None, &["192.0.2.0", "192.0.2.1"]),
                other: false,
                synced: true,
                want: vec![event(
                    Kind::Warning,
                    "nolbIPsIPFamily",
                    r#"Failed to retrieve LBIPs IPFamily for ["192.0.2.0" "192.0.2.1"]: IPFamilyForAddresses: same address family ["192.0.2.0" "192.0.2.1"]"#,
                )],
                holds: None,
            },
        ];
        for row in rows {
            let mut a = alloc();
            if row.other {
                let req = Request::new(Family::V4);
                a.assign("ns/other", &ips(&["192.0.2.0"]), &req)
                    .expect("other");
            }
            let got = decide(KEY, &row.rec, &mut a, row.synced);
            assert_eq!(got, row.want, "{}", row.name);
            assert_eq!(
                a.ips_of(KEY).map(<[IpAddr]>::to_vec),
                row.holds,
                "{}: held afterwards",
                row.name
            );
            // The decision is a fixed point: converging the written result changes nothing.
            if let Some(Action::Status(new)) = got.iter().find(|a| matches!(a, Action::Status(_)))
                && row.synced
            {
                let mut rec = row.rec.clone();
                rec.ips = new.clone().into_boxed_slice();
                rec.has_status = !new.is_empty();
                let again = decide(KEY, &rec, &mut a, true);
                assert!(
                    again
                        .iter()
                        .all(|a| !matches!(a, Action::Status(_) | Action::Released)
                            && !matches!(
                                a,
                                Action::Event {
                                    reason: "IPAllocated",
                                    ..
                                }
                            )),
                    "{}: not a fixed point: {again:?}",
                    row.name
                );
            }
        }
    }

    #[test]
    fn services_that_are_not_ours_are_cleared_only_when_we_owned_them() {
        let mut a = alloc();
        let mut rec = svc(&[], None, &["192.0.2.0"]);
        rec.desired = Desired::NotOurs("another loadBalancerClass");
        // Another controller's Service with its own status: untouched.
        assert_eq!(decide(KEY, &rec, &mut a, true), vec![]);
        // One we gave an IP to and that changed class: released and cleared.
        a.assign(KEY, &ips(&["192.0.2.0"]), &Request::new(Family::V4))
            .expect("assign");
        assert_eq!(
            decide(KEY, &rec, &mut a, true),
            vec![status(&[]), Action::Released]
        );
        // Not a LoadBalancer any more: cleared even when we did not hold it.
        rec.load_balancer = false;
        rec.desired = Desired::NotOurs("not a LoadBalancer");
        assert_eq!(decide(KEY, &rec, &mut a, true), vec![status(&[])]);
        assert!(a.is_empty());
    }
}
