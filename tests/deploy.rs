//! Drop-in proofs: MetalLB's own deploy files, with only the image swapped, run our binaries.
//!
//! MetalLB's manifests (`manifests/namespace.yaml`, `manifests/metallb.yaml`) and Helm chart
//! (`charts/metallb`) are read at test time from the Go module cache
//! (`go mod download -json go.universe.tf/metallb@vX`); nothing of them is copied into this
//! repository. Each variant renders them (the chart with `helm template`, Helm built by
//! `tests/harness/build-helm.sh`), drops the PodSecurityPolicy objects (the apiserver no longer
//! serves `policy/v1beta1`; checked), swaps the controller and speaker images for ours, and
//! server-side applies the rest to the real apiserver of the harness.
//!
//! There is no kubelet, so this file plays it: it creates the Pods of the applied Deployment
//! and DaemonSet (from their templates, on simulated nodes), and starts our binaries with
//! exactly the container's `args` and `env` read back from the apiserver: `fieldRef`s
//! resolved from the Pod, `secretKeyRef`s from the Secret (waited for, as the kubelet retries
//! `CreateContainerConfigError`), the ServiceAccount token of the Pod's own ServiceAccount
//! (TokenRequest bound to the Pod), `ca.crt` and `namespace` mounted at
//! `/var/run/secrets/kubernetes.io/serviceaccount`, `KUBERNETES_SERVICE_HOST/PORT`, the user,
//! capabilities, `no_new_privs` and read-only root filesystem of the `securityContext`, and
//! the entrypoint and user of our image as the Dockerfile defines them. The speaker runs in its
//! node's network namespace (`hostNetwork`), the controller in a namespace of its own.
//!
//! Isolation: MetalLB's own files run in one netns cluster, ours and the packs' in a second;
//! the variants run one at a time (every controller handles every Service without a class,
//! exactly as MetalLB's files make it), each with its own nodes and controller namespace. MetalLB's
//! manifests hardcode `metallb-system`: that namespace is rewritten to the variant's own
//! (object namespaces, RoleBinding subjects, the `metallb-system:` prefix of ClusterRole names);
//! charts are rendered with `--namespace`. Nothing in a Pod template changes but the image.

#[path = "common/cluster.rs"]
mod cluster;

#[path = "common/lab.rs"]
mod lab;

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use lab::{Lab, WAIT};
use serde_json::{Value, json};

use cluster::Cluster;

/// The images the swap puts in (what `docker build --target controller|speaker` tags).
const CONTROLLER_IMAGE: &str = "metallb-rs/controller:test";
const SPEAKER_IMAGE: &str = "metallb-rs/speaker:test";
/// Their repositories (any tag runs the binaries under test).
const CONTROLLER_REPO: &str = "metallb-rs/controller";
const SPEAKER_REPO: &str = "metallb-rs/speaker";
const FIELD_MANAGER: &str = "metallb-rs-deploy-test";

/// One variant at a time (see the module doc).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Namespaces of earlier variants, whose Services are deleted before the next one starts.
static USED: Mutex<Vec<String>> = Mutex::new(Vec::new());

// ------------------------------------------------------------------------------- sources

