//! The controller binary against a real kube-apiserver + etcd (tests/harness), running under a
//! ServiceAccount bound to exactly MetalLB 0.12.1's controller RBAC.
//!
//! Isolation: every test has its own namespace (standing in for `metallb-system`) and its own
//! `--lb-class`, and creates only Services of that class, so controllers of parallel tests never
//! touch each other's Services.

#[path = "common/cluster.rs"]
mod cluster;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use cluster::{Cluster, MetallbRbac};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Service, ServicePort, ServiceSpec};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};

const WAIT: Duration = Duration::from_secs(20);

struct Env {
    cluster: &'static Cluster,
    admin: Client,
    ns: String,
    class: String,
    kubeconfig: PathBuf,
}

impl Env {
    async fn new(prefix: &str, rbac: MetallbRbac) -> Result<Env> {
        let cluster = Cluster::shared()?;
        let admin = cluster.client().await?;
        let (ns, kubeconfig) = cluster.controller_namespace(&admin, prefix, rbac).await?;
        let class = format!("metallb-rs.test/{ns}");
        Ok(Env {
            cluster,
            admin,
            ns,
            class,
            kubeconfig,
        })
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    async fn set_config(&self, payload: &str) -> Result<()> {
        cluster::apply_config(&self.admin, &self.ns, payload).await
    }

    fn controller(&self, extra: &[&str]) -> Result<Controller> {
        self.controller_with_env(extra, &[])
    }

    fn controller_with_env(&self, extra: &[&str], envs: &[(&str, &str)]) -> Result<Controller> {
        let port = free_port()?;
        let log = self
            .cluster
            .dir()
            .join(format!("controller-{}-{port}.log", self.ns));
        let file = std::fs::File::create(&log)?;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_controller"));
        cmd.args([
            "--namespace",
            &self.ns,
            "--lb-class",
            &self.class,
            "--log-level",
            "debug",
        ])
        .arg("--kubeconfig")
        .arg(&self.kubeconfig)
        .args(["--port", &port.to_string()])
        .args(extra)
        .envs(envs.iter().copied())
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        // Logs go to stdout (as MetalLB's); panics and exit errors to stderr: keep both.
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true);
        let child = cmd.spawn().context("starting the controller binary")?;
        Ok(Controller { child, port, log })
    }

