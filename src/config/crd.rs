//! The metallb.io custom resources as plain data, and the reader that turns a set of them back
//! into the typed [`Config`]. Pure: serde and schemars only — no kube, no tokio, no I/O.
//!
//! # Why the specs live here
//!
//! The spec structs below are the single source of truth for the metallb.io API we speak:
//! their serde attributes define the wire format, their schemars attributes (ranges, defaults,
//! `///` docs) define the OpenAPI schema. `crate::k8s::crds` wraps each one in a
//! `#[serde(transparent)]` newtype carrying kube's `CustomResource` derive, so the generated
//! CRDs (`manifests/migration-crds/`) are built from exactly these types and the pure reader here never
//! imports kube. Embedding (rather than mirroring the fields twice) means the two cannot drift;
//! `k8s::crds` has a test that the wrapped and plain forms serialize identically anyway.
//!
//! Versions follow MetalLB v0.13.12 (spec §3.7): every kind is `metallb.io/v1beta1` except
//! `BGPPeer`, which is `metallb.io/v1beta2` (the only BGPPeer version we serve).
//!
//! # The reader
//!
//! [`read_config`] maps CRD objects onto the legacy model (peers, `bgp-communities`,
//! `address-pools`, `bfd-profiles`) and runs the result through the very parser and validator
//! the controller uses ([`super::parse_payload`]), so a set of CRDs is accepted exactly when the
//! equivalent ConfigMap would be; a validator error is attributed to the object it is about
//! ([`Origins`], [`CrdError::object`]). It is the product's reader: both binaries feed it the
//! objects they watch in CRD mode (`crate::k8s::config_source`), one [`Document::from_value`]
//! per object. `ipAddressPoolSelectors` are resolved against the IPAddressPools' labels. Fields
//! with no legacy equivalent (advertisement node selectors, peers and interfaces,
//! `serviceAllocation`, `vrf`, large communities …) are rejected with an error that names them
//! instead of being dropped. A pool's `metallb-rs.io/legacy-name` annotation becomes an alias. A pool's protocol is derived from the
//! advertisements naming it: L2Advertisements make it `layer2`, BGPAdvertisements make it
//! `bgp` (one legacy advertisement per BGPAdvertisement, in document order); a pool named by
//! both kinds, or by none, has no legacy equivalent and is rejected.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Config, ConfigError, NodeSelector};

/// API group of every kind.
pub const GROUP: &str = "metallb.io";
/// Version of every kind but `BGPPeer`.
pub const V1BETA1: &str = "v1beta1";
/// Version of `BGPPeer`.
pub const V1BETA2: &str = "v1beta2";
/// Secret type `BGPPeer.spec.passwordSecret` must reference.
pub const BASIC_AUTH_SECRET_TYPE: &str = "kubernetes.io/basic-auth";

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

// ---------------------------------------------------------------------------------------------
// Spec types

/// A Kubernetes label selector (`metav1.LabelSelector`); an empty selector selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must all be present with exactly these values.
    #[serde(
        rename = "matchLabels",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(
        rename = "matchExpressions",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// One of `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`; empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl From<&NodeSelector> for LabelSelector {
    fn from(s: &NodeSelector) -> Self {
        LabelSelector {
            match_labels: s.match_labels.clone(),
            match_expressions: s
                .match_expressions
                .iter()
                .map(|r| LabelSelectorRequirement {
                    key: r.key.clone(),
                    operator: r.operator.as_str().to_string(),
                    values: r.values.clone(),
                })
                .collect(),
        }
    }
}

/// `IPAddressPool` spec (`metallb.io/v1beta1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IPAddressPoolSpec {
    /// The addresses the pool hands out: CIDRs (`192.168.1.0/24`) or `start-end` ranges.
    pub addresses: Vec<String>,
    /// Whether the pool takes part in automatic allocation (default true).
    #[serde(
        rename = "autoAssign",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("default" = true))]
    pub auto_assign: Option<bool>,
    /// Never hand out addresses ending in .0 or .255 (default false).
    #[serde(rename = "avoidBuggyIPs", default, skip_serializing_if = "is_false")]
    #[schemars(extend("default" = false))]
    pub avoid_buggy_ips: bool,
    /// Restricts the pool to some namespaces or services (no legacy equivalent).
    #[serde(
        rename = "serviceAllocation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_allocation: Option<ServiceAllocation>,
}

/// `IPAddressPool.spec.serviceAllocation` (MetalLB 0.13.9+).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceAllocation {
    /// Lower values are preferred when several pools match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Namespaces whose services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Selectors of namespaces whose services may use the pool.
    #[serde(
        rename = "namespaceSelectors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Selectors of services that may use the pool.
    #[serde(
        rename = "serviceSelectors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_selectors: Vec<LabelSelector>,
}

/// `L2Advertisement` spec (`metallb.io/v1beta1`): announce pools with ARP/NDP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct L2AdvertisementSpec {
    /// Names of the pools to announce; empty (with no selectors) means every pool.
    #[serde(
        rename = "ipAddressPools",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pools: Vec<String>,
    /// Selectors of the pools to announce (no legacy equivalent).
    #[serde(
        rename = "ipAddressPoolSelectors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that announce (no legacy equivalent; empty means all nodes).
    #[serde(
        rename = "nodeSelectors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces to announce from (no legacy equivalent; empty means all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
}

/// `BGPAdvertisement` spec (`metallb.io/v1beta1`): announce pools to BGP peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BGPAdvertisementSpec {
    /// Prefix length IPv4 routes are aggregated to (default 32).
    #[serde(
        rename = "aggregationLength",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 32), extend("default" = 32))]
    pub aggregation_length: Option<i32>,
    /// Prefix length IPv6 routes are aggregated to (default 128).
    #[serde(
        rename = "aggregationLengthV6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 128), extend("default" = 128))]
    pub aggregation_length_v6: Option<i32>,
    /// LOCAL_PREF sent to iBGP peers (0: not set).
    #[serde(rename = "localPref", default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0, max = 4_294_967_295_u32))]
    pub local_pref: u32,
    /// Communities to attach: `A:B` literals or names of Community aliases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// Names of the pools to announce; empty (with no selectors) means every pool.
    #[serde(
        rename = "ipAddressPools",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pools: Vec<String>,
    /// Selectors of the pools to announce (no legacy equivalent).
    #[serde(
        rename = "ipAddressPoolSelectors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that announce (no legacy equivalent; empty means all nodes).
    #[serde(
        rename = "nodeSelectors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub node_selectors: Vec<LabelSelector>,
    /// Names of the BGPPeers to announce to (no legacy equivalent; empty means all peers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