/// Helm, built from the Go module proxy by `tests/harness/build-helm.sh` and cached.
pub(crate) fn helm() -> Result<PathBuf> {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    HELM.get_or_init(|| {
        cluster::run_build_script(&cluster::repo_root().join("tests/harness/build-helm.sh"))
            .map(|bin| bin.join("helm"))
            .map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(|e| anyhow!("building helm: {e}"))
}

/// The directory of `go.universe.tf/metallb@version` in the Go module cache.
fn metallb_module(version: &str) -> Result<PathBuf> {
    let out = std::process::Command::new("go")
        .args(["mod", "download", "-json"])
        .arg(format!("go.universe.tf/metallb@{version}"))
        .stdin(Stdio::null())
        .output()
        .context("running go mod download")?;
    ensure!(
        out.status.success(),
        "go mod download go.universe.tf/metallb@{version} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout)?;
    info["Dir"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("go mod download reported no Dir for metallb@{version}"))
}

/// The non-empty documents of a multi-document YAML stream.
fn yaml_docs(text: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).context("parsing YAML")?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// `helm template RELEASE CHART --namespace NS -f values` (values as YAML text).
pub(crate) fn helm_template(
    chart: &Path,
    release: &str,
    ns: &str,
    values: &str,
    scratch: &Path,
) -> Result<String> {
    let file = scratch.join(format!("values-{release}-{ns}.yaml"));
    std::fs::write(&file, values)?;
    let out = std::process::Command::new(helm()?)
        .args(["template", release])
        .arg(chart)
        .args(["--namespace", ns, "-f"])
        .arg(&file)
        .env("HELM_CACHE_HOME", scratch.join("helm-cache"))
        .env("HELM_CONFIG_HOME", scratch.join("helm-config"))
        .env("HELM_DATA_HOME", scratch.join("helm-data"))
        .stdin(Stdio::null())
        .output()
        .context("running helm template")?;
    ensure!(
        out.status.success(),
        "helm template {} failed: {}",
        chart.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// What a variant deploys from.
#[derive(Clone, Debug)]
enum Source {
    /// MetalLB's `manifests/namespace.yaml` + `manifests/metallb.yaml` at this version.
    Manifests(&'static str),
    /// MetalLB's `charts/metallb` at this version, release `metallb`, with these values.
    Chart(&'static str, String),
    /// Our `charts/metallb-rs`, release `metallb`, with these values (images already ours).
    OurChart(String),
    /// Our `manifests/metallb-rs.yaml`.
    OurManifest,
    /// Charmed Kubernetes' metallb-controller/metallb-speaker charms' objects (pool `iprange`).
    Charmed(&'static str),
    /// Our `manifests/kustomize` overlay over MetalLB's manifests at this version (the overlay
    /// swaps the images and drops the PodSecurityPolicies itself).
    Kustomize(&'static str),
}

impl Source {
    /// Whether the test swaps the images (MetalLB's own files) or the source has ours.
    fn upstream_images(&self) -> bool {
        matches!(
            self,
            Source::Manifests(_) | Source::Chart(..) | Source::Charmed(_)
        )
    }
}

/// Render `source` for namespace `ns`: the documents as they would be applied, before the
/// image swap.
fn render(source: &Source, ns: &str, scratch: &Path, kubectl: &Path) -> Result<Vec<Value>> {
    match source {
        Source::Manifests(version) => {
            let dir = metallb_module(version)?.join("manifests");
            let mut docs = Vec::new();
            for f in ["namespace.yaml", "metallb.yaml"] {
                let path = dir.join(f);
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                docs.extend(yaml_docs(&text).with_context(|| path.display().to_string())?);
            }
            for d in &mut docs {
                rehome(d, ns);
            }
            Ok(docs)
        }
        Source::Chart(version, values) => {
            let chart = metallb_module(version)?.join("charts/metallb");
            yaml_docs(&helm_template(&chart, "metallb", ns, values, scratch)?)
        }
        Source::OurChart(values) => {
            let chart = cluster::repo_root().join("charts/metallb-rs");
            yaml_docs(&helm_template(&chart, "metallb", ns, values, scratch)?)
        }
        Source::Charmed(iprange) => charmed_objects(ns, iprange),
        Source::OurManifest => {
            let path = cluster::repo_root().join("manifests/metallb-rs.yaml");
            let mut docs = yaml_docs(&std::fs::read_to_string(&path)?)?;
            for d in &mut docs {
                rehome(d, ns);
            }
            Ok(docs)
        }
        Source::Kustomize(version) => {
            let mut docs = yaml_docs(&kustomize_overlay(version, scratch, kubectl)?)?;
            for d in &mut docs {
                rehome(d, ns);
            }
            Ok(docs)
        }
    }
}

/// `kubectl kustomize` of our overlay with its remote base replaced by a copy of MetalLB's
/// manifests directory at `version` (from the module cache, into `scratch`).
fn kustomize_overlay(version: &str, scratch: &Path, kubectl: &Path) -> Result<String> {
    let upstream = metallb_module(version)?.join("manifests");
    let base = scratch.join("base");
    let overlay = scratch.join("overlay");
    std::fs::create_dir_all(&base)?;
    std::fs::create_dir_all(&overlay)?;
    for f in ["kustomization.yaml", "metallb.yaml", "namespace.yaml"] {
        let text = std::fs::read_to_string(upstream.join(f))?;
        std::fs::write(base.join(f), text)?;
    }
    let ours = std::fs::read_to_string(
        cluster::repo_root().join("manifests/kustomize/kustomization.yaml"),
    )?;
    let remote = ours
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("- https://github.com/metallb/metallb")
        })
        .ok_or_else(|| anyhow!("manifests/kustomize: no remote MetalLB base in resources"))?;
    std::fs::write(
        overlay.join("kustomization.yaml"),
        ours.replace(remote, "  - ../base"),
    )?;
    let out = std::process::Command::new(kubectl)
        .arg("kustomize")
        .arg(&overlay)
        .stdin(Stdio::null())
        .output()
        .context("running kubectl kustomize")?;
    ensure!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Move one object of MetalLB's manifests from `metallb-system` to `ns` (see the module doc).
fn rehome(doc: &mut Value, ns: &str) {
    const UPSTREAM: &str = "metallb-system";
    let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
    let rename = |name: &str| match name.strip_prefix("metallb-system:") {
        Some(rest) => format!("{ns}:{rest}"),
        None => name.to_owned(),
    };
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        if meta.get("namespace").and_then(Value::as_str) == Some(UPSTREAM) {
            meta.insert("namespace".into(), json!(ns));
        }
        let name = meta.get("name").and_then(Value::as_str).map(str::to_owned);
        match (kind.as_str(), name) {
            ("Namespace", Some(n)) if n == UPSTREAM => {
                meta.insert("name".into(), json!(ns));
            }
            ("ClusterRole" | "ClusterRoleBinding", Some(n)) => {
                meta.insert("name".into(), json!(rename(&n)));
            }
            _ => {}
        }
    }
    if doc["roleRef"]["kind"] == "ClusterRole"
        && let Some(n) = doc["roleRef"]["name"].as_str().map(str::to_owned)
    {
        doc["roleRef"]["name"] = json!(rename(&n));
    }
    if let Some(subjects) = doc.get_mut("subjects").and_then(Value::as_array_mut) {
        for s in subjects {
            if s["namespace"] == UPSTREAM {
                s["namespace"] = json!(ns);
            }
        }
    }
}

/// Split off the objects the apiserver does not serve any more (PodSecurityPolicy,
/// `policy/v1beta1`, removed in Kubernetes 1.25). Returns (kept, dropped `kind/name`s).
fn drop_unserved(docs: Vec<Value>) -> (Vec<Value>, Vec<String>) {
    let (dropped, kept): (Vec<Value>, Vec<Value>) = docs
        .into_iter()
        .partition(|d| d["kind"] == "PodSecurityPolicy");
    let names = dropped
        .iter()
        .map(|d| {
            format!(
                "PodSecurityPolicy/{}",
                d["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    (kept, names)
}

/// Swap the controller and speaker images for ours; nothing else changes. Returns the images
/// replaced. A container that is neither (FRR's sidecar) is an error.
fn swap_images(docs: &mut [Value]) -> Result<Vec<String>> {
    let mut replaced = Vec::new();
    for d in docs.iter_mut() {
        if !matches!(d["kind"].as_str(), Some("Deployment" | "DaemonSet")) {
            continue;
        }
        let containers = d["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .ok_or_else(|| anyhow!("a workload without containers"))?;
        for c in containers {
            let image = c["image"].as_str().unwrap_or_default().to_owned();
            let ours = match image.rsplit('/').next().and_then(|r| r.split(':').next()) {
                Some("controller") => CONTROLLER_IMAGE,
                Some("speaker") => SPEAKER_IMAGE,
                _ => bail!("container {} has image {image:?}: not MetalLB's", c["name"]),
            };
            c["image"] = json!(ours);
            replaced.push(image);
        }
    }
    Ok(replaced)
}

// ------------------------------------------------------------------------- the apiserver

/// `kubectl apply --server-side [--dry-run=server] -n ns` of `docs` (as a List).
pub(crate) async fn kubectl_apply(
    cluster: &Cluster,
    ns: &str,
    docs: &[Value],
    dry_run: bool,
    file: &Path,
) -> Result<String> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    std::fs::write(file, serde_json::to_vec_pretty(&list)?)?;
    let mut cmd = cluster.kubectl();
    cmd.args(["apply", "--server-side", "--force-conflicts"])
        .args(["--field-manager", FIELD_MANAGER, "-n", ns, "-f"])
        .arg(file);
    if dry_run {
        cmd.arg("--dry-run=server");
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .context("kubectl apply timed out")??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "kubectl apply -f {} failed:\n{text}",
        file.display()
    );
    Ok(text)
}

/// The apiserver really refuses PodSecurityPolicy objects (so dropping them is forced, not a
/// choice): a server-side dry run of `psp` fails with "no matches for kind".
async fn assert_psp_unserved(cluster: &Cluster, psp: &Value, scratch: &Path) -> Result<()> {
    let err = kubectl_apply(
        cluster,
        "default",
        std::slice::from_ref(psp),
        true,
        &scratch.join("psp.json"),
    )
    .await
    .err()
    .ok_or_else(|| anyhow!("the apiserver accepted a PodSecurityPolicy; stop dropping them"))?;
    ensure!(
        format!("{err:#}").contains("no matches for kind \"PodSecurityPolicy\""),
        "unexpected error for PodSecurityPolicy: {err:#}"
    );
    Ok(())
}

// ------------------------------------------------------------------------------ the image

/// What our image gives a container, read from the Dockerfile's target stage: the
/// entrypoint binary, the user, and file capabilities set on the binary.
#[derive(Clone, Debug)]
struct Image {
    binary: PathBuf,
    uid: u32,
    gid: u32,
}

/// The images of the Dockerfile targets `controller` and `speaker`, as binaries under
/// `CARGO_TARGET_TMPDIR` (the same cargo-built binaries, with the Dockerfile's `setcap`).
fn images() -> Result<BTreeMap<&'static str, Image>> {
    static IMAGES: OnceLock<Result<BTreeMap<&'static str, Image>, String>> = OnceLock::new();
    IMAGES
        .get_or_init(|| build_images().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("{e}"))
}

fn build_images() -> Result<BTreeMap<&'static str, Image>> {
    let dockerfile = std::fs::read_to_string(cluster::repo_root().join("Dockerfile"))?;
    let stages = dockerfile_stages(&dockerfile);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("deploy-images");
    std::fs::create_dir_all(&dir)?;
    let mut out = BTreeMap::new();
    for (target, image, built) in [
        (
            "controller",
            CONTROLLER_REPO,
            env!("CARGO_BIN_EXE_controller"),
        ),
        ("speaker", SPEAKER_REPO, env!("CARGO_BIN_EXE_speaker")),
    ] {
        let stage = stages
            .get(target)
            .ok_or_else(|| anyhow!("the Dockerfile has no target {target}"))?;
        let entry = stage
            .entrypoint
            .clone()
            .ok_or_else(|| anyhow!("Dockerfile target {target} has no ENTRYPOINT"))?;
        ensure!(
            entry == format!("/{target}"),
            "Dockerfile target {target}: ENTRYPOINT {entry}, expected /{target}"
        );
        let binary = dir.join(target);
        let tmp = dir.join(format!(".{target}.{}", std::process::id()));
        std::fs::copy(built, &tmp)?;
        if let Some(caps) = dockerfile_setcap(&dockerfile, target) {
            lab::run(std::process::Command::new("setcap").arg(&caps).arg(&tmp))?;
        }
        std::fs::rename(&tmp, &binary)?;
        out.insert(
            image,
            Image {
                binary,
                uid: stage.uid,
                gid: stage.gid,
            },
        );
    }
    Ok(out)
}

#[derive(Debug, Default)]
struct Stage {
    entrypoint: Option<String>,
    uid: u32,
    gid: u32,
}

/// `FROM … AS name` stages with their `ENTRYPOINT ["x"]` and numeric `USER u[:g]` (root when
/// absent, as the distroless base without `:nonroot`).
fn dockerfile_stages(text: &str) -> BTreeMap<String, Stage> {
    let mut stages = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("FROM") => {
                let w: Vec<&str> = line.split_whitespace().collect();
                current = w
                    .iter()
                    .position(|x| x.eq_ignore_ascii_case("as"))
                    .and_then(|i| w.get(i + 1))
                    .map(|s| s.to_string());
                let base_nonroot = w.get(1).is_some_and(|b| b.ends_with(":nonroot"));
                if let Some(c) = &current {
                    let id = if base_nonroot { 65532 } else { 0 };
                    stages.insert(
                        c.clone(),
                        Stage {
                            uid: id,
                            gid: id,
                            ..Stage::default()
                        },
                    );
                }
            }
            Some("USER") => {
                if let (Some(c), Some(u)) = (&current, words.next())
                    && let Some(st) = stages.get_mut(c)
                {
                    let (uid, gid) = u.split_once(':').unwrap_or((u, u));
                    st.uid = uid.parse().unwrap_or(u32::MAX);
                    st.gid = gid.parse().unwrap_or(u32::MAX);
                }
            }
            Some("ENTRYPOINT") => {
                if let Some(c) = &current
                    && let Some(st) = stages.get_mut(c)
                {
                    let rest = line["ENTRYPOINT".len()..].trim();
                    st.entrypoint = serde_json::from_str::<Vec<String>>(rest)
                        .ok()
                        .and_then(|v| v.into_iter().next());
                }
            }
            _ => {}
        }
    }
    stages
}

/// The capability set a `setcap CAPS /out/<target>` line in the Dockerfile gives the binary.
fn dockerfile_setcap(text: &str, target: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words.windows(3).find_map(|w| {
        (w[0] == "setcap" && w[2].trim_end_matches(';') == format!("/out/{target}"))
            .then(|| w[1].to_string())
    })
}

// ------------------------------------------------------------------------- the "kubelet"

/// Create a Pod of `workload` (a Deployment or DaemonSet as stored) named `name` on node
/// `node`, Running and Ready with `pod_ip`/`host_ip`, and return it as stored.
async fn create_pod(
    admin: &Client,
    ns: &str,
    workload: &Value,
    name: &str,
    node: &str,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Value> {
    let template = &workload["spec"]["template"];
    let mut meta = template["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    meta["name"] = json!(name);
    meta["ownerReferences"] = json!([{
        "apiVersion": workload["apiVersion"], "kind": workload["kind"],
        "name": workload["metadata"]["name"], "uid": workload["metadata"]["uid"],
        "controller": true,
    }]);
    let mut spec = template["spec"].clone();
    spec["nodeName"] = json!(node);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
    }))?;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns);
    pods.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating Pod {ns}/{name}"))?;
    let stored = pods
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
                "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
                "conditions": [{"type": "Ready", "status": "True"}],
            }})),
        )
        .await?;
    Ok(serde_json::to_value(stored)?)
}

