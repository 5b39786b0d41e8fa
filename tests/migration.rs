//! Walks the migration corpus in `migration/` (see `migration/README.md` for the layout).
//!
//! Every case runs twice — through the library (`migrate::convert`) and through the real
//! `metallb-migrate` binary — and both must give the golden stdout (`expected.yaml`, or
//! `expected.stdout` for `--check` cases), stderr (`expected.stderr`, empty when absent) and
//! exit status (0; 2 for `--check` with changes; 1 when there is neither expected.yaml nor
//! expected.stdout). Successful cases are also written with `-o`, failing ones must leave no
//! `-o` file behind. Every successful output is read back (`config::crd`) into the config the
//! legacy parser gave, modulo the documented renames and normalizations, and every emitted
//! metallb.io object must deserialize as the kube `CustomResource` type. The valid compat
//! corpus gets the same round trip, through the binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use clap::Parser;
use common::{check_golden, files, repo};
use metallb_rs::config::crd::{self, Document, Kind};
use metallb_rs::migrate::{self, Request, Source, cli::Args};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_metallb-migrate");

fn case_dirs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("migration"))
        .unwrap_or_else(|e| panic!("migration/: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("input.yaml").is_file())
        .collect();
    v.sort();
    v
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The command-line arguments of a case (without the input path): one per line of `args`,
/// plus `--services services.yaml` when the case has a Services dump.
fn case_args(dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = match std::fs::read_to_string(dir.join("args")) {
        Ok(t) => t
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        Err(_) => Vec::new(),
    };
    if dir.join("services.yaml").is_file() {
        args.extend(["--services".to_string(), "services.yaml".to_string()]);
    }
    args
}

/// What a run produced.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

fn from_output(o: &Output) -> Run {
    Run {
        status: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Run the case through the library, rendering streams the way `migrate::cli` does.
fn run_library(dir: &Path, args: &[String]) -> Run {
    let argv = std::iter::once("metallb-migrate".to_string())
        .chain(args.iter().cloned())
        .chain(std::iter::once("input.yaml".to_string()));
    let a =
        Args::try_parse_from(argv).unwrap_or_else(|e| panic!("{}: bad args: {e}", dir.display()));
    let input = read(&dir.join("input.yaml"));
    let services = a
        .services
        .clone()
        .flatten()
        .as_ref()
        .map(|p| (p.display().to_string(), read(&dir.join(p))));
    let req = Request {
        input: Source {
            name: "input.yaml",
            text: &input,
        },
        only_data: a.only_data,
        namespace: a.namespace.as_deref(),
        password_secrets: a.password_secrets,
        services: services.as_ref().map(|(name, text)| Source { name, text }),
    };
    match migrate::convert(&req) {
        Err(e) => Run {
            status: 1,
            stdout: String::new(),
            stderr: format!("{e}\n"),
        },
        Ok(o) => {
            let (mut stdout, mut stderr) = (String::new(), String::new());
            for n in &o.notes {
                let line = format!("{n}\n");
                if a.check && n.is_change() {
                    stdout.push_str(&line)
                } else {
                    stderr.push_str(&line)
                }
            }
            if a.check {
                Run {
                    status: if o.has_changes() { 2 } else { 0 },
                    stdout,
                    stderr,
                }
            } else {
                Run {
                    status: 0,
                    stdout: o.yaml,
                    stderr,
                }
            }
        }
    }
}

fn run_binary(dir: &Path, args: &[String], extra: &[&str]) -> Run {
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .args(extra)
        .arg("input.yaml")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{BIN}: {e}"));
    from_output(&out)
}

/// A fresh scratch directory under the target dir.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("migration")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// Read emitted YAML back and compare with the config the legacy parser gave for `input`.
fn round_trip(name: &str, input: &Source<'_>, only_data: bool, yaml: &str) -> Result<(), String> {
    let req = Request {
        input: *input,
        only_data,
        namespace: None,
        password_secrets: false,
        services: None,
    };
    let outcome = migrate::convert(&req).map_err(|e| format!("{name}: {e}"))?;
    let docs =
        common::parse_documents(yaml).map_err(|e| format!("{name}: output does not parse: {e}"))?;
    for d in &docs {
        if let Document::Crd(o) = d {
            kube_typed(o.kind(), &o.to_value())
                .map_err(|e| format!("{name}: {} {}: {e}", o.kind(), o.name))?;
        }
    }
    let back =
        crd::read_config(&docs).map_err(|e| format!("{name}: reading the output back: {e}"))?;
    let want = migrate::expected_config(&outcome.loaded.config, &outcome.migration);
    if back != want {
        return Err(format!(
            "{name}: round trip differs\n--- legacy parser\n{want:#?}\n--- read back\n{back:#?}"
        ));
    }
    Ok(())
}

/// Deserialize a manifest as the kube `CustomResource` type of its kind and back.
fn kube_typed(kind: Kind, v: &Value) -> Result<(), String> {
    use metallb_rs::k8s::crds as k;
    fn check<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Result<(), String> {
        let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        let again = serde_json::to_value(&t).map_err(|e| e.to_string())?;
        if again["spec"] != v["spec"]
            || again["apiVersion"] != v["apiVersion"]
            || again["kind"] != v["kind"]
        {
            return Err(format!("changed when typed: {again} vs {v}"));
        }
        Ok(())
    }
    match kind {
        Kind::BGPPeer => check::<k::BGPPeer>(v),
        Kind::IPAddressPool => check::<k::IPAddressPool>(v),
        Kind::BGPAdvertisement => check::<k::BGPAdvertisement>(v),
        Kind::L2Advertisement => check::<k::L2Advertisement>(v),
        Kind::BFDProfile => check::<k::BFDProfile>(v),
        Kind::Community => check::<k::Community>(v),
    }
}

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

#[test]
fn migration_corpus() {
    let dirs = case_dirs();
    assert!(dirs.len() >= 25, "only {} migration cases", dirs.len());
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let args = case_args(dir);
        let check = args.iter().any(|a| a == "--check");
        let lib = run_library(dir, &args);
        let bin = run_binary(dir, &args, &[]);
        if lib != bin {
            failures.push(format!(
                "{name}: library and binary differ\n--- library\n{lib:?}\n--- binary\n{bin:?}"
            ));
        }
        let out_file = dir.join(if check {
            "expected.stdout"
        } else {
            "expected.yaml"
        });
        let err_file = dir.join("expected.stderr");
        if update() {
            // Goldens follow the binary; the status decides which files exist.
            let _ = std::fs::remove_file(dir.join("expected.yaml"));
            let _ = std::fs::remove_file(dir.join("expected.stdout"));
            if bin.status != 1 {
                let _ = std::fs::write(&out_file, &bin.stdout);
            }
            if bin.stderr.is_empty() {
                let _ = std::fs::remove_file(&err_file);
            } else {
                let _ = std::fs::write(&err_file, &bin.stderr);
            }
        }
        let expected_out = std::fs::read_to_string(&out_file).ok();
        let want_status = match (&expected_out, check) {
            (None, _) => 1,
            (Some(s), true) if !s.is_empty() => 2,
            _ => 0,
        };
        if bin.status != want_status {
            failures.push(format!(
                "{name}: exit status {}, want {want_status}\nstderr: {}",
                bin.status, bin.stderr
            ));
        }
        if expected_out.is_some() {
            if let Err(e) = check_golden(&out_file, &bin.stdout) {
                failures.push(e);
            }
        } else if !bin.stdout.is_empty() {
            failures.push(format!(
                "{name}: a failing run printed to stdout:\n{}",
                bin.stdout
            ));
        }
        let want_err = std::fs::read_to_string(&err_file).unwrap_or_default();
        if want_err != bin.stderr {
            failures.push(format!(
                "{name}: stderr differs\n--- expected\n{want_err}\n--- actual\n{}",
                bin.stderr
            ));
        }
        if want_status == 1 && (want_err.is_empty() || !want_err.starts_with("input.yaml: ")) {
            failures.push(format!(
                "{name}: a failing case needs expected.stderr naming input.yaml"
            ));
        }

        // -o: the same bytes on success; no file at all on failure.
        if !check {
            let tmp = scratch(&name);
            let out = tmp.join("out.yaml");
            let with_o = run_binary(dir, &args, &["-o", &out.display().to_string()]);
            match (want_status, std::fs::read_to_string(&out)) {
                (0, Ok(text)) if text == bin.stdout && with_o.stdout.is_empty() => {}
                (0, r) => failures.push(format!(
                    "{name}: -o wrote {r:?} (stdout run: {} bytes)",
                    bin.stdout.len()
                )),
                (_, Ok(_)) => failures.push(format!("{name}: -o file exists after a failed run")),
                (_, Err(_)) => {}
            }
            let leftovers: Vec<_> = std::fs::read_dir(&tmp)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p != &out)
                .collect();
            if !leftovers.is_empty() {
                failures.push(format!(
                    "{name}: temporary files left behind: {leftovers:?}"
                ));
            }
        }

        if want_status == 0 && !check {
            let input = read(&dir.join("input.yaml"));
            let only_data = args.iter().any(|a| a == "--only-data");
            if let Err(e) = round_trip(
                &name,
                &Source {
                    name: "input.yaml",
                    text: &input,
                },
                only_data,
                &bin.stdout,
            ) {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) in {} cases:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}

#[test]
fn compat_valid_cases_migrate_and_read_back() {
    let mut failures = Vec::new();
    let cases = files(&repo().join("compat").join("valid"), "yaml");
    for path in &cases {
        let name = path.display().to_string();
        let out = Command::new(BIN)
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{BIN}: {e}"));
        let run = from_output(&out);
        if run.status != 0 {
            failures.push(format!(
                "{name}: exit status {}: {}",
                run.status, run.stderr
            ));
            continue;
        }
        let text = read(path);
        if let Err(e) = round_trip(
            &name,
            &Source {
                name: &name,
                text: &text,
            },
            false,
            &run.stdout,
        ) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} compat cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn stdin_input_matches_the_file_input() {
    let dir = repo().join("migration").join("fixture-b-peers");
    let input = read(&dir.join("input.yaml"));
    let mut child = Command::new(BIN)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{BIN}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("stdin: {e}"));
    }
    let run = from_output(
        &child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("{BIN}: {e}")),
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    let want = read(&dir.join("expected.yaml")).replace("input.yaml", "<stdin>");
    assert_eq!(run.stdout, want);
}

#[test]
fn failures_never_touch_an_existing_output_file() {
    let tmp = scratch("existing-output");
    let out = tmp.join("resources.yaml");
    std::fs::write(&out, "previous contents\n").unwrap_or_else(|e| panic!("{e}"));
    let input = repo()
        .join("migration")
        .join("fixture-e-full-upstream")
        .join("input.yaml");
    let run = from_output(
        &Command::new(BIN)
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(run.status, 1);
    assert_eq!(read(&out), "previous contents\n");
    let entries = std::fs::read_dir(&tmp)
        .into_iter()
        .flatten()
        .flatten()
        .count();
    assert_eq!(entries, 1, "temporary file left behind");
}

#[test]
fn unreadable_input_and_bad_usage_exit_1() {
    let run = from_output(
        &Command::new(BIN)
            .arg("/nonexistent/config.yaml")
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(run.status, 1);
    assert!(
        run.stderr
            .starts_with("/nonexistent/config.yaml: cannot read"),
        "{}",
        run.stderr
    );
    let run = from_output(
        &Command::new(BIN)
            .arg("--no-such-flag")
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(run.status, 1, "{}", run.stderr);
    let run = from_output(
        &Command::new(BIN)
            .args(["--check", "-o", "x.yaml", "in.yaml"])
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(run.status, 1, "{}", run.stderr);
    let run = from_output(
        &Command::new(BIN)
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(run.status, 0);
    assert!(run.stdout.contains("--password-secrets"));
}

#[cfg(unix)]
#[test]
fn output_with_passwords_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = scratch("private-output");
    let out = tmp.join("resources.yaml");
    let input = repo()
        .join("migration")
        .join("fixture-b-peers-password-secrets")
        .join("input.yaml");
    let run = from_output(
        &Command::new(BIN)
            .arg(&input)
            .arg("--password-secrets")
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    let mode = std::fs::metadata(&out)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_default();
    assert_eq!(mode, 0o600);
}

/// A 1,000-pool config migrates whole (timing: `cargo bench --bench migrate`, BENCHMARKS.md).
#[test]
fn thousand_pools_migrate() {
    let mut payload = String::from("address-pools:\n");
    for i in 0..1000 {
        let proto = if i % 2 == 0 { "layer2" } else { "bgp" };
        payload.push_str(&format!(
            "- name: Pool_{i}\n  protocol: {proto}\n  addresses:\n  - 10.{}.{}.0/24\n",
            i / 256,
            i % 256
        ));
    }
    let req = Request {
        input: Source {
            name: "big.yaml",
            text: &payload,
        },
        only_data: false,
        namespace: None,
        password_secrets: false,
        services: None,
    };
    let outcome = migrate::convert(&req).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcome.migration.renames.len(), 1000);
    assert_eq!(outcome.migration.resources.len(), 2000);
    // Round trip too: every pool renamed, read back under its new name.
    let docs = common::parse_documents(&outcome.yaml).unwrap_or_else(|e| panic!("{e}"));
    let back = crd::read_config(&docs).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        back,
        migrate::expected_config(&outcome.loaded.config, &outcome.migration)
    );
}
