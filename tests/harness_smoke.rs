//! Smoke test of the control-plane harness (`tests/harness/`): proves the apiserver is a real one
//! (ClusterIP/NodePort allocation, status subresource, watch, RBAC with minted ServiceAccount
//! tokens), that the CRDs in `manifests/migration-crds/` are served and accept objects, and that the
//! migrator's golden outputs (`migration/*/expected.yaml`) pass a server-side dry-run.
//!
//! Builds the binaries (`tests/harness/build.sh`) and starts the cluster itself; it fails, never
//! skips, when that is impossible.

#[path = "common/cluster.rs"]
mod cluster;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster::{Cluster, MetallbRbac, Options, is_status, next_item, repo_root};
use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, LoadBalancerIngress, LoadBalancerStatus, Namespace, Node, Pod, Secret, Service,
    ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::watcher;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn shared() -> &'static Cluster {
    Cluster::shared().expect("the test cluster must start (see tests/harness/README.md)")
}

fn lb_service(name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".to_owned()),
            ip_family_policy: Some("RequireDualStack".to_owned()),
            ports: Some(vec![k8s_openapi::api::core::v1::ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn ingress_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| i.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

fn status_with_ip(ip: &str) -> ServiceStatus {
    ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some(ip.to_owned()),
                ..LoadBalancerIngress::default()
            }]),
        }),
        ..ServiceStatus::default()
    }
}