/// The value of a downward-API `fieldPath` for `pod`, as the kubelet resolves it.
fn field_ref(pod: &Value, path: &str) -> Result<String> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let ips = |v: &Value| {
        v.as_array()
            .map(|a| a.iter().map(|x| s(&x["ip"])).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    };
    Ok(match path {
        "metadata.name" => s(&pod["metadata"]["name"]),
        "metadata.namespace" => s(&pod["metadata"]["namespace"]),
        "metadata.uid" => s(&pod["metadata"]["uid"]),
        "spec.nodeName" => s(&pod["spec"]["nodeName"]),
        "spec.serviceAccountName" => s(&pod["spec"]["serviceAccountName"]),
        "status.hostIP" => s(&pod["status"]["hostIP"]),
        "status.podIP" => s(&pod["status"]["podIP"]),
        "status.hostIPs" => ips(&pod["status"]["hostIPs"]),
        "status.podIPs" => ips(&pod["status"]["podIPs"]),
        other => {
            let key = |prefix: &str| {
                other
                    .strip_prefix(prefix)
                    .and_then(|r| r.strip_suffix("']"))
                    .map(str::to_owned)
            };
            if let Some(k) = key("metadata.labels['") {
                s(&pod["metadata"]["labels"][&k])
            } else if let Some(k) = key("metadata.annotations['") {
                s(&pod["metadata"]["annotations"][&k])
            } else {
                bail!("fieldRef {other:?} is not emulated by this test")
            }
        }
    })
}

