//! Legacy config → metallb.io CRD objects: upstream's `configmaptocrs`, done strictly. Pure
//! except [`cli`], which reads and writes files, and [`cluster`], which migrates a live cluster
//! (`--from-cluster`) deciding each write with the pure [`plan`].
//!
//! ```text
//!  input text ──► config::load (the controller's parser + validator) ──► Config
//!                                                                        │
//!  Services dump ──► services::parse ──┐                       migrate() (this module)
//!                                      ▼                                 ▼
//!                               services::plan ◄── renames ── Migration { resources, renames }
//!                                      │                                 │
//!                                      └──────────► emit::documents ◄────┘ ──► YAML text
//! ```
//!
//! Mapping (spec §3.3, configmaptocrs v0.13.11+), in upstream's kind order — `BGPPeer`,
//! `IPAddressPool`, `BGPAdvertisement`, `L2Advertisement`, `BFDProfile`, `Community` — and
//! config order within a kind:
//!
//! - `peers[i]` → `BGPPeer` `peer{i+1}` (v1beta2): hold time always written (`1m30s`),
//!   keepalive only when set, `peerPort` unless absent or 0, the password as written — or,
//!   with `password_secrets`, a `kubernetes.io/basic-auth` Secret `peer{i+1}-password` (key
//!   `password`, emitted before every other object) referenced by `passwordSecret`;
//! - `address-pools[i]` → `IPAddressPool` (addresses verbatim, `autoAssign` only when written,
//!   `avoidBuggyIPs` only when true); each advertisement of a `bgp` pool (the implicit default
//!   one included) → `BGPAdvertisement` `bgpadvertisement{k}` with one counter over all pools;
//!   each `layer2` pool → `L2Advertisement` `l2advertisement{k}`;
//! - `bfd-profiles[i]` → `BFDProfile`; `bgp-communities` → one `Community` `communities`,
//!   entries sorted by alias.
//!
//! Where we differ from configmaptocrs (details in `migration/README.md`): the input is
//! validated by the controller's strict parser first (so `protocol: l2` is an error instead of
//! a pool that is never announced); names are normalized only when Kubernetes would reject
//! them ([`names`]) and every rename is reported, collisions are errors, references follow;
//! values the CRDs cannot hold (`peerPort` above 16384, `aggregationLength` 0) are errors;
//! `echoMode`/`passiveMode` are written only when true; no `creationTimestamp: null` or
//! `status: {}` noise.

pub mod cli;
pub mod cluster;
pub mod emit;
pub mod plan;
pub use crate::config::names;
pub mod services;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::config::crd::{
    BFDProfileSpec, BGPAdvertisementSpec, BGPPeerSpec, CommunityAlias, CommunitySpec, CrdObject,
    IPAddressPoolSpec, Kind, L2AdvertisementSpec, LabelSelector, PasswordSecret, SecretReference,
    Spec,
};
use crate::config::duration::format_go_seconds;
use crate::config::{self, Config, ConfigError, InputForm, Loaded, Protocol};

pub use services::ServicePatch;

/// Namespace used when neither `--namespace` nor the ConfigMap names one.
pub const DEFAULT_NAMESPACE: &str = "metallb-system";
/// Highest `BGPPeer.spec.peerPort` the v1beta2 CRD accepts.
pub const MAX_CRD_PEER_PORT: u16 = 16384;

/// What to emit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Namespace of every emitted object.
    pub namespace: String,
    /// Move peer passwords into basic-auth Secrets referenced by `passwordSecret`.
    pub password_secrets: bool,
}

/// One emitted object.
// Objects are built once and never moved in bulk: boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A metallb.io object.
    Crd(CrdObject),
    /// A Secret holding a peer password.
    Secret(PasswordSecret),
    /// A partial Service rewriting pool annotations.
    ServicePatch(ServicePatch),
}

impl Resource {
    /// The object as a manifest.
    pub fn to_value(&self) -> Value {
        match self {
            Resource::Crd(o) => o.to_value(),
            Resource::Secret(s) => s.to_value(),
            Resource::ServicePatch(p) => p.to_value(),
        }
    }
}

/// A legacy name replaced by a valid Kubernetes object name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    /// `IPAddressPool` or `BFDProfile`.
    pub kind: Kind,
    /// The name in the legacy config.
    pub from: String,
    /// The object name.
    pub to: String,
    /// Why the old name is not a valid object name.
    pub problems: String,
}

