//! Raw legacy YAML → typed [`Config`], rule by rule, in MetalLB 0.12's order:
//! bfd-profiles, peers (parse, bfd reference, duplicate), bgp-communities, address-pools
//! (parse, duplicate name, overlap). The first error aborts. Pure.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde_saphyr::Spanned;

use super::addr;
use super::duration::{format_go_seconds, parse_go_duration};
use super::error::{ConfigError, ErrorKind, Object, Pos, Result};
use super::legacy::{
    Int, RawBfdProfile, RawBgpAdvertisement, RawConfig, RawNodeSelector, RawPeer, RawPool, SStr,
};
use super::selector::{
    NodeSelector, Operator, Requirement, check_label_key, check_label_value, check_requirement,
};
use super::{
    AddressRange, BfdProfile, BgpAdvertisement, Community, Config, DEFAULT_HOLD_TIME_SECS, Peer,
    Pool, Protocol,
};

/// Position of a spanned value, if the parser recorded one.
pub(crate) fn pos_of<T>(s: &Spanned<T>) -> Option<Pos> {
    let l = s.referenced;
    (l.line() > 0).then(|| Pos {
        line: l.line(),
        column: l.column(),
    })
}

/// Build the typed config from the raw document.
pub fn from_raw(raw: &RawConfig) -> Result<Config> {
    let bfd_profiles = parse_bfd_profiles(raw.bfd_profiles.as_deref().unwrap_or_default())?;
    let peers = parse_peers(raw.peers.as_deref().unwrap_or_default(), &bfd_profiles)?;
    let bgp_communities = parse_aliases(raw.bgp_communities.as_ref())?;
    let mut pools = parse_pools(
        raw.address_pools.as_deref().unwrap_or_default(),
        &bgp_communities,
    )?;
    add_object_name_aliases(&mut pools);
    Ok(Config {
        peers,
        bgp_communities,
        pools,
        bfd_profiles,
    })
}

/// A pool whose name is not a valid Kubernetes object name also answers to the name
/// `metallb-migrate` gives its IPAddressPool ([`super::names::normalize`]), unless another
/// pool is called that: Services already patched to the new name keep their IP while the
/// ConfigMap is still (or again) the config source.
fn add_object_name_aliases(pools: &mut [Pool]) {
    let names: std::collections::BTreeSet<String> = pools.iter().map(|p| p.name.clone()).collect();
    for p in pools {
        if let Some(n) = super::names::normalize(&p.name)
            && n != p.name
            && !names.contains(&n)
        {
            p.aliases = vec![n];
        }
    }
}

/// Builds located errors for one object.
struct At {
    object: Option<Object>,
    fallback: Option<Pos>,
}

impl At {
    fn err(
        &self,
        field: &str,
        value: Option<&str>,
        kind: ErrorKind,
        pos: Option<Pos>,
    ) -> ConfigError {
        ConfigError {
            object: self.object.clone(),
            field: (!field.is_empty()).then(|| field.to_string()),
            value: value.map(str::to_string),
            kind,
            pos: pos.or(self.fallback),
        }
    }

    fn on(&self, field: &str, s: &SStr, kind: ErrorKind) -> ConfigError {
        self.err(field, Some(&s.value), kind, pos_of(s))
    }
}

// ---------------------------------------------------------------------------------------------
// bfd-profiles

