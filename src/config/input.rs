//! The three input forms users feed, and the config identity.
//!
//! - the bare legacy payload (the value of `data.config`);
//! - a whole ConfigMap manifest (`kind: ConfigMap`, key `config`), e.g. from
//!   `kubectl get cm config -n metallb-system -o yaml`;
//! - Helm values of the 0.10–0.12 chart carrying the config inline under `configInline`.
//!
//! CRD-shaped inputs (metallb.io objects, CRD-style Helm values) are recognised and rejected
//! with an error that says so, instead of a confusing "unknown field". The identity of a config
//! is the hex sha256 of the exact payload bytes (the hot-reload trigger). Pure.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::{DuplicateKeyPolicy, Options, Spanned};
use sha2::{Digest, Sha256};

use super::Config;
use super::error::{ConfigError, ErrorKind, Pos, Result};
use super::legacy::{RawConfig, SStr};
use super::parse::{from_raw, pos_of};

/// Which form the input had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputForm {
    /// The bare `config` payload.
    Payload,
    /// A ConfigMap manifest.
    ConfigMap {
        /// `metadata.name`, if present.
        name: Option<String>,
        /// `metadata.namespace`, if present.
        namespace: Option<String>,
        /// Whether `data.config` was present (absent means an empty config).
        has_config_key: bool,
    },
    /// Helm values with `configInline`.
    HelmValues,
}

/// A parsed input: the typed config, its form, the payload and its identity.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The typed config.
    pub config: Config,
    /// The input form.
    pub form: InputForm,
    /// The payload text the config was read from.
    pub payload: String,
    /// Hex sha256 of `payload`.
    pub sha256: String,
}

/// Hex sha256 of the payload bytes.
pub fn sha256_hex(payload: &[u8]) -> String {
    Sha256::digest(payload)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// YAML options matching yaml.v2 `UnmarshalStrict`: duplicate keys are errors, YAML 1.1
/// booleans and leading-zero octal integers are read.
pub(crate) fn yaml_options() -> Options {
    let mut o = Options::default();
    o.duplicate_keys = DuplicateKeyPolicy::Error;
    o.legacy_octal_numbers = true;
    o.strict_booleans = false;
    o
}

/// Render a serde-saphyr error as one located line.
fn yaml_error(e: &serde_saphyr::Error) -> ConfigError {
    let pos = e.location().filter(|l| l.line() > 0).map(|l| Pos {
        line: l.line(),
        column: l.column(),
    });
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // Drop serde-saphyr's own "line N column M: " prefix; we print the position at the end.
    let msg = match first.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") && head.contains(" column ") => rest,
        _ => first,
    };
    let mut msg = msg.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    if let Some(i) = msg.find(" at line ") {
        msg.truncate(i);
    }
    for (from, to) in [
        (
            "cannot deserialize null into string; use Option<String>",
            "a string is required here, not null",
        ),
        ("expected string scalar", "expected a string here"),
        (
            "expected mapping start",
            "expected a mapping (key: value) here",
        ),
        ("out of range for u32", "out of range 0-4294967295"),
        ("out of range for u16", "out of range 0-65535"),
        ("out of range for i64", "out of range"),
    ] {
        msg = msg.replace(from, to);
    }
    if msg.starts_with("multiple YAML documents") {
        msg = "the config holds more than one YAML document; MetalLB ignored every document after the first, metallb-rs refuses to drop configuration silently: remove the extra document".to_string();
    }
    ConfigError::doc(ErrorKind::Yaml(msg), pos)
}

/// Parse a bare `config` payload (the value of `data.config`).
pub fn parse_payload(text: &str) -> Result<Config> {
    from_raw(&decode_raw(text)?)
}

/// Strictly decode a bare payload into the raw model.
pub fn decode_raw(text: &str) -> Result<RawConfig> {
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    match serde_saphyr::from_str_with_options::<Option<RawConfig>>(text, yaml_options()) {
        Ok(raw) => Ok(raw.unwrap_or_default()),
        Err(e) => {
            let err = yaml_error(&e);
            // Retry once on the first document only (never recursively: a position at or
            // past the end of the text must not loop).
            match single_document(text, &err) {
                Some(first) if first.len() < text.len() => {
                    serde_saphyr::from_str_with_options::<Option<RawConfig>>(first, yaml_options())
                        .map(Option::unwrap_or_default)
                        .map_err(|e| yaml_error(&e))
                }
                _ => Err(err),
            }
        }
    }
}

/// When `err` is serde-saphyr's multi-document error and every document after the first is
/// empty (a trailing `---`, comments), the first document's text. MetalLB's yaml.v2 silently
/// ignored later documents even when they held configuration; we accept only empty ones and
/// reject the rest with a clear error (compat/README.md).
fn single_document<'a>(text: &'a str, err: &ConfigError) -> Option<&'a str> {
    let ErrorKind::Yaml(msg) = &err.kind else {
        return None;
    };
    if !msg.contains("more than one YAML document") {
        return None;
    }
    let line = usize::try_from(err.pos?.line).ok()?;
    let cut: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let (first, rest) = text.split_at(cut);
    let docs: Vec<Option<serde_json::Value>> =
        serde_saphyr::from_multiple_with_options(rest, yaml_options()).ok()?;
    docs.iter().all(Option::is_none).then_some(first)
}