impl fmt::Display for Rename {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} -> {:?} ({})",
            self.kind, self.from, self.to, self.problems
        )
    }
}

/// The result of migrating a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Objects in emission order.
    pub resources: Vec<Resource>,
    /// Renamed pools and BFD profiles, in config order (pools first).
    pub renames: Vec<Rename>,
}

impl Migration {
    /// Old → new names of renamed pools.
    pub fn pool_renames(&self) -> BTreeMap<String, String> {
        self.renames
            .iter()
            .filter(|r| r.kind == Kind::IPAddressPool)
            .map(|r| (r.from.clone(), r.to.clone()))
            .collect()
    }

    /// Names of the emitted IPAddressPools.
    pub fn pool_names(&self) -> Vec<String> {
        self.resources
            .iter()
            .filter_map(|r| match r {
                Resource::Crd(o) if o.kind() == Kind::IPAddressPool => Some(o.name.clone()),
                _ => None,
            })
            .collect()
    }

    /// The objects as manifests, in order.
    pub fn to_values(&self) -> Vec<Value> {
        self.resources.iter().map(Resource::to_value).collect()
    }
}

/// Why a valid config cannot be migrated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    /// A value the metallb.io CRDs cannot hold.
    #[error("{object}: {field} {value} cannot be migrated: {reason}")]
    NotExpressible {
        /// The legacy object.
        object: config::Object,
        /// The legacy field.
        field: String,
        /// The value.
        value: String,
        /// Which CRD rule it breaks.
        reason: String,
    },
    /// A name with no usable characters.
    #[error(
        "{object}: the name has no letters or digits, so no Kubernetes name can be made from it"
    )]
    UnusableName {
        /// The legacy object.
        object: config::Object,
        /// The name.
        name: String,
    },
    /// Two names that normalize to the same object name.
    #[error(
        "{first} and {second} would both become {kind} {name:?}: rename one of them in the config"
    )]
    NameCollision {
        /// The object kind.
        kind: Kind,
        /// The object name both map to.
        name: String,
        /// The first legacy object.
        first: config::Object,
        /// The second legacy object.
        second: config::Object,
    },
    /// The target namespace is not a valid namespace name.
    #[error(
        "namespace {0:?} is not a valid Kubernetes namespace name (lowercase letters, digits and '-', at most 63 characters)"
    )]
    InvalidNamespace(String),
}

