//! The large legacy config the parse and migrate benchmarks share: 1,000 pools (half layer2
//! with a CIDR, a range and an IPv6 /120; half bgp with avoid-buggy-ips and an advertisement
//! with three communities), 200 peers with node selectors, two community aliases.

use std::fmt::Write;

/// Build it. `passwords` gives every peer a password; `layer2_prefix` names the layer2 pools
/// (`Pool_` makes them need normalization when migrated).
pub(crate) fn big_config(passwords: bool, layer2_prefix: &str) -> String {
    let mut s = String::from("peers:\n");
    for i in 0..200u32 {
        let password = if passwords {
            format!("  password: pw{i}\n")
        } else {
            String::new()
        };
        let _ = write!(
            s,
            "- my-asn: 64500\n  peer-asn: {}\n  peer-address: 198.51.{}.{}\n  hold-time: 9s\n{password}  node-selectors:\n  - match-labels: {{rack: r{}}}\n",
            64600 + i,
            100 + i / 250,
            1 + i % 250,
            i % 10
        );
    }
    s.push_str("bgp-communities:\n  no-export: 65535:65281\n  gold: 64500:1\naddress-pools:\n");
    for i in 0..1000u32 {
        let (a, b) = (10 + i / 256, i % 256);
        if i % 2 == 0 {
            let _ = write!(
                s,
                "- name: {layer2_prefix}{i}\n  protocol: layer2\n  addresses:\n  - 10.{a}.{b}.0/25\n  - 10.{a}.{b}.130-10.{a}.{b}.200\n  - 2001:db8:{i:x}::/120\n"
            );
        } else {
            let _ = write!(
                s,
                "- name: pool-{i}\n  protocol: bgp\n  avoid-buggy-ips: true\n  addresses: [10.{a}.{b}.0/24]\n  bgp-advertisements:\n  - aggregation-length: 32\n    localpref: 100\n    communities: [no-export, gold, 64500:{i}]\n"
            );
        }
    }
    s
}