    fn lb(&self, name: &str, ann: &[(&str, &str)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(
                    ann.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
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
                selector: Some([("app".to_string(), name.to_string())].into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    async fn create(&self, svc: &Service) -> Result<()> {
        self.services().create(&PostParams::default(), svc).await?;
        Ok(())
    }

    async fn ips(&self, name: &str) -> Result<Vec<IpAddr>> {
        let s = self.services().get_status(name).await?;
        Ok(metallb_rs::k8s::service::status_ips(&s))
    }

    async fn wait_ips(&self, name: &str, n: usize) -> Result<Vec<IpAddr>> {
        let t = Instant::now();
        loop {
            let ips = self.ips(name).await?;
            if ips.len() == n {
                return Ok(ips);
            }
            if t.elapsed() > WAIT {
                bail!("service {name}: wanted {n} IPs, have {ips:?} after {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait for an Event with `reason` about object `name` whose message contains `needle`.
    async fn wait_event(&self, name: &str, reason: &str, needle: &str) -> Result<Event> {
        cluster::wait_event(&self.admin, &self.ns, name, reason, needle, WAIT).await
    }
}

struct Controller {
    child: tokio::process::Child,
    port: u16,
    log: PathBuf,
}

impl Controller {
    async fn metrics(&self) -> Result<String> {
        let t = Instant::now();
        loop {
            match cluster::scrape_metrics(self.port).await {
                Ok(s) => return Ok(s),
                Err(e) if t.elapsed() > WAIT => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Wait until a metric line (exact series and value) is exposed.
    async fn wait_metric(&self, line: &str) -> Result<()> {
        let t = Instant::now();
        loop {
            let m = self.metrics().await?;
            if m.lines().any(|l| l == line) {
                return Ok(());
            }
            if t.elapsed() > WAIT {
                bail!(
                    "metric line {line:?} not exposed within {WAIT:?}:\n{m}\nlog: {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn kill(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("bad test IP {s}"))
}

const POOL_A: &str =
    "address-pools:\n- name: a\n  protocol: layer2\n  addresses: [203.0.113.0/30]\n";
const POOL_AB: &str = "address-pools:\n- name: a\n  protocol: layer2\n  addresses: [203.0.113.0/30]\n- name: b\n  protocol: layer2\n  addresses: ['198.51.100.10-198.51.100.11']\n";
const POOL_B_ONLY: &str =
    "address-pools:\n- name: b\n  protocol: layer2\n  addresses: ['198.51.100.10-198.51.100.11']\n";

/// Allocation in MetalLB order, exhaustion, then live reloads: a new pool serves a waiting
/// Service without restart; a config stranding in-use IPs is rejected (Event, stale metric,
/// nothing moves) and applies by itself once its blockers are deleted; invalid YAML is
/// rejected with a located error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocates_and_reloads_live_under_0_12_rbac() -> Result<()> {
    let env = Env::new("ctl-reload", MetallbRbac::V0_12_1).await?;
    env.set_config(POOL_A).await?;
    let ctl = env.controller(&[])?;
    ctl.wait_metric("metallb_k8s_client_config_loaded_bool 1")
        .await?;
    ctl.wait_metric("metallb_allocator_addresses_total{pool=\"a\"} 4")
        .await?;

    // The first address of a CIDR, .0, is a normal candidate (no avoid-buggy-ips).
    for (i, name) in ["s0", "s1", "s2", "s3"].iter().enumerate() {
        env.create(&env.lb(name, &[])).await?;
        assert_eq!(
            env.wait_ips(name, 1).await?,
            vec![ip(&format!("203.0.113.{i}"))],
            "{name}"
        );
    }
    env.wait_event("s0", "IPAllocated", "Assigned IP [\"203.0.113.0\"]")
        .await?;
    ctl.wait_metric("metallb_allocator_addresses_in_use_total{pool=\"a\"} 4")
        .await?;

    // Exhausted: the fifth waits, with an Event.
    env.create(&env.lb("s4", &[])).await?;
    env.wait_event("s4", "AllocationFailed", "no available IPs")
        .await?;
    assert!(env.ips("s4").await?.is_empty());

    // Add a pool: the waiting Service gets an IP from it, no restart.
    env.set_config(POOL_AB).await?;
    assert_eq!(env.wait_ips("s4", 1).await?, vec![ip("198.51.100.10")]);
    env.wait_event("config", "ConfigLoaded", "2 pools").await?;

    // Remove pool a while s0..s3 hold its IPs: rejected, nothing moves.
    env.set_config(POOL_B_ONLY).await?;
    let ev = env
        .wait_event("config", "StaleConfig", "cannot own")
        .await?;
    assert!(
        ev.message.unwrap_or_default().contains("/s0"),
        "the Event names the blocking Services"
    );
    ctl.wait_metric("metallb_k8s_client_config_stale_bool 1")
        .await?;
    for (i, name) in ["s0", "s1", "s2", "s3"].iter().enumerate() {
        assert_eq!(env.ips(name).await?, vec![ip(&format!("203.0.113.{i}"))]);
    }

    // Delete the blockers: the pending config applies by itself.
    for name in ["s0", "s1", "s2", "s3"] {
        env.services()
            .delete(name, &DeleteParams::default())
            .await?;
    }
    ctl.wait_metric("metallb_k8s_client_config_stale_bool 0")
        .await?;
    ctl.wait_metric("metallb_allocator_addresses_in_use_total{pool=\"b\"} 1")
        .await?;
    assert!(
        !ctl.metrics().await?.contains("pool=\"a\""),
        "pool a's series are gone"
    );
    assert_eq!(
        env.ips("s4").await?,
        vec![ip("198.51.100.10")],
        "s4 kept its IP"
    );

    // Invalid YAML: rejected with the located error; the last good config keeps serving.
    env.set_config(
        "address-pools:\n- name: b\n  protocol: l2\n  addresses: ['198.51.100.10-198.51.100.11']\n",
    )
    .await?;
    env.wait_event("config", "InvalidConfig", "unknown protocol")
        .await?;
    env.create(&env.lb("s5", &[])).await?;
    assert_eq!(env.wait_ips("s5", 1).await?, vec![ip("198.51.100.11")]);
    ctl.kill().await
}

/// Requested IPs, pool annotations under both prefixes, sharing allowed and refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honours_requests_pools_and_sharing() -> Result<()> {
    let env = Env::new("ctl-req", MetallbRbac::V0_9_6).await?;
    env.set_config("address-pools:\n- name: auto\n  protocol: layer2\n  avoid-buggy-ips: true\n  addresses: [203.0.113.0/24]\n- name: manual\n  protocol: bgp\n  auto-assign: false\n  addresses: [198.51.100.0/28]\n").await?;
    let ctl = env.controller(&[])?;
    ctl.wait_metric("metallb_k8s_client_config_loaded_bool 1")
        .await?;
    // avoid-buggy-ips skips .0.
    env.create(&env.lb("first", &[])).await?;
    assert_eq!(env.wait_ips("first", 1).await?, vec![ip("203.0.113.1")]);
    // auto-assign: false pools serve only explicit requests, by either annotation prefix.
    env.create(&env.lb(
        "old-prefix",
        &[("metallb.universe.tf/address-pool", "manual")],
    ))
    .await?;
    assert_eq!(
        env.wait_ips("old-prefix", 1).await?,
        vec![ip("198.51.100.0")]
    );
    env.create(&env.lb(
        "new-prefix",
        &[
            ("metallb.universe.tf/address-pool", "auto"),
            ("metallb.io/address-pool", "manual"),
        ],
    ))
    .await?;
    assert_eq!(
        env.wait_ips("new-prefix", 1).await?,
        vec![ip("198.51.100.1")]
    );
    // A specific IP via the annotation.
    env.create(&env.lb(
        "pinned",
        &[("metallb.universe.tf/loadBalancerIPs", "203.0.113.77")],
    ))
    .await?;
    assert_eq!(env.wait_ips("pinned", 1).await?, vec![ip("203.0.113.77")]);
    // Sharing: same key, other port → same IP; a port clash is refused.
    let mut dns_udp = env.lb(
        "dns-udp",
        &[
            ("metallb.universe.tf/allow-shared-ip", "dns"),
            ("metallb.universe.tf/loadBalancerIPs", "203.0.113.53"),
        ],
    );
    if let Some(p) = dns_udp.spec.as_mut().and_then(|s| s.ports.as_mut()) {
        p[0].protocol = Some("UDP".into());
    }
    env.create(&dns_udp).await?;
    env.create(&env.lb(
        "dns-tcp",
        &[
            ("metallb.universe.tf/allow-shared-ip", "dns"),
            ("metallb.universe.tf/loadBalancerIPs", "203.0.113.53"),
        ],
    ))
    .await?;
    assert_eq!(env.wait_ips("dns-udp", 1).await?, vec![ip("203.0.113.53")]);
    assert_eq!(env.wait_ips("dns-tcp", 1).await?, vec![ip("203.0.113.53")]);
    env.create(&env.lb(
        "dns-clash",
        &[
            ("metallb.universe.tf/allow-shared-ip", "dns"),
            ("metallb.universe.tf/loadBalancerIPs", "203.0.113.53"),
        ],
    ))
    .await?;
    env.wait_event("dns-clash", "AllocationFailed", "").await?;
    assert!(env.ips("dns-clash").await?.is_empty());
    // An IP outside every pool.
    env.create(&env.lb(
        "outside",
        &[("metallb.universe.tf/loadBalancerIPs", "192.0.2.1")],
    ))
    .await?;
    env.wait_event("outside", "AllocationFailed", "not allowed")
        .await?;
    ctl.kill().await
}

/// Dual stack: one IP per family from one pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_gets_one_ip_per_family() -> Result<()> {
    let env = Env::new("ctl-dual", MetallbRbac::V0_12_1).await?;
    env.set_config("address-pools:\n- name: ds\n  protocol: layer2\n  addresses: [203.0.113.8/30, '2001:db8::/126']\n").await?;
    let ctl = env.controller(&[])?;
    let mut svc = env.lb("ds", &[]);
    if let Some(s) = svc.spec.as_mut() {
        s.ip_family_policy = Some("RequireDualStack".into());
    }
    env.create(&svc).await?;
    let ips: BTreeSet<IpAddr> = env.wait_ips("ds", 2).await?.into_iter().collect();
    assert_eq!(ips, BTreeSet::from([ip("203.0.113.8"), ip("2001:db8::")]));
    ctl.kill().await
}

/// Kill the controller in the middle of a burst of 500 Service creations and start it again:
/// no IP changes and no IP is held twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_churn_moves_no_ip() -> Result<()> {
    let env = Env::new("ctl-restart", MetallbRbac::V0_12_1).await?;
    env.set_config("address-pools:\n- name: p\n  protocol: layer2\n  addresses: [203.0.113.0/24, 198.51.100.0/24]\n").await?;
    let ctl = env.controller(&[])?;
    ctl.wait_metric("metallb_k8s_client_config_loaded_bool 1")
        .await?;
    let n = 500;
    for i in 0..n {
        env.create(&env.lb(&format!("r{i}"), &[])).await?;
        if i == n / 2 {
            ctl.kill().await?;
            break;
        }
    }
    let before: Vec<(String, Vec<IpAddr>)> = snapshot(&env).await?;
    for i in (n / 2 + 1)..n {
        env.create(&env.lb(&format!("r{i}"), &[])).await?;
    }
    let ctl = env.controller(&[])?;
    for i in 0..n {
        env.wait_ips(&format!("r{i}"), 1).await?;
    }
    let after = snapshot(&env).await?;
    for (name, ips) in &before {
        if !ips.is_empty() {
            let now = after
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, i)| i.clone())
                .unwrap_or_default();
            assert_eq!(&now, ips, "{name} moved across the restart");
        }
    }
    let all: Vec<IpAddr> = after.iter().flat_map(|(_, i)| i.clone()).collect();
    let unique: BTreeSet<IpAddr> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "an IP is held twice");
    assert_eq!(all.len(), n);
    ctl.kill().await
}

async fn snapshot(env: &Env) -> Result<Vec<(String, Vec<IpAddr>)>> {
    let list = env.services().list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .map(|s| {
            (
                s.metadata.name.clone().unwrap_or_default(),
                metallb_rs::k8s::service::status_ips(s),
            )
        })
        .collect())
}

/// `--config-file`: the config comes from a mounted file, swapped the way kubelet swaps a
/// ConfigMap volume (`..data` symlink replaced atomically); edits apply live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_file_mode_reloads_on_symlink_swap() -> Result<()> {
    let env = Env::new("ctl-file", MetallbRbac::V0_12_1).await?;
    let dir = env.cluster.dir().join(format!("mount-{}", env.ns));
    let swap = |version: &str, payload: &str| -> Result<()> {
        let ts = dir.join(format!("..{version}"));
        std::fs::create_dir_all(&ts)?;
        std::fs::write(ts.join("config"), payload)?;
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..{version}"), &tmp)?;
        std::fs::rename(&tmp, dir.join("..data"))?;
        Ok(())
    };
    std::fs::create_dir_all(&dir)?;
    swap("v1", POOL_A)?;
    let link = dir.join("config");
    if !link.exists() {
        std::os::unix::fs::symlink("..data/config", &link)?;
    }
    let ctl = env.controller(&["--config-file", link.to_str().unwrap_or_default()])?;
    env.create(&env.lb("f0", &[("metallb.universe.tf/address-pool", "a")]))
        .await?;
    assert_eq!(env.wait_ips("f0", 1).await?, vec![ip("203.0.113.0")]);
    swap("v2", POOL_AB)?;
    ctl.wait_metric("metallb_allocator_addresses_total{pool=\"b\"} 2")
        .await?;
    env.create(&env.lb("f1", &[("metallb.universe.tf/address-pool", "b")]))
        .await?;
    assert_eq!(env.wait_ips("f1", 1).await?, vec![ip("198.51.100.10")]);
    // A stranding edit is rejected: stale, nothing moves.
    swap("v3", POOL_B_ONLY)?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool 1")
        .await?;
    assert_eq!(env.ips("f0").await?, vec![ip("203.0.113.0")]);
    ctl.kill().await
}

/// With Lease permissions (our own manifests), two controllers never both write: the second
/// waits for the Lease, and takes over within seconds when the first dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_one_writer() -> Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    let env = Env::new("ctl-lease", MetallbRbac::V0_12_1).await?;
    grant_leases(&env).await?;
    env.set_config(POOL_AB).await?;

    let first = env.controller(&[])?;
    let leases: Api<Lease> = Api::namespaced(env.admin.clone(), &env.ns);
    let holder = |l: &Lease| {
        l.spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default()
    };
    let t = Instant::now();
    let first_id = loop {
        if let Some(l) = leases.get_opt("metallb-rs-controller").await? {
            break holder(&l);
        }
        if t.elapsed() > WAIT {
            bail!("no Lease taken");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let second = env.controller(&[])?;
    env.create(&env.lb("l0", &[])).await?;
    env.wait_ips("l0", 1).await?;
    wait_annotation(&env, "l0", Some("a")).await?;
    wait_log(&second, "Another controller holds the Lease").await?;
    let second_log = std::fs::read_to_string(&second.log)?;
    assert!(
        !second_log.contains("IP allocated"),
        "the follower wrote:\n{second_log}"
    );
    assert!(std::fs::read_to_string(&first.log)?.contains("IP allocated"));
    // managedFields name the writer: only the leader's instance wrote l0's status.
    assert_eq!(
        status_writers(&env, "l0").await?,
        BTreeSet::from([format!("metallb-rs-controller/{first_id}")])
    );

    // The leader dies: the follower takes the Lease and serves.
    let t = Instant::now();
    first.kill().await?;
    loop {
        let l = leases.get("metallb-rs-controller").await?;
        if holder(&l) != first_id && !holder(&l).is_empty() {
            break;
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("no take-over within 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let takeover = t.elapsed();
    env.create(&env.lb("l1", &[])).await?;
    env.wait_ips("l1", 1).await?;
    assert!(std::fs::read_to_string(&second.log)?.contains("IP allocated"));
    let second_id = holder(&leases.get("metallb-rs-controller").await?);
    assert_ne!(second_id, first_id);
    assert_eq!(
        status_writers(&env, "l1").await?,
        BTreeSet::from([format!("metallb-rs-controller/{second_id}")])
    );
    // And the first one's writes are still attributed to it alone.
    assert_eq!(
        status_writers(&env, "l0").await?,
        BTreeSet::from([format!("metallb-rs-controller/{first_id}")])
    );
    eprintln!("lease take-over after the leader was killed: {takeover:?}");
    second.kill().await
}

/// Grant the test's controller ServiceAccount Leases (as our own manifest does) and Service
/// `patch` (the optional pool annotation).
async fn grant_leases(env: &Env) -> Result<()> {
    use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
    let pp = PatchParams::apply("test").force();
    let role = Role {
        metadata: ObjectMeta {
            name: Some("leases".into()),
            ..Default::default()
        },
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec!["coordination.k8s.io".into()]),
                resources: Some(vec!["leases".into()]),
                verbs: ["get", "list", "watch", "create", "update", "patch"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                ..Default::default()
            },
            // Optional extra: lets the controller write metallb.io/ip-allocated-from-pool.
            PolicyRule {
                api_groups: Some(vec!["".into()]),
                resources: Some(vec!["services".into()]),
                verbs: vec!["patch".into()],
                ..Default::default()
            },
        ]),
    };
    Api::<Role>::namespaced(env.admin.clone(), &env.ns)
        .patch("leases", &pp, &Patch::Apply(&role))
        .await?;
    let rb = RoleBinding {
        metadata: ObjectMeta {
            name: Some("leases".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "leases".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "controller".into(),
            namespace: Some(env.ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(env.admin.clone(), &env.ns)
        .patch("leases", &pp, &Patch::Apply(&rb))
        .await?;
    // The authorizer sees the binding when a SubjectAccessReview for the account says so.
    let user = format!("system:serviceaccount:{}:controller", env.ns);
    for rule in [
        serde_json::json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["update"]}),
        serde_json::json!({"apiGroups": [""], "resources": ["services"], "verbs": ["patch"]}),
    ] {
        cluster::wait_for_access(&env.admin, &user, &rule, Some(&env.ns)).await?;
    }
    Ok(())
}

/// The field managers that wrote a Service's status subresource.
async fn status_writers(env: &Env, name: &str) -> Result<BTreeSet<String>> {
    let svc = env.services().get(name).await?;
    Ok(svc
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .filter_map(|m| m.manager)
        .collect())
}

/// Our deploy manifest is accepted by a real apiserver (server-side dry run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_manifest_passes_server_side_dry_run() -> Result<()> {
    let c = Cluster::shared()?;
    let path = cluster::repo_root().join("manifests/metallb-rs.yaml");
    let out = c
        .kubectl()
        .args(["apply", "--dry-run=server", "-f"])
        .arg(&path)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("deployment.apps/controller"), "{stdout}");
    Ok(())
}

/// Wait until `metallb.io/ip-allocated-from-pool` has the wanted value (None: stays absent for
/// a short while).
async fn wait_annotation(env: &Env, name: &str, want: Option<&str>) -> Result<()> {
    let t = Instant::now();
    loop {
        let s = env.services().get(name).await?;
        let have = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("metallb.io/ip-allocated-from-pool"))
            .cloned();
        match (want, have.as_deref()) {
            (Some(w), Some(h)) if w == h => return Ok(()),
            (None, Some(h)) => bail!("{name} was annotated with pool {h} without RBAC for it"),
            (None, None) if t.elapsed() > Duration::from_secs(1) => return Ok(()),
            _ if t.elapsed() > WAIT => bail!("{name}: pool annotation {have:?}, wanted {want:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// MetalLB §5.1 rows and the ConfigMap lifecycle: no ConfigMap at start allocates nothing;
/// type change to ClusterIP clears the status and frees the IP; a changed requested IP moves
/// the Service; a deleted ConfigMap keeps the last good config (Warning Event, stale); the
/// memberlist Secret is created; under 0.12.1 RBAC the pool annotation is not written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convergence_rows_and_config_lifecycle() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let env = Env::new("ctl-rows", MetallbRbac::V0_12_1).await?;
    let ctl = env.controller(&["--ml-secret-name", "memberlist"])?;
    ctl.wait_metric("metallb_k8s_client_config_loaded_bool 0")
        .await?;
    env.create(&env.lb("x", &[])).await?;
    // The controller has processed the Service without a config (its decision is made; the
    // whole log line, which names the Service after the message)...
    let key = format!("{}/x", env.ns);
    wait_log_line(&ctl, &format!("a no-config decision for {key}"), |l| {
        l.contains("still waiting for config") && l.contains(&key)
    })
    .await?;
    // ...and allocated nothing.
    assert!(env.ips("x").await?.is_empty(), "allocated without a config");
    env.set_config(POOL_A).await?;
    assert_eq!(env.wait_ips("x", 1).await?, vec![ip("203.0.113.0")]);
    wait_annotation(&env, "x", None).await?;
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.ns);
    let secret = secrets
        .get("memberlist")
        .await
        .context("the memberlist Secret")?;
    assert!(
        secret
            .data
            .unwrap_or_default()
            .get("secretkey")
            .is_some_and(|k| k.0.len() >= 64)
    );

    // Type change to ClusterIP: status cleared, IP free for the next Service.
    let patch = serde_json::json!({"spec": {"type": "ClusterIP", "loadBalancerClass": null, "allocateLoadBalancerNodePorts": null}});
    env.services()
        .patch("x", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    env.wait_ips("x", 0).await?;
    env.create(&env.lb("y", &[])).await?;
    assert_eq!(env.wait_ips("y", 1).await?, vec![ip("203.0.113.0")]);

    // A different requested IP moves the Service.
    env.create(&env.lb(
        "z",
        &[("metallb.universe.tf/loadBalancerIPs", "203.0.113.2")],
    ))
    .await?;
    assert_eq!(env.wait_ips("z", 1).await?, vec![ip("203.0.113.2")]);
    let patch = serde_json::json!({"metadata": {"annotations": {"metallb.universe.tf/loadBalancerIPs": "203.0.113.3"}}});
    env.services()
        .patch("z", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let t = Instant::now();
    while env.ips("z").await? != vec![ip("203.0.113.3")] {
        if t.elapsed() > WAIT {
            bail!("z did not move to 203.0.113.3: {:?}", env.ips("z").await?);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The ConfigMap is deleted: the last good config stays, stale, Warning Event.
    Api::<ConfigMap>::namespaced(env.admin.clone(), &env.ns)
        .delete("config", &DeleteParams::default())
        .await?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool 1")
        .await?;
    env.wait_event("config", "ConfigMissing", "last good config")
        .await?;
    env.create(&env.lb("w", &[])).await?;
    assert_eq!(env.wait_ips("w", 1).await?, vec![ip("203.0.113.1")]);
    assert_eq!(env.ips("y").await?, vec![ip("203.0.113.0")]);
    ctl.kill().await
}

/// The controller caches slimmed Services (no managed fields, no kubectl last-applied copy);
/// its status writes must never drop what it did not cache from the stored object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_writes_keep_metadata_the_cache_dropped() -> Result<()> {
    let env = Env::new("ctl-meta", MetallbRbac::V0_12_1).await?;
    env.set_config(POOL_A).await?;
    let ctl = env.controller(&[])?;
    let last = "{\"apiVersion\":\"v1\",\"kind\":\"Service\"}";
    env.create(&env.lb(
        "m",
        &[
            ("kubectl.kubernetes.io/last-applied-configuration", last),
            ("team", "web"),
        ],
    ))
    .await?;
    env.wait_ips("m", 1).await?;
    let s = env.services().get("m").await?;
    let ann = s.metadata.annotations.unwrap_or_default();
    assert_eq!(
        ann.get("kubectl.kubernetes.io/last-applied-configuration")
            .map(String::as_str),
        Some(last)
    );
    assert_eq!(ann.get("team").map(String::as_str), Some("web"));
    assert!(s.metadata.managed_fields.is_some_and(|m| !m.is_empty()));
    ctl.kill().await
}

/// Every Event in the test namespace about `name` with `reason`.
async fn events_for(env: &Env, name: &str, reason: &str) -> Result<Vec<Event>> {
    let list = Api::<Event>::namespaced(env.admin.clone(), &env.ns)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason)
        })
        .collect())
}

/// Wait until the Events about `name` with `reason` satisfy `ok`; returns them.
async fn wait_events(
    env: &Env,
    name: &str,
    reason: &str,
    what: &str,
    ok: impl Fn(&[Event]) -> bool,
) -> Result<Vec<Event>> {
    let t = Instant::now();
    loop {
        let evs = events_for(env, name, reason).await?;
        if ok(&evs) {
            return Ok(evs);
        }
        if t.elapsed() > WAIT {
            let seen: Vec<(Option<i32>, usize)> = evs
                .iter()
                .map(|e| (e.count, e.message.as_deref().map_or(0, str::len)))
                .collect();
            bail!(
                "{reason} Events for {name}: wanted {what}; have (count, message bytes) {seen:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// client-go recorder semantics with the controller's own RBAC: the same Warning three times is
/// one Event with count 3 (a PATCH, which MetalLB's Role grants), an oversize message lands
/// cut to the apiserver's 1 KiB on a character boundary, and an overlong reporting instance is
/// cut to 128 characters (before: three Events; the oversize ones refused with a 422).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_counted_and_truncated_as_client_go_does() -> Result<()> {
    use metallb_rs::k8s::events::{Kind, Recorder, reference};
    let env = Env::new("ctl-events", MetallbRbac::V0_12_1).await?;
    let sa = env
        .cluster
        .service_account_client(&env.admin, &env.ns, "controller")
        .await?;
    env.create(&env.lb("ev", &[])).await?;
    let obj = reference(&env.services().get("ev").await?);

    let rec = Recorder::new(sa.clone(), "metallb-controller", None);
    for _ in 0..3 {
        rec.publish(&obj, Kind::Warning, "Repeated", "the same thing again")
            .await;
    }
    let evs = wait_events(&env, "ev", "Repeated", "one Event with count 3", |evs| {
        evs.iter().any(|e| e.count == Some(3))
    })
    .await?;
    assert_eq!(evs.len(), 1, "one Event object, not one per occurrence");

    let long_host = "n".repeat(200);
    let rec = Recorder::new(sa, "metallb-speaker", Some(long_host.clone()));
    let message = format!("{}{}", "x".repeat(1023), "é".repeat(600));
    rec.publish(&obj, Kind::Warning, "Oversize", &message).await;
    let evs = wait_events(&env, "ev", "Oversize", "one Event", |evs| evs.len() == 1).await?;
    let got = evs[0].message.clone().unwrap_or_default();
    assert!(got.len() <= 1024, "message of {} bytes", got.len());
    assert!(
        message.starts_with(&got) && got.len() >= 1023,
        "cut, not lost"
    );
    assert_eq!(
        evs[0].reporting_instance.as_deref(),
        Some(&long_host[..128]),
        "reportingInstance cut to 128"
    );
    Ok(())
}

/// A Service that cannot get an IP has one AllocationFailed Event however often it is
/// converged (its count grows); before, each converge created another Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_allocation_failed_event_per_cause() -> Result<()> {
    let env = Env::new("ctl-evdedup", MetallbRbac::V0_12_1).await?;
    env.set_config(
        "address-pools:\n- name: one\n  protocol: layer2\n  addresses: [203.0.113.9/32]\n",
    )
    .await?;
    let ctl = env.controller(&[])?;
    env.create(&env.lb("has", &[])).await?;
    assert_eq!(env.wait_ips("has", 1).await?, vec![ip("203.0.113.9")]);
    env.create(&env.lb("waits", &[])).await?;
    env.wait_event("waits", "AllocationFailed", "no available IPs")
        .await?;
    // Each label change is a watch event, so a converge, so the same failure again.
    for i in 0..3 {
        let patch = serde_json::json!({"metadata": {"labels": {"touch": i.to_string()}}});
        env.services()
            .patch("waits", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    let evs = wait_events(
        &env,
        "waits",
        "AllocationFailed",
        "the failure counted again on one Event",
        |evs| evs.iter().any(|e| e.count.unwrap_or(0) >= 2),
    )
    .await?;
    assert_eq!(
        evs.len(),
        1,
        "one AllocationFailed Event per cause, not per converge"
    );
    ctl.kill().await
}

/// A ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1) that denies status writes
/// giving an ingress to Services labelled `metallb-rs-test/block-status` in `ns`.
async fn block_status_writes(env: &Env, name: &str) -> Result<()> {
    use kube::api::DynamicObject;
    use kube::discovery::ApiResource;
    let gvk =
        |kind: &str| kube::api::GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
    let policy: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["UPDATE"], "resources": ["services/status"],
            }]},
            "validations": [{
                "expression": "!('metallb-rs-test/block-status' in object.metadata.?labels.orValue({})) || size(object.status.?loadBalancer.?ingress.orValue([])) == 0",
                "message": "status writes blocked by the test",
            }],
        },
    }))?;
    let binding: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": env.ns}}},
        },
    }))?;
    let pp = PostParams::default();
    let ar = ApiResource::from_gvk_with_plural(
        &gvk("ValidatingAdmissionPolicy"),
        "validatingadmissionpolicies",
    );
    Api::<DynamicObject>::all_with(env.admin.clone(), &ar)
        .create(&pp, &policy)
        .await?;
    let ar = ApiResource::from_gvk_with_plural(
        &gvk("ValidatingAdmissionPolicyBinding"),
        "validatingadmissionpolicybindings",
    );
    Api::<DynamicObject>::all_with(env.admin.clone(), &ar)
        .create(&pp, &binding)
        .await?;

