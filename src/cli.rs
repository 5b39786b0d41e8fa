//! Command-line pieces shared by the binaries, matching MetalLB 0.9–0.12 flags and env vars.

use std::fmt;
use std::str::FromStr;

/// MetalLB's `--log-level` values (0.11+): `all, debug, info, warn, error, none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Everything (maps to trace).
    All,
    /// Debug.
    Debug,
    /// Info (default).
    #[default]
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors only.
    Error,
    /// Nothing.
    None,
}

impl LogLevel {
    /// The tracing `EnvFilter` directive for this level. `debug` is MetalLB's debug: our own
    /// decisions, not every HTTP request of the client libraries (`all` shows those too).
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::All => "trace",
            LogLevel::Debug => "info,metallb_rs=debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::None => "off",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "all" => LogLevel::All,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            "none" => LogLevel::None,
            _ => {
                return Err(format!(
                    "invalid log level {s:?}: expected one of all, debug, info, warn, error, none"
                ));
            }
        })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::All => "all",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::None => "none",
        })
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line, the default, as MetalLB 0.12 logs (go-kit's JSON logger on
    /// stdout, internal/logging/logging.go:55).
    #[default]
    Json,
}

/// Install the global tracing subscriber, writing to stdout as MetalLB does (either format).
/// `RUST_LOG`, when set, overrides `level`.
pub fn init_tracing(level: LogLevel, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.directive()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_metallb_level() {
        for (s, d) in [
            ("all", "trace"),
            ("debug", "info,metallb_rs=debug"),
            ("info", "info"),
            ("warn", "warn"),
            ("error", "error"),
            ("none", "off"),
        ] {
            let l: LogLevel = s.parse().unwrap();
            assert_eq!(l.directive(), d);
            assert_eq!(l.to_string(), s);
        }
        assert!("verbose".parse::<LogLevel>().is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    /// MetalLB logs JSON unless told otherwise; `--log-format plain` stays available.
    #[test]
    fn logs_json_by_default() {
        use clap::Parser as _;
        let c = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(c.common.log_format, LogFormat::Json);
        let c = Cli::try_parse_from(["x", "--log-format", "plain"]).unwrap();
        assert_eq!(c.common.log_format, LogFormat::Plain);
    }
}

/// The flags and env vars both binaries take, as MetalLB 0.9–0.12 defines them (spec §10.2),
/// plus our `--config-file`, `--lb-class` and `--log-format`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Port for /metrics, /healthz and /readyz (MetalLB 0.10+ default; manifests pass 7472).
    #[arg(long, default_value_t = 7472)]
    pub port: u16,
    /// Name of the MetalLB ConfigMap.
    #[arg(long, default_value = "config")]
    pub config: String,
    /// Namespace of the ConfigMap (and of the speaker Pods; default: the pod's namespace, else
    /// metallb-system).
    #[arg(long, env = "METALLB_NAMESPACE")]
    pub namespace: Option<String>,
    /// Path to a kubeconfig (default: in-cluster, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Log level: all, debug, info, warn, error, none.
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: LogLevel,
    /// Log format (JSON by default, as MetalLB; `plain` for people).
    #[arg(long = "log-format", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// Read Endpoints instead of EndpointSlices (the speaker; the controller reads neither).
    /// Go-style `--disable-epslices=true` is accepted.
    #[arg(long = "disable-epslices", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub disable_epslices: bool,
    /// Accepted for compatibility (no pprof in a Rust binary).
    #[arg(long = "enable-pprof", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_pprof: bool,
    /// Read the legacy config from this file (a mounted ConfigMap key) instead of the API.
    #[arg(long = "config-file")]
    pub config_file: Option<std::path::PathBuf>,
    /// Where the config comes from: the `config` ConfigMap (MetalLB 0.9–0.12), the metallb.io
    /// objects of the namespace (MetalLB 0.13 CRDs, needs manifests/rbac-crd-mode.yaml), or
    /// `auto`: the objects once the ConfigMap's annotation metallb-rs.io/config-source says
    /// `crds` (metallb-migrate --from-cluster --apply sets it), or when IPAddressPools exist and
    /// the ConfigMap does not say `configmap`.
    #[arg(
        long = "config-source",
        env = "METALLB_CONFIG_SOURCE",
        value_enum,
        default_value = "configmap"
    )]
    pub config_source: crate::k8s::config_source::Mode,
    /// Handle only Services of this loadBalancerClass (empty: only Services without a class).
    #[arg(long = "lb-class", default_value = "")]
    pub lb_class: String,
}
