//! Watched kinds read without what neither binary uses: `LeanService`, `LeanSlice` and
//! `LeanEndpoints` take the same JSON as [`Service`], [`EndpointSlice`] and [`Endpoints`], but
//! their deserializers keep only the metadata we read or must send back. `managedFields`, most
//! of a listed object's bytes, is skipped while parsing and never allocated, for list pages and
//! watch events alike; so are an EndpointSlice's `ports`. Each serializes as the object it wraps.
//!
//! Why: with 10,000 Services the speaker decodes 10,000 Services and 10,000 EndpointSlices at
//! start, and the transient copies of their managed fields were most of its peak memory
//! (BENCHMARKS.md, "Speaker, BGP"); the controller's Services the same (its section).

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointSubset, Endpoints, Service, ServiceSpec, ServiceStatus};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Serialize};

/// The metadata fields the lean kinds read (no `managedFields`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanMeta {
    name: Option<String>,
    namespace: Option<String>,
    generate_name: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    finalizers: Option<Vec<String>>,
    owner_references: Option<Vec<OwnerReference>>,
}

/// The [`ObjectMeta`] of what was read (empty when the object had none).
fn meta(m: Option<LeanMeta>) -> ObjectMeta {
    let Some(m) = m else {
        return ObjectMeta::default();
    };
    ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        generate_name: m.generate_name,
        uid: m.uid,
        resource_version: m.resource_version,
        creation_timestamp: m.creation_timestamp,
        deletion_timestamp: m.deletion_timestamp,
        labels: m.labels,
        annotations: m.annotations,
        finalizers: m.finalizers,
        owner_references: m.owner_references,
        ..Default::default()
    }
}

/// Implements `kube::Resource` (as the wrapped kind) and `Serialize` for a lean wrapper.
macro_rules! lean_kind {
    ($lean:ident, $kind:ty) => {
        impl kube::Resource for $lean {
            type DynamicType = ();
            type Scope = <$kind as kube::Resource>::Scope;

            fn kind(_: &()) -> Cow<'_, str> {
                <$kind as kube::Resource>::kind(&())
            }
            fn group(_: &()) -> Cow<'_, str> {
                <$kind as kube::Resource>::group(&())
            }
            fn version(_: &()) -> Cow<'_, str> {
                <$kind as kube::Resource>::version(&())
            }
            fn api_version(_: &()) -> Cow<'_, str> {
                <$kind as kube::Resource>::api_version(&())
            }
            fn plural(_: &()) -> Cow<'_, str> {
                <$kind as kube::Resource>::plural(&())
            }
            fn meta(&self) -> &ObjectMeta {
                &self.0.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.0.metadata
            }
        }

        impl Serialize for $lean {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }
    };
}

/// A [`Service`] read without `managedFields`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeanService(pub Service);

impl<'de> Deserialize<'de> for LeanService {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            metadata: Option<LeanMeta>,
            spec: Option<ServiceSpec>,
            status: Option<ServiceStatus>,
        }
        let w = Wire::deserialize(d)?;
        Ok(LeanService(Service {
            metadata: meta(w.metadata),
            spec: w.spec,
            status: w.status,
        }))
    }
}
lean_kind!(LeanService, Service);

/// An [`EndpointSlice`] read without `managedFields` and `ports`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeanSlice(pub EndpointSlice);

impl<'de> Deserialize<'de> for LeanSlice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            metadata: Option<LeanMeta>,
            // `null` as well as absent: an EndpointSlice without endpoints is listed with
            // `"endpoints": null`.
            address_type: Option<String>,
            endpoints: Option<Vec<Endpoint>>,
        }
        let w = Wire::deserialize(d)?;
        Ok(LeanSlice(EndpointSlice {
            metadata: meta(w.metadata),
            address_type: w.address_type.unwrap_or_default(),
            endpoints: w.endpoints.unwrap_or_default(),
            ports: None,
        }))
    }
}
lean_kind!(LeanSlice, EndpointSlice);