/// Whether `ns` is a valid namespace name (RFC 1123 label).
pub fn is_valid_namespace(ns: &str) -> bool {
    let b = ns.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Old → new object names of one kind, and the renames among them.
struct NameMap {
    names: BTreeMap<String, String>,
    renames: Vec<Rename>,
}

fn map_names<'a>(
    kind: Kind,
    items: impl Iterator<Item = (config::Object, &'a str)>,
) -> Result<NameMap, MigrateError> {
    let mut names = BTreeMap::new();
    let mut owners: BTreeMap<String, config::Object> = BTreeMap::new();
    let mut renames = Vec::new();
    for (object, old) in items {
        let new = names::normalize(old).ok_or_else(|| MigrateError::UnusableName {
            object: object.clone(),
            name: old.to_string(),
        })?;
        if let Some(first) = owners.get(&new) {
            return Err(MigrateError::NameCollision {
                kind,
                name: new,
                first: first.clone(),
                second: object,
            });
        }
        owners.insert(new.clone(), object);
        if new != old {
            renames.push(Rename {
                kind,
                from: old.to_string(),
                to: new.clone(),
                problems: names::problems(old),
            });
        }
        names.insert(old.to_string(), new);
    }
    Ok(NameMap { names, renames })
}

fn pool_object(i: usize, name: &str) -> config::Object {
    config::Object::Pool {
        index: i + 1,
        name: Some(name.to_string()),
    }
}

fn lookup(map: &BTreeMap<String, String>, name: &str) -> String {
    // Every referenced name was mapped (the parser checked the references).
    map.get(name).cloned().unwrap_or_else(|| name.to_string())
}

/// Turn a validated config into metallb.io objects (see the module docs for the mapping).
pub fn migrate(config: &Config, opts: &Options) -> Result<Migration, MigrateError> {
    if !is_valid_namespace(&opts.namespace) {
        return Err(MigrateError::InvalidNamespace(opts.namespace.clone()));
    }
    let ns = Some(opts.namespace.clone());
    let pools = map_names(
        Kind::IPAddressPool,
        config
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| (pool_object(i, &p.name), p.name.as_str())),
    )?;
    let bfds = map_names(
        Kind::BFDProfile,
        config.bfd_profiles.iter().enumerate().map(|(i, b)| {
            (
                config::Object::BfdProfile {
                    index: i + 1,
                    name: Some(b.name.clone()),
                },
                b.name.as_str(),
            )
        }),
    )?;

    let mut secrets = Vec::new();
    let mut crds: Vec<CrdObject> = Vec::new();
    let obj = |name: String, spec: Spec| CrdObject::new(name, ns.clone(), spec);

    for (i, p) in config.peers.iter().enumerate() {
        let name = format!("peer{}", i + 1);
        let port = p.peer_port.filter(|&port| port != 0);
        if let Some(port) = port.filter(|&port| port > MAX_CRD_PEER_PORT) {
            return Err(MigrateError::NotExpressible {
                object: config::Object::Peer {
                    index: i + 1,
                    address: Some(p.peer_address.to_string()),
                },
                field: "peer-port".into(),
                value: port.to_string(),
                reason: format!(
                    "the metallb.io/v1beta2 BGPPeer CRD limits peerPort to {MAX_CRD_PEER_PORT}"
                ),
            });
        }
        let (password, password_secret) = match &p.password {
            Some(pw) if opts.password_secrets => {
                let secret = format!("{name}-password");
                secrets.push(PasswordSecret {
                    name: secret.clone(),
                    namespace: ns.clone(),
                    password: pw.clone(),
                });
                (
                    None,
                    Some(SecretReference {
                        name: Some(secret),
                        namespace: ns.clone(),
                    }),
                )
            }
            other => (other.clone(), None),
        };
        let spec = BGPPeerSpec {
            my_asn: p.my_asn,
            peer_asn: p.peer_asn,
            peer_address: p.peer_address.to_string(),
            source_address: p.source_address.map(|a| a.to_string()),
            peer_port: port,
            hold_time: Some(format_go_seconds(p.hold_time_secs)),
            keepalive_time: p.keepalive_time_secs.map(format_go_seconds),
            router_id: p.router_id.map(|a| a.to_string()),
            node_selectors: p.node_selectors.iter().map(LabelSelector::from).collect(),
            password,
            password_secret,
            bfd_profile: p.bfd_profile.as_deref().map(|b| lookup(&bfds.names, b)),
            ebgp_multihop: p.ebgp_multihop,
            vrf: None,
        };
        crds.push(obj(name, Spec::BGPPeer(spec)));
    }

    for p in &config.pools {
        let spec = IPAddressPoolSpec {
            addresses: p.addresses.iter().map(|a| a.raw.clone()).collect(),
            auto_assign: p.auto_assign,
            avoid_buggy_ips: p.avoid_buggy_ips,
            service_allocation: None,
        };
        let mut o = obj(lookup(&pools.names, &p.name), Spec::IPAddressPool(spec));
        if o.name != p.name {
            // Services may still ask for the pool by its legacy name.
            o.legacy_name = Some(p.name.clone());
        }
        crds.push(o);
    }

    let mut k = 0;
    for (i, p) in config.pools.iter().enumerate() {
        if p.protocol != Protocol::Bgp {
            continue;
        }
        for (j, ad) in p.bgp_advertisements.iter().enumerate() {
            k += 1;
            if ad.aggregation_length == Some(0) {
                return Err(MigrateError::NotExpressible {
                    object: pool_object(i, &p.name),
                    field: format!("bgp-advertisements[{}].aggregation-length", j + 1),
                    value: "0".into(),
                    reason: "the metallb.io/v1beta1 BGPAdvertisement CRD requires aggregationLength >= 1".into(),
                });
            }
            let spec = BGPAdvertisementSpec {
                aggregation_length: ad.aggregation_length.map(i32::from),
                aggregation_length_v6: ad.aggregation_length_v6.map(i32::from),
                local_pref: ad.localpref,
                communities: ad.communities.clone(),
                ip_address_pools: vec![lookup(&pools.names, &p.name)],
                ..BGPAdvertisementSpec::default()
            };
            crds.push(obj(
                format!("bgpadvertisement{k}"),
                Spec::BGPAdvertisement(spec),
            ));
        }
    }

    let mut k = 0;
    for p in config
        .pools
        .iter()
        .filter(|p| p.protocol == Protocol::Layer2)
    {
        k += 1;
        let spec = L2AdvertisementSpec {
            ip_address_pools: vec![lookup(&pools.names, &p.name)],
            ..L2AdvertisementSpec::default()
        };
        crds.push(obj(
            format!("l2advertisement{k}"),
            Spec::L2Advertisement(spec),
        ));
    }

    for b in &config.bfd_profiles {
        let spec = BFDProfileSpec {
            receive_interval: b.receive_interval,
            transmit_interval: b.transmit_interval,
            detect_multiplier: b.detect_multiplier,
            echo_interval: b.echo_interval,
            echo_mode: b.echo_mode.then_some(true),
            passive_mode: b.passive_mode.then_some(true),
            minimum_ttl: b.minimum_ttl,
        };
        crds.push(obj(lookup(&bfds.names, &b.name), Spec::BFDProfile(spec)));
    }

    if !config.bgp_communities.is_empty() {
        let communities = config
            .bgp_communities
            .iter()
            .map(|(alias, value)| CommunityAlias {
                name: alias.clone(),
                value: value.to_string(),
            })
            .collect();
        crds.push(obj(
            "communities".into(),
            Spec::Community(CommunitySpec { communities }),
        ));
    }

    let mut resources: Vec<Resource> = secrets.into_iter().map(Resource::Secret).collect();
    resources.extend(crds.into_iter().map(Resource::Crd));
    let mut renames = pools.renames;
    renames.extend(bfds.renames);
    Ok(Migration { resources, renames })
}

