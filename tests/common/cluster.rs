//! A real control plane for integration tests: etcd + kube-apiserver started by
//! `tests/harness/cluster` (see `tests/harness/README.md`). I/O: runs the harness scripts and
//! talks to the apiserver.
//!
//! Each test binary gets one cluster from [`Cluster::shared`], started on first use (about 3–4 s)
//! and torn down by the harness watchdog when the test process exits, including after a panic.
//! Tests isolate themselves with [`Cluster::fresh_namespace`]. A test that needs its own
//! apiserver (for example with the `--netns` option) calls [`Cluster::start`]; that cluster is
//! torn down when the value is dropped, also while unwinding from a panic.
//!
//! There is no kubelet, scheduler or controller-manager: tests create Nodes, EndpointSlices and
//! Services themselves, deleted namespaces stay `Terminating` and nothing garbage-collects
//! owner references. The apiserver still allocates ClusterIPs and NodePorts and enforces RBAC.
//!
//! Identities: [`Cluster::client`] is the admin (`system:masters`, client certificate);
//! [`Cluster::service_account_client`] and [`Cluster::service_account_kubeconfig`] mint
//! TokenRequest credentials for a ServiceAccount, and [`Cluster::install_metallb_rbac`] installs
//! MetalLB 0.9.6 / 0.12.1 RBAC for the `controller` and `speaker` accounts of a namespace.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::{Client, Config};
use serde_json::{Value, json};

/// Field manager for everything the harness itself applies.
pub(crate) const FIELD_MANAGER: &str = "metallb-rs-harness";

/// The repository root (where `tests/harness/` lives).
pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// How to start a cluster.
#[derive(Clone, Debug, Default)]
pub(crate) struct Options {
    /// Serve the apiserver on a bridge of 198.51.100.0/24 so processes in other network
    /// namespaces can reach it (`cluster start --netns`; needs root). See the harness README.
    pub(crate) netns: bool,
}

/// A running etcd + kube-apiserver.
#[derive(Debug)]
pub(crate) struct Cluster {
    env: BTreeMap<String, String>,
    dir: PathBuf,
    kubeconfig: PathBuf,
    startup: Duration,
    /// Stop the cluster on drop (false for the shared cluster, which the watchdog stops).
    owned: bool,
}

static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();

impl Cluster {
    /// The cluster shared by all tests of this test binary, started on first use. It is torn
    /// down by the harness watchdog once this process exits (normally or not).
    pub(crate) fn shared() -> Result<&'static Cluster> {
        SHARED
            .get_or_init(|| {
                Cluster::launch(&Options::default(), false).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow!("starting the shared test cluster failed: {e}"))
    }

    /// Start a cluster owned by the caller; dropping the value tears it down.
    pub(crate) fn start(options: &Options) -> Result<Cluster> {
        Cluster::launch(options, true)
    }