#[tokio::test]
async fn loadbalancer_service_allocation_status_watch_and_delete() {
    let cluster = shared();
    let client = cluster.client().await.expect("admin client");
    let ns = cluster
        .fresh_namespace(&client, "smoke-svc")
        .await
        .expect("namespace");
    let api = Api::<Service>::namespaced(client.clone(), &ns);

    let created = api
        .create(&PostParams::default(), &lb_service("lb"))
        .await
        .expect("create LoadBalancer Service");
    let spec = created.spec.clone().expect("spec");

    // The apiserver allocates from --service-cluster-ip-range, both families.
    let ips: Vec<IpAddr> = spec
        .cluster_ips
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|ip| ip.parse().expect("clusterIP is an IP"))
        .collect();
    assert_eq!(
        ips.len(),
        2,
        "dual-stack Service gets two ClusterIPs: {ips:?}"
    );
    let v4: IpNet = "10.96.0.0/16".parse().expect("cidr");
    let v6: IpNet = "fd00:10:96::/108".parse().expect("cidr");
    assert!(v4.contains(&ips[0]), "{} not in {v4}", ips[0]);
    assert!(v6.contains(&ips[1]), "{} not in {v6}", ips[1]);
    let node_port = spec.ports.as_ref().and_then(|p| p[0].node_port);
    assert!(
        node_port.is_some_and(|p| (30000..=32767).contains(&p)),
        "LoadBalancer Service gets a NodePort: {node_port:?}"
    );
    assert!(
        ingress_ips(&created).is_empty(),
        "no ingress before anyone writes it"
    );

    // Watch it from here on (field selector on the name).
    let cfg = watcher::Config::default().fields("metadata.name=lb");
    let mut events = Box::pin(watcher(api.clone(), cfg));
    loop {
        match next_item(&mut events, WAIT).await.expect("watch") {
            Some(Ok(watcher::Event::InitDone)) => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("watch error: {e}"),
            None => panic!("watch ended"),
        }
    }

    // Status subresource: writes status, ignores spec.
    let patch = json!({
        "spec": { "externalTrafficPolicy": "Local" },
        "status": { "loadBalancer": { "ingress": [{ "ip": "203.0.113.7" }] } },
    });
    let patched = api
        .patch_status("lb", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch services/status");
    assert_eq!(ingress_ips(&patched), ["203.0.113.7"]);
    assert_eq!(
        patched
            .spec
            .as_ref()
            .and_then(|s| s.external_traffic_policy.as_deref()),
        Some("Cluster"),
        "the status subresource must not change spec"
    );

    // The watch sees the status change ...
    loop {
        match next_item(&mut events, WAIT)
            .await
            .expect("watch event for status")
        {
            Some(Ok(watcher::Event::Apply(svc))) if ingress_ips(&svc) == ["203.0.113.7"] => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("watch error: {e}"),
            None => panic!("watch ended"),
        }
    }

    // ... and the deletion.
    api.delete("lb", &DeleteParams::default())
        .await
        .expect("delete Service");
    loop {
        match next_item(&mut events, WAIT)
            .await
            .expect("watch event for delete")
        {
            Some(Ok(watcher::Event::Delete(svc))) => {
                assert_eq!(svc.metadata.name.as_deref(), Some("lb"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("watch error: {e}"),
            None => panic!("watch ended"),
        }
    }
    let gone = api.get("lb").await.expect_err("Service must be gone");
    assert!(is_status(&gone, 404), "expected 404, got {gone}");
}

/// Assert that `result` is a 403 Forbidden.
fn assert_forbidden<T>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(e) if is_status(&e, 403) => {}
        Err(e) => panic!("{what}: expected 403 Forbidden, got error {e}"),
        Ok(_) => panic!("{what}: expected 403 Forbidden, but it succeeded"),
    }
}

fn allowed<T>(what: &str, result: Result<T, kube::Error>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: expected success, got {e}"))
}

#[tokio::test]
async fn legacy_metallb_rbac_is_enforced_for_minted_service_account_tokens() {
    let cluster = shared();
    let admin = cluster.client().await.expect("admin client");
    let ns012 = cluster
        .fresh_namespace(&admin, "rbac-012")
        .await
        .expect("ns");
    let ns096 = cluster
        .fresh_namespace(&admin, "rbac-096")
        .await
        .expect("ns");
    let apps = cluster
        .fresh_namespace(&admin, "rbac-apps")
        .await
        .expect("ns");
    cluster
        .install_metallb_rbac(&admin, MetallbRbac::V0_12_1, &ns012)
        .await
        .expect("install 0.12.1 RBAC");
    cluster
        .install_metallb_rbac(&admin, MetallbRbac::V0_9_6, &ns096)
        .await
        .expect("install 0.9.6 RBAC");
    Api::<Service>::namespaced(admin.clone(), &apps)
        .create(&PostParams::default(), &lb_service("lb"))
        .await
        .expect("create Service");

    // The admin really is system:masters.
    allowed(
        "admin lists secrets",
        Api::<Secret>::all(admin.clone())
            .list(&ListParams::default())
            .await,
    );

    // --- 0.12.1 controller: status update only, no spec update, no patch, no leases.
    let c012 = cluster
        .service_account_client(&admin, &ns012, "controller")
        .await
        .expect("controller token");
    let svcs = Api::<Service>::namespaced(c012.clone(), &apps);
    let mut svc = allowed("0.12.1 controller gets a Service", svcs.get("lb").await);
    svc.status = Some(status_with_ip("203.0.113.12"));
    let updated = allowed(
        "0.12.1 controller updates services/status",
        svcs.replace_status("lb", &PostParams::default(), &svc)
            .await,
    );
    assert_eq!(ingress_ips(&updated), ["203.0.113.12"]);
    let merge = json!({ "status": { "loadBalancer": { "ingress": [{ "ip": "203.0.113.13" }] } } });
    assert_forbidden(
        "0.12.1 controller PATCHes services/status (the role grants only update)",
        svcs.patch_status("lb", &PatchParams::default(), &Patch::Merge(&merge))
            .await,
    );
    let mut annotated = updated.clone();
    annotated
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("metallb-rs.test/touched".into(), "yes".into());
    assert_forbidden(
        "0.12.1 controller updates a Service spec/metadata",
        svcs.replace("lb", &PostParams::default(), &annotated).await,
    );
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("metallb-rs".into()),
            ..ObjectMeta::default()
        },
        ..Lease::default()
    };
    assert_forbidden(
        "0.12.1 controller creates a Lease",
        Api::<Lease>::namespaced(c012.clone(), &ns012)
            .create(&PostParams::default(), &lease)
            .await,
    );
    allowed(
        "0.12.1 controller lists ConfigMaps in its namespace",
        Api::<ConfigMap>::namespaced(c012.clone(), &ns012)
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "0.12.1 controller lists ConfigMaps in another namespace",
        Api::<ConfigMap>::namespaced(c012.clone(), &apps)
            .list(&ListParams::default())
            .await,
    );
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("memberlist".into()),
            ..ObjectMeta::default()
        },
        string_data: Some([("secretkey".to_owned(), "x".to_owned())].into()),
        ..Secret::default()
    };
    allowed(
        "0.12.1 controller creates the memberlist Secret",
        Api::<Secret>::namespaced(c012.clone(), &ns012)
            .create(&PostParams::default(), &secret)
            .await,
    );

    // --- 0.12.1 speaker: reads EndpointSlices and Nodes, writes nothing on Services.
    let s012 = cluster
        .service_account_client(&admin, &ns012, "speaker")
        .await
        .expect("speaker token");
    allowed(
        "0.12.1 speaker lists EndpointSlices",
        Api::<EndpointSlice>::all(s012.clone())
            .list(&ListParams::default())
            .await,
    );
    allowed(
        "0.12.1 speaker lists Nodes",
        Api::<Node>::all(s012.clone())
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "0.12.1 speaker updates services/status",
        Api::<Service>::namespaced(s012.clone(), &apps)
            .replace_status("lb", &PostParams::default(), &updated)
            .await,
    );
    assert_forbidden(
        "0.12.1 speaker reads Secrets",
        Api::<Secret>::namespaced(s012.clone(), &ns012)
            .list(&ListParams::default())
            .await,
    );

    // --- 0.9.6: the controller may still update Services; the speaker has no EndpointSlices.
    let c096 = cluster
        .service_account_client(&admin, &ns096, "controller")
        .await
        .expect("controller token");
    let svcs096 = Api::<Service>::namespaced(c096, &apps);
    let mut current = allowed("0.9.6 controller gets a Service", svcs096.get("lb").await);
    current
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("metallb-rs.test/touched".into(), "yes".into());
    allowed(
        "0.9.6 controller updates a Service",
        svcs096
            .replace("lb", &PostParams::default(), &current)
            .await,
    );
    let s096 = cluster
        .service_account_client(&admin, &ns096, "speaker")
        .await
        .expect("speaker token");
    assert_forbidden(
        "0.9.6 speaker lists EndpointSlices",
        Api::<EndpointSlice>::all(s096.clone())
            .list(&ListParams::default())
            .await,
    );
    allowed(
        "0.9.6 speaker lists Pods in its namespace (pod-lister)",
        Api::<Pod>::namespaced(s096.clone(), &ns096)
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "0.9.6 speaker lists Pods elsewhere",
        Api::<Pod>::namespaced(s096, &apps)
            .list(&ListParams::default())
            .await,
    );
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("read_dir entry").path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", dir.display()),
    };
    files.sort();
    files
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// A minimal value satisfying `schema`: defaults, first enum values, required fields only,
/// minimum sizes. `tests/harness/crd-samples/<Kind>.yaml` overrides it for kinds whose
/// schema has patterns or CEL rules this cannot satisfy.
fn sample(schema: &JSONSchemaProps) -> Value {
    if let Some(default) = &schema.default {
        return default.0.clone();
    }
    if let Some(first) = schema.enum_.as_ref().and_then(|e| e.first()) {
        return first.0.clone();
    }
    match schema.type_.as_deref() {
        Some("object") => {
            let mut obj = serde_json::Map::new();
            let props = schema.properties.clone().unwrap_or_default();
            for name in schema.required.clone().unwrap_or_default() {
                let value = props.get(&name).map_or(json!({}), sample);
                obj.insert(name, value);
            }
            Value::Object(obj)
        }
        Some("array") => {
            // One item even when empty is allowed: a required list is rarely meant to be empty.
            let n = schema.min_items.unwrap_or(1).max(1) as usize;
            let item = match &schema.items {
                Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(s)) => sample(s),
                _ => json!("a"),
            };
            Value::Array(vec![item; n])
        }
        Some("string") => match schema.format.as_deref() {
            Some("date-time") => json!("2024-01-01T00:00:00Z"),
            Some("ipv4" | "ip") => json!("192.0.2.1"),
            Some("ipv6") => json!("2001:db8::1"),
            Some("cidr") => json!("192.0.2.0/24"),
            _ => json!("a".repeat(schema.min_length.unwrap_or(1).max(1) as usize)),
        },
        Some("integer" | "number") => {
            let min = schema.minimum.unwrap_or(1.0).max(1.0);
            let max = schema.maximum.unwrap_or(f64::MAX);
            json!(min.min(max) as i64)
        }
        Some("boolean") => json!(false),
        _ => json!(1), // int-or-string and untyped
    }
}

