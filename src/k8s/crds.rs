//! The metallb.io custom resource kinds, as kube `CustomResource`s, and the CRD manifests
//! generated from them (`manifests/migration-crds/`, drift-checked by `tests/manifests.rs`).
//!
//! Each kind is a `#[serde(transparent)]` newtype around the plain spec struct of
//! [`crate::config::crd`], which the pure reader and the migrator use: the derive needs a
//! struct of its own to attach to, and embedding the plain struct (instead of mirroring its
//! fields) makes the wire format and the schema of both views one and the same. `Deref` gives
//! the plain spec back.
//!
//! Group `metallb.io`, namespaced, versions per MetalLB v0.13.12 (spec §3.7): `v1beta1`
//! (served, storage) for every kind but `BGPPeer`, which is served only as `v1beta2`
//! (storage). Upstream also serves `BGPPeer` `v1beta1` through a conversion webhook; we
//! serve one version, so no conversion strategy is needed (`v1beta1` BGPPeers must be
//! rewritten as `v1beta2`: same fields, plus `passwordSecret` and `vrf`). No status
//! subresource: nothing writes status.
//!
//! [`crds`] post-processes the generated schemas in two ways, both to match what
//! controller-gen produces for upstream: optional fields are not `nullable` (absent means
//! unset; `nullable` would also stop the apiserver from applying `default`s to explicit
//! nulls), and unsigned integer formats (`uint16`, `uint32`), which Kubernetes does not know,
//! become `int32`/`int64` with the ranges kept as `minimum`/`maximum`.

use std::ops::Deref;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::crd as spec;

macro_rules! kind {
    ($(#[$doc:meta])* $newtype:ident($plain:ty), $kind:literal, $version:literal, $desc:literal) => {
        $(#[$doc])*
        #[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[kube(group = "metallb.io", version = $version, kind = $kind, namespaced, doc = $desc)]
        #[kube(derive = "PartialEq")]
        #[serde(transparent)]
        pub struct $newtype(pub $plain);

        impl Deref for $newtype {
            type Target = $plain;

            fn deref(&self) -> &$plain {
                &self.0
            }
        }

        impl From<$plain> for $newtype {
            fn from(s: $plain) -> Self {
                $newtype(s)
            }
        }
    };
}

kind!(
    /// The desired BGP session.
    BGPPeerSpec(spec::BGPPeerSpec),
    "BGPPeer",
    "v1beta2",
    "BGPPeer is a BGP session MetalLB's speakers open to a router."
);
kind!(
    /// The addresses and how they are handed out.
    IPAddressPoolSpec(spec::IPAddressPoolSpec),
    "IPAddressPool",
    "v1beta1",
    "IPAddressPool is a set of IP addresses MetalLB hands out to LoadBalancer Services."
);
kind!(
    /// Which pools to announce over BGP, and how.
    BGPAdvertisementSpec(spec::BGPAdvertisementSpec),
    "BGPAdvertisement",
    "v1beta1",
    "BGPAdvertisement announces the IPs of pools to BGP peers."
);
kind!(
    /// Which pools to announce with ARP/NDP.
    L2AdvertisementSpec(spec::L2AdvertisementSpec),
    "L2Advertisement",
    "v1beta1",
    "L2Advertisement announces the IPs of pools with ARP and NDP."
);
kind!(
    /// The BFD session parameters.
    BFDProfileSpec(spec::BFDProfileSpec),
    "BFDProfile",
    "v1beta1",
    "BFDProfile is a set of BFD session parameters BGPPeers refer to (FRR mode)."
);
kind!(
    /// The named communities.
    CommunitySpec(spec::CommunitySpec),
    "Community",
    "v1beta1",
    "Community gives names to BGP community values for BGPAdvertisements."
);

/// Every CRD, in upstream's kind order, with the schema post-processing of the module docs.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut all = vec![
        BGPPeer::crd(),
        IPAddressPool::crd(),
        BGPAdvertisement::crd(),
        L2Advertisement::crd(),
        BFDProfile::crd(),
        Community::crd(),
    ];
    for crd in &mut all {
        for v in &mut crd.spec.versions {
            if let Some(s) = v
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                tidy(s);
            }
        }
    }
    all
}

