//! `metallb-migrate --from-cluster`: the migration done inside a live cluster. I/O (kube).
//!
//! ```text
//!  ConfigMap ──► config::parse (the controller's validator) ──► migrate() ──► objects
//!  Services (--services) ──► services::plan ──► annotation patches           │
//!                                                                            ▼
//!  --dry-run: print the objects and what would change (plan::step, line diffs)
//!  --apply:   pin the ConfigMap (config-source: configmap) → server-side apply (labelled,
//!             field manager metallb-migrate) → read every metallb.io object back through the
//!             controller's reader → semantic hash equal to the ConfigMap's? → Service
//!             annotations → flip the ConfigMap annotation to `crds` (auto mode switches)
//!  --rollback: flip to `configmap` → restore Service annotations → delete what we labelled
//! ```
//!
//! Every step is idempotent: a second `--apply` changes nothing, one interrupted half-way
//! completes on a re-run (objects already written are `Unchanged`, the read-back and the flip
//! run again). Every apiserver call has a timeout and is retried with back-off on errors that
//! can pass (timeouts, 429, 5xx, connection errors).

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::{Value, json};

use super::plan::{self, FIELD_MANAGER, MIGRATED_BY_ANNOTATION, PREVIOUS_POOL_ANNOTATION, Step};
use super::{Migration, Options, Resource, emit, migrate, services};
use crate::config::crd::{self, Kind};
use crate::config::{self, Config};
use crate::k8s::config_source::SOURCE_ANNOTATION;

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Print the objects and the difference to the cluster; write nothing.
    DryRun,
    /// Write the objects, verify them, switch the binaries over.
    Apply,
    /// Switch back to the ConfigMap and remove what `Apply` wrote.
    Rollback,
}

/// The cluster run.
#[derive(Debug, Clone)]
pub struct Request {
    /// MetalLB's namespace.
    pub namespace: String,
    /// The ConfigMap's name.
    pub configmap: String,
    /// Rewrite the pool annotation of Services naming renamed pools.
    pub services: bool,
    /// Peer passwords into Secrets.
    pub password_secrets: bool,
    /// What to do.
    pub action: Action,
}

/// One apiserver request must answer within this.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per request.
const ATTEMPTS: u32 = 5;

/// Whether an error may pass by itself (worth a retry).
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        _ => true,
    }
}