    fn launch(options: &Options, owned: bool) -> Result<Cluster> {
        let harness = repo_root().join("tests/harness");
        let bin = build_binaries(&harness)?;
        let t0 = Instant::now();
        let mut cmd = Command::new(harness.join("cluster"));
        cmd.arg("start")
            .arg("--watch-pid")
            .arg(std::process::id().to_string())
            .env("HARNESS_BIN", &bin)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        if options.netns {
            cmd.arg("--netns");
        }
        let out = cmd
            .output()
            .with_context(|| format!("running {}/cluster start", harness.display()))?;
        ensure!(
            out.status.success(),
            "tests/harness/cluster start failed ({}); its log is above",
            out.status
        );
        let env = parse_env(&String::from_utf8_lossy(&out.stdout))?;
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .ok_or_else(|| anyhow!("cluster start did not report {k}"))
        };
        let dir = PathBuf::from(get("HARNESS_CLUSTER_DIR")?);
        let kubeconfig = PathBuf::from(get("KUBECONFIG")?);
        let startup = t0.elapsed();
        eprintln!(
            "[harness] cluster {} ready in {:.2}s at {}",
            dir.display(),
            startup.as_secs_f64(),
            env.get("HARNESS_APISERVER").map_or("?", String::as_str)
        );
        Ok(Cluster {
            env,
            dir,
            kubeconfig,
            startup,
            owned,
        })
    }

    /// Wall time of `cluster start` (certificates, etcd, apiserver `/readyz`, CRDs).
    pub(crate) fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The cluster's temp dir (logs in `logs/`, PIDs in `pids/`).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin kubeconfig (`system:masters`).
    pub(crate) fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>` (or the bridge address with `--netns`).
    pub(crate) fn apiserver_url(&self) -> &str {
        self.env.get("HARNESS_APISERVER").map_or("", String::as_str)
    }

    /// The `KEY=VALUE` environment reported by `cluster start` (KUBECONFIG, HARNESS_*).
    pub(crate) fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// Path of the kubectl built by the harness (same version as the apiserver).
    pub(crate) fn kubectl_path(&self) -> PathBuf {
        self.env
            .get("HARNESS_KUBECTL")
            .map_or_else(|| PathBuf::from("kubectl"), PathBuf::from)
    }

    /// A kubectl command with the admin kubeconfig.
    pub(crate) fn kubectl(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.kubectl_path());
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Create a netns attached to this cluster's bridge (needs `Options { netns: true }` and
    /// root); returns its address. The harness deletes it on teardown.
    pub(crate) fn add_node_netns(&self, name: &str) -> Result<String> {
        let out = Command::new(repo_root().join("tests/harness/cluster"))
            .args(["netns-add", name])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("running tests/harness/cluster netns-add")?;
        ensure!(
            out.status.success(),
            "cluster netns-add {name} failed ({})",
            out.status
        );
        let env = parse_env(&String::from_utf8_lossy(&out.stdout))?;
        env.get("HARNESS_NODE_ADDR")
            .cloned()
            .ok_or_else(|| anyhow!("cluster netns-add did not report HARNESS_NODE_ADDR"))
    }

    /// An admin client. Create one per test: a `Client` is bound to the tokio runtime that
    /// created it, and every `#[tokio::test]` has its own runtime.
    pub(crate) async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        client_from_kubeconfig(kubeconfig).await
    }

    /// Create a namespace with a unique name `<prefix>-xxxxx` and return that name. Namespaces
    /// are never deleted (without a namespace controller they would stay `Terminating`); they go
    /// away with the cluster.
    pub(crate) async fn fresh_namespace(&self, client: &Client, prefix: &str) -> Result<String> {
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                labels: Some(BTreeMap::from([(
                    "metallb-rs.test/harness".to_owned(),
                    "true".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating a namespace {prefix}-*"))?;
        created
            .metadata
            .name
            .ok_or_else(|| anyhow!("apiserver returned a namespace without a name"))
    }

    /// Create ServiceAccount `ns/name` if missing, mint a token for it (TokenRequest, 24 h) and
    /// write a kubeconfig for it into the cluster dir. Returns that file, for binaries under
    /// test (`--kubeconfig` / `KUBECONFIG`).
    /// A fresh namespace with MetalLB's RBAC of `rbac` installed, and a kubeconfig of its
    /// `controller` ServiceAccount: where one controller under test runs.
    pub(crate) async fn controller_namespace(
        &self,
        admin: &Client,
        prefix: &str,
        rbac: MetallbRbac,
    ) -> Result<(String, PathBuf)> {
        let ns = self.fresh_namespace(admin, prefix).await?;
        self.install_metallb_rbac(admin, rbac, &ns).await?;
        let kubeconfig = self
            .service_account_kubeconfig(admin, &ns, "controller")
            .await?;
        Ok((ns, kubeconfig))
    }

    pub(crate) async fn service_account_kubeconfig(
        &self,
        admin: &Client,
        ns: &str,
        name: &str,
    ) -> Result<PathBuf> {
        let sas = Api::<ServiceAccount>::namespaced(admin.clone(), ns);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(ns.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        sas.patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&sa))
            .await
            .with_context(|| format!("creating ServiceAccount {ns}/{name}"))?;
        let token = self.service_account_token(admin, ns, name, None).await?;

        let admin_cfg = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        let cluster = admin_cfg
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref())
            .ok_or_else(|| anyhow!("{} has no cluster entry", self.kubeconfig.display()))?;
        let user = format!("system:serviceaccount:{ns}:{name}");
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "harness", "cluster": serde_json::to_value(cluster)? }],
            "users": [{ "name": user, "user": { "token": token } }],
            "contexts": [{
                "name": format!("{ns}-{name}"),
                "context": { "cluster": "harness", "user": user, "namespace": ns },
            }],
            "current-context": format!("{ns}-{name}"),
        });
        let path = self.dir.join(format!("kubeconfig-sa-{ns}-{name}"));
        std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Mint a token for ServiceAccount `ns/name` (TokenRequest, 24 h), bound to the Pod
    /// `(name, uid)` when given, as the kubelet's projected token is.
    pub(crate) async fn service_account_token(
        &self,
        admin: &Client,
        ns: &str,
        name: &str,
        bound_pod: Option<(&str, &str)>,
    ) -> Result<String> {
        let sas = Api::<ServiceAccount>::namespaced(admin.clone(), ns);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(24 * 3600),
                bound_object_ref: bound_pod.map(|(pod, uid)| {
                    k8s_openapi::api::authentication::v1::BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(pod.into()),
                        uid: Some(uid.into()),
                    }
                }),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        sas.create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("TokenRequest for ServiceAccount {ns}/{name}"))?
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("TokenRequest for {ns}/{name} returned no token"))
    }

    /// A client authenticated as ServiceAccount `ns/name` (see [`Self::service_account_kubeconfig`]).
    pub(crate) async fn service_account_client(
        &self,
        admin: &Client,
        ns: &str,
        name: &str,
    ) -> Result<Client> {
        let path = self.service_account_kubeconfig(admin, ns, name).await?;
        let kubeconfig =
            Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.display()))?;
        client_from_kubeconfig(kubeconfig).await
    }

    /// Install MetalLB's RBAC of `version` (ServiceAccounts `controller` and `speaker`, their
    /// Roles, ClusterRoles and bindings, from `tests/harness/rbac/`) with `ns` standing in for
    /// `metallb-system`. Cluster-scoped names `metallb-system:x` become `<ns>:x`, so tests using
    /// different versions in one cluster do not collide. Returns once the authorizer sees every
    /// binding.
    pub(crate) async fn install_metallb_rbac(
        &self,
        admin: &Client,
        version: MetallbRbac,
        ns: &str,
    ) -> Result<()> {
        let path = version.path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let mut expectations = Vec::new();
        let mut roles: BTreeMap<(String, String), Value> = BTreeMap::new();
        for mut doc in docs.into_iter().filter(|d| !d.is_null()) {
            rename_for_namespace(&mut doc, ns);
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let name = doc["metadata"]["name"]
                .as_str()
                .ok_or_else(|| anyhow!("{}: an object without metadata.name", path.display()))?
                .to_owned();
            let ctx = || format!("applying {kind} {name} from {}", path.display());
            match kind.as_str() {
                "ServiceAccount" => {
                    let obj: ServiceAccount = serde_json::from_value(doc).with_context(ctx)?;
                    let api = Api::<ServiceAccount>::namespaced(admin.clone(), ns);
                    api.patch(&name, &pp, &Patch::Apply(&obj))
                        .await
                        .with_context(ctx)?;
                }
                "ClusterRole" => {
                    roles.insert(("ClusterRole".into(), name.clone()), doc.clone());
                    let obj: ClusterRole = serde_json::from_value(doc).with_context(ctx)?;
                    let api = Api::<ClusterRole>::all(admin.clone());
                    api.patch(&name, &pp, &Patch::Apply(&obj))
                        .await
                        .with_context(ctx)?;
                }
                "Role" => {
                    roles.insert(("Role".into(), name.clone()), doc.clone());
                    let obj: Role = serde_json::from_value(doc).with_context(ctx)?;
                    let api = Api::<Role>::namespaced(admin.clone(), ns);
                    api.patch(&name, &pp, &Patch::Apply(&obj))
                        .await
                        .with_context(ctx)?;
                }
                "ClusterRoleBinding" => {
                    expectations.push((doc.clone(), None));
                    let obj: ClusterRoleBinding = serde_json::from_value(doc).with_context(ctx)?;
                    let api = Api::<ClusterRoleBinding>::all(admin.clone());
                    api.patch(&name, &pp, &Patch::Apply(&obj))
                        .await
                        .with_context(ctx)?;
                }
                "RoleBinding" => {
                    expectations.push((doc.clone(), Some(ns.to_owned())));
                    let obj: RoleBinding = serde_json::from_value(doc).with_context(ctx)?;
                    let api = Api::<RoleBinding>::namespaced(admin.clone(), ns);
                    api.patch(&name, &pp, &Patch::Apply(&obj))
                        .await
                        .with_context(ctx)?;
                }
                other => bail!("{}: unexpected kind {other:?}", path.display()),
            }
        }
        // The RBAC authorizer works from an informer cache: wait until it grants, for each
        // binding, the first rule of its role to each subject.
        for (binding, namespace) in expectations {
            let role_key = (
                binding["roleRef"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                binding["roleRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            let role = roles
                .get(&role_key)
                .ok_or_else(|| anyhow!("binding refers to unknown {role_key:?}"))?;
            let Some(rule) = role["rules"].get(0) else {
                continue;
            };
            let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
            for subject in subjects {
                let user = format!(
                    "system:serviceaccount:{}:{}",
                    subject["namespace"].as_str().unwrap_or(ns),
                    subject["name"].as_str().unwrap_or_default()
                );
                wait_for_access(admin, &user, rule, namespace.as_deref()).await?;
            }
        }
        Ok(())
    }
}

impl Cluster {
    /// Apply `manifests/rbac-crd-mode.yaml` with `ns` standing in for `metallb-system`; return
    /// once the controller's and the speaker's accounts may list IPAddressPools.
    /// Our manifest's extra over MetalLB's speaker RBAC: `watch` on Pods in `ns`, effective
    /// when this returns.
    pub(crate) async fn grant_speaker_pod_watch(&self, admin: &Client, ns: &str) -> Result<()> {
        let role: Role = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "pod-watcher"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["watch"]}],
        }))?;
        let binding: RoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "pod-watcher"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-watcher"},
            "subjects": [{"kind": "ServiceAccount", "name": "speaker", "namespace": ns}],
        }))?;
        Api::<Role>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &role)
            .await?;
        Api::<RoleBinding>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &binding)
            .await?;
        // The authorizer's cache takes a moment to see the new binding.
        let user = format!("system:serviceaccount:{ns}:speaker");
        let rule = json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["watch"]});
        wait_for_access(admin, &user, &rule, Some(ns)).await
    }

    pub(crate) async fn install_crd_mode_rbac(&self, admin: &Client, ns: &str) -> Result<()> {
        self.apply_rbac_manifest(admin, "manifests/rbac-crd-mode.yaml", ns)
            .await?;
        let rule = json!({"apiGroups": ["metallb.io"], "resources": ["ipaddresspools"], "verbs": ["list"]});
        for sa in ["controller", "speaker"] {
            let user = format!("system:serviceaccount:{ns}:{sa}");
            wait_for_access(admin, &user, &rule, Some(ns)).await?;
        }
        Ok(())
    }

    /// Apply `manifests/rbac-migrate.yaml` with `ns` standing in for `metallb-system`; return
    /// once the `metallb-migrate` account may patch Services.
    pub(crate) async fn install_migrate_rbac(&self, admin: &Client, ns: &str) -> Result<()> {
        self.apply_rbac_manifest(admin, "manifests/rbac-migrate.yaml", ns)
            .await?;
        let rule = json!({"apiGroups": [""], "resources": ["services"], "verbs": ["patch"]});
        let user = format!("system:serviceaccount:{ns}:metallb-migrate");
        wait_for_access(admin, &user, &rule, None).await
    }

    /// Apply an RBAC manifest of the repository (ServiceAccounts, Roles, ClusterRoles and
    /// their bindings) with `ns` standing in for `metallb-system` (in names too, so that
    /// cluster-scoped objects of different tests do not collide).
    async fn apply_rbac_manifest(&self, admin: &Client, file: &str, ns: &str) -> Result<()> {
        let path = repo_root().join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .replace("metallb-system", ns);
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        for d in serde_saphyr::from_multiple::<Value>(&text)?
            .into_iter()
            .filter(|d| !d.is_null())
        {
            let name = d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let (api_version, kind) = (
                d["apiVersion"].as_str().unwrap_or_default(),
                d["kind"].as_str().unwrap_or_default(),
            );
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            let ar = kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
                group, version, kind,
            ));
            let api: Api<kube::api::DynamicObject> = match kind {
                "Role" | "RoleBinding" | "ServiceAccount" => {
                    Api::namespaced_with(admin.clone(), ns, &ar)
                }
                "ClusterRole" | "ClusterRoleBinding" => Api::all_with(admin.clone(), &ar),
                other => bail!("{}: unexpected kind {other:?}", path.display()),
            };
            api.patch(&name, &pp, &Patch::Apply(&d))
                .await
                .with_context(|| format!("applying {kind} {name} from {}", path.display()))?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let status = Command::new(repo_root().join("tests/harness/cluster"))
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => eprintln!("[harness] cluster stop {} failed: {s}", self.dir.display()),
            Err(e) => eprintln!("[harness] cluster stop {} failed: {e}", self.dir.display()),
        }
    }
}

