//! Stable multi-document YAML. Pure.
//!
//! Every object is turned into a JSON value, its mapping keys sorted (byte order, as
//! configmaptocrs and `kubectl get -o yaml` print them), integral floats printed as integers
//! (the CRD schema types carry `f64` bounds), and rendered with serde-saphyr. serde-saphyr
//! quotes every string a YAML 1.1 reader (yaml.v2, kubectl) would take for something else:
//! `"64512:1"` (base 60), `"yes"`, `"0x10"`, `"1_000"`. Documents are written one after the
//! other, each introduced by `---`; nothing depends on hash-map order, the clock or the
//! environment, so the same input always gives the same bytes.

use serde_json::{Map, Number, Value};

/// Sort mapping keys recursively and turn integral floats into integers.
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), canonical(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        Value::Number(n) => Value::Number(integral(n)),
        other => other.clone(),
    }
}

fn integral(n: &Number) -> Number {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
            // Exact: |f| < 2^53.
            Number::from(f as i64)
        }
        _ => n.clone(),
    }
}

/// Render one value as a YAML document body (no `---`), keys sorted.
pub fn to_yaml(v: &Value) -> String {
    let opts = serde_saphyr::ser_options! { prefer_block_scalars: false };
    // A JSON value always serializes; keep the fallback printable rather than panicking.
    serde_saphyr::to_string_with_options(&canonical(v), opts)
        .unwrap_or_else(|e| format!("# cannot render this document: {e}\n"))
}

/// Render documents after a header of comment lines: `# line` for each header line, then each
/// document introduced by `---`.
pub fn documents(header: &[String], docs: &[Value]) -> String {
    let mut out = String::new();
    for line in header {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            // A file name with a line break must not end the comment.
            out.push_str("# ");
            out.extend(line.chars().map(|c| if c.is_control() { '?' } else { c }));
            out.push('\n');
        }
    }
    for d in docs {
        out.push_str("---\n");
        out.push_str(&to_yaml(d));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_quotes_ambiguous_strings() {
        let v = json!({"spec": {"communities": ["64512:1", "no-export"], "b": 1, "a": 32.0}, "apiVersion": "x"});
        assert_eq!(
            to_yaml(&v),
            "apiVersion: x\nspec:\n  a: 32\n  b: 1\n  communities:\n  - \"64512:1\"\n  - no-export\n"
        );
    }

    #[test]
    fn keeps_odd_strings_intact() {
        let v = json!({"p": "multi\nline", "q": "yes", "r": " lead", "s": "x".repeat(120) + " y"});
        let text = to_yaml(&v);
        let back: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, v, "{text}");
    }

    #[test]
    fn documents_have_a_header_and_separators() {
        let text = documents(
            &["a\nb".into(), String::new()],
            &[json!({"k": 1}), json!({"k": 2})],
        );
        assert_eq!(text, "# a?b\n#\n---\nk: 1\n---\nk: 2\n");
    }
}
