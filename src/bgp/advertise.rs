//! What this node announces over BGP, and the UPDATEs that carry a change of it to one peer.
//! PURE: values in, values out.
//!
//! [`desired`] follows MetalLB 0.12 `speaker/bgp_controller.go` (spec §7.5–§7.6): a Service
//! is announced when it has an ingress IP, one pool of `protocol: bgp` holds all its IPs, and
//! the endpoint rule holds (`Cluster`: a ready endpoint anywhere; `Local`: a ready endpoint on
//! this node). Each IP gives one prefix per advertisement of its pool: the IP masked to
//! `aggregation-length` (IPv4) or `aggregation-length-v6` (IPv6), with that advertisement's
//! `localpref` and communities. A pool without advertisements has one default advertisement
//! (/32, /128, no localpref, no communities). The same set goes to every peer (the legacy
//! schema has no per-peer filtering). Prefixes shared by several services collapse into one
//! route, withdrawn only when no service generates it any more.
//!
//! [`updates`] turns "what the peer has" and "what it should have" into UPDATE messages,
//! with MetalLB 0.12's attributes (spec §7.5): ORIGIN INCOMPLETE; AS_PATH empty on iBGP and
//! `[local AS]` on eBGP (2-octet encoding for peers without the 4-octet capability, and then
//! AS_TRANS plus AS4_PATH when the local AS does not fit: RFC 6793 §4.2.2); NEXT_HOP the local
//! address of the session; LOCAL_PREF on iBGP only and then always; COMMUNITIES when any.
//!
//! Differences from MetalLB 0.12, on purpose:
//! - Prefixes sharing the same attributes travel together, as many per UPDATE as fit in
//!   4,096 bytes (MetalLB sends one UPDATE per prefix); withdrawals are packed likewise.
//! - IPv6 prefixes go out as MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760) to peers that
//!   negotiated IPv6 unicast over an IPv6 session, with the session's local address as next
//!   hop; IPv4 prefixes go to peers that negotiated IPv4 over an IPv4 session. MetalLB's native
//!   speaker could not announce IPv6 at all. A prefix of the other family than the session is
//!   not sent (there is no next hop of that family to give).
//! - Two advertisements yielding one prefix with different attributes: MetalLB kept whichever
//!   its map iteration met last; we keep the highest LOCAL_PREF and, among equals, the union of
//!   the communities, so the result is deterministic and no community is silently lost.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::config::{BgpAdvertisement, Config, Protocol};
use crate::l2::election::TrafficPolicy;
use crate::l2::plan::{L2Service, pool_for};

use super::codec;
use super::message::{
    AFI_IPV6, AS_TRANS, AsSegment, Ctx, MAX_LEN, Message, MpReach, MpUnreach, Origin, PathAttrs,
    RawAttr, SAFI_UNICAST, Update,
};

/// Path attributes that come from the advertisement (the rest depends on the session).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RouteAttrs {
    /// `localpref` (sent on iBGP sessions only).
    pub local_pref: u32,
    /// Communities, sorted ascending as 32-bit values (as MetalLB sorts them), no duplicates.
    pub communities: Vec<u32>,
}

/// Prefix → attributes: what this node announces (or what a peer was sent).
pub type RouteSet = BTreeMap<IpNet, RouteAttrs>;

/// What this node announces over BGP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// The routes.
    pub routes: RouteSet,
    /// (service, IP) pairs announced (for `metallb_speaker_announced{protocol="bgp"}`).
    pub announced: BTreeSet<(String, IpAddr)>,
    /// BGP services not announced from this node and MetalLB's reason, by service key.
    pub skipped: BTreeMap<String, &'static str>,
}

