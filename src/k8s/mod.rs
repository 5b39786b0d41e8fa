//! Kubernetes glue (the only place `kube::` is imported).
//!
//! - [`crds`]: the metallb.io kinds as kube `CustomResource`s, wrapping the plain spec structs
//!   of [`crate::config::crd`]; the source of `manifests/migration-crds/`.
//! - [`config_source`]: `--config-source=configmap|crds|auto`, the config watch both binaries
//!   start; [`source`]: the ConfigMap and file watches, the client and the namespace.

pub mod config_source;
pub mod crds;
pub mod events;
pub mod lean;
pub mod service;
pub mod source;
