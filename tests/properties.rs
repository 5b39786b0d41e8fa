//! Property tests for address handling (proptest).
//!
//! - range → CIDR summarization covers exactly the range, with aligned, ascending, disjoint,
//!   minimal blocks;
//! - pool overlap detection agrees with a brute-force check on small random pools.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use metallb_rs::config::addr::{bounds, summarize, to_u128};
use metallb_rs::config::{ErrorKind, parse_payload};
use proptest::prelude::*;

fn check_cover(lo: u128, hi: u128, nets: &[IpNet]) -> Result<(), TestCaseError> {
    prop_assert!(!nets.is_empty());
    let mut next = lo;
    for (i, n) in nets.iter().enumerate() {
        let (a, b) = bounds(n);
        prop_assert_eq!(
            a,
            next,
            "block {} does not start where the previous ended",
            n
        );
        prop_assert_eq!(n.network(), n.addr(), "block {} is not aligned", n);
        // Minimal: two neighbours never merge into one aligned block of twice the size.
        if let Some(m) = nets.get(i + 1) {
            let same_len = m.prefix_len() == n.prefix_len();
            let merged_aligned = n.prefix_len() > 0
                && n.supernet()
                    .is_some_and(|s| s.contains(m) && s.network() == n.network());
            prop_assert!(
                !(same_len && merged_aligned),
                "{} and {} should be one block",
                n,
                m
            );
        }
        next = b.wrapping_add(1);
        if b == hi {
            prop_assert_eq!(i, nets.len() - 1);
        }
    }
    let (_, last) = bounds(nets.last().unwrap());
    prop_assert_eq!(last, hi);
    Ok(())
}

proptest! {
    #[test]
    fn v4_summaries_cover_exactly_the_range(a in any::<u32>(), b in any::<u32>()) {
        let (lo, hi) = (a.min(b), a.max(b));
        let nets = summarize(IpAddr::V4(Ipv4Addr::from(lo)), IpAddr::V4(Ipv4Addr::from(hi))).unwrap();
        check_cover(u128::from(lo), u128::from(hi), &nets)?;
        prop_assert!(nets.len() <= 62);
    }

    #[test]
    fn v6_summaries_cover_exactly_the_range(a in any::<u128>(), b in any::<u128>()) {
        let (lo, hi) = (a.min(b), a.max(b));
        let nets = summarize(IpAddr::V6(Ipv6Addr::from(lo)), IpAddr::V6(Ipv6Addr::from(hi))).unwrap();
        check_cover(lo, hi, &nets)?;
        prop_assert!(nets.len() <= 254);
    }

    #[test]
    fn reversed_ranges_are_rejected(a in any::<u32>(), b in any::<u32>()) {
        prop_assume!(a != b);
        let (lo, hi) = (a.min(b), a.max(b));
        let r = summarize(IpAddr::V4(Ipv4Addr::from(hi)), IpAddr::V4(Ipv4Addr::from(lo)));
        prop_assert_eq!(r, Err(ErrorKind::ReversedRange));
    }

    /// Pools of random ranges inside 192.0.2.0/24: the parser reports an overlap exactly when
    /// some address belongs to two entries.
    #[test]
    fn overlap_detection_matches_brute_force(
        pools in prop::collection::vec(prop::collection::vec((0u8..=255, 0u8..=255), 1..3), 1..4)
    ) {
        let mut yaml = String::from("address-pools:\n");
        let mut owners = vec![0u32; 256];
        let mut overlap = false;
        for (i, entries) in pools.iter().enumerate() {
            yaml.push_str(&format!("- name: p{i}\n  protocol: layer2\n  addresses:\n"));
            for (a, b) in entries {
                let (lo, hi) = (*a.min(b), *a.max(b));
                yaml.push_str(&format!("  - 192.0.2.{lo}-192.0.2.{hi}\n"));
                for x in lo..=hi {
                    owners[x as usize] += 1;
                    overlap |= owners[x as usize] > 1;
                }
            }
        }
        match parse_payload(&yaml) {
            Ok(cfg) => {
                prop_assert!(!overlap, "overlap not detected in\n{}", yaml);
                let total: u128 = cfg.pools.iter().flat_map(|p| p.cidrs()).map(|n| {
                    let (a, b) = bounds(n);
                    b - a + 1
                }).sum();
                prop_assert_eq!(total, owners.iter().filter(|c| **c > 0).count() as u128);
            }
            Err(e) => {
                prop_assert!(overlap, "false overlap {} in\n{}", e, yaml);
                prop_assert!(matches!(e.kind, ErrorKind::Overlap { .. }), "{}", e);
            }
        }
    }
}

#[test]
fn to_u128_orders_families_separately() {
    assert_eq!(to_u128("0.0.0.1".parse().unwrap()), (1, 32));
    assert_eq!(to_u128("::1".parse().unwrap()), (1, 128));
}
