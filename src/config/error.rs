//! Located, typed configuration errors.
//!
//! Every error names the object it is about the way MetalLB counts it (`peer #2`,
//! `address pool #3 "prod"`, 1-based), the field (with 1-based list indexes), the offending
//! value, and a line/column in the YAML where the parser knows it. One format everywhere:
//!
//! `address pool #2 "prod": addresses[1] "10.0.0.9-10.0.0.1": start IP is after the end IP (line 9, column 7)`

use std::fmt;

/// A position in the YAML document the user wrote (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
}

/// The configuration object an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// `peers[index]`, 1-based, with its address as written.
    Peer {
        index: usize,
        address: Option<String>,
    },
    /// `address-pools[index]`, 1-based, with its name.
    Pool { index: usize, name: Option<String> },
    /// `bfd-profiles[index]`, 1-based, with its name.
    BfdProfile { index: usize, name: Option<String> },
    /// An entry of `bgp-communities`.
    CommunityAlias { alias: String },
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, index, label) = match self {
            Object::Peer { index, address } => ("peer", Some(index), address),
            Object::Pool { index, name } => ("address pool", Some(index), name),
            Object::BfdProfile { index, name } => ("bfd profile", Some(index), name),
            Object::CommunityAlias { alias } => {
                return write!(f, "bgp-communities {alias:?}");
            }
        };
        if let Some(index) = index {
            write!(f, "{what} #{index}")?;
        }
        match label {
            Some(l) if !l.is_empty() => write!(f, " {l:?}"),
            _ => Ok(()),
        }
    }
}

/// What is wrong. Messages are lowercase, without a trailing period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("could not parse config: {0}")]
    Yaml(String),
    #[error("{0}")]
    InputShape(String),
    #[error("is required")]
    Missing,
    #[error("must not be 0")]
    Zero,
    #[error("is not a valid IP address")]
    InvalidIp,
    #[error("{0}")]
    InvalidDuration(String),
    #[error("must be 0 or at least 3s")]
    HoldTimeTooShort,
    #[error("must not be greater than hold-time ({hold})")]
    KeepaliveAboveHold { hold: String },
    #[error("must not be negative")]
    Negative,
    #[error("must not be set for an iBGP peer (my-asn equals peer-asn)")]
    EbgpMultihopOnIbgp,
    #[error("duplicates peer #{0}")]
    DuplicatePeer(usize),
    #[error("references a bfd profile that is not defined in bfd-profiles")]
    UnknownBfdProfile,
    #[error("duplicate bfd profile name, already used by bfd profile #{0}")]
    DuplicateBfdProfile(usize),
    #[error("must be between {min} and {max}")]
    OutOfRange { min: u64, max: u64 },
    #[error("{0}")]
    InvalidSelector(String),
    #[error("{0}")]
    InvalidCommunity(String),
    #[error("duplicate community in one advertisement")]
    DuplicateCommunity,
    #[error("is equal to bgp-advertisements[{0}]")]
    DuplicateAdvertisement(usize),
    #[error("pool has no addresses defined")]
    NoAddresses,
    #[error("unknown protocol (expected \"layer2\" or \"bgp\")")]
    UnknownProtocol,
    #[error("is not a CIDR or an IP range: {0}")]
    InvalidAddress(String),
    #[error("invalid start IP {0:?}")]
    InvalidRangeStart(String),
    #[error("invalid end IP {0:?}")]
    InvalidRangeEnd(String),
    #[error("start IP is after the end IP")]
    ReversedRange,
    #[error("start and end IP are of different families")]
    MixedFamilyRange,
    #[error("not allowed in a layer2 address pool")]
    AdvertisementsOnLayer2,
    #[error(
        "aggregation length {length} is shorter than prefix /{prefix} of addresses[{entry}] {addresses:?}, the aggregated route would cover addresses outside the pool"
    )]
    AggregationTooShort {
        length: i64,
        prefix: u8,
        entry: usize,
        addresses: String,
    },
    #[error("duplicate pool name, already used by address pool #{0}")]
    DuplicatePoolName(usize),
    #[error("{cidr} overlaps with {other} of address pool #{other_index} {other_pool:?}")]
    Overlap {
        cidr: String,
        other: String,
        other_index: usize,
        other_pool: String,
    },
}

impl ErrorKind {
    /// A stable, short reason usable as a metric label or Kubernetes Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ErrorKind::Yaml(_) | ErrorKind::InputShape(_) => "ParseFailed",
            ErrorKind::Overlap { .. } => "OverlappingPools",
            ErrorKind::DuplicatePoolName(_)
            | ErrorKind::DuplicatePeer(_)
            | ErrorKind::DuplicateBfdProfile(_)
            | ErrorKind::DuplicateAdvertisement(_)
            | ErrorKind::DuplicateCommunity => "Duplicate",
            _ => "InvalidConfig",
        }
    }
}

/// A configuration error with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The object (peer, pool …) the error is about; `None` for document-level errors.
    pub object: Option<Object>,
    /// The field path inside the object, e.g. `addresses[2]` (1-based indexes).
    pub field: Option<String>,
    /// The offending value as written.
    pub value: Option<String>,
    /// What is wrong.
    pub kind: ErrorKind,
    /// Where in the YAML, when known.
    pub pos: Option<Pos>,
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(o) = &self.object {
            write!(f, "{o}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}")?;
            if let Some(v) = &self.value {
                write!(f, " {v:?}")?;
            }
            write!(f, ": ")?;
        }
        write!(f, "{}", self.kind)?;
        if let Some(p) = self.pos {
            write!(f, " (line {}, column {})", p.line, p.column)?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// A document-level error.
    pub fn doc(kind: ErrorKind, pos: Option<Pos>) -> Self {
        ConfigError {
            object: None,
            field: None,
            value: None,
            kind,
            pos,
        }
    }

    /// Shift the reported line by `lines` (used when the payload sits inside a ConfigMap
    /// block scalar, so positions point into the file the user gave).
    pub fn shift_lines(mut self, lines: u64, columns: u64) -> Self {
        if let Some(p) = &mut self.pos {
            p.line += lines;
            p.column += columns;
        }
        self
    }
}

/// Result alias of the config module.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;