/// Does `got` contain everything in `sent` (the server may add defaults)?
fn is_subset(sent: &Value, got: &Value) -> bool {
    match (sent, got) {
        (Value::Object(s), Value::Object(g)) => s
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| is_subset(v, gv))),
        _ => sent == got,
    }
}

#[tokio::test]
async fn crds_from_manifests_are_served_and_accept_one_object_of_each_kind() {
    let cluster = shared();
    let client = cluster.client().await.expect("admin client");
    // The same override `tests/harness/cluster start` honours.
    let dir = std::env::var_os("HARNESS_CRDS_DIR").map_or_else(
        || repo_root().join("manifests/migration-crds"),
        PathBuf::from,
    );
    let mut expected: Vec<CustomResourceDefinition> = Vec::new();
    for file in yaml_files(&dir) {
        for doc in yaml_docs(&file) {
            if doc["kind"] == "CustomResourceDefinition" {
                expected.push(serde_json::from_value(doc).unwrap_or_else(|e| {
                    panic!("{}: not a CustomResourceDefinition: {e}", file.display())
                }));
            }
        }
    }
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let served = crds.list(&ListParams::default()).await.expect("list CRDs");
    let want: BTreeSet<String> = expected
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let have: BTreeSet<String> = served
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    // The harness applies exactly manifests/migration-crds/ to a bare apiserver.
    assert_eq!(
        have, want,
        "CRDs in the cluster vs. manifests/migration-crds/"
    );
    if expected.is_empty() {
        eprintln!(
            "manifests/migration-crds/ has no CRDs yet; only checked that the cluster has none either"
        );
        return;
    }

    let ns = cluster
        .fresh_namespace(&client, "smoke-crd")
        .await
        .expect("namespace");
    let mut kinds = BTreeSet::new();
    for crd in &expected {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let live = crds.get(&name).await.expect("get CRD");
        let established = live
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        assert!(established, "CRD {name} is not Established");

        let spec = &crd.spec;
        let version = spec
            .versions
            .iter()
            .find(|v| v.storage && v.served)
            .unwrap_or_else(|| panic!("CRD {name} has no served storage version"));
        let ar = ApiResource {
            group: spec.group.clone(),
            version: version.name.clone(),
            api_version: format!("{}/{}", spec.group, version.name),
            kind: spec.names.kind.clone(),
            plural: spec.names.plural.clone(),
        };
        let api: Api<DynamicObject> = if spec.scope == "Namespaced" {
            Api::namespaced_with(client.clone(), &ns, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap_or_else(|| panic!("CRD {name} version {} has no schema", version.name));
        let override_file = repo_root()
            .join("tests/harness/crd-samples")
            .join(format!("{}.yaml", spec.names.kind));
        let mut body = if override_file.is_file() {
            yaml_docs(&override_file)
                .into_iter()
                .next()
                .unwrap_or_else(|| panic!("{} is empty", override_file.display()))
        } else {
            let mut body = sample(schema);
            let has_spec = schema
                .properties
                .as_ref()
                .is_some_and(|p| p.contains_key("spec"));
            if has_spec && body.get("spec").is_none() {
                body["spec"] = sample(&schema.properties.as_ref().expect("props")["spec"]);
            }
            body
        };
        let obj_name = format!("smoke-{}", spec.names.singular.clone().unwrap_or_default());
        body["apiVersion"] = json!(ar.api_version);
        body["kind"] = json!(ar.kind);
        body["metadata"] = json!({ "name": obj_name });
        let obj: DynamicObject = serde_json::from_value(body.clone()).expect("DynamicObject");
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating {} {obj_name} from {body} failed: {e}", ar.kind));
        let back = api.get(&obj_name).await.expect("get created object");
        assert_eq!(
            back.types.as_ref().map(|t| t.kind.as_str()),
            Some(ar.kind.as_str())
        );
        if let Some(spec_value) = body.get("spec") {
            let stored = back.data.get("spec").cloned().unwrap_or(Value::Null);
            assert!(
                is_subset(spec_value, &stored),
                "{} spec did not round-trip: sent {spec_value}, stored {stored}",
                ar.kind
            );
        }

        // The schema is enforced: a spec of the wrong type is rejected (422 Invalid).
        let spec_is_object = schema
            .properties
            .as_ref()
            .and_then(|p| p.get("spec"))
            .is_some_and(|s| s.type_.as_deref() == Some("object"));
        if spec_is_object {
            let mut bad = body.clone();
            bad["metadata"] = json!({ "name": format!("{obj_name}-bad") });
            bad["spec"] = json!("not-an-object");
            let bad: DynamicObject = serde_json::from_value(bad).expect("DynamicObject");
            let err = api
                .create(&PostParams::default(), &bad)
                .await
                .expect_err("a string spec must be rejected");
            assert!(is_status(&err, 422), "expected 422 Invalid, got {err}");
        }
        kinds.insert(ar.kind.clone());
    }
    let want_kinds: BTreeSet<String> = expected.iter().map(|c| c.spec.names.kind.clone()).collect();
    assert_eq!(kinds, want_kinds);
}

/// `kubectl apply --dry-run=server -f file`; returns (success, stdout+stderr).
async fn dry_run(cluster: &Cluster, file: &Path) -> (bool, String) {
    let out = cluster
        .kubectl()
        .args(["apply", "--dry-run=server", "-o", "name", "-f"])
        .arg(file)
        .output()
        .await
        .expect("run kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn migration_goldens_pass_server_side_dry_run() {
    let cluster = shared();
    let client = cluster.client().await.expect("admin client");

    // First prove that dry-run validates on the server and persists nothing.
    let ns = cluster
        .fresh_namespace(&client, "smoke-dry")
        .await
        .expect("namespace");
    let scratch = cluster.dir().join(format!("dry-run-{ns}"));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let good = scratch.join("good.yaml");
    std::fs::write(
        &good,
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config, namespace: {ns}}}\ndata: {{config: x}}\n"),
    )
    .expect("write");
    let (ok, text) = dry_run(cluster, &good).await;
    assert!(ok, "dry-run of a valid ConfigMap failed: {text}");
    let err = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("config")
        .await
        .expect_err("a dry-run must not persist");
    assert!(is_status(&err, 404), "expected 404, got {err}");
    let bad = scratch.join("bad.yaml");
    std::fs::write(
        &bad,
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: bad, namespace: {ns}}}\nspec: {{type: Bogus, ports: [{{port: 80}}]}}\n"),
    )
    .expect("write");
    let (ok, text) = dry_run(cluster, &bad).await;
    assert!(!ok, "dry-run of an invalid Service succeeded: {text}");
    assert!(
        text.contains("Unsupported value"),
        "unexpected rejection: {text}"
    );

    // Then every golden output of the migrator.
    let migration = std::env::var_os("HARNESS_MIGRATION_DIR")
        .map_or_else(|| repo_root().join("migration"), PathBuf::from);
    let mut goldens: Vec<PathBuf> = match std::fs::read_dir(&migration) {
        Ok(entries) => entries
            .map(|e| e.expect("read_dir entry").path().join("expected.yaml"))
            .filter(|p| p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", migration.display()),
    };
    goldens.sort();
    let mut failures = Vec::new();
    let mut checked = 0;
    for golden in &goldens {
        let docs = yaml_docs(golden);
        if docs.is_empty() {
            // A case where the migrator refuses or has nothing to emit (see expected.stderr).
            continue;
        }
        prepare_golden_fixtures(&client, &docs).await;
        let (ok, text) = dry_run(cluster, golden).await;
        if !ok {
            failures.push(format!("{}:\n{text}", golden.display()));
        }
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} non-empty migration goldens failed server-side dry-run:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{checked} migration golden(s) passed server-side dry-run ({} empty)",
        goldens.len() - checked
    );
}

