//! Service annotation patches for renamed pools. Pure (takes the text of a Services dump).
//!
//! A Service asks for a pool with the annotation `metallb.universe.tf/address-pool` (MetalLB
//! 0.14.9+ also reads `metallb.io/address-pool`). When migration renames a pool, every Service
//! naming it by its old name would lose its pool, so for each such Service we emit a patch: a
//! `v1 Service` object carrying only `apiVersion`, `kind`, `metadata.name`,
//! `metadata.namespace` and the rewritten annotation(s). Such a partial object works with
//! `kubectl apply --server-side` (it only claims those annotations) and with client-side
//! `kubectl apply` on an existing Service (which merges it); each patch is also a ready
//! `kubectl patch --type merge` body. Annotations naming a pool that the config does not define
//! under either name are reported as warnings: such Services are already broken.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Annotations that name a Service's pool.
pub const POOL_ANNOTATIONS: [&str; 2] = [
    "metallb.universe.tf/address-pool",
    "metallb.io/address-pool",
];

/// A Service with the pool annotations it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Namespace (`default` when the dump omits it).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The pool annotations present (key → pool name).
    pub pool_annotations: BTreeMap<String, String>,
}

/// Why a Services dump cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServicesError {
    /// Not YAML.
    #[error("could not parse YAML: {0}")]
    Yaml(String),
    /// A Service without a name.
    #[error("Service #{0} has no metadata.name")]
    Unnamed(usize),
    /// An annotation value that is not a string.
    #[error("Service {0}: annotation {1} is not a string")]
    NotAString(String, String),
}

/// The Services of a dump: a `kind: List` (`kubectl get svc -A -o yaml`), a `ServiceList`, or
/// one or more `Service` documents. Returns the Services and how many other objects were
/// skipped.
pub fn parse(text: &str) -> Result<(Vec<Service>, usize), ServicesError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, crate::config::crd::manifest_options())
            .map_err(|e| ServicesError::Yaml(e.without_snippet().to_string()))?;
    let mut items = Vec::new();
    for d in docs {
        match (d.get("kind").and_then(Value::as_str), d.get("items")) {
            (Some(k), Some(Value::Array(list))) if k.ends_with("List") => {
                items.extend(list.iter().cloned())
            }
            _ => items.push(d),
        }
    }
    let mut out = Vec::new();
    let mut skipped = 0;
    for (i, item) in items.iter().enumerate() {
        // Items of a ServiceList may omit kind.
        let kind = item
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("Service");
        if kind != "Service" {
            skipped += 1;
            continue;
        }
        let name = item
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or(ServicesError::Unnamed(i + 1))?;
        let namespace = item
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let mut pool_annotations = BTreeMap::new();
        for key in POOL_ANNOTATIONS {
            let Some(v) = item
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(key))
            else {
                continue;
            };
            let v = v.as_str().ok_or_else(|| {
                ServicesError::NotAString(format!("{namespace}/{name}"), key.to_string())
            })?;
            pool_annotations.insert(key.to_string(), v.to_string());
        }
        out.push(Service {
            namespace: namespace.to_string(),
            name: name.to_string(),
            pool_annotations,
        });
    }
    Ok((out, skipped))
}

/// A patch rewriting the pool annotations of one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePatch {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Rewritten annotations: key → (old pool name, new pool name).
    pub annotations: BTreeMap<String, (String, String)>,
}

impl ServicePatch {
    /// The patch as a partial `v1 Service` object.
    pub fn to_value(&self) -> Value {
        let annotations: BTreeMap<&str, &str> = self
            .annotations
            .iter()
            .map(|(k, (_, new))| (k.as_str(), new.as_str()))
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": self.namespace, "annotations": annotations},
        })
    }
}

/// An annotation naming a pool the config does not define.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPool {
    /// `namespace/name` of the Service.
    pub service: String,
    /// The annotation.
    pub annotation: String,
    /// The pool it names.
    pub pool: String,
}

/// Patches (sorted by namespace and name) for Services naming renamed pools, and the
/// annotations naming pools that exist under neither their old nor their new name.
/// `renames` maps old pool names to new ones; `pools` are the pool names after migration.
pub fn plan(
    services: &[Service],
    renames: &BTreeMap<String, String>,
    pools: &[String],
) -> (Vec<ServicePatch>, Vec<UnknownPool>) {
    let mut patches = Vec::new();
    let mut unknown = Vec::new();
    for s in services {
        let mut annotations = BTreeMap::new();
        for (key, pool) in &s.pool_annotations {
            if let Some(new) = renames.get(pool) {
                annotations.insert(key.clone(), (pool.clone(), new.clone()));
            } else if !pools.contains(pool) {
                unknown.push(UnknownPool {
                    service: format!("{}/{}", s.namespace, s.name),
                    annotation: key.clone(),
                    pool: pool.clone(),
                });
            }
        }
        if !annotations.is_empty() {
            patches.push(ServicePatch {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                annotations,
            });
        }
    }
    patches.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    unknown.sort_by(|a, b| (&a.service, &a.annotation).cmp(&(&b.service, &b.annotation)));
    (patches, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: web
    namespace: shop
    annotations: {metallb.universe.tf/address-pool: Prod_Pool}
- apiVersion: v1
  kind: Service
  metadata:
    name: api
    namespace: shop
    annotations: {metallb.io/address-pool: gone, other: x}
- apiVersion: v1
  kind: Service
  metadata: {name: kubernetes, namespace: default}
- apiVersion: v1
  kind: Pod
  metadata: {name: p}
"#;

    #[test]
    fn parses_a_kubectl_list() {
        let (svcs, skipped) = parse(DUMP).unwrap();
        assert_eq!(skipped, 1);
        assert_eq!(svcs.len(), 3);
        assert_eq!(
            svcs[0].pool_annotations["metallb.universe.tf/address-pool"],
            "Prod_Pool"
        );
        assert!(svcs[2].pool_annotations.is_empty());
    }

    #[test]
    fn patches_renamed_and_warns_about_unknown() {
        let (svcs, _) = parse(DUMP).unwrap();
        let renames = BTreeMap::from([("Prod_Pool".to_string(), "prod-pool".to_string())]);
        let (patches, unknown) = plan(&svcs, &renames, &["prod-pool".to_string()]);
        assert_eq!(patches.len(), 1);
        assert_eq!(
            patches[0].to_value(),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop",
                "annotations": {"metallb.universe.tf/address-pool": "prod-pool"}}})
        );
        assert_eq!(unknown.len(), 1);
        assert_eq!(unknown[0].pool, "gone");
    }
}
