//! Property test of the allocator against a brute-force model of MetalLB's allocator.
//!
//! Random sequences of allocate / assign / unassign / config changes over small pools (so
//! that exhaustion, sharing and avoid-buggy-ips all happen) must keep these true:
//!
//! - an address is never held by two Services unless sharing allows it (equal non-empty keys,
//!   equal backend keys, disjoint ports);
//! - every address in use lies in a pool of the current config, a Service's addresses in one
//!   pool, and never a `.0`/`.255` of an avoid-buggy-ips pool;
//! - `stats()` equals a brute-force recount (distinct addresses in use, enumerated totals);
//! - an automatic allocation picks exactly what a naive upstream walk (pools in config order,
//!   every address of every CIDR in order, first free-or-sharable) picks, and assign / config
//!   acceptance succeed exactly when a naive check says so;
//! - a failed `allocate` leaves the Service with nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use metallb_rs::allocator::{Allocator, Family, Port, Request, is_buggy};
use metallb_rs::config::addr::to_u128;
use metallb_rs::config::{Config, parse_payload};
use proptest::prelude::*;

const SERVICES: u8 = 12;

fn config(buggy: bool, drop_c: bool, rename_b: bool) -> Config {
    let mut y = format!(
        "address-pools:
- name: a
  protocol: layer2
  avoid-buggy-ips: {buggy}
  addresses: ['10.0.0.254-10.0.1.1', '10.0.0.0/30']
- name: {b}
  protocol: layer2
  addresses: ['10.1.0.0/30', '2001:db8::/126']
- name: m
  protocol: layer2
  auto-assign: false
  addresses: ['10.2.0.0/31', '2001:db8:1::/127']
",
        b = if rename_b { "b2" } else { "b" }
    );
    if !drop_c {
        y.push_str("- name: c\n  protocol: layer2\n  addresses: ['2001:db8:2::fe/127']\n");
    }
    parse_payload(&y).unwrap()
}

const CANDIDATES: [&str; 12] = [
    "10.0.0.0",
    "10.0.0.1",
    "10.0.0.255",
    "10.0.1.0",
    "10.0.1.1",
    "10.1.0.2",
    "10.2.0.1",
    "2001:db8::1",
    "2001:db8:1::1",
    "2001:db8:2::ff",
    "192.0.2.1",
    "2001:db8:9::1",
];

#[derive(Debug, Clone)]
enum Op {
    Allocate(u8, Request),
    Assign(u8, Request),
    Unassign(u8),
    SetPools(bool, bool, bool),
}

fn request() -> impl Strategy<Value = Request> {
    let family = prop_oneof![
        4 => Just(Family::V4),
        2 => Just(Family::V6),
        2 => Just(Family::Dual)
    ];
    let ips = prop_oneof![
        6 => Just(vec![]),
        3 => (0..CANDIDATES.len()).prop_map(|i| vec![CANDIDATES[i].parse().unwrap()]),
        1 => (0..CANDIDATES.len(), 0..CANDIDATES.len()).prop_map(|(i, j)| vec![
            CANDIDATES[i].parse().unwrap(),
            CANDIDATES[j].parse().unwrap()
        ]),
    ];
    let pool = prop_oneof![
        6 => Just(None),
        1 => prop::sample::select(vec!["a", "b", "b2", "m", "c", "zz"]).prop_map(Some),
    ];
    let sharing = prop::sample::select(vec!["", "", "k1", "k2"]);
    let backend = prop::sample::select(vec!["", "", "app=x"]);
    let ports =
        prop::sample::subsequence(vec![Port::tcp(80), Port::tcp(443), Port::udp(53)], 0..=3);
    (family, ips, pool, sharing, backend, ports).prop_map(|(f, ips, pool, s, b, ports)| {
        let mut r = Request::new(f).ips(ips).shared(s).backend(b).ports(ports);
        if let Some(p) = pool {
            r = r.pool(p);
        }
        r
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..SERVICES, request()).prop_map(|(s, r)| Op::Allocate(s, r)),
        2 => (0..SERVICES, request()).prop_map(|(s, r)| Op::Assign(s, r)),
        4 => (0..SERVICES).prop_map(Op::Unassign),
        1 => (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(a, b, c)| Op::SetPools(a, b, c)),
    ]
}

fn svc(i: u8) -> String {
    format!("ns/s{i}")
}

/// The brute-force model: the config in force and, per Service holding addresses, the
/// request it holds them under.
struct Model {
    config: Config,
    held: BTreeMap<String, (Vec<IpAddr>, Request)>,
}

