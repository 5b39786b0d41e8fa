//! The IP allocator. PURE: no kube, no tokio, no clock, no logging, no metrics. It takes the
//! typed [`Config`] and per-Service [`Request`]s and returns decisions; the controller carries
//! them out (status patch, Events) and the metrics layer reads [`Allocator::stats`].
//!
//! Matches MetalLB 0.12 `internal/allocator` + `controller/service.go` (spec §4.3–§4.6, §5):
//!
//! - A config is accepted only if every Service's addresses still lie in one pool of it
//!   (membership honours `avoid-buggy-ips`); otherwise it is stale and nothing changes. On
//!   acceptance allocations are re-attributed to the pool that now holds them (a renamed pool
//!   keeps its Services).
//! - Specific addresses (`spec.loadBalancerIP`, the `loadBalancerIPs` annotation, or the
//!   current status on re-assertion) are granted if one pool holds them all (any pool,
//!   `auto-assign` or not) and sharing allows it.
//! - Otherwise an address is chosen per family from the requested pool (even with
//!   `auto-assign: false`) or from the `auto-assign` pools. Within a pool the CIDRs are walked
//!   in config order (ranges expanded to ascending CIDRs), each from its first address,
//!   `.0`/`.255` included unless `avoid-buggy-ips` (IPv4 only, spec §5.3); the first address
//!   that is free *or* already used in a sharing-compatible way wins, so a compatible shared
//!   address earlier in the walk is preferred to a later free one. Dual stack takes one
//!   address per family from the same pool, in the order the CIDRs yielded them.
//! - Sharing ([`sharing`]): equal non-empty sharing keys, equal backend keys, no port clash; a
//!   Service that is the only user of its address may change its key.
//! - Stats: `addresses_total` per upstream's formula, saturating at `i64::MAX` for a CIDR of 62
//!   host bits or more; `addresses_in_use` counts distinct addresses (a shared one once).
//!
//! Deliberate differences from upstream:
//!
//! - `auto-assign` pools are tried in **config order**. Upstream iterated a Go map, so the
//!   pool a Service landed in was random; config order is deterministic and a valid upstream
//!   outcome.
//! - Requested addresses together with a requested pool that does not hold them fail with
//!   MetalLB 0.13.10's "is not compatible with requested address pool" error; 0.9–0.12
//!   granted them and then released and re-granted them on every resync.
//! - `addresses_total` of IPv6 CIDRs is their plain size: upstream's avoid-buggy subtraction
//!   looked at the 4th byte of IPv6 addresses, a bug with no meaning.
//! - Lists in errors are complete and sorted (upstream: the first entry in Go map order).
//! - [`Allocator::allocate`] performs convergence steps 4–5 in one call: it keeps the
//!   Service's current addresses when they satisfy the request, else releases them and
//!   allocates anew; on error the Service holds nothing (upstream clears the status).
//!
//! Complexity: the used addresses of each pool are kept as sparse runs in a B-tree (an IPv6
//! `/64` pool costs nothing until used), so finding the first free address of a CIDR is
//! O(log n); membership is a B-tree lookup over CIDR starts; a request costs
//! O(CIDRs tried · log n), plus, for a Service with a sharing key, the same-key addresses
//! that come before the first free one and clash on a port.

mod pool;
pub mod range;
pub mod sharing;

use std::collections::{BTreeMap, BTreeSet, HashMap, btree_map, hash_map};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::ops::Bound;
use std::sync::Arc;

use crate::config::Config;
use pool::PoolTable;
pub use range::{Family, is_buggy};
use range::{Span, ip_from};
use sharing::{IpUse, SharingKey, sharing_ok};
pub use sharing::{Port, Proto, SharingMismatch, local_backend_key};

/// Result of allocator operations.
pub type Result<T, E = AllocError> = std::result::Result<T, E>;

/// What a Service asks of the allocator; built by the Kubernetes layer from the Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Families the Service needs (from `spec.clusterIPs`).
    pub family: Family,
    /// Requested addresses (`spec.loadBalancerIP` or the `loadBalancerIPs` annotation);
    /// empty: any.
    pub ips: Vec<IpAddr>,
    /// Requested pool (the `address-pool` annotation).
    pub pool: Option<String>,
    /// The `allow-shared-ip` key; empty: the Service does not share.
    pub sharing_key: String,
    /// `""` for `externalTrafficPolicy: Cluster`, [`local_backend_key`] of the selector for
    /// `Local`.
    pub backend_key: String,
    /// `spec.ports` as (protocol, port).
    pub ports: Vec<Port>,
}

impl Request {
    /// A request for any address(es) of `family`, not shared, no ports.
    pub fn new(family: Family) -> Request {
        Request {
            family,
            ips: Vec::new(),
            pool: None,
            sharing_key: String::new(),
            backend_key: String::new(),
            ports: Vec::new(),
        }
    }

    /// Ask for these specific addresses.
    pub fn ips(mut self, ips: impl IntoIterator<Item = IpAddr>) -> Request {
        self.ips = ips.into_iter().collect();
        self
    }

    /// Ask for an address from this pool.
    pub fn pool(mut self, name: impl Into<String>) -> Request {
        self.pool = Some(name.into());
        self
    }

    /// Set the sharing key.
    pub fn shared(mut self, key: impl Into<String>) -> Request {
        self.sharing_key = key.into();
        self
    }

    /// Set the backend key.
    pub fn backend(mut self, key: impl Into<String>) -> Request {
        self.backend_key = key.into();
        self
    }

    /// Set the ports.
    pub fn ports(mut self, ports: impl IntoIterator<Item = Port>) -> Request {
        self.ports = ports.into_iter().collect();
        self
    }

    fn key(&self) -> SharingKey {
        SharingKey {
            sharing: self.sharing_key.clone(),
            backend: self.backend_key.clone(),
        }
    }
}