/// Kubelet's `$(VAR)` expansion of `text` with the variables defined so far (`$$` escapes).
fn expand(text: &str, vars: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some((name, t)) = tail
            .strip_prefix("$(")
            .and_then(|t| t.split_once(')'))
            .filter(|(n, _)| vars.iter().any(|(k, _)| k == n))
        {
            let value = vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
            out.push_str(value.map_or("", String::as_str));
            rest = t;
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// A key of Secret or ConfigMap `ns/name`, waited for as the kubelet retries a container
/// whose reference cannot be resolved yet (`CreateContainerConfigError`). `None` when
/// `optional` and absent.
async fn ref_key(
    admin: &Client,
    ns: &str,
    secret: bool,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>> {
    let t = Instant::now();
    loop {
        let found = if secret {
            Api::<Secret>::namespaced(admin.clone(), ns)
                .get_opt(name)
                .await?
                .map(|s| {
                    s.data.and_then(|d| {
                        d.get(key)
                            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    })
                })
        } else {
            Api::<ConfigMap>::namespaced(admin.clone(), ns)
                .get_opt(name)
                .await?
                .map(|c| c.data.and_then(|d| d.get(key).cloned()))
        };
        match found {
            Some(Some(v)) => return Ok(Some(v)),
            _ if optional => return Ok(None),
            _ if t.elapsed() > WAIT => bail!(
                "CreateContainerConfigError: {} {ns}/{name} key {key} not found within {WAIT:?}",
                if secret { "Secret" } else { "ConfigMap" }
            ),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The environment the kubelet gives `container` of `pod` (its `envFrom` and `env`, in order).
async fn container_env(admin: &Client, pod: &Value, c: &Value) -> Result<Vec<(String, String)>> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut vars: Vec<(String, String)> = Vec::new();
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or_default();
        for (secret, r) in [(false, &from["configMapRef"]), (true, &from["secretRef"])] {
            let Some(name) = r["name"].as_str() else {
                continue;
            };
            let data: BTreeMap<String, String> = if secret {
                let s = Api::<Secret>::namespaced(admin.clone(), ns)
                    .get(name)
                    .await?;
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect()
            } else {
                let cm = Api::<ConfigMap>::namespaced(admin.clone(), ns)
                    .get(name)
                    .await?;
                cm.data.unwrap_or_default()
            };
            vars.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default().to_owned();
        let from = &e["valueFrom"];
        let value = if let Some(v) = e["value"].as_str() {
            Some(expand(v, &vars))
        } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            Some(field_ref(pod, path)?)
        } else if from["secretKeyRef"].is_object() || from["configMapKeyRef"].is_object() {
            let secret = from["secretKeyRef"].is_object();
            let r = if secret {
                &from["secretKeyRef"]
            } else {
                &from["configMapKeyRef"]
            };
            ref_key(
                admin,
                ns,
                secret,
                r["name"].as_str().unwrap_or_default(),
                r["key"].as_str().unwrap_or_default(),
                r["optional"].as_bool().unwrap_or(false),
            )
            .await?
        } else if from.is_null() {
            Some(String::new())
        } else {
            bail!("env {name}: valueFrom {from} is not emulated by this test");
        };
        if let Some(v) = value {
            vars.push((name, v));
        }
    }
    Ok(vars)
}

/// Capability names for `setpriv` (`net_raw`) from a container's `securityContext`: the
/// runtime's defaults minus `drop` plus `add` (MetalLB's files drop ALL).
fn capabilities(sc: &Value) -> Vec<String> {
    const RUNTIME_DEFAULT: &[&str] = &[
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    ];
    let list = |k: &str| -> Vec<String> {
        sc["capabilities"][k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|s| s.to_ascii_uppercase().trim_start_matches("CAP_").to_owned())
            .collect()
    };
    let drop = list("drop");
    let mut caps: Vec<String> = if drop.iter().any(|d| d == "ALL") {
        Vec::new()
    } else {
        RUNTIME_DEFAULT
            .iter()
            .map(|s| s.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    for a in list("add") {
        if !caps.contains(&a) {
            caps.push(a);
        }
    }
    caps.iter().map(|c| c.to_ascii_lowercase()).collect()
}

/// A started container.
struct Started {
    child: tokio::process::Child,
    /// The Pod it runs for.
    pod: String,
    /// Its args and env, for the record.
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
}

/// Start the first container of `pod` as the kubelet would (see the module doc), in network
/// namespace `netns`.
async fn start_container(
    cluster: &Cluster,
    admin: &Client,
    pod: &Value,
    netns: &str,
) -> Result<Started> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let spec = &pod["spec"];
    let c = &spec["containers"][0];
    ensure!(
        c["command"].is_null(),
        "container {name} sets command {}: the image entrypoint is not used",
        c["command"]
    );
    let images = images()?;
    let image = c["image"].as_str().unwrap_or_default();
    let repo = image.rsplit_once(':').map_or(image, |(r, _)| r);
    let img = images
        .get(repo)
        .ok_or_else(|| anyhow!("Pod {name} runs image {image:?}, not ours"))?;

    let env = container_env(admin, pod, c).await?;
    let args: Vec<String> = c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| expand(a.as_str().unwrap_or_default(), &env))
        .collect();

    // The projected ServiceAccount volume.
    let sa = spec["serviceAccountName"].as_str().unwrap_or("default");
    let token = cluster
        .service_account_token(admin, ns, sa, Some((name, uid)))
        .await?;
    let sa_dir = cluster.dir().join(format!("sa-{ns}-{name}"));
    std::fs::create_dir_all(&sa_dir)?;
    std::fs::write(sa_dir.join("token"), token)?;
    std::fs::copy(cluster.dir().join("pki/ca.crt"), sa_dir.join("ca.crt"))?;
    std::fs::write(sa_dir.join("namespace"), ns)?;

    // The user and capabilities of the securityContext (container over pod over image).
    let psc = &spec["securityContext"];
    let sc = &c["securityContext"];
    let pick = |k: &str| sc[k].as_u64().or_else(|| psc[k].as_u64());
    let run_uid = pick("runAsUser").map_or(img.uid, |u| u as u32);
    let run_gid = pick("runAsGroup").map_or(img.gid, |g| g as u32);
    let non_root = sc["runAsNonRoot"]
        .as_bool()
        .or_else(|| psc["runAsNonRoot"].as_bool())
        .unwrap_or(false);
    ensure!(
        !(non_root && run_uid == 0),
        "the kubelet refuses {name}: runAsNonRoot but the image runs as root"
    );
    let groups: Vec<String> = psc["fsGroup"]
        .as_u64()
        .into_iter()
        .chain(
            psc["supplementalGroups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64),
        )
        .map(|g| g.to_string())
        .collect();
    let caps = capabilities(sc);
    let cap_set = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut setpriv = vec![
        "setpriv".to_owned(),
        format!("--reuid={run_uid}"),
        format!("--regid={run_gid}"),
        if groups.is_empty() {
            "--clear-groups".to_owned()
        } else {
            format!("--groups={}", groups.join(","))
        },
        format!("--bounding-set={cap_set}"),
    ];
    if run_uid == 0 {
        // runc gives root the listed capabilities; a non-root user keeps none across exec
        // (no ambient capabilities in Kubernetes) unless the binary has file capabilities.
        setpriv.push(format!("--inh-caps={cap_set}"));
    }
    if sc["allowPrivilegeEscalation"] == false {
        setpriv.push("--no-new-privs".to_owned());
    }
    let read_only = sc["readOnlyRootFilesystem"] == true;

    let url = cluster.apiserver_url();
    let hostport = url.trim_start_matches("https://");
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("apiserver URL {url}"))?;
    let hostname = if spec["hostNetwork"] == true {
        spec["nodeName"].as_str().unwrap_or(name)
    } else {
        name
    };
    let log = cluster.dir().join(format!("{ns}-{name}.log"));
    let script = "set -e
mount -t tmpfs -o size=1m,mode=0755 tmpfs /run
mkdir -p /run/secrets/kubernetes.io/serviceaccount
mount --bind \"$1\" /run/secrets/kubernetes.io/serviceaccount
if [ \"$2\" = 1 ]; then mount -o remount,bind,ro /; fi
shift 2
exec \"$@\"";
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let child = tokio::process::Command::new("ip")
        .args(["netns", "exec", netns, "sh", "-c", script, "sh"])
        .arg(&sa_dir)
        .arg(if read_only { "1" } else { "0" })
        .args(&setpriv)
        .arg("--")
        .arg(&img.binary)
        .args(&args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOSTNAME", hostname)
        .env("HOME", "/")
        .env("KUBERNETES_SERVICE_HOST", host)
        .env("KUBERNETES_SERVICE_PORT", port)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting container of {name}"))?;
    Ok(Started {
        child,
        pod: name.to_owned(),
        args,
        env,
        log,
    })
}

// ------------------------------------------------------------------------------ variants

/// One deploy variant.
struct Variant {
    /// Namespace to deploy into (unique per variant).
    ns: &'static str,
    source: Source,
    /// ConfigMaps the user creates: (name, payload).
    user_config: Option<&'static str>,
    /// The user creates the `memberlist` Secret (MetalLB 0.9's install step).
    user_memberlist: bool,
    /// The PodSecurityPolicy objects expected to be dropped.
    expect_dropped: usize,
    /// The layer 2 pool, a /28 of 203.0.113.0/24 distinct per variant.
    pool: &'static str,
}

/// Chart values: `extra` followed by `configInline` holding [`legacy_config`] of `pool`.
fn config_inline(extra: &str, pool: &str) -> String {
    let indented: String = legacy_config(pool)
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect();
    format!("{extra}configInline:\n{indented}")
}

fn legacy_config(pool: &str) -> String {
    format!("address-pools:\n- name: default\n  protocol: layer2\n  addresses:\n  - {pool}\n")
}

/// The netns cluster a variant runs in: MetalLB's own files in one, ours and the packs' in a
/// second (a cluster has room for 29 network namespaces: a client, and two nodes plus a
/// controller per variant).
fn cluster_of(source: &Source) -> Result<&'static Cluster> {
    static OURS: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match source {
        Source::Manifests(_) | Source::Chart(..) => lab::cluster(),
        _ => OURS
            .get_or_init(|| {
                Cluster::start(&cluster::Options { netns: true }).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow!("starting the second netns cluster failed: {e}")),
    }
}

/// The client namespace of `cluster` (one per cluster, shared by its variants).
fn client_ns(cluster: &Cluster) -> Result<String> {
    static CLIENTS: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());
    let mut clients = CLIENTS
        .lock()
        .map_err(|_| anyhow!("client netns lock poisoned"))?;
    if let Some(name) = clients.get(cluster.dir()) {
        return Ok(name.clone());
    }
    let name = format!("dpc{}-{}", std::process::id() % 100_000, clients.len());
    lab::client_netns(cluster, &name)?;
    clients.insert(cluster.dir().to_path_buf(), name.clone());
    Ok(name)
}

/// What a deployed variant left running.
struct Deployed {
    lab: Lab,
    controller_addr: String,
    controller_netns: String,
    controller: Started,
    speakers: Vec<Started>,
}

/// Render, apply and start `v`, with two nodes; returns once the processes are started.
async fn deploy(v: &Variant) -> Result<Deployed> {
    let cluster = cluster_of(&v.source)?;
    let admin = cluster.client().await?;
    // Services of earlier variants would be handled by this controller too.
    let earlier: Vec<String> = USED.lock().map(|u| u.clone()).unwrap_or_default();
    for ns in earlier {
        let _ = Api::<Service>::namespaced(admin.clone(), &ns)
            .delete("web", &DeleteParams::default())
            .await;
    }
    if let Ok(mut u) = USED.lock() {
        u.push(v.ns.to_owned());
    }
    let scratch = cluster.dir().join(format!("deploy-{}", v.ns));
    std::fs::create_dir_all(&scratch)?;
    let docs = render(&v.source, v.ns, &scratch, &cluster.kubectl_path())?;
    let psp: Vec<Value> = docs
        .iter()
        .filter(|d| d["kind"] == "PodSecurityPolicy")
        .cloned()
        .collect();
    let (mut docs, dropped) = drop_unserved(docs);
    eprintln!("[deploy {}] dropped (not served): {dropped:?}", v.ns);
    ensure!(
        dropped.len() == v.expect_dropped,
        "dropped {dropped:?}, expected {} PodSecurityPolicy objects",
        v.expect_dropped
    );
    if let Some(p) = psp.first() {
        assert_psp_unserved(cluster, p, &scratch).await?;
    }
    if v.source.upstream_images() {
        let replaced = swap_images(&mut docs)?;
        eprintln!("[deploy {}] images replaced: {replaced:?}", v.ns);
        ensure!(
            replaced.len() == 2,
            "expected a controller and a speaker image: {replaced:?}"
        );
    } else {
        let images: Vec<&str> = docs
            .iter()
            .filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "DaemonSet")))
            .filter_map(|d| d["spec"]["template"]["spec"]["containers"][0]["image"].as_str())
            .collect();
        ensure!(
            images.len() == 2 && images.iter().all(|i| i.starts_with("metallb-rs/")),
            "the rendered workloads do not run our images: {images:?}"
        );
    }

    if !docs.iter().any(|d| d["kind"] == "Namespace") {
        let nsobj: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": v.ns},
        }))?;
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &nsobj)
            .await?;
    }
    kubectl_apply(cluster, v.ns, &docs, false, &scratch.join("applied.json")).await?;
    // The user's part of the install.
    if let Some(name) = v.user_config {
        let cm: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": v.ns},
            "data": {"config": legacy_config(v.pool)},
        }))?;
        Api::<ConfigMap>::namespaced(admin.clone(), v.ns)
            .create(&PostParams::default(), &cm)
            .await?;
    }
    if v.user_memberlist {
        // `kubectl create secret generic memberlist --from-literal=secretkey="$(openssl rand -base64 128)"`
        let key = lab::run(std::process::Command::new("openssl").args(["rand", "-base64", "128"]))?;
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "memberlist"},
            "stringData": {"secretkey": key.trim()},
        }))?;
        Api::<Secret>::namespaced(admin.clone(), v.ns)
            .create(&PostParams::default(), &secret)
            .await?;
    }

    // The workloads as the apiserver stores them (defaults applied).
    let workload = |kind: &str| -> Result<Value> {
        let d = docs
            .iter()
            .find(|d| d["kind"] == kind)
            .ok_or_else(|| anyhow!("no {kind} rendered"))?;
        Ok(d.clone())
    };
    let deploy_name = workload("Deployment")?["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let ds_name = workload("DaemonSet")?["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let deployment = stored(&admin, "apps/v1", "deployments", v.ns, &deploy_name).await?;
    let daemonset = stored(&admin, "apps/v1", "daemonsets", v.ns, &ds_name).await?;

    let short = format!(
        "{}{}",
        v.ns.trim_start_matches("mlb-"),
        std::process::id() % 1000
    );
    let mut nodes = Vec::new();
    for i in 0..2 {
        let log = cluster.dir().join(format!("{}-speaker-{i}.log", v.ns));
        nodes.push(lab::sim_node(
            cluster,
            &format!("{short}-n{i}"),
            &format!("{}-node-{i}", v.ns),
            log,
        )?);
    }
    let controller_netns = format!("{short}-ctl");
    let controller_addr = cluster.add_node_netns(&controller_netns)?;
    let mut lab = Lab {
        cluster,
        admin: admin.clone(),
        ns: v.ns.to_owned(),
        class: String::new(),
        speaker_kc: PathBuf::new(),
        nodes,
        client_ns: client_ns(cluster)?,
        controller: None,
    };
    for i in 0..2 {
        lab.create_node(i).await?;
    }
    let pod = create_pod(
        &admin,
        v.ns,
        &deployment,
        &format!("{deploy_name}-0"),
        &lab.nodes[0].name,
        &controller_addr,
        &lab.nodes[0].addr,
    )
    .await?;
    let controller = start_container(cluster, &admin, &pod, &controller_netns).await?;
    eprintln!(
        "[deploy {}] controller args {:?} env {:?}",
        v.ns,
        controller.args,
        redact(&controller.env)
    );
    let mut speakers = Vec::new();
    for i in 0..2 {
        let n = &lab.nodes[i];
        let pod = create_pod(
            &admin,
            v.ns,
            &daemonset,
            &format!("{ds_name}-{i}"),
            &n.name,
            &n.addr,
            &n.addr,
        )
        .await?;
        let s = start_container(cluster, &admin, &pod, &n.netns.clone()).await?;
        if i == 0 {
            eprintln!(
                "[deploy {}] speaker args {:?} env {:?}",
                v.ns,
                s.args,
                redact(&s.env)
            );
        }
        lab.nodes[i].log = s.log.clone();
        if let Some(p) = port_arg(&s.args) {
            lab.nodes[i].metrics_port = p;
        }
        speakers.push(s);
    }
    Ok(Deployed {
        lab,
        controller_addr,
        controller_netns,
        controller,
        speakers,
    })
}

