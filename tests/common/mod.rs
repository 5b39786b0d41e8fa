//! Shared helpers for integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compare `actual` with the golden file at `path`; with `UPDATE_GOLDEN=1` rewrite it instead.
/// Returns a description of the mismatch instead of panicking, so a corpus walk can collect
/// every failure before failing.
pub fn check_golden(path: &Path, actual: &str) -> Result<(), String> {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()))?;
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "golden mismatch in {}\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        ))
    }
}

/// Sorted list of files with extension `ext` in `dir`.
pub fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// The value of a `# key: value` header comment in a fixture.
pub fn header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .filter_map(|l| l.strip_prefix('#'))
        .find_map(|l| l.trim().strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

/// Read a multi-document manifest (comments and empty documents skipped, a `kind: List`
/// flattened) into the documents the CRD reader takes, the way the binaries read objects
/// from the apiserver (`Document::from_value`, one object at a time).
pub fn parse_documents(text: &str) -> Result<Vec<metallb_rs::config::crd::Document>, String> {
    use metallb_rs::config::crd::{Document, manifest_options};
    use serde_json::Value;
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, manifest_options())
        .map_err(|e| format!("could not parse YAML: {}", e.without_snippet()))?;
    let mut flat = Vec::with_capacity(docs.len());
    for d in docs.into_iter().filter(|d| !d.is_null()) {
        match (d.get("kind").and_then(Value::as_str), d.get("items")) {
            (Some(k), Some(Value::Array(items))) if k.ends_with("List") => {
                flat.extend(items.iter().cloned())
            }
            _ => flat.push(d),
        }
    }
    flat.into_iter()
        .enumerate()
        .map(|(i, d)| Document::from_value(d).map_err(|e| format!("document #{}: {e}", i + 1)))
        .collect()
}