/// The routes node `me` announces for `services` under `config`. Services whose IPs are not
/// in a BGP pool are ignored (layer 2 handles them, or nobody does).
pub fn desired(config: &Config, services: &[L2Service], me: &str) -> Desired {
    let mut out = Desired::default();
    let default_ad = [BgpAdvertisement::default()];
    for svc in services {
        if svc.lb_ips.is_empty() {
            continue;
        }
        let Some(pool) = pool_for(config, &svc.lb_ips) else {
            continue;
        };
        if pool.protocol != Protocol::Bgp {
            continue;
        }
        let has_endpoint = match svc.policy {
            TrafficPolicy::Cluster => !svc.ready_endpoint_nodes.is_empty(),
            TrafficPolicy::Local => svc.ready_endpoint_nodes.contains(me),
        };
        if !has_endpoint {
            let why = match svc.policy {
                TrafficPolicy::Cluster => "noEndpoints",
                TrafficPolicy::Local => "noLocalEndpoints",
            };
            out.skipped.insert(svc.key.clone(), why);
            continue;
        }
        let ads: &[BgpAdvertisement] = if pool.bgp_advertisements.is_empty() {
            &default_ad
        } else {
            &pool.bgp_advertisements
        };
        for ip in &svc.lb_ips {
            out.announced.insert((svc.key.clone(), *ip));
            for ad in ads {
                let len = match ip {
                    IpAddr::V4(_) => ad.aggregation_length(),
                    IpAddr::V6(_) => ad.aggregation_length_v6(),
                };
                let Ok(net) = IpNet::new(*ip, len) else {
                    continue;
                };
                let mut communities: Vec<u32> = ad.community_values.iter().map(|c| c.0).collect();
                communities.sort_unstable();
                communities.dedup();
                let attrs = RouteAttrs {
                    local_pref: ad.localpref,
                    communities,
                };
                merge(&mut out.routes, net.trunc(), attrs);
            }
        }
    }
    out
}

/// Add a route; on a clash keep the highest LOCAL_PREF, and the union of communities
/// among equal ones.
fn merge(routes: &mut RouteSet, net: IpNet, attrs: RouteAttrs) {
    match routes.get_mut(&net) {
        None => {
            routes.insert(net, attrs);
        }
        Some(cur) if attrs.local_pref > cur.local_pref => *cur = attrs,
        Some(cur) if attrs.local_pref == cur.local_pref => {
            let mut all: BTreeSet<u32> = cur.communities.iter().copied().collect();
            all.extend(attrs.communities);
            cur.communities = all.into_iter().collect();
        }
        Some(_) => {}
    }
}

/// What [`updates`] needs to know about one established session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerParams {
    /// Our AS.
    pub local_as: u32,
    /// The peer's AS.
    pub peer_as: u32,
    /// Both sides speak 4-octet AS numbers.
    pub four_octet_as: bool,
    /// IPv4 next hop (the session's local address, IPv4 sessions) when IPv4 unicast was
    /// negotiated.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// IPv6 next hop (the session's local address, IPv6 sessions) when IPv6 unicast was
    /// negotiated.
    pub next_hop_v6: Option<Ipv6Addr>,
}

impl PeerParams {
    fn ibgp(&self) -> bool {
        self.local_as == self.peer_as
    }

    /// Whether this peer can be sent `net`.
    pub fn carries(&self, net: &IpNet) -> bool {
        match net {
            IpNet::V4(_) => self.next_hop_v4.is_some(),
            IpNet::V6(_) => self.next_hop_v6.is_some(),
        }
    }

    /// The codec context of the session.
    pub fn ctx(&self) -> Ctx {
        Ctx {
            four_octet_as: self.four_octet_as,
        }
    }
}

/// The part of `desired` this peer can carry: what it should hold once the UPDATEs from
/// [`updates`] are sent.
pub fn for_peer(desired: &RouteSet, p: &PeerParams) -> RouteSet {
    desired
        .iter()
        .filter(|(net, _)| p.carries(net))
        .map(|(n, a)| (*n, a.clone()))
        .collect()
}