/// What a golden expects to exist already: its namespaces, and the Services its annotation-only
/// `Service` documents patch (`metallb-migrate --services`). Placeholders are created as admin.
async fn prepare_golden_fixtures(client: &kube::Client, docs: &[Value]) {
    let namespaces: BTreeSet<&str> = docs
        .iter()
        .filter_map(|d| d["metadata"]["namespace"].as_str())
        .collect();
    for ns in namespaces {
        let obj = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &obj)
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {}
            Err(e) => panic!("creating namespace {ns}: {e}"),
        }
    }
    for doc in docs {
        if doc["kind"] != "Service" || doc.get("spec").is_some() {
            continue;
        }
        let (Some(ns), Some(name)) = (
            doc["metadata"]["namespace"].as_str(),
            doc["metadata"]["name"].as_str(),
        ) else {
            continue;
        };
        let mut svc = lb_service(name);
        if let Some(spec) = svc.spec.as_mut() {
            spec.ip_family_policy = None;
            spec.allocate_load_balancer_node_ports = Some(false);
        }
        match Api::<Service>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &svc)
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {}
            Err(e) => panic!("creating placeholder Service {ns}/{name}: {e}"),
        }
    }
}

#[test]
fn owned_cluster_is_torn_down_when_a_test_panics() {
    let handle = std::thread::spawn(|| {
        let cluster = Cluster::start(&Options::default()).expect("start an owned cluster");
        let dir = cluster.dir().to_owned();
        let pid = std::fs::read_to_string(dir.join("pids/kube-apiserver.pid"))
            .expect("apiserver pid file")
            .trim()
            .to_owned();
        eprintln!(
            "[harness] owned cluster start-up: {:.2}s",
            cluster.startup_time().as_secs_f64()
        );
        let payload = (dir, pid);
        std::panic::panic_any(payload);
    });
    let payload = handle.join().expect_err("the thread panics on purpose");
    let (dir, pid) = *payload
        .downcast::<(PathBuf, String)>()
        .expect("panic payload is (dir, pid)");
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
    assert!(
        !running(&pid),
        "kube-apiserver (pid {pid}) still runs after drop"
    );
}