/// Why an allocation failed. Messages follow MetalLB's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// An empty address list.
    #[error("no addresses given")]
    NoAddresses,
    /// More than two addresses requested.
    #[error("more than two addresses {}", quote_ips(.0))]
    TooManyAddresses(Vec<IpAddr>),
    /// Two addresses of one family requested.
    #[error("{} {} has the same family", quote_ip(*.0), quote_ip(*.1))]
    SameFamily(IpAddr, IpAddr),
    /// The addresses' family is not the Service's.
    #[error(
        "requested loadBalancer IP(s) {} does not match the ipFamily of the service",
        quote_ips(.ips)
    )]
    FamilyMismatch {
        /// The addresses.
        ips: Vec<IpAddr>,
        /// The Service's family.
        family: Family,
    },
    /// No pool holds all the addresses (or one is buggy in an avoid-buggy-ips pool).
    #[error("{} is not allowed in config", quote_ips(.0))]
    NotAllowed(Vec<IpAddr>),
    /// Requested addresses outside the requested pool (MetalLB 0.13.10+).
    #[error(
        "requested loadBalancer IP(s) {} is not compatible with requested address pool {pool}",
        quote_ips(.ips)
    )]
    PoolMismatch {
        /// The requested addresses.
        ips: Vec<IpAddr>,
        /// The requested pool.
        pool: String,
    },
    /// The requested pool does not exist.
    #[error("unknown pool {0:?}")]
    UnknownPool(String),
    /// The pool has no address left for a family the Service needs.
    #[error("no available IPs in pool {pool:?} for {family} IPFamily")]
    PoolExhausted {
        /// The pool.
        pool: String,
        /// The Service's family.
        family: Family,
    },
    /// No `auto-assign` pool could serve the request.
    #[error("no available IPs")]
    NoAvailableIps,
    /// The address is used by other Services with an incompatible sharing or backend key.
    #[error(
        "can't change sharing key for {service:?}, address also in use by {}",
        .others.join(",")
    )]
    SharingConflict {
        /// The requesting Service.
        service: String,
        /// The other users of the address, sorted.
        others: Vec<String>,
        /// The detailed incompatibility.
        #[source]
        reason: SharingMismatch,
    },
    /// A port of the Service is used on the address by another Service.
    #[error("port {port} is already in use on {}", quote_ip(*.ip))]
    PortInUse {
        /// The clashing port.
        port: Port,
        /// The address.
        ip: IpAddr,
    },
}

/// A Service whose addresses no pool of a new config would hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stranded {
    /// The Service key `namespace/name`.
    pub service: String,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
}

/// A config rejected because it would strand addresses in use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("new config not compatible with assigned IPs: {}", render_stranded(.stranded))]
pub struct StaleConfig {
    /// Every stranded Service, sorted by key.
    pub stranded: Vec<Stranded>,
}

impl StaleConfig {
    /// The reason for Events and logs.
    pub fn reason(&self) -> &'static str {
        "StaleConfig"
    }

    /// The Services blocking the config (a change to any of them may unblock it).
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.stranded.iter().map(|s| s.service.as_str())
    }
}

/// How many stranded Services the message names before summarizing.
const STRANDED_SHOWN: usize = 10;

fn render_stranded(stranded: &[Stranded]) -> String {
    let mut out = String::new();
    for (i, s) in stranded.iter().take(STRANDED_SHOWN).enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let _ = write!(
            out,
            "service {:?} cannot own {} under new config",
            s.service,
            quote_ips(&s.ips)
        );
    }
    if stranded.len() > STRANDED_SHOWN {
        let _ = write!(
            out,
            "; and {} more services",
            stranded.len() - STRANDED_SHOWN
        );
    }
    out
}

/// Per-pool numbers for `metallb_allocator_addresses_total` / `_in_use_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// Pool name.
    pub name: String,
    /// Usable addresses (upstream formula, saturating at `i64::MAX`).
    pub addresses_total: i64,
    /// Distinct addresses in use.
    pub addresses_in_use: u64,
}

/// An address formatted like Go's `%q` of a `net.IP`: `"10.0.0.1"`.
pub fn quote_ip(ip: IpAddr) -> String {
    format!("\"{ip}\"")
}

/// Addresses formatted like Go's `%q` of a `[]net.IP`: `["10.0.0.1" "2001:db8::1"]` (as in
/// upstream's `Assigned IP [...]` Event).
pub fn quote_ips(ips: &[IpAddr]) -> String {
    let inner: Vec<String> = ips.iter().map(|ip| quote_ip(*ip)).collect();
    format!("[{}]", inner.join(" "))
}

/// One Service's allocation.
#[derive(Debug, Clone)]
struct Alloc {
    ips: Vec<IpAddr>,
    pool: usize,
    key: SharingKey,
    ports: Vec<Port>,
}

/// The addresses in use under one (non-empty) sharing key, and how many of them use each port.
#[derive(Debug, Clone, Default)]
struct Group {
    ips: BTreeSet<IpAddr>,
    port_users: BTreeMap<Port, usize>,
}

/// The allocator: pools of the current config and who holds which address.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    pools: PoolTable,
    // Hash maps: their (randomly seeded) order never reaches an output; lists are sorted.
    services: HashMap<Arc<str>, Alloc>,
    ips: HashMap<IpAddr, IpUse>,
    groups: BTreeMap<SharingKey, Group>,
}

impl Allocator {
    /// An allocator with no pools and no allocations.
    pub fn new() -> Allocator {
        Allocator::default()
    }

    /// Whether `config` could be applied: every Service's addresses lie in one of its pools.
    pub fn can_accept(&self, config: &Config) -> Result<(), StaleConfig> {
        self.plan(&PoolTable::new(config)).map(|_| ())
    }

    /// Apply `config` if [`can_accept`](Self::can_accept) allows it, re-attributing every
    /// allocation to the pool that now holds it; otherwise change nothing.
    pub fn set_pools(&mut self, config: &Config) -> Result<(), StaleConfig> {
        let mut table = PoolTable::new(config);
        let plan = self.plan(&table)?;
        for (svc, pool) in plan {
            let Some(alloc) = self.services.get_mut(&svc) else {
                continue;
            };
            alloc.pool = pool;
            for ip in &alloc.ips {
                if let Some(u) = self.ips.get_mut(ip) {
                    u.pool = pool;
                }
            }
        }
        for (ip, u) in &self.ips {
            table.pools[u.pool].mark_used(*ip);
        }
        self.pools = table;
        Ok(())
    }