/// Which upstream RBAC to install (files in `tests/harness/rbac/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetallbRbac {
    /// `manifests/metallb.yaml@v0.9.6`
    V0_9_6,
    /// `manifests/metallb.yaml@v0.12.1`
    V0_12_1,
}

impl MetallbRbac {
    fn path(self) -> PathBuf {
        let file = match self {
            MetallbRbac::V0_9_6 => "metallb-v0.9.6.yaml",
            MetallbRbac::V0_12_1 => "metallb-v0.12.1.yaml",
        };
        repo_root().join("tests/harness/rbac").join(file)
    }
}

/// Run `tests/harness/build.sh` (a no-op once the binaries are cached) and return the bin dir.
/// Its progress goes straight to the terminal (libtest does not capture child processes).
pub(crate) fn build_binaries(harness: &Path) -> Result<PathBuf> {
    run_build_script(&harness.join("build.sh")).context(
        "the test cluster cannot start without kube-apiserver, kubectl and etcd (see the output above)",
    )
}

/// Run a `tests/harness/build*.sh` script (a no-op once its binaries are cached) and return
/// the bin dir it prints on its last stdout line; its progress goes to the terminal.
pub(crate) fn run_build_script(script: &Path) -> Result<PathBuf> {
    let out = Command::new(script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        out.status.success(),
        "{} failed ({})",
        script.display(),
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bin = stdout
        .lines()
        .last()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| anyhow!("{} printed no bin dir", script.display()))?;
    Ok(PathBuf::from(bin))
}