/// Drop `nullable`, map unsigned formats to Kubernetes' integer formats, recursively.
fn tidy(s: &mut JSONSchemaProps) {
    s.nullable = None;
    s.format = match s.format.take().as_deref() {
        Some("uint8" | "uint16" | "int8" | "int16") => Some("int32".into()),
        Some("uint32" | "uint64" | "uint") => Some("int64".into()),
        other => other.map(str::to_string),
    };
    for p in s.properties.iter_mut().flat_map(|m| m.values_mut()) {
        tidy(p);
    }
    match &mut s.items {
        Some(JSONSchemaPropsOrArray::Schema(p)) => tidy(p),
        Some(JSONSchemaPropsOrArray::Schemas(ps)) => ps.iter_mut().for_each(tidy),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(p)) = &mut s.additional_properties {
        tidy(p);
    }
}

/// `spec` with the defaults of `kind`'s schema written in, as the apiserver writes them when
/// it stores an object (so an object we are about to write compares equal to the one it
/// stored).
pub fn with_defaults(kind: spec::Kind, mut spec: serde_json::Value) -> serde_json::Value {
    let crd = crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind.as_str());
    let props = crd
        .as_ref()
        .and_then(|c| c.spec.versions.first())
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| s.properties.as_ref())
        .and_then(|p| p.get("spec"));
    if let Some(schema) = props {
        default_into(schema, &mut spec);
    }
    spec
}

fn default_into(schema: &JSONSchemaProps, v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, p) in schema.properties.iter().flatten() {
                if let (false, Some(d)) = (m.contains_key(k), &p.default) {
                    m.insert(k.clone(), d.0.clone());
                }
                if let Some(child) = m.get_mut(k) {
                    default_into(p, child);
                }
            }
        }
        serde_json::Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(p)) = &schema.items {
                items.iter_mut().for_each(|i| default_into(p, i));
            }
        }
        _ => {}
    }
}

/// File name of a CRD under `manifests/migration-crds/` (controller-gen's `<group>_<plural>.yaml`).
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// A CRD as YAML, keys sorted, after a generated-file header.
pub fn render(crd: &CustomResourceDefinition) -> String {
    let header = [
        "Generated from src/k8s/crds.rs (plain specs in src/config/crd.rs); do not edit."
            .to_string(),
        "Regenerate: UPDATE_GOLDEN=1 cargo test --test manifests".to_string(),
    ];
    let value = serde_json::to_value(crd).unwrap_or_default();
    crate::migrate::emit::documents(&header, &[value])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_and_plain_specs_serialize_identically() {
        let plain = spec::BGPPeerSpec {
            my_asn: 64500,
            peer_asn: 64501,
            peer_address: "192.0.2.1".into(),
            peer_port: Some(1179),
            hold_time: Some("1m30s".into()),
            ..Default::default()
        };
        let peer = BGPPeer::new("peer1", BGPPeerSpec(plain.clone()));
        let v = serde_json::to_value(&peer).unwrap();
        assert_eq!(v["spec"], serde_json::to_value(&plain).unwrap());
        assert_eq!(v["apiVersion"], "metallb.io/v1beta2");
        let back: BGPPeer = serde_json::from_value(v).unwrap();
        assert_eq!(*back.spec, plain);
    }

    #[test]
    fn kinds_match_the_plain_kind_table() {
        let crds = crds();
        for (crd, kind) in crds.iter().zip(spec::Kind::ALL) {
            assert_eq!(crd.spec.names.kind, kind.as_str());
            assert_eq!(crd.spec.versions.len(), 1);
            assert_eq!(crd.spec.versions[0].name, kind.version());
        }
    }
}