impl Model {
    fn users(&self, ip: IpAddr) -> Vec<&str> {
        self.held
            .iter()
            .filter(|(_, (ips, _))| ips.contains(&ip))
            .map(|(s, _)| s.as_str())
            .collect()
    }

    /// Upstream membership: the first pool with a CIDR holding `ip`, unless buggy there.
    fn pool_of(&self, ip: IpAddr) -> Option<usize> {
        self.config.pools.iter().position(|p| {
            !(p.avoid_buggy_ips && is_buggy(ip)) && p.cidrs().any(|n| n.contains(&ip))
        })
    }

    fn pool_of_all(&self, ips: &[IpAddr]) -> Option<usize> {
        let p = self.pool_of(*ips.first()?)?;
        ips.iter()
            .all(|ip| self.pool_of(*ip) == Some(p))
            .then_some(p)
    }

    /// Upstream `checkSharing` for `svc` wanting `ip` under `req`.
    fn sharable(&self, svc: &str, ip: IpAddr, req: &Request) -> bool {
        let others: Vec<&str> = self.users(ip).into_iter().filter(|u| *u != svc).collect();
        let Some(first) = others.first() else {
            return true;
        };
        let existing = &self.held[*first].1;
        let keys_ok = !existing.sharing_key.is_empty()
            && !req.sharing_key.is_empty()
            && existing.sharing_key == req.sharing_key
            && existing.backend_key == req.backend_key;
        keys_ok
            && others
                .iter()
                .all(|o| self.held[*o].1.ports.iter().all(|p| !req.ports.contains(p)))
    }

    fn assign_ok(&self, svc: &str, ips: &[IpAddr], req: &Request) -> bool {
        Family::of_ips(ips) == Ok(req.family)
            && self.pool_of_all(ips).is_some()
            && ips.iter().all(|ip| self.sharable(svc, *ip, req))
    }

    /// Upstream `AllocateFromPool` for a Service holding nothing, address by address.
    fn walk(&self, svc: &str, pool: usize, req: &Request) -> Option<Vec<IpAddr>> {
        let p = &self.config.pools[pool];
        let mut out: Vec<IpAddr> = Vec::new();
        for net in p.cidrs() {
            let fam = Family::of_ip(net.network());
            let wanted = req.family == Family::Dual || req.family == fam;
            if !wanted || out.iter().any(|ip| Family::of_ip(*ip) == fam) {
                continue;
            }
            let (lo, hi) = (to_u128(net.network()).0, to_u128(net.broadcast()).0);
            for v in lo..=hi {
                let ip: IpAddr = match fam {
                    Family::V4 => IpAddr::from((v as u32).to_be_bytes()),
                    _ => IpAddr::from(v.to_be_bytes()),
                };
                if p.avoid_buggy_ips && is_buggy(ip) {
                    continue;
                }
                if self.sharable(svc, ip, req) {
                    out.push(ip);
                    break;
                }
            }
        }
        let n = if req.family == Family::Dual { 2 } else { 1 };
        (out.len() == n).then_some(out)
    }

    fn expected_allocation(&self, svc: &str, req: &Request) -> Option<Vec<IpAddr>> {
        match &req.pool {
            Some(name) => {
                let i = self.config.pools.iter().position(|p| p.name == *name)?;
                self.walk(svc, i, req)
            }
            None => (0..self.config.pools.len())
                .filter(|i| self.config.pools[*i].auto_assign())
                .find_map(|i| self.walk(svc, i, req)),
        }
    }

    fn set_pools_ok(&self, next: &Config) -> bool {
        let m = Model {
            config: next.clone(),
            held: BTreeMap::new(),
        };
        self.held
            .values()
            .all(|(ips, _)| m.pool_of_all(ips).is_some())
    }
}

