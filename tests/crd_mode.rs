//! CRD mode against the real kube-apiserver (tests/harness): the metallb.io objects
//! `metallb-migrate` produces read back, through the apiserver, as the legacy config they came
//! from; the controller runs from objects (`--config-source=crds`) under MetalLB 0.12.1's RBAC
//! plus `manifests/rbac-crd-mode.yaml`, with rejections reported on the object at fault; the
//! Spectro lb-metallb-helm seed's objects run as they are; and `metallb-migrate --from-cluster`
//! switches a running `--config-source=auto` controller to the objects and back without any
//! Service's IP changing.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use cluster::{Cluster, MetallbRbac};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServicePort, ServiceSpec};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams};
use metallb_rs::config::crd::{Document, Kind};
use metallb_rs::k8s::config_source::{SOURCE_ANNOTATION, api_resource, list_objects};
use metallb_rs::migrate::{self, Request, Resource, Source};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const MIGRATE: &str = env!("CARGO_BIN_EXE_metallb-migrate");

/// Server-side apply one manifest (a metallb.io object or a Secret) into `ns`.
async fn apply(admin: &Client, ns: &str, mut v: Value) -> Result<()> {
    v["metadata"]["namespace"] = json!(ns);
    let kind = v["kind"].as_str().unwrap_or_default().to_string();
    let name = v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ar = match Kind::parse(&kind) {
        Some(k) => api_resource(k),
        None => kube::core::ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns, &ar);
    api.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&v),
    )
    .await
    .with_context(|| format!("applying {kind} {name}"))?;
    Ok(())
}

/// Apply every document of a YAML text into `ns`.
async fn apply_yaml(admin: &Client, ns: &str, text: &str) -> Result<()> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)?;
    for d in docs.into_iter().filter(|d| !d.is_null()) {
        apply(admin, ns, d).await?;
    }
    Ok(())
}

async fn delete(admin: &Client, ns: &str, kind: Kind, name: &str) -> Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns, &api_resource(kind));
    api.delete(name, &DeleteParams::default()).await?;
    Ok(())
}

