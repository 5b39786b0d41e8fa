//! Leader election over a `coordination.k8s.io/v1` Lease, so a rolling update or
//! `replicas: 2` never has two controllers allocating at once.
//!
//! MetalLB 0.9–0.12 grant no Lease permissions: there we log one warning and run alone, as
//! upstream always did (see compat/README.md for what that means during a rolling update).
//! With our own manifests (which grant leases) the controller waits for the Lease before it
//! reads anything. The rules, client-go's `leaderelection` where it has one:
//!
//! * **Expiry is measured on our own monotonic clock from when we observed the Lease
//!   change**, never from the `renewTime` written in it (client-go's `observedTime`), so a
//!   holder whose wall clock is hours ahead or behind is neither robbed nor waited for
//!   forever. A follower takes the Lease only after it saw the same record for a whole
//!   `leaseDurationSeconds`, or at once when the holder released it (empty `holderIdentity`).
//! * **The leader fences itself**: a renewal counts from the moment it was *sent*; when no
//!   renewal succeeded within the renew deadline (3/4 of the duration) the process stops at
//!   once, whatever its in-flight requests are doing. A follower's wait (one duration from
//!   when it observed the last renewal, which is after that renewal was sent) is longer, so
//!   the old leader has stopped before anyone else can take over.
//! * **Every request has a timeout** (a quarter of the duration, at most 10 s), so no stalled connection
//!   delays the fence or the take-over.
//! * **Release on SIGTERM** ([`Leader::release`]): the holder clears `holderIdentity`, so the
//!   next controller of a rolling update takes over at once instead of after a duration.
//!
//! Losing the Lease to a compare-and-swap conflict also exits; the Deployment restarts the
//! process as a follower (client-go's `OnStoppedLeading` contract).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;
use tracing::{info, warn};

/// How long a Lease stays valid without renewal, by default.
pub const DURATION: Duration = Duration::from_secs(8);

/// The timing of one election: the Lease duration and what follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `leaseDurationSeconds` we write.
    pub duration: Duration,
}

impl Timing {
    /// Timing for a Lease duration (at least 2 s).
    pub fn new(duration: Duration) -> Timing {
        Timing {
            duration: duration.max(Duration::from_secs(2)),
        }
    }
    /// How often the holder renews, and a follower looks (client-go's default retry period,
    /// 2 s, or less for short Leases).
    pub fn retry(self) -> Duration {
        (self.duration / 4).min(Duration::from_secs(2))
    }
    /// A leader that could not renew for this long (counted from sending its last successful
    /// renewal) stops.
    pub fn renew_deadline(self) -> Duration {
        self.duration * 3 / 4
    }
    /// Every Lease request must answer within this time (a quarter of the duration, at most
    /// 10 s).
    pub fn request_timeout(self) -> Duration {
        (self.duration / 4).min(Duration::from_secs(10))
    }
    fn seconds(self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }
}

impl Default for Timing {
    fn default() -> Timing {
        Timing::new(DURATION)
    }
}

/// Our identity: the pod name (HOSTNAME) plus the process id.
pub fn identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "controller".into());
    format!("{host}_{}", std::process::id())
}

/// What a follower last saw of the Lease, and when (on the monotonic clock). Pure.
#[derive(Debug, Clone, Default)]
pub struct Observer {
    seen: Option<(Record, Instant)>,
}

/// The parts of a Lease that change on every renewal or hand-over (client-go's
/// `LeaderElectionRecord`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: String,
    duration: Option<i32>,
    acquire: Option<String>,
    renew: Option<String>,
    transitions: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Record {
        Record {
            holder: spec.holder_identity.clone().unwrap_or_default(),
            duration: spec.lease_duration_seconds,
            acquire: spec.acquire_time.as_ref().map(|t| t.0.to_string()),
            renew: spec.renew_time.as_ref().map(|t| t.0.to_string()),
            transitions: spec.lease_transitions,
        }
    }
}