    /// The pool of every Service under `table`, or who is stranded (sorted).
    fn plan(&self, table: &PoolTable) -> Result<Vec<(Arc<str>, usize)>, StaleConfig> {
        let mut plan = Vec::with_capacity(self.services.len());
        let mut stranded = Vec::new();
        for (svc, alloc) in &self.services {
            match table.pool_for_all(&alloc.ips) {
                Some(p) => plan.push((svc.clone(), p)),
                None => stranded.push(Stranded {
                    service: svc.to_string(),
                    ips: alloc.ips.clone(),
                }),
            }
        }
        if stranded.is_empty() {
            Ok(plan)
        } else {
            stranded.sort_unstable_by(|a, b| a.service.cmp(&b.service));
            Err(StaleConfig { stranded })
        }
    }

    /// Give `svc` exactly `ips` (re-assertion of the current status, or a specific request),
    /// as upstream `Assign`: `ips` must be of the request's family, all in one pool, and
    /// sharable under the request's keys and ports. Idempotent. On error nothing changes;
    /// `request.ips` and `request.pool` are not consulted (see [`allocate`](Self::allocate)).
    pub fn assign(&mut self, svc: &str, ips: &[IpAddr], request: &Request) -> Result<()> {
        let family = Family::of_ips(ips)?;
        if family != request.family {
            return Err(AllocError::FamilyMismatch {
                ips: ips.to_vec(),
                family: request.family,
            });
        }
        let pool = self
            .pools
            .pool_for_all(ips)
            .ok_or_else(|| AllocError::NotAllowed(ips.to_vec()))?;
        let key = request.key();
        if let Some(cur) = self.services.get(svc)
            && cur.ips == ips
            && cur.key == key
            && cur.ports == request.ports
        {
            return Ok(());
        }
        for ip in ips {
            self.check_sharing(svc, *ip, &key, &request.ports)?;
        }
        self.unassign(svc);
        self.insert(svc, ips.to_vec(), pool, key, request.ports.clone());
        Ok(())
    }

    /// Bring `svc` to a state satisfying `request` (upstream convergence steps 4–5) and return
    /// its addresses:
    ///
    /// 1. If it holds addresses of the right family that match the requested addresses and
    ///    pool (when given) and still pass [`assign`](Self::assign), keep them.
    /// 2. Else release them, then: requested addresses → `assign` them (they must lie in the
    ///    requested pool, when one is given); requested pool → allocate from it, even if it
    ///    has `auto-assign: false`; otherwise try every `auto-assign` pool in config order.
    ///
    /// On error `svc` holds nothing.
    pub fn allocate(&mut self, svc: &str, request: &Request) -> Result<Vec<IpAddr>> {
        let result = self.converge(svc, request);
        if result.is_err() {
            self.unassign(svc);
        }
        result
    }

    fn converge(&mut self, svc: &str, request: &Request) -> Result<Vec<IpAddr>> {
        if !request.ips.is_empty() {
            let family = Family::of_ips(&request.ips)?;
            if family != request.family {
                return Err(AllocError::FamilyMismatch {
                    ips: request.ips.clone(),
                    family: request.family,
                });
            }
        }
        if let Some(cur) = self.services.get(svc) {
            if self.satisfies(cur, request) {
                let ips = cur.ips.clone();
                if self.assign(svc, &ips, request).is_ok() {
                    return Ok(ips);
                }
            }
            self.unassign(svc);
        }
        if !request.ips.is_empty() {
            if let Some(name) = &request.pool {
                let pool = self
                    .pools
                    .pool_for_all(&request.ips)
                    .ok_or_else(|| AllocError::NotAllowed(request.ips.clone()))?;
                if !self.pools.pools[pool].answers_to(name) {
                    return Err(AllocError::PoolMismatch {
                        ips: request.ips.clone(),
                        pool: name.clone(),
                    });
                }
            }
            self.assign(svc, &request.ips, request)?;
            return Ok(request.ips.clone());
        }
        if let Some(name) = &request.pool {
            let pool = self
                .pools
                .by_name(name)
                .ok_or_else(|| AllocError::UnknownPool(name.clone()))?;
            return self.allocate_from(svc, pool, request);
        }
        for pool in 0..self.pools.pools.len() {
            if !self.pools.pools[pool].auto_assign {
                continue;
            }
            if let Ok(ips) = self.allocate_from(svc, pool, request) {
                return Ok(ips);
            }
        }
        Err(AllocError::NoAvailableIps)
    }

    /// Whether `svc`'s current allocation already fulfils `request` (family, requested
    /// addresses, requested pool).
    fn satisfies(&self, cur: &Alloc, request: &Request) -> bool {
        let family_ok = Family::of_ips(&cur.ips) == Ok(request.family);
        let ips_ok = request.ips.is_empty()
            || (request.ips.len() == cur.ips.len()
                && request.ips.iter().all(|ip| cur.ips.contains(ip)));
        let pool_ok = request
            .pool
            .as_deref()
            .is_none_or(|name| self.pools.pools[cur.pool].answers_to(name));
        family_ok && ips_ok && pool_ok
    }

    /// Upstream `AllocateFromPool` for a Service holding nothing.
    fn allocate_from(&mut self, svc: &str, pool: usize, request: &Request) -> Result<Vec<IpAddr>> {
        let key = request.key();
        let mut ips: Vec<IpAddr> = Vec::with_capacity(2);
        for span in &self.pools.pools[pool].spans {
            if !request.family.wants(span.family)
                || ips.iter().any(|ip| Family::of_ip(*ip) == span.family)
            {
                continue;
            }
            if let Some(ip) = self.first_candidate(pool, span, &key, &request.ports) {
                ips.push(ip);
            }
        }
        let wanted = if request.family == Family::Dual { 2 } else { 1 };
        if ips.len() < wanted {
            return Err(AllocError::PoolExhausted {
                pool: self.pools.pools[pool].name.clone(),
                family: request.family,
            });
        }
        self.assign(svc, &ips, request)?;
        Ok(ips)
    }

    /// Upstream `getIPFromCIDR`: the first address of `span` (in walk order) that is free or
    /// sharable under `key` without a port clash.
    fn first_candidate(
        &self,
        pool: usize,
        span: &Span,
        key: &SharingKey,
        ports: &[Port],
    ) -> Option<IpAddr> {
        let free = self.pools.pools[pool].first_free(span);
        let group = if key.shareable() {
            self.groups.get(key)
        } else {
            None
        };
        if let Some(g) = group {
            // Every address of the group uses one of our ports: none can take us.
            let hopeless = ports
                .iter()
                .any(|p| g.port_users.get(p).is_some_and(|n| *n >= g.ips.len()));
            if !hopeless {
                let lo = Bound::Included(ip_from(span.family, span.lo));
                let hi = match free {
                    Some(f) => Bound::Excluded(f),
                    None => Bound::Included(ip_from(span.family, span.hi)),
                };
                let shared = g
                    .ips
                    .range((lo, hi))
                    .find(|ip| self.ips.get(ip).is_some_and(|u| u.ports_free(ports)));
                if let Some(ip) = shared {
                    return Some(*ip);
                }
            }
        }
        free
    }