fn check_invariants(a: &Allocator, m: &Model) -> Result<(), TestCaseError> {
    // The allocator and the model agree on who holds what.
    for i in 0..SERVICES {
        let s = svc(i);
        let model = m.held.get(&s).map(|(ips, _)| ips.as_slice());
        prop_assert_eq!(a.ips_of(&s), model, "holdings of {}", s);
    }
    let mut in_use: BTreeMap<usize, BTreeSet<IpAddr>> = BTreeMap::new();
    for (s, (ips, req)) in &m.held {
        prop_assert_eq!(Family::of_ips(ips), Ok(req.family));
        let pool = m.pool_of_all(ips);
        prop_assert!(pool.is_some(), "{} holds {:?} outside one pool", s, ips);
        let pool = pool.unwrap();
        prop_assert_eq!(
            a.pool_of_service(s),
            Some(m.config.pools[pool].name.as_str())
        );
        for ip in ips {
            prop_assert!(!(m.config.pools[pool].avoid_buggy_ips && is_buggy(*ip)));
            prop_assert_eq!(a.pool_of(*ip), Some(m.config.pools[pool].name.as_str()));
            in_use.entry(pool).or_default().insert(*ip);
            // Sharing: every pair of users is compatible.
            let users = m.users(*ip);
            prop_assert_eq!(a.services_on(*ip).collect::<Vec<_>>(), users.clone());
            for (x, u) in users.iter().enumerate() {
                for v in &users[x + 1..] {
                    let (ru, rv) = (&m.held[*u].1, &m.held[*v].1);
                    prop_assert!(
                        !ru.sharing_key.is_empty(),
                        "{} shares {} unshareably",
                        u,
                        ip
                    );
                    prop_assert_eq!(&ru.sharing_key, &rv.sharing_key);
                    prop_assert_eq!(&ru.backend_key, &rv.backend_key);
                    prop_assert!(
                        ru.ports.iter().all(|p| !rv.ports.contains(p)),
                        "{} and {} clash on {}",
                        u,
                        v,
                        ip
                    );
                }
            }
        }
    }
    // Stats equal a brute-force recount.
    let stats = a.stats();
    prop_assert_eq!(stats.len(), m.config.pools.len());
    for (i, (st, p)) in stats.iter().zip(&m.config.pools).enumerate() {
        prop_assert_eq!(&st.name, &p.name);
        let used = in_use.get(&i).map_or(0, BTreeSet::len) as u64;
        prop_assert_eq!(st.addresses_in_use, used, "in use in {}", p.name);
        let total: i64 = p
            .cidrs()
            .map(|n| {
                let (lo, hi) = (to_u128(n.network()).0, to_u128(n.broadcast()).0);
                let size = (hi - lo + 1) as i64;
                let buggy = if p.avoid_buggy_ips && n.network().is_ipv4() {
                    (lo..=hi).filter(|v| matches!(v & 255, 0 | 255)).count() as i64
                } else {
                    0
                };
                size - buggy
            })
            .sum();
        prop_assert_eq!(st.addresses_total, total, "total of {}", p.name);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn allocator_matches_a_brute_force_model(buggy: bool, ops in prop::collection::vec(op(), 1..80)) {
        let mut a = Allocator::new();
        let mut m = Model { config: config(buggy, false, false), held: BTreeMap::new() };
        a.set_pools(&m.config).unwrap();
        for op in ops {
            match op {
                Op::Allocate(i, req) => {
                    let s = svc(i);
                    let fresh = !m.held.contains_key(&s) && req.ips.is_empty();
                    let expected = fresh.then(|| m.expected_allocation(&s, &req));
                    match a.allocate(&s, &req) {
                        Ok(ips) => {
                            if let Some(e) = expected {
                                prop_assert_eq!(Some(&ips), e.as_ref(), "walk for {:?}", req);
                            }
                            m.held.insert(s, (ips, req));
                        }
                        Err(e) => {
                            if let Some(exp) = expected {
                                prop_assert_eq!(exp, None, "unexpected error {}", e);
                            }
                            prop_assert_eq!(a.ips_of(&s), None);
                            m.held.remove(&s);
                        }
                    }
                }
                Op::Assign(i, req) => {
                    let s = svc(i);
                    let ips = req.ips.clone();
                    let ok = m.assign_ok(&s, &ips, &req);
                    let got = a.assign(&s, &ips, &req);
                    prop_assert_eq!(got.is_ok(), ok, "assign {:?} {:?}: {:?}", ips, req, got);
                    if ok {
                        m.held.insert(s, (ips, req));
                    }
                }
                Op::Unassign(i) => {
                    let s = svc(i);
                    prop_assert_eq!(a.unassign(&s), m.held.remove(&s).is_some());
                }
                Op::SetPools(buggy, drop_c, rename_b) => {
                    let next = config(buggy, drop_c, rename_b);
                    let ok = m.set_pools_ok(&next);
                    prop_assert_eq!(a.can_accept(&next).is_ok(), ok);
                    prop_assert_eq!(a.set_pools(&next).is_ok(), ok);
                    if ok {
                        m.config = next;
                    }
                }
            }
            check_invariants(&a, &m)?;
        }
    }
}
