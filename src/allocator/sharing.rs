//! IP sharing (`allow-shared-ip`, spec §4.5). Pure.
//!
//! Matches MetalLB 0.12 `internal/allocator`: a Service may use an address already in use iff
//! both have the same non-empty sharing key, the same backend key (`""` for
//! `externalTrafficPolicy: Cluster`, the selector rendered `k=v,k2=v2` sorted for `Local`), and
//! none of its ports (protocol + port) is already used on that address by another Service.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A Service port's protocol (`spec.ports[].protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP (the Kubernetes default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Proto {
    type Err = String;

    /// `TCP`, `UDP` or `SCTP` (exact, as the API server stores them).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "TCP" => Ok(Proto::Tcp),
            "UDP" => Ok(Proto::Udp),
            "SCTP" => Ok(Proto::Sctp),
            _ => Err(format!("unknown protocol {s:?}")),
        }
    }
}

/// One Service port as far as sharing is concerned; printed `TCP/80` like upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    /// Protocol.
    pub proto: Proto,
    /// Port number.
    pub port: u16,
}

impl Port {
    /// A TCP port.
    pub fn tcp(port: u16) -> Port {
        Port {
            proto: Proto::Tcp,
            port,
        }
    }

    /// A UDP port.
    pub fn udp(port: u16) -> Port {
        Port {
            proto: Proto::Udp,
            port,
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.proto, self.port)
    }
}

/// The backend key of an `externalTrafficPolicy: Local` Service: its selector as Kubernetes'
/// `labels.Set.String()` renders it (`k=v` pairs sorted by key, joined by `,`). A `Cluster`
/// Service's backend key is `""`.
pub fn local_backend_key<'a>(selector: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = selector.into_iter().collect();
    pairs.sort_unstable();
    let mut out = String::new();
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Sharing key and backend key of a Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SharingKey {
    pub(crate) sharing: String,
    pub(crate) backend: String,
}

impl SharingKey {
    /// Whether the key allows sharing at all.
    pub(crate) fn shareable(&self) -> bool {
        !self.sharing.is_empty()
    }
}

/// Why two sharing keys are incompatible. MetalLB computes this and discards it; we keep it as
/// the `source` of [`super::AllocError::SharingConflict`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharingMismatch {
    /// The address is used by a Service without a sharing key.
    #[error("existing service does not allow sharing")]
    ExistingNotShared,
    /// The new Service has no sharing key.
    #[error("new service does not allow sharing")]
    NewNotShared,
    /// Different sharing keys.
    #[error("sharing key {new:?} does not match existing sharing key {existing:?}")]
    Key {
        /// The new Service's key.
        new: String,
        /// The key in use on the address.
        existing: String,
    },
    /// Same sharing key, different backends.
    #[error("backend key {new:?} does not match existing backend key {existing:?}")]
    Backend {
        /// The new Service's backend key.
        new: String,
        /// The backend key in use on the address.
        existing: String,
    },
}

/// Upstream `sharingOK(existing, new)`.
pub(crate) fn sharing_ok(existing: &SharingKey, new: &SharingKey) -> Result<(), SharingMismatch> {
    if existing.sharing.is_empty() {
        return Err(SharingMismatch::ExistingNotShared);
    }
    if new.sharing.is_empty() {
        return Err(SharingMismatch::NewNotShared);
    }
    if existing.sharing != new.sharing {
        return Err(SharingMismatch::Key {
            new: new.sharing.clone(),
            existing: existing.sharing.clone(),
        });
    }
    if existing.backend != new.backend {
        return Err(SharingMismatch::Backend {
            new: new.backend.clone(),
            existing: existing.backend.clone(),
        });
    }
    Ok(())
}

/// An address in use: its pool, the key all its users share, the users and their ports.
/// Users and ports are sorted vectors (binary search; compact for the usual one user).
#[derive(Debug, Clone)]
pub(crate) struct IpUse {
    /// Index of the pool (in config order) that holds the address.
    pub(crate) pool: usize,
    /// The sharing key of every user (compatible users have equal keys).
    pub(crate) key: SharingKey,
    /// Services using the address, sorted.
    pub(crate) users: Vec<Arc<str>>,
    /// Ports in use on the address and the Service that uses each, sorted by port.
    pub(crate) ports: Vec<(Port, Arc<str>)>,
}

impl IpUse {
    /// The Service using `port` on this address, if any.
    pub(crate) fn port_owner(&self, port: &Port) -> Option<&str> {
        self.ports
            .binary_search_by(|(p, _)| p.cmp(port))
            .ok()
            .map(|i| &*self.ports[i].1)
    }

    /// Record `svc` as the user of `port` unless someone already is; true if recorded.
    pub(crate) fn take_port(&mut self, port: Port, svc: &Arc<str>) -> bool {
        match self.ports.binary_search_by(|(p, _)| p.cmp(&port)) {
            Ok(_) => false,
            Err(at) => {
                self.ports.insert(at, (port, svc.clone()));
                true
            }
        }
    }

    /// Whether none of `ports` is in use here.
    pub(crate) fn ports_free(&self, ports: &[Port]) -> bool {
        ports.iter().all(|p| self.port_owner(p).is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sharing: &str, backend: &str) -> SharingKey {
        SharingKey {
            sharing: sharing.into(),
            backend: backend.into(),
        }
    }

    #[test]
    fn sharing_needs_equal_non_empty_keys_and_equal_backends() {
        assert_eq!(sharing_ok(&key("k", ""), &key("k", "")), Ok(()));
        assert_eq!(
            sharing_ok(&key("", ""), &key("k", "")),
            Err(SharingMismatch::ExistingNotShared)
        );
        assert_eq!(
            sharing_ok(&key("k", ""), &key("", "")),
            Err(SharingMismatch::NewNotShared)
        );
        assert_eq!(
            sharing_ok(&key("a", ""), &key("b", ""))
                .unwrap_err()
                .to_string(),
            "sharing key \"b\" does not match existing sharing key \"a\""
        );
        assert!(matches!(
            sharing_ok(&key("k", "app=a"), &key("k", "")),
            Err(SharingMismatch::Backend { .. })
        ));
    }

    #[test]
    fn local_backend_key_is_the_sorted_selector() {
        assert_eq!(
            local_backend_key([("tier", "web"), ("app", "x")]),
            "app=x,tier=web"
        );
        assert_eq!(local_backend_key([]), "");
    }

    #[test]
    fn ports_print_like_upstream_and_parse_protocols() {
        assert_eq!(Port::tcp(53).to_string(), "TCP/53");
        assert_eq!(Port::udp(53).to_string(), "UDP/53");
        assert_eq!("SCTP".parse::<Proto>(), Ok(Proto::Sctp));
        assert!("tcp".parse::<Proto>().is_err());
    }
}