/// The UPDATEs that take a peer holding `sent` to `target` (both as returned by
/// [`for_peer`]): withdrawals first, then announcements grouped by attributes, each message
/// at most 4,096 bytes. Unchanged routes are not re-sent; an empty result means nothing
/// changed.
pub fn updates(sent: &RouteSet, target: &RouteSet, p: &PeerParams) -> Vec<Update> {
    let mut out = Vec::new();
    let ctx = p.ctx();
    let (v4w, v6w): (Vec<IpNet>, Vec<IpNet>) = sent
        .keys()
        .filter(|n| !target.contains_key(n))
        .partition(|n| n.addr().is_ipv4());
    pack(&mut out, ctx, Update::default(), Slot::Withdrawn, v4w);
    let unreach = PathAttrs {
        mp_unreach: Some(MpUnreach {
            afi: AFI_IPV6,
            safi: SAFI_UNICAST,
            withdrawn: Vec::new(),
        }),
        ..Default::default()
    };
    pack(&mut out, ctx, with_attrs(unreach), Slot::MpUnreach, v6w);
    // New or changed routes, grouped by attributes (then by family).
    let mut groups: BTreeMap<&RouteAttrs, (Vec<IpNet>, Vec<IpNet>)> = BTreeMap::new();
    for (net, attrs) in target {
        if sent.get(net) == Some(attrs) {
            continue;
        }
        let g = groups.entry(attrs).or_default();
        if net.addr().is_ipv4() {
            &mut g.0
        } else {
            &mut g.1
        }
        .push(*net);
    }
    for (attrs, (v4, v6)) in groups {
        if let Some(nh) = p.next_hop_v4 {
            let mut a = session_attrs(attrs, p);
            a.next_hop = Some(nh);
            pack(&mut out, ctx, with_attrs(a), Slot::Nlri, v4);
        }
        if let Some(nh) = p.next_hop_v6 {
            let mut a = session_attrs(attrs, p);
            a.mp_reach = Some(MpReach {
                afi: AFI_IPV6,
                safi: SAFI_UNICAST,
                next_hops: vec![IpAddr::V6(nh)],
                nlri: Vec::new(),
            });
            pack(&mut out, ctx, with_attrs(a), Slot::MpReach, v6);
        }
    }
    out
}

fn with_attrs(attrs: PathAttrs) -> Update {
    Update {
        attrs,
        ..Default::default()
    }
}

/// The session-dependent attributes of a route (everything but the next hop).
fn session_attrs(attrs: &RouteAttrs, p: &PeerParams) -> PathAttrs {
    let mut a = PathAttrs {
        origin: Some(Origin::Incomplete),
        ..Default::default()
    };
    if p.ibgp() {
        a.as_path = Some(Vec::new());
        a.local_pref = Some(attrs.local_pref);
    } else if p.four_octet_as || p.local_as <= u32::from(u16::MAX) {
        a.as_path = Some(vec![AsSegment::Sequence(vec![p.local_as])]);
    } else {
        // RFC 6793 §4.2.2: an old (2-octet) peer gets AS_TRANS, the real path in AS4_PATH.
        a.as_path = Some(vec![AsSegment::Sequence(vec![u32::from(AS_TRANS)])]);
        let mut v = vec![2u8, 1];
        v.extend_from_slice(&p.local_as.to_be_bytes());
        a.other.push(RawAttr {
            flags: 0xC0,
            code: 17,
            value: v,
        });
    }
    a.communities = attrs.communities.clone();
    a
}

/// Where the prefixes of an UPDATE go.
#[derive(Clone, Copy)]
enum Slot {
    /// Withdrawn Routes (IPv4).
    Withdrawn,
    /// NLRI (IPv4).
    Nlri,
    /// MP_REACH_NLRI.
    MpReach,
    /// MP_UNREACH_NLRI.
    MpUnreach,
}

impl Slot {
    fn push(self, u: &mut Update, net: IpNet) {
        match (self, net) {
            (Slot::Withdrawn, IpNet::V4(n)) => u.withdrawn.push(n),
            (Slot::Nlri, IpNet::V4(n)) => u.nlri.push(n),
            (Slot::MpReach, n) => u.attrs.mp_reach.iter_mut().for_each(|m| m.nlri.push(n)),
            (Slot::MpUnreach, n) => u
                .attrs
                .mp_unreach
                .iter_mut()
                .for_each(|m| m.withdrawn.push(n)),
            // IPv6 prefixes never go to the IPv4-only slots (callers partition by family).
            (Slot::Withdrawn | Slot::Nlri, IpNet::V6(_)) => {}
        }
    }

    fn len(self, u: &Update) -> usize {
        match self {
            Slot::Withdrawn => u.withdrawn.len(),
            Slot::Nlri => u.nlri.len(),
            Slot::MpReach => u.attrs.mp_reach.as_ref().map_or(0, |m| m.nlri.len()),
            Slot::MpUnreach => u.attrs.mp_unreach.as_ref().map_or(0, |m| m.withdrawn.len()),
        }
    }
}

