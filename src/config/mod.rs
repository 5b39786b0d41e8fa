//! The configuration model everything else consumes. Pure: no kube, no tokio, no I/O.
//!
//! Two layers, as in MetalLB: [`legacy`] mirrors the legacy `config` ConfigMap YAML exactly
//! (strict, YAML 1.1 scalars); [`parse`] turns it into the typed [`Config`] below, applying every
//! validation rule of MetalLB 0.12 in its order (bfd-profiles, peers, bgp-communities,
//! address-pools). Errors are located ([`ConfigError`]). [`input`] accepts the three forms
//! users feed (bare payload, whole ConfigMap manifest, Helm values with `configInline`) and
//! computes the config identity (sha256 of the payload bytes) used by hot reload.

pub mod addr;
pub mod crd;
pub mod duration;
pub mod error;
pub mod input;
pub mod legacy;
pub mod names;
pub mod parse;
pub mod selector;
pub mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::Serialize;

pub use error::{ConfigError, ErrorKind, Object, Pos, Result};
pub use input::parse_payload;
pub use input::{InputForm, Loaded, load};
pub use selector::{NodeSelector, Operator, Requirement};

/// Default BGP hold time (MetalLB: 90s).
pub const DEFAULT_HOLD_TIME_SECS: u64 = 90;
/// Default BGP port.
pub const DEFAULT_PEER_PORT: u16 = 179;

/// The typed configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Config {
    /// BGP peers in config order.
    pub peers: Vec<Peer>,
    /// `bgp-communities` aliases, sorted by alias.
    pub bgp_communities: BTreeMap<String, Community>,
    /// Address pools in config order.
    pub pools: Vec<Pool>,
    /// BFD profiles in config order.
    pub bfd_profiles: Vec<BfdProfile>,
}

impl Config {
    /// The pool with this name.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The same config with every order that carries no meaning fixed (pools and BFD profiles
    /// by name, peers and each pool's advertisements by their canonical JSON) and every default
    /// written out (`auto-assign` true, aggregation lengths 32 and 128, peer port 179), as the
    /// apiserver writes the CRD schema's defaults into the objects; advertisements equal after
    /// that count once. A ConfigMap and the objects read back from the apiserver (listed by
    /// name, defaulted) compare equal this way.
    pub fn canonical(&self) -> Config {
        fn json<T: Serialize>(v: &T) -> String {
            serde_json::to_string(v).unwrap_or_default()
        }
        let mut c = self.clone();
        c.pools.sort_by(|a, b| a.name.cmp(&b.name));
        for p in &mut c.pools {
            p.auto_assign = Some(p.auto_assign());
            for a in &mut p.bgp_advertisements {
                a.aggregation_length = Some(a.aggregation_length());
                a.aggregation_length_v6 = Some(a.aggregation_length_v6());
            }
            p.bgp_advertisements.sort_by_cached_key(json);
            p.bgp_advertisements.dedup();
        }
        for p in &mut c.peers {
            p.peer_port = Some(p.port());
        }
        c.peers.sort_by_cached_key(json);
        c.bfd_profiles.sort_by(|a, b| a.name.cmp(&b.name));
        c
    }

    /// The semantic identity of the config: hex sha256 of the canonical JSON of
    /// [`Config::canonical`] without pool aliases (same pools, addresses, peers,
    /// advertisements, communities and BFD profiles give the same hash, whatever the source).
    /// `metallb-migrate --from-cluster --apply` switches sources only when the objects it
    /// wrote read back with the ConfigMap's identity.
    pub fn semantic_hash(&self) -> String {
        let mut c = self.canonical();
        for p in &mut c.pools {
            p.aliases.clear();
        }
        let bytes = serde_json::to_vec(&c).unwrap_or_default();
        input::sha256_hex(&bytes)
    }
}