fn parse_bfd_profiles(raw: &[Spanned<Option<RawBfdProfile>>]) -> Result<Vec<BfdProfile>> {
    let mut out: Vec<BfdProfile> = Vec::with_capacity(raw.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    let empty = RawBfdProfile::default();
    for (i, item) in raw.iter().enumerate() {
        let r = item.value.as_ref().unwrap_or(&empty);
        let name = r.name.as_ref().map(|n| n.value.clone()).unwrap_or_default();
        let at = At {
            object: Some(Object::BfdProfile {
                index: i + 1,
                name: Some(name.clone()),
            }),
            fallback: pos_of(item),
        };
        if name.is_empty() {
            return Err(at.err(
                "name",
                None,
                ErrorKind::Missing,
                r.name.as_ref().and_then(pos_of),
            ));
        }
        let range = |field: &str,
                     v: &Option<Spanned<Int<u32>>>,
                     min: u32,
                     max: u32|
         -> Result<Option<u32>> {
            match v {
                Some(s) if s.value.0 < min || s.value.0 > max => Err(at.err(
                    field,
                    Some(&s.value.0.to_string()),
                    ErrorKind::OutOfRange {
                        min: min.into(),
                        max: max.into(),
                    },
                    pos_of(s),
                )),
                Some(s) => Ok(Some(s.value.0)),
                None => Ok(None),
            }
        };
        let p = BfdProfile {
            name: name.clone(),
            receive_interval: range("receive-interval", &r.receive_interval, 10, 60000)?,
            transmit_interval: range("transmit-interval", &r.transmit_interval, 10, 60000)?,
            detect_multiplier: range("detect-multiplier", &r.detect_multiplier, 2, 255)?,
            echo_interval: range("echo-interval", &r.echo_interval, 10, 60000)?,
            echo_mode: r.echo_mode.is_some_and(|b| b.0),
            passive_mode: r.passive_mode.is_some_and(|b| b.0),
            minimum_ttl: range("minimum-ttl", &r.minimum_ttl, 1, 254)?,
        };
        if let Some(first) = seen.get(&name) {
            return Err(at.err(
                "name",
                None,
                ErrorKind::DuplicateBfdProfile(*first),
                r.name.as_ref().and_then(pos_of),
            ));
        }
        seen.insert(name, i + 1);
        out.push(p);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// peers

fn parse_peers(raw: &[Spanned<Option<RawPeer>>], bfd: &[BfdProfile]) -> Result<Vec<Peer>> {
    let mut out: Vec<Peer> = Vec::with_capacity(raw.len());
    let empty = RawPeer::default();
    for (i, item) in raw.iter().enumerate() {
        let r = item.value.as_ref().unwrap_or(&empty);
        let at = At {
            object: Some(Object::Peer {
                index: i + 1,
                address: r.peer_address.as_ref().map(|a| a.value.clone()),
            }),
            fallback: pos_of(item),
        };
        let peer = parse_peer(r, &at)?;
        if let Some(name) = &peer.bfd_profile
            && !bfd.iter().any(|b| &b.name == name)
        {
            let s = r.bfd_profile.as_ref();
            return Err(at.err(
                "bfd-profile",
                Some(name),
                ErrorKind::UnknownBfdProfile,
                s.and_then(pos_of),
            ));
        }
        // MetalLB 0.10+: a peer deep-equal to an earlier one (defaults included) is an error.
        if let Some(j) = out.iter().position(|p| p.effective_eq(&peer)) {
            return Err(at.err("", None, ErrorKind::DuplicatePeer(j + 1), pos_of(item)));
        }
        out.push(peer);
    }
    Ok(out)
}

fn parse_ip(at: &At, field: &str, s: &SStr) -> Result<IpAddr> {
    super::addr::parse_ip(s.value.trim()).ok_or_else(|| at.on(field, s, ErrorKind::InvalidIp))
}

/// Parse a Go duration field and truncate it to whole seconds (may be negative).
fn parse_secs(at: &At, field: &str, s: &SStr) -> Result<i128> {
    parse_go_duration(&s.value)
        .map(|ns| ns / 1_000_000_000)
        .map_err(|e| at.on(field, s, ErrorKind::InvalidDuration(e)))
}

fn parse_peer(r: &RawPeer, at: &At) -> Result<Peer> {
    let my_asn = match &r.my_asn {
        None => return Err(at.err("my-asn", None, ErrorKind::Missing, None)),
        Some(s) if s.value.0 == 0 => {
            return Err(at.err("my-asn", Some("0"), ErrorKind::Zero, pos_of(s)));
        }
        Some(s) => s.value.0,
    };
    let peer_asn = match &r.peer_asn {
        None => return Err(at.err("peer-asn", None, ErrorKind::Missing, None)),
        Some(s) if s.value.0 == 0 => {
            return Err(at.err("peer-asn", Some("0"), ErrorKind::Zero, pos_of(s)));
        }
        Some(s) => s.value.0,
    };
    let peer_address = match &r.peer_address {
        None => return Err(at.err("peer-address", None, ErrorKind::Missing, None)),
        Some(s) => parse_ip(at, "peer-address", s)?,
    };
    let hold_time_secs = match r.hold_time.as_ref().filter(|s| !s.value.is_empty()) {
        None => DEFAULT_HOLD_TIME_SECS,
        Some(s) => {
            let secs = parse_secs(at, "hold-time", s)?;
            if secs != 0 && secs < 3 {
                return Err(at.on("hold-time", s, ErrorKind::HoldTimeTooShort));
            }
            secs as u64
        }
    };
    let keepalive_time_secs = match r.keepalive_time.as_ref().filter(|s| !s.value.is_empty()) {
        None => None,
        Some(s) => {
            let secs = parse_secs(at, "keepalive-time", s)?;
            if secs < 0 {
                return Err(at.on("keepalive-time", s, ErrorKind::Negative));
            }
            if secs as u64 > hold_time_secs {
                return Err(at.on(
                    "keepalive-time",
                    s,
                    ErrorKind::KeepaliveAboveHold {
                        hold: format_go_seconds(hold_time_secs),
                    },
                ));
            }
            Some(secs as u64)
        }
    };
    let opt_ip = |field: &str, v: &Option<SStr>| -> Result<Option<IpAddr>> {
        match v.as_ref().filter(|s| !s.value.is_empty()) {
            None => Ok(None),
            Some(s) => parse_ip(at, field, s).map(Some),
        }
    };
    let router_id = opt_ip("router-id", &r.router_id)?;
    let source_address = opt_ip("source-address", &r.source_address)?;
    let node_selectors = r
        .node_selectors
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(j, s)| parse_node_selector(at, j + 1, s))
        .collect::<Result<Vec<_>>>()?;
    let ebgp_multihop = r.ebgp_multihop.as_ref().is_some_and(|b| b.value.0);
    if ebgp_multihop && my_asn == peer_asn {
        return Err(at.err(
            "ebgp-multihop",
            None,
            ErrorKind::EbgpMultihopOnIbgp,
            r.ebgp_multihop.as_ref().and_then(pos_of),
        ));
    }
    Ok(Peer {
        my_asn,
        peer_asn,
        peer_address,
        peer_port: r.peer_port.as_ref().map(|p| p.value.0),
        hold_time_secs,
        keepalive_time_secs,
        router_id,
        source_address,
        node_selectors,
        password: r.password.clone().filter(|p| !p.is_empty()),
        bfd_profile: r
            .bfd_profile
            .as_ref()
            .map(|s| s.value.clone())
            .filter(|s| !s.is_empty()),
        ebgp_multihop,
    })
}

fn parse_node_selector(
    at: &At,
    n: usize,
    item: &Spanned<Option<RawNodeSelector>>,
) -> Result<NodeSelector> {
    let field = format!("node-selectors[{n}]");
    let fail = |msg: String| at.err(&field, None, ErrorKind::InvalidSelector(msg), pos_of(item));
    let Some(r) = &item.value else {
        return Ok(NodeSelector::default());
    };
    let mut sel = NodeSelector::default();
    for (k, v) in r.match_labels.iter().flatten() {
        let v = v.clone().unwrap_or_default();
        check_label_key(k).map_err(|e| fail(format!("match-labels: {e}")))?;
        check_label_value(&v).map_err(|e| fail(format!("match-labels: {e}")))?;
        sel.match_labels.insert(k.clone(), v);
    }
    for (j, e) in r.match_expressions.iter().flatten().enumerate() {
        let efield = format!("{field}.match-expressions[{}]", j + 1);
        let efail = |msg: String| at.err(&efield, None, ErrorKind::InvalidSelector(msg), pos_of(e));
        let Some(e) = &e.value else {
            return Err(efail("key is required".into()));
        };
        let key = e
            .key
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| efail("key is required".into()))?;
        let op_text = e.operator.clone().unwrap_or_default();
        if op_text.is_empty() {
            return Err(efail("operator is required".into()));
        }
        let operator = Operator::parse(&op_text).ok_or_else(|| {
            efail(format!(
                "{op_text:?} is not a valid operator (expected In, NotIn, Exists or DoesNotExist)"
            ))
        })?;
        let req = Requirement {
            key,
            operator,
            values: e.values.clone().unwrap_or_default(),
        };
        check_requirement(&req).map_err(efail)?;
        sel.match_expressions.push(req);
    }
    Ok(sel)
}

// ---------------------------------------------------------------------------------------------
// bgp-communities

fn parse_aliases(raw: Option<&BTreeMap<String, SStr>>) -> Result<BTreeMap<String, Community>> {
    let mut out = BTreeMap::new();
    for (alias, v) in raw.into_iter().flatten() {
        let at = At {
            object: Some(Object::CommunityAlias {
                alias: alias.clone(),
            }),
            fallback: None,
        };
        let c: Community = v
            .value
            .parse()
            .map_err(|e| at.on("", v, ErrorKind::InvalidCommunity(e)))?;
        out.insert(alias.clone(), c);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// address-pools

fn parse_pools(
    raw: &[Spanned<Option<RawPool>>],
    aliases: &BTreeMap<String, Community>,
) -> Result<Vec<Pool>> {
    let mut out: Vec<Pool> = Vec::with_capacity(raw.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut index = super::validate::OverlapIndex::default();
    let empty = RawPool::default();
    for (i, item) in raw.iter().enumerate() {
        let r = item.value.as_ref().unwrap_or(&empty);
        let at = At {
            object: Some(Object::Pool {
                index: i + 1,
                name: r.name.as_ref().map(|n| n.value.clone()),
            }),
            fallback: pos_of(item),
        };
        let pool = parse_pool(r, &at, aliases)?;
        if let Some(first) = names.get(&pool.name) {
            return Err(at.err(
                "name",
                None,
                ErrorKind::DuplicatePoolName(*first),
                r.name.as_ref().and_then(pos_of),
            ));
        }
        names.insert(pool.name.clone(), i + 1);
        for (j, entry) in pool.addresses.iter().enumerate() {
            for cidr in &entry.cidrs {
                if let Err((other, other_index)) = index.insert(*cidr, i + 1) {
                    let other_pool = if other_index == i + 1 {
                        pool.name.clone()
                    } else {
                        out.get(other_index - 1)
                            .map(|p| p.name.clone())
                            .unwrap_or_default()
                    };
                    let s = r.addresses.as_ref().and_then(|a| a.get(j));
                    return Err(at.err(
                        &format!("addresses[{}]", j + 1),
                        Some(&entry.raw),
                        ErrorKind::Overlap {
                            cidr: cidr.to_string(),
                            other: other.to_string(),
                            other_index,
                            other_pool,
                        },
                        s.and_then(pos_of),
                    ));
                }
            }
        }
        out.push(pool);
    }
    Ok(out)
}

fn parse_pool(r: &RawPool, at: &At, aliases: &BTreeMap<String, Community>) -> Result<Pool> {
    let name = r.name.as_ref().map(|n| n.value.clone()).unwrap_or_default();
    if name.is_empty() {
        return Err(at.err(
            "name",
            None,
            ErrorKind::Missing,
            r.name.as_ref().and_then(pos_of),
        ));
    }
    let raw_addrs = r.addresses.as_deref().unwrap_or_default();
    if raw_addrs.is_empty() {
        return Err(at.err("addresses", None, ErrorKind::NoAddresses, None));
    }
    let mut addresses = Vec::with_capacity(raw_addrs.len());
    for (j, s) in raw_addrs.iter().enumerate() {
        let cidrs = addr::parse_entry(&s.value)
            .map_err(|k| at.on(&format!("addresses[{}]", j + 1), s, k))?;
        addresses.push(AddressRange {
            raw: s.value.clone(),
            cidrs,
        });
    }
    let protocol = match r.protocol.as_ref() {
        None => return Err(at.err("protocol", None, ErrorKind::Missing, None)),
        Some(s) => match s.value.as_str() {
            "layer2" => Protocol::Layer2,
            "bgp" => Protocol::Bgp,
            "" => return Err(at.on("protocol", s, ErrorKind::Missing)),
            _ => return Err(at.on("protocol", s, ErrorKind::UnknownProtocol)),
        },
    };
    let raw_ads = r.bgp_advertisements.as_deref().unwrap_or_default();
    let bgp_advertisements = match protocol {
        Protocol::Layer2 if !raw_ads.is_empty() => {
            return Err(at.err(
                "bgp-advertisements",
                None,
                ErrorKind::AdvertisementsOnLayer2,
                raw_ads.first().and_then(pos_of),
            ));
        }
        Protocol::Layer2 => Vec::new(),
        // No list: one default advertisement and, as in MetalLB, nothing to validate.
        Protocol::Bgp if raw_ads.is_empty() => vec![BgpAdvertisement::default()],
        Protocol::Bgp => parse_advertisements(raw_ads, &addresses, at, aliases)?,
    };
    Ok(Pool {
        aliases: Vec::new(),
        name,
        protocol,
        addresses,
        avoid_buggy_ips: r.avoid_buggy_ips.is_some_and(|b| b.0),
        auto_assign: r.auto_assign.map(|b| b.0),
        bgp_advertisements,
    })
}

fn parse_advertisements(
    raw: &[Spanned<Option<RawBgpAdvertisement>>],
    addresses: &[AddressRange],
    at: &At,
    aliases: &BTreeMap<String, Community>,
) -> Result<Vec<BgpAdvertisement>> {
    let empty = RawBgpAdvertisement::default();
    let mut out = Vec::with_capacity(raw.len());
    for (k, item) in raw.iter().enumerate() {
        let r = item.value.as_ref().unwrap_or(&empty);
        let field = format!("bgp-advertisements[{}]", k + 1);
        let length = |name: &str, v: &Option<Spanned<Int<i64>>>, max: u8| -> Result<Option<u8>> {
            match v {
                None => Ok(None),
                Some(s) if s.value.0 < 0 || s.value.0 > i64::from(max) => Err(at.err(
                    &format!("{field}.{name}"),
                    Some(&s.value.0.to_string()),
                    ErrorKind::OutOfRange {
                        min: 0,
                        max: max.into(),
                    },
                    pos_of(s),
                )),
                Some(s) => Ok(Some(s.value.0 as u8)),
            }
        };
        let agg4 = length("aggregation-length", &r.aggregation_length, 32)?;
        let agg6 = length("aggregation-length-v6", &r.aggregation_length_v6, 128)?;
        // MetalLB 0.12: per address entry, the aggregation may not be wider than the widest
        // CIDR the entry produced.
        let ad = BgpAdvertisement {
            aggregation_length: agg4,
            aggregation_length_v6: agg6,
            localpref: r.localpref.map_or(0, |l| l.0),
            communities: Vec::new(),
            community_values: Vec::new(),
        };
        for (j, entry) in addresses.iter().enumerate() {
            let Some(widest) = entry.widest_prefix() else {
                continue;
            };
            let (len, name, s) = if entry.is_ipv4() {
                (
                    ad.aggregation_length(),
                    "aggregation-length",
                    &r.aggregation_length,
                )
            } else {
                (
                    ad.aggregation_length_v6(),
                    "aggregation-length-v6",
                    &r.aggregation_length_v6,
                )
            };
            if len < widest {
                return Err(at.err(
                    &format!("{field}.{name}"),
                    None,
                    ErrorKind::AggregationTooShort {
                        length: i64::from(len),
                        prefix: widest,
                        entry: j + 1,
                        addresses: entry.raw.clone(),
                    },
                    s.as_ref().and_then(pos_of).or_else(|| pos_of(item)),
                ));
            }
        }
        let mut communities = Vec::new();
        let mut values = Vec::new();
        for (c, s) in r.communities.iter().flatten().enumerate() {
            let cfield = format!("{field}.communities[{}]", c + 1);
            if communities.contains(&s.value) {
                return Err(at.on(&cfield, s, ErrorKind::DuplicateCommunity));
            }
            let v = match aliases.get(&s.value) {
                Some(v) => *v,
                None => s.value.parse::<Community>().map_err(|e| {
                    at.on(
                        &cfield,
                        s,
                        ErrorKind::InvalidCommunity(format!(
                            "not a bgp-communities alias and not a community: {e}"
                        )),
                    )
                })?,
            };
            communities.push(s.value.clone());
            values.push(v);
        }
        values.sort_unstable();
        values.dedup();
        let ad = BgpAdvertisement {
            communities,
            community_values: values,
            ..ad
        };
        if let Some(j) = raw[..k]
            .iter()
            .position(|o| o.value.as_ref().unwrap_or(&empty).as_written() == r.as_written())
        {
            return Err(at.err(
                &field,
                None,
                ErrorKind::DuplicateAdvertisement(j + 1),
                pos_of(item),
            ));
        }
        out.push(ad);
    }
    Ok(out)
}
