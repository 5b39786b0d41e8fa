//! The `metallb-migrate` command line: files and streams around the pure [`super::convert`].
//!
//! The only part of `migrate` that does I/O (reads the input and the Services dump, writes
//! stdout, stderr and `-o FILE`); no kube, no tokio. Exit status: 0 success, 1 any error
//! (invalid input, a config the CRDs cannot express, unreadable files, bad usage), 2 for
//! `--check` when something would be renamed. Nothing is written on error: `-o FILE` is
//! written to a temporary file next to it and renamed into place only once complete.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use super::{Request, Source, convert};

const LONG_ABOUT: &str = "\
Convert a legacy MetalLB (0.9-0.12) configuration into the equivalent metallb.io objects
(BGPPeer, IPAddressPool, BGPAdvertisement, L2Advertisement, BFDProfile, Community), as used by
MetalLB 0.13 and later.

The input is validated by the same parser as the metallb-rs controller: anything the controller
would reject is rejected here with the same located error, exit status 1 and nothing written.

Pool and BFD profile names that are not valid Kubernetes names are renamed (each rename is
reported on stderr; --check lists them and exits 2). With --services, Services whose
metallb.universe.tf/address-pool (or metallb.io/address-pool) annotation names a renamed pool get
a patch: a partial Service object at the end of the output. Apply those while no controller is
allocating from the old pool names, e.g. scale the old controller down, apply this output with
`kubectl apply --server-side -f`, then start the new controller; a single patch can also be
applied with `kubectl patch service NAME -n NS --type merge -p '{\"metadata\":...}'`.";

/// Command-line arguments of `metallb-migrate`.
#[derive(Debug, Clone, Parser)]
#[command(name = "metallb-migrate", version, about = "Convert a legacy MetalLB ConfigMap into metallb.io CRD objects", long_about = LONG_ABOUT)]
pub struct Args {
    /// The legacy config: a ConfigMap manifest, the bare `config` payload or Helm values with
    /// configInline; `-` reads stdin.
    #[arg(value_name = "INPUT", required_unless_present = "from_cluster")]
    pub input: Option<PathBuf>,
    /// Read the live ConfigMap (kubeconfig as kubectl finds it) and migrate inside the
    /// cluster: --dry-run (default) prints the objects and what would change, --apply writes,
    /// verifies and switches `--config-source=auto` binaries over, --rollback switches back
    /// and removes what --apply wrote.
    #[arg(long, conflicts_with_all = ["input", "output", "only_data", "check"])]
    pub from_cluster: bool,
    /// With --from-cluster: write nothing (the default).
    #[arg(long, requires = "from_cluster", conflicts_with_all = ["apply", "rollback"])]
    pub dry_run: bool,
    /// With --from-cluster: server-side apply the objects, read them back, and only when they
    /// give the ConfigMap's config switch the source (ConfigMap annotation
    /// metallb-rs.io/config-source: crds).
    #[arg(long, requires = "from_cluster", conflicts_with = "rollback")]
    pub apply: bool,
    /// With --from-cluster: switch back to the ConfigMap, restore rewritten Service
    /// annotations, delete the objects --apply wrote (label app.kubernetes.io/managed-by:
    /// metallb-migrate) and nothing else.
    #[arg(long, requires = "from_cluster")]
    pub rollback: bool,
    /// With --from-cluster: the ConfigMap's name.
    #[arg(long, default_value = "config", requires = "from_cluster")]
    pub configmap: String,
    /// Write the objects to FILE instead of stdout (atomically; never on error).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Namespace of the objects [default: the ConfigMap's, else metallb-system].
    #[arg(short, long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The input is the bare `config` payload (skips form detection).
    #[arg(long)]
    pub only_data: bool,
    /// Emit each peer password as a kubernetes.io/basic-auth Secret referenced by
    /// passwordSecret, instead of a plain password field.
    #[arg(long)]
    pub password_secrets: bool,
    /// A `kubectl get svc -A -o yaml` dump: emit annotation patches for Services naming renamed
    /// pools, and warn about annotations naming pools that do not exist. With --from-cluster,
    /// no FILE: the cluster's Services are read and patched.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub services: Option<Option<PathBuf>>,
    /// Write nothing; list what would be renamed or patched and exit 2 if anything would.
    #[arg(long, conflicts_with = "output")]
    pub check: bool,
}

