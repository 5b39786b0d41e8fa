//! Cross-object rules that need an index: overlapping pool CIDRs. Pure.
//!
//! MetalLB checks every CIDR against all CIDRs accepted so far, including earlier CIDRs of
//! the same pool; mixed families never overlap. CIDRs are aligned blocks, so two of them
//! overlap exactly when one contains the other. We keep accepted CIDRs as disjoint intervals
//! in a `BTreeMap`, so each check is O(log n) instead of MetalLB's O(n).

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::addr::bounds;

/// Accepted CIDRs, per family, keyed by first address.
#[derive(Debug, Default)]
pub struct OverlapIndex {
    v4: BTreeMap<u128, (u128, IpNet, usize)>,
    v6: BTreeMap<u128, (u128, IpNet, usize)>,
}

impl OverlapIndex {
    /// Insert `net` owned by `owner`; on overlap return the CIDR already present and its owner.
    pub fn insert(&mut self, net: IpNet, owner: usize) -> Result<(), (IpNet, usize)> {
        let map = match net {
            IpNet::V4(_) => &mut self.v4,
            IpNet::V6(_) => &mut self.v6,
        };
        let (lo, hi) = bounds(&net);
        // The stored interval with the greatest start <= hi is the only candidate.
        if let Some((_, (end, other, who))) = map.range(..=hi).next_back()
            && *end >= lo
        {
            return Err((*other, *who));
        }
        map.insert(lo, (hi, net, owner));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn detects_containment_both_ways_and_ignores_other_family() {
        let mut ix = OverlapIndex::default();
        assert!(ix.insert(n("10.0.0.0/24"), 1).is_ok());
        assert_eq!(ix.insert(n("10.0.0.128/25"), 2), Err((n("10.0.0.0/24"), 1)));
        assert_eq!(ix.insert(n("10.0.0.0/16"), 2), Err((n("10.0.0.0/24"), 1)));
        assert!(ix.insert(n("10.0.1.0/24"), 2).is_ok());
        assert!(ix.insert(n("::/0"), 3).is_ok());
        assert!(ix.insert(n("2001:db8::/32"), 3).is_err());
    }
}
