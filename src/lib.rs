//! metallb-rs: a drop-in replacement for MetalLB 0.9–0.12, configured by the legacy `config`
//! ConfigMap, with live reload.
//!
//! Pure cores (no I/O): [`config`], [`allocator`], [`reload`], [`migrate`] (except its `cli`
//! front end, which reads and writes files). [`k8s`] holds the Kubernetes types and pure
//! functions over them; [`controller`] is the I/O driver of the controller binary.

pub mod allocator;
pub mod bfd;
pub mod bgp;
pub mod cli;
pub mod config;
pub mod controller;
pub mod http;
pub mod k8s;
pub mod l2;
pub mod metrics;
pub mod migrate;
pub mod reload;
pub mod speaker;
pub mod sys;