/// Parse the `export KEY=VALUE` lines printed by the harness scripts.
fn parse_env(text: &str) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| anyhow!("unexpected line from the harness: {line:?}"))?;
        ensure!(
            !v.contains(['\'', '"', '\\', ' ']),
            "unexpected quoting in harness output: {line:?}"
        );
        env.insert(k.to_owned(), v.to_owned());
    }
    Ok(env)
}

async fn client_from_kubeconfig(kubeconfig: Kubeconfig) -> Result<Client> {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading kubeconfig")?;
    Client::try_from(config).context("building a kube client")
}

/// Rewrite one object of the upstream RBAC so that `ns` stands in for `metallb-system`.
fn rename_for_namespace(doc: &mut Value, ns: &str) {
    const UPSTREAM_NS: &str = "metallb-system";
    let rename = |name: &str| match name.strip_prefix("metallb-system:") {
        Some(rest) => format!("{ns}:{rest}"),
        None => name.to_owned(),
    };
    let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        if meta.contains_key("namespace") {
            meta.insert("namespace".into(), json!(ns));
        }
        if matches!(kind.as_str(), "ClusterRole" | "ClusterRoleBinding")
            && let Some(name) = meta.get("name").and_then(Value::as_str)
        {
            let renamed = rename(name);
            meta.insert("name".into(), json!(renamed));
        }
    }
    if let Some(role_ref) = doc.get_mut("roleRef").and_then(Value::as_object_mut)
        && role_ref.get("kind").and_then(Value::as_str) == Some("ClusterRole")
        && let Some(name) = role_ref.get("name").and_then(Value::as_str)
    {
        let renamed = rename(name);
        role_ref.insert("name".into(), json!(renamed));
    }
    if let Some(subjects) = doc.get_mut("subjects").and_then(Value::as_array_mut) {
        for s in subjects.iter_mut().filter_map(Value::as_object_mut) {
            if s.get("namespace").and_then(Value::as_str) == Some(UPSTREAM_NS) {
                s.insert("namespace".into(), json!(ns));
            }
        }
    }
}