/// A reference to a Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretReference {
    /// Secret name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Secret namespace (must be MetalLB's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `BGPPeer` spec (`metallb.io/v1beta2`): a BGP session to open from the selected nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BGPPeerSpec {
    /// Local AS number.
    #[serde(rename = "myASN")]
    #[schemars(range(min = 0, max = 4_294_967_295_u32))]
    pub my_asn: u32,
    /// AS number expected from the peer.
    #[serde(rename = "peerASN")]
    #[schemars(range(min = 0, max = 4_294_967_295_u32))]
    pub peer_asn: u32,
    /// Address to connect to.
    #[serde(rename = "peerAddress")]
    pub peer_address: String,
    /// Source address of the session.
    #[serde(
        rename = "sourceAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_address: Option<String>,
    /// TCP port to connect to (default 179).
    #[serde(rename = "peerPort", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 16384), extend("default" = 179))]
    pub peer_port: Option<u16>,
    /// Proposed hold time, a Go duration such as 1m30s.
    #[serde(rename = "holdTime", default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<String>,
    /// Keepalive interval, a Go duration (default: a third of the hold time).
    #[serde(
        rename = "keepaliveTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub keepalive_time: Option<String>,
    /// BGP router ID to advertise.
    #[serde(rename = "routerID", default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// Only peer from nodes matching one of these selectors (empty: all nodes).
    #[serde(
        rename = "nodeSelectors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub node_selectors: Vec<LabelSelector>,
    /// TCP-MD5 password, in plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Secret of type kubernetes.io/basic-auth, in MetalLB's namespace, whose key password holds the TCP-MD5 password.
    #[serde(
        rename = "passwordSecret",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub password_secret: Option<SecretReference>,
    /// Name of the BFDProfile for this session.
    #[serde(
        rename = "bfdProfile",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub bfd_profile: Option<String>,
    /// The peer is several hops away (FRR mode).
    #[serde(rename = "ebgpMultiHop", default, skip_serializing_if = "is_false")]
    pub ebgp_multihop: bool,
    /// Host VRF to peer from (no legacy equivalent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,
}

/// `BFDProfile` spec (`metallb.io/v1beta1`, FRR mode). Unset fields take FRR's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BFDProfileSpec {
    /// Minimum receive interval in milliseconds.
    #[serde(
        rename = "receiveInterval",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 10, max = 60000))]
    pub receive_interval: Option<u32>,
    /// Minimum transmit interval in milliseconds.
    #[serde(
        rename = "transmitInterval",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 10, max = 60000))]
    pub transmit_interval: Option<u32>,
    /// Detection multiplier.
    #[serde(
        rename = "detectMultiplier",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 2, max = 255))]
    pub detect_multiplier: Option<u32>,
    /// Echo interval in milliseconds.
    #[serde(
        rename = "echoInterval",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 10, max = 60000))]
    pub echo_interval: Option<u32>,
    /// Enable echo mode.
    #[serde(rename = "echoMode", default, skip_serializing_if = "Option::is_none")]
    pub echo_mode: Option<bool>,
    /// Wait for the peer to start the session.
    #[serde(
        rename = "passiveMode",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub passive_mode: Option<bool>,
    /// Minimum incoming TTL.
    #[serde(
        rename = "minimumTtl",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 254))]
    pub minimum_ttl: Option<u32>,
}

/// `Community` spec (`metallb.io/v1beta1`): named community values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommunitySpec {
    /// The aliases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<CommunityAlias>,
}

/// One named community.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommunityAlias {
    /// The alias advertisements refer to.
    pub name: String,
    /// The community, `A:B`.
    pub value: String,
}

// ---------------------------------------------------------------------------------------------
// Objects

/// The metallb.io kinds, in configmaptocrs' emission order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `BGPPeer` (v1beta2).
    BGPPeer,
    /// `IPAddressPool`.
    IPAddressPool,
    /// `BGPAdvertisement`.
    BGPAdvertisement,
    /// `L2Advertisement`.
    L2Advertisement,
    /// `BFDProfile`.
    BFDProfile,
    /// `Community`.
    Community,
}

impl Kind {
    /// Every kind, in emission order.
    pub const ALL: [Kind; 6] = [
        Kind::BGPPeer,
        Kind::IPAddressPool,
        Kind::BGPAdvertisement,
        Kind::L2Advertisement,
        Kind::BFDProfile,
        Kind::Community,
    ];

    /// The kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::BGPPeer => "BGPPeer",
            Kind::IPAddressPool => "IPAddressPool",
            Kind::BGPAdvertisement => "BGPAdvertisement",
            Kind::L2Advertisement => "L2Advertisement",
            Kind::BFDProfile => "BFDProfile",
            Kind::Community => "Community",
        }
    }

    /// The version we serve and emit.
    pub fn version(self) -> &'static str {
        match self {
            Kind::BGPPeer => V1BETA2,
            _ => V1BETA1,
        }
    }

    /// `apiVersion` of the kind.
    pub fn api_version(self) -> String {
        format!("{GROUP}/{}", self.version())
    }

    /// The kind with this name.
    pub fn parse(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The spec of one metallb.io object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// A `BGPPeer`.
    BGPPeer(BGPPeerSpec),
    /// An `IPAddressPool`.
    IPAddressPool(IPAddressPoolSpec),
    /// A `BGPAdvertisement`.
    BGPAdvertisement(BGPAdvertisementSpec),
    /// An `L2Advertisement`.
    L2Advertisement(L2AdvertisementSpec),
    /// A `BFDProfile`.
    BFDProfile(BFDProfileSpec),
    /// A `Community`.
    Community(CommunitySpec),
}