    /// Upstream `checkSharing`: may `svc` use `ip` with `key` and `ports`?
    fn check_sharing(&self, svc: &str, ip: IpAddr, key: &SharingKey, ports: &[Port]) -> Result<()> {
        let Some(u) = self.ips.get(&ip) else {
            return Ok(());
        };
        if let Err(reason) = sharing_ok(&u.key, key) {
            let others: Vec<String> = u
                .users
                .iter()
                .filter(|s| ***s != *svc)
                .map(|s| s.to_string())
                .collect();
            if !others.is_empty() {
                return Err(AllocError::SharingConflict {
                    service: svc.to_string(),
                    others,
                    reason,
                });
            }
        }
        for port in ports {
            if u.port_owner(port).is_some_and(|owner| owner != svc) {
                return Err(AllocError::PortInUse { port: *port, ip });
            }
        }
        Ok(())
    }

    /// Record a checked allocation of a Service that holds nothing.
    fn insert(
        &mut self,
        svc: &str,
        ips: Vec<IpAddr>,
        pool: usize,
        key: SharingKey,
        ports: Vec<Port>,
    ) {
        let name: Arc<str> = Arc::from(svc);
        for ip in &ips {
            let u = match self.ips.entry(*ip) {
                hash_map::Entry::Occupied(o) => o.into_mut(),
                hash_map::Entry::Vacant(v) => {
                    self.pools.pools[pool].mark_used(*ip);
                    if key.shareable() {
                        self.groups.entry(key.clone()).or_default().ips.insert(*ip);
                    }
                    v.insert(IpUse {
                        pool,
                        key: key.clone(),
                        users: Vec::new(),
                        ports: Vec::new(),
                    })
                }
            };
            if let Err(at) = u.users.binary_search(&name) {
                u.users.insert(at, name.clone());
            }
            let mut group = if u.key.shareable() {
                self.groups.get_mut(&u.key)
            } else {
                None
            };
            for port in &ports {
                if u.take_port(*port, &name)
                    && let Some(g) = group.as_mut()
                {
                    *g.port_users.entry(*port).or_default() += 1;
                }
            }
        }
        self.services.insert(
            name,
            Alloc {
                ips,
                pool,
                key,
                ports,
            },
        );
    }

    /// Release whatever `svc` holds; false if it held nothing.
    pub fn unassign(&mut self, svc: &str) -> bool {
        let Some(alloc) = self.services.remove(svc) else {
            return false;
        };
        for ip in &alloc.ips {
            let hash_map::Entry::Occupied(mut o) = self.ips.entry(*ip) else {
                continue;
            };
            let u = o.get_mut();
            u.users.retain(|s| **s != *svc);
            let mut group = if u.key.shareable() {
                self.groups.get_mut(&u.key)
            } else {
                None
            };
            u.ports.retain(|(port, owner)| {
                if **owner != *svc {
                    return true;
                }
                if let Some(g) = group.as_mut()
                    && let btree_map::Entry::Occupied(mut n) = g.port_users.entry(*port)
                {
                    *n.get_mut() -= 1;
                    if *n.get() == 0 {
                        n.remove();
                    }
                }
                false
            });
            if u.users.is_empty() {
                let u = o.remove();
                self.pools.pools[u.pool].mark_free(*ip);
                if u.key.shareable()
                    && let btree_map::Entry::Occupied(mut g) = self.groups.entry(u.key)
                {
                    g.get_mut().ips.remove(ip);
                    if g.get().ips.is_empty() {
                        g.remove();
                    }
                }
            }
        }
        true
    }

    /// The addresses `svc` holds, in allocation order.
    pub fn ips_of(&self, svc: &str) -> Option<&[IpAddr]> {
        self.services.get(svc).map(|a| a.ips.as_slice())
    }

