//! The one watcher → channel adapter: every single-kind watch of the binaries (the ConfigMap,
//! the controller's Services, the speaker's Services, EndpointSlices, Endpoints, Nodes and
//! Pods) runs through [`forward`]. The CRD-mode source merges several watches with debouncing
//! and keeps its own loop ([`super::config_source`]).

use std::fmt::Debug;
use std::hash::Hash;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::warn;

/// Server-side timeout of every watch request, in seconds. kube's watcher gives up on a watch
/// that has sent nothing for this plus 5 s and resumes it from the last resourceVersion (no
/// relist), so a connection that died without a FIN or RST (a half-open one: a rebooted load
/// balancer, a dropped NAT entry) stalls events for at most a minute, not kube's default
/// 295 s. client-go finds such connections with HTTP/2 pings after about 45 s. The apiserver
/// sends a bookmark about every minute and ends the watch at this timeout, so an idle but
/// healthy watch is simply renewed.
pub const WATCH_TIMEOUT_SECS: u32 = 55;

/// Watch `api` with `cfg` (kube's default back-off between failed attempts) and send what
/// `map` makes of each event, skipping `None`, until the receiver is gone. A failed attempt is
/// logged once as "`what` watch failed; retrying" and retried by the watcher, which relists
/// (an `Init` … `InitDone` series) when the watch cannot resume. Every watch request carries
/// [`WATCH_TIMEOUT_SECS`].
pub async fn forward<K, T>(
    api: Api<K>,
    cfg: watcher::Config,
    what: &str,
    tx: mpsc::Sender<T>,
    mut map: impl FnMut(Event<K>) -> Option<T>,
) where
    K: kube::Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let cfg = cfg.timeout(WATCH_TIMEOUT_SECS);
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    while let Some(ev) = stream.next().await {
        let out = match ev {
            Ok(ev) => map(ev),
            Err(e) => {
                warn!(error = %e, "{what} watch failed; retrying");
                None
            }
        };
        if let Some(out) = out
            && tx.send(out).await.is_err()
        {
            return;
        }
    }
}