/// Every valid compat case and every successful migration golden, migrated by the library,
/// applied to the apiserver, listed back the way the binaries read objects: the config equals
/// the legacy parser's (renames as aliases, order-free lists in canonical order), and so does
/// the semantic hash `--apply` checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrated_objects_read_back_from_the_apiserver_as_the_legacy_config() -> Result<()> {
    let cluster = Cluster::shared()?;
    let admin = cluster.client().await?;
    let repo = common::repo();
    let mut inputs: Vec<(String, String)> = common::files(&repo.join("compat/valid"), "yaml")
        .into_iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap_or_default(),
            )
        })
        .collect();
    for dir in std::fs::read_dir(repo.join("migration"))? {
        let dir = dir?.path();
        if dir.join("expected.yaml").is_file() && !dir.join("args").is_file() {
            let text = std::fs::read_to_string(dir.join("input.yaml"))?;
            inputs.push((dir.display().to_string(), text));
        }
    }
    let mut checked = 0;
    let mut failures = Vec::new();
    for (name, text) in &inputs {
        let ns = cluster.fresh_namespace(&admin, "crd-back").await?;
        let req = Request {
            input: Source { name, text },
            only_data: false,
            namespace: Some(&ns),
            password_secrets: true,
            services: None,
        };
        // Cases the CRDs cannot hold are covered by tests/migration.rs.
        let Ok(outcome) = migrate::convert(&req) else {
            continue;
        };
        for r in &outcome.migration.resources {
            if let Resource::Crd(_) | Resource::Secret(_) = r {
                apply(&admin, &ns, r.to_value()).await?;
            }
        }
        let docs = list_objects(&admin, &ns, true).await?;
        let want = migrate::expected_config(&outcome.loaded.config, &outcome.migration);
        match metallb_rs::config::crd::read_config(&docs) {
            Ok(back) if back.canonical() == want.canonical() => {
                ensure!(
                    back.semantic_hash() == want.semantic_hash()
                        && (!outcome.migration.renames.is_empty()
                            || back.semantic_hash() == outcome.loaded.config.semantic_hash()),
                    "{name}: semantic hash differs from the ConfigMap's"
                );
                checked += 1;
            }
            Ok(back) => failures.push(format!(
                "{name}: read back\n{:#?}\nwant\n{:#?}",
                back.canonical(),
                want.canonical()
            )),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Every valid compat case migrates (tests/migration.rs); the migration goldens add more.
    let compat = common::files(&repo.join("compat/valid"), "yaml").len();
    assert!(checked > compat, "only {checked} cases checked");
    eprintln!("{checked} configs read back through the apiserver");
    Ok(())
}

/// A namespace with MetalLB 0.12.1's RBAC plus manifests/rbac-crd-mode.yaml.
struct Env {
    cluster: &'static Cluster,
    admin: Client,
    ns: String,
    class: String,
    kubeconfig: PathBuf,
}

impl Env {
    async fn new(prefix: &str, crd_rbac: bool) -> Result<Env> {
        let cluster = Cluster::shared()?;
        let admin = cluster.client().await?;
        let (ns, kubeconfig) = cluster
            .controller_namespace(&admin, prefix, MetallbRbac::V0_12_1)
            .await?;
        let env = Env {
            cluster,
            admin,
            class: format!("metallb-rs.test/{ns}"),
            ns,
            kubeconfig,
        };
        if crd_rbac {
            env.install_crd_rbac().await?;
        }
        Ok(env)
    }

    async fn install_crd_rbac(&self) -> Result<()> {
        self.cluster
            .install_crd_mode_rbac(&self.admin, &self.ns)
            .await
    }

    fn controller(&self, source: &str) -> Result<Controller> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = self
            .cluster
            .dir()
            .join(format!("controller-{}-{port}.log", self.ns));
        let file = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_controller"))
            .args(["--namespace", &self.ns, "--lb-class", &self.class])
            .args(["--log-level", "debug", "--config-source", source])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--port", &port.to_string()])
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("starting the controller")?;
        Ok(Controller { child, port, log })
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    async fn create_lb(&self, name: &str, pool: Option<&str>) -> Result<()> {
        let svc = Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: pool.map(|p| {
                    BTreeMap::from([(
                        "metallb.universe.tf/address-pool".to_string(),
                        p.to_string(),
                    )])
                }),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                load_balancer_class: Some(self.class.clone()),
                allocate_load_balancer_node_ports: Some(false),
                ports: Some(vec![ServicePort {
                    port: 80,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        };
        self.services()
            .create(&Default::default(), &svc)
            .await
            .with_context(|| format!("creating Service {name}"))?;
        Ok(())
    }

    /// A Service's `metallb.universe.tf/address-pool` annotation.
    async fn pool_of(&self, name: &str) -> Result<Option<String>> {
        let svc = self.services().get(name).await?;
        Ok(svc
            .metadata
            .annotations
            .and_then(|mut a| a.remove("metallb.universe.tf/address-pool")))
    }

    async fn wait_ip(&self, name: &str) -> Result<IpAddr> {
        cluster::wait_service_ip(&self.admin, &self.ns, name, WAIT).await
    }

    /// Every Service of the namespace with its status IPs.
    async fn snapshot(&self) -> Result<BTreeMap<String, Vec<IpAddr>>> {
        cluster::service_ips(&self.services()).await
    }

    async fn wait_event(&self, name: &str, reason: &str, needle: &str) -> Result<()> {
        cluster::wait_event(&self.admin, &self.ns, name, reason, needle, WAIT).await?;
        Ok(())
    }

    async fn set_configmap(&self, payload: &str) -> Result<()> {
        cluster::apply_config(&self.admin, &self.ns, payload).await
    }

    /// Run `metallb-migrate --from-cluster` as the admin (kubeconfig as kubectl finds it).
    async fn migrate(&self, args: &[&str]) -> Result<(i32, String, String)> {
        self.migrate_as(self.cluster.kubeconfig(), args).await
    }

    /// Run `metallb-migrate --from-cluster` with this kubeconfig.
    async fn migrate_as(
        &self,
        kubeconfig: &std::path::Path,
        args: &[&str],
    ) -> Result<(i32, String, String)> {
        let out = tokio::process::Command::new(MIGRATE)
            .args(["--from-cluster", "--services", "--namespace", &self.ns])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .output()
            .await?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

struct Controller {
    child: tokio::process::Child,
    port: u16,
    log: PathBuf,
}

impl Controller {
    /// Wait until a metric line (exact series and value) is exposed.
    async fn wait_metric(&self, line: &str) -> Result<()> {
        let t = Instant::now();
        loop {
            if let Ok(m) = cluster::scrape_metrics(self.port).await
                && m.lines().any(|l| l == line)
            {
                return Ok(());
            }
            if t.elapsed() > WAIT {
                bail!(
                    "metric {line:?} not exposed within {WAIT:?}; log {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

const POOL_A: &str = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: a}
spec: {addresses: [203.0.113.0/30]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: all}
spec: {}
"#;

/// The controller allocates from objects; an IPAddressPool overlapping another and a BGPPeer
/// naming an unknown BFD profile are each rejected with an Event on that object, the config
/// turns stale, and the last good config keeps allocating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_runs_from_objects_and_blames_the_bad_one() -> Result<()> {
    let env = Env::new("crd-ctl", true).await?;
    apply_yaml(&env.admin, &env.ns, POOL_A).await?;
    let ctl = env.controller("crds")?;
    env.create_lb("s1", None).await?;
    let ip = env.wait_ip("s1").await?;
    ensure!(ip.to_string().starts_with("203.0.113."), "{ip}");
    ctl.wait_metric("metallb_rs_config_source{source=\"crds\"} 1")
        .await?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool 0")
        .await?;

    // Two pools overlapping across objects: the later one (by name) is at fault.
    apply_yaml(
        &env.admin,
        &env.ns,
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: b}\nspec: {addresses: [203.0.113.0/29]}\n",
    )
    .await?;
    env.wait_event("b", "InvalidConfig", "overlaps").await?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool 1")
        .await?;
    env.create_lb("s2", None).await?;
    let ip2 = env.wait_ip("s2").await?;
    ensure!(
        ip2.to_string().starts_with("203.0.113.") && ip2 != ip,
        "the last good config serves: {ip2}"
    );
    delete(&env.admin, &env.ns, Kind::IPAddressPool, "b").await?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool 0")
        .await?;

    // A BGPPeer naming a BFD profile that does not exist.
    apply_yaml(
        &env.admin,
        &env.ns,
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: edge}\nspec: {myASN: 64500, peerASN: 64501, peerAddress: 192.0.2.1, bfdProfile: nope}\n",
    )
    .await?;
    env.wait_event("edge", "InvalidConfig", "bfd profile")
        .await?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool 1")
        .await?;
    env.create_lb("s3", None).await?;
    env.wait_ip("s3").await?;
    // Nothing that was assigned moved.
    ensure!(env.wait_ip("s1").await? == ip && env.wait_ip("s2").await? == ip2);
    Ok(())
}

/// The Spectro Cloud lb-metallb-helm pack's default objects (charts.metallb-full.configuration
/// as the pack doc shows it, rendered by the chart as one object per key) run as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spectro_lb_metallb_helm_seed_objects_run_as_they_are() -> Result<()> {
    let env = Env::new("crd-spectro", true).await?;
    apply_yaml(
        &env.admin,
        &env.ns,
        r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: first-pool}
spec:
  addresses:
  - 192.168.10.0/24
  avoidBuggyIPs: true
  autoAssign: true
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: default}
spec:
  ipAddressPools:
  - first-pool
"#,
    )
    .await?;
    let ctl = env.controller("auto")?;
    env.create_lb("web", None).await?;
    // avoidBuggyIPs: the first address handed out is .1, not .0.
    let ip = env.wait_ip("web").await?;
    ensure!(ip.to_string() == "192.168.10.1", "{ip}");
    ctl.wait_metric("metallb_rs_config_source{source=\"crds\"} 1")
        .await?;
    Ok(())
}

/// Without the extra RBAC, `auto` reads the ConfigMap (one warning) even when objects exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_without_crd_rbac_reads_the_configmap() -> Result<()> {
    let env = Env::new("crd-norbac", false).await?;
    apply_yaml(&env.admin, &env.ns, POOL_A).await?;
    env.set_configmap(
        "address-pools:\n- name: legacy\n  protocol: layer2\n  addresses: [198.51.100.0/30]\n",
    )
    .await?;
    let ctl = env.controller("auto")?;
    env.create_lb("s", None).await?;
    let ip = env.wait_ip("s").await?;
    ensure!(ip.to_string().starts_with("198.51.100."), "{ip}");
    ctl.wait_metric("metallb_rs_config_source{source=\"configmap\"} 1")
        .await?;
    let log = ctl.log_text();
    ensure!(
        log.matches("cannot list metallb.io IPAddressPools").count() == 1,
        "one warning expected:\n{log}"
    );
    Ok(())
}

const LEGACY: &str = "address-pools:\n- name: Prod_Pool\n  protocol: layer2\n  addresses: [203.0.113.0/26]\n- name: staging\n  protocol: layer2\n  auto-assign: false\n  addresses: ['198.51.100.0/26']\n";

/// `metallb-migrate --from-cluster`: dry-run writes nothing; apply writes, verifies and
/// switches a running `auto` controller to the objects; a second apply changes nothing;
/// rollback switches back and removes only what apply wrote. No Service's IP changes at any
/// point, Services asking for the renamed pool keep their IP and are re-annotated (and
/// restored), and new Services still get IPs from either source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_from_cluster_switches_and_rolls_back_without_moving_an_ip() -> Result<()> {
    let env = Env::new("crd-switch", true).await?;
    env.set_configmap(LEGACY).await?;
    let ctl = env.controller("auto")?;
    for i in 0..40 {
        let pool = match i % 4 {
            0 => Some("Prod_Pool"),
            1 => Some("staging"),
            _ => None,
        };
        env.create_lb(&format!("svc-{i}"), pool).await?;
    }
    for i in 0..40 {
        env.wait_ip(&format!("svc-{i}")).await?;
    }
    ctl.wait_metric("metallb_rs_config_source{source=\"configmap\"} 1")
        .await?;
    let before = env.snapshot().await?;

    // A foreign object in the namespace of another name is no conflict, but it is part of
    // what the binaries would read: keep the namespace clean here (tested separately below).
    let (code, out, err) = env.migrate(&[]).await?;
    ensure!(code == 0, "dry-run failed: {err}");
    ensure!(
        out.contains("# create IPAddressPool \"prod-pool\""),
        "{out}"
    );
    ensure!(out.contains("patch Service"), "{out}");
    ensure!(
        list_objects(&env.admin, &env.ns, false).await?.is_empty(),
        "dry-run wrote"
    );

    let (code, _, err) = env.migrate(&["--apply"]).await?;
    ensure!(code == 0, "apply failed: {err}");
    ctl.wait_metric("metallb_rs_config_source{source=\"crds\"} 1")
        .await?;
    env.wait_event("config", "ConfigSourceChanged", "to the metallb.io objects")
        .await?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool 0")
        .await?;
    let pool = env.pool_of("svc-0").await?;
    ensure!(pool.as_deref() == Some("prod-pool"), "{pool:?}");
    env.create_lb("new-in-crds", Some("prod-pool")).await?;
    env.wait_ip("new-in-crds").await?;
    let mut after = env.snapshot().await?;
    after.remove("new-in-crds");
    ensure!(
        after == before,
        "IPs changed across the switch:\n{before:?}\n{after:?}"
    );

    // The rollback of another install (its own namespace and ConfigMap) restores only the
    // Services its own apply rewrote: none of ours.
    let other = env
        .cluster
        .fresh_namespace(&env.admin, "crd-switch-other")
        .await?;
    cluster::apply_config(&env.admin, &other, LEGACY).await?;
    let out = tokio::process::Command::new(MIGRATE)
        .args([
            "--from-cluster",
            "--services",
            "--rollback",
            "--namespace",
            &other,
        ])
        .env("KUBECONFIG", env.cluster.kubeconfig())
        .stdin(Stdio::null())
        .output()
        .await?;
    ensure!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("0 Service(s) restored"),
        "rollback of another install: {out:?}"
    );
    let pool = env.pool_of("svc-0").await?;
    ensure!(
        pool.as_deref() == Some("prod-pool"),
        "another install's rollback restored our Service: {pool:?}"
    );

    // Idempotent.
    let (code, _, err) = env.migrate(&["--apply"]).await?;
    ensure!(
        code == 0 && err.contains("applied 0 object(s)"),
        "second apply: {err}"
    );

    let (code, out, err) = env.migrate(&["--rollback"]).await?;
    ensure!(code == 0, "rollback failed: {out}{err}");
    ctl.wait_metric("metallb_rs_config_source{source=\"configmap\"} 1")
        .await?;
    ensure!(
        list_objects(&env.admin, &env.ns, false).await?.is_empty(),
        "objects left"
    );
    let pool = env.pool_of("svc-0").await?;
    ensure!(pool.as_deref() == Some("Prod_Pool"), "{pool:?}");
    env.create_lb("new-in-cm", None).await?;
    env.wait_ip("new-in-cm").await?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool 0")
        .await?;
    let mut back = env.snapshot().await?;
    back.remove("new-in-cm");
    ensure!(
        back.iter()
            .all(|(k, v)| after.get(k).is_none_or(|a| a == v))
            && back.len() == after.len() + 1,
        "IPs changed across the rollback"
    );
    let log = ctl.log_text();
    ensure!(
        !log.contains("clearing"),
        "the controller cleared an IP:\n{log}"
    );
    Ok(())
}

