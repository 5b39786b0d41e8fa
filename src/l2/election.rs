//! Layer 2 leader election: which node announces a service IP. Pure: no I/O, no clock.
//!
//! Matches MetalLB 0.11–0.12 (`speaker/layer2_controller.go` `ShouldAnnounce`, spec §6.1), so a
//! Rust speaker and a Go speaker given the same inputs pick the same node:
//!
//! * Ordering: every candidate node gets the digest `SHA-256(node_name + "#" + key)`; digests are
//!   compared as raw bytes and the lowest wins. Two candidates can only tie if they have the same
//!   name (a SHA-256 collision aside), and then they are the same node.
//! * Key: the textual form of the service's **first** LoadBalancer IP as Go's
//!   `net.IP.String()` renders it (dotted IPv4; RFC 5952 lower-case compressed IPv6; an
//!   IPv4-mapped IPv6 address renders as plain IPv4), see [`election_key`]. So every service
//!   sharing an IP gets the same owner. MetalLB 0.8–0.10 used the service key `namespace/name`
//!   instead ([`owner_by_service_key`], kept for parity tests and upgrade analysis only).
//! * Candidates ([`candidates`]): if no ready endpoint exists anywhere, nobody announces. Otherwise
//!   `externalTrafficPolicy: Local` → live speakers on nodes with a ready endpoint;
//!   `Cluster` → all live speakers.
//!
//! "Live speaker" is the caller's definition (gossip says alive AND the speaker Pod and its Node
//! are Ready, minus fenced nodes). It is always a concrete set: unlike upstream, where a disabled
//! memberlist (`nil` member list) left `Cluster` services announced by nobody (MetalLB #2005),
//! there is no "unknown" state here.
//!
//! There is no hand-over protocol: every speaker evaluates the same function and either adds the
//! IP to its answer set or drops it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

/// A service's `spec.externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrafficPolicy {
    /// Any node may attract the traffic; kube-proxy spreads it (the Kubernetes default).
    #[default]
    Cluster,
    /// Only nodes with a ready local endpoint may attract the traffic.
    Local,
}

impl TrafficPolicy {
    /// Reads the Kubernetes spelling; anything but `Local` (including absent) is `Cluster`, as in
    /// MetalLB, which only tests for `Local`.
    pub fn from_k8s(value: Option<&str>) -> Self {
        match value {
            Some("Local") => Self::Local,
            _ => Self::Cluster,
        }
    }
}

/// The election key for an IP: Go's `net.IP.String()` of it.
///
/// Rust's `Display` already follows RFC 5952 like Go for IPv6; the one difference is an
/// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), which Go prints as plain `a.b.c.d`.
pub fn election_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
    }
}

/// `SHA-256(node_name + "#" + key)`, the value candidates are ordered by.
pub fn node_digest(node_name: &str, key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(node_name.as_bytes());
    h.update(b"#");
    h.update(key.as_bytes());
    h.finalize().into()
}

/// The candidate with the lowest `SHA-256(node + "#" + key)`, or `None` if there is none.
///
/// On equal digests (only possible for equal names) the first one given wins.
pub fn owner_for_key<'a, I, S>(candidates: I, key: &str) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a S>,
    S: AsRef<str> + ?Sized + 'a,
{
    let mut best: Option<([u8; 32], &'a str)> = None;
    for c in candidates {
        let name = c.as_ref();
        let d = node_digest(name, key);
        if best.as_ref().is_none_or(|(bd, _)| d < *bd) {
            best = Some((d, name));
        }
    }
    best.map(|(_, name)| name)
}

/// MetalLB 0.11–0.12: the owner of a service whose first LoadBalancer IP is `first_lb_ip`.
pub fn owner<'a, I, S>(candidates: I, first_lb_ip: IpAddr) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a S>,
    S: AsRef<str> + ?Sized + 'a,
{
    owner_for_key(candidates, &election_key(first_lb_ip))
}

/// MetalLB 0.8–0.10: the owner keyed by the service key `namespace/name`. Parity only; the
/// speaker uses [`owner`].
pub fn owner_by_service_key<'a, I, S>(candidates: I, namespace: &str, name: &str) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a S>,
    S: AsRef<str> + ?Sized + 'a,
{
    owner_for_key(candidates, &format!("{namespace}/{name}"))
}

/// MetalLB 0.11–0.12 candidate set (spec §6.1), in name order.
///
/// * `ready_endpoint_nodes`: nodes hosting at least one ready endpoint of the service.
/// * `live_speakers`: node names of the speakers currently considered alive.
///
/// Nobody is a candidate if the service has no ready endpoint anywhere.
pub fn candidates<'a>(
    policy: TrafficPolicy,
    ready_endpoint_nodes: &BTreeSet<String>,
    live_speakers: &'a BTreeSet<String>,
) -> BTreeSet<&'a str> {
    if ready_endpoint_nodes.is_empty() {
        return BTreeSet::new();
    }
    live_speakers
        .iter()
        .filter(|s| match policy {
            TrafficPolicy::Cluster => true,
            TrafficPolicy::Local => ready_endpoint_nodes.contains(*s),
        })
        .map(String::as_str)
        .collect()
}