/// Run one request with [`TIMEOUT`], retried with back-off (200 ms doubling) on transient
/// errors, at most [`ATTEMPTS`] times.
async fn call<T, F, Fut>(what: &str, f: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = kube::Result<T>>,
{
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=ATTEMPTS {
        let err = match tokio::time::timeout(TIMEOUT, f()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if !transient(&e) || attempt == ATTEMPTS => {
                return Err(anyhow!(e).context(what.to_string()));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) if attempt == ATTEMPTS => bail!("{what}: no answer within {TIMEOUT:?}"),
            Err(_) => format!("no answer within {TIMEOUT:?}"),
        };
        tracing::debug!(what, attempt, error = %err, "Retrying");
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    bail!("{what}: gave up")
}

fn is_status(e: &anyhow::Error, code: u16) -> bool {
    e.downcast_ref::<kube::Error>()
        .is_some_and(|k| matches!(k, kube::Error::Api(s) if s.code == code))
}

/// The API of a manifest's kind in `ns`.
fn api_for(client: &Client, ns: &str, kind: &str) -> Result<Api<DynamicObject>> {
    let ar = match Kind::parse(kind) {
        Some(k) => kind_resource(k),
        None if kind == "Secret" => ApiResource::erase::<Secret>(&()),
        None => bail!("cannot write a {kind}"),
    };
    Ok(Api::namespaced_with(client.clone(), ns, &ar))
}

use crate::k8s::config_source::api_resource as kind_resource;

fn name_of(v: &Value) -> String {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn kind_of(v: &Value) -> String {
    v.get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// What the cluster and the ConfigMap say.
struct Live {
    cm: ConfigMap,
    config: Config,
    migration: Migration,
    /// Desired objects (labelled), CRDs and Secrets, in emission order.
    objects: Vec<Value>,
    /// Service patches (old → new pool names), when `--services`.
    patches: Vec<services::ServicePatch>,
}

async fn read_live(client: &Client, req: &Request) -> Result<Live> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &req.namespace);
    let cm = call(
        &format!("reading ConfigMap {}/{}", req.namespace, req.configmap),
        || cms.get(&req.configmap),
    )
    .await?;
    let payload = crate::k8s::source::config_payload(&cm);
    let config = config::parse_payload(&payload)
        .map_err(|e| anyhow!("ConfigMap {}/{}: {e}", req.namespace, req.configmap))?;
    let migration = migrate(
        &config,
        &Options {
            namespace: req.namespace.clone(),
            password_secrets: req.password_secrets,
        },
    )
    .map_err(|e| anyhow!("ConfigMap {}/{}: {e}", req.namespace, req.configmap))?;
    let objects = migration
        .resources
        .iter()
        .filter(|r| !matches!(r, Resource::ServicePatch(_)))
        .map(|r| plan::label(r.to_value()))
        .collect();
    let mut patches = Vec::new();
    if req.services {
        let api: Api<Service> = Api::all(client.clone());
        let lp = ListParams::default();
        let list = call("listing Services", || api.list(&lp)).await?;
        let svcs: Vec<services::Service> = list
            .items
            .iter()
            .map(|s| services::Service {
                namespace: s.metadata.namespace.clone().unwrap_or_default(),
                name: s.metadata.name.clone().unwrap_or_default(),
                pool_annotations: services::POOL_ANNOTATIONS
                    .iter()
                    .filter_map(|k| {
                        s.metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(*k))
                            .map(|v| (k.to_string(), v.clone()))
                    })
                    .collect(),
            })
            .collect();
        patches = services::plan(&svcs, &migration.pool_renames(), &migration.pool_names()).0;
    }
    Ok(Live {
        cm,
        config,
        migration,
        objects,
        patches,
    })
}

/// The object of this manifest's kind and name in the cluster, as JSON.
async fn current(client: &Client, ns: &str, desired: &Value) -> Result<Option<Value>> {
    let api = api_for(client, ns, &kind_of(desired))?;
    let name = name_of(desired);
    let got = call(&format!("reading {} {name}", kind_of(desired)), || {
        api.get_opt(&name)
    })
    .await?;
    Ok(got.map(|o| serde_json::to_value(o).unwrap_or_default()))
}

/// Set the ConfigMap's source annotation (a merge patch; nothing else is touched).
async fn set_source(client: &Client, req: &Request, value: &str) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &req.namespace);
    let patch = json!({"metadata": {"annotations": {SOURCE_ANNOTATION: value}}});
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let patch = Patch::Merge(&patch);
    call(&format!("annotating ConfigMap {}", req.configmap), || {
        api.patch(&req.configmap, &pp, &patch)
    })
    .await?;
    Ok(())
}

fn source_of(cm: &ConfigMap) -> Option<&str> {
    cm.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SOURCE_ANNOTATION))
        .map(String::as_str)
}

