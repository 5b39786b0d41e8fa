//! Leader election over a `coordination.k8s.io/v1` Lease, so a rolling update or
//! `replicas: 2` never has two controllers allocating at once.
//!
//! MetalLB 0.9–0.12 grant no Lease permissions: there we log one warning and run alone, as
//! upstream always did. With our own manifests (which grant leases) the controller waits for
//! the Lease before it reads anything, renews it every [`RENEW`], and exits when it loses it
//! (the Deployment restarts it as a follower), the same contract as client-go's
//! leaderelection `OnStoppedLeading`. Take-over after a crash happens once the holder's
//! [`DURATION`] has passed since its last renewal.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{info, warn};

/// How long a Lease stays valid without renewal.
pub const DURATION: Duration = Duration::from_secs(8);
/// How often the holder renews.
pub const RENEW: Duration = Duration::from_secs(2);

/// Our identity: the pod name (HOSTNAME) plus the process id.
pub fn identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "controller".into());
    format!("{host}_{}", std::process::id())
}

enum Step {
    Acquired(Box<Lease>),
    Held,
    Forbidden,
    Retry,
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

async fn try_take(api: &Api<Lease>, name: &str, me: &str) -> Step {
    let secs = i32::try_from(DURATION.as_secs()).unwrap_or(15);
    let existing = match api.get_opt(name).await {
        Ok(l) => l,
        Err(kube::Error::Api(e)) if e.code == 403 => return Step::Forbidden,
        Err(e) => {
            warn!(error = %e, "Cannot read the controller Lease");
            return Step::Retry;
        }
    };
    let fresh_spec = |transitions: i32| LeaseSpec {
        holder_identity: Some(me.into()),
        lease_duration_seconds: Some(secs),
        acquire_time: Some(MicroTime(now())),
        renew_time: Some(MicroTime(now())),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let pp = PostParams {
        field_manager: Some(super::field_manager()),
        ..Default::default()
    };
    match existing {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                spec: Some(fresh_spec(0)),
            };
            match api.create(&pp, &lease).await {
                Ok(l) => Step::Acquired(Box::new(l)),
                Err(kube::Error::Api(e)) if e.code == 403 => Step::Forbidden,
                Err(_) => Step::Retry,
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let renewed = spec.renew_time.as_ref().map(|t| t.0);
            let dur = i64::from(spec.lease_duration_seconds.unwrap_or(secs));
            let expired = renewed.is_none_or(|t| now().as_second() - t.as_second() > dur);
            if holder != me && !holder.is_empty() && !expired {
                return Step::Held;
            }
            let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != me);
            lease.spec = Some(fresh_spec(transitions));
            // The resourceVersion in `lease` makes this a compare-and-swap.
            match api.replace(name, &pp, &lease).await {
                Ok(l) => Step::Acquired(Box::new(l)),
                Err(kube::Error::Api(e)) if e.code == 403 => Step::Forbidden,
                Err(_) => Step::Retry,
            }
        }
    }
}

/// Block until this process holds the Lease (or RBAC forbids Leases), then keep renewing it
/// in the background; exit the process if it is lost.
pub async fn acquire(client: Client, ns: &str, name: &str) {
    let api: Api<Lease> = Api::namespaced(client, ns);
    let me = identity();
    let mut announced = false;
    let mut lease = loop {
        match try_take(&api, name, &me).await {
            Step::Acquired(l) => break *l,
            Step::Forbidden => {
                warn!(
                    lease = name,
                    "RBAC does not allow Leases (MetalLB 0.9-0.12 roles): running without leader election, as MetalLB does; run a single replica"
                );
                return;
            }
            Step::Held if !announced => {
                info!(lease = name, "Another controller holds the Lease; waiting");
                announced = true;
            }
            Step::Held | Step::Retry => {}
        }
        tokio::time::sleep(RENEW).await;
    };
    info!(lease = name, identity = %me, "Acquired the controller Lease");
    tokio::spawn(async move {
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW).await;
            if let Some(spec) = lease.spec.as_mut() {
                spec.renew_time = Some(MicroTime(now()));
            }
            let name = lease.metadata.name.clone().unwrap_or_default();
            match api.replace(&name, &PostParams::default(), &lease).await {
                Ok(l) => {
                    lease = l;
                    last_ok = std::time::Instant::now();
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    warn!("Lost the controller Lease to another controller; exiting");
                    std::process::exit(1);
                }
                Err(e) => {
                    // Stop before the Lease can expire under us (another one may take it).
                    if last_ok.elapsed() + RENEW >= DURATION {
                        warn!(error = %e, "Cannot renew the controller Lease; exiting before it expires");
                        std::process::exit(1);
                    }
                }
            }
        }
    });
}