/// [`candidates`] then [`owner`]: the node that announces `first_lb_ip`, if any.
pub fn elect<'a>(
    policy: TrafficPolicy,
    ready_endpoint_nodes: &BTreeSet<String>,
    live_speakers: &'a BTreeSet<String>,
    first_lb_ip: IpAddr,
) -> Option<&'a str> {
    owner(
        candidates(policy, ready_endpoint_nodes, live_speakers),
        first_lb_ip,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn hex(d: [u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    // Election parity table. Expected values were computed outside our code, in the shell:
    //
    //   win() { ip=$1; shift; for n in "$@"; do printf '%s#%s' "$n" "$ip" | sha256sum \
    //     | sed "s/ -\$/ $n/"; done | LC_ALL=C sort | head -1; }
    //   win 203.0.113.10 node-a node-b node-c      # -> 64a599b0… node-c
    //
    // i.e. for each node `printf '<node>#<ip>' | sha256sum`, then the lowest hex digest wins
    // (with LC_ALL=C, lower-case hex sorts exactly as the raw bytes do). Each row lists the
    // winning digest; `all_digests_match_sha256sum` below pins every per-node digest.
    const PARITY: &[(&[&str], &str, &str, &str)] = &[
        // (candidates, first LB IP, winner, winner's digest)
        (
            &["node-a", "node-b", "node-c"],
            "203.0.113.10",
            "node-c",
            "64a599b0338d098f43890be905de2d9ddeef07495852d5a0948affa2963de7c0",
        ),
        (
            &["node-a", "node-b"],
            "203.0.113.10",
            "node-a",
            "939733108e705e1c953f95ec29eaeffd206635e3ba16b242cd13b2d122424376",
        ),
        (
            &["node-a", "node-b", "node-c", "worker-1", "cp-0"],
            "203.0.113.10",
            "worker-1",
            "1605dfb0604a841fd92fde25700bcd0bb7a60578f4fdc286856859cff28c13a1",
        ),
        (
            &["node-a", "node-b", "node-c"],
            "203.0.113.11",
            "node-a",
            "0fa4c5d4a29cda8e152f83a4119e383b29e9cd2e00f68dff9a17a2796eb4cfde",
        ),
        (
            &["node-b", "node-c", "cp-0"],
            "203.0.113.11",
            "node-c",
            "552e2ff4564c535d8a141a8d0dec1bd076b676e7110288b5bc7dcfb53eeee375",
        ),
        (
            &["node-a", "node-b", "node-c"],
            "198.51.100.3",
            "node-a",
            "855be8f71e0ba7cad3189cc294310bbcd1db668caeb54631c78dc1f0f08bf166",
        ),
        (
            &["node-a", "node-b", "node-c", "worker-1", "cp-0"],
            "198.51.100.255",
            "cp-0",
            "3e989cebd1d5a7fa39d12235f23b75275cb6a8ebeedda22c3e4de18688dddaf4",
        ),
        (
            &["node-a", "node-b", "node-c"],
            "2001:db8::1",
            "node-b",
            "1aee61dde2bd8a0c8b0177a52ced9e0a52e8108284e6e3f14220d9f9d98cbc2e",
        ),
        (
            &["node-a", "node-b", "node-c", "worker-1", "cp-0"],
            "2001:db8::a:10",
            "cp-0",
            "019245cb3856c443f18f8dcd824fd211f10cbb4a3fae4a6d9305e58c7c7b0ae7",
        ),
        (
            &["node-a", "node-b", "node-c", "worker-1"],
            "2001:db8:1::ff",
            "node-b",
            "af862e38f9b79a33cb348d765b730e8709f554df3dd855c63b42ccddffcaefdf",
        ),
        (
            &["node-a", "node-b", "node-c"],
            "2001:db8::203:0:113:10",
            "node-c",
            "7950bb18ad831e8612ed3f668499b0d1d2193acc9559bcf8c572324e7e7f7e6c",
        ),
        (
            &["worker-1", "cp-0"],
            "2001:db8::203:0:113:10",
            "cp-0",
            "3551a5890125177a06a46bc5b7943e435c6711ad322f52fa421f4f99d58a7719",
        ),
    ];

    #[test]
    fn owner_matches_independently_computed_parity_table() {
        for (nodes, lb_ip, winner, digest) in PARITY {
            let got = owner(nodes.iter(), ip(lb_ip));
            assert_eq!(got, Some(*winner), "owner of {lb_ip} among {nodes:?}");
            assert_eq!(hex(node_digest(winner, lb_ip)), *digest, "{winner}#{lb_ip}");
            // Order of the candidates does not matter.
            let reversed: Vec<&str> = nodes.iter().rev().copied().collect();
            assert_eq!(owner(reversed.iter(), ip(lb_ip)), Some(*winner));
        }
    }

    // `for ip in 203.0.113.10 …; do for n in node-a node-b node-c worker-1 cp-0; do
    //    printf '%s#%s' "$n" "$ip" | sha256sum; done; done`
    const DIGESTS: &[(&str, &str, &str)] = &[
        (
            "node-a",
            "203.0.113.10",
            "939733108e705e1c953f95ec29eaeffd206635e3ba16b242cd13b2d122424376",
        ),
        (
            "node-b",
            "203.0.113.10",
            "d84adac440a0aa7190708d8e175dc4d8cc9928a0daae298cab4356b01da1cc09",
        ),
        (
            "node-c",
            "203.0.113.10",
            "64a599b0338d098f43890be905de2d9ddeef07495852d5a0948affa2963de7c0",
        ),
        (
            "worker-1",
            "203.0.113.10",
            "1605dfb0604a841fd92fde25700bcd0bb7a60578f4fdc286856859cff28c13a1",
        ),
        (
            "cp-0",
            "203.0.113.10",
            "efe32de4ea497a3b156f5bb461544eb1e25b728b6d9b0d52c99415225ee01bc2",
        ),
        (
            "node-a",
            "2001:db8::1",
            "3c9f88a7e2ef52a1c015be314124ea3ab99785b842ce9ee37afdf6470837efbe",
        ),
        (
            "node-b",
            "2001:db8::1",
            "1aee61dde2bd8a0c8b0177a52ced9e0a52e8108284e6e3f14220d9f9d98cbc2e",
        ),
        (
            "node-c",
            "2001:db8::1",
            "bb833059784d34c0c3dfacf003bec741b65be19b7102e7316af458b26d6ed31a",
        ),
        (
            "worker-1",
            "2001:db8:1::ff",
            "d1174379b9cacc372491ae58b62edcd6272a0638668f4c46aff827bf15f7892a",
        ),
        (
            "cp-0",
            "2001:db8::a:10",
            "019245cb3856c443f18f8dcd824fd211f10cbb4a3fae4a6d9305e58c7c7b0ae7",
        ),
    ];

    #[test]
    fn all_digests_match_sha256sum() {
        for (node, key, digest) in DIGESTS {
            assert_eq!(hex(node_digest(node, key)), *digest, "{node}#{key}");
        }
    }

    // MetalLB 0.8–0.10 keyed on the service: `printf 'node-b#default/nginx' | sha256sum`
    //   node-a fec9a317…  node-b 07b17cc7…  node-c 18afbb4a…   -> node-b
    //   `printf 'node-a#kube-system/dns' | sha256sum`
    //   node-a 056f6db8…  node-b 4b188346…  node-c 7b7848cb…   -> node-a
    #[test]
    fn service_key_variant_matches_sha256sum() {
        let nodes = ["node-a", "node-b", "node-c"];
        assert_eq!(
            owner_by_service_key(nodes.iter(), "default", "nginx"),
            Some("node-b")
        );
        assert_eq!(
            hex(node_digest("node-b", "default/nginx")),
            "07b17cc79ed9c23ac3ac74ee1fbc983a3ddd28788d306e1c6e3497c4365fad95"
        );
        assert_eq!(
            owner_by_service_key(nodes.iter(), "kube-system", "dns"),
            Some("node-a")
        );
        assert_eq!(
            hex(node_digest("node-a", "kube-system/dns")),
            "056f6db884da3a176e77f6ed474b0d25bd353da320c35dd2aca1437bd64a8fb0"
        );
    }

    #[test]
    fn key_is_go_net_ip_string() {
        assert_eq!(election_key(ip("203.0.113.10")), "203.0.113.10");
        // RFC 5952: lower case, longest zero run compressed, leading zeros dropped.
        assert_eq!(election_key(ip("2001:0DB8:0000:0000::0001")), "2001:db8::1");
        assert_eq!(
            election_key(ip("2001:db8:0:1:0:0:0:ff")),
            "2001:db8:0:1::ff"
        );
        // A single zero group is not compressed.
        assert_eq!(
            election_key(ip("2001:db8:0:1:1:1:1:1")),
            "2001:db8:0:1:1:1:1:1"
        );
        // Go prints IPv4-mapped IPv6 as plain IPv4, so the owner is the same.
        assert_eq!(election_key(ip("::ffff:203.0.113.10")), "203.0.113.10");
        let nodes = ["node-a", "node-b", "node-c"];
        assert_eq!(
            owner(nodes.iter(), ip("::ffff:203.0.113.10")),
            Some("node-c")
        );
    }

    #[test]
    fn no_candidates_no_owner() {
        let none: [&str; 0] = [];
        assert_eq!(owner(none.iter(), ip("203.0.113.10")), None);
    }

    #[test]
    fn single_candidate_wins() {
        assert_eq!(owner(["node-b"].iter(), ip("203.0.113.10")), Some("node-b"));
    }

    #[test]
    fn accepts_string_sets() {
        let live = set(&["node-a", "node-b", "node-c"]);
        assert_eq!(owner(&live, ip("203.0.113.10")), Some("node-c"));
    }

    #[test]
    fn cluster_policy_takes_all_live_speakers() {
        let live = set(&["node-a", "node-b", "node-c"]);
        let ready = set(&["node-a"]);
        let c = candidates(TrafficPolicy::Cluster, &ready, &live);
        assert_eq!(
            c.into_iter().collect::<Vec<_>>(),
            ["node-a", "node-b", "node-c"]
        );
        // node-c wins 203.0.113.10 although its node hosts no endpoint.
        assert_eq!(
            elect(TrafficPolicy::Cluster, &ready, &live, ip("203.0.113.10")),
            Some("node-c")
        );
    }

    #[test]
    fn cluster_policy_counts_endpoints_on_nodes_without_speakers() {
        let live = set(&["node-a", "node-b"]);
        let ready = set(&["node-z"]);
        assert_eq!(
            elect(TrafficPolicy::Cluster, &ready, &live, ip("203.0.113.10")),
            Some("node-a")
        );
    }

    #[test]
    fn local_policy_takes_live_speakers_with_ready_endpoint() {
        let live = set(&["node-a", "node-b", "node-c"]);
        let ready = set(&["node-a", "node-b", "node-z"]);
        let c = candidates(TrafficPolicy::Local, &ready, &live);
        assert_eq!(c.into_iter().collect::<Vec<_>>(), ["node-a", "node-b"]);
        assert_eq!(
            elect(TrafficPolicy::Local, &ready, &live, ip("203.0.113.10")),
            Some("node-a")
        );
    }

    #[test]
    fn local_policy_with_endpoints_only_on_dead_nodes_has_no_owner() {
        let live = set(&["node-a", "node-b"]);
        let ready = set(&["node-c"]);
        assert_eq!(
            elect(TrafficPolicy::Local, &ready, &live, ip("203.0.113.10")),
            None
        );
    }

    #[test]
    fn no_ready_endpoint_anywhere_means_nobody() {
        let live = set(&["node-a", "node-b", "node-c"]);
        let ready = set(&[]);
        for p in [TrafficPolicy::Cluster, TrafficPolicy::Local] {
            assert!(candidates(p, &ready, &live).is_empty());
            assert_eq!(elect(p, &ready, &live, ip("203.0.113.10")), None);
        }
    }

    #[test]
    fn dead_owner_hands_over_to_next_lowest_digest() {
        // 203.0.113.10: worker-1 (1605…) < node-c (64a5…) < node-a (9397…) < node-b (d84a…)
        // < cp-0 (efe3…).
        let mut live = set(&["node-a", "node-b", "node-c", "worker-1", "cp-0"]);
        let ready = set(&["node-a"]);
        let expect = ["worker-1", "node-c", "node-a", "node-b", "cp-0"];
        for want in expect {
            let got = elect(TrafficPolicy::Cluster, &ready, &live, ip("203.0.113.10"))
                .map(str::to_string);
            assert_eq!(got.as_deref(), Some(want));
            live.remove(want);
        }
        assert_eq!(
            elect(TrafficPolicy::Cluster, &ready, &live, ip("203.0.113.10")),
            None
        );
    }

    #[test]
    fn traffic_policy_from_k8s() {
        assert_eq!(TrafficPolicy::from_k8s(Some("Local")), TrafficPolicy::Local);
        assert_eq!(
            TrafficPolicy::from_k8s(Some("Cluster")),
            TrafficPolicy::Cluster
        );
        assert_eq!(TrafficPolicy::from_k8s(None), TrafficPolicy::Cluster);
        assert_eq!(
            TrafficPolicy::from_k8s(Some("local")),
            TrafficPolicy::Cluster
        );
    }
}