#[derive(Deserialize)]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct ConfigMapDoc {
    metadata: Option<Meta>,
    data: Option<BTreeMap<String, SStr>>,
}

#[derive(Deserialize)]
struct HelmDoc {
    #[serde(rename = "configInline")]
    config_inline: Option<Spanned<serde_json::Value>>,
}

/// Helm values: every other key of the chart is ignored (not flattened, so the positions of
/// the inline config survive).
#[derive(Deserialize)]
struct HelmInline {
    #[serde(rename = "configInline")]
    config_inline: Option<RawConfig>,
}

/// Keys of CRD-shaped values (lb-metallb-helm style and the 0.13+ chart).
const CRD_KEYS: &[&str] = &[
    "ipaddresspools",
    "ipAddressPools",
    "IPAddressPool",
    "l2advertisements",
    "bgpadvertisements",
    "bgppeers",
];

/// Find a CRD-shaped key within the first levels of a YAML mapping; returns its path.
fn find_crd_key(v: &serde_json::Value, path: &str, depth: usize) -> Option<String> {
    let map = v.as_object()?;
    for (k, child) in map {
        let p = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        if CRD_KEYS.contains(&k.as_str()) {
            return Some(p);
        }
        if depth > 0
            && let Some(found) = find_crd_key(child, &p, depth - 1)
        {
            return Some(found);
        }
    }
    None
}

fn shape(msg: String) -> ConfigError {
    ConfigError::doc(ErrorKind::InputShape(msg), None)
}

/// Load any supported input form, parse and validate it.
pub fn load(text: &str) -> Result<Loaded> {
    // The common case, a bare payload, is decoded once. Only when the strict decode fails do
    // we look at the document's shape, to route it or to explain what it is.
    let strict_err = match decode_raw(text) {
        Ok(raw) => {
            return Ok(Loaded {
                config: from_raw(&raw)?,
                form: InputForm::Payload,
                payload: text.to_string(),
                sha256: sha256_hex(text.as_bytes()),
            });
        }
        Err(e) => e,
    };
    // Classify with a loose read (still rejecting duplicate keys and bad syntax).
    let loose: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|e| yaml_error(&e))?
    };
    let obj = loose.as_object();
    let get = |k: &str| obj.and_then(|o| o.get(k));
    let kind = get("kind").and_then(|k| k.as_str());
    let api = get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or_default();

    if kind == Some("ConfigMap") {
        let doc: ConfigMapDoc = serde_saphyr::from_str_with_options(text, yaml_options())
            .map_err(|e| yaml_error(&e))?;
        let (name, namespace) = doc
            .metadata
            .map(|m| (m.name, m.namespace))
            .unwrap_or_default();
        let cfg = doc.data.as_ref().and_then(|d| d.get("config"));
        let payload = cfg.map(|s| s.value.clone()).unwrap_or_default();
        let config = match parse_embedded(&payload, cfg, text) {
            Ok(c) => c,
            Err(e) => {
                return Err(ConfigError {
                    field: e
                        .field
                        .clone()
                        .or_else(|| Some("data.config".into()))
                        .filter(|_| e.object.is_some()),
                    ..e
                });
            }
        };
        let sha256 = sha256_hex(payload.as_bytes());
        return Ok(Loaded {
            config,
            form: InputForm::ConfigMap {
                name,
                namespace,
                has_config_key: cfg.is_some(),
            },
            payload,
            sha256,
        });
    }
    if let Some(kind) = kind {
        if api.starts_with("metallb.io/") {
            return Err(shape(format!(
                "input is a metallb.io {kind} object (a CRD), not a legacy config: legacy configs are the data.config key of the MetalLB ConfigMap; CRD objects are applied with kubectl as they are"
            )));
        }
        return Err(shape(format!(
            "input is a Kubernetes {kind} object, expected a ConfigMap (kubectl get configmap config -n metallb-system -o yaml), its bare data.config payload, or Helm values with configInline"
        )));
    }
    if let Some(path) = find_crd_key(&loose, "", 3) {
        return Err(shape(format!(
            "input is CRD-shaped ({path}): it describes metallb.io objects (IPAddressPool, L2Advertisement, BGPAdvertisement, BGPPeer) for MetalLB 0.13+, not the legacy ConfigMap config; there is nothing to convert, apply those objects with kubectl (see manifests/migration-crds/ for the definitions)"
        )));
    }
    if let Some(cm) = get("existingConfigMap")
        .and_then(|v| v.as_str())
        .filter(|v| !v.is_empty())
    {
        return Err(shape(format!(
            "these Helm values use existingConfigMap {cm:?}: the config lives in that ConfigMap, not in the values; pass it instead (kubectl get configmap {cm} -n metallb-system -o yaml)"
        )));
    }
    if get("configInline").is_some() {
        let doc: HelmDoc = serde_saphyr::from_str_with_options(text, yaml_options())
            .map_err(|e| yaml_error(&e))?;
        return match doc.config_inline.map(|s| s.value) {
            // The chart renders configInline with toYaml: a block string would become a quoted
            // string in the ConfigMap, which MetalLB then fails to parse.
            Some(serde_json::Value::String(_)) => Err(shape(
                "configInline is a string: the MetalLB chart expects a map (it renders it with toYaml), so this would deploy a broken ConfigMap; write configInline as YAML, without the |".to_string(),
            )),
            Some(serde_json::Value::Null) | None => Ok(Loaded {
                config: Config::default(),
                form: InputForm::HelmValues,
                payload: String::new(),
                sha256: sha256_hex(b""),
            }),
            Some(_) => {
                // Strict decode of the inline map in place, so positions point into the file.
                let inline: HelmInline = serde_saphyr::from_str_with_options(text, yaml_options())
                    .map_err(|e| yaml_error(&e))?;
                let raw = inline.config_inline.unwrap_or_default();
                let config = from_raw(&raw)?;
                // The chart renders the map with toYaml; our identity is a canonical rendering.
                let payload = serde_saphyr::to_string(&get("configInline"))
                    .map_err(|e| shape(format!("cannot render configInline: {e}")))?;
                let sha256 = sha256_hex(payload.as_bytes());
                Ok(Loaded { config, form: InputForm::HelmValues, payload, sha256 })
            }
        };
    }
    if obj.is_some_and(|o| o.get("manifests").and_then(|m| m.get("metallb")).is_some()) {
        return Err(shape(
            "input is Spectro Cloud lb-metallb pack values (manifests.metallb), not the legacy config: pass the ConfigMap the pack renders (kubectl get configmap config -n metallb-system -o yaml)".to_string(),
        ));
    }
    Err(strict_err)
}