/// Run against the cluster; returns the exit status (0 done, 1 refused or failed).
pub async fn run(
    client: Client,
    req: &Request,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8> {
    match req.action {
        Action::Rollback => rollback(&client, req, out).await,
        Action::DryRun | Action::Apply => {
            let live = read_live(&client, req).await?;
            apply(&client, req, &live, out, err).await
        }
    }
}

async fn apply(
    client: &Client,
    req: &Request,
    live: &Live,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8> {
    let ns = &req.namespace;
    let dry = req.action == Action::DryRun;
    // Plan every object first: nothing is written when one of them belongs to someone else.
    let mut steps = Vec::new();
    let mut conflicts = 0;
    for d in &live.objects {
        let cur = current(client, ns, d).await?;
        // Compare with the schema defaults written in, as the apiserver stored ours.
        let mut want = d.clone();
        if let (Some(k), Some(spec)) = (Kind::parse(&kind_of(d)), d.get("spec")) {
            want["spec"] = crate::k8s::crds::with_defaults(k, spec.clone());
        }
        let s = plan::step(&want, cur.as_ref());
        if matches!(s, Step::Conflict(_)) {
            conflicts += 1;
        }
        steps.push(s);
    }
    if dry {
        let header = vec![
            format!(
                "metallb.io objects metallb-migrate would write from ConfigMap {ns}/{}",
                req.configmap
            ),
            format!("semantic hash of the config: {}", expected_hash(live)),
        ];
        writeln!(
            out,
            "{}",
            emit::documents(&header, &live.objects).trim_end()
        )?;
        writeln!(out, "# Against the cluster:")?;
    }
    for (d, s) in live.objects.iter().zip(&steps) {
        let what = format!("{} {:?}", kind_of(d), name_of(d));
        let (verb, diff) = match s {
            Step::Create => ("create", None),
            Step::Unchanged => ("unchanged", None),
            Step::Update(diff) => ("update", Some(diff)),
            Step::Foreign => (
                "exists (not written by metallb-migrate, identical; left alone)",
                None,
            ),
            Step::Conflict(diff) => (
                "CONFLICT: exists, not written by metallb-migrate, differs",
                Some(diff),
            ),
        };
        let line = format!("{verb} {what}");
        if dry {
            writeln!(out, "# {line}")?;
            for l in diff.iter().flat_map(|d| d.lines()) {
                writeln!(out, "#   {l}")?;
            }
        } else if !matches!(s, Step::Unchanged | Step::Create) {
            writeln!(err, "{line}")?;
            for l in diff.iter().flat_map(|d| d.lines()) {
                writeln!(err, "  {l}")?;
            }
        }
    }
    for p in &live.patches {
        for (k, (from, to)) in &p.annotations {
            let line = format!(
                "patch Service {}/{}: {k} {from:?} -> {to:?}",
                p.namespace, p.name
            );
            if dry {
                writeln!(out, "# {line}")?;
            }
        }
    }
    let state = source_of(&live.cm).unwrap_or("<unset>");
    if dry {
        writeln!(
            out,
            "# ConfigMap {ns}/{} annotation {SOURCE_ANNOTATION}: {state} (--apply sets crds once the objects read back as this config)",
            req.configmap
        )?;
        return Ok(if conflicts > 0 { 1 } else { 0 });
    }
    if conflicts > 0 {
        writeln!(
            err,
            "refusing to apply: {conflicts} object(s) exist and were not written by metallb-migrate; nothing was written"
        )?;
        return Ok(1);
    }

    // 1. Pin the ConfigMap as the source while the objects appear (auto mode would otherwise
    //    switch to a half-written set), unless a previous run already switched.
    if source_of(&live.cm) != Some("crds") {
        set_source(client, req, "configmap").await?;
    }
    // 2. Write (server-side apply, our field manager; the label marks them ours).
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut written = 0;
    for (d, s) in live.objects.iter().zip(&steps) {
        if !matches!(s, Step::Create | Step::Update(_)) {
            continue;
        }
        let api = api_for(client, ns, &kind_of(d))?;
        let name = name_of(d);
        let patch = Patch::Apply(d);
        call(&format!("applying {} {name}", kind_of(d)), || {
            api.patch(&name, &pp, &patch)
        })
        .await?;
        written += 1;
    }
    // 3. Read back through the binaries' reader; the identity must be the ConfigMap's.
    let docs = call("reading the metallb.io objects back", || {
        crate::k8s::config_source::list_objects(
            client,
            ns,
            req.password_secrets || needs_secrets(live),
        )
    })
    .await?;
    let back = crd::read_config(&docs)
        .map_err(|e| anyhow!("the objects in {ns} do not read back as a config: {e}"))?;
    let want = expected_hash(live);
    if back.semantic_hash() != want {
        let expect = super::expected_config(&live.config, &live.migration).canonical();
        let text = |c: &Config| serde_json::to_string_pretty(&c.canonical()).unwrap_or_default();
        writeln!(
            err,
            "the metallb.io objects in {ns} do not read back as the ConfigMap's config (other objects in the namespace?); not switching. Difference (- ConfigMap, + objects):\n{}",
            plan::diff(&text(&expect), &text(&back))
        )?;
        return Ok(1);
    }
    // 4. Services asking for renamed pools (both names work in both sources meanwhile).
    let by = plan::migrated_by(ns, &req.configmap);
    for p in &live.patches {
        patch_service(client, p, &by).await?;
    }
    // 5. Switch.
    set_source(client, req, "crds").await?;
    writeln!(
        err,
        "applied {written} object(s) ({} unchanged), {} Service(s) patched; the objects read back with the ConfigMap's identity {want}; ConfigMap {ns}/{} now says {SOURCE_ANNOTATION}: crds",
        live.objects.len() - written,
        live.patches.len(),
        req.configmap
    )?;
    Ok(0)
}

fn needs_secrets(live: &Live) -> bool {
    live.objects.iter().any(|o| kind_of(o) == "Secret")
}

fn expected_hash(live: &Live) -> String {
    super::expected_config(&live.config, &live.migration).semantic_hash()
}

/// Rewrite a Service's pool annotations, remembering the old values for `--rollback`.
async fn patch_service(client: &Client, p: &services::ServicePatch, by: &str) -> Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), &p.namespace);
    let mut ann = serde_json::Map::new();
    let previous: BTreeMap<&str, &str> = p
        .annotations
        .iter()
        .map(|(k, (from, _))| (k.as_str(), from.as_str()))
        .collect();
    for (k, (_, to)) in &p.annotations {
        ann.insert(k.clone(), json!(to));
    }
    ann.insert(
        PREVIOUS_POOL_ANNOTATION.into(),
        json!(serde_json::to_string(&previous).unwrap_or_default()),
    );
    ann.insert(MIGRATED_BY_ANNOTATION.into(), json!(by));
    let patch = json!({"metadata": {"annotations": ann}});
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let patch = Patch::Merge(&patch);
    call(
        &format!("patching Service {}/{}", p.namespace, p.name),
        || api.patch(&p.name, &pp, &patch),
    )
    .await?;
    Ok(())
}

