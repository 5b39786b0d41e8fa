//! Hot reload, the pure core: hash-gated acceptance of a new legacy config. No I/O.
//!
//! Both binaries feed every version of the `config` payload they see (from the API watch or
//! the mounted file) to [`Reloader::offer`]. A payload whose sha256 equals the **applied** one
//! is [`Reload::Unchanged`]. Otherwise it is parsed and validated with the one validator both
//! binaries share, then checked by the caller's `accept` (the controller asks its allocator
//! whether every IP in use still belongs to a pool; the speaker asks the same of the IPs it
//! announces). Only then is it [`Reload::Applied`]; on any failure it is
//! [`Reload::Rejected`], the last good config keeps serving and the state turns stale.
//!
//! Differences from MetalLB 0.8–0.11: a rejected payload is remembered and
//! [`Reloader::retry`] re-offers it when the blockers change (0.12 retried with a blind
//! back-off); a deleted ConfigMap keeps the last good config (as upstream) and is reported.

use std::sync::Arc;

use crate::config::crd::{self, CrdError, Document};
use crate::config::{Config, ConfigError, input::sha256_hex, parse_payload};

/// What a config source delivers: the legacy payload, or the metallb.io objects (and
/// basic-auth Secrets) of the namespace. Both are read into the same [`Config`] by the same
/// validator ([`crd::read_config`] maps the objects onto the legacy model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The `config` key of the ConfigMap (or the mounted file).
    Legacy(String),
    /// The objects, in a deterministic order.
    Objects(Arc<Vec<Document>>),
}

impl Payload {
    /// The identity the hash gate compares: sha256 of the legacy payload bytes, or of the
    /// objects' canonical JSON ([`crd::identity`]).
    pub fn identity(&self) -> String {
        match self {
            Payload::Legacy(text) => sha256_hex(text.as_bytes()),
            Payload::Objects(docs) => crd::identity(docs),
        }
    }

    /// Parse and validate.
    pub fn parse(&self) -> Result<Config, Rejection> {
        match self {
            Payload::Legacy(text) => parse_payload(text).map_err(Rejection::Invalid),
            Payload::Objects(docs) => {
                crd::read_config(docs).map_err(|e| Rejection::Objects(Box::new(e)))
            }
        }
    }

    /// Where the config comes from, for logs, Events and metrics: `configmap` or `crds`.
    pub fn source(&self) -> &'static str {
        match self {
            Payload::Legacy(_) => "configmap",
            Payload::Objects(_) => "crds",
        }
    }
}

impl From<&str> for Payload {
    fn from(s: &str) -> Self {
        Payload::Legacy(s.to_string())
    }
}

/// Why a payload was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// It does not parse or validate.
    #[error("{0}")]
    Invalid(ConfigError),
    /// The metallb.io objects do not describe a valid config (the error names the object).
    #[error("{0}")]
    Objects(Box<CrdError>),
    /// It is valid but would strand what is in use (the caller's reason).
    #[error("{0}")]
    Stale(String),
}

impl Rejection {
    /// A stable reason for Events and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Invalid(_) | Rejection::Objects(_) => "InvalidConfig",
            Rejection::Stale(_) => "StaleConfig",
        }
    }

    /// The metallb.io object at fault, when the config came from objects and the error is
    /// about one of them.
    pub fn object(&self) -> Option<&crd::ObjectName> {
        match self {
            Rejection::Objects(e) => e.object(),
            _ => None,
        }
    }
}

/// The outcome of offering a payload.
#[derive(Debug, Clone)]
pub enum Reload {
    /// Same sha256 as the applied config: nothing to do.
    Unchanged,
    /// A new config is in force.
    Applied {
        /// Its identity.
        sha256: String,
        /// The config.
        config: Arc<Config>,
    },
    /// Not applied; the previous config (if any) keeps serving.
    Rejected {
        /// Identity of the rejected payload.
        sha256: String,
        /// Why.
        why: Rejection,
    },
    /// The ConfigMap (or file) is gone: the last good config keeps serving.
    Missing,
}

/// Reload state; the metrics layer reads it.
#[derive(Debug, Default)]
pub struct Reloader {
    applied: Option<(String, Arc<Config>)>,
    pending: Option<Payload>,
    stale: bool,
}

impl Reloader {
    /// A reloader with no config yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offer the current payload (`None`: the ConfigMap/file does not exist).
    pub fn offer(
        &mut self,
        payload: Option<&Payload>,
        accept: impl FnOnce(&Config) -> Result<(), String>,
    ) -> Reload {
        let Some(payload) = payload else {
            self.pending = None;
            if self.applied.is_some() {
                self.stale = true;
            }
            return Reload::Missing;
        };
        let sha256 = payload.identity();
        if self.applied.as_ref().is_some_and(|(h, _)| *h == sha256) {
            self.pending = None;
            self.stale = false;
            return Reload::Unchanged;
        }
        let config = match payload.parse() {
            Ok(c) => c,
            Err(why) => {
                // Invalid payloads cannot become valid by themselves: no retry.
                self.pending = None;
                self.stale = true;
                return Reload::Rejected { sha256, why };
            }
        };
        if let Err(why) = accept(&config) {
            self.pending = Some(payload.clone());
            self.stale = true;
            return Reload::Rejected {
                sha256,
                why: Rejection::Stale(why),
            };
        }
        let config = Arc::new(config);
        self.applied = Some((sha256.clone(), config.clone()));
        self.pending = None;
        self.stale = false;
        Reload::Applied { sha256, config }
    }