impl Spec {
    /// The kind of the object.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::BGPPeer(_) => Kind::BGPPeer,
            Spec::IPAddressPool(_) => Kind::IPAddressPool,
            Spec::BGPAdvertisement(_) => Kind::BGPAdvertisement,
            Spec::L2Advertisement(_) => Kind::L2Advertisement,
            Spec::BFDProfile(_) => Kind::BFDProfile,
            Spec::Community(_) => Kind::Community,
        }
    }

    fn to_value(&self) -> Value {
        let v = match self {
            Spec::BGPPeer(s) => serde_json::to_value(s),
            Spec::IPAddressPool(s) => serde_json::to_value(s),
            Spec::BGPAdvertisement(s) => serde_json::to_value(s),
            Spec::L2Advertisement(s) => serde_json::to_value(s),
            Spec::BFDProfile(s) => serde_json::to_value(s),
            Spec::Community(s) => serde_json::to_value(s),
        };
        // Plain structs of strings, numbers and maps with string keys always serialize.
        v.unwrap_or_default()
    }

    fn from_value(kind: Kind, v: Value) -> Result<Spec, serde_json::Error> {
        Ok(match kind {
            Kind::BGPPeer => Spec::BGPPeer(serde_json::from_value(v)?),
            Kind::IPAddressPool => Spec::IPAddressPool(serde_json::from_value(v)?),
            Kind::BGPAdvertisement => Spec::BGPAdvertisement(serde_json::from_value(v)?),
            Kind::L2Advertisement => Spec::L2Advertisement(serde_json::from_value(v)?),
            Kind::BFDProfile => Spec::BFDProfile(serde_json::from_value(v)?),
            Kind::Community => Spec::Community(serde_json::from_value(v)?),
        })
    }
}

/// A metallb.io object: name, namespace, labels and spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdObject {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, when set.
    pub namespace: Option<String>,
    /// `metadata.labels` (what `ipAddressPoolSelectors` match).
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations[metallb-rs.io/legacy-name]`: the pool's name in the legacy
    /// config it was migrated from, when that name was not a valid object name (Services may
    /// still ask for the pool by it).
    pub legacy_name: Option<String>,
    /// The spec (which also determines the kind).
    pub spec: Spec,
}

/// Annotation of an object migrated under a new name: the name in the legacy config.
pub const LEGACY_NAME_ANNOTATION: &str = "metallb-rs.io/legacy-name";

fn metadata(name: &str, namespace: Option<&str>) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    if let Some(ns) = namespace {
        m.insert("namespace".into(), json!(ns));
    }
    Value::Object(m)
}

impl CrdObject {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    /// A plain object (no labels, no legacy name).
    pub fn new(name: impl Into<String>, namespace: Option<String>, spec: Spec) -> Self {
        CrdObject {
            name: name.into(),
            namespace,
            labels: BTreeMap::new(),
            legacy_name: None,
            spec,
        }
    }

    /// The object as a Kubernetes manifest (`apiVersion`, `kind`, `metadata`, `spec`).
    pub fn to_value(&self) -> Value {
        let mut meta = metadata(&self.name, self.namespace.as_deref());
        if let Some(m) = meta.as_object_mut() {
            if !self.labels.is_empty() {
                m.insert("labels".into(), json!(self.labels));
            }
            if let Some(l) = &self.legacy_name {
                m.insert("annotations".into(), json!({ LEGACY_NAME_ANNOTATION: l }));
            }
        }
        json!({
            "apiVersion": self.kind().api_version(),
            "kind": self.kind().as_str(),
            "metadata": meta,
            "spec": self.spec.to_value(),
        })
    }

    /// How errors name the object.
    pub fn object_name(&self) -> ObjectName {
        ObjectName::new(self.kind(), &self.name)
    }
}

/// How errors name an object: its kind and name, printed `Kind "name"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName {
    /// The kind (`IPAddressPool`, …, or `Secret`).
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectName {
    /// The name of object `name` of `kind`.
    pub fn new(kind: impl std::fmt::Display, name: &str) -> Self {
        ObjectName {
            kind: kind.to_string(),
            name: name.to_string(),
        }
    }
}

impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.kind, self.name)
    }
}

/// A `kubernetes.io/basic-auth` Secret holding a BGP password under the key `password`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordSecret {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, when set.
    pub namespace: Option<String>,
    /// The password.
    pub password: String,
}

impl PasswordSecret {
    /// The Secret as a manifest (password under `stringData`, which the apiserver encodes).
    pub fn to_value(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata(&self.name, self.namespace.as_deref()),
            "type": BASIC_AUTH_SECRET_TYPE,
            "stringData": { "password": self.password },
        })
    }
}

/// One document of a multi-document manifest, as the reader sees it.
// Documents are built once and never moved in bulk: boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    /// A metallb.io object of a kind and version we serve.
    Crd(CrdObject),
    /// A basic-auth Secret (a candidate `passwordSecret`).
    Secret(PasswordSecret),
    /// An object of ours that cannot be read (the reader reports it: a config with an
    /// unreadable object is not applied).
    Invalid(CrdError),
    /// Anything else (ignored by the reader, e.g. Service annotation patches).
    Other {
        /// `apiVersion`.
        api_version: String,
        /// `kind`.
        kind: String,
    },
}

/// Why CRD objects cannot be read into a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrdError {
    /// The text is not YAML (or the legacy rendering failed).
    #[error("could not parse YAML: {0}")]
    Yaml(String),
    /// An object is malformed (wrong shape, unknown field, unserved version, no name).
    #[error("{}{reason}", object.as_ref().map(|o| format!("{o}: ")).unwrap_or_default())]
    Malformed {
        /// The object, when it has a kind and a name.
        object: Option<ObjectName>,
        /// What is wrong.
        reason: String,
    },
    /// A field that the legacy model cannot express.
    #[error("{object}: {field} has no equivalent in the legacy configuration")]
    Unsupported {
        /// The object, e.g. `BGPPeer "peer1"`.
        object: ObjectName,
        /// The field, e.g. `spec.peers`.
        field: String,
    },
    /// A reference to an object that is not there, or another inconsistency between objects.
    #[error("{object}: {reason}")]
    Inconsistent {
        /// The object, e.g. `BGPPeer "peer1"`.
        object: ObjectName,
        /// What is wrong.
        reason: String,
    },
    /// The objects are consistent but the configuration they describe is invalid; `object` is
    /// the object the legacy validator's error is about (the second of two overlapping pools,
    /// the peer naming an unknown BFD profile …).
    #[error("{}the objects describe an invalid configuration: {error}", object.as_ref().map(|o| format!("{o}: ")).unwrap_or_default())]
    Invalid {
        /// The object at fault, when the error is about one.
        object: Option<ObjectName>,
        /// The legacy validator's error (positions dropped: they would point into text the
        /// user never saw).
        error: ConfigError,
    },
}