    // Effective once a dry-run status write of a labelled probe Service is denied.
    let mut probe = env.lb("probe", &[]);
    probe.metadata.labels =
        Some([("metallb-rs-test/block-status".to_string(), "1".to_string())].into());
    if let Some(spec) = probe.spec.as_mut() {
        spec.load_balancer_class = Some("metallb-rs.test/nobody".into());
    }
    env.create(&probe).await?;
    let t = Instant::now();
    loop {
        let mut p = env.services().get_status("probe").await?;
        p.status = Some(serde_json::from_value(
            serde_json::json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}),
        )?);
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        match env.services().replace_status("probe", &dry, &p).await {
            Err(kube::Error::Api(e)) if e.message.contains("blocked by the test") => return Ok(()),
            _ if t.elapsed() > WAIT => bail!("the admission policy never took effect"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The value of an unlabelled counter in a metrics page.
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A status write the apiserver refuses (here an admission denial; 5xx, a 409 after the
/// re-reads, a timeout or a reset take the same path) is retried with back-off until it lands,
/// with no other change to the Service (before: it stayed pending until something else changed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_status_write_is_retried_until_it_lands() -> Result<()> {
    let env = Env::new("ctl-retry", MetallbRbac::V0_12_1).await?;
    let policy = format!("block-status-{}", env.ns);
    block_status_writes(&env, &policy).await?;
    env.set_config(POOL_A).await?;
    let ctl = env.controller(&[])?;
    let mut svc = env.lb("blocked", &[]);
    svc.metadata.labels =
        Some([("metallb-rs-test/block-status".to_string(), "1".to_string())].into());
    env.create(&svc).await?;

    // Positive signal first: the write was refused at least twice (so a retry happened).
    let t = Instant::now();
    while counter(
        &ctl.metrics().await?,
        "metallb_k8s_client_update_errors_total",
    ) < 2.0
    {
        if t.elapsed() > WAIT {
            bail!(
                "the status write was not refused twice; log: {}",
                ctl.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(env.ips("blocked").await?.is_empty());

    // Lift the fault without touching the Service: the retry lands.
    let ar = kube::discovery::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicyBinding",
        ),
        "validatingadmissionpolicybindings",
    );
    Api::<kube::api::DynamicObject>::all_with(env.admin.clone(), &ar)
        .delete(&policy, &DeleteParams::default())
        .await?;
    let generation = env.services().get("blocked").await?.metadata.generation;
    // RETRY_MAX (30 s) plus the time the apiserver takes to drop the binding.
    let t = Instant::now();
    while env.ips("blocked").await?.is_empty() {
        if t.elapsed() > Duration::from_secs(60) {
            bail!(
                "the refused status write was never retried; log: {}",
                ctl.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.ips("blocked").await?, vec![ip("203.0.113.0")]);
    assert_eq!(
        env.services().get("blocked").await?.metadata.generation,
        generation,
        "no spec change"
    );
    ctl.kill().await
}

/// Without `--log-format` the controller logs JSON lines on stdout, as MetalLB's go-kit logger
/// does (before: plain text on stderr, nothing on stdout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_json_on_stdout_by_default() -> Result<()> {
    let env = Env::new("ctl-logs", MetallbRbac::V0_12_1).await?;
    let stdout = env
        .cluster
        .dir()
        .join(format!("controller-{}-stdout.log", env.ns));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_controller"))
        .args(["--namespace", &env.ns, "--lb-class", &env.class])
        .args(["--port", &free_port()?.to_string()])
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout)?)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let t = Instant::now();
    let line = loop {
        let text = std::fs::read_to_string(&stdout)?;
        if let Some(l) = text
            .lines()
            .find(|l| l.contains("Starting metallb-rs controller"))
        {
            break l.to_string();
        }
        if t.elapsed() > WAIT {
            bail!("no start-up line on stdout within {WAIT:?}:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let v: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("not a JSON line: {line}"))?;
    assert_eq!(v["level"], "INFO", "{line}");
    child.kill().await?;
    Ok(())
}

/// Merge-patch a Service's annotations and `spec.loadBalancerIP` (None: left as is).
async fn patch_request(
    env: &Env,
    name: &str,
    ann: &[(&str, &str)],
    lb_ip: Option<&str>,
) -> Result<()> {
    let anns: serde_json::Map<String, serde_json::Value> = ann
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let mut patch = serde_json::json!({"metadata": {"annotations": anns}});
    if let Some(ip) = lb_ip {
        patch["spec"] = serde_json::json!({"loadBalancerIP": ip});
    }
    env.services()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

const TWO_V4: &str = "203.0.113.1,203.0.113.2";

/// MetalLB 0.12.1 re-asserts the status before it validates the request
/// (controller/service.go:96 before :114-118): after a restart, an IP held by a Service whose
/// request has become malformed (both request forms; two IPv4 in the annotation) stays
/// reserved, so another Service asking for it explicitly is refused. Before: the malformed
/// Service was skipped, its IP free for the taking, and `b` got `a`'s IP (both statuses held
/// 203.0.113.0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_ip_stays_reserved_across_restart_when_the_request_turns_invalid() -> Result<()> {
    let env = Env::new("ctl-inval-rs", MetallbRbac::V0_12_1).await?;
    env.set_config(POOL_A).await?;
    let ctl = env.controller(&[])?;
    env.create(&env.lb("a", &[])).await?;
    assert_eq!(env.wait_ips("a", 1).await?, vec![ip("203.0.113.0")]);
    env.create(&env.lb("c", &[])).await?;
    assert_eq!(env.wait_ips("c", 1).await?, vec![ip("203.0.113.1")]);
    ctl.kill().await?;

    // While no controller runs, both requests become malformed.
    patch_request(
        &env,
        "a",
        &[("metallb.universe.tf/loadBalancerIPs", "203.0.113.0")],
        Some("203.0.113.0"),
    )
    .await?;
    patch_request(
        &env,
        "c",
        &[("metallb.universe.tf/loadBalancerIPs", TWO_V4)],
        None,
    )
    .await?;
    let ctl = env.controller(&[])?;
    env.wait_event(
        "a",
        "LoadBalancerFailed",
        "invalid requested loadbalancer IPs: service can not have both metallb.universe.tf/loadBalancerIPs and svc.Spec.LoadBalancerIP",
    )
    .await?;
    env.create(&env.lb(
        "b",
        &[("metallb.universe.tf/loadBalancerIPs", "203.0.113.0")],
    ))
    .await?;
    env.create(&env.lb(
        "d",
        &[("metallb.universe.tf/loadBalancerIPs", "203.0.113.1")],
    ))
    .await?;
    for (who, holder) in [("b", "a"), ("d", "c")] {
        let ev = env
            .wait_event(who, "AllocationFailed", "address also in use by")
            .await?;
        assert!(
            ev.message
                .unwrap_or_default()
                .contains(&format!("/{holder}")),
            "{who} is refused because {holder} holds the IP"
        );
    }
    assert_eq!(env.ips("a").await?, vec![ip("203.0.113.0")]);
    assert_eq!(env.ips("c").await?, vec![ip("203.0.113.1")]);
    assert!(env.ips("b").await?.is_empty() && env.ips("d").await?.is_empty());
    ctl.kill().await
}

/// A Service holding an IP whose request becomes malformed (two IPv4 in `loadBalancerIPs`)
/// keeps its IP with a `LoadBalancerFailed` Warning worded as upstream
/// (controller/service.go:114-118; the error is ipfamily.ForAddresses', ipfamily.go:40-41);
/// with nothing held the same request is an `AllocationFailed` (service.go:189-191, :136).
/// Before: the IP was released and the status cleared (a Warning `nolbIPsIPFamily`, no
/// `LoadBalancerFailed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_ip_survives_a_malformed_request_with_load_balancer_failed() -> Result<()> {
    let env = Env::new("ctl-inval", MetallbRbac::V0_12_1).await?;
    env.set_config(POOL_A).await?;
    let ctl = env.controller(&[])?;
    env.create(&env.lb("c", &[])).await?;
    assert_eq!(env.wait_ips("c", 1).await?, vec![ip("203.0.113.0")]);
    patch_request(
        &env,
        "c",
        &[("metallb.universe.tf/loadBalancerIPs", TWO_V4)],
        None,
    )
    .await?;
    let ev = env
        .wait_event("c", "LoadBalancerFailed", "same address family")
        .await?;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(
        ev.message.as_deref(),
        Some(
            r#"invalid requested loadbalancer IPs: IPFamilyForAddresses: same address family ["203.0.113.1" "203.0.113.2"]"#
        )
    );
    // The decision that posted the Warning writes nothing: the IP is still held, and reserved.
    assert_eq!(env.ips("c").await?, vec![ip("203.0.113.0")]);
    env.create(&env.lb(
        "e",
        &[("metallb.universe.tf/loadBalancerIPs", "203.0.113.0")],
    ))
    .await?;
    env.wait_event("e", "AllocationFailed", "address also in use by")
        .await?;
    assert_eq!(env.ips("c").await?, vec![ip("203.0.113.0")]);
    // Nothing held + the same malformed request: AllocationFailed, upstream's words.
    env.create(&env.lb("f", &[("metallb.universe.tf/loadBalancerIPs", TWO_V4)]))
        .await?;
    let ev = env.wait_event("f", "AllocationFailed", "").await?;
    assert_eq!(
        ev.message.as_deref(),
        Some(format!(r#"Failed to allocate IP for "{}/f": IPFamilyForAddresses: same address family ["203.0.113.1" "203.0.113.2"]"#, env.ns).as_str())
    );
    ctl.kill().await
}

/// Event reasons and texts and the config/allocator metrics as MetalLB 0.12.1: no ConfigMap at
/// start leaves `config_stale_bool` at 0 (internal/k8s/k8s.go:535-545 marks stale only on a
/// ConfigMap event; the list of an absent one yields none); `services_allocated_total` is
/// registered, never set, so it has no series; a moved IP logs and posts no `ClearAssignment`
/// (a 0.13 reason); `AllocationFailed`'s text is service.go:136's. Before: a
/// `services_allocated_total{pool="a"} 0` series and a Normal `ClearAssignment` Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_metrics_read_as_metallb_0_12_1() -> Result<()> {
    let env = Env::new("ctl-texts", MetallbRbac::V0_12_1).await?;
    let ctl = env.controller(&[])?;
    ctl.wait_metric("metallb_k8s_client_config_loaded_bool 0")
        .await?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool 0")
        .await?;
    env.set_config(POOL_A).await?;
    ctl.wait_metric("metallb_allocator_addresses_total{pool=\"a\"} 4")
        .await?;
    ctl.wait_metric("metallb_k8s_client_config_stale_bool 0")
        .await?;
    env.create(&env.lb(
        "m",
        &[("metallb.universe.tf/loadBalancerIPs", "203.0.113.2")],
    ))
    .await?;
    assert_eq!(env.wait_ips("m", 1).await?, vec![ip("203.0.113.2")]);
    patch_request(
        &env,
        "m",
        &[("metallb.universe.tf/loadBalancerIPs", "203.0.113.3")],
        None,
    )
    .await?;
    // Events are written in order by one writer: once the second IPAllocated is there, a
    // ClearAssignment posted before it would be too.
    let ev = env
        .wait_event("m", "IPAllocated", "Assigned IP [\"203.0.113.3\"]")
        .await?;
    assert_eq!(ev.type_.as_deref(), Some("Normal"));
    assert!(events_for(&env, "m", "ClearAssignment").await?.is_empty());
    // Moving out of every pool: released, status cleared, AllocationFailed.
    patch_request(
        &env,
        "m",
        &[("metallb.universe.tf/loadBalancerIPs", "192.0.2.1")],
        None,
    )
    .await?;
    let ev = env.wait_event("m", "AllocationFailed", "").await?;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(
        ev.message.as_deref(),
        Some(
            format!(
                r#"Failed to allocate IP for "{}/m": ["192.0.2.1"] is not allowed in config"#,
                env.ns
            )
            .as_str()
        )
    );
    env.wait_ips("m", 0).await?;
    assert!(events_for(&env, "m", "ClearAssignment").await?.is_empty());
    let metrics = ctl.metrics().await?;
    assert!(
        !metrics.contains("metallb_allocator_services_allocated_total{"),
        "a series MetalLB never sets:\n{metrics}"
    );
    ctl.kill().await
}

/// Dual-stack status order as upstream: an allocation lists the pool's CIDRs in config order
/// (internal/allocator/allocator.go:247-258), a request keeps its own order
/// (controller/service.go:199-202). Leading-zero IPv4 as MetalLB 0.12.1's Go 1.16 read it:
/// decimal, in the config and in requests; the status is written canonically. Before: the
/// config was rejected as invalid (`203.000.113.008` is not an IP address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_order_and_leading_zero_ipv4_as_upstream() -> Result<()> {
    let env = Env::new("ctl-order", MetallbRbac::V0_12_1).await?;
    env.set_config("address-pools:\n- name: ds\n  protocol: layer2\n  addresses: ['2001:db8::/126', 203.000.113.008/30]\n- name: z\n  protocol: layer2\n  auto-assign: false\n  addresses: ['198.051.100.000-198.051.100.003']\n").await?;
    let ctl = env.controller(&[])?;
    ctl.wait_metric("metallb_k8s_client_config_loaded_bool 1")
        .await?;
    let dual = |name: &str, ann: &[(&str, &str)]| {
        let mut svc = env.lb(name, ann);
        if let Some(s) = svc.spec.as_mut() {
            s.ip_family_policy = Some("RequireDualStack".into());
        }
        svc
    };
    env.create(&dual("auto", &[])).await?;
    assert_eq!(
        env.wait_ips("auto", 2).await?,
        vec![ip("2001:db8::"), ip("203.0.113.8")]
    );
    env.create(&dual(
        "asked",
        &[(
            "metallb.universe.tf/loadBalancerIPs",
            "203.0.113.9,2001:db8::1",
        )],
    ))
    .await?;
    assert_eq!(
        env.wait_ips("asked", 2).await?,
        vec![ip("203.0.113.9"), ip("2001:db8::1")]
    );
    env.create(&env.lb(
        "zeros",
        &[("metallb.universe.tf/loadBalancerIPs", "198.051.100.002")],
    ))
    .await?;
    assert_eq!(env.wait_ips("zeros", 1).await?, vec![ip("198.51.100.2")]);
    let raw = env.services().get_status("zeros").await?;
    let written = raw
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .and_then(|i| i.first().and_then(|e| e.ip.clone()));
    assert_eq!(written.as_deref(), Some("198.51.100.2"));
    ctl.kill().await
}

/// Wait until the controller's log contains `needle`.
async fn wait_log(ctl: &Controller, needle: &str) -> Result<()> {
    wait_log_line(ctl, &format!("{needle:?}"), |l| l.contains(needle)).await
}

/// Wait until a line of the controller's log satisfies `ok` (`what` names it in the error).
async fn wait_log_line(ctl: &Controller, what: &str, ok: impl Fn(&str) -> bool) -> Result<()> {
    let t = Instant::now();
    loop {
        let log = std::fs::read_to_string(&ctl.log)?;
        if log.lines().any(&ok) {
            return Ok(());
        }
        if t.elapsed() > WAIT {
            bail!("no {what} in the log within {WAIT:?}:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const LEASE: &str = "metallb-rs-controller";

fn lease_holder(l: &k8s_openapi::api::coordination::v1::Lease) -> String {
    l.spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

/// Wait until the Lease's holder satisfies `ok`; returns it.
async fn wait_holder(env: &Env, what: &str, ok: impl Fn(&str) -> bool) -> Result<String> {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: Api<Lease> = Api::namespaced(env.admin.clone(), &env.ns);
    let t = Instant::now();
    loop {
        let holder = leases
            .get_opt(LEASE)
            .await?
            .map(|l| lease_holder(&l))
            .unwrap_or_default();
        if ok(&holder) {
            return Ok(holder);
        }
        if t.elapsed() > WAIT {
            bail!("Lease holder {holder:?}: wanted {what} within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Write the Lease as a holder whose wall clock is `skew_secs` off would: a fresh record whose
/// renewTime is far from ours.
async fn write_skewed_lease(env: &Env, holder: &str, skew_secs: i64) -> Result<()> {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let at = k8s_openapi::jiff::Timestamp::now()
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(skew_secs))?;
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(LEASE.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(8),
            acquire_time: Some(MicroTime(at)),
            renew_time: Some(MicroTime(at)),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    Api::<Lease>::namespaced(env.admin.clone(), &env.ns)
        .patch(
            LEASE,
            &PatchParams::apply("skewed").force(),
            &Patch::Apply(&lease),
        )
        .await?;
    Ok(())
}

/// A follower measures a Lease's expiry from when it observed the Lease change (client-go's
/// `observedTime`), never from the holder's `renewTime`: a holder whose clock is an hour behind
/// is not robbed at once, and one whose clock is an hour ahead is taken over once its
/// renewals stop. Before: the first Lease was taken at once (no "holds the Lease" wait), the
/// second never (the controller waited for its renewTime an hour ahead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_counts_from_observation_not_from_a_skewed_renew_time() -> Result<()> {
    let env = Env::new("ctl-skew", MetallbRbac::V0_12_1).await?;
    grant_leases(&env).await?;
    env.set_config(POOL_A).await?;
    for (holder, skew) in [("behind", -3600), ("ahead", 3600)] {
        write_skewed_lease(&env, holder, skew).await?;
        let ctl = env.controller(&[])?;
        wait_log(&ctl, "Another controller holds the Lease; waiting")
            .await
            .with_context(|| format!("the Lease of a holder {skew} s off was not respected"))?;
        let me = wait_holder(&env, "taken over", |h| h != holder && !h.is_empty()).await?;
        env.create(&env.lb(holder, &[])).await?;
        env.wait_ips(holder, 1).await?;
        assert_eq!(
            status_writers(&env, holder).await?,
            BTreeSet::from([format!("metallb-rs-controller/{me}")])
        );
        ctl.kill().await?;
    }
    Ok(())
}

/// SIGTERM (a rolling update) makes the leader stop, release the Lease (holderIdentity
/// cleared, as client-go's ReleaseOnCancel) and exit 0, so the waiting controller takes over
/// at once, not after the Lease duration (120 s here, far beyond the test's wait). Before:
/// SIGTERM killed the process (no exit 0) and the Lease kept its holder for its duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_for_an_immediate_take_over() -> Result<()> {
    let env = Env::new("ctl-term", MetallbRbac::V0_12_1).await?;
    grant_leases(&env).await?;
    env.set_config(POOL_A).await?;
    let long = [("METALLB_RS_LEASE_DURATION", "120")];
    let mut first = env.controller_with_env(&[], &long)?;
    let first_id = wait_holder(&env, "a holder", |h| !h.is_empty()).await?;
    let second = env.controller_with_env(&[], &long)?;
    wait_log(&second, "Another controller holds the Lease; waiting").await?;
    env.create(&env.lb("t0", &[])).await?;
    env.wait_ips("t0", 1).await?;

    let pid = first.child.id().context("first controller pid")?;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, first.child.wait())
        .await
        .context("the leader did not exit on SIGTERM")??;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let log = std::fs::read_to_string(&first.log)?;
    assert!(log.contains("Released the controller Lease"), "{log}");
    let second_id = wait_holder(&env, "the second controller", |h| {
        !h.is_empty() && h != first_id
    })
    .await?;
    env.create(&env.lb("t1", &[])).await?;
    env.wait_ips("t1", 1).await?;
    assert_eq!(
        status_writers(&env, "t1").await?,
        BTreeSet::from([format!("metallb-rs-controller/{second_id}")])
    );
    second.kill().await
}