/// Parse a payload that sits inside another YAML document; when it is a literal block
/// scalar (`config: |`), shift error positions so they point into the outer file.
fn parse_embedded(payload: &str, at: Option<&SStr>, outer: &str) -> Result<Config> {
    parse_payload(payload).map_err(|e| {
        // serde-saphyr places a block scalar at its first content character.
        let Some(p) = at.and_then(pos_of) else {
            return e;
        };
        let line_text = outer
            .lines()
            .nth((p.line as usize).saturating_sub(1))
            .unwrap_or("");
        let after: String = line_text
            .chars()
            .skip((p.column as usize).saturating_sub(1))
            .collect();
        let first = payload.lines().next().unwrap_or("");
        if first.is_empty() || after != first {
            return e;
        }
        e.shift_lines(p.line - 1, p.column - 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_of_payload_bytes() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn configmap_and_payload_give_same_config_and_hash() {
        let payload =
            "address-pools:\n- name: a\n  protocol: layer2\n  addresses: [192.0.2.0/28]\n";
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config\n  namespace: metallb-system\ndata:\n  config: |\n{}",
            payload
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        let a = load(payload).unwrap();
        let b = load(&cm).unwrap();
        assert_eq!(a.config, b.config);
        assert_eq!(a.sha256, b.sha256);
        assert!(matches!(
            b.form,
            InputForm::ConfigMap {
                has_config_key: true,
                ..
            }
        ));
    }

    #[test]
    fn errors_inside_a_configmap_point_into_the_file() {
        let cm = "kind: ConfigMap\ndata:\n  config: |\n    address-pools:\n    - name: a\n      protocol: l2\n      addresses: [192.0.2.0/28]\n";
        let e = load(cm).unwrap_err();
        assert_eq!(
            e.pos,
            Some(Pos {
                line: 6,
                column: 17
            }),
            "{e}"
        );
    }

    #[test]
    fn multi_document_inputs_never_loop() {
        // Found by fuzzing: a multi-document error whose position does not shrink the text.
        for text in [
            "a: 1\n---",
            "---\n---",
            "--- \n--- x",
            "peers: []\n---\n---\n",
            "\n---\n...\n---\n",
        ] {
            let _ = load(text);
            let _ = decode_raw(text);
        }
        assert!(decode_raw("peers: []\n---\n# only a comment\n").is_ok());
        assert!(decode_raw("peers: []\n---\nvrf: x\n").is_err());
    }

    #[test]
    fn crd_shaped_values_are_recognised() {
        let v = "charts:\n  metallb-full:\n    configuration:\n      ipaddresspools:\n        first: {}\n";
        let e = load(v).unwrap_err();
        assert!(
            e.to_string()
                .contains("CRD-shaped (charts.metallb-full.configuration.ipaddresspools)"),
            "{e}"
        );
    }
}
