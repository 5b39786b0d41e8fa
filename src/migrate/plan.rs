//! What `metallb-migrate --from-cluster` will do to one object, decided by value. Pure.
//!
//! The objects it writes carry the label [`OWNER_LABEL`]; `--rollback` deletes only objects
//! with that label. An object of the same kind and name that exists without the label belongs
//! to someone else: it is left alone when it already says what we would write, otherwise the
//! apply stops before writing anything.

use serde_json::{Value, json};

use super::emit;

/// Label on every object `metallb-migrate --from-cluster --apply` wrote.
pub const OWNER_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const OWNER: &str = "metallb-migrate";
/// Field manager of every write.
pub const FIELD_MANAGER: &str = "metallb-migrate";
/// Annotation on a Service whose pool annotation was rewritten: the old values (JSON object
/// annotation → pool), restored by `--rollback`.
pub const PREVIOUS_POOL_ANNOTATION: &str = "metallb-rs.io/previous-address-pool";
/// Annotation next to [`PREVIOUS_POOL_ANNOTATION`]: `<namespace>/<configmap>` of the MetalLB
/// install whose migration rewrote it. `--rollback` of one install restores only its own
/// Services (a second install in the cluster, e.g. a staging one, is left alone).
pub const MIGRATED_BY_ANNOTATION: &str = "metallb-rs.io/migrated-by";

/// The [`MIGRATED_BY_ANNOTATION`] value of one install.
pub fn migrated_by(namespace: &str, configmap: &str) -> String {
    format!("{namespace}/{configmap}")
}

/// Add the owner label to a manifest.
pub fn label(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert(OWNER_LABEL.into(), json!(OWNER));
        }
    }
    v
}

/// Whether an object from the cluster carries the owner label.
pub fn is_ours(v: &Value) -> bool {
    v.pointer("/metadata/labels")
        .and_then(|l| l.get(OWNER_LABEL))
        .and_then(Value::as_str)
        == Some(OWNER)
}

/// What to do with one desired object, given what the cluster has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not there: create it.
    Create,
    /// Ours and the same: nothing.
    Unchanged,
    /// Ours and different: update it; the line diff of the two renderings.
    Update(String),
    /// Someone else's and the same: leave it (and never delete it).
    Foreign,
    /// Someone else's and different: refuse; the line diff.
    Conflict(String),
}

/// The part of an object we compare: `spec` (or `stringData`/`data` of a Secret is not
/// compared: the password is written as `stringData`, read back as `data`), labels and
/// annotations we set.
fn comparable(v: &Value, desired: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(s) = v.get("spec") {
        out.insert("spec".into(), s.clone());
    }
    if let Some(t) = v.get("type") {
        out.insert("type".into(), t.clone());
    }
    // Only the metadata keys the desired object sets.
    for key in ["annotations"] {
        if let Some(want) = desired
            .pointer(&format!("/metadata/{key}"))
            .and_then(Value::as_object)
        {
            let have = v.pointer(&format!("/metadata/{key}"));
            let picked: serde_json::Map<String, Value> = want
                .keys()
                .filter_map(|k| have.and_then(|h| h.get(k)).map(|x| (k.clone(), x.clone())))
                .collect();
            out.insert(key.into(), Value::Object(picked));
        }
    }
    Value::Object(out)
}

/// Decide the step for `desired` (labelled) given the cluster's `current`.
pub fn step(desired: &Value, current: Option<&Value>) -> Step {
    let Some(current) = current else {
        return Step::Create;
    };
    let want = comparable(desired, desired);
    let have = comparable(current, desired);
    let same = want == have;
    match (is_ours(current), same) {
        (true, true) => Step::Unchanged,
        (true, false) => Step::Update(diff(&emit::to_yaml(&have), &emit::to_yaml(&want))),
        (false, true) => Step::Foreign,
        (false, false) => Step::Conflict(diff(&emit::to_yaml(&have), &emit::to_yaml(&want))),
    }
}

/// A line diff (`-` only in `old`, `+` only in `new`, two spaces in both), by longest common
/// subsequence; the texts are a few dozen lines.
pub fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(addr: &str, ours: bool) -> Value {
        let v = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u"}, "spec": {"addresses": [addr]}});
        if ours { label(v) } else { v }
    }

    #[test]
    fn steps_follow_ownership_and_content() {
        let want = pool("192.0.2.0/28", true);
        assert_eq!(step(&want, None), Step::Create);
        assert_eq!(
            step(&want, Some(&pool("192.0.2.0/28", true))),
            Step::Unchanged
        );
        assert_eq!(
            step(&want, Some(&pool("192.0.2.0/28", false))),
            Step::Foreign
        );
        match step(&want, Some(&pool("192.0.2.0/29", false))) {
            Step::Conflict(d) => {
                assert!(
                    d.contains("-   - 192.0.2.0/29") && d.contains("+   - 192.0.2.0/28"),
                    "{d}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            step(&want, Some(&pool("192.0.2.0/29", true))),
            Step::Update(_)
        ));
    }

    #[test]
    fn diff_marks_lines() {
        assert_eq!(diff("a\nb\nc\n", "a\nc\nd\n"), "  a\n- b\n  c\n+ d\n");
    }
}