    /// Re-offer the last payload rejected as stale (call when what blocked it changed).
    /// `None` when nothing is pending.
    pub fn retry(&mut self, accept: impl FnOnce(&Config) -> Result<(), String>) -> Option<Reload> {
        let payload = self.pending.take()?;
        Some(self.offer(Some(&payload), accept))
    }

    /// Whether a payload waits for its blockers to go.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The config in force, if any.
    pub fn current(&self) -> Option<&Arc<Config>> {
        self.applied.as_ref().map(|(_, c)| c)
    }

    /// The sha256 of the config in force, if any.
    pub fn current_sha256(&self) -> Option<&str> {
        self.applied.as_ref().map(|(h, _)| h.as_str())
    }

    /// `metallb_k8s_client_config_loaded_bool`: a config was applied at least once.
    pub fn loaded(&self) -> bool {
        self.applied.is_some()
    }

    /// `metallb_k8s_client_config_stale_bool`: the latest payload was not applied.
    pub fn stale(&self) -> bool {
        self.stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "address-pools:\n- name: a\n  protocol: layer2\n  addresses: [192.0.2.0/28]\n";
    const B: &str =
        "address-pools:\n- name: b\n  protocol: layer2\n  addresses: [198.51.100.0/28]\n";

    fn ok(_: &Config) -> Result<(), String> {
        Ok(())
    }

    fn p(s: &str) -> Payload {
        Payload::from(s)
    }

    #[test]
    fn applies_once_then_reports_unchanged() {
        let mut r = Reloader::new();
        assert!(!r.loaded());
        assert!(matches!(r.offer(Some(&p(A)), ok), Reload::Applied { .. }));
        assert!(matches!(r.offer(Some(&p(A)), ok), Reload::Unchanged));
        assert!(r.loaded() && !r.stale());
        assert_eq!(r.current_sha256(), Some(sha256_hex(A.as_bytes()).as_str()));
    }

    #[test]
    fn invalid_config_keeps_the_last_good_one() {
        let mut r = Reloader::new();
        r.offer(Some(&p(A)), ok);
        let out = r.offer(Some(&p("address-pools: [\n")), ok);
        assert!(matches!(
            out,
            Reload::Rejected {
                why: Rejection::Invalid(_),
                ..
            }
        ));
        assert!(r.stale());
        assert_eq!(r.current().unwrap().pools[0].name, "a");
        assert!(!r.has_pending(), "an invalid payload is not retried");
    }

    #[test]
    fn stale_config_is_retried_when_blockers_go() {
        let mut r = Reloader::new();
        r.offer(Some(&p(A)), ok);
        let out = r.offer(Some(&p(B)), |_| {
            Err("service \"ns/x\" holds 192.0.2.1".into())
        });
        assert!(matches!(
            out,
            Reload::Rejected {
                why: Rejection::Stale(_),
                ..
            }
        ));
        assert!(r.has_pending() && r.stale());
        assert_eq!(r.current().unwrap().pools[0].name, "a");
        let again = r.retry(ok).unwrap();
        assert!(matches!(again, Reload::Applied { .. }));
        assert_eq!(r.current().unwrap().pools[0].name, "b");
        assert!(!r.stale() && r.retry(ok).is_none());
    }

    #[test]
    fn going_back_to_the_applied_payload_clears_stale() {
        let mut r = Reloader::new();
        r.offer(Some(&p(A)), ok);
        r.offer(Some(&p(B)), |_| Err("blocked".into()));
        assert!(matches!(r.offer(Some(&p(A)), ok), Reload::Unchanged));
        assert!(!r.stale() && !r.has_pending());
    }

    #[test]
    fn missing_config_keeps_serving_and_turns_stale() {
        let mut r = Reloader::new();
        assert!(matches!(r.offer(None, ok), Reload::Missing));
        assert!(!r.stale() && !r.loaded());
        r.offer(Some(&p(A)), ok);
        assert!(matches!(r.offer(None, ok), Reload::Missing));
        assert!(r.stale() && r.current().is_some());
    }

    #[test]
    fn empty_payload_is_a_valid_empty_config() {
        let mut r = Reloader::new();
        match r.offer(Some(&p("")), ok) {
            Reload::Applied { config, .. } => assert!(config.pools.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}