/// The config that reading the migration's objects back must give (`config::crd`): the
/// original with the renames applied (a renamed pool keeps its legacy name as an alias) and
/// the documented normalizations — `peer-port: 0`
/// becomes absent (both mean 179), and identical advertisements of one pool (possible in the
/// legacy config when they differ only as written, e.g. `localpref: 0` and none) count once.
pub fn expected_config(config: &Config, migration: &Migration) -> Config {
    let pools = migration.pool_renames();
    let bfds: BTreeMap<String, String> = migration
        .renames
        .iter()
        .filter(|r| r.kind == Kind::BFDProfile)
        .map(|r| (r.from.clone(), r.to.clone()))
        .collect();
    let mut c = config.clone();
    for p in &mut c.peers {
        if p.peer_port == Some(0) {
            p.peer_port = None;
        }
        if let Some(b) = &mut p.bfd_profile {
            *b = lookup(&bfds, b);
        }
    }
    for p in &mut c.pools {
        let new = lookup(&pools, &p.name);
        if new != p.name {
            p.aliases = vec![std::mem::replace(&mut p.name, new)];
        }
        let mut ads: Vec<config::BgpAdvertisement> = Vec::new();
        for ad in p.bgp_advertisements.drain(..) {
            if !ads.contains(&ad) {
                ads.push(ad);
            }
        }
        p.bgp_advertisements = ads;
    }
    for b in &mut c.bfd_profiles {
        b.name = lookup(&bfds, &b.name);
    }
    c
}

// ---------------------------------------------------------------------------------------------
// The whole conversion, as the command line runs it (still pure: text in, text out).

/// A named text (file contents).
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// How messages name it (the path as given, or `<stdin>`).
    pub name: &'a str,
    /// The text.
    pub text: &'a str,
}

/// One conversion.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The legacy config.
    pub input: Source<'a>,
    /// Parse the input as the bare `config` payload, without form detection.
    pub only_data: bool,
    /// Target namespace (default: the ConfigMap's, else `metallb-system`).
    pub namespace: Option<&'a str>,
    /// Emit passwords as Secrets.
    pub password_secrets: bool,
    /// A Services dump to patch.
    pub services: Option<Source<'a>>,
}

/// Something to tell the user besides the YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A pool or BFD profile got a new name.
    Renamed(Rename),
    /// A Service annotation is rewritten.
    Patched {
        /// `namespace/name`.
        service: String,
        /// The annotation.
        annotation: String,
        /// Old pool name.
        from: String,
        /// New pool name.
        to: String,
    },
    /// Worth knowing, changes nothing.
    Warning(String),
}