impl CrdError {
    /// The object the error is about, if it is about one.
    pub fn object(&self) -> Option<&ObjectName> {
        match self {
            CrdError::Yaml(_) => None,
            CrdError::Malformed { object, .. } | CrdError::Invalid { object, .. } => {
                object.as_ref()
            }
            CrdError::Unsupported { object, .. } | CrdError::Inconsistent { object, .. } => {
                Some(object)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reader

/// YAML options for manifests: the config parser's (YAML 1.1 scalars, duplicate keys are
/// errors, as kubectl reads them) with room for the thousands of documents a large
/// migration or a cluster's Services dump holds.
pub fn manifest_options() -> serde_saphyr::Options {
    let mut o = super::input::yaml_options();
    let mut b = serde_saphyr::Budget::default();
    b.max_documents = 1_000_000;
    b.max_nodes = 50_000_000;
    b.max_events = 100_000_000;
    o.budget = Some(b);
    o
}

impl Document {
    /// Read one Kubernetes object (a manifest document or what the apiserver returns):
    /// metallb.io kinds we serve become [`Document::Crd`], `kubernetes.io/basic-auth` Secrets
    /// [`Document::Secret`], anything else [`Document::Other`].
    pub fn from_value(mut d: Value) -> Result<Document, CrdError> {
        let str_at = |d: &Value, k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
        let bad =
            |object: Option<ObjectName>, reason: String| CrdError::Malformed { object, reason };
        let (Some(api_version), Some(kind)) = (str_at(&d, "apiVersion"), str_at(&d, "kind")) else {
            return Err(bad(
                None,
                "not a Kubernetes object (apiVersion and kind are required)".into(),
            ));
        };
        let meta_str = |d: &Value, k: &str| {
            d.pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let name = meta_str(&d, "name").filter(|n| !n.is_empty());
        let namespace = meta_str(&d, "namespace");
        let named = || ObjectName::new(&kind, name.as_deref().unwrap_or("<unnamed>"));
        if let Some(group_version) = api_version.strip_prefix(&format!("{GROUP}/")) {
            let Some(k) = Kind::parse(&kind) else {
                return Err(bad(Some(named()), format!("unknown {GROUP} kind {kind:?}")));
            };
            if group_version != k.version() {
                return Err(bad(
                    Some(named()),
                    format!(
                        "{api_version} is not served: {kind} is read as {}",
                        k.api_version()
                    ),
                ));
            }
            let Some(name) = name.clone() else {
                return Err(bad(Some(named()), "metadata.name is required".into()));
            };
            let labels: BTreeMap<String, String> = d
                .pointer("/metadata/labels")
                .cloned()
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| bad(Some(named()), format!("metadata.labels: {e}")))?
                .unwrap_or_default();
            let legacy_name = d
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(LEGACY_NAME_ANNOTATION))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_string);
            let spec_value = d.get_mut("spec").map(Value::take).unwrap_or(Value::Null);
            let spec_value = if spec_value.is_null() {
                json!({})
            } else {
                spec_value
            };
            let spec = Spec::from_value(k, spec_value)
                .map_err(|e| bad(Some(named()), format!("spec: {e}")))?;
            return Ok(Document::Crd(CrdObject {
                name,
                namespace,
                labels,
                legacy_name,
                spec,
            }));
        }
        if api_version == "v1"
            && kind == "Secret"
            && str_at(&d, "type").as_deref() == Some(BASIC_AUTH_SECRET_TYPE)
        {
            let Some(name) = name.clone() else {
                return Err(bad(Some(named()), "metadata.name is required".into()));
            };
            let password =
                if let Some(p) = d.pointer("/stringData/password").and_then(Value::as_str) {
                    p.to_string()
                } else if let Some(p) = d.pointer("/data/password").and_then(Value::as_str) {
                    let bytes = base64_decode(p)
                        .ok_or_else(|| bad(Some(named()), "data.password is not base64".into()))?;
                    String::from_utf8(bytes)
                        .map_err(|_| bad(Some(named()), "data.password is not UTF-8".into()))?
                } else {
                    return Err(bad(
                        Some(named()),
                        "a basic-auth Secret for a BGP password needs the key password".into(),
                    ));
                };
            return Ok(Document::Secret(PasswordSecret {
                name,
                namespace,
                password,
            }));
        }
        Ok(Document::Other { api_version, kind })
    }
}

/// Decode standard base64 (with or without padding); `None` if malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Read CRD objects back into the typed configuration (see the module docs for the rules).
/// An error of the legacy validator is attributed to the object it is about.
pub fn read_config(docs: &[Document]) -> Result<Config, CrdError> {
    if let Some(e) = docs.iter().find_map(|d| match d {
        Document::Invalid(e) => Some(e.clone()),
        _ => None,
    }) {
        return Err(e);
    }
    let (text, origins) = legacy_text(docs)?;
    let mut config = super::parse_payload(&text).map_err(|error| CrdError::Invalid {
        object: origins.blame(&error),
        // Positions would point into our synthesized text, which the user never saw.
        error: ConfigError { pos: None, ..error },
    })?;
    // Legacy names of migrated pools: Services may still ask for the pool by them.
    let legacy: BTreeMap<&str, &str> = docs
        .iter()
        .filter_map(|d| match d {
            Document::Crd(o) if o.kind() == Kind::IPAddressPool => o
                .legacy_name
                .as_deref()
                .filter(|l| *l != o.name)
                .map(|l| (o.name.as_str(), l)),
            _ => None,
        })
        .collect();
    let names: BTreeSet<String> = config.pools.iter().map(|p| p.name.clone()).collect();
    for p in &mut config.pools {
        if let Some(l) = legacy.get(p.name.as_str()) {
            if names.contains(*l) {
                return Err(CrdError::Inconsistent {
                    object: obj(Kind::IPAddressPool, &p.name),
                    reason: format!(
                        "annotation {LEGACY_NAME_ANNOTATION} {l:?} is the name of another IPAddressPool"
                    ),
                });
            }
            p.aliases = vec![l.to_string()];
        }
    }
    Ok(config)
}

/// The legacy payload the objects stand for (deterministic for a given set of documents),
/// and which object each legacy entry came from.
pub fn legacy_text(docs: &[Document]) -> Result<(String, Origins), CrdError> {
    let (legacy, origins) = to_legacy_with_origins(docs)?;
    // Plain or quoted scalars only: no folding of long values on the way through.
    let opts = serde_saphyr::ser_options! { prefer_block_scalars: false };
    let text = serde_saphyr::to_string_with_options(&legacy, opts)
        .map_err(|e| CrdError::Yaml(e.to_string()))?;
    Ok((text, origins))
}

/// The identity of a set of documents (what the hot-reload hash gate compares): hex sha256
/// of their canonical JSON, objects sorted by kind and name, Secrets by name.
pub fn identity(docs: &[Document]) -> String {
    let mut items: Vec<(String, String, Value)> = docs
        .iter()
        .filter_map(|d| match d {
            Document::Crd(o) => Some((o.kind().as_str().to_string(), o.name.clone(), o.to_value())),
            Document::Secret(s) => Some(("Secret".into(), s.name.clone(), s.to_value())),
            Document::Invalid(e) => Some((
                "~".into(),
                String::new(),
                json!({ "invalid": e.to_string() }),
            )),
            Document::Other { .. } => None,
        })
        .collect();
    items.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let values: Vec<&Value> = items.iter().map(|(_, _, v)| v).collect();
    let bytes = serde_json::to_vec(&values).unwrap_or_default();
    super::input::sha256_hex(&bytes)
}

/// Which object each entry of the synthesized legacy config came from, so that the legacy
/// validator's errors (`address pool #2`, `peer #1` …) can be reported on the object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins {
    /// `peers[i]`.
    pub peers: Vec<ObjectName>,
    /// `address-pools[i]`.
    pub pools: Vec<ObjectName>,
    /// `bfd-profiles[i]`.
    pub bfd_profiles: Vec<ObjectName>,
    /// `bgp-communities` aliases.
    pub communities: BTreeMap<String, ObjectName>,
}

impl Origins {
    /// The object a legacy validation error is about.
    pub fn blame(&self, e: &ConfigError) -> Option<ObjectName> {
        use super::Object;
        let at = |list: &[ObjectName], index: usize| list.get(index.checked_sub(1)?).cloned();
        match e.object.as_ref()? {
            Object::Peer { index, .. } => at(&self.peers, *index),
            Object::Pool { index, .. } => at(&self.pools, *index),
            Object::BfdProfile { index, .. } => at(&self.bfd_profiles, *index),
            Object::CommunityAlias { alias } => self.communities.get(alias).cloned(),
        }
    }
}

/// Objects of one kind with their names.
struct ByKind<'a, T> {
    items: Vec<(&'a str, &'a T)>,
}