/// The value of `--port=N` in `args` (MetalLB's metrics port).
fn port_arg(args: &[String]) -> Option<u16> {
    args.iter()
        .find_map(|a| a.strip_prefix("--port="))
        .and_then(|p| p.parse().ok())
}

fn redact(env: &[(String, String)]) -> Vec<String> {
    env.iter()
        .map(|(k, v)| {
            if k.contains("SECRET") {
                format!("{k}=<{} bytes>", v.len())
            } else {
                format!("{k}={v}")
            }
        })
        .collect()
}

/// An object as the apiserver stores it, as JSON.
async fn stored(
    admin: &Client,
    api_version: &str,
    plural: &str,
    ns: &str,
    name: &str,
) -> Result<Value> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = match plural {
        "deployments" => "Deployment",
        "daemonsets" => "DaemonSet",
        other => other,
    };
    let ar = kube::api::ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(admin.clone(), ns, &ar);
    Ok(serde_json::to_value(api.get(name).await?)?)
}

impl Started {
    /// SIGKILL the process and wait for it to exit.
    async fn kill(&mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

impl Deployed {
    /// Kill every process and wait for them to exit.
    async fn stop(mut self) -> Result<()> {
        self.controller.kill().await?;
        for s in &mut self.speakers {
            s.kill().await?;
        }
        Ok(())
    }

    /// Fail with `why` and the logs when the log at `path` contains `needle`.
    fn log_lacks(&self, path: &Path, needle: &str, why: &str) -> Result<()> {
        let log = std::fs::read_to_string(path)?;
        ensure!(!log.contains(needle), "{why}, yet: {needle}{}", self.logs());
        Ok(())
    }

    /// Stop every process (SIGKILL) and start it again from its Pod (as after a
    /// `kubectl rollout restart` that lands on the same nodes).
    async fn restart_all(&mut self) -> Result<()> {
        let cluster = self.lab.cluster;
        let admin = self.lab.admin.clone();
        let pods: Api<Pod> = Api::namespaced(admin.clone(), &self.lab.ns);
        self.controller.kill().await?;
        for s in &mut self.speakers {
            s.kill().await?;
        }
        let get = |name: String| {
            let pods = pods.clone();
            async move { anyhow::Ok(serde_json::to_value(pods.get(&name).await?)?) }
        };
        let pod = get(self.controller.pod.clone()).await?;
        self.controller = start_container(cluster, &admin, &pod, &self.controller_netns).await?;
        for i in 0..self.speakers.len() {
            let pod = get(self.speakers[i].pod.clone()).await?;
            let netns = self.lab.nodes[i].netns.clone();
            self.speakers[i] = start_container(cluster, &admin, &pod, &netns).await?;
        }
        Ok(())
    }

    /// The tail of the controller's and speakers' logs, for failure messages.
    fn logs(&self) -> String {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            format!(
                "\n==== {} ====\n{}",
                p.display(),
                lines[lines.len().saturating_sub(25)..].join("\n")
            )
        };
        std::iter::once(&self.controller.log)
            .chain(self.speakers.iter().map(|s| &s.log))
            .map(|p| tail(p))
            .collect()
    }

    /// A LoadBalancer Service `web` with endpoints on both nodes gets an IP from `pool`, the
    /// elected node (MetalLB's hash) answers ARP for it from the client namespace (real
    /// `arping`), exposes `metallb_speaker_announced` and posts `nodeAssigned`; the controller
    /// counts the IP in use.
    async fn assert_announced(&self, pool: &str) -> Result<std::net::IpAddr> {
        let lab = &self.lab;
        lab.service("web", json!({}), &[0, 1]).await?;
        let ip = lab.wait_ip("web").await.with_context(|| self.logs())?;
        let net: ipnet::IpNet = pool.parse()?;
        ensure!(net.contains(&ip), "{ip} is not from the pool {pool}");
        let owner = lab.owner_index(&[0, 1], ip)?;
        lab.wait_arp_owner(ip, owner)
            .await
            .with_context(|| self.logs())?;
        lab.assert_only_owner(ip, owner, 3, "announced")?;
        let line = format!(
            "metallb_speaker_announced{{ip=\"{ip}\",node=\"{}\",protocol=\"layer2\",service=\"{}/web\"}} 1",
            lab.nodes[owner].name, lab.ns
        );
        lab.wait_metric(owner, |m| m.lines().any(|l| l == line), &line)
            .await
            .with_context(|| self.logs())?;
        lab.wait_event("web", "nodeAssigned", &lab.nodes[owner].name)
            .await?;
        let port = port_arg(&self.controller.args).unwrap_or(7472);
        let m = lab::scrape(&self.controller_addr, port).await?;
        ensure!(
            m.lines()
                .any(|l| l == "metallb_allocator_addresses_in_use_total{pool=\"default\"} 1"),
            "controller metrics:\n{m}"
        );
        Ok(ip)
    }
}

/// Deploy `v`, prove a Service is served, then stop its processes and delete the Service.
async fn run_variant(v: Variant) -> Result<()> {
    run_variant_then(v, |_| Ok(())).await
}

/// [`run_variant`] with a further `check` of the running deployment.
async fn run_variant_then(v: Variant, check: impl FnOnce(&Deployed) -> Result<()>) -> Result<()> {
    let _serial = SERIAL.lock().await;
    let d = deploy(&v).await?;
    d.assert_announced(v.pool).await?;
    check(&d)?;
    let _ = Api::<Service>::namespaced(d.lab.admin.clone(), v.ns)
        .delete("web", &DeleteParams::default())
        .await;
    d.stop().await
}

// --------------------------------------------------------------------------------- tests

/// Every upstream variant tried, by namespace: (namespace, source, the user's ConfigMap,
/// whether the user creates the `memberlist` Secret, PodSecurityPolicies dropped, pool).
fn upstream_variant(ns: &'static str) -> Variant {
    let chart = |values: String| Source::Chart("v0.12.1", values);
    let (source, user_config, user_memberlist, expect_dropped, pool) = match ns {
        // manifests@v0.9.6: Docker Hub images, `--port=7472 --config=config`,
        // METALLB_ML_NAMESPACE, caps NET_ADMIN/NET_RAW/SYS_ADMIN, the user-created
        // `memberlist` Secret, RBAC without EndpointSlices.
        "mlb-m096" => (Source::Manifests("v0.9.6"), Some("config"), true, 2, "203.0.113.208/28"),
        // manifests@v0.12.1: quay.io images, `--log-level=info`, the controller creating the
        // `memberlist` Secret, the speaker's namespace from its ServiceAccount.
        "mlb-m0121" => (Source::Manifests("v0.12.1"), Some("config"), false, 2, "203.0.113.16/28"),
        // chart@v0.12.1, configInline: the chart's ConfigMap `metallb` (`--config=metallb`),
        // Secret `metallb-memberlist`, `app.kubernetes.io/*` gossip labels.
        "mlb-inline" => (chart(config_inline("", "203.0.113.32/28")), None, false, 2, "203.0.113.32/28"),
        // chart@v0.12.1, existingConfigMap: config (the manifests' name), no PSPs rendered.
        "mlb-existing" => (
            chart("existingConfigMap: config\npsp:\n  create: false\n".into()),
            Some("config"), false, 0, "203.0.113.48/28",
        ),
        // chart@v0.12.1, speaker.memberlist.enabled=false: no METALLB_ML_* env, no Secret.
        "mlb-noml" => (
            chart(config_inline("speaker:\n  memberlist:\n    enabled: false\n", "203.0.113.64/28")),
            None, false, 2, "203.0.113.64/28",
        ),
        // The Flux/bitnami recipe's shape: existingConfigMap: metallb-config, passed as
        // `--config=metallb-config`; speakers tolerating masters.
        "mlb-bitnami" => (
            chart("existingConfigMap: metallb-config\nspeaker:\n  tolerations:\n  - key: node-role.kubernetes.io/master\n    effect: NoSchedule\n".into()),
            Some("metallb-config"), false, 2, "203.0.113.80/28",
        ),
        other => panic!("no variant {other}"),
    };
    Variant {
        ns,
        source,
        user_config,
        user_memberlist,
        expect_dropped,
        pool,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn metallb_0_9_6_manifests() -> Result<()> {
    run_variant(upstream_variant("mlb-m096")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn metallb_0_12_1_manifests() -> Result<()> {
    run_variant(upstream_variant("mlb-m0121")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn metallb_0_12_1_chart_config_inline() -> Result<()> {
    run_variant(upstream_variant("mlb-inline")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn metallb_0_12_1_chart_existing_config_map() -> Result<()> {
    run_variant(upstream_variant("mlb-existing")).await
}

/// Without gossip env the speakers still find each other's Pods (by their own Pod's labels).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn metallb_0_12_1_chart_without_memberlist() -> Result<()> {
    run_variant(upstream_variant("mlb-noml")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn metallb_0_12_1_chart_metallb_config() -> Result<()> {
    run_variant(upstream_variant("mlb-bitnami")).await
}

// ------------------------------------------------------------------------------ our chart

/// `charts/metallb-rs/tests/values/*.yaml`: (variant name, values file).
fn chart_value_files() -> Result<Vec<(String, PathBuf)>> {
    let dir = cluster::repo_root().join("charts/metallb-rs/tests/values");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((name, p));
        }
    }
    out.sort();
    ensure!(!out.is_empty(), "no values files in {}", dir.display());
    Ok(out)
}

/// Render our chart as release `metallb` in `metallb-system` with a values file.
fn render_our_chart(values: &Path) -> Result<String> {
    let text = std::fs::read_to_string(values)?;
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chart-render");
    std::fs::create_dir_all(&scratch)?;
    helm_template(
        &cluster::repo_root().join("charts/metallb-rs"),
        "metallb",
        "metallb-system",
        &text,
        &scratch,
    )
}

/// `helm lint --strict` passes with the defaults and with every values file.
#[test]
fn chart_lints() -> Result<()> {
    let chart = cluster::repo_root().join("charts/metallb-rs");
    let mut runs: Vec<Option<PathBuf>> = vec![None];
    runs.extend(chart_value_files()?.into_iter().map(|(_, p)| Some(p)));
    for values in runs {
        let mut cmd = std::process::Command::new(helm()?);
        cmd.args(["lint", "--strict"]).arg(&chart);
        if let Some(v) = &values {
            cmd.arg("-f").arg(v);
        }
        let out = cmd.output()?;
        ensure!(
            out.status.success(),
            "helm lint {values:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `helm template` of every values file equals its golden file in
/// `charts/metallb-rs/tests/golden/` (`UPDATE_GOLDEN=1` rewrites them).
#[test]
fn chart_renders_goldens() -> Result<()> {
    let golden = cluster::repo_root().join("charts/metallb-rs/tests/golden");
    let mut failures = Vec::new();
    for (name, values) in chart_value_files()? {
        let rendered = render_our_chart(&values)?;
        if let Err(e) = common::check_golden(&golden.join(format!("{name}.yaml")), &rendered) {
            failures.push(e);
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

/// Our chart (defaults) and our manifest run both workloads hardened: non-root, the runtime's
/// default seccomp filter, every capability dropped but the speaker's NET_RAW, a read-only
/// root filesystem, and no container port but metrics (7472) and memberlist (7946).
#[test]
fn our_workloads_are_hardened() -> Result<()> {
    let manifest = std::fs::read_to_string(cluster::repo_root().join("manifests/metallb-rs.yaml"))?;
    let empty = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("empty-values.yaml");
    std::fs::write(&empty, "{}\n")?;
    for (what, text) in [("manifest", manifest), ("chart", render_our_chart(&empty)?)] {
        let docs = yaml_docs(&text)?;
        let workloads: Vec<&Value> = docs
            .iter()
            .filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "DaemonSet")))
            .collect();
        ensure!(
            workloads.len() == 2,
            "{what}: {} workloads",
            workloads.len()
        );
        for w in workloads {
            let name = w["metadata"]["name"].as_str().unwrap_or_default();
            let pod = &w["spec"]["template"]["spec"];
            let psc = &pod["securityContext"];
            ensure!(
                psc["seccompProfile"]["type"] == "RuntimeDefault",
                "{what} {name}: pod seccompProfile {}",
                psc["seccompProfile"]
            );
            ensure!(
                psc["runAsNonRoot"] == true && psc["runAsUser"].as_u64().is_some_and(|u| u != 0),
                "{what} {name}: not non-root: {psc}"
            );
            for c in pod["containers"].as_array().into_iter().flatten() {
                let sc = &c["securityContext"];
                ensure!(
                    sc["capabilities"]["drop"] == json!(["ALL"]),
                    "{what} {name}: drops {}",
                    sc["capabilities"]["drop"]
                );
                let add = &sc["capabilities"]["add"];
                ensure!(
                    add.is_null() || *add == json!(["NET_RAW"]),
                    "{what} {name}: adds {add}"
                );
                ensure!(
                    sc["readOnlyRootFilesystem"] == true,
                    "{what} {name}: writable root filesystem"
                );
                for p in c["ports"].as_array().into_iter().flatten() {
                    let port = p["containerPort"].as_u64().unwrap_or_default();
                    ensure!(
                        port == 7472 || port == 7946,
                        "{what} {name}: unexpected container port {p}"
                    );
                }
            }
        }
    }
    Ok(())
}

/// The flattened keys of a values tree (`speaker.memberlist.enabled`, ...); lists and empty
/// maps are leaves.
fn value_keys(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                value_keys(x, &key, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

/// Values compatibility with MetalLB's chart 0.12.1: every key of its values.yaml (read from
/// the module cache) exists in ours, and its whole values.yaml renders with our chart.
#[test]
fn chart_takes_metallb_0_12_1_values() -> Result<()> {
    let upstream = metallb_module("v0.12.1")?.join("charts/metallb/values.yaml");
    let theirs: Value = serde_saphyr::from_str(&std::fs::read_to_string(&upstream)?)?;
    let ours_path = cluster::repo_root().join("charts/metallb-rs/values.yaml");
    let ours: Value = serde_saphyr::from_str(&std::fs::read_to_string(&ours_path)?)?;
    let (mut want, mut have) = (Vec::new(), Vec::new());
    value_keys(&theirs, "", &mut want);
    value_keys(&ours, "", &mut have);
    let missing: Vec<&String> = want.iter().filter(|k| !have.contains(k)).collect();
    ensure!(
        missing.is_empty(),
        "keys of MetalLB's chart missing from ours: {missing:?}"
    );
    let rendered = render_our_chart(&upstream)?;
    ensure!(
        rendered.contains("kind: DaemonSet") && rendered.contains("--config=metallb"),
        "MetalLB's values.yaml rendered:\n{rendered}"
    );
    Ok(())
}

/// Every rendered variant passes a server-side dry run against the real apiserver (schema,
/// defaulting, admission). PodMonitor/PrometheusRule are skipped: the monitoring.coreos.com
/// CRDs are not installed in the harness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn chart_variants_pass_server_side_dry_run() -> Result<()> {
    let cluster = lab::cluster()?;
    let scratch = cluster.dir().join("chart-dry-run");
    std::fs::create_dir_all(&scratch)?;
    for (name, values) in chart_value_files()? {
        let docs = yaml_docs(&render_our_chart(&values)?)?;
        let (docs, skipped): (Vec<Value>, Vec<Value>) = docs.into_iter().partition(|d| {
            !d["apiVersion"]
                .as_str()
                .is_some_and(|a| a.starts_with("monitoring.coreos.com/"))
        });
        let out = kubectl_apply(
            cluster,
            "metallb-system",
            &docs,
            true,
            &scratch.join(format!("{name}.json")),
        )
        .await
        .with_context(|| format!("values {name}"))?;
        ensure!(
            out.contains("(server dry run)"),
            "not a server dry run? {out}"
        );
        eprintln!(
            "[chart {name}] {} objects accepted (server dry run), {} monitoring objects skipped",
            docs.len(),
            skipped.len()
        );
    }
    Ok(())
}

/// Our chart deployed for real (rendered, applied, run as the kubelet would): the non-root
/// speaker gets CAP_NET_RAW from its image's file capability, the controller takes its Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn our_chart_runs() -> Result<()> {
    let pool = "203.0.113.112/28";
    let v = Variant {
        ns: "mlb-ours",
        source: Source::OurChart(config_inline("", pool)),
        user_config: None,
        user_memberlist: false,
        expect_dropped: 0,
        pool,
    };
    run_variant_then(v, |d| {
        d.log_lacks(
            &d.controller.log,
            "RBAC does not allow Leases",
            "the chart grants Leases",
        )
    })
    .await
}

/// Our manifest deployed for real: non-root speaker (file capability), Pods watched, the
/// controller with its Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn our_manifest_runs() -> Result<()> {
    let v = Variant {
        ns: "mlb-manifest",
        source: Source::OurManifest,
        user_config: Some("config"),
        user_memberlist: false,
        expect_dropped: 0,
        pool: "203.0.113.128/28",
    };
    run_variant_then(v, |d| {
        d.log_lacks(
            &d.controller.log,
            "RBAC does not allow Leases",
            "the manifest grants Leases",
        )?;
        let speaker = std::fs::read_to_string(&d.speakers[0].log)?;
        ensure!(
            speaker.contains("Watching speaker Pods"),
            "our manifest grants Pods watch:{}",
            d.logs()
        );
        Ok(())
    })
    .await
}

// -------------------------------------------------------------------- Charmed Kubernetes

/// The objects the Charmed Kubernetes charms (charmed-kubernetes/metallb-operator, podspec v3,
/// `deployment: type: daemon`, MetalLB 0.9.3 images) have Juju create, written out here from
/// the charms' pod specs: containers **without args**, the speaker's env contract
/// (`METALLB_NODE_NAME`, `METALLB_HOST`, `METALLB_ML_BIND_ADDR`, `METALLB_ML_LABELS=
/// app=metallb,component=speaker`, `METALLB_ML_NAMESPACE`, `METALLB_ML_SECRET_KEY` from Secret
/// `memberlist`), caps NET_ADMIN/NET_RAW/SYS_ADMIN, the `memberlist` Secret (128 random
/// characters), the ConfigMap `config` with one layer2 pool from the `iprange` option, global
/// roles plus `config-watcher`/`pod-lister`. Juju's side is assumed: Pods labelled by Juju
/// (`app.kubernetes.io/name: metallb-speaker`, not the `METALLB_ML_LABELS`), ServiceAccounts
/// named after the applications, the speaker on the host network.
fn charmed_objects(ns: &str, iprange: &str) -> Result<Vec<Value>> {
    let secret: String =
        lab::run(std::process::Command::new("openssl").args(["rand", "-hex", "64"]))?
            .trim()
            .to_owned();
    let rule = |groups: &[&str], res: &[&str], verbs: &[&str]| json!({"apiGroups": groups, "resources": res, "verbs": verbs});
    let mut docs = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config", "namespace": ns},
               "data": {"config": format!("address-pools:\n- name: default\n  protocol: layer2\n  addresses:\n  - {iprange}")}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "memberlist", "namespace": ns},
               "type": "Opaque", "stringData": {"secretkey": secret}}),
    ];
    let apps = [
        (
            "metallb-controller",
            vec![
                rule(&[""], &["services"], &["get", "list", "watch", "update"]),
                rule(&[""], &["services/status"], &["update"]),
                rule(&[""], &["events"], &["create", "patch"]),
            ],
            vec!["config-watcher"],
        ),
        (
            "metallb-speaker",
            vec![
                rule(
                    &[""],
                    &["services", "endpoints", "nodes"],
                    &["get", "list", "watch"],
                ),
                rule(&[""], &["events"], &["create", "patch"]),
            ],
            vec!["config-watcher", "pod-lister"],
        ),
    ];
    docs.push(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "config-watcher", "namespace": ns},
        "rules": [rule(&[""], &["configmaps"], &["get", "list", "watch"])]}),
    );
    docs.push(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "pod-lister", "namespace": ns},
        "rules": [rule(&[""], &["pods"], &["list"])]}),
    );
    for (app, rules, roles) in apps {
        let subject = json!([{"kind": "ServiceAccount", "name": app, "namespace": ns}]);
        docs.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": app, "namespace": ns}}));
        docs.push(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": format!("{ns}-{app}")}, "rules": rules}),
        );
        docs.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("{ns}-{app}")}, "subjects": subject,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{ns}-{app}")}}));
        for role in roles {
            docs.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": format!("{role}-{app}"), "namespace": ns}, "subjects": subject,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role}}));
        }
    }
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let labels = |app: &str| json!({"app.kubernetes.io/name": app});
    docs.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "metallb-controller", "namespace": ns},
    "spec": {"selector": {"matchLabels": labels("metallb-controller")}, "template": {
        "metadata": {"labels": labels("metallb-controller")},
        "spec": {"serviceAccountName": "metallb-controller", "containers": [{
            "name": "controller", "image": "metallb/controller:v0.9.3", "imagePullPolicy": "Always",
            "ports": [{"containerPort": 7472, "protocol": "TCP", "name": "monitoring"}],
            "securityContext": {"privileged": false, "runAsNonRoot": true, "runAsUser": 65534,
                "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
        }]}}}}));
    docs.push(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "metallb-speaker", "namespace": ns},
        "spec": {"selector": {"matchLabels": labels("metallb-speaker")}, "template": {
            "metadata": {"labels": labels("metallb-speaker")},
            "spec": {"serviceAccountName": "metallb-speaker", "hostNetwork": true, "containers": [{
                "name": "speaker", "image": "metallb/speaker:v0.9.3", "imagePullPolicy": "Always",
                "ports": [{"containerPort": 7472, "protocol": "TCP", "name": "monitoring"}],
                "env": [
                    {"name": "METALLB_NODE_NAME", "valueFrom": field("spec.nodeName")},
                    {"name": "METALLB_HOST", "valueFrom": field("status.hostIP")},
                    {"name": "METALLB_ML_BIND_ADDR", "valueFrom": field("status.podIP")},
                    {"name": "METALLB_ML_LABELS", "value": "app=metallb,component=speaker"},
                    {"name": "METALLB_ML_NAMESPACE", "valueFrom": field("metadata.namespace")},
                    {"name": "METALLB_ML_SECRET_KEY", "valueFrom": {"secretKeyRef": {"name": "memberlist", "key": "secretkey"}}},
                ],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "capabilities": {"add": ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"], "drop": ["ALL"]}},
            }]}}}}));
    Ok(docs)
}

