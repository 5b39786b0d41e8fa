//! Address arithmetic for the allocator. Pure.
//!
//! - [`Family`]: the IP family of a Service or of an address list (MetalLB 0.12
//!   `internal/ipfamily`).
//! - [`is_buggy`]: MetalLB's `avoid-buggy-ips` rule (spec §5.3): IPv4 and last octet 0 or 255,
//!   whatever the prefix length; never IPv6.
//! - `Space`: a dense numbering of the addresses a pool may hand out. For an `avoid-buggy-ips`
//!   IPv4 pool the buggy addresses are left out of the numbering, so "the next usable address"
//!   is plain `+1` and a walk never has to step over `.255`/`.0` pairs one by one.
//! - `Runs`: a sparse set of used addresses stored as maximal runs `start..=end`, so that
//!   "first free address at or after x" is a single B-tree lookup, whatever the pool size (an
//!   IPv6 `/64` costs nothing until addresses are used).
//! - `cidr_total`: upstream's `addresses_total` for one CIDR (spec §5.4).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::AllocError;
use crate::config::addr::to_u128;

/// The IP family of a Service (derived from `spec.clusterIPs`) or of an address list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
    /// One IPv4 and one IPv6 address.
    Dual,
}

impl Family {
    /// The family of one address.
    pub fn of_ip(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The family of a list of 1 or 2 addresses, as MetalLB 0.12's
    /// `ipfamily.ForAddressesIPs`: one address is its family, two addresses of different
    /// families are dual stack, anything else is an error.
    pub fn of_ips(ips: &[IpAddr]) -> Result<Family, AllocError> {
        match *ips {
            [] => Err(AllocError::NoAddresses),
            [ip] => Ok(Family::of_ip(ip)),
            [a, b] if a.is_ipv4() == b.is_ipv4() => Err(AllocError::SameFamily(a, b)),
            [_, _] => Ok(Family::Dual),
            _ => Err(AllocError::TooManyAddresses(ips.to_vec())),
        }
    }

    /// Upstream's spelling: `ipv4`, `ipv6`, `dual`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
            Family::Dual => "dual",
        }
    }

    /// Whether a Service of this family needs an address of single family `f`.
    pub(crate) fn wants(self, f: Family) -> bool {
        self == Family::Dual || self == f
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// MetalLB's "buggy" address (spec §5.3): IPv4 ending in `.0` or `.255`, whatever the prefix
/// length of the pool. IPv6 addresses are never buggy.
pub fn is_buggy(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => matches!(a.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

/// Build an address from its number and family (`V4` or `V6`).
pub(crate) fn ip_from(family: Family, v: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        _ => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// Slot of a single family in per-family arrays.
pub(crate) fn slot(family: Family) -> usize {
    usize::from(family != Family::V4)
}

/// The numbering of the addresses a pool may hand out, per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    /// Every address counts; index = address.
    Plain,
    /// IPv4 under `avoid-buggy-ips`: `.1`–`.254` of every /24 numbered densely,
    /// index = 254 · (a >> 8) + (a & 255) − 1.
    SkipBuggy,
}

impl Space {
    /// The space of `family` in a pool with the given `avoid-buggy-ips` flag.
    pub(crate) fn new(family: Family, avoid_buggy: bool) -> Space {
        if avoid_buggy && family == Family::V4 {
            Space::SkipBuggy
        } else {
            Space::Plain
        }
    }

    /// Index of a (non-buggy, for `SkipBuggy`) address.
    pub(crate) fn index(self, a: u128) -> u128 {
        match self {
            Space::Plain => a,
            Space::SkipBuggy => 254 * (a >> 8) + (a & 255) - 1,
        }
    }

    /// Address of an index (inverse of [`Space::index`]).
    pub(crate) fn addr(self, i: u128) -> u128 {
        match self {
            Space::Plain => i,
            Space::SkipBuggy => ((i / 254) << 8) | (i % 254 + 1),
        }
    }

    /// Index range of the usable addresses of `lo..=hi`; `None` when there are none (e.g. a
    /// `/32` of a `.0` address under avoid-buggy-ips).
    pub(crate) fn span(self, lo: u128, hi: u128) -> Option<(u128, u128)> {
        match self {
            Space::Plain => Some((lo, hi)),
            Space::SkipBuggy => {
                let first = match lo & 255 {
                    0 => lo + 1,
                    255 => lo + 2,
                    _ => lo,
                };
                let last = match hi & 255 {
                    255 => hi - 1,
                    0 => hi.checked_sub(2)?,
                    _ => hi,
                };
                (first <= last).then(|| (self.index(first), self.index(last)))
            }
        }
    }
}

/// A CIDR of a pool as numbers: family, bounds and the index range of its usable addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// `V4` or `V6`.
    pub(crate) family: Family,
    /// First address.
    pub(crate) lo: u128,
    /// Last address.
    pub(crate) hi: u128,
    /// Usable addresses in the pool's [`Space`]; `None` when there are none.
    pub(crate) idx: Option<(u128, u128)>,
}

impl Span {
    /// The span of `net` in a pool with the given `avoid-buggy-ips` flag.
    pub(crate) fn new(net: &IpNet, avoid_buggy: bool) -> Span {
        let family = Family::of_ip(net.network());
        let (lo, _) = to_u128(net.network());
        let (hi, _) = to_u128(net.broadcast());
        let idx = Space::new(family, avoid_buggy).span(lo, hi);
        Span {
            family,
            lo,
            hi,
            idx,
        }
    }

    /// Whether the span's address range holds `(family, v)` (buggy or not).
    pub(crate) fn holds(&self, family: Family, v: u128) -> bool {
        self.family == family && self.lo <= v && v <= self.hi
    }
}

/// `addresses_total` of one CIDR as MetalLB computes it (spec §5.4): its size minus the buggy
/// addresses when `avoid-buggy-ips` is set; `None` when it has 62 host bits or more (upstream
/// then reports the whole pool as `i64::MAX`).
///
/// For IPv4 this equals upstream's formula (2 · 2^(24−len) buggy addresses for a prefix up to
/// /24, else one for a first address `.0` and one for a last address `.255`). Upstream also
/// applied the formula to IPv6 CIDRs, reading the 4th byte of the address; we count IPv6
/// CIDRs whole, as nothing in them is ever excluded.
pub(crate) fn cidr_total(net: &IpNet, avoid_buggy: bool) -> Option<i64> {
    let host_bits = net.max_prefix_len() - net.prefix_len();
    if host_bits >= 62 {
        return None;
    }
    let span = Span::new(net, avoid_buggy);
    let n = span.idx.map_or(0, |(a, b)| b - a + 1);
    // At most 2^61 < i64::MAX.
    Some(i64::try_from(n).unwrap_or(i64::MAX))
}

/// A sparse set of numbers stored as maximal runs `start => end` (inclusive). Runs never touch:
/// the number after a run's end is never in the set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Runs {
    runs: BTreeMap<u128, u128>,
}

impl Runs {
    /// The run holding `x`, if any.
    fn run_of(&self, x: u128) -> Option<(u128, u128)> {
        self.runs
            .range(..=x)
            .next_back()
            .filter(|(_, e)| **e >= x)
            .map(|(s, e)| (*s, *e))
    }

    /// Whether `x` is in the set.
    #[cfg(test)]
    pub(crate) fn contains(&self, x: u128) -> bool {
        self.run_of(x).is_some()
    }

    /// Number of runs (fragmentation; for tests).
    #[cfg(test)]
    pub(crate) fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// Add `x`; false if it was present. O(log runs).
    pub(crate) fn insert(&mut self, x: u128) -> bool {
        let left = self.runs.range(..=x).next_back().map(|(s, e)| (*s, *e));
        if left.is_some_and(|(_, e)| e >= x) {
            return false;
        }
        let start = match left {
            Some((s, e)) if e + 1 == x => s,
            _ => x,
        };
        let end = match x.checked_add(1).and_then(|n| self.runs.remove(&n)) {
            Some(e) => e,
            None => x,
        };
        self.runs.insert(start, end);
        true
    }

    /// Remove `x`; false if it was absent. O(log runs).
    pub(crate) fn remove(&mut self, x: u128) -> bool {
        let Some((s, e)) = self.run_of(x) else {
            return false;
        };
        self.runs.remove(&s);
        if s < x {
            self.runs.insert(s, x - 1);
        }
        if x < e {
            self.runs.insert(x + 1, e);
        }
        true
    }

    /// The smallest number `>= x` not in the set (`None` only past `u128::MAX`). O(log runs).
    pub(crate) fn first_free_from(&self, x: u128) -> Option<u128> {
        match self.run_of(x) {
            Some((_, e)) => e.checked_add(1),
            None => Some(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn v4(s: &str) -> u128 {
        to_u128(s.parse().unwrap()).0
    }

    #[test]
    fn buggy_means_ipv4_dot_zero_or_dot_255_only() {
        for (ip, buggy) in [
            ("10.0.0.0", true),
            ("10.0.0.255", true),
            ("10.0.1.0", true),
            ("10.0.0.1", false),
            ("10.0.0.254", false),
            ("2001:db8::", false),
            ("2001:db8::ff", false),
        ] {
            assert_eq!(is_buggy(ip.parse().unwrap()), buggy, "{ip}");
        }
    }

    #[test]
    fn family_of_address_lists_follows_upstream() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(Family::of_ips(&[ip("10.0.0.1")]), Ok(Family::V4));
        assert_eq!(Family::of_ips(&[ip("2001:db8::1")]), Ok(Family::V6));
        assert_eq!(
            Family::of_ips(&[ip("2001:db8::1"), ip("10.0.0.1")]),
            Ok(Family::Dual)
        );
        assert_eq!(
            Family::of_ips(&[ip("10.0.0.1"), ip("10.0.0.2")])
                .unwrap_err()
                .to_string(),
            "\"10.0.0.1\" \"10.0.0.2\" has the same family"
        );
        assert!(matches!(
            Family::of_ips(&[ip("10.0.0.1"), ip("::1"), ip("10.0.0.2")]),
            Err(AllocError::TooManyAddresses(_))
        ));
        assert_eq!(Family::of_ips(&[]), Err(AllocError::NoAddresses));
    }

    #[test]
    fn skip_buggy_numbering_is_a_dense_bijection_on_usable_addresses() {
        let s = Space::SkipBuggy;
        let mut expect = 0u128;
        for a in v4("10.0.0.0")..=v4("10.0.3.255") {
            if matches!(a & 255, 0 | 255) {
                continue;
            }
            assert_eq!(s.index(a) - s.index(v4("10.0.0.1")), expect);
            assert_eq!(s.addr(s.index(a)), a);
            expect += 1;
        }
        assert_eq!(expect, 4 * 254);
        assert_eq!(s.index(v4("255.255.255.254")), 254 * (1 << 24) - 1);
    }

    #[test]
    fn skip_buggy_span_trims_buggy_ends_and_can_be_empty() {
        let s = Space::SkipBuggy;
        let span = |lo: &str, hi: &str| s.span(v4(lo), v4(hi)).map(|(a, b)| (s.addr(a), s.addr(b)));
        assert_eq!(
            span("10.0.0.0", "10.0.1.255"),
            Some((v4("10.0.0.1"), v4("10.0.1.254")))
        );
        assert_eq!(
            span("10.0.0.252", "10.0.0.255"),
            Some((v4("10.0.0.252"), v4("10.0.0.254")))
        );
        assert_eq!(span("10.0.0.0", "10.0.0.0"), None);
        assert_eq!(span("10.0.0.255", "10.0.0.255"), None);
        assert_eq!(span("0.0.0.0", "0.0.0.0"), None);
        assert_eq!(span("10.0.0.255", "10.0.1.0"), None);
        assert_eq!(
            span("10.0.0.255", "10.0.1.1"),
            Some((v4("10.0.1.1"), v4("10.0.1.1")))
        );
    }

    #[test]
    fn totals_match_upstream_formula() {
        assert_eq!(cidr_total(&net("10.0.0.0/24"), false), Some(256));
        assert_eq!(cidr_total(&net("10.0.0.0/24"), true), Some(254));
        assert_eq!(cidr_total(&net("10.0.0.0/16"), true), Some(65536 - 512));
        assert_eq!(cidr_total(&net("10.0.0.252/30"), true), Some(3));
        assert_eq!(cidr_total(&net("10.0.0.0/32"), true), Some(0));
        assert_eq!(cidr_total(&net("10.0.0.5/32"), true), Some(1));
        assert_eq!(cidr_total(&net("0.0.0.0/0"), true), Some(254 << 24));
        assert_eq!(cidr_total(&net("2001:db8::/124"), true), Some(16));
        assert_eq!(cidr_total(&net("2001:db8::/67"), false), Some(1 << 61));
        assert_eq!(cidr_total(&net("2001:db8::/66"), false), None);
        assert_eq!(cidr_total(&net("2001:db8::/64"), false), None);
    }

    #[test]
    fn runs_merge_split_and_find_gaps() {
        let mut r = Runs::default();
        assert_eq!(r.first_free_from(5), Some(5));
        for x in [5, 7, 6, 9] {
            assert!(r.insert(x));
        }
        assert!(!r.insert(6));
        assert_eq!(r.run_count(), 2, "5..=7 and 9");
        assert_eq!(r.first_free_from(5), Some(8));
        assert!(r.insert(8));
        assert_eq!(r.run_count(), 1);
        assert_eq!(r.first_free_from(4), Some(4));
        assert_eq!(r.first_free_from(6), Some(10));
        assert!(r.remove(7));
        assert!(!r.remove(7));
        assert!(!r.contains(7) && r.contains(6) && r.contains(8));
        assert_eq!(r.run_count(), 2);
        assert_eq!(r.first_free_from(5), Some(7));
        assert!(r.remove(5) && r.remove(9));
        assert_eq!(r.first_free_from(8), Some(9));
        assert!(r.insert(u128::MAX));
        assert_eq!(r.first_free_from(u128::MAX), None);
    }
}