fn collect<'a, T>(docs: &'a [Document], pick: impl Fn(&'a Spec) -> Option<&'a T>) -> ByKind<'a, T> {
    let items = docs
        .iter()
        .filter_map(|d| match d {
            Document::Crd(o) => pick(&o.spec).map(|s| (o.name.as_str(), s)),
            _ => None,
        })
        .collect();
    ByKind { items }
}

/// How errors name an object.
fn obj(kind: impl std::fmt::Display, name: &str) -> ObjectName {
    ObjectName::new(kind, name)
}

fn some_str(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Map CRD objects onto the legacy `config` document (as a JSON value with legacy keys).
pub fn to_legacy(docs: &[Document]) -> Result<Value, CrdError> {
    to_legacy_with_origins(docs).map(|(v, _)| v)
}

fn to_legacy_with_origins(docs: &[Document]) -> Result<(Value, Origins), CrdError> {
    let mut origins = Origins::default();
    check_namespaces(docs)?;
    check_unique_names(docs)?;
    let peers = collect(docs, |s| match s {
        Spec::BGPPeer(x) => Some(x),
        _ => None,
    });
    let pools = collect(docs, |s| match s {
        Spec::IPAddressPool(x) => Some(x),
        _ => None,
    });
    let bgp_ads = collect(docs, |s| match s {
        Spec::BGPAdvertisement(x) => Some(x),
        _ => None,
    });
    let l2_ads = collect(docs, |s| match s {
        Spec::L2Advertisement(x) => Some(x),
        _ => None,
    });
    let bfds = collect(docs, |s| match s {
        Spec::BFDProfile(x) => Some(x),
        _ => None,
    });
    let communities = collect(docs, |s| match s {
        Spec::Community(x) => Some(x),
        _ => None,
    });
    let secrets: Vec<&PasswordSecret> = docs
        .iter()
        .filter_map(|d| {
            if let Document::Secret(s) = d {
                Some(s)
            } else {
                None
            }
        })
        .collect();

    let mut out = Map::new();
    if !peers.items.is_empty() {
        let list = peers
            .items
            .iter()
            .map(|(name, p)| legacy_peer(name, p, &secrets))
            .collect::<Result<Vec<_>, _>>()?;
        origins.peers = peers
            .items
            .iter()
            .map(|(n, _)| obj(Kind::BGPPeer, n))
            .collect();
        out.insert("peers".into(), Value::Array(list));
    }

    let mut aliases = Map::new();
    for (name, c) in &communities.items {
        for a in &c.communities {
            let inconsistent = |reason: String| CrdError::Inconsistent {
                object: obj(Kind::Community, name),
                reason,
            };
            if a.name.is_empty() {
                return Err(inconsistent("an entry has no name".into()));
            }
            if a.value.starts_with("large:") {
                return Err(CrdError::Unsupported {
                    object: obj(Kind::Community, name),
                    field: format!("large community {:?}", a.name),
                });
            }
            origins
                .communities
                .insert(a.name.clone(), obj(Kind::Community, name));
            if aliases.insert(a.name.clone(), json!(a.value)).is_some() {
                return Err(inconsistent(format!(
                    "community alias {:?} is defined twice",
                    a.name
                )));
            }
        }
    }
    if !aliases.is_empty() {
        out.insert("bgp-communities".into(), Value::Object(aliases));
    }

    let pool_labels: BTreeMap<&str, &BTreeMap<String, String>> = docs
        .iter()
        .filter_map(|d| match d {
            Document::Crd(o) if o.kind() == Kind::IPAddressPool => {
                Some((o.name.as_str(), &o.labels))
            }
            _ => None,
        })
        .collect();
    // Which advertisements announce which pool, in document order.
    let mut l2_of: BTreeMap<&str, &str> = BTreeMap::new();
    let mut bgp_of: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for (name, ad) in &l2_ads.items {
        let unsupported = |field: &str| CrdError::Unsupported {
            object: obj(Kind::L2Advertisement, name),
            field: field.to_string(),
        };
        if !ad.node_selectors.is_empty() {
            return Err(unsupported("spec.nodeSelectors"));
        }
        if !ad.interfaces.is_empty() {
            return Err(unsupported("spec.interfaces"));
        }
        for pool in targets(
            obj(Kind::L2Advertisement, name),
            &ad.ip_address_pools,
            &ad.ip_address_pool_selectors,
            &pool_labels,
        )? {
            l2_of.entry(pool).or_insert(name);
        }
    }
    for (name, ad) in &bgp_ads.items {
        let unsupported = |field: &str| CrdError::Unsupported {
            object: obj(Kind::BGPAdvertisement, name),
            field: field.to_string(),
        };
        if !ad.node_selectors.is_empty() {
            return Err(unsupported("spec.nodeSelectors"));
        }
        if !ad.peers.is_empty() {
            return Err(unsupported("spec.peers"));
        }
        if let Some(c) = ad.communities.iter().find(|c| c.starts_with("large:")) {
            return Err(unsupported(&format!(
                "large community {c:?} in spec.communities"
            )));
        }
        let legacy = legacy_advertisement(ad);
        for pool in targets(
            obj(Kind::BGPAdvertisement, name),
            &ad.ip_address_pools,
            &ad.ip_address_pool_selectors,
            &pool_labels,
        )? {
            let ads = bgp_of.entry(pool).or_default();
            // Identical advertisements of one pool announce the same routes: keep one.
            if !ads.contains(&legacy) {
                ads.push(legacy.clone());
            }
        }
    }

    if !pools.items.is_empty() {
        let mut list = Vec::with_capacity(pools.items.len());
        for (name, p) in &pools.items {
            let inconsistent = |reason: String| CrdError::Inconsistent {
                object: obj(Kind::IPAddressPool, name),
                reason,
            };
            if p.service_allocation.is_some() {
                return Err(CrdError::Unsupported {
                    object: obj(Kind::IPAddressPool, name),
                    field: "spec.serviceAllocation".into(),
                });
            }
            let mut m = Map::new();
            m.insert("name".into(), json!(name));
            match (l2_of.get(name), bgp_of.get(name)) {
                (Some(l2), Some(_)) => {
                    return Err(inconsistent(format!(
                        "announced by L2Advertisement {l2:?} and by a BGPAdvertisement: a legacy pool has one protocol"
                    )));
                }
                (None, None) => {
                    return Err(inconsistent(
                        "no L2Advertisement or BGPAdvertisement announces it: a legacy pool is always announced".into(),
                    ));
                }
                (Some(_), None) => {
                    m.insert("protocol".into(), json!("layer2"));
                }
                (None, Some(_)) => {
                    m.insert("protocol".into(), json!("bgp"));
                }
            }
            m.insert("addresses".into(), json!(p.addresses));
            if p.avoid_buggy_ips {
                m.insert("avoid-buggy-ips".into(), json!(true));
            }
            if let Some(a) = p.auto_assign {
                m.insert("auto-assign".into(), json!(a));
            }
            if let Some(ads) = bgp_of.get(name) {
                // A lone advertisement without settings is the legacy default.
                let only_default = ads.len() == 1 && ads[0].as_object().is_some_and(Map::is_empty);
                if !only_default {
                    m.insert("bgp-advertisements".into(), Value::Array(ads.clone()));
                }
            }
            list.push(Value::Object(m));
            origins.pools.push(obj(Kind::IPAddressPool, name));
        }
        out.insert("address-pools".into(), Value::Array(list));
    }

    if !bfds.items.is_empty() {
        let list = bfds
            .items
            .iter()
            .map(|(name, b)| legacy_bfd(name, b))
            .collect();
        origins.bfd_profiles = bfds
            .items
            .iter()
            .map(|(n, _)| obj(Kind::BFDProfile, n))
            .collect();
        out.insert("bfd-profiles".into(), Value::Array(list));
    }
    Ok((Value::Object(out), origins))
}

/// Every object and Secret must be in one namespace (or leave it unset).
fn check_namespaces(docs: &[Document]) -> Result<(), CrdError> {
    let mut seen: Option<(&str, ObjectName)> = None;
    for d in docs {
        let (ns, who) = match d {
            Document::Crd(o) => (o.namespace.as_deref(), obj(o.kind(), &o.name)),
            Document::Secret(s) => (s.namespace.as_deref(), obj("Secret", &s.name)),
            Document::Invalid(_) | Document::Other { .. } => continue,
        };
        let Some(ns) = ns else { continue };
        match &seen {
            None => seen = Some((ns, who)),
            Some((first, first_who)) if *first != ns => {
                return Err(CrdError::Inconsistent {
                    object: who,
                    reason: format!(
                        "is in namespace {ns:?} but {first_who} is in {first:?}: MetalLB reads its objects from one namespace"
                    ),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Object names are unique per kind, as the apiserver enforces.
fn check_unique_names(docs: &[Document]) -> Result<(), CrdError> {
    let mut seen = BTreeSet::new();
    for d in docs {
        if let Document::Crd(o) = d
            && !seen.insert((o.kind(), o.name.as_str()))
        {
            return Err(CrdError::Inconsistent {
                object: obj(o.kind(), &o.name),
                reason: "is defined twice".into(),
            });
        }
    }
    Ok(())
}

/// The pools an advertisement announces: those it lists in `ipAddressPools` and those its
/// `ipAddressPoolSelectors` select by label; neither set means every pool (MetalLB 0.13).
fn targets<'a>(
    who: ObjectName,
    listed: &[String],
    selectors: &[LabelSelector],
    pools: &BTreeMap<&'a str, &BTreeMap<String, String>>,
) -> Result<Vec<&'a str>, CrdError> {
    if listed.is_empty() && selectors.is_empty() {
        return Ok(pools.keys().copied().collect());
    }
    let mut out: Vec<&'a str> = Vec::new();
    for p in listed {
        let Some((name, _)) = pools.get_key_value(p.as_str()) else {
            return Err(CrdError::Inconsistent {
                object: who,
                reason: format!(
                    "spec.ipAddressPools names {p:?}, which is not an IPAddressPool here"
                ),
            });
        };
        if !out.contains(name) {
            out.push(name);
        }
    }
    for (i, sel) in selectors.iter().enumerate() {
        for (name, labels) in pools {
            let hit = selector_matches(sel, labels).map_err(|reason| CrdError::Inconsistent {
                object: who.clone(),
                reason: format!("spec.ipAddressPoolSelectors[{i}]: {reason}"),
            })?;
            if hit && !out.contains(name) {
                out.push(name);
            }
        }
    }
    Ok(out)
}

/// Whether a label selector selects these labels (`metav1.LabelSelector` semantics).
fn selector_matches(s: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    if !s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return Ok(false);
    }
    for r in &s.match_expressions {
        let have = labels.get(&r.key);
        let ok = match r.operator.as_str() {
            "In" => have.is_some_and(|v| r.values.contains(v)),
            "NotIn" => have.is_none_or(|v| !r.values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => {
                return Err(format!(
                    "matchExpressions operator {other:?} is not one of In, NotIn, Exists, DoesNotExist"
                ));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn legacy_selector(s: &LabelSelector) -> Value {
    let mut m = Map::new();
    if !s.match_labels.is_empty() {
        m.insert("match-labels".into(), json!(s.match_labels));
    }
    if !s.match_expressions.is_empty() {
        let exprs: Vec<Value> = s
            .match_expressions
            .iter()
            .map(|r| {
                let mut e = Map::new();
                e.insert("key".into(), json!(r.key));
                e.insert("operator".into(), json!(r.operator));
                if !r.values.is_empty() {
                    e.insert("values".into(), json!(r.values));
                }
                Value::Object(e)
            })
            .collect();
        m.insert("match-expressions".into(), Value::Array(exprs));
    }
    Value::Object(m)
}

fn legacy_peer(
    name: &str,
    p: &BGPPeerSpec,
    secrets: &[&PasswordSecret],
) -> Result<Value, CrdError> {
    if some_str(&p.vrf).is_some() {
        return Err(CrdError::Unsupported {
            object: obj(Kind::BGPPeer, name),
            field: "spec.vrf".into(),
        });
    }
    let inconsistent = |reason: String| CrdError::Inconsistent {
        object: obj(Kind::BGPPeer, name),
        reason,
    };
    let mut m = Map::new();
    m.insert("my-asn".into(), json!(p.my_asn));
    m.insert("peer-asn".into(), json!(p.peer_asn));
    m.insert("peer-address".into(), json!(p.peer_address));
    if let Some(port) = p.peer_port {
        m.insert("peer-port".into(), json!(port));
    }
    for (key, v) in [
        ("hold-time", &p.hold_time),
        ("keepalive-time", &p.keepalive_time),
        ("router-id", &p.router_id),
        ("source-address", &p.source_address),
        ("bfd-profile", &p.bfd_profile),
    ] {
        if let Some(v) = some_str(v) {
            m.insert(key.into(), json!(v));
        }
    }
    if !p.node_selectors.is_empty() {
        m.insert(
            "node-selectors".into(),
            p.node_selectors.iter().map(legacy_selector).collect(),
        );
    }
    let secret_name = p.password_secret.as_ref().and_then(|r| some_str(&r.name));
    let password = match (some_str(&p.password), secret_name) {
        (Some(_), Some(_)) => {
            return Err(inconsistent(
                "sets both spec.password and spec.passwordSecret".into(),
            ));
        }
        (Some(pw), None) => Some(pw.to_string()),
        (None, Some(secret)) => {
            let want_ns = p
                .password_secret
                .as_ref()
                .and_then(|r| some_str(&r.namespace));
            let same_ns = |s: &PasswordSecret| match (want_ns, s.namespace.as_deref()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            let s = secrets.iter().find(|s| s.name == secret && same_ns(s)).ok_or_else(|| {
                inconsistent(format!(
                    "spec.passwordSecret names Secret {secret:?}, which is not a {BASIC_AUTH_SECRET_TYPE} Secret here"
                ))
            })?;
            Some(s.password.clone())
        }
        (None, None) => None,
    };
    if let Some(pw) = password {
        m.insert("password".into(), json!(pw));
    }
    if p.ebgp_multihop {
        m.insert("ebgp-multihop".into(), json!(true));
    }
    Ok(Value::Object(m))
}

fn legacy_advertisement(a: &BGPAdvertisementSpec) -> Value {
    let mut m = Map::new();
    if let Some(l) = a.aggregation_length {
        m.insert("aggregation-length".into(), json!(l));
    }
    if let Some(l) = a.aggregation_length_v6 {
        m.insert("aggregation-length-v6".into(), json!(l));
    }
    if a.local_pref != 0 {
        m.insert("localpref".into(), json!(a.local_pref));
    }
    if !a.communities.is_empty() {
        m.insert("communities".into(), json!(a.communities));
    }
    Value::Object(m)
}

fn legacy_bfd(name: &str, b: &BFDProfileSpec) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    for (key, v) in [
        ("receive-interval", b.receive_interval),
        ("transmit-interval", b.transmit_interval),
        ("detect-multiplier", b.detect_multiplier),
        ("echo-interval", b.echo_interval),
        ("minimum-ttl", b.minimum_ttl),
    ] {
        if let Some(v) = v {
            m.insert(key.into(), json!(v));
        }
    }
    for (key, v) in [("echo-mode", b.echo_mode), ("passive-mode", b.passive_mode)] {
        if let Some(v) = v {
            m.insert(key.into(), json!(v));
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read a multi-document manifest (the integration tests read files the same way).
    fn read_str(text: &str) -> Result<Config, CrdError> {
        let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, manifest_options())
            .map_err(|e| CrdError::Yaml(e.to_string()))?;
        let docs = docs
            .into_iter()
            .filter(|d| !d.is_null())
            .map(Document::from_value)
            .collect::<Result<Vec<_>, _>>()?;
        read_config(&docs)
    }

    const PEER_AND_POOL: &str = r#"
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: peer1, namespace: metallb-system}
spec: {myASN: 64500, peerASN: 64501, peerAddress: 192.0.2.1, holdTime: 2m0s, passwordSecret: {name: peer1-password}}
---
apiVersion: v1
kind: Secret
metadata: {name: peer1-password, namespace: metallb-system}
type: kubernetes.io/basic-auth
data: {password: czNjcjN0}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: prod, namespace: metallb-system}
spec: {addresses: [192.0.2.0/28], autoAssign: false}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: ad1, namespace: metallb-system}
spec: {ipAddressPools: [prod], localPref: 100, communities: [no-export]}
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: communities, namespace: metallb-system}
spec: {communities: [{name: no-export, value: "65535:65281"}]}
"#;

    #[test]
    fn reads_objects_into_the_legacy_model() {
        let c = read_str(PEER_AND_POOL).unwrap();
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.peers[0].hold_time_secs, 120);
        assert_eq!(c.peers[0].password.as_deref(), Some("s3cr3t"));
        assert_eq!(c.pools[0].protocol, super::super::Protocol::Bgp);
        assert_eq!(c.pools[0].auto_assign, Some(false));
        assert_eq!(c.pools[0].bgp_advertisements[0].localpref, 100);
        assert_eq!(
            c.pools[0].bgp_advertisements[0].communities,
            vec!["no-export".to_string()]
        );
        assert_eq!(c.bgp_communities.len(), 1);
    }

    #[test]
    fn rejects_what_the_legacy_model_cannot_say() {
        let text = PEER_AND_POOL.replace("localPref: 100", "peers: [peer1]");
        let e = read_str(&text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "BGPAdvertisement \"ad1\": spec.peers has no equivalent in the legacy configuration"
        );
        let text = PEER_AND_POOL.replace("ipAddressPools: [prod]", "ipAddressPools: [nope]");
        assert!(
            read_str(&text)
                .unwrap_err()
                .to_string()
                .contains("\"nope\", which is not an IPAddressPool")
        );
        let text = PEER_AND_POOL
            .replace("kind: BGPAdvertisement", "kind: L2Advertisement")
            .replace(", localPref: 100, communities: [no-export]", "");
        assert!(read_str(&text).is_ok());
        let text = PEER_AND_POOL.replace("metallb.io/v1beta2", "metallb.io/v1beta1");
        assert!(
            read_str(&text)
                .unwrap_err()
                .to_string()
                .contains("is not served")
        );
    }

    #[test]
    fn runs_the_legacy_validation() {
        let text = PEER_AND_POOL.replace("holdTime: 2m0s", "holdTime: 1s");
        let e = read_str(&text).unwrap_err();
        assert!(matches!(e, CrdError::Invalid { .. }), "{e}");
        assert_eq!(
            e.object(),
            Some(&ObjectName::new("BGPPeer", "peer1")),
            "{e}"
        );
    }

    #[test]
    fn unannounced_pool_is_rejected() {
        let text = PEER_AND_POOL.replace("ipAddressPools: [prod]", "ipAddressPools: [other]")
            + "---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: other}\nspec: {addresses: [198.51.100.0/24]}\n";
        let e = read_str(&text).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("IPAddressPool \"prod\": no L2Advertisement"),
            "{e}"
        );
    }

    #[test]
    fn validator_errors_name_the_object_at_fault() {
        let text = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: a}
spec: {addresses: [192.0.2.0/28]}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: b}
spec: {addresses: [192.0.2.8/29]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: all}
"#;
        let e = read_str(text).unwrap_err();
        assert_eq!(
            e.object(),
            Some(&ObjectName::new("IPAddressPool", "b")),
            "{e}"
        );
        assert!(e.to_string().starts_with("IPAddressPool \"b\": "), "{e}");
        assert!(e.to_string().contains("overlaps"), "{e}");
    }

    #[test]
    fn pool_selectors_pick_pools_by_label() {
        let text = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: a, labels: {tier: bgp}}
spec: {addresses: [192.0.2.0/28]}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: b}
spec: {addresses: [198.51.100.0/28]}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: ad}
spec: {ipAddressPoolSelectors: [{matchLabels: {tier: bgp}}]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2}
spec: {ipAddressPoolSelectors: [{matchExpressions: [{key: tier, operator: DoesNotExist}]}]}
"#;
        let c = read_str(text).unwrap();
        assert_eq!(c.pool("a").unwrap().protocol, super::super::Protocol::Bgp);
        assert_eq!(
            c.pool("b").unwrap().protocol,
            super::super::Protocol::Layer2
        );
        let bad = text.replace("DoesNotExist", "Near");
        assert!(
            read_str(&bad)
                .unwrap_err()
                .to_string()
                .contains("spec.ipAddressPoolSelectors[0]")
        );
    }

    #[test]
    fn legacy_name_becomes_an_alias_and_identity_follows_content() {
        let text = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: prod-pool, annotations: {metallb-rs.io/legacy-name: Prod_Pool}}\nspec: {addresses: [192.0.2.0/28]}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\n";
        let c = read_str(text).unwrap();
        assert_eq!(c.pools[0].aliases, vec!["Prod_Pool".to_string()]);
        let docs = |t: &str| -> Vec<Document> {
            serde_saphyr::from_multiple::<Value>(t)
                .unwrap()
                .into_iter()
                .map(|v| Document::from_value(v).unwrap())
                .collect()
        };
        let mut reordered = docs(text);
        reordered.reverse();
        assert_eq!(identity(&docs(text)), identity(&reordered));
        assert_ne!(
            identity(&docs(text)),
            identity(&docs(&text.replace("/28", "/29")))
        );
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(base64_decode("czNjcjN0").unwrap(), b"s3cr3t");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert!(base64_decode("a$").is_none());
    }
}