/// An object of ours that someone else already created differently stops the apply before
/// anything is written; the ConfigMap stays the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_apply_refuses_to_take_over_a_foreign_object() -> Result<()> {
    let env = Env::new("crd-foreign", true).await?;
    env.set_configmap(LEGACY).await?;
    apply_yaml(
        &env.admin,
        &env.ns,
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: staging}\nspec: {addresses: [198.51.100.128/26]}\n",
    )
    .await?;
    let (code, _, err) = env.migrate(&["--apply"]).await?;
    ensure!(
        code == 1 && err.contains("CONFLICT") && err.contains("nothing was written"),
        "{err}"
    );
    let docs = list_objects(&env.admin, &env.ns, false).await?;
    ensure!(docs.len() == 1, "written: {docs:?}");
    ensure!(matches!(&docs[0], Document::Crd(o) if o.name == "staging"));
    let cm = Api::<ConfigMap>::namespaced(env.admin.clone(), &env.ns)
        .get("config")
        .await?;
    let src = cm
        .metadata
        .annotations
        .unwrap_or_default()
        .get(SOURCE_ANNOTATION)
        .cloned();
    ensure!(src.is_none(), "the ConfigMap was touched: {src:?}");
    Ok(())
}

/// `manifests/rbac-migrate.yaml` is enough for the whole job (dry run, apply with
/// `--services` and `--password-secrets`, rollback) and grants nothing in metallb.io outside
/// its namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_runs_under_its_least_privilege_rbac() -> Result<()> {
    let env = Env::new("crd-mig-rbac", true).await?;
    env.cluster
        .install_migrate_rbac(&env.admin, &env.ns)
        .await?;
    let kc = env
        .cluster
        .service_account_kubeconfig(&env.admin, &env.ns, "metallb-migrate")
        .await?;
    env.set_configmap(
        "peers:\n- {my-asn: 64500, peer-asn: 64501, peer-address: 192.0.2.1, password: s3cret}\naddress-pools:\n- {name: Bgp_Pool, protocol: bgp, addresses: [203.0.113.0/28]}\n",
    )
    .await?;
    // A pool name no concurrent test uses: `--services` rewrites Services cluster-wide.
    env.create_lb("web", Some("Bgp_Pool")).await?;
    for args in [
        &["--password-secrets"][..],
        &["--password-secrets", "--apply"],
        &["--password-secrets", "--apply"],
        &["--rollback"],
    ] {
        let (code, out, err) = env.migrate_as(&kc, args).await?;
        ensure!(code == 0, "{args:?} under rbac-migrate.yaml: {out}{err}");
    }
    ensure!(
        list_objects(&env.admin, &env.ns, true).await?.is_empty(),
        "objects left after rollback"
    );
    // Nothing outside the namespace.
    let other = env
        .cluster
        .fresh_namespace(&env.admin, "crd-mig-other")
        .await?;
    let sa = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kc)?,
            &Default::default(),
        )
        .await?,
    )?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(sa, &other, &api_resource(Kind::IPAddressPool));
    ensure!(
        api.list(&Default::default()).await.is_err(),
        "the migrate account may read metallb.io objects of another namespace"
    );
    Ok(())
}
