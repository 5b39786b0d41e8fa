//! Raw serde mirror of MetalLB's legacy `config` YAML (0.8–0.12 union of keys). Pure.
//!
//! MetalLB decoded this with yaml.v2 `UnmarshalStrict`: unknown keys and duplicate keys are
//! errors, YAML 1.1 scalars (`yes`/`no`/`on`/`off`, `0x` hex, leading-`0` octal) are read.
//! The BGP advertisement keys `localpref` and `communities` have no dash (Go field names
//! lower-cased by yaml.v2); every other key is dashed.

use std::collections::BTreeMap;

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_saphyr::Spanned;

/// A string-valued scalar with its position.
pub type SStr = Spanned<String>;

/// An integer scalar read the way yaml.v2 reads it into a Go integer field: plain integers
/// (decimal, `0x` hex, leading-`0` octal, `_` separators) and floats with an integral value are
/// accepted; quoted strings (`"64512"`) and booleans are type errors, as in MetalLB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int<T>(pub T);

impl<'de, T> Deserialize<'de> for Int<T>
where
    T: TryFrom<i128>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: TryFrom<i128>> V<T> {
            fn fit<E: de::Error>(v: i128) -> Result<Int<T>, E> {
                T::try_from(v).map(Int).map_err(|_| {
                    E::custom(format!(
                        "integer {v} is out of range for {}",
                        std::any::type_name::<T>()
                    ))
                })
            }
        }
        impl<T: TryFrom<i128>> Visitor<'_> for V<T> {
            type Value = Int<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an unquoted integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Self::fit(i128::from(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Self::fit(i128::from(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
                Self::fit(i128::try_from(v).unwrap_or(i128::MAX))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
                Self::fit(v)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e30 {
                    Self::fit(v as i128)
                } else {
                    Err(E::invalid_type(de::Unexpected::Float(v), &self))
                }
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A boolean scalar: YAML 1.1 spellings (`true`, `yes`, `on` …) but not quoted strings, as in
/// yaml.v2 strict decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bool(pub bool);

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Bool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an unquoted boolean")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Bool, E> {
                Ok(Bool(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// The whole `config` payload.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawConfig {
    pub peers: Option<Vec<Spanned<Option<RawPeer>>>>,
    pub bgp_communities: Option<BTreeMap<String, SStr>>,
    pub address_pools: Option<Vec<Spanned<Option<RawPool>>>>,
    pub bfd_profiles: Option<Vec<Spanned<Option<RawBfdProfile>>>>,
}

/// `peers[]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawPeer {
    pub my_asn: Option<Spanned<Int<u32>>>,
    pub peer_asn: Option<Spanned<Int<u32>>>,
    pub peer_address: Option<SStr>,
    pub peer_port: Option<Spanned<Int<u16>>>,
    pub hold_time: Option<SStr>,
    pub keepalive_time: Option<SStr>,
    pub router_id: Option<SStr>,
    pub source_address: Option<SStr>,
    pub node_selectors: Option<Vec<Spanned<Option<RawNodeSelector>>>>,
    pub password: Option<String>,
    pub bfd_profile: Option<SStr>,
    pub ebgp_multihop: Option<Spanned<Bool>>,
}

/// `peers[].node-selectors[]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawNodeSelector {
    pub match_labels: Option<BTreeMap<String, Option<String>>>,
    pub match_expressions: Option<Vec<Spanned<Option<RawSelectorRequirement>>>>,
}

/// `match-expressions[]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelectorRequirement {
    pub key: Option<String>,
    pub operator: Option<String>,
    pub values: Option<Vec<String>>,
}

/// `address-pools[]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawPool {
    pub name: Option<SStr>,
    pub protocol: Option<SStr>,
    pub addresses: Option<Vec<SStr>>,
    pub avoid_buggy_ips: Option<Bool>,
    pub auto_assign: Option<Bool>,
    pub bgp_advertisements: Option<Vec<Spanned<Option<RawBgpAdvertisement>>>>,
}

/// `address-pools[].bgp-advertisements[]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawBgpAdvertisement {
    pub aggregation_length: Option<Spanned<Int<i64>>>,
    pub aggregation_length_v6: Option<Spanned<Int<i64>>>,
    pub localpref: Option<Int<u32>>,
    pub communities: Option<Vec<SStr>>,
}

/// An advertisement's fields as written (aggregation lengths, localpref, communities).
pub type WrittenAdvertisement<'a> = (Option<i64>, Option<i64>, Option<u32>, Option<Vec<&'a str>>);

impl RawBgpAdvertisement {
    /// The advertisement as written, for MetalLB 0.12's duplicate check (raw equality:
    /// `{}` and `{aggregation-length: 32}` differ).
    pub fn as_written(&self) -> WrittenAdvertisement<'_> {
        (
            self.aggregation_length.as_ref().map(|s| s.value.0),
            self.aggregation_length_v6.as_ref().map(|s| s.value.0),
            self.localpref.map(|l| l.0),
            self.communities
                .as_ref()
                .map(|c| c.iter().map(|s| s.value.as_str()).collect()),
        )
    }
}

/// `bfd-profiles[]` (0.12).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawBfdProfile {
    pub name: Option<SStr>,
    pub receive_interval: Option<Spanned<Int<u32>>>,
    pub transmit_interval: Option<Spanned<Int<u32>>>,
    pub detect_multiplier: Option<Spanned<Int<u32>>>,
    pub echo_interval: Option<Spanned<Int<u32>>>,
    pub echo_mode: Option<Bool>,
    pub passive_mode: Option<Bool>,
    pub minimum_ttl: Option<Spanned<Int<u32>>>,
}
