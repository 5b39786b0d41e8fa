//! Where both binaries get their inputs from: the API client, the namespace they run in, and
//! the legacy config (the `config` ConfigMap through the API, or a mounted file).
//!
//! The config sources only deliver payloads; the hash gate and the validation live in
//! [`crate::reload`], identical in both binaries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::Client;
use kube::api::Api;
use kube::runtime::watcher::{self, Event as WEvent};
use tokio::sync::mpsc;
use tracing::warn;

use super::events::reference;
use crate::reload::Payload;

/// One observation of the config source.
#[derive(Debug, Clone)]
pub struct ConfigInput {
    /// The `config` key's payload or the metallb.io objects (`None`: the ConfigMap or file
    /// does not exist; an absent key reads as the empty payload, a valid empty config).
    pub payload: Option<Payload>,
    /// The object to attach Events to: the ConfigMap, or in CRD mode the object a rejection
    /// is about (else the ConfigMap or the first IPAddressPool); `None` in file mode or when
    /// never seen.
    pub reference: Option<ObjectReference>,
}

/// The namespace the process runs in: the flag, else the service account's namespace file,
/// else `metallb-system`.
pub fn namespace(flag: Option<String>) -> String {
    flag.filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "metallb-system".into())
}

/// No read on an apiserver connection may wait longer than this: a healthy watch sends at
/// least a byte every [`super::watch::WATCH_TIMEOUT_SECS`] (the server ends it then), and every
/// other request of the binaries has its own shorter timeout. Without it a request that lands on
/// a pooled connection whose path died (no FIN, no RST) would wait forever; kube sets none.
pub const READ_TIMEOUT: Duration =
    Duration::from_secs(super::watch::WATCH_TIMEOUT_SECS as u64 + 15);

/// A client from `--kubeconfig` or the environment (in-cluster, then `~/.kube/config`), with
/// [`READ_TIMEOUT`] counted from each request (not from when its pooled connection went idle).
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    let mut cfg = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => kube::Config::infer().await?,
    };
    cfg.read_timeout = Some(READ_TIMEOUT);
    cfg.reset_reader_on_write = true;
    Ok(Client::try_from(cfg)?)
}

/// Watch the ConfigMap `ns/name` and send every observation, mapped by `wrap`, until the
/// receiver is gone. Needs only get/list/watch on configmaps in `ns` (MetalLB's
/// `config-watcher` Role).
pub async fn watch_configmap<T>(
    client: Client,
    ns: String,
    name: String,
    tx: mpsc::Sender<T>,
    wrap: impl Fn(ConfigInput) -> T,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut seen_in_init = false;
    super::watch::forward(api, cfg, "ConfigMap", tx, move |ev| {
        let input = match ev {
            WEvent::Init => {
                seen_in_init = false;
                return None;
            }
            WEvent::InitApply(cm) | WEvent::Apply(cm) => {
                seen_in_init = true;
                ConfigInput {
                    payload: Some(Payload::Legacy(config_payload(&cm))),
                    reference: Some(reference(&cm)),
                }
            }
            WEvent::InitDone if !seen_in_init => ConfigInput {
                payload: None,
                reference: None,
            },
            WEvent::InitDone => return None,
            WEvent::Delete(cm) => ConfigInput {
                payload: None,
                reference: Some(reference(&cm)),
            },
        };
        Some(wrap(input))
    })
    .await;
}

/// Watch a mounted config file. Kubelet swaps the ConfigMap volume's `..data` symlink
/// atomically, so the directory is watched and the file re-read on any change; the reloader's
/// hash gate drops repeats. A slow poll (10 s) covers a missed event.
pub async fn watch_file<T>(path: PathBuf, tx: mpsc::Sender<T>, wrap: impl Fn(ConfigInput) -> T) {
    use notify::{RecursiveMode, Watcher};
    let read = |p: &PathBuf| ConfigInput {
        payload: std::fs::read_to_string(p).ok().map(Payload::Legacy),
        reference: None,
    };
    let (ntx, mut nrx) = mpsc::channel::<()>(16);
    let dir = path
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = ntx.try_send(());
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "Cannot watch the config file; polling it every 2s");
            loop {
                if tx.send(wrap(read(&path))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        warn!(error = %e, dir = %dir.display(), "Cannot watch the config directory");
    }
    if tx.send(wrap(read(&path))).await.is_err() {
        return;
    }
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(10), nrx.recv()).await;
        if tx.send(wrap(read(&path))).await.is_err() {
            return;
        }
    }
}

/// Whether a kube error is an HTTP status `code` from the apiserver.
pub fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

/// The legacy config text of a ConfigMap: its `config` key, empty when absent (MetalLB reads
/// an absent key as an empty config).
pub fn config_payload(cm: &ConfigMap) -> String {
    cm.data
        .as_ref()
        .and_then(|d| d.get("config"))
        .cloned()
        .unwrap_or_default()
}
