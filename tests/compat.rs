//! Walks the legacy-config compatibility corpus in `compat/`.
//!
//! Every `compat/valid/*.yaml` must load, and its typed model (canonical JSON) must equal the
//! golden `*.json`; every `compat/invalid/*.yaml` must be rejected with the golden `*.err`
//! text. Independently of the goldens, each fixture's `# expect:` header (taken from upstream
//! MetalLB's tests and docs) must agree with the directory it is in and with the outcome, so a
//! golden regenerated from a wrong parser cannot silently bless it.

mod common;

use common::{check_golden, files, header, repo};
use metallb_rs::config::load;

fn canonical(loaded: &metallb_rs::config::Loaded) -> String {
    let v = serde_json::json!({
        "sha256": loaded.sha256,
        "config": loaded.config,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

#[test]
fn compat_corpus() {
    let mut failures = Vec::new();
    let mut count = 0;
    for (dir, want_ok) in [("valid", true), ("invalid", false)] {
        for path in files(&repo().join("compat").join(dir), "yaml") {
            count += 1;
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let name = path.display().to_string();
            match header(&text, "expect") {
                Some(e) if want_ok && e.starts_with("accept") => {}
                Some(e) if !want_ok && e.starts_with("reject") => {}
                other => failures.push(format!(
                    "{name}: '# expect:' header {other:?} disagrees with compat/{dir}/"
                )),
            }
            if header(&text, "source").is_none() {
                failures.push(format!("{name}: missing '# source:' header"));
            }
            let result = std::panic::catch_unwind(|| load(&text));
            let Ok(result) = result else {
                failures.push(format!("{name}: the parser panicked"));
                continue;
            };
            match (result, want_ok) {
                (Ok(loaded), true) => {
                    if let Err(e) = check_golden(&path.with_extension("json"), &canonical(&loaded))
                    {
                        failures.push(e);
                    }
                }
                (Err(e), false) => {
                    if let Err(e) = check_golden(&path.with_extension("err"), &format!("{e}\n")) {
                        failures.push(e);
                    }
                }
                (Ok(_), false) => {
                    failures.push(format!("{name}: accepted, but it must be rejected"))
                }
                (Err(e), true) => failures.push(format!("{name}: rejected: {e}")),
            }
        }
    }
    assert!(
        count >= 60,
        "the corpus has only {count} cases (want >= 60)"
    );
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