    /// The pool of the current config holding `ip` (upstream `poolFor`, honouring
    /// avoid-buggy-ips), whether or not it is in use.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&str> {
        self.pools
            .pool_for(ip)
            .map(|p| self.pools.pools[p].name.as_str())
    }

    /// Whether the pool `svc` holds its IPs from is called `name` (or has it as an alias).
    pub fn service_pool_is(&self, svc: &str, name: &str) -> bool {
        self.services
            .get(svc)
            .is_some_and(|a| self.pools.pools[a.pool].answers_to(name))
    }

    /// The pool `svc`'s addresses come from (for `ip-allocated-from-pool`).
    pub fn pool_of_service(&self, svc: &str) -> Option<&str> {
        self.services
            .get(svc)
            .map(|a| self.pools.pools[a.pool].name.as_str())
    }

    /// The Services using `ip`, sorted.
    pub fn services_on(&self, ip: IpAddr) -> impl Iterator<Item = &str> {
        self.ips
            .get(&ip)
            .into_iter()
            .flat_map(|u| u.users.iter().map(|s| &**s))
    }

    /// Number of Services holding addresses.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether no Service holds an address.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Per-pool numbers, in config order.
    pub fn stats(&self) -> Vec<PoolStats> {
        self.pools
            .pools
            .iter()
            .map(|p| PoolStats {
                name: p.name.clone(),
                addresses_total: p.total,
                addresses_in_use: p.in_use,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::addr::parse_entry;
    use crate::config::{AddressRange, Pool, Protocol};

    // ---- fixtures -------------------------------------------------------------------------

    fn pool(name: &str, addrs: &[&str]) -> Pool {
        Pool {
            name: name.to_string(),
            protocol: Protocol::Layer2,
            addresses: addrs
                .iter()
                .map(|a| AddressRange {
                    raw: a.to_string(),
                    cidrs: parse_entry(a).unwrap(),
                })
                .collect(),
            avoid_buggy_ips: false,
            auto_assign: None,
            bgp_advertisements: Vec::new(),
            aliases: Vec::new(),
        }
    }

    trait PoolExt {
        fn avoid_buggy(self) -> Pool;
        fn manual(self) -> Pool;
    }

    impl PoolExt for Pool {
        fn avoid_buggy(mut self) -> Pool {
            self.avoid_buggy_ips = true;
            self
        }
        fn manual(mut self) -> Pool {
            self.auto_assign = Some(false);
            self
        }
    }

    fn cfg(pools: impl IntoIterator<Item = Pool>) -> Config {
        Config {
            pools: pools.into_iter().collect(),
            ..Config::default()
        }
    }

    fn alloc_with(pools: impl IntoIterator<Item = Pool>) -> Allocator {
        let mut a = Allocator::new();
        a.set_pools(&cfg(pools)).unwrap();
        a
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| ip(s)).collect()
    }

    fn v4() -> Request {
        Request::new(Family::V4)
    }

    fn v6() -> Request {
        Request::new(Family::V6)
    }

    fn dual() -> Request {
        Request::new(Family::Dual)
    }

    fn got(a: &mut Allocator, svc: &str, req: &Request) -> String {
        match a.allocate(svc, req) {
            Ok(v) => v
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            Err(e) => format!("error: {e}"),
        }
    }

    fn stats(a: &Allocator) -> Vec<(String, i64, u64)> {
        a.stats()
            .into_iter()
            .map(|s| (s.name, s.addresses_total, s.addresses_in_use))
            .collect()
    }

    // ---- walk order ----------------------------------------------------------------------

    #[test]
    fn allocates_lowest_address_first_including_the_network_address() {
        let mut a = alloc_with([pool("a", &["192.168.1.0/30"])]);
        let r = v4();
        let seq: Vec<String> = (0..4)
            .map(|i| got(&mut a, &format!("ns/s{i}"), &r))
            .collect();
        assert_eq!(
            seq,
            ["192.168.1.0", "192.168.1.1", "192.168.1.2", "192.168.1.3"]
        );
        assert_eq!(got(&mut a, "ns/s4", &r), "error: no available IPs");
    }

    #[test]
    fn freed_address_is_handed_out_again_before_higher_ones() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/29"])]);
        for i in 0..4 {
            a.allocate(&format!("ns/s{i}"), &v4()).unwrap();
        }
        assert!(a.unassign("ns/s1"));
        assert!(!a.unassign("ns/s1"));
        assert_eq!(got(&mut a, "ns/new", &v4()), "10.0.0.1");
        assert_eq!(got(&mut a, "ns/next", &v4()), "10.0.0.4");
    }

    #[test]
    fn avoid_buggy_ips_skips_dot_zero_and_dot_255_across_slash_24_boundaries() {
        let mut a = alloc_with([pool("a", &["10.0.0.253-10.0.1.2"]).avoid_buggy()]);
        let seq: Vec<String> = (0..5)
            .map(|i| got(&mut a, &format!("ns/s{i}"), &v4()))
            .collect();
        assert_eq!(
            seq,
            [
                "10.0.0.253",
                "10.0.0.254",
                "10.0.1.1",
                "10.0.1.2",
                "error: no available IPs"
            ]
        );
    }

    #[test]
    fn avoid_buggy_ips_never_applies_to_ipv6() {
        let mut a =
            alloc_with([pool("a", &["2001:db8::ff/128", "2001:db8::100/128"]).avoid_buggy()]);
        assert_eq!(got(&mut a, "ns/a", &v6()), "2001:db8::ff");
        assert_eq!(got(&mut a, "ns/b", &v6()), "2001:db8::100");
    }

    #[test]
    fn walks_cidrs_in_config_order_not_numeric_order() {
        let mut a = alloc_with([pool("a", &["10.0.0.10-10.0.0.11", "10.0.0.0/31"])]);
        let seq: Vec<String> = (0..4)
            .map(|i| got(&mut a, &format!("ns/s{i}"), &v4()))
            .collect();
        assert_eq!(seq, ["10.0.0.10", "10.0.0.11", "10.0.0.0", "10.0.0.1"]);
    }

    #[test]
    fn tries_auto_assign_pools_in_config_order_and_skips_manual_ones() {
        let mut a = alloc_with([
            pool("manual", &["10.9.0.0/30"]).manual(),
            pool("second", &["10.2.0.0/32"]),
            pool("third", &["10.1.0.0/32"]),
        ]);
        assert_eq!(got(&mut a, "ns/a", &v4()), "10.2.0.0");
        assert_eq!(got(&mut a, "ns/b", &v4()), "10.1.0.0");
        assert_eq!(got(&mut a, "ns/c", &v4()), "error: no available IPs");
        assert_eq!(got(&mut a, "ns/c", &v4().pool("manual")), "10.9.0.0");
        assert_eq!(a.pool_of_service("ns/c"), Some("manual"));
    }

    #[test]
    fn skips_pools_without_the_service_family() {
        let mut a = alloc_with([
            pool("v4", &["10.0.0.0/30"]),
            pool("v6", &["2001:db8::/126"]),
        ]);
        assert_eq!(got(&mut a, "ns/a", &v6()), "2001:db8::");
        assert_eq!(
            got(&mut a, "ns/b", &v6().pool("v4")),
            "error: no available IPs in pool \"v4\" for ipv6 IPFamily"
        );
    }

    #[test]
    fn unknown_pool_and_exhausted_pool_are_reported() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/32"])]);
        assert_eq!(
            got(&mut a, "ns/x", &v4().pool("nope")),
            "error: unknown pool \"nope\""
        );
        assert_eq!(got(&mut a, "ns/x", &v4().pool("a")), "10.0.0.0");
        let err = a.allocate("ns/y", &v4().pool("a")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no available IPs in pool \"a\" for ipv4 IPFamily"
        );
    }

    #[test]
    fn slash_64_pool_allocates_sparsely_and_reports_saturated_size() {
        let mut a = alloc_with([pool("big", &["2001:db8::/64"])]);
        for i in 0..1000u32 {
            a.allocate(&format!("ns/s{i}"), &v6()).unwrap();
        }
        assert_eq!(a.ips_of("ns/s999"), Some(&ips(&["2001:db8::3e7"])[..]));
        assert_eq!(stats(&a), [("big".to_string(), i64::MAX, 1000)]);
    }

    // ---- requested addresses ---------------------------------------------------------------

    #[test]
    fn requested_ip_is_granted_from_any_pool_even_manual() {
        let mut a = alloc_with([
            pool("a", &["10.0.0.0/30"]),
            pool("m", &["10.1.0.0/30"]).manual(),
        ]);
        let r = v4().ips([ip("10.1.0.2")]);
        assert_eq!(got(&mut a, "ns/x", &r), "10.1.0.2");
        assert_eq!(a.pool_of_service("ns/x"), Some("m"));
        assert_eq!(got(&mut a, "ns/y", &v4()), "10.0.0.0");
    }

    #[test]
    fn requested_ip_outside_every_pool_is_not_allowed_in_config() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/30"])]);
        let err = a
            .allocate("ns/x", &v4().ips([ip("192.0.2.1")]))
            .unwrap_err();
        assert_eq!(err.to_string(), "[\"192.0.2.1\"] is not allowed in config");
    }

    #[test]
    fn requested_buggy_ip_is_not_allowed_under_avoid_buggy_ips() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/24"]).avoid_buggy()]);
        for bad in ["10.0.0.0", "10.0.0.255"] {
            assert!(matches!(
                a.allocate("ns/x", &v4().ips([ip(bad)])),
                Err(AllocError::NotAllowed(_))
            ));
        }
        assert_eq!(a.pool_of(ip("10.0.0.0")), None);
        assert_eq!(a.pool_of(ip("10.0.0.1")), Some("a"));
    }

    #[test]
    fn requested_ip_must_match_the_service_family() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/30", "2001:db8::/126"])]);
        let err = a.allocate("ns/x", &v6().ips([ip("10.0.0.1")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "requested loadBalancer IP(s) [\"10.0.0.1\"] does not match the ipFamily of the service"
        );
        let err = a
            .allocate("ns/x", &v4().ips(ips(&["10.0.0.1", "10.0.0.2"])))
            .unwrap_err();
        assert_eq!(err, AllocError::SameFamily(ip("10.0.0.1"), ip("10.0.0.2")));
    }

    #[test]
    fn requested_ip_outside_the_requested_pool_is_refused() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/30"]), pool("b", &["10.1.0.0/30"])]);
        let err = a
            .allocate("ns/x", &v4().ips([ip("10.0.0.1")]).pool("b"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "requested loadBalancer IP(s) [\"10.0.0.1\"] is not compatible with requested address pool b"
        );
        assert_eq!(
            got(&mut a, "ns/x", &v4().ips([ip("10.1.0.1")]).pool("b")),
            "10.1.0.1"
        );
    }

    #[test]
    fn dual_stack_requested_ips_must_share_one_pool() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/30"]), pool("b", &["2001:db8::/126"])]);
        let r = dual().ips(ips(&["10.0.0.1", "2001:db8::1"]));
        assert!(matches!(
            a.allocate("ns/x", &r),
            Err(AllocError::NotAllowed(_))
        ));
    }

    // ---- dual stack ------------------------------------------------------------------------

    #[test]
    fn dual_stack_takes_one_address_per_family_from_the_same_pool() {
        let mut a = alloc_with([
            pool("v4only", &["10.0.0.0/30"]),
            pool("both", &["2001:db8::/126", "10.1.0.0/30", "10.2.0.0/30"]),
        ]);
        assert_eq!(got(&mut a, "ns/d", &dual()), "2001:db8::,10.1.0.0");
        assert_eq!(a.pool_of_service("ns/d"), Some("both"));
        assert_eq!(stats(&a)[1].2, 2);
    }

    #[test]
    fn dual_stack_fails_when_one_family_is_exhausted() {
        let mut a = alloc_with([pool("both", &["10.0.0.0/32", "2001:db8::/126"])]);
        a.allocate("ns/a", &v4()).unwrap();
        assert_eq!(got(&mut a, "ns/d", &dual()), "error: no available IPs");
        assert_eq!(
            got(&mut a, "ns/d", &dual().pool("both")),
            "error: no available IPs in pool \"both\" for dual IPFamily"
        );
        assert_eq!(a.ips_of("ns/d"), None);
        assert_eq!(
            stats(&a)[0].2,
            1,
            "the IPv6 address found first is not kept"
        );
    }

    // ---- sharing ---------------------------------------------------------------------------

    #[test]
    fn services_with_equal_keys_and_distinct_ports_share_an_address() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/30"])]);
        let dns_tcp = v4().shared("dns").ports([Port::tcp(53)]);
        let dns_udp = v4().shared("dns").ports([Port::udp(53)]);
        a.assign("ns/tcp", &[ip("10.0.0.1")], &dns_tcp).unwrap();
        a.assign("ns/udp", &[ip("10.0.0.1")], &dns_udp).unwrap();
        assert_eq!(
            a.services_on(ip("10.0.0.1")).collect::<Vec<_>>(),
            ["ns/tcp", "ns/udp"]
        );
        assert_eq!(stats(&a)[0].2, 1, "a shared address counts once");
        a.unassign("ns/tcp");
        assert_eq!(stats(&a)[0].2, 1);
        a.unassign("ns/udp");
        assert_eq!(stats(&a)[0].2, 0);
    }

    #[test]
    fn sharing_with_a_different_key_is_refused_naming_the_other_service() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/30"])]);
        a.assign("ns/a", &[ip("10.0.0.1")], &v4().shared("x"))
            .unwrap();
        a.assign(
            "ns/b",
            &[ip("10.0.0.1")],
            &v4().shared("x").ports([Port::tcp(1)]),
        )
        .unwrap();
        let err = a
            .assign("ns/c", &[ip("10.0.0.1")], &v4().shared("y"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "can't change sharing key for \"ns/c\", address also in use by ns/a,ns/b"
        );
        let AllocError::SharingConflict { reason, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(matches!(reason, SharingMismatch::Key { .. }));
        let err = a.assign("ns/c", &[ip("10.0.0.1")], &v4()).unwrap_err();
        assert!(
            err.to_string().starts_with("can't change sharing key"),
            "{err}"
        );
    }

    #[test]
    fn port_clash_on_a_shared_address_is_refused() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/30"])]);
        let web = v4().shared("k").ports([Port::tcp(80)]);
        a.assign("ns/a", &[ip("10.0.0.1")], &web).unwrap();
        let err = a.assign("ns/b", &[ip("10.0.0.1")], &web).unwrap_err();
        assert_eq!(
            err.to_string(),
            "port TCP/80 is already in use on \"10.0.0.1\""
        );
        assert_eq!(a.ips_of("ns/b"), None, "nothing changes on error");
    }

    #[test]
    fn local_services_share_only_with_an_identical_selector() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/30"])]);
        let local = |sel: &[(&str, &str)], port| {
            v4().shared("k")
                .backend(local_backend_key(sel.iter().copied()))
                .ports([Port::tcp(port)])
        };
        a.assign(
            "ns/a",
            &[ip("10.0.0.1")],
            &local(&[("app", "x"), ("t", "1")], 80),
        )
        .unwrap();
        a.assign(
            "ns/b",
            &[ip("10.0.0.1")],
            &local(&[("t", "1"), ("app", "x")], 81),
        )
        .unwrap();
        let err = a
            .assign("ns/c", &[ip("10.0.0.1")], &local(&[("app", "y")], 82))
            .unwrap_err();
        assert!(matches!(
            err,
            AllocError::SharingConflict {
                reason: SharingMismatch::Backend { .. },
                ..
            }
        ));
        let cluster = v4().shared("k").ports([Port::tcp(83)]);
        assert!(a.assign("ns/d", &[ip("10.0.0.1")], &cluster).is_err());
    }

    #[test]
    fn the_only_user_of_an_address_may_change_its_sharing_key() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/30"])]);
        a.assign("ns/a", &[ip("10.0.0.1")], &v4().shared("x"))
            .unwrap();
        a.assign("ns/a", &[ip("10.0.0.1")], &v4().shared("y"))
            .unwrap();
        a.assign(
            "ns/b",
            &[ip("10.0.0.1")],
            &v4().shared("y").ports([Port::tcp(1)]),
        )
        .unwrap();
        assert!(a.assign("ns/a", &[ip("10.0.0.1")], &v4()).is_err());
    }

    #[test]
    fn allocation_prefers_an_earlier_compatible_shared_address_to_a_free_one() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/29"])]);
        let k80 = v4().shared("k").ports([Port::tcp(80)]);
        let k443 = v4().shared("k").ports([Port::tcp(443)]);
        assert_eq!(got(&mut a, "ns/web", &k80), "10.0.0.0");
        assert_eq!(got(&mut a, "ns/plain", &v4()), "10.0.0.1");
        assert_eq!(
            got(&mut a, "ns/tls", &k443),
            "10.0.0.0",
            "shares with ns/web"
        );
        assert_eq!(
            got(&mut a, "ns/web2", &k80),
            "10.0.0.2",
            "port 80 is taken on .0"
        );
        assert_eq!(got(&mut a, "ns/tls2", &k443), "10.0.0.2");
        assert_eq!(got(&mut a, "ns/other", &v4().shared("z")), "10.0.0.3");
        assert_eq!(stats(&a)[0].2, 4);
    }

    #[test]
    fn unshared_addresses_are_never_offered_for_sharing() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/30"])]);
        a.allocate("ns/a", &v4()).unwrap();
        assert_eq!(got(&mut a, "ns/b", &v4().shared("k")), "10.0.0.1");
        assert_eq!(got(&mut a, "ns/c", &v4()), "10.0.0.2");
    }

    // ---- re-assertion and convergence ------------------------------------------------------

    #[test]
    fn reassertion_is_idempotent_and_checks_family() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/30", "2001:db8::/126"])]);
        let r = v4().shared("k").ports([Port::tcp(80)]);
        a.assign("ns/a", &[ip("10.0.0.2")], &r).unwrap();
        a.assign("ns/a", &[ip("10.0.0.2")], &r).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(stats(&a)[0].2, 1);
        let err = a.assign("ns/a", &[ip("10.0.0.2")], &v6()).unwrap_err();
        assert!(matches!(err, AllocError::FamilyMismatch { .. }));
        assert_eq!(a.ips_of("ns/a"), Some(&ips(&["10.0.0.2"])[..]));
    }

    #[test]
    fn allocate_keeps_current_addresses_that_satisfy_the_request() {
        let mut a = alloc_with([
            pool("a", &["10.0.0.0/30"]),
            pool("m", &["10.1.0.0/30"]).manual(),
        ]);
        a.assign("ns/x", &[ip("10.1.0.3")], &v4()).unwrap();
        assert_eq!(
            got(&mut a, "ns/x", &v4()),
            "10.1.0.3",
            "no pool asked: kept"
        );
        assert_eq!(got(&mut a, "ns/x", &v4().pool("m")), "10.1.0.3");
        assert_eq!(got(&mut a, "ns/x", &v4().ips([ip("10.1.0.3")])), "10.1.0.3");
    }

    #[test]
    fn allocate_moves_a_service_whose_pool_or_requested_ip_changed() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/30"]), pool("b", &["10.1.0.0/30"])]);
        assert_eq!(got(&mut a, "ns/x", &v4()), "10.0.0.0");
        assert_eq!(got(&mut a, "ns/x", &v4().pool("b")), "10.1.0.0");
        assert_eq!(got(&mut a, "ns/x", &v4().ips([ip("10.0.0.3")])), "10.0.0.3");
        assert_eq!(stats(&a).iter().map(|s| s.2).sum::<u64>(), 1);
    }

    #[test]
    fn allocate_reallocates_when_ports_now_clash_on_the_shared_address() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/30"])]);
        a.assign(
            "ns/a",
            &[ip("10.0.0.0")],
            &v4().shared("k").ports([Port::tcp(80)]),
        )
        .unwrap();
        a.assign(
            "ns/b",
            &[ip("10.0.0.0")],
            &v4().shared("k").ports([Port::tcp(81)]),
        )
        .unwrap();
        // ns/b's spec now also lists port 80: it cannot stay on 10.0.0.0.
        let r = v4().shared("k").ports([Port::tcp(80), Port::tcp(81)]);
        assert_eq!(got(&mut a, "ns/b", &r), "10.0.0.1");
    }

    #[test]
    fn failed_allocate_leaves_the_service_without_addresses() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/30"])]);
        a.allocate("ns/x", &v4()).unwrap();
        assert!(a.allocate("ns/x", &v4().pool("missing")).is_err());
        assert_eq!(a.ips_of("ns/x"), None);
        assert_eq!(stats(&a)[0].2, 0);
    }

    #[test]
    fn nothing_is_allocated_before_a_config_is_set() {
        let mut a = Allocator::new();
        assert_eq!(got(&mut a, "ns/x", &v4()), "error: no available IPs");
        assert!(matches!(
            a.assign("ns/x", &[ip("10.0.0.1")], &v4()),
            Err(AllocError::NotAllowed(_))
        ));
        assert!(a.is_empty() && a.stats().is_empty());
    }

    // ---- config changes --------------------------------------------------------------------

    #[test]
    fn rejects_config_that_strands_assigned_ips_naming_service_and_ip() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/30"]), pool("b", &["10.1.0.0/30"])]);
        a.allocate("ns/x", &v4()).unwrap();
        a.allocate("ns/y", &v4().pool("b")).unwrap();
        let next = cfg([pool("a", &["10.0.0.0/30"])]);
        let err = a.can_accept(&next).unwrap_err();
        assert_eq!(
            err.to_string(),
            "new config not compatible with assigned IPs: service \"ns/y\" cannot own [\"10.1.0.0\"] under new config"
        );
        assert_eq!(err.reason(), "StaleConfig");
        assert_eq!(a.set_pools(&next), Err(err));
        assert_eq!(a.stats().len(), 2, "the old config stays");
        assert_eq!(got(&mut a, "ns/z", &v4().pool("b")), "10.1.0.1");
    }

    #[test]
    fn enabling_avoid_buggy_ips_while_a_dot_zero_is_in_use_is_stale() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/24"])]);
        a.allocate("ns/x", &v4()).unwrap();
        let err = a
            .set_pools(&cfg([pool("a", &["10.0.0.0/24"]).avoid_buggy()]))
            .unwrap_err();
        assert_eq!(err.services().collect::<Vec<_>>(), ["ns/x"]);
        a.unassign("ns/x");
        a.set_pools(&cfg([pool("a", &["10.0.0.0/24"]).avoid_buggy()]))
            .unwrap();
        assert_eq!(got(&mut a, "ns/x", &v4()), "10.0.0.1");
    }

    #[test]
    fn stale_message_lists_at_most_ten_services() {
        let mut a = alloc_with([pool("a", &["10.0.0.0/24"])]);
        for i in 0..12 {
            a.allocate(&format!("ns/s{i:02}"), &v4()).unwrap();
        }
        let err = a.can_accept(&cfg([])).unwrap_err();
        assert_eq!(err.stranded.len(), 12);
        assert!(err.to_string().ends_with("; and 2 more services"), "{err}");
    }

    #[test]
    fn accepted_config_reattributes_allocations_and_keeps_the_walk_consistent() {
        let mut a = alloc_with([pool("old", &["10.0.0.0/30"])]);
        a.allocate("ns/x", &v4()).unwrap();
        a.allocate("ns/y", &v4()).unwrap();
        a.set_pools(&cfg([
            pool("extra", &["10.5.0.0/32"]).manual(),
            pool("renamed", &["10.0.0.0/29"]),
        ]))
        .unwrap();
        assert_eq!(a.pool_of_service("ns/x"), Some("renamed"));
        assert_eq!(
            stats(&a),
            [("extra".to_string(), 1, 0), ("renamed".to_string(), 8, 2)]
        );
        assert_eq!(got(&mut a, "ns/z", &v4()), "10.0.0.2");
    }

    #[test]
    fn dual_stack_service_split_across_pools_makes_config_stale() {
        let mut a = alloc_with([pool("both", &["10.0.0.0/30", "2001:db8::/126"])]);
        a.allocate("ns/d", &dual()).unwrap();
        let split = cfg([
            pool("v4", &["10.0.0.0/30"]),
            pool("v6", &["2001:db8::/126"]),
        ]);
        assert!(a.can_accept(&split).is_err());
    }

    // ---- stats and formatting --------------------------------------------------------------

    #[test]
    fn stats_follow_upstream_totals() {
        let a = alloc_with([
            pool("plain", &["10.0.0.0/24", "10.0.1.0-10.0.1.9"]),
            pool("buggy", &["10.1.0.0/16", "10.2.0.252/30"]).avoid_buggy(),
            pool("v6", &["2001:db8::/124"]),
            pool("huge", &["10.3.0.0/24", "2001:db8:1::/64"]),
        ]);
        assert_eq!(
            stats(&a),
            [
                ("plain".to_string(), 266, 0),
                ("buggy".to_string(), 65536 - 512 + 3, 0),
                ("v6".to_string(), 16, 0),
                ("huge".to_string(), 9223372036854775807, 0),
            ]
        );
    }

    #[test]
    fn quotes_addresses_like_go() {
        assert_eq!(
            quote_ips(&ips(&["10.0.0.1", "2001:db8::1"])),
            "[\"10.0.0.1\" \"2001:db8::1\"]"
        );
        assert_eq!(quote_ips(&[]), "[]");
    }

    #[test]
    fn overlapping_pools_fall_back_to_the_first_in_config_order() {
        // A validated config never overlaps; a hand-built one must still behave.
        let a = alloc_with([
            pool("wide", &["10.0.0.0/16"]),
            pool("narrow", &["10.0.1.0/24"]),
        ]);
        assert_eq!(a.pool_of(ip("10.0.1.5")), Some("wide"));
        assert_eq!(a.pool_of(ip("10.1.0.0")), None);
    }

    #[test]
    fn a_service_asking_for_an_alias_keeps_its_pool() {
        let mut p = pool("prod-pool", &["192.0.2.0/30"]);
        p.aliases = vec!["Prod_Pool".into()];
        let cfg = Config {
            pools: vec![p],
            ..Default::default()
        };
        let mut a = Allocator::new();
        a.set_pools(&cfg).unwrap();
        let req = Request::new(Family::V4).pool("Prod_Pool");
        let ips = a.allocate("ns/s", &req).unwrap();
        assert!(a.service_pool_is("ns/s", "Prod_Pool") && a.service_pool_is("ns/s", "prod-pool"));
        assert!(!a.service_pool_is("ns/s", "other"));
        assert_eq!(
            a.allocate("ns/s", &req).unwrap(),
            ips,
            "satisfied by the alias"
        );
    }
}
