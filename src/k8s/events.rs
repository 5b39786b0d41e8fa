//! core/v1 Events, the kind MetalLB 0.9–0.12's RBAC grants (`events` create/patch in the core
//! group). kube's `Recorder` writes events.k8s.io/v1, which that RBAC forbids, so we build
//! core/v1 Events ourselves. Writing an Event never fails the caller: errors are logged once
//! per kind of failure.

use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Normal`.
    Normal,
    /// `Warning`.
    Warning,
}

/// Writes core/v1 Events for one component (`metallb-controller`, `metallb-speaker`).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
    host: Option<String>,
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// The object reference of any resource.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        ..Default::default()
    }
}

impl Recorder {
    /// A recorder for `component` (the Event source), optionally naming the host.
    pub fn new(client: Client, component: &'static str, host: Option<String>) -> Self {
        Recorder {
            client,
            component,
            host,
        }
    }

    /// Publish an Event about `obj`. Failures are logged (the first at warn level).
    pub async fn publish(&self, obj: &ObjectReference, kind: Kind, reason: &str, message: &str) {
        let ns = obj.namespace.clone().unwrap_or_else(|| "default".into());
        let now = k8s_openapi::jiff::Timestamp::now();
        let ev = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", obj.name.as_deref().unwrap_or("object"))),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: obj.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(match kind {
                Kind::Normal => "Normal".into(),
                Kind::Warning => "Warning".into(),
            }),
            source: Some(EventSource {
                component: Some(self.component.into()),
                host: self.host.clone(),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            reporting_component: Some(self.component.into()),
            reporting_instance: self.host.clone().or_else(|| Some(self.component.into())),
            action: Some(reason.to_string()),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, reason, object = obj.name.as_deref().unwrap_or_default(), "Cannot write Events; carrying on without them");
            } else {
                tracing::debug!(error = %e, reason, "Event not written");
            }
        }
    }
}

/// The name of an object, for messages.
pub fn name_of<K: ResourceExt>(obj: &K) -> String {
    obj.name_any()
}