/// An [`Endpoints`] read without `managedFields`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeanEndpoints(pub Endpoints);

impl<'de> Deserialize<'de> for LeanEndpoints {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            metadata: Option<LeanMeta>,
            subsets: Option<Vec<EndpointSubset>>,
        }
        let w = Wire::deserialize(d)?;
        Ok(LeanEndpoints(Endpoints {
            metadata: meta(w.metadata),
            subsets: w.subsets,
        }))
    }
}
lean_kind!(LeanEndpoints, Endpoints);

#[cfg(test)]
mod tests {
    use super::*;

    fn managed() -> serde_json::Value {
        serde_json::json!([{"manager": "kube-controller-manager", "operation": "Update",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:endpoints": {}}}])
    }

    #[test]
    fn slices_keep_what_the_speaker_reads() {
        let json = serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "web-abcde", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                "labels": {"kubernetes.io/service-name": "web"},
                "managedFields": managed()
            },
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "nodeName": "n1"},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}, "nodeName": "n2"}
            ],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
        });
        let full: EndpointSlice = serde_json::from_value(json.clone()).unwrap();
        let lean: LeanSlice = serde_json::from_value(json).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        assert!(lean.0.metadata.managed_fields.is_none());
        assert!(lean.0.ports.is_none());
        assert_eq!(lean.0.endpoints, full.endpoints);
        assert_eq!(lean.0.address_type, "IPv4");
        assert_eq!(lean.0.metadata.labels, full.metadata.labels);
        assert_eq!(lean.0.metadata.uid.as_deref(), Some("u1"));
        let wire = serde_json::to_value(&lean).unwrap();
        assert_eq!(wire["kind"], "EndpointSlice");
    }

    #[test]
    fn endpoints_and_services_drop_only_managed_fields() {
        let json = serde_json::json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "web", "namespace": "shop", "managedFields": managed()},
            "subsets": [{"addresses": [{"ip": "10.0.0.1", "nodeName": "n1"}],
                         "notReadyAddresses": [{"ip": "10.0.0.2", "nodeName": "n2"}]}]
        });
        let full: Endpoints = serde_json::from_value(json.clone()).unwrap();
        let lean: LeanEndpoints = serde_json::from_value(json).unwrap();
        assert!(lean.0.metadata.managed_fields.is_none());
        assert_eq!(lean.0.subsets, full.subsets);
        assert_eq!(lean.0.metadata.name, full.metadata.name);

        let json = serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "managedFields": managed()},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}
        });
        let lean: LeanService = serde_json::from_value(json).unwrap();
        assert!(lean.0.metadata.managed_fields.is_none());
        assert_eq!(
            lean.0
                .spec
                .and_then(|s| s.external_traffic_policy)
                .as_deref(),
            Some("Local")
        );
    }

    #[test]
    fn missing_or_null_fields_are_empty_not_errors() {
        let lean: LeanSlice = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(lean.0.metadata, ObjectMeta::default());
        assert!(lean.0.endpoints.is_empty());
        // As the apiserver lists a slice whose Service has no endpoints.
        let json = serde_json::json!({"metadata": {"name": "local-x"}, "addressType": "IPv4",
            "endpoints": null, "ports": [{"port": 8080}]});
        let full: EndpointSlice = serde_json::from_value(json.clone()).unwrap();
        let lean: LeanSlice = serde_json::from_value(json).unwrap();
        assert_eq!(lean.0.endpoints, full.endpoints);
        let json = serde_json::json!({"metadata": null, "subsets": null});
        let lean: LeanEndpoints = serde_json::from_value(json).unwrap();
        assert!(lean.0.subsets.is_none());
        let json = serde_json::json!({"metadata": {"labels": null}, "spec": null, "status": null});
        let lean: LeanService = serde_json::from_value(json).unwrap();
        assert!(lean.0.spec.is_none() && lean.0.metadata.labels.is_none());
    }
}