/// Charmed Kubernetes' contract, accepted as it is: no args (metrics on the default port,
/// the config from `config`), the env above, the charm's Secret and one-pool ConfigMap; the
/// speakers find each other although Juju's Pod labels differ from `METALLB_ML_LABELS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn charmed_kubernetes_charms() -> Result<()> {
    let v = Variant {
        ns: "mlb-charmed",
        source: Source::Charmed("203.0.113.144-203.0.113.159"),
        user_config: None,
        user_memberlist: false,
        expect_dropped: 0,
        pool: "203.0.113.144/28",
    };
    run_variant_then(v, |d| {
        ensure!(
            d.controller.args.is_empty() && d.speakers[0].args.is_empty(),
            "the charms pass no args"
        );
        let log = std::fs::read_to_string(&d.speakers[0].log)?;
        ensure!(
            log.contains("does not select this speaker's own Pod"),
            "the label mismatch went unnoticed:{}",
            d.logs()
        );
        Ok(())
    })
    .await
}

// ------------------------------------------------------- kustomize overlay + Spectro pack

/// Our kustomize overlay over MetalLB 0.9.6's manifests (Spectro's lb-metallb manifest pack
/// deploys 0.9.x), with the ConfigMap that pack writes from `addresses` + `avoidBuggyIps`
/// (docs/packs/spectro-lb-metallb.md). Then the pack's troubleshooting step: the addresses
/// are edited and a new Service is served with no `rollout restart`; and a restart of every
/// process (what that step did) moves no IP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "requires root + netns; run by make test"]
async fn kustomize_overlay_and_spectro_pack() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let v = Variant {
        ns: "mlb-spectro",
        source: Source::Kustomize("v0.9.6"),
        user_config: None,
        user_memberlist: true,
        expect_dropped: 0,
        pool: "203.0.113.0/29",
    };
    let mut d = deploy(&v).await?;
    let spectro = |addresses: &[&str]| {
        let list: String = addresses.iter().map(|a| format!("  - {a}\n")).collect();
        format!(
            "address-pools:\n- name: default\n  protocol: layer2\n  avoid-buggy-ips: true\n  addresses:\n{list}"
        )
    };
    let cms: Api<ConfigMap> = Api::namespaced(d.lab.admin.clone(), v.ns);
    let write = |payload: String| {
        let cms = cms.clone();
        async move {
            let cm: ConfigMap = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "config"}, "data": {"config": payload},
            }))?;
            cms.patch(
                "config",
                &PatchParams::apply("spectro-pack").force(),
                &Patch::Apply(&cm),
            )
            .await?;
            anyhow::Ok(())
        }
    };
    // Two addresses, the first a .0: avoidBuggyIps leaves one.
    write(spectro(&["203.0.113.0-203.0.113.1"])).await?;
    let ip = d.assert_announced("203.0.113.0/31").await?;
    ensure!(ip.to_string() == "203.0.113.1", "avoid-buggy-ips: got {ip}");
    // The pool is full: a second Service waits (and so proves the edit is what serves it).
    let lab = &d.lab;
    lab.service("web2", json!({}), &[0, 1]).await?;
    let svcs: Api<Service> = Api::namespaced(lab.admin.clone(), v.ns);
    cluster::wait_event(&lab.admin, v.ns, "web2", "AllocationFailed", "", WAIT)
        .await
        .with_context(|| d.logs())?;
    ensure!(
        metallb_rs::k8s::service::status_ips(&svcs.get_status("web2").await?).is_empty(),
        "web2 got an IP from a full pool"
    );
    // The pack's "edit the addresses": applied live, no restart.
    write(spectro(&[
        "203.0.113.0-203.0.113.1",
        "203.0.113.2-203.0.113.7",
    ]))
    .await?;
    let ip2 = lab.wait_ip("web2").await.with_context(|| d.logs())?;
    let owner2 = lab.owner_index(&[0, 1], ip2)?;
    lab.wait_arp_owner(ip2, owner2).await?;
    let owner = lab.owner_index(&[0, 1], ip)?;

    // The pack's "rollout restart": every process restarted; no IP moves, same owners.
    d.restart_all().await?;
    let lab = &d.lab;
    for (name, want, o) in [("web", ip, owner), ("web2", ip2, owner2)] {
        let got = lab.wait_ip(name).await?;
        ensure!(got == want, "{name} moved from {want} to {got} on restart");
        lab.wait_arp_owner(want, o)
            .await
            .with_context(|| d.logs())?;
    }
    for name in ["web", "web2"] {
        let _ = svcs.delete(name, &DeleteParams::default()).await;
    }
    d.stop().await
}

