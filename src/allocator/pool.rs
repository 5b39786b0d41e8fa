//! The pools of one config as the allocator sees them. Pure.
//!
//! Per pool, in config order: its CIDRs as numeric spans (config order, each range already
//! expanded to ascending CIDRs by `config::addr`), the used addresses per family as sparse
//! [`Runs`] in the pool's [`Space`], its `addresses_in_use` and `addresses_total`. A B-tree of
//! all CIDR starts answers "which pool holds this IP" (upstream `poolFor`) in O(log CIDRs).

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::range::{Family, Runs, Space, Span, cidr_total, ip_from, is_buggy, slot};
use crate::config::Config;
use crate::config::addr::to_u128;

/// One pool.
#[derive(Debug, Clone)]
pub(crate) struct PoolState {
    pub(crate) name: String,
    /// Other names Services may use for the pool ([`crate::config::Pool::aliases`]).
    pub(crate) aliases: Vec<String>,
    pub(crate) auto_assign: bool,
    pub(crate) avoid_buggy: bool,
    /// CIDRs in config order.
    pub(crate) spans: Vec<Span>,
    /// Used addresses per family (`slot`), numbered in the family's [`Space`].
    used: [Runs; 2],
    /// Distinct addresses in use.
    pub(crate) in_use: u64,
    /// `addresses_total` (saturating at `i64::MAX`).
    pub(crate) total: i64,
}

impl PoolState {
    fn new(pool: &crate::config::Pool) -> PoolState {
        let avoid_buggy = pool.avoid_buggy_ips;
        let spans: Vec<Span> = pool.cidrs().map(|n| Span::new(n, avoid_buggy)).collect();
        let total = pool
            .cidrs()
            .try_fold(0i64, |acc, n| {
                cidr_total(n, avoid_buggy).map(|t| acc.saturating_add(t))
            })
            .unwrap_or(i64::MAX);
        PoolState {
            name: pool.name.clone(),
            aliases: pool.aliases.clone(),
            auto_assign: pool.auto_assign(),
            avoid_buggy,
            spans,
            used: Default::default(),
            in_use: 0,
            total,
        }
    }

    /// Whether a Service asking for pool `name` means this pool.
    pub(crate) fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.iter().any(|a| a == name)
    }

    /// Upstream pool membership: in one of the CIDRs, and not buggy if the pool avoids those.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        if self.avoid_buggy && is_buggy(ip) {
            return false;
        }
        let (f, v) = (Family::of_ip(ip), to_u128(ip).0);
        self.spans.iter().any(|s| s.holds(f, v))
    }

    fn space(&self, family: Family) -> Space {
        Space::new(family, self.avoid_buggy)
    }

    /// The lowest usable address of `span` that is not in use.
    pub(crate) fn first_free(&self, span: &Span) -> Option<IpAddr> {
        let (a, b) = span.idx?;
        let i = self.used[slot(span.family)].first_free_from(a)?;
        (i <= b).then(|| ip_from(span.family, self.space(span.family).addr(i)))
    }

    /// Record `ip` (a member of this pool) as in use.
    pub(crate) fn mark_used(&mut self, ip: IpAddr) {
        let f = Family::of_ip(ip);
        let i = self.space(f).index(to_u128(ip).0);
        if self.used[slot(f)].insert(i) {
            self.in_use += 1;
        }
    }

    /// Record `ip` as free again.
    pub(crate) fn mark_free(&mut self, ip: IpAddr) {
        let f = Family::of_ip(ip);
        let i = self.space(f).index(to_u128(ip).0);
        if self.used[slot(f)].remove(i) {
            self.in_use -= 1;
        }
    }
}

/// The pools of a config, in config order, with a membership index.
#[derive(Debug, Clone, Default)]
pub(crate) struct PoolTable {
    pub(crate) pools: Vec<PoolState>,
    by_name: BTreeMap<String, usize>,
    /// CIDR start → (last address, pool).
    index: BTreeMap<IpAddr, (u128, usize)>,
    /// CIDRs overlap (never for a validated config): fall back to upstream's linear search.
    overlapping: bool,
}

impl PoolTable {
    pub(crate) fn new(config: &Config) -> PoolTable {
        let pools: Vec<PoolState> = config.pools.iter().map(PoolState::new).collect();
        let mut by_name = BTreeMap::new();
        let mut index = BTreeMap::new();
        let mut overlapping = false;
        for (i, p) in pools.iter().enumerate() {
            by_name.entry(p.name.clone()).or_insert(i);
            for s in &p.spans {
                overlapping |= index.insert(ip_from(s.family, s.lo), (s.hi, i)).is_some();
            }
        }
        // A real name always wins over another pool's alias.
        for (i, p) in pools.iter().enumerate() {
            for a in &p.aliases {
                by_name.entry(a.clone()).or_insert(i);
            }
        }
        let mut prev: Option<(Family, u128)> = None;
        for (start, (hi, _)) in &index {
            let (f, lo) = (Family::of_ip(*start), to_u128(*start).0);
            overlapping |= prev.is_some_and(|(pf, phi)| pf == f && phi >= lo);
            prev = Some((f, *hi));
        }
        PoolTable {
            pools,
            by_name,
            index,
            overlapping,
        }
    }

    /// The pool named `name`.
    pub(crate) fn by_name(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Upstream `poolFor(ip)`: the pool holding `ip`, honouring avoid-buggy-ips.
    pub(crate) fn pool_for(&self, ip: IpAddr) -> Option<usize> {
        if self.overlapping {
            return self.pools.iter().position(|p| p.contains(ip));
        }
        let (start, (hi, p)) = self.index.range(..=ip).next_back()?;
        let same_family = start.is_ipv4() == ip.is_ipv4();
        let inside = same_family && to_u128(ip).0 <= *hi;
        (inside && !(self.pools[*p].avoid_buggy && is_buggy(ip))).then_some(*p)
    }

    /// Upstream 0.12 `poolFor(ips)`: the pool holding every one of `ips`.
    pub(crate) fn pool_for_all(&self, ips: &[IpAddr]) -> Option<usize> {
        if self.overlapping {
            return self
                .pools
                .iter()
                .position(|p| !ips.is_empty() && ips.iter().all(|ip| p.contains(*ip)));
        }
        let (first, rest) = ips.split_first()?;
        let p = self.pool_for(*first)?;
        rest.iter()
            .all(|ip| self.pool_for(*ip) == Some(p))
            .then_some(p)
    }
}
