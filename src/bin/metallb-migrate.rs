//! `metallb-migrate`: convert a legacy MetalLB ConfigMap into metallb.io CRD objects.
//!
//! Thin wrapper: arguments and behaviour live in `metallb_rs::migrate::cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    metallb_rs::migrate::cli::main()
}