impl Note {
    /// Whether the note is a change `--check` reports (a rename or a patch).
    pub fn is_change(&self) -> bool {
        !matches!(self, Note::Warning(_))
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Renamed(r) => write!(f, "rename {r}"),
            Note::Patched {
                service,
                annotation,
                from,
                to,
            } => {
                write!(
                    f,
                    "patch Service {service}: {annotation} {from:?} -> {to:?}"
                )
            }
            Note::Warning(w) => write!(f, "warning: {w}"),
        }
    }
}

/// A successful conversion.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The loaded input.
    pub loaded: Loaded,
    /// The namespace used.
    pub namespace: String,
    /// The objects (Service patches included, last).
    pub migration: Migration,
    /// Renames, patches and warnings, in that order.
    pub notes: Vec<Note>,
    /// The YAML to write.
    pub yaml: String,
}

impl Outcome {
    /// Whether anything is renamed (what `--check` exits 2 for).
    pub fn has_changes(&self) -> bool {
        self.notes.iter().any(Note::is_change)
    }

    /// Whether the output carries a password (plain or in a Secret).
    pub fn has_secrets(&self) -> bool {
        self.loaded
            .config
            .peers
            .iter()
            .any(|p| p.password.is_some())
    }
}

/// Why a conversion failed; the message starts with the name of the file at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input is not a valid legacy config (the controller's own error).
    #[error("{input}: {error}")]
    Config {
        /// Input name.
        input: String,
        /// The parser's located error.
        error: ConfigError,
    },
    /// The config is valid but cannot be expressed as CRDs.
    #[error("{input}: {error}")]
    Migrate {
        /// Input name.
        input: String,
        /// Why.
        error: MigrateError,
    },
    /// The Services dump cannot be read.
    #[error("{file}: {error}")]
    Services {
        /// File name.
        file: String,
        /// Why.
        error: services::ServicesError,
    },
}

/// Describe the input form for the header.
fn describe(form: &InputForm) -> String {
    match form {
        InputForm::Payload => "bare config payload".into(),
        InputForm::HelmValues => "Helm values, configInline".into(),
        InputForm::ConfigMap {
            name, namespace, ..
        } => format!(
            "ConfigMap {}/{}",
            namespace.as_deref().unwrap_or("<no namespace>"),
            name.as_deref().unwrap_or("<no name>")
        ),
    }
}

