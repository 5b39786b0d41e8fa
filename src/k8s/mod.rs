//! Kubernetes glue: the client, watches, Events, CRD types and lean object views. The binaries'
//! drivers (`controller`, `speaker::driver`, `migrate::cluster`) also call `kube` directly for
//! their own requests (status writes, lists, Leases); the pure cores never do.
//!
//! - [`crds`]: the metallb.io kinds as kube `CustomResource`s, wrapping the plain spec structs
//!   of [`crate::config::crd`]; the source of `manifests/migration-crds/`.
//! - [`config_source`]: `--config-source=configmap|crds|auto`, the config watch both binaries
//!   start; [`source`]: the ConfigMap and file watches, the client and the namespace;
//!   [`watch`]: the one watcher → channel adapter.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// `namespace/name` of an object (the key every watch and map uses).
pub fn object_key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

pub mod config_source;
pub mod crds;
pub mod events;
pub mod lean;
pub mod service;
pub mod source;
pub mod watch;
