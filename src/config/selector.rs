//! Node selectors of `peers[].node-selectors[]` with Kubernetes label-selector semantics. Pure.
//!
//! MetalLB converts each element into a `metav1.LabelSelector` and then a `labels.Selector`,
//! so Kubernetes validation applies: operators `In`, `NotIn`, `Exists`, `DoesNotExist`
//! (case-sensitive); `In`/`NotIn` need values, `Exists`/`DoesNotExist` take none; keys and
//! values follow label syntax. A peer applies to a node if **any** selector matches; inside one
//! selector every label and expression must match; an empty selector matches every node.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// A label-selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Operator {
    /// Label value is one of the values.
    In,
    /// Label absent or its value is none of the values.
    NotIn,
    /// Label present.
    Exists,
    /// Label absent.
    DoesNotExist,
}

impl Operator {
    /// Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        }
    }

    /// Parse the Kubernetes spelling (case-sensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            _ => return None,
        })
    }
}

/// One `match-expressions[]` requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: Operator,
    /// Values (In/NotIn only).
    pub values: Vec<String>,
}

/// One element of `node-selectors`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeSelector {
    /// `match-labels`.
    pub match_labels: BTreeMap<String, String>,
    /// `match-expressions`, in order.
    pub match_expressions: Vec<Requirement>,
}

impl NodeSelector {
    /// Whether a node with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let have = labels.get(&r.key);
                match r.operator {
                    Operator::In => have.is_some_and(|v| r.values.contains(v)),
                    Operator::NotIn => have.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => have.is_some(),
                    Operator::DoesNotExist => have.is_none(),
                }
            })
    }
}

/// Whether any of `selectors` selects the node (empty list: every node).
pub fn any_matches(selectors: &[NodeSelector], labels: &BTreeMap<String, String>) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| s.matches(labels))
}

impl fmt::Display for NodeSelector {
    /// Kubernetes selector string form, e.g. `bar in (quux),foo=bar`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<(String, String)> = self
            .match_labels
            .iter()
            .map(|(k, v)| (k.clone(), format!("{k}={v}")))
            .collect();
        for r in &self.match_expressions {
            let s = match r.operator {
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            };
            parts.push((r.key.clone(), s));
        }
        parts.sort();
        let joined: Vec<_> = parts.into_iter().map(|(_, s)| s).collect();
        f.write_str(&joined.join(","))
    }
}

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Validate a label key (`[prefix/]name`).
pub fn check_label_key(key: &str) -> Result<(), String> {
    let ok = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(key),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid label key {key:?}: must be an optional DNS subdomain prefix and '/', then 1-63 characters [A-Za-z0-9-_.] starting and ending with an alphanumeric character"
        ))
    }
}

/// Validate a label value (may be empty).
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name_part(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {value:?}: must be empty or 1-63 characters [A-Za-z0-9-_.] starting and ending with an alphanumeric character"
        ))
    }
}

/// Validate one requirement the way Kubernetes `NewRequirement` does.
pub fn check_requirement(r: &Requirement) -> Result<(), String> {
    check_label_key(&r.key)?;
    match r.operator {
        Operator::In | Operator::NotIn if r.values.is_empty() => Err(format!(
            "operator {} needs at least one value",
            r.operator.as_str()
        )),
        Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
            Err(format!("operator {} takes no values", r.operator.as_str()))
        }
        _ => r.values.iter().try_for_each(|v| check_label_value(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel() -> NodeSelector {
        NodeSelector {
            match_labels: labels(&[("foo", "bar")]),
            match_expressions: vec![Requirement {
                key: "bar".into(),
                operator: Operator::In,
                values: vec!["quux".into()],
            }],
        }
    }

    #[test]
    fn selector_string_matches_kubernetes() {
        assert_eq!(sel().to_string(), "bar in (quux),foo=bar");
    }

    #[test]
    fn matching_is_and_within_or_across() {
        let s = sel();
        assert!(s.matches(&labels(&[("foo", "bar"), ("bar", "quux")])));
        assert!(!s.matches(&labels(&[("foo", "bar")])));
        assert!(any_matches(&[], &labels(&[])));
        assert!(any_matches(
            &[s.clone(), NodeSelector::default()],
            &labels(&[])
        ));
        assert!(!any_matches(&[s], &labels(&[])));
    }

    #[test]
    fn validates_label_syntax() {
        assert!(check_label_key("kubernetes.io/hostname").is_ok());
        assert!(check_label_key("foo").is_ok());
        assert!(check_label_key("-foo").is_err());
        assert!(check_label_key("Foo.io/x").is_err());
        assert!(check_label_key("a/b/c").is_err());
        assert!(check_label_key("").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("a b").is_err());
        assert!(check_label_value(&"a".repeat(64)).is_err());
    }
}