/// Load, validate, migrate, plan Service patches and render.
pub fn convert(req: &Request<'_>) -> Result<Outcome, Error> {
    let input = req.input.name.to_string();
    let loaded = if req.only_data {
        let config = config::parse_payload(req.input.text).map_err(|error| Error::Config {
            input: input.clone(),
            error,
        })?;
        Loaded {
            config,
            form: InputForm::Payload,
            payload: req.input.text.to_string(),
            sha256: config::input::sha256_hex(req.input.text.as_bytes()),
        }
    } else {
        config::load(req.input.text).map_err(|error| Error::Config {
            input: input.clone(),
            error,
        })?
    };
    let namespace = match (req.namespace, &loaded.form) {
        (Some(ns), _) => ns.to_string(),
        (
            None,
            InputForm::ConfigMap {
                namespace: Some(ns),
                ..
            },
        ) => ns.clone(),
        _ => DEFAULT_NAMESPACE.to_string(),
    };
    let opts = Options {
        namespace: namespace.clone(),
        password_secrets: req.password_secrets,
    };
    let mut migration = migrate(&loaded.config, &opts).map_err(|error| Error::Migrate {
        input: input.clone(),
        error,
    })?;

    let mut notes: Vec<Note> = migration
        .renames
        .iter()
        .cloned()
        .map(Note::Renamed)
        .collect();
    let mut warnings = Vec::new();
    if migration.resources.is_empty() {
        warnings.push("the config defines nothing (no peers, pools, BFD profiles or communities): the output has no objects".to_string());
    }
    if !req.password_secrets {
        for (i, p) in loaded.config.peers.iter().enumerate() {
            if p.password.is_some() {
                warnings.push(format!(
                    "BGPPeer \"peer{}\" carries its password in plain text (as the ConfigMap did); --password-secrets moves it into a Secret",
                    i + 1
                ));
            }
        }
    }
    if let Some(svc) = req.services {
        let (svcs, skipped) = services::parse(svc.text).map_err(|error| Error::Services {
            file: svc.name.to_string(),
            error,
        })?;
        if skipped > 0 {
            warnings.push(format!(
                "{}: ignored {skipped} object(s) that are not Services",
                svc.name
            ));
        }
        let (patches, unknown) =
            services::plan(&svcs, &migration.pool_renames(), &migration.pool_names());
        for p in &patches {
            for (annotation, (from, to)) in &p.annotations {
                notes.push(Note::Patched {
                    service: format!("{}/{}", p.namespace, p.name),
                    annotation: annotation.clone(),
                    from: from.clone(),
                    to: to.clone(),
                });
            }
        }
        for u in unknown {
            warnings.push(format!(
                "Service {}: {} names pool {:?}, which the config does not define",
                u.service, u.annotation, u.pool
            ));
        }
        migration
            .resources
            .extend(patches.into_iter().map(Resource::ServicePatch));
    }
    notes.extend(warnings.into_iter().map(Note::Warning));

    let mut header = vec![
        format!(
            "metallb.io objects generated by metallb-migrate from {input} ({}).",
            describe(&loaded.form)
        ),
        format!(
            "sha256 of {input}: {}",
            config::input::sha256_hex(req.input.text.as_bytes())
        ),
        format!("sha256 of the config payload: {}", loaded.sha256),
    ];
    if let Some(svc) = req.services {
        header.push(format!(
            "sha256 of {}: {}",
            svc.name,
            config::input::sha256_hex(svc.text.as_bytes())
        ));
    }
    for r in &migration.renames {
        header.push(format!("renamed {r}"));
    }
    if migration
        .resources
        .iter()
        .any(|r| matches!(r, Resource::ServicePatch(_)))
    {
        header.push(
            "The Service objects at the end only rewrite pool annotations: apply them when the new controller takes over (metallb-migrate --help)."
                .into(),
        );
    }
    let yaml = emit::documents(&header, &migration.to_values());
    Ok(Outcome {
        loaded,
        namespace,
        migration,
        notes,
        yaml,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            namespace: DEFAULT_NAMESPACE.into(),
            password_secrets: false,
        }
    }

    fn run(payload: &str) -> Result<Migration, MigrateError> {
        migrate(&config::parse_payload(payload).unwrap(), &opts())
    }

    fn kinds_and_names(m: &Migration) -> Vec<(String, String)> {
        m.to_values()
            .iter()
            .map(|v| {
                (
                    v["kind"].as_str().unwrap_or_default().into(),
                    v["metadata"]["name"].as_str().unwrap_or_default().into(),
                )
            })
            .collect()
    }

    const MIXED: &str = "peers:\n- {my-asn: 1, peer-asn: 2, peer-address: 10.0.0.1}\n- {my-asn: 1, peer-asn: 2, peer-address: 10.0.0.2, hold-time: 120s}\n\
        bgp-communities: {b: '1:2', a: '3:4'}\n\
        address-pools:\n- {name: l2a, protocol: layer2, addresses: [10.1.0.0/24]}\n\
        - {name: bgp1, protocol: bgp, addresses: [10.2.0.0/24], bgp-advertisements: [{localpref: 5}, {communities: [a]}]}\n\
        - {name: bgp2, protocol: bgp, addresses: [10.3.0.0/24]}\n- {name: l2b, protocol: layer2, addresses: [10.4.0.0/24]}\n";

    #[test]
    fn emits_in_upstream_kind_order_with_running_counters() {
        let m = run(MIXED).unwrap();
        let got = kinds_and_names(&m);
        let want: Vec<(String, String)> = [
            ("BGPPeer", "peer1"),
            ("BGPPeer", "peer2"),
            ("IPAddressPool", "l2a"),
            ("IPAddressPool", "bgp1"),
            ("IPAddressPool", "bgp2"),
            ("IPAddressPool", "l2b"),
            ("BGPAdvertisement", "bgpadvertisement1"),
            ("BGPAdvertisement", "bgpadvertisement2"),
            ("BGPAdvertisement", "bgpadvertisement3"),
            ("L2Advertisement", "l2advertisement1"),
            ("L2Advertisement", "l2advertisement2"),
            ("Community", "communities"),
        ]
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect();
        assert_eq!(got, want);
        let v = m.to_values();
        assert_eq!(v[0]["spec"]["holdTime"], "1m30s");
        assert_eq!(v[1]["spec"]["holdTime"], "2m0s");
        assert!(v[0]["spec"].get("keepaliveTime").is_none());
        assert_eq!(v[8]["spec"]["ipAddressPools"][0], "bgp2");
        assert_eq!(v[11]["spec"]["communities"][0]["name"], "a");
        assert!(
            v.iter()
                .all(|d| d["metadata"]["namespace"] == DEFAULT_NAMESPACE)
        );
    }

    #[test]
    fn renames_follow_into_references() {
        let m = run("peers:\n- {my-asn: 1, peer-asn: 2, peer-address: 10.0.0.1, bfd-profile: Slow_BFD}\n\
            bfd-profiles:\n- {name: Slow_BFD}\naddress-pools:\n- {name: Prod_Pool, protocol: bgp, addresses: [10.0.0.0/24]}\n")
        .unwrap();
        let v = m.to_values();
        assert_eq!(v[0]["spec"]["bfdProfile"], "slow-bfd");
        assert_eq!(v[1]["metadata"]["name"], "prod-pool");
        assert_eq!(v[2]["spec"]["ipAddressPools"][0], "prod-pool");
        assert_eq!(v[3]["metadata"]["name"], "slow-bfd");
        assert_eq!(m.renames.len(), 2);
        assert_eq!(
            m.renames[0].to_string(),
            "IPAddressPool \"Prod_Pool\" -> \"prod-pool\" (uppercase letters, characters not allowed in Kubernetes names ('_'))"
        );
    }

    #[test]
    fn collisions_are_errors() {
        let e = run("address-pools:\n- {name: Pool_A, protocol: layer2, addresses: [10.0.0.0/24]}\n- {name: pool-a, protocol: layer2, addresses: [10.0.1.0/24]}\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "address pool #1 \"Pool_A\" and address pool #2 \"pool-a\" would both become IPAddressPool \"pool-a\": rename one of them in the config"
        );
    }

    #[test]
    fn values_the_crds_cannot_hold_are_errors() {
        let e =
            run("peers:\n- {my-asn: 1, peer-asn: 2, peer-address: 10.0.0.1, peer-port: 17000}\n")
                .unwrap_err();
        assert!(
            e.to_string().contains("peer-port 17000 cannot be migrated"),
            "{e}"
        );
        let e = run("address-pools:\n- {name: all, protocol: bgp, addresses: [0.0.0.0/0], bgp-advertisements: [{aggregation-length: 0}]}\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("aggregation-length 0 cannot be migrated"),
            "{e}"
        );
    }

    #[test]
    fn password_secrets_replace_plain_passwords() {
        let cfg = config::parse_payload(
            "peers:\n- {my-asn: 1, peer-asn: 2, peer-address: 10.0.0.1, password: 'yes'}\n",
        )
        .unwrap();
        let m = migrate(
            &cfg,
            &Options {
                namespace: "lb".into(),
                password_secrets: true,
            },
        )
        .unwrap();
        let v = m.to_values();
        assert_eq!(v[0]["kind"], "Secret");
        assert_eq!(v[0]["type"], "kubernetes.io/basic-auth");
        assert_eq!(v[0]["stringData"]["password"], "yes");
        assert_eq!(
            v[1]["spec"]["passwordSecret"],
            serde_json::json!({"name": "peer1-password", "namespace": "lb"})
        );
        assert!(v[1]["spec"].get("password").is_none());
    }

    #[test]
    fn invalid_namespace_is_rejected() {
        let cfg = Config::default();
        let e = migrate(
            &cfg,
            &Options {
                namespace: "Metallb".into(),
                password_secrets: false,
            },
        )
        .unwrap_err();
        assert!(matches!(e, MigrateError::InvalidNamespace(_)));
    }

    #[test]
    fn reading_back_gives_the_expected_config() {
        let cfg = config::parse_payload(MIXED).unwrap();
        let m = migrate(&cfg, &opts()).unwrap();
        let docs: Vec<config::crd::Document> = m
            .resources
            .iter()
            .filter_map(|r| {
                if let Resource::Crd(o) = r {
                    Some(config::crd::Document::Crd(o.clone()))
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(
            config::crd::read_config(&docs).unwrap(),
            expected_config(&cfg, &m)
        );
    }
}