async fn rollback(client: &Client, req: &Request, out: &mut dyn Write) -> Result<u8> {
    let ns = &req.namespace;
    // 1. Back to the ConfigMap first: the binaries stop reading the objects before they go.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = call("reading the ConfigMap", || cms.get_opt(&req.configmap)).await?;
    if cm.is_some() {
        set_source(client, req, "configmap").await?;
    } else {
        writeln!(
            out,
            "ConfigMap {ns}/{} does not exist: nothing to switch back to; objects are kept",
            req.configmap
        )?;
        return Ok(1);
    }
    // 2. Services this install's migration re-annotated get their old pool names back.
    let mut restored = 0;
    let by = plan::migrated_by(ns, &req.configmap);
    if req.services {
        let api: Api<Service> = Api::all(client.clone());
        let lp = ListParams::default();
        let list = call("listing Services", || api.list(&lp)).await?;
        for s in list.items {
            let Some(prev) = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PREVIOUS_POOL_ANNOTATION))
            else {
                continue;
            };
            let mine = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MIGRATED_BY_ANNOTATION))
                == Some(&by);
            if !mine {
                continue;
            }
            let old: BTreeMap<String, String> = serde_json::from_str(prev).unwrap_or_default();
            let mut ann = serde_json::Map::new();
            for (k, v) in old {
                ann.insert(k, json!(v));
            }
            ann.insert(PREVIOUS_POOL_ANNOTATION.into(), Value::Null);
            ann.insert(MIGRATED_BY_ANNOTATION.into(), Value::Null);
            let patch = json!({"metadata": {"annotations": ann}});
            let (sns, name) = (
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default(),
            );
            let sapi: Api<Service> = Api::namespaced(client.clone(), &sns);
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            let patch = Patch::Merge(&patch);
            call(&format!("restoring Service {sns}/{name}"), || {
                sapi.patch(&name, &pp, &patch)
            })
            .await?;
            restored += 1;
        }
    }
    // 3. Delete what we labelled, nothing else.
    let lp = ListParams::default().labels(&format!("{}={}", plan::OWNER_LABEL, plan::OWNER));
    let mut deleted = 0;
    let mut apis: Vec<(String, Api<DynamicObject>)> = Kind::ALL
        .iter()
        .map(|k| {
            (
                k.as_str().to_string(),
                Api::namespaced_with(client.clone(), ns, &kind_resource(*k)),
            )
        })
        .collect();
    apis.push((
        "Secret".into(),
        Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<Secret>(&())),
    ));
    for (kind, api) in apis {
        let list = match call(&format!("listing {kind}s"), || api.list(&lp)).await {
            Ok(l) => l,
            // Secrets only matter when --password-secrets wrote some.
            Err(e) if kind == "Secret" && is_status(&e, 403) => continue,
            Err(e) => return Err(e),
        };
        for o in list.items {
            let name = o.metadata.name.clone().unwrap_or_default();
            let dp = DeleteParams::default();
            match call(&format!("deleting {kind} {name}"), || {
                api.delete(&name, &dp)
            })
            .await
            {
                Ok(_) => deleted += 1,
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e),
            }
        }
    }
    writeln!(
        out,
        "ConfigMap {ns}/{} says {SOURCE_ANNOTATION}: configmap; {restored} Service(s) restored; {deleted} object(s) written by metallb-migrate deleted",
        req.configmap
    )?;
    Ok(0)
}

/// Build the client as kubectl would (KUBECONFIG, ~/.kube/config, in-cluster) and run.
pub fn main(req: &Request, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(err, "cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async {
        let client = match Client::try_default()
            .await
            .context("connecting to the cluster (kubeconfig as kubectl finds it)")
        {
            Ok(c) => c,
            Err(e) => {
                let _ = writeln!(err, "{e:#}");
                return 1;
            }
        };
        match run(client, req, out, err).await {
            Ok(code) => code,
            Err(e) => {
                let _ = writeln!(err, "{e:#}");
                1
            }
        }
    })
}