/// Whether a process runs (not gone, not a zombie).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_default()
        .split_whitespace()
        .nth(2)
        .is_some_and(|s| s != "Z" && s != "X")
}

fn netns_exists(name: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// A run killed outright (its test process and the watchdog gone, as when a CI run or a session
/// is stopped) leaves its cluster directory, bridge and node namespaces behind, and possibly a
/// live apiserver; the next `cluster start` reclaims them all (else the 8 bridges run out and
/// the leftovers hold the disk).
#[test]
#[ignore = "requires root + netns; run by make test"]
fn killed_run_leftovers_are_reclaimed_by_the_next_start() {
    use std::process::{Command, Stdio};
    let script = repo_root().join("tests/harness/cluster");
    let mut owner = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("start the owner process");
    let out = Command::new(&script)
        .args(["start", "--netns", "--watch-pid", &owner.id().to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("cluster start");
    assert!(out.status.success(), "cluster start failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("export HARNESS_CLUSTER_DIR="))
        .map(PathBuf::from)
        .expect("HARNESS_CLUSTER_DIR");
    let netns = format!("mlbt-{}-left", std::process::id());
    let st = Command::new(&script)
        .arg("netns-add")
        .arg(&netns)
        .arg(&dir)
        .stdout(Stdio::null())
        .status()
        .expect("netns-add");
    assert!(st.success(), "netns-add failed");
    let pid_of = |name: &str| {
        std::fs::read_to_string(dir.join(format!("pids/{name}.pid")))
            .expect("pid file")
            .trim()
            .to_owned()
    };
    let (watchdog, apiserver) = (pid_of("watchdog"), pid_of("kube-apiserver"));
    // The stop: the watchdog and the owner are killed; the apiserver and etcd live on.
    let st = Command::new("kill")
        .args(["-KILL", &watchdog])
        .status()
        .expect("kill");
    assert!(st.success());
    owner.kill().expect("kill the owner");
    owner.wait().expect("reap the owner");
    assert!(dir.exists() && netns_exists(&netns) && running(&apiserver));

    let next = Cluster::start(&Options { netns: true }).expect("the next cluster starts");
    assert!(!dir.exists(), "{} was not reclaimed", dir.display());
    assert!(!netns_exists(&netns), "netns {netns} was not reclaimed");
    assert!(
        !running(&apiserver),
        "the leftover apiserver {apiserver} still runs"
    );
    drop(next);
}

#[tokio::test]
#[ignore = "requires root + netns; run by make test"]
async fn apiserver_is_reachable_from_a_node_network_namespace() {
    let cluster = Cluster::start(&Options { netns: true }).expect("start a --netns cluster");
    let admin = cluster.client().await.expect("admin client");
    let ns = cluster.fresh_namespace(&admin, "netns").await.expect("ns");
    cluster
        .install_metallb_rbac(&admin, MetallbRbac::V0_12_1, &ns)
        .await
        .expect("RBAC");
    let kubeconfig = cluster
        .service_account_kubeconfig(&admin, &ns, "speaker")
        .await
        .expect("speaker kubeconfig");
    let netns = format!("mlbt-{}-n1", std::process::id());
    let addr = cluster.add_node_netns(&netns).expect("node netns");
    let cidr = cluster.env().get("HARNESS_NETNS_CIDR").expect("cidr");
    let net: IpNet = cidr.parse().expect("HARNESS_NETNS_CIDR");
    assert!(net.contains(&addr.parse::<IpAddr>().expect("node addr")));
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", &netns])
        .arg(cluster.kubectl_path())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "nodes", "-o", "name"])
        .output()
        .await
        .expect("ip netns exec kubectl");
    assert!(
        out.status.success(),
        "speaker in {netns} could not list nodes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same identity is still limited from inside the namespace.
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", &netns])
        .arg(cluster.kubectl_path())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "secrets", "-n", &ns])
        .output()
        .await
        .expect("ip netns exec kubectl");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Forbidden"), "expected Forbidden: {stderr}");
    let dir = cluster.dir().to_owned();
    drop(admin);
    drop(cluster);
    assert!(!dir.exists(), "cluster dir survived drop");
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(&netns),
        "netns {netns} survived teardown"
    );
}