/// Parse the process arguments and run; usage errors exit 1 (2 is `--check`'s answer).
pub fn main() -> ExitCode {
    match Args::try_parse() {
        Ok(args) => args.run(),
        Err(e) => {
            let _ = e.print();
            ExitCode::from(if e.use_stderr() { 1 } else { 0 })
        }
    }
}

fn read_source(path: &Path, stdin: &mut dyn Read) -> Result<(String, String), String> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        stdin
            .read_to_string(&mut text)
            .map_err(|e| format!("<stdin>: cannot read: {e}"))?;
        return Ok(("<stdin>".into(), text));
    }
    let name = path.display().to_string();
    let bytes = fs::read(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{name}: not UTF-8 text"))?;
    Ok((name, text))
}

/// Write `bytes` to `path` through a temporary file in the same directory, renamed into place
/// when complete (so `path` is never left empty or partial). `private` files get mode 0600.
pub fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let result = opts.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

impl Args {
    /// Run with the process's stdin, stdout and stderr.
    pub fn run(self) -> ExitCode {
        let code = self.run_with(
            &mut io::stdin().lock(),
            &mut io::stdout().lock(),
            &mut io::stderr().lock(),
        );
        ExitCode::from(code)
    }

    /// Run with the given streams; returns the exit status.
    pub fn run_with(
        self,
        stdin: &mut dyn Read,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> u8 {
        let Self {
            input,
            output,
            namespace,
            only_data,
            password_secrets,
            services,
            check,
            from_cluster,
            dry_run: _,
            apply,
            rollback,
            configmap,
        } = self;
        let fail = |stderr: &mut dyn Write, msg: &str| {
            let _ = writeln!(stderr, "{msg}");
            1
        };
        if from_cluster {
            if matches!(services, Some(Some(_))) {
                return fail(
                    stderr,
                    "--services takes no FILE with --from-cluster: the cluster's Services are read",
                );
            }
            let req = super::cluster::Request {
                namespace: namespace.unwrap_or_else(|| super::DEFAULT_NAMESPACE.into()),
                configmap,
                services: services.is_some(),
                password_secrets,
                action: if apply {
                    super::cluster::Action::Apply
                } else if rollback {
                    super::cluster::Action::Rollback
                } else {
                    super::cluster::Action::DryRun
                },
            };
            return super::cluster::main(&req, stdout, stderr);
        }
        let (Some(input), services) = (input, services) else {
            return fail(stderr, "INPUT is required (or --from-cluster)");
        };
        let services = match services {
            Some(None) => {
                return fail(
                    stderr,
                    "--services needs a FILE (a kubectl get svc -A -o yaml dump)",
                );
            }
            Some(Some(p)) => Some(p),
            None => None,
        };
        let (input_name, input_text) = match read_source(&input, stdin) {
            Ok(s) => s,
            Err(e) => return fail(stderr, &e),
        };
        let services = match &services {
            None => None,
            Some(path) if path.as_os_str() == "-" && input.as_os_str() == "-" => {
                return fail(stderr, "--services -: stdin is already the input");
            }
            Some(path) => match read_source(path, stdin) {
                Ok(s) => Some(s),
                Err(e) => return fail(stderr, &e),
            },
        };
        let req = Request {
            input: Source {
                name: &input_name,
                text: &input_text,
            },
            only_data,
            namespace: namespace.as_deref(),
            password_secrets,
            services: services.as_ref().map(|(name, text)| Source { name, text }),
        };
        let outcome = match convert(&req) {
            Ok(o) => o,
            Err(e) => return fail(stderr, &e.to_string()),
        };
        if check {
            for note in &outcome.notes {
                let _ = if note.is_change() {
                    writeln!(stdout, "{note}")
                } else {
                    writeln!(stderr, "{note}")
                };
            }
            if let Err(e) = stdout.flush() {
                return fail(stderr, &format!("<stdout>: {e}"));
            }
            return if outcome.has_changes() { 2 } else { 0 };
        }
        for note in &outcome.notes {
            let _ = writeln!(stderr, "{note}");
        }
        let written = match &output {
            Some(path) => write_atomically(path, outcome.yaml.as_bytes(), outcome.has_secrets())
                .map_err(|e| format!("{}: cannot write: {e}", path.display())),
            None => stdout
                .write_all(outcome.yaml.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| format!("<stdout>: {e}")),
        };
        match written {
            Ok(()) => 0,
            Err(e) => fail(stderr, &e),
        }
    }
}