/// A BGP peer (`peers[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// Local ASN.
    pub my_asn: u32,
    /// Peer ASN.
    pub peer_asn: u32,
    /// Peer address.
    pub peer_address: IpAddr,
    /// `peer-port` as written (`None` or 0 in the YAML means 179).
    pub peer_port: Option<u16>,
    /// Hold time in whole seconds (default 90; 0 disables keepalives).
    pub hold_time_secs: u64,
    /// `keepalive-time` in whole seconds, if written (default: hold time / 3).
    pub keepalive_time_secs: Option<u64>,
    /// Router ID, if written.
    pub router_id: Option<IpAddr>,
    /// Source address, if written (0.11+).
    pub source_address: Option<IpAddr>,
    /// Node selectors (OR of selectors; empty = all nodes).
    pub node_selectors: Vec<NodeSelector>,
    /// TCP-MD5 password, if written.
    pub password: Option<String>,
    /// Referenced BFD profile, if written.
    pub bfd_profile: Option<String>,
    /// eBGP multi-hop.
    pub ebgp_multihop: bool,
}

impl Peer {
    /// The TCP port to connect to.
    pub fn port(&self) -> u16 {
        match self.peer_port {
            Some(p) if p != 0 => p,
            _ => DEFAULT_PEER_PORT,
        }
    }

    /// The keepalive interval in seconds (written value, else hold time / 3).
    pub fn keepalive_secs(&self) -> u64 {
        self.keepalive_time_secs.unwrap_or(self.hold_time_secs / 3)
    }

    /// Equality with defaults applied (MetalLB compares parsed peers, where port and
    /// keepalive are materialized): used for the duplicate-peer rule.
    pub fn effective_eq(&self, other: &Peer) -> bool {
        let norm = |p: &Peer| Peer {
            peer_port: Some(p.port()),
            keepalive_time_secs: Some(p.keepalive_secs()),
            ..p.clone()
        };
        norm(self) == norm(other)
    }
}

/// A BGP community value (RFC 1997), printed `A:B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Community(pub u32);

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xffff)
    }
}

impl Serialize for Community {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Community {
    type Err = String;

    /// Parse `A:B` with both parts decimal uint16 (as MetalLB does with `strconv.ParseUint`).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut parts = s.split(':');
        let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("{s:?} is not of the form A:B"));
        };
        let half = |p: &str, which: &str| -> std::result::Result<u32, String> {
            if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
                return Err(format!("{which} part {p:?} of {s:?} is not a number"));
            }
            match p.parse::<u16>() {
                Ok(v) => Ok(u32::from(v)),
                Err(_) => Err(format!(
                    "{which} part {p:?} of {s:?} is out of range 0-65535"
                )),
            }
        };
        Ok(Community((half(a, "first")? << 16) | half(b, "second")?))
    }
}

/// Announcement protocol of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// ARP/NDP.
    Layer2,
    /// BGP.
    Bgp,
}

impl Protocol {
    /// The legacy spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Layer2 => "layer2",
            Protocol::Bgp => "bgp",
        }
    }
}

/// One `addresses[]` entry: the text as written and the CIDRs it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressRange {
    /// As written in the config (migrated verbatim).
    pub raw: String,
    /// Minimal ascending CIDRs (host bits masked, ranges summarized).
    pub cidrs: Vec<IpNet>,
}

impl AddressRange {
    /// Shortest prefix length among the entry's CIDRs (the widest block).
    pub fn widest_prefix(&self) -> Option<u8> {
        self.cidrs.iter().map(IpNet::prefix_len).min()
    }

    /// Whether the entry is IPv4.
    pub fn is_ipv4(&self) -> bool {
        matches!(self.cidrs.first(), Some(IpNet::V4(_)))
    }
}

/// An address pool (`address-pools[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    /// Pool name.
    pub name: String,
    /// Announcement protocol.
    pub protocol: Protocol,
    /// Address entries in config order.
    pub addresses: Vec<AddressRange>,
    /// Skip `.0` and `.255` addresses when allocating.
    pub avoid_buggy_ips: bool,
    /// `auto-assign` as written (absent means true).
    pub auto_assign: Option<bool>,
    /// BGP advertisements (bgp pools only; a bgp pool with none written has one default).
    pub bgp_advertisements: Vec<BgpAdvertisement>,
    /// Other names Services may ask for this pool by: its legacy name when it was migrated to
    /// a metallb.io IPAddressPool under a new one (`metallb-rs.io/legacy-name`). Empty in
    /// legacy configs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