impl Observer {
    /// Look at the Lease `spec` at `now`: whether someone else holds it validly. Its own
    /// `renewTime` is ignored; what counts is how long *we* have seen it unchanged.
    pub fn held_by_other(&mut self, spec: &LeaseSpec, me: &str, now: Instant) -> bool {
        let rec = Record::of(spec);
        let since = match &self.seen {
            Some((r, t)) if *r == rec => *t,
            _ => {
                self.seen = Some((rec.clone(), now));
                now
            }
        };
        if rec.holder.is_empty() || rec.holder == me {
            return false;
        }
        let secs = u64::try_from(rec.duration.unwrap_or(0).max(1)).unwrap_or(1);
        now.duration_since(since) < Duration::from_secs(secs)
    }
}

enum Step {
    Acquired(Box<Lease>),
    Held,
    Forbidden,
    Retry,
}

fn wall_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// A Lease request, failed when it does not answer within `t`.
async fn timed<T>(t: Duration, f: impl Future<Output = kube::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(t, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(kube::Error::Api(e))) if e.code == 403 => Err("403".into()),
        Ok(Err(kube::Error::Api(e))) if e.code == 409 => Err("409".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {t:?}")),
    }
}

fn pp() -> PostParams {
    PostParams {
        field_manager: Some(super::field_manager()),
        ..Default::default()
    }
}

async fn try_take(api: &Api<Lease>, name: &str, me: &str, obs: &mut Observer, t: Timing) -> Step {
    let existing = match timed(t.request_timeout(), api.get_opt(name)).await {
        Ok(l) => l,
        Err(e) if e == "403" => return Step::Forbidden,
        Err(e) => {
            warn!(error = %e, "Cannot read the controller Lease");
            return Step::Retry;
        }
    };
    let fresh_spec = |transitions: i32| LeaseSpec {
        holder_identity: Some(me.into()),
        lease_duration_seconds: Some(t.seconds()),
        acquire_time: Some(wall_now()),
        renew_time: Some(wall_now()),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let result = match existing {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                spec: Some(fresh_spec(0)),
            };
            timed(t.request_timeout(), api.create(&pp(), &lease)).await
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            if obs.held_by_other(&spec, me, Instant::now()) {
                return Step::Held;
            }
            let holder = spec.holder_identity.unwrap_or_default();
            let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != me);
            lease.spec = Some(fresh_spec(transitions));
            // The resourceVersion in `lease` makes this a compare-and-swap.
            timed(t.request_timeout(), api.replace(name, &pp(), &lease)).await
        }
    };
    match result {
        Ok(l) => Step::Acquired(Box::new(l)),
        Err(e) if e == "403" => Step::Forbidden,
        Err(_) => Step::Retry,
    }
}

/// The Lease this process holds, renewed in the background until [`release`](Self::release).
pub struct Leader {
    api: Api<Lease>,
    name: String,
    renewer: tokio::task::JoinHandle<Lease>,
    stop: tokio::sync::oneshot::Sender<()>,
    timing: Timing,
}

impl Leader {
    /// Stop renewing and hand the Lease over: clear `holderIdentity` (client-go's
    /// `ReleaseOnCancel`), so a waiting controller takes over at once. Call only after this
    /// process stopped writing.
    pub async fn release(self) {
        let _ = self.stop.send(());
        let Ok(mut lease) = self.renewer.await else {
            return;
        };
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(wall_now());
            spec.acquire_time = Some(wall_now());
        }
        match timed(
            self.timing.request_timeout(),
            self.api.replace(&self.name, &pp(), &lease),
        )
        .await
        {
            Ok(_) => info!(lease = %self.name, "Released the controller Lease"),
            Err(e) => {
                warn!(lease = %self.name, error = %e, "Cannot release the controller Lease; it expires by itself")
            }
        }
    }
}