/// Append `base` filled with `items` (in `slot`) to `out`, starting a new message whenever
/// the next item would push one past [`MAX_LEN`].
fn pack(out: &mut Vec<Update>, ctx: Ctx, base: Update, slot: Slot, items: Vec<IpNet>) {
    if items.is_empty() {
        return;
    }
    // One spare byte: the MP attribute may switch to an extended (2-byte) length.
    let empty = codec::encoded_len(&Message::Update(base.clone()), ctx) + 1;
    let mut cur = base.clone();
    let mut size = empty;
    for net in items {
        let add = codec::prefix_len_bytes(net.prefix_len());
        if size + add > MAX_LEN && slot.len(&cur) > 0 {
            out.push(std::mem::replace(&mut cur, base.clone()));
            size = empty;
        }
        slot.push(&mut cur, net);
        size += add;
    }
    if slot.len(&cur) > 0 {
        out.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AddressRange, Community, Pool};
    use ipnet::Ipv4Net;

    fn pool(name: &str, protocol: Protocol, cidrs: &[&str], ads: Vec<BgpAdvertisement>) -> Pool {
        Pool {
            name: name.into(),
            protocol,
            addresses: cidrs
                .iter()
                .map(|c| AddressRange {
                    raw: c.to_string(),
                    cidrs: vec![c.parse().expect("test cidr")],
                })
                .collect(),
            avoid_buggy_ips: false,
            auto_assign: None,
            aliases: Vec::new(),
            bgp_advertisements: ads,
        }
    }

    fn svc(key: &str, ips: &[&str], policy: TrafficPolicy, nodes: &[&str]) -> L2Service {
        L2Service {
            key: key.into(),
            lb_ips: ips.iter().map(|i| i.parse().expect("test ip")).collect(),
            policy,
            ready_endpoint_nodes: nodes.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn ad(agg: Option<u8>, lp: u32, comms: &[u32]) -> BgpAdvertisement {
        BgpAdvertisement {
            aggregation_length: agg,
            localpref: lp,
            community_values: comms.iter().map(|c| Community(*c)).collect(),
            ..Default::default()
        }
    }

    fn cfg(pools: Vec<Pool>) -> Config {
        Config {
            pools,
            ..Default::default()
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("test net")
    }

    const C1: u32 = (64500 << 16) | 100;
    const C2: u32 = (64500 << 16) | 200;

    #[test]
    fn cluster_services_are_announced_by_every_node_with_any_ready_endpoint() {
        let c = cfg(vec![pool("b", Protocol::Bgp, &["203.0.113.0/24"], vec![])]);
        let s = [svc(
            "ns/a",
            &["203.0.113.10"],
            TrafficPolicy::Cluster,
            &["other"],
        )];
        let d = desired(&c, &s, "me");
        assert_eq!(
            d.routes,
            RouteSet::from([(net("203.0.113.10/32"), RouteAttrs::default())])
        );
        assert!(
            d.announced
                .contains(&("ns/a".into(), "203.0.113.10".parse().unwrap()))
        );
        let none = [svc("ns/a", &["203.0.113.10"], TrafficPolicy::Cluster, &[])];
        let d = desired(&c, &none, "me");
        assert!(d.routes.is_empty());
        assert_eq!(d.skipped.get("ns/a"), Some(&"noEndpoints"));
    }

    #[test]
    fn local_services_are_announced_only_by_nodes_with_a_local_ready_endpoint() {
        let c = cfg(vec![pool("b", Protocol::Bgp, &["203.0.113.0/24"], vec![])]);
        let s = [svc(
            "ns/a",
            &["203.0.113.10"],
            TrafficPolicy::Local,
            &["n1"],
        )];
        assert_eq!(desired(&c, &s, "n1").routes.len(), 1);
        let d = desired(&c, &s, "n2");
        assert!(d.routes.is_empty());
        assert_eq!(d.skipped.get("ns/a"), Some(&"noLocalEndpoints"));
    }

    #[test]
    fn layer2_pools_and_ips_outside_every_pool_are_not_bgp() {
        let c = cfg(vec![
            pool("l", Protocol::Layer2, &["198.51.100.0/24"], vec![]),
            pool("b", Protocol::Bgp, &["203.0.113.0/24"], vec![]),
        ]);
        let s = [
            svc("ns/l2", &["198.51.100.5"], TrafficPolicy::Cluster, &["n"]),
            svc("ns/out", &["192.0.2.1"], TrafficPolicy::Cluster, &["n"]),
        ];
        assert_eq!(desired(&c, &s, "n"), Desired::default());
    }

    #[test]
    fn each_advertisement_gives_its_prefix_with_its_attributes() {
        let c = cfg(vec![pool(
            "b",
            Protocol::Bgp,
            &["203.0.113.0/24", "2001:db8:ff::/64"],
            vec![ad(Some(32), 50, &[C2, C1]), ad(Some(24), 0, &[])],
        )]);
        let s = [svc(
            "ns/a",
            &["203.0.113.10", "2001:db8:ff::10"],
            TrafficPolicy::Cluster,
            &["n"],
        )];
        let d = desired(&c, &s, "n");
        assert_eq!(
            d.routes,
            RouteSet::from([
                (
                    net("203.0.113.10/32"),
                    RouteAttrs {
                        local_pref: 50,
                        communities: vec![C1, C2]
                    }
                ),
                (net("203.0.113.0/24"), RouteAttrs::default()),
                (
                    net("2001:db8:ff::10/128"),
                    RouteAttrs {
                        local_pref: 50,
                        communities: vec![C1, C2]
                    }
                ),
            ])
        );
    }

    #[test]
    fn aggregated_prefixes_shared_by_services_collapse_and_merge_deterministically() {
        let c = cfg(vec![
            pool(
                "a",
                Protocol::Bgp,
                &["203.0.113.0/25"],
                vec![ad(Some(24), 10, &[C1])],
            ),
            pool(
                "b",
                Protocol::Bgp,
                &["203.0.113.128/25"],
                vec![ad(Some(24), 10, &[C2])],
            ),
        ]);
        let s = [
            svc("ns/a", &["203.0.113.1"], TrafficPolicy::Cluster, &["n"]),
            svc("ns/b", &["203.0.113.200"], TrafficPolicy::Cluster, &["n"]),
        ];
        let d = desired(&c, &s, "n");
        assert_eq!(
            d.routes,
            RouteSet::from([(
                net("203.0.113.0/24"),
                RouteAttrs {
                    local_pref: 10,
                    communities: vec![C1, C2]
                }
            )])
        );
    }

    fn ebgp() -> PeerParams {
        PeerParams {
            local_as: 64500,
            peer_as: 64501,
            four_octet_as: true,
            next_hop_v4: Some("198.51.100.1".parse().unwrap()),
            next_hop_v6: None,
        }
    }

    fn attrs(lp: u32, c: &[u32]) -> RouteAttrs {
        RouteAttrs {
            local_pref: lp,
            communities: c.to_vec(),
        }
    }

    #[test]
    fn ebgp_update_has_metallb_attributes() {
        let target = RouteSet::from([(net("203.0.113.10/32"), attrs(50, &[C1]))]);
        let u = updates(&RouteSet::new(), &target, &ebgp());
        assert_eq!(u.len(), 1);
        assert_eq!(
            u[0].nlri,
            vec!["203.0.113.10/32".parse::<Ipv4Net>().unwrap()]
        );
        let a = &u[0].attrs;
        assert_eq!(a.origin, Some(Origin::Incomplete));
        assert_eq!(a.as_path, Some(vec![AsSegment::Sequence(vec![64500])]));
        assert_eq!(a.next_hop, Some("198.51.100.1".parse().unwrap()));
        assert_eq!(a.local_pref, None, "LOCAL_PREF goes to iBGP peers only");
        assert_eq!(a.communities, vec![C1]);
    }

    #[test]
    fn ibgp_update_always_carries_local_pref_and_an_empty_path() {
        let p = PeerParams {
            peer_as: 64500,
            ..ebgp()
        };
        let target = RouteSet::from([(net("203.0.113.10/32"), attrs(0, &[]))]);
        let u = updates(&RouteSet::new(), &target, &p);
        assert_eq!(u[0].attrs.as_path, Some(vec![]));
        assert_eq!(u[0].attrs.local_pref, Some(0));
        assert!(u[0].attrs.communities.is_empty());
    }

    #[test]
    fn a_two_octet_peer_gets_as_trans_and_as4_path_for_a_large_local_as() {
        let p = PeerParams {
            local_as: 4_200_000_000,
            four_octet_as: false,
            ..ebgp()
        };
        let target = RouteSet::from([(net("203.0.113.10/32"), attrs(0, &[]))]);
        let u = updates(&RouteSet::new(), &target, &p);
        assert_eq!(
            u[0].attrs.as_path,
            Some(vec![AsSegment::Sequence(vec![u32::from(AS_TRANS)])])
        );
        let as4 = &u[0].attrs.other[0];
        assert_eq!((as4.flags, as4.code), (0xC0, 17));
        assert_eq!(as4.value, [2, 1, 0xFA, 0x56, 0xEA, 0x00]);
        // A small AS needs no AS4_PATH.
        let small = PeerParams {
            four_octet_as: false,
            ..ebgp()
        };
        let u = updates(&RouteSet::new(), &target, &small);
        assert!(u[0].attrs.other.is_empty());
    }

    #[test]
    fn only_the_delta_is_sent_and_withdrawals_come_first() {
        let sent = RouteSet::from([
            (net("203.0.113.1/32"), attrs(0, &[])),
            (net("203.0.113.2/32"), attrs(0, &[])),
        ]);
        let target = RouteSet::from([
            (net("203.0.113.1/32"), attrs(0, &[])),
            (net("203.0.113.3/32"), attrs(0, &[C1])),
        ]);
        let u = updates(&sent, &target, &ebgp());
        assert_eq!(u.len(), 2);
        assert_eq!(
            u[0].withdrawn,
            vec!["203.0.113.2/32".parse::<Ipv4Net>().unwrap()]
        );
        assert!(u[0].nlri.is_empty());
        assert_eq!(
            u[1].nlri,
            vec!["203.0.113.3/32".parse::<Ipv4Net>().unwrap()]
        );
        assert!(updates(&target, &target, &ebgp()).is_empty());
    }

    #[test]
    fn a_changed_community_re_announces_only_that_prefix() {
        let sent = RouteSet::from([
            (net("203.0.113.1/32"), attrs(0, &[C1])),
            (net("203.0.113.2/32"), attrs(0, &[C1])),
        ]);
        let mut target = sent.clone();
        target.insert(net("203.0.113.2/32"), attrs(0, &[C2]));
        let u = updates(&sent, &target, &ebgp());
        assert_eq!(u.len(), 1);
        assert_eq!(
            u[0].nlri,
            vec!["203.0.113.2/32".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(u[0].attrs.communities, vec![C2]);
    }

    #[test]
    fn many_prefixes_are_packed_into_few_messages_under_4096_bytes() {
        let target: RouteSet = (0..10_000u32)
            .map(|i| {
                let ip = Ipv4Addr::from(0xCB00_0000 + i);
                (IpNet::V4(Ipv4Net::new(ip, 32).unwrap()), attrs(0, &[C1]))
            })
            .collect();
        let u = updates(&RouteSet::new(), &target, &ebgp());
        let total: usize = u.iter().map(|m| m.nlri.len()).sum();
        assert_eq!(total, 10_000);
        for m in &u {
            let len = codec::encoded_len(&Message::Update(m.clone()), ebgp().ctx());
            assert!(len <= MAX_LEN, "{len}");
        }
        // 5 bytes per /32: about 810 per message.
        assert!(u.len() <= 13, "{} messages", u.len());
        let w = updates(&target, &RouteSet::new(), &ebgp());
        assert_eq!(w.iter().map(|m| m.withdrawn.len()).sum::<usize>(), 10_000);
        assert!(w.len() <= 13);
    }

    #[test]
    fn ipv6_goes_as_mp_reach_to_ipv6_sessions_only() {
        let target = RouteSet::from([
            (net("203.0.113.1/32"), attrs(0, &[])),
            (net("2001:db8:ff::10/128"), attrs(0, &[])),
        ]);
        let v4 = ebgp();
        assert_eq!(for_peer(&target, &v4).len(), 1);
        let v6 = PeerParams {
            next_hop_v4: None,
            next_hop_v6: Some("2001:db8:1::1".parse().unwrap()),
            ..ebgp()
        };
        let t6 = for_peer(&target, &v6);
        let u = updates(&RouteSet::new(), &t6, &v6);
        assert_eq!(u.len(), 1);
        assert!(u[0].nlri.is_empty() && u[0].attrs.next_hop.is_none());
        let mp = u[0].attrs.mp_reach.as_ref().expect("mp_reach");
        assert_eq!(mp.nlri, vec![net("2001:db8:ff::10/128")]);
        assert_eq!(
            mp.next_hops,
            vec!["2001:db8:1::1".parse::<IpAddr>().unwrap()]
        );
        let w = updates(&t6, &RouteSet::new(), &v6);
        assert_eq!(
            w[0].attrs.mp_unreach.as_ref().map(|m| m.withdrawn.clone()),
            Some(vec![net("2001:db8:ff::10/128")])
        );
    }
}