impl Pool {
    /// Whether the pool takes part in automatic allocation.
    pub fn auto_assign(&self) -> bool {
        self.auto_assign.unwrap_or(true)
    }

    /// All CIDRs of the pool in config order.
    pub fn cidrs(&self) -> impl Iterator<Item = &IpNet> {
        self.addresses.iter().flat_map(|a| a.cidrs.iter())
    }
}

/// A BGP advertisement of a pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BgpAdvertisement {
    /// `aggregation-length` as written (effective default 32).
    pub aggregation_length: Option<u8>,
    /// `aggregation-length-v6` as written (effective default 128).
    pub aggregation_length_v6: Option<u8>,
    /// LOCAL_PREF (0 = not set; sent to iBGP peers only).
    pub localpref: u32,
    /// Communities as written (aliases stay names), in order.
    pub communities: Vec<String>,
    /// The resolved community values, sorted and deduplicated.
    pub community_values: Vec<Community>,
}

impl BgpAdvertisement {
    /// Effective IPv4 aggregation length.
    pub fn aggregation_length(&self) -> u8 {
        self.aggregation_length.unwrap_or(32)
    }

    /// Effective IPv6 aggregation length.
    pub fn aggregation_length_v6(&self) -> u8 {
        self.aggregation_length_v6.unwrap_or(128)
    }
}

/// A BFD profile (`bfd-profiles[]`, 0.12).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BfdProfile {
    /// Profile name.
    pub name: String,
    /// Receive interval in ms (10–60000).
    pub receive_interval: Option<u32>,
    /// Transmit interval in ms (10–60000).
    pub transmit_interval: Option<u32>,
    /// Detect multiplier (2–255).
    pub detect_multiplier: Option<u32>,
    /// Echo interval in ms (10–60000).
    pub echo_interval: Option<u32>,
    /// Echo mode.
    pub echo_mode: bool,
    /// Passive mode.
    pub passive_mode: bool,
    /// Minimum TTL (1–254).
    pub minimum_ttl: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn community_round_trips() {
        let c: Community = "64512:1234".parse().unwrap();
        assert_eq!(c.0, 0xfc00_04d2);
        assert_eq!(c.to_string(), "64512:1234");
        assert_eq!("1234:2345".parse::<Community>().unwrap().0, 0x04d2_0929);
    }

    #[test]
    fn semantic_hash_ignores_order_defaults_and_aliases() {
        let a = input::parse_payload(
            "peers:\n- {my-asn: 1, peer-asn: 2, peer-address: 192.0.2.1}\n- {my-asn: 1, peer-asn: 2, peer-address: 192.0.2.2, peer-port: 179}\naddress-pools:\n- {name: x, protocol: bgp, addresses: [192.0.2.0/28]}\n- {name: y, protocol: layer2, auto-assign: true, addresses: [198.51.100.0/28]}\n",
        )
        .unwrap();
        let b = input::parse_payload(
            "peers:\n- {my-asn: 1, peer-asn: 2, peer-address: 192.0.2.2}\n- {my-asn: 1, peer-asn: 2, peer-address: 192.0.2.1}\naddress-pools:\n- {name: y, protocol: layer2, addresses: [198.51.100.0/28]}\n- {name: x, protocol: bgp, addresses: [192.0.2.0/28], bgp-advertisements: [{aggregation-length: 32}]}\n",
        )
        .unwrap();
        assert_ne!(a, b);
        assert_eq!(a.semantic_hash(), b.semantic_hash());
        let mut c = b.clone();
        c.pools[0].aliases = vec!["Y".into()];
        assert_eq!(c.semantic_hash(), b.semantic_hash());
        c.pools[0].addresses.pop();
        assert_ne!(c.semantic_hash(), b.semantic_hash());
    }

    #[test]
    fn community_rejects_bad_text() {
        for bad in [
            "1234", "1:2:3", "65536:1", "1:65536", "+1:2", "a:b", ":1", "",
        ] {
            assert!(bad.parse::<Community>().is_err(), "{bad} accepted");
        }
    }
}