/// Block until this process holds the Lease (`Some`), or RBAC forbids Leases (`None`); then
/// renew it in the background and exit the process when it is lost or cannot be renewed in
/// time.
pub async fn acquire(client: Client, ns: &str, name: &str, timing: Timing) -> Option<Leader> {
    let api: Api<Lease> = Api::namespaced(client, ns);
    let me = identity();
    let mut announced = false;
    let mut obs = Observer::default();
    let lease = loop {
        let started = Instant::now();
        match try_take(&api, name, &me, &mut obs, timing).await {
            Step::Acquired(l) => break (*l, started),
            Step::Forbidden => {
                warn!(
                    lease = name,
                    "RBAC does not allow Leases (MetalLB 0.9-0.12 roles): running without leader election, as MetalLB does; run a single replica"
                );
                return None;
            }
            Step::Held if !announced => {
                info!(lease = name, "Another controller holds the Lease; waiting");
                announced = true;
            }
            Step::Held | Step::Retry => {}
        }
        tokio::time::sleep(timing.retry()).await;
    };
    info!(lease = name, identity = %me, "Acquired the controller Lease");
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let renewer = tokio::spawn(renew(api.clone(), lease, timing, stopped));
    Some(Leader {
        api,
        name: name.to_string(),
        renewer,
        stop,
        timing,
    })
}

/// Renew `lease` (acquired by a request sent at `sent`) every retry period until `stopped`
/// fires; returns the latest Lease then. Exits the process when the Lease is lost or the
/// renew deadline passes without a successful renewal.
async fn renew(
    api: Api<Lease>,
    (mut lease, mut sent): (Lease, Instant),
    timing: Timing,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) -> Lease {
    let name = lease.metadata.name.clone().unwrap_or_default();
    loop {
        let deadline = sent + timing.renew_deadline();
        tokio::select! {
            _ = &mut stopped => return lease,
            _ = tokio::time::sleep_until(deadline) => {
                warn!(lease = %name, "Could not renew the controller Lease in time; stopping before another controller may take it");
                std::process::exit(1);
            }
            _ = tokio::time::sleep(timing.retry()) => {}
        }
        let attempt = Instant::now();
        let mut next = lease.clone();
        if let Some(spec) = next.spec.as_mut() {
            spec.renew_time = Some(wall_now());
        }
        let params = pp();
        let put = timed(timing.request_timeout(), api.replace(&name, &params, &next));
        tokio::select! {
            _ = &mut stopped => return lease,
            _ = tokio::time::sleep_until(deadline) => {
                warn!(lease = %name, "Could not renew the controller Lease in time; stopping before another controller may take it");
                std::process::exit(1);
            }
            r = put => match r {
                Ok(l) => {
                    lease = l;
                    sent = attempt;
                }
                Err(e) if e == "409" => {
                    warn!(lease = %name, "Lost the controller Lease to another controller; exiting");
                    std::process::exit(1);
                }
                Err(e) => warn!(lease = %name, error = %e, "Cannot renew the controller Lease; retrying"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renew_secs: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: (!holder.is_empty()).then(|| holder.to_string()),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(
                k8s_openapi::jiff::Timestamp::from_second(renew_secs).expect("time"),
            )),
            ..Default::default()
        }
    }

    /// Expiry counts from our observation of a change, whatever `renewTime` says.
    #[test]
    fn expiry_is_measured_from_the_observed_change_not_from_renew_time() {
        let t0 = Instant::now();
        let s = |x| Duration::from_secs(x);
        for renew in [0, 4_000_000_000] {
            // renewTime in 1970 or in 2096: the same rule.
            let mut o = Observer::default();
            let lease = spec("other", renew, 8);
            assert!(o.held_by_other(&lease, "me", t0));
            assert!(o.held_by_other(&lease, "me", t0 + s(7)));
            assert!(!o.held_by_other(&lease, "me", t0 + s(8)));
            // A renewal (any change) restarts the wait.
            let renewed = spec("other", renew + 1, 8);
            assert!(o.held_by_other(&renewed, "me", t0 + s(9)));
            assert!(o.held_by_other(&renewed, "me", t0 + s(16)));
            assert!(!o.held_by_other(&renewed, "me", t0 + s(17)));
        }
        // Released (no holder), or ours: free at once.
        let mut o = Observer::default();
        assert!(!o.held_by_other(&spec("", 0, 8), "me", t0));
        assert!(!o.held_by_other(&spec("me", 0, 8), "me", t0));
    }

    #[test]
    fn the_leader_stops_before_a_follower_may_take_over() {
        for secs in [0, 2, 8, 15, 60, 120, 3600] {
            let t = Timing::new(Duration::from_secs(secs));
            assert!(t.renew_deadline() < t.duration);
            assert!(t.request_timeout() + t.retry() <= t.renew_deadline());
        }
    }
}