/// What can be checked of the Dockerfile without Docker: every binary of the package is built
/// and copied out and is the entrypoint of a target named after it; every `cargo build` is
/// `--locked --offline` after one `cargo fetch --locked`; the controller target runs as
/// 65534; the speaker's binary gets exactly `cap_net_raw`. (`make lint` runs hadolint.)
#[test]
fn dockerfile_builds_what_the_tests_run() -> Result<()> {
    let text = std::fs::read_to_string(cluster::repo_root().join("Dockerfile"))?;
    // The package's binaries: src/bin/*.rs (no [[bin]] sections).
    let mut bins: Vec<String> = std::fs::read_dir(cluster::repo_root().join("src/bin"))?
        .filter_map(|e| {
            e.ok()?
                .path()
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .collect();
    bins.sort();
    ensure!(bins.len() == 3, "binaries in src/bin: {bins:?}");
    let stages = dockerfile_stages(&text);
    for bin in &bins {
        ensure!(
            text.contains(&format!("target/release/{bin}")),
            "the Dockerfile does not copy out {bin}"
        );
        let target = bin.trim_start_matches("metallb-");
        let entry = stages.get(target).and_then(|s| s.entrypoint.clone());
        ensure!(
            entry.as_deref() == Some(&format!("/{bin}")[..]),
            "target {target}: entrypoint {entry:?}, expected /{bin}"
        );
    }
    let builds: Vec<&str> = text.split("cargo build").skip(1).collect();
    ensure!(
        !builds.is_empty()
            && builds.iter().all(|b| {
                let args = b.split("&&").next().unwrap_or_default();
                args.contains("--locked") && args.contains("--offline")
            }),
        "every cargo build must be --locked --offline"
    );
    ensure!(
        text.contains("cargo fetch --locked"),
        "no cargo fetch --locked"
    );
    ensure!(
        stages.get("controller").map(|s| (s.uid, s.gid)) == Some((65534, 65534)),
        "the controller image must run as 65534"
    );
    ensure!(
        dockerfile_setcap(&text, "speaker").as_deref() == Some("cap_net_raw+ep"),
        "the speaker binary must get cap_net_raw (and nothing else)"
    );
    Ok(())
}

/// Unit checks of the kubelet emulation.
#[test]
fn kubelet_expansion_and_capabilities() {
    let vars = vec![("A".to_owned(), "x".to_owned())];
    assert_eq!(expand("--a=$(A) $$(A) $(B)", &vars), "--a=x $(A) $(B)");
    let sc = json!({"capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]}});
    assert_eq!(capabilities(&sc), vec!["net_raw"]);
    let pod = json!({"metadata": {"labels": {"app": "metallb"}}, "status": {"podIPs": [{"ip": "a"}, {"ip": "b"}]}});
    assert_eq!(
        field_ref(&pod, "metadata.labels['app']").unwrap(),
        "metallb"
    );
    assert_eq!(field_ref(&pod, "status.podIPs").unwrap(), "a,b");
    assert!(field_ref(&pod, "spec.unknown").is_err());
}