/// Poll a SubjectAccessReview until `user` may do the first verb of `rule` (10 s at most).
pub(crate) async fn wait_for_access(
    admin: &Client,
    user: &str,
    rule: &Value,
    namespace: Option<&str>,
) -> Result<()> {
    let first = |key: &str| rule[key].get(0).and_then(Value::as_str).map(str::to_owned);
    let (resource, subresource) = match first("resources") {
        Some(r) => match r.split_once('/') {
            Some((r, s)) => (Some(r.to_owned()), Some(s.to_owned())),
            None => (Some(r), None),
        },
        None => (None, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(vec![
                "system:serviceaccounts".to_owned(),
                "system:authenticated".to_owned(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: first("apiGroups"),
                resource,
                subresource,
                verb: first("verbs"),
                name: first("resourceNames"),
                namespace: namespace.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api = Api::<SubjectAccessReview>::all(admin.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .context("SubjectAccessReview")?;
        if answer.status.is_some_and(|s| s.allowed) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("RBAC not effective after 10s: {user} still may not {rule}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next item of a stream (a watch, a `kube::runtime::watcher`), with a timeout. The crate
/// has no `futures` dependency, so this polls through `WatchStreamExt`'s `Stream` supertrait.
/// Wait up to `wait` for an Event in `ns` with `reason` about the object `name` whose message
/// contains `needle`.
pub(crate) async fn wait_event(
    admin: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    needle: &str,
    wait: Duration,
) -> Result<k8s_openapi::api::core::v1::Event> {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(admin.clone(), ns);
    let t = Instant::now();
    loop {
        let list = api.list(&kube::api::ListParams::default()).await?;
        if let Some(e) = list.items.into_iter().find(|e| {
            e.involved_object.name.as_deref() == Some(name)
                && e.reason.as_deref() == Some(reason)
                && e.message.as_deref().is_some_and(|m| m.contains(needle))
        }) {
            return Ok(e);
        }
        ensure!(
            t.elapsed() < wait,
            "no {reason} Event for {name} containing {needle:?} within {wait:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn next_item<S>(stream: &mut S, timeout: Duration) -> Result<Option<S::Item>>
where
    S: WatchStreamExt + Unpin,
{
    let next = std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx));
    tokio::time::timeout(timeout, next)
        .await
        .map_err(|_| anyhow!("no event within {timeout:?}"))
}

/// Every Service `api` lists, by name, with the IPs in its status.
pub(crate) async fn service_ips(
    api: &Api<k8s_openapi::api::core::v1::Service>,
) -> Result<BTreeMap<String, Vec<std::net::IpAddr>>> {
    Ok(api
        .list(&kube::api::ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|s| {
            (
                s.metadata.name.clone().unwrap_or_default(),
                metallb_rs::k8s::service::status_ips(&s),
            )
        })
        .collect())
}

/// Is this error an API error with HTTP status `code`?
pub(crate) fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

/// GET `/metrics` from a binary under test on 127.0.0.1:`port`; returns the body.
pub(crate) async fn scrape_metrics(port: u16) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .ok_or_else(|| anyhow!("bad HTTP reply from port {port}"))
}

/// Server-side apply the legacy `config` ConfigMap of `ns` with `payload` (field manager `test`).
pub(crate) async fn apply_config(admin: &Client, ns: &str, payload: &str) -> Result<()> {
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "config"}, "data": {"config": payload},
    }))?;
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), ns)
        .patch(
            "config",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&cm),
        )
        .await?;
    Ok(())
}

/// Wait until Service `ns/name` has an IP in its status; the first one.
pub(crate) async fn wait_service_ip(
    admin: &Client,
    ns: &str,
    name: &str,
    within: Duration,
) -> Result<std::net::IpAddr> {
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(admin.clone(), ns);
    let t = Instant::now();
    loop {
        let s = api.get_status(name).await?;
        if let Some(ip) = metallb_rs::k8s::service::status_ips(&s).first() {
            return Ok(*ip);
        }
        ensure!(
            t.elapsed() < within,
            "service {name} got no IP within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
