//! Speaker-to-speaker liveness ("fast dead-node detection") and the fencing decision. PURE: no
//! tokio, no sockets, no clock, no RNG — time comes in as [`Instant`] values and the incarnation
//! number is chosen by the caller. [`super::gossip`] is the UDP driver around it.
//!
//! # Why not memberlist
//!
//! MetalLB 0.9–0.12 feeds the layer 2 election with hashicorp/memberlist membership (spec §6.1,
//! §8): a speaker drops out of every candidate list once memberlist declares it dead, which with
//! the LAN defaults takes roughly 5–25 s. We keep the *role* (who is alive, keyed by node name;
//! configured by `ml-bindaddr`/`ml-bindport`, the `memberlist` Secret's `secretkey`, discovery by
//! speaker pod IPs; a graceful leave on shutdown) but not the SWIM wire format: Go speakers cannot
//! be members of this protocol. Coexistence with Go speakers is handled elsewhere.
//!
//! # Protocol
//!
//! Every speaker sends one small UDP heartbeat every `interval` (default 100 ms) to every known
//! peer address (the speaker pod IPs from the Pods list, port `ml-bindport`, 7946 by default).
//! There are no probes, acks, indirect checks or piggy-backed member lists: a peer is **alive**
//! while a valid heartbeat from it arrived less than `dead_after` ago (default 600 ms, six
//! intervals), and dead otherwise. Each speaker judges by what it receives directly.
//!
//! * A heartbeat with the `LEAVING` flag (sent three times by the driver's `leave()` on
//!   shutdown) marks the peer dead at once, so a planned restart fails over immediately instead
//!   of after `dead_after`. An incarnation that has left stays dead.
//! * The *incarnation* (the driver uses the start time in UNIX nanoseconds) distinguishes a
//!   restarted speaker, whose sequence numbers start again. A greater incarnation replaces the
//!   recorded one; a smaller one is rejected as stale (an old process, or a replay).
//! * Sequence numbers are per incarnation and strictly increasing; anything not greater than the
//!   last accepted one for that (node, incarnation) is rejected as a replay or a reordering.
//! * Records of peers that have been dead for `forget_after` (default 5 min) are dropped, which
//!   bounds the table in clusters whose nodes churn, and lets a node whose clock stepped back
//!   across a reboot (smaller incarnation) in again after that delay.
//!
//! Trade-offs, stated so they can be tuned (`interval` and `dead_after` are both configurable):
//!
//! * **False positives.** A peer is declared dead after missing `dead_after / interval`
//!   consecutive heartbeats (6 by default), i.e. after 600 ms of silence: a CPU-starved speaker,
//!   a long GC-like stall of the node, or a burst of packet loss longer than that makes the
//!   layer 2 owner move and move back (each move costs a gratuitous ARP/NDP burst, not
//!   connections). Raise `dead_after` on noisy networks; detection time is
//!   `dead_after` + at most `interval / 2` (the driver's expiry check period).
//! * **Cost.** With N speakers every speaker sends N−1 datagrams per interval, so the cluster
//!   carries N·(N−1)/interval packets per second, O(N²): 100 nodes → ~99 000 pkt/s cluster-wide
//!   but only ~1 000 pkt/s sent and as many received per node (≈ 90 kB/s each way with ~60-byte
//!   heartbeats plus IP/UDP headers); 300 nodes → ~3 000 pkt/s per node each way. A few hundred
//!   nodes are fine; beyond that raise `interval` (and `dead_after` with it).
//! * **No indirect checks.** Unlike SWIM, a broken A↔B path while both reach C makes A and B see
//!   each other dead, which can give an IP two owners (MetalLB has the same failure mode with
//!   split memberlist views, issue #740). Partitions are what [`fenced`] handles.
//!
//! # Who hears whom
//!
//! Each heartbeat also says whom its sender hears and whether it elects from its gossip view
//! (it hears enough speakers to trust it, [`super::world::Mode::Normal`]). Views differ
//! when a path is one-way, when a speaker runs with another secret, or when the peers refuse a
//! speaker's heartbeats as from an older incarnation (its clock went back across a reboot);
//! an election over differing views gives an IP two owners. With the reports every speaker
//! elects from the speakers that a majority hears ([`heard_by_majority`]), and one that
//! cannot authenticate anybody but receives reports saying it is not heard stays out of its
//! own election ([`Membership::unheard_by`]). The report is the sender's alive set as the
//! shorter of two lists of [`name_id`]s: the known speakers it does *not* hear (usually
//! none), or the ones it does.
//!
//! # Wire format (version 2, all integers big-endian)
//!
//! ```text
//!  0               4       5       6       7       8
//!  +---------------+-------+-------+-------+-------+
//!  | magic "MLRS"  |version| flags |namelen|   0   |
//!  +---------------+-------+-------+-------+-------+
//!  |            incarnation (u64)                  |  8..16
//!  +-----------------------------------------------+
//!  |            sequence number (u64)              | 16..24
//!  +-----------------------------------------------+
//!  |  node name (namelen bytes, UTF-8, 1..=253)    |
//!  +-----------------------------------------------+
//!  |  count (u16, <= 234), then count x node id (u32) |
//!  +-----------------------------------------------+
//!  |  tag: HMAC-SHA256(key, all bytes above)[..16] |  present iff flags & AUTH
//!  +-----------------------------------------------+
//! flags: 0x01 LEAVING, 0x02 AUTH, 0x04 TRUSTS (elects from its gossip),
//!        0x08 ONLY (the ids are whom it hears; otherwise whom it does not hear),
//!        0x10 UNKNOWN (no list; count is 0); other bits must be zero.
//! ```
//!
//! A datagram is at most [`MAX_DATAGRAM`] bytes (1,231, one unfragmented IPv6 packet); its
//! length must match the header exactly. Version 1 (the previous release: no count, no list,
//! only LEAVING and AUTH) is still accepted, with an unknown report.
//!
//! # Authentication
//!
//! With a secret (the `memberlist` Secret's `secretkey`, i.e. `METALLB_ML_SECRET_KEY`, used as the
//! *string's* UTF-8 bytes like MetalLB does, not base64-decoded) every heartbeat carries the AUTH
//! flag and a 16-byte truncated HMAC-SHA256 tag, keyed with
//! `key = SHA-256("metallb-rs liveness v1\0" ‖ secret)`. The domain prefix keeps this key
//! distinct from any other use of the same secret. Verification is constant-time and happens
//! before any state is touched. The tag authenticates but does not encrypt: node names and
//! counters are not secret. An empty secret counts as none. Without a secret heartbeats are
//! plaintext, and a receiver whose configuration disagrees with the sender's (one has a
//! secret, the other not) rejects the datagram so the mismatch shows up in the
//! rejected-datagram counter instead of half-working. Without a secret anyone who can send UDP
//! to the speakers could make a dead node look alive or a live one leave, so the speaker does
//! not run the gossip without one ([`NO_SECRET_WARNING`]); the protocol still supports it for
//! tests, and then answers only the configured peers, never a datagram's claimed source.
//! Source addresses are not checked otherwise, since pod IPs are not a credential.
//!
//! Every malformed, unauthenticated or replayed datagram is rejected with a [`RejectReason`];
//! nothing in the decoding path panics.
//!
//! # Fencing
//!
//! See [`fenced`]: a speaker that can reach neither the API server nor a strict majority of the
//! speakers it knows must stop answering for its IPs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// First four bytes of every heartbeat.
pub const MAGIC: [u8; 4] = *b"MLRS";
/// Wire format version produced (version 1, without the hearing report, is still accepted).
pub const VERSION: u8 = 2;
/// Largest datagram produced or accepted, in bytes (1,231): it fits one IPv6 packet on a
/// link of the 1,280-byte minimum MTU, so heartbeats are never fragmented.
pub const MAX_DATAGRAM: usize = HEADER_LEN + MAX_NAME_LEN + 2 + 4 * MAX_LIST + TAG_LEN;
/// Most node ids in one hearing report.
pub const MAX_LIST: usize = 234;
/// Longest node name (a Kubernetes node name is a DNS subdomain, at most 253 bytes).
pub const MAX_NAME_LEN: usize = 253;
/// What the speaker logs when it does not start the gossip for want of a secret.
pub const NO_SECRET_WARNING: &str = "not starting fast dead node detection (gossip): no ml-secret-key (the memberlist Secret's secretkey) is set, and unauthenticated heartbeats would let anyone on the network mark speakers alive or dead; Kubernetes signals alone decide liveness";

/// Flag bit: the sender is shutting down.
const FLAG_LEAVING: u8 = 0x01;
/// Flag bit: a truncated HMAC tag follows the name.
const FLAG_AUTH: u8 = 0x02;
/// Flag bit: the sender elects from its gossip view.
const FLAG_TRUSTS: u8 = 0x04;
/// Flag bit: the list names whom the sender hears (otherwise whom it does not).
const FLAG_ONLY: u8 = 0x08;
/// Flag bit: no list (the sender's report is unknown).
const FLAG_UNKNOWN: u8 = 0x10;
const HEADER_LEN: usize = 24;
const TAG_LEN: usize = 16;
const _: () = assert!(
    MAX_DATAGRAM + 48 <= 1280,
    "a heartbeat fits one IPv6 packet"
);
/// Domain-separation prefix of the key derivation.
const KEY_DOMAIN: &[u8] = b"metallb-rs liveness v1\0";

/// Timers and limits of the liveness protocol. `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Params {
    /// Period between two heartbeats to each peer.
    pub interval: Duration,
    /// Silence after which a peer is declared dead.
    pub dead_after: Duration,
    /// How long a dead peer's record (incarnation, last sequence number) is kept.
    pub forget_after: Duration,
    /// Shared secret (`METALLB_ML_SECRET_KEY`); `None` or empty: plaintext heartbeats.
    pub secret: Option<String>,
    /// Upper bound on the number of tracked node names (protects memory against junk traffic).
    pub max_nodes: usize,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            interval,
            dead_after,
            forget_after,
            secret,
            max_nodes,
        } = self;
        f.debug_struct("Params")
            .field("interval", interval)
            .field("dead_after", dead_after)
            .field("forget_after", forget_after)
            .field("secret", &secret.as_ref().map(|_| "<redacted>"))
            .field("max_nodes", max_nodes)
            .finish()
    }
}

impl Default for Params {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(100),
            dead_after: Duration::from_millis(600),
            forget_after: Duration::from_secs(300),
            secret: None,
            max_nodes: 4096,
        }
    }
}

/// Invalid [`Membership`] construction arguments.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// The own node name cannot be sent.
    #[error("node name must be 1 to {MAX_NAME_LEN} bytes, got {0}")]
    NodeName(usize),
    /// A zero heartbeat interval.
    #[error("heartbeat interval must be positive")]
    ZeroInterval,
    /// `dead_after` must leave room for at least one lost heartbeat.
    #[error(
        "dead-after ({dead_after:?}) must be greater than the heartbeat interval ({interval:?})"
    )]
    DeadAfterTooShort {
        /// Configured silence threshold.
        dead_after: Duration,
        /// Configured heartbeat interval.
        interval: Duration,
    },
}

/// Why a datagram was not accepted. Counted by the driver, never fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// Shorter than the fixed header.
    #[error("datagram too short")]
    TooShort,
    /// Longer than [`MAX_DATAGRAM`].
    #[error("datagram too long")]
    TooLong,
    /// Not a heartbeat of this protocol.
    #[error("bad magic")]
    BadMagic,
    /// A version this speaker does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// Unknown flag bits or a non-zero reserved byte.
    #[error("unknown flags or reserved bits set")]
    BadFlags,
    /// Length does not match the header.
    #[error("length does not match header")]
    BadLength,
    /// Empty or non-UTF-8 node name.
    #[error("invalid node name")]
    BadName,
    /// Plaintext heartbeat while a secret is configured.
    #[error("unauthenticated heartbeat but a secret is configured")]
    MissingTag,
    /// Authenticated heartbeat while no secret is configured.
    #[error("authenticated heartbeat but no secret is configured")]
    UnexpectedTag,
    /// Wrong HMAC tag (wrong secret or tampering).
    #[error("bad authentication tag")]
    BadTag,
    /// Sequence number not greater than the last accepted one for this incarnation.
    #[error("replayed or reordered sequence number")]
    Replay,
    /// Incarnation older than the recorded one.
    #[error("stale incarnation")]
    StaleIncarnation,
    /// Heartbeat from an incarnation that already left.
    #[error("heartbeat after leave")]
    AfterLeave,
    /// Our own heartbeat came back (own address among the peers).
    #[error("own heartbeat")]
    Loopback,
    /// Another speaker uses our node name.
    #[error("another speaker uses this node name")]
    DuplicateName,
    /// The node table is full.
    #[error("too many nodes")]
    TooManyNodes,
}

impl RejectReason {
    /// Short stable label, e.g. for a metric.
    pub fn label(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::TooLong => "too_long",
            Self::BadMagic => "bad_magic",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::BadFlags => "bad_flags",
            Self::BadLength => "bad_length",
            Self::BadName => "bad_name",
            Self::MissingTag => "missing_tag",
            Self::UnexpectedTag => "unexpected_tag",
            Self::BadTag => "bad_tag",
            Self::Replay => "replay",
            Self::StaleIncarnation => "stale_incarnation",
            Self::AfterLeave => "after_leave",
            Self::Loopback => "loopback",
            Self::DuplicateName => "duplicate_name",
            Self::TooManyNodes => "too_many_nodes",
        }
    }
}

/// Whom a speaker says it hears (its alive set), as carried by its heartbeats. Node names are
/// sent as [`name_id`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hears {
    /// Every speaker except these: the speakers the sender knows of (listed by Kubernetes or
    /// heard before) and does not hear now. The usual, short form.
    AllBut(BTreeSet<u32>),
    /// Only these, the sender included (used when it is the shorter list).
    Only(BTreeSet<u32>),
    /// Not known: a version 1 heartbeat, or both lists longer than [`MAX_LIST`].
    Unknown,
}

impl Hears {
    /// The report of a speaker whose alive set is `alive` (itself included) out of `known`
    /// speakers (names it knows of; may include `alive` ones): the shorter list, or
    /// [`Hears::Unknown`] when neither fits a datagram.
    pub fn of<'a>(alive: &BTreeSet<String>, known: impl IntoIterator<Item = &'a String>) -> Self {
        let not_heard: BTreeSet<u32> = known
            .into_iter()
            .filter(|n| !alive.contains(*n))
            .map(|n| name_id(n))
            .collect();
        if not_heard.len() <= alive.len() && not_heard.len() <= MAX_LIST {
            Self::AllBut(not_heard)
        } else if alive.len() <= MAX_LIST {
            Self::Only(alive.iter().map(|n| name_id(n)).collect())
        } else {
            Self::Unknown
        }
    }

    /// Whether the sender hears `node`; `None` when the report is [`Hears::Unknown`].
    pub fn hears(&self, node: &str) -> Option<bool> {
        self.hears_id(name_id(node))
    }

    /// [`Hears::hears`] by [`name_id`].
    pub fn hears_id(&self, id: u32) -> Option<bool> {
        match self {
            Self::AllBut(ids) => Some(!ids.contains(&id)),
            Self::Only(ids) => Some(ids.contains(&id)),
            Self::Unknown => None,
        }
    }
}

/// What a peer's last heartbeat said besides its liveness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Whom it hears.
    pub hears: Hears,
    /// It elects from its gossip view; otherwise from Kubernetes signals alone.
    pub trusts_gossip: bool,
}

/// The 32-bit identifier a node name travels as in [`Hears`] lists: the first four bytes of
/// `SHA-256(name)`. Two names of one cluster colliding (≈ N²/2³³) only makes the speakers
/// count one of them as unheard whenever the other is, which errs towards announcing less.
pub fn name_id(name: &str) -> u32 {
    let d = Sha256::digest(name.as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// One decoded heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Sender's node name.
    pub node: String,
    /// Sender's incarnation (distinguishes restarts).
    pub incarnation: u64,
    /// Sender's sequence number within the incarnation.
    pub seq: u64,
    /// The sender is shutting down.
    pub leaving: bool,
    /// The sender elects from its gossip view (it hears enough of the speakers to trust it).
    pub trusts_gossip: bool,
    /// Whom the sender hears.
    pub hears: Hears,
}

/// Heartbeat encoder/decoder, optionally keyed.
#[derive(Clone)]
pub struct Codec {
    mac: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("authenticated", &self.mac.is_some())
            .finish()
    }
}

/// Whether [`Codec::parse`] checks the tag.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verify {
    Yes,
    No,
}

impl Codec {
    /// A codec for `secret` (`None` or empty: plaintext).
    pub fn new(secret: Option<&str>) -> Self {
        let mac = secret.filter(|s| !s.is_empty()).map(|s| {
            let key = derive_key(s);
            // HMAC keys shorter than the block size are zero-padded by definition (RFC 2104 §2),
            // so the 32-byte key padded to the 64-byte block is the same key, and `new` is
            // infallible.
            let mut block = [0u8; 64];
            block[..key.len()].copy_from_slice(&key);
            <Hmac<Sha256> as KeyInit>::new(&block.into())
        });
        Self { mac }
    }

    /// Whether heartbeats are authenticated.
    pub fn authenticated(&self) -> bool {
        self.mac.is_some()
    }

    /// Encodes `hb` (version 2). Names longer than [`MAX_NAME_LEN`] are truncated and lists
    /// longer than [`MAX_LIST`] sent as unknown (callers validate first).
    pub fn encode(&self, hb: &Heartbeat) -> Vec<u8> {
        let name = &hb.node.as_bytes()[..hb.node.len().min(MAX_NAME_LEN)];
        let mut flags = 0;
        if hb.leaving {
            flags |= FLAG_LEAVING;
        }
        if self.mac.is_some() {
            flags |= FLAG_AUTH;
        }
        if hb.trusts_gossip {
            flags |= FLAG_TRUSTS;
        }
        let ids = match &hb.hears {
            Hears::AllBut(ids) if ids.len() <= MAX_LIST => Some(ids),
            Hears::Only(ids) if ids.len() <= MAX_LIST => {
                flags |= FLAG_ONLY;
                Some(ids)
            }
            _ => {
                flags |= FLAG_UNKNOWN;
                None
            }
        };
        let count = ids.map_or(0, BTreeSet::len);
        let mut out = Vec::with_capacity(HEADER_LEN + name.len() + 2 + 4 * count + TAG_LEN);
        out.extend_from_slice(&MAGIC);
        // `name.len()` <= 253 by the slice above.
        out.extend_from_slice(&[VERSION, flags, name.len() as u8, 0]);
        out.extend_from_slice(&hb.incarnation.to_be_bytes());
        out.extend_from_slice(&hb.seq.to_be_bytes());
        out.extend_from_slice(name);
        // `count` <= MAX_LIST < 65,536 by the match above.
        out.extend_from_slice(&(count as u16).to_be_bytes());
        for id in ids.into_iter().flatten() {
            out.extend_from_slice(&id.to_be_bytes());
        }
        if let Some(mac) = &self.mac {
            let tag = mac.clone().chain_update(&out).finalize().into_bytes();
            out.extend_from_slice(&tag[..TAG_LEN]);
        }
        out
    }

    /// Decodes and authenticates one datagram (version 2, or version 1 whose report is
    /// [`Hears::Unknown`]).
    pub fn decode(&self, bytes: &[u8]) -> Result<Heartbeat, RejectReason> {
        self.parse(bytes, Verify::Yes)
    }

    /// Decodes a datagram without checking its tag: what a speaker it cannot authenticate
    /// (another secret, or none) claims. Only ever used to make this speaker announce less.
    pub fn decode_unverified(&self, bytes: &[u8]) -> Result<Heartbeat, RejectReason> {
        self.parse(bytes, Verify::No)
    }

    fn parse(&self, bytes: &[u8], verify: Verify) -> Result<Heartbeat, RejectReason> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(RejectReason::TooLong);
        }
        let Some((header, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(RejectReason::TooShort);
        };
        if header[..4] != MAGIC {
            return Err(RejectReason::BadMagic);
        }
        let version = header[4];
        let known_flags = match version {
            1 => FLAG_LEAVING | FLAG_AUTH,
            VERSION => FLAG_LEAVING | FLAG_AUTH | FLAG_TRUSTS | FLAG_ONLY | FLAG_UNKNOWN,
            v => return Err(RejectReason::UnsupportedVersion(v)),
        };
        let flags = header[5];
        if flags & !known_flags != 0
            || header[7] != 0
            || flags & (FLAG_ONLY | FLAG_UNKNOWN) == (FLAG_ONLY | FLAG_UNKNOWN)
        {
            return Err(RejectReason::BadFlags);
        }
        let name_len = usize::from(header[6]);
        let tagged = flags & FLAG_AUTH != 0;
        let tag_len = if tagged { TAG_LEN } else { 0 };
        if name_len == 0 || name_len > MAX_NAME_LEN {
            return Err(RejectReason::BadName);
        }
        let (name, list) = rest
            .split_at_checked(name_len)
            .ok_or(RejectReason::BadLength)?;
        let (count, ids) = if version == 1 {
            (0, list)
        } else {
            let (count, ids) = list
                .split_first_chunk::<2>()
                .ok_or(RejectReason::BadLength)?;
            (usize::from(u16::from_be_bytes(*count)), ids)
        };
        if count > MAX_LIST || (flags & FLAG_UNKNOWN != 0 && count != 0) {
            return Err(RejectReason::BadLength);
        }
        if ids.len() != 4 * count + tag_len {
            return Err(RejectReason::BadLength);
        }
        match (&self.mac, tagged) {
            _ if verify == Verify::No => {}
            (Some(_), false) => return Err(RejectReason::MissingTag),
            (None, true) => return Err(RejectReason::UnexpectedTag),
            (Some(mac), true) => {
                let (signed, tag) = bytes.split_at(bytes.len() - TAG_LEN);
                mac.clone()
                    .chain_update(signed)
                    .verify_truncated_left(tag)
                    .map_err(|_| RejectReason::BadTag)?;
            }
            (None, false) => {}
        }
        let node = std::str::from_utf8(name).map_err(|_| RejectReason::BadName)?;
        let set: BTreeSet<u32> = ids[..4 * count]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let hears = if version == 1 || flags & FLAG_UNKNOWN != 0 {
            Hears::Unknown
        } else if flags & FLAG_ONLY != 0 {
            Hears::Only(set)
        } else {
            Hears::AllBut(set)
        };
        let (inc, seq) = header[8..].split_at(8);
        Ok(Heartbeat {
            node: node.to_owned(),
            incarnation: u64::from_be_bytes(inc.try_into().map_err(|_| RejectReason::TooShort)?),
            seq: u64::from_be_bytes(seq.try_into().map_err(|_| RejectReason::TooShort)?),
            leaving: flags & FLAG_LEAVING != 0,
            trusts_gossip: flags & FLAG_TRUSTS != 0,
            hears,
        })
    }
}

/// `SHA-256("metallb-rs liveness v1\0" ‖ secret)`, the HMAC key.
fn derive_key(secret: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(KEY_DOMAIN)
        .chain_update(secret.as_bytes())
        .finalize()
        .into()
}

/// Why a peer is dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// No valid heartbeat for `dead_after`.
    Expired,
    /// It announced its shutdown.
    Left,
}

/// A change of a peer's state, returned to the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The peer became alive (first heartbeat, or back after being dead).
    Up {
        /// Node name.
        node: String,
    },
    /// The peer is dead.
    Down {
        /// Node name.
        node: String,
        /// Expired or left.
        reason: DownReason,
    },
    /// An alive peer restarted (new incarnation) without being seen dead; the alive set is
    /// unchanged.
    Restarted {
        /// Node name.
        node: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Alive,
    Dead { since: Instant, reason: DownReason },
}

#[derive(Clone, Debug)]
struct Peer {
    incarnation: u64,
    last_seq: u64,
    last_heard: Instant,
    state: State,
    /// Source address of the last accepted heartbeat (heartbeats are sent from the listening
    /// socket, so this is where the peer listens).
    src: SocketAddr,
    /// Its last hearing report.
    hears: Hears,
    /// It elects from its gossip view.
    trusts_gossip: bool,
}

/// The liveness state machine of one speaker: which peers are alive, what to send.
#[derive(Debug)]
pub struct Membership {
    me: String,
    incarnation: u64,
    seq: u64,
    params: Params,
    codec: Codec,
    nodes: BTreeMap<String, Peer>,
    peers: BTreeSet<SocketAddr>,
    /// Speakers Kubernetes lists (for the hearing report and [`Membership::unheard_by`]).
    expected: BTreeSet<String>,
    /// This speaker elects from its gossip view (sent in the heartbeat).
    trusts_gossip: bool,
    /// Speakers that elect from their gossip and say they do not hear this one, by when that
    /// was last said (verified or not).
    unheard_by: BTreeMap<String, Instant>,
    /// Reports or `unheard_by` changed since [`Membership::take_report_change`].
    report_changed: bool,
}

impl Membership {
    /// A membership for node `me`, whose current process has `incarnation` (must grow across
    /// restarts; the driver uses the start time in UNIX nanoseconds).
    pub fn new(
        me: impl Into<String>,
        incarnation: u64,
        params: Params,
    ) -> Result<Self, ParamsError> {
        let me = me.into();
        if me.is_empty() || me.len() > MAX_NAME_LEN {
            return Err(ParamsError::NodeName(me.len()));
        }
        if params.interval.is_zero() {
            return Err(ParamsError::ZeroInterval);
        }
        if params.dead_after <= params.interval {
            return Err(ParamsError::DeadAfterTooShort {
                dead_after: params.dead_after,
                interval: params.interval,
            });
        }
        let codec = Codec::new(params.secret.as_deref());
        Ok(Self {
            me,
            incarnation,
            seq: 0,
            params,
            codec,
            nodes: BTreeMap::new(),
            peers: BTreeSet::new(),
            expected: BTreeSet::new(),
            trusts_gossip: false,
            unheard_by: BTreeMap::new(),
            report_changed: false,
        })
    }

    /// Own node name.
    pub fn node_name(&self) -> &str {
        &self.me
    }

    /// Own incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The parameters in use.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Whether heartbeats are authenticated.
    pub fn authenticated(&self) -> bool {
        self.codec.authenticated()
    }

    /// Next heartbeat to send to every peer (one sequence number per round).
    pub fn encode_heartbeat(&mut self, leaving: bool) -> Vec<u8> {
        self.seq += 1;
        self.codec.encode(&Heartbeat {
            node: self.me.clone(),
            incarnation: self.incarnation,
            seq: self.seq,
            leaving,
            trusts_gossip: self.trusts_gossip,
            hears: self.own_report(),
        })
    }

    /// Whom this speaker hears, as its heartbeats say: its alive set out of the speakers it
    /// expects and the ones it has records of.
    pub fn own_report(&self) -> Hears {
        Hears::of(&self.alive(), self.expected.iter().chain(self.nodes.keys()))
    }

    /// Sets the speakers Kubernetes lists and whether this speaker elects from its gossip
    /// view; both travel in the heartbeats.
    pub fn set_local(&mut self, expected: BTreeSet<String>, trusts_gossip: bool) {
        self.expected = expected;
        self.trusts_gossip = trusts_gossip;
        let expected = &self.expected;
        let before = self.unheard_by.len();
        self.unheard_by.retain(|n, _| expected.contains(n));
        self.report_changed |= self.unheard_by.len() != before;
    }

    /// The hearing reports of the alive peers.
    pub fn reports(&self) -> BTreeMap<String, Report> {
        self.nodes
            .iter()
            .filter(|(_, p)| p.state == State::Alive)
            .map(|(n, p)| {
                let report = Report {
                    hears: p.hears.clone(),
                    trusts_gossip: p.trusts_gossip,
                };
                (n.clone(), report)
            })
            .collect()
    }

    /// Listed speakers that elect from their gossip and said within `dead_after` that they do
    /// not hear this one, authenticated or not. A speaker that hears less than half of the
    /// others and so decides from Kubernetes alone must not announce while this is not empty:
    /// those speakers elect without it, so its own election would give IPs a second owner.
    /// Unauthenticated claims are used for this alone, which can only make it announce less.
    pub fn unheard_by(&self) -> BTreeSet<String> {
        self.unheard_by.keys().cloned().collect()
    }

    /// Whether a report or [`Membership::unheard_by`] changed since the last call.
    pub fn take_report_change(&mut self) -> bool {
        std::mem::take(&mut self.report_changed)
    }

    /// Records what a heartbeat says about this speaker. `accepted`: it passed every check;
    /// otherwise (unauthenticated, or an incarnation we refuse) it may add to `unheard_by`
    /// but never clear it, so a forged or replayed claim can only make this speaker announce
    /// less.
    fn note_hearing(&mut self, now: Instant, hb: &Heartbeat, accepted: bool) {
        if !self.expected.contains(&hb.node) || hb.node == self.me {
            return;
        }
        if hb.trusts_gossip && hb.hears.hears(&self.me) == Some(false) && !hb.leaving {
            if self.unheard_by.insert(hb.node.clone(), now).is_none() {
                self.report_changed = true;
            }
        } else if accepted && self.unheard_by.remove(&hb.node).is_some() {
            self.report_changed = true;
        }
    }

    /// Replaces the peer addresses to send to, leaving out `own`. Returns whether the set
    /// changed.
    pub fn set_peers(&mut self, peers: BTreeSet<SocketAddr>, own: SocketAddr) -> bool {
        let mut peers = peers;
        peers.remove(&own);
        let changed = peers != self.peers;
        self.peers = peers;
        changed
    }

    /// Peer addresses heartbeats go to (own address excluded).
    pub fn peers(&self) -> &BTreeSet<SocketAddr> {
        &self.peers
    }

    /// Handles one received datagram.
    pub fn on_datagram(
        &mut self,
        now: Instant,
        bytes: &[u8],
        src: SocketAddr,
    ) -> Result<Option<Change>, RejectReason> {
        let hb = match self.codec.decode(bytes) {
            Ok(hb) => hb,
            Err(
                reason @ (RejectReason::BadTag
                | RejectReason::MissingTag
                | RejectReason::UnexpectedTag),
            ) => {
                if let Ok(hb) = self.codec.decode_unverified(bytes) {
                    self.note_hearing(now, &hb, false);
                }
                return Err(reason);
            }
            Err(reason) => return Err(reason),
        };
        if hb.node == self.me {
            return Err(if hb.incarnation == self.incarnation {
                RejectReason::Loopback
            } else {
                RejectReason::DuplicateName
            });
        }
        let new_state = |leaving: bool| {
            if leaving {
                State::Dead {
                    since: now,
                    reason: DownReason::Left,
                }
            } else {
                State::Alive
            }
        };
        let Some(peer) = self.nodes.get_mut(&hb.node) else {
            if self.nodes.len() >= self.params.max_nodes {
                return Err(RejectReason::TooManyNodes);
            }
            let state = new_state(hb.leaving);
            self.note_hearing(now, &hb, true);
            self.report_changed = true;
            self.nodes.insert(
                hb.node.clone(),
                Peer {
                    incarnation: hb.incarnation,
                    last_seq: hb.seq,
                    last_heard: now,
                    state,
                    src,
                    hears: hb.hears.clone(),
                    trusts_gossip: hb.trusts_gossip,
                },
            );
            return Ok((state == State::Alive).then_some(Change::Up { node: hb.node }));
        };
        let was_alive = peer.state == State::Alive;
        if hb.incarnation < peer.incarnation {
            self.note_hearing(now, &hb, false);
            return Err(RejectReason::StaleIncarnation);
        }
        let restarted = hb.incarnation > peer.incarnation;
        if !restarted {
            if hb.seq <= peer.last_seq {
                return Err(RejectReason::Replay);
            }
            if let State::Dead {
                reason: DownReason::Left,
                ..
            } = peer.state
            {
                // Keep the sequence number so the same datagrams cannot be replayed later.
                peer.last_seq = hb.seq;
                return if hb.leaving {
                    Ok(None) // the 2nd and 3rd copy of the leave
                } else {
                    Err(RejectReason::AfterLeave)
                };
            }
        }
        peer.incarnation = hb.incarnation;
        peer.last_seq = hb.seq;
        peer.last_heard = now;
        peer.src = src;
        peer.state = new_state(hb.leaving);
        if peer.hears != hb.hears || peer.trusts_gossip != hb.trusts_gossip {
            peer.hears = hb.hears.clone();
            peer.trusts_gossip = hb.trusts_gossip;
            self.report_changed = true;
        }
        let now_alive = peer.state == State::Alive;
        self.note_hearing(now, &hb, true);
        let node = hb.node;
        Ok(match (was_alive, now_alive) {
            (false, true) => Some(Change::Up { node }),
            (true, false) => Some(Change::Down {
                node,
                reason: DownReason::Left,
            }),
            (true, true) if restarted => Some(Change::Restarted { node }),
            _ => None,
        })
    }

    /// Expires silent peers and forgets long-dead ones. Call at least every `interval / 2`.
    pub fn tick(&mut self, now: Instant) -> Vec<Change> {
        let Params {
            dead_after,
            forget_after,
            ..
        } = self.params;
        let mut changes = Vec::new();
        self.nodes.retain(|node, peer| match peer.state {
            State::Alive => {
                if now.saturating_duration_since(peer.last_heard) >= dead_after {
                    peer.state = State::Dead {
                        since: now,
                        reason: DownReason::Expired,
                    };
                    changes.push(Change::Down {
                        node: node.clone(),
                        reason: DownReason::Expired,
                    });
                }
                true
            }
            State::Dead { since, .. } => now.saturating_duration_since(since) < forget_after,
        });
        let before = self.unheard_by.len();
        self.unheard_by
            .retain(|_, said| now.saturating_duration_since(*said) < dead_after);
        self.report_changed |= self.unheard_by.len() != before;
        changes
    }

    /// Names of the alive speakers, always including this one.
    pub fn alive(&self) -> BTreeSet<String> {
        self.nodes
            .iter()
            .filter(|(_, p)| p.state == State::Alive)
            .map(|(n, _)| n.clone())
            .chain(std::iter::once(self.me.clone()))
            .collect()
    }

    /// Where heartbeats go: the configured peers plus the source address of every peer
    /// currently alive. A speaker that just started knows its peers from the Pods list, but
    /// they learn its address only at their next list; answering whoever authenticated to us
    /// makes the view symmetric within one interval instead.
    ///
    /// Without a secret only the configured peers: anyone could then claim a source address,
    /// and answering it would turn the speakers into a reflector towards that address.
    pub fn targets(&self) -> BTreeSet<SocketAddr> {
        let mut t = self.peers.clone();
        if !self.authenticated() {
            return t;
        }
        t.extend(
            self.nodes
                .values()
                .filter(|p| p.state == State::Alive)
                .map(|p| p.src),
        );
        t
    }

    /// Source address of the last accepted heartbeat from `node`, if it is tracked.
    pub fn last_source(&self, node: &str) -> Option<SocketAddr> {
        self.nodes.get(node).map(|p| p.src)
    }
}

/// Whether a speaker must stop answering for its IPs (layer 2 ARP/NDP replies).
///
/// * `api_reachable`: the speaker can currently talk to the Kubernetes API server.
/// * `alive_count`: speakers it sees alive, itself included ([`Membership::alive`]`.len()`).
/// * `known_count`: speakers it expects, itself included (the speaker pods listed).
///
/// Fenced iff the API server is unreachable **and** `alive_count` is not a strict majority of
/// `known_count` (`2 * alive_count <= known_count`).
///
/// Why: a node cut off from the rest of the cluster would otherwise keep answering ARP for the
/// IPs it owns. The majority side sees it dead after `dead_after`, re-runs the election and one
/// of its nodes takes the IPs over; the isolated node must step back, or two nodes answer and
/// clients flip between them. The minority side cannot tell "I am isolated" from "the others
/// died", so it steps back only when it also lost the API server (its only other source of truth
/// about the cluster). Requiring **both** losses means an API-server blip alone (a control-plane
/// upgrade) or a gossip-only problem (a firewall rule on the liveness port) never fences a
/// healthy node. A single-speaker cluster (`known_count <= 1`) is never fenced by majority: it
/// always sees itself. With two speakers, one that sees the other dead and also lost the API
/// server fences itself (1 of 2 is no majority), which is the price of never having two owners.
pub fn fenced(api_reachable: bool, alive_count: usize, known_count: usize) -> bool {
    // `alive > known / 2` is `2 * alive > known` without overflow.
    !api_reachable && alive_count <= known_count / 2
}

/// The speakers a majority hears, as far as this speaker can tell: the candidates it elects
/// from while it trusts its gossip.
///
/// * `alive`: whom this speaker hears, itself included ([`Membership::alive`]): the
///   reporters.
/// * `reports`: what each alive peer says ([`Membership::reports`]). A peer that decides
///   from Kubernetes alone counts every listed speaker, since that is whom it elects from; a
///   peer without a usable report (the previous release's heartbeats) counts only itself,
///   which keeps both releases' elections apart during a rolling upgrade.
/// * `known`: the other speakers worth judging (those Kubernetes lists).
///
/// A speaker `y` is kept when somebody other than `y` hears it (or `y` is this speaker) and
/// the speakers hearing it, `y` itself included, are a strict majority of the reporters plus
/// `y`. So speakers agree on `y` even when not all of them hear it: with UDP from A to B
/// lost, B still counts A because C hears A; and a speaker that hears everybody while nobody
/// hears it (its heartbeats are lost, refused as from an older incarnation after its clock
/// went back, or its clock ran backwards) drops itself, because every report it reads says
/// nobody hears it.
pub fn heard_by_majority(
    me: &str,
    alive: &BTreeSet<String>,
    reports: &BTreeMap<String, Report>,
    known: &BTreeSet<String>,
) -> BTreeSet<String> {
    let reporters: Vec<(&str, Option<&Report>)> = alive
        .iter()
        .map(|z| (z.as_str(), (z != me).then(|| reports.get(z)).flatten()))
        .collect();
    let mut out = BTreeSet::new();
    for y in alive.iter().chain(known.iter()) {
        if out.contains(y) {
            continue;
        }
        let id = name_id(y);
        let mut hearers = 0usize;
        let mut vouched = y == me;
        for &(z, report) in &reporters {
            let hears = if z == y {
                true
            } else if z == me {
                alive.contains(y)
            } else {
                match report.and_then(|r| Some((r.hears.hears_id(id)?, r.trusts_gossip))) {
                    Some((hears, true)) => hears,
                    Some((_, false)) => known.contains(y),
                    None => false,
                }
            };
            if hears {
                hearers += 1;
                vouched |= z != y;
            }
        }
        let mut total = reporters.len();
        if !alive.contains(y) {
            // `y` hears itself; we just do not get its report.
            hearers += 1;
            total += 1;
        }
        if vouched && 2 * hearers > total {
            out.insert(y.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    fn src() -> SocketAddr {
        "192.0.2.1:7946".parse().unwrap()
    }

    fn params(secret: Option<&str>) -> Params {
        Params {
            secret: secret.map(str::to_owned),
            ..Params::default()
        }
    }

    fn member(name: &str, inc: u64, secret: Option<&str>) -> Membership {
        Membership::new(name, inc, params(secret)).unwrap()
    }

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn up(n: &str) -> Option<Change> {
        Some(Change::Up { node: n.into() })
    }

    fn hb(node: &str, incarnation: u64, seq: u64, leaving: bool) -> Heartbeat {
        Heartbeat {
            node: node.into(),
            incarnation,
            seq,
            leaving,
            trusts_gossip: false,
            hears: Hears::AllBut(BTreeSet::new()),
        }
    }

    #[test]
    fn plaintext_heartbeat_is_byte_exact() {
        let hb = Heartbeat {
            trusts_gossip: true,
            hears: Hears::AllBut(BTreeSet::from([name_id("node-b")])),
            ..hb("node-a", 0x0102_0304_0506_0708, 9, true)
        };
        let bytes = Codec::new(None).encode(&hb);
        let mut want = b"MLRS\x02\x05\x06\x00".to_vec();
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 9]);
        want.extend_from_slice(b"node-a");
        // One id: SHA-256("node-b")[..4], computed with Python's hashlib.
        want.extend_from_slice(&[0, 1, 147, 239, 55, 198]);
        assert_eq!(bytes, want);
        assert_eq!(Codec::new(None).decode(&bytes), Ok(hb));
    }

    #[test]
    fn authenticated_heartbeat_matches_independent_hmac() {
        // Ids and tag computed with Python's hmac/hashlib:
        //   key = sha256(b"metallb-rs liveness v1\0" + b"s3cret").digest()
        //   hmac.new(key, msg, sha256).digest()[:16]
        let hb = Heartbeat {
            hears: Hears::Only(BTreeSet::from([name_id("n1"), name_id("n2")])),
            ..hb("n1", 7, 1, false)
        };
        let codec = Codec::new(Some("s3cret"));
        let bytes = codec.encode(&hb);
        let mut want = b"MLRS\x02\x0a\x02\x00".to_vec();
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend_from_slice(b"n1");
        want.extend_from_slice(&[0, 2, 4, 128, 169, 61, 103, 107, 139, 184]);
        want.extend_from_slice(&EXPECTED_TAG);
        assert_eq!(bytes, want);
        assert_eq!(codec.decode(&bytes), Ok(hb));
    }

    const EXPECTED_TAG: [u8; 16] = [
        0x54, 0x7c, 0x00, 0x41, 0x68, 0x5d, 0xc3, 0x81, 0x4d, 0x3e, 0xf9, 0x26, 0xcb, 0xf5, 0x9c,
        0x38,
    ];

    #[test]
    fn version_1_heartbeats_are_still_accepted_without_a_report() {
        // A heartbeat of the previous release (tag from Python as above), so speakers of two
        // releases hear each other during a rolling upgrade.
        let mut v1 = b"MLRS\x01\x02\x02\x00".to_vec();
        v1.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1]);
        v1.extend_from_slice(b"n1");
        v1.extend_from_slice(&[
            0x69, 0x68, 0x0d, 0x29, 0x53, 0x8f, 0x42, 0x65, 0x24, 0xc7, 0x0e, 0x47, 0x5f, 0x23,
            0x52, 0x50,
        ]);
        assert_eq!(
            Codec::new(Some("s3cret")).decode(&v1),
            Ok(Heartbeat {
                hears: Hears::Unknown,
                ..hb("n1", 7, 1, false)
            })
        );
        let mut bad = v1.clone();
        bad[5] |= FLAG_TRUSTS;
        assert_eq!(
            Codec::new(Some("s3cret")).decode(&bad),
            Err(RejectReason::BadFlags)
        );
    }

    #[test]
    fn empty_secret_means_plaintext() {
        assert!(!Codec::new(Some("")).authenticated());
        assert!(Codec::new(Some("x")).authenticated());
    }

    #[test]
    fn rejects_malformed_datagrams() {
        let codec = Codec::new(None);
        let good = codec.encode(&hb("a", 1, 1, false));
        assert_eq!(codec.decode(&[]), Err(RejectReason::TooShort));
        assert_eq!(codec.decode(&good[..20]), Err(RejectReason::TooShort));
        assert_eq!(
            codec.decode(&[0; MAX_DATAGRAM + 1]),
            Err(RejectReason::TooLong)
        );
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(codec.decode(&b), Err(RejectReason::BadMagic));
        let mut b = good.clone();
        b[4] = 3;
        assert_eq!(codec.decode(&b), Err(RejectReason::UnsupportedVersion(3)));
        let mut b = good.clone();
        b[5] = 0x80;
        assert_eq!(codec.decode(&b), Err(RejectReason::BadFlags));
        let mut b = good.clone();
        b[7] = 1;
        assert_eq!(codec.decode(&b), Err(RejectReason::BadFlags));
        let mut b = good.clone();
        b[6] = 0;
        assert_eq!(codec.decode(&b), Err(RejectReason::BadName));
        let mut b = good.clone();
        b[6] = 254;
        assert_eq!(codec.decode(&b), Err(RejectReason::BadName));
        let mut b = good.clone();
        b.push(b'x');
        assert_eq!(codec.decode(&b), Err(RejectReason::BadLength));
        let mut b = good.clone();
        b[24] = 0xff;
        assert_eq!(codec.decode(&b), Err(RejectReason::BadName));
    }

    #[test]
    fn authentication_mismatches_are_rejected() {
        let hb = hb("a", 1, 1, false);
        let plain = Codec::new(None).encode(&hb);
        let signed = Codec::new(Some("one")).encode(&hb);
        assert_eq!(
            Codec::new(Some("one")).decode(&plain),
            Err(RejectReason::MissingTag)
        );
        assert_eq!(
            Codec::new(None).decode(&signed),
            Err(RejectReason::UnexpectedTag)
        );
        assert_eq!(
            Codec::new(Some("two")).decode(&signed),
            Err(RejectReason::BadTag)
        );
        // Any flipped bit, including in the flags (no downgrade to LEAVING), breaks the tag.
        for i in 0..signed.len() {
            let mut b = signed.clone();
            b[i] ^= 0x01;
            assert!(Codec::new(Some("one")).decode(&b).is_err(), "byte {i}");
        }
        let mut b = signed.clone();
        b[5] |= FLAG_LEAVING;
        assert_eq!(
            Codec::new(Some("one")).decode(&b),
            Err(RejectReason::BadTag)
        );
    }

    #[test]
    fn max_length_name_fits_max_datagram() {
        let name = "a".repeat(MAX_NAME_LEN);
        let codec = Codec::new(Some("k"));
        let full = Heartbeat {
            hears: Hears::AllBut((0..MAX_LIST as u32).collect()),
            ..hb(&name, 1, 1, false)
        };
        let bytes = codec.encode(&full);
        assert_eq!(bytes.len(), MAX_DATAGRAM);
        assert_eq!(codec.decode(&bytes), Ok(full.clone()));
        // One id more does not fit: the report goes out as unknown.
        let over = Heartbeat {
            hears: Hears::AllBut((0..=MAX_LIST as u32).collect()),
            ..full
        };
        let got = codec.decode(&codec.encode(&over)).unwrap();
        assert_eq!(got.hears, Hears::Unknown);
    }

    #[test]
    fn rejects_bad_params() {
        assert_eq!(
            Membership::new("", 1, Params::default()).unwrap_err(),
            ParamsError::NodeName(0)
        );
        assert!(Membership::new("a".repeat(254), 1, Params::default()).is_err());
        let p = Params {
            interval: Duration::ZERO,
            ..Params::default()
        };
        assert_eq!(
            Membership::new("a", 1, p).unwrap_err(),
            ParamsError::ZeroInterval
        );
        let p = Params {
            dead_after: Duration::from_millis(100),
            ..Params::default()
        };
        assert!(matches!(
            Membership::new("a", 1, p),
            Err(ParamsError::DeadAfterTooShort { .. })
        ));
    }

    #[test]
    fn debug_output_does_not_leak_the_secret() {
        let m = member("a", 1, Some("hunter2"));
        assert!(!format!("{m:?}").contains("hunter2"));
    }

    #[test]
    fn alive_always_includes_self() {
        let m = member("me", 1, None);
        assert_eq!(m.alive(), names(&["me"]));
    }

    #[test]
    fn peer_is_alive_until_dead_after_then_expires() {
        let t0 = Instant::now();
        let mut a = member("a", 1, None);
        let mut b = member("b", 1, None);
        assert_eq!(
            a.on_datagram(t0, &b.encode_heartbeat(false), src()),
            Ok(up("b"))
        );
        assert_eq!(a.alive(), names(&["a", "b"]));
        assert!(a.tick(t0 + 599 * MS).is_empty());
        assert_eq!(a.alive(), names(&["a", "b"]));
        assert_eq!(
            a.tick(t0 + 600 * MS),
            vec![Change::Down {
                node: "b".into(),
                reason: DownReason::Expired
            }]
        );
        assert_eq!(a.alive(), names(&["a"]));
        assert!(a.tick(t0 + 700 * MS).is_empty(), "reported once");
        // Back after an outage, same incarnation, higher sequence.
        assert_eq!(
            a.on_datagram(t0 + 800 * MS, &b.encode_heartbeat(false), src()),
            Ok(up("b"))
        );
    }

    #[test]
    fn regular_heartbeats_keep_peer_alive() {
        let t0 = Instant::now();
        let mut a = member("a", 1, None);
        let mut b = member("b", 1, None);
        for i in 0..50u32 {
            let now = t0 + i * 100 * MS;
            let r = a.on_datagram(now, &b.encode_heartbeat(false), src());
            assert_eq!(r, Ok(if i == 0 { up("b") } else { None }));
            assert!(a.tick(now + 50 * MS).is_empty());
        }
    }

    #[test]
    fn replayed_and_reordered_datagrams_are_rejected() {
        let t0 = Instant::now();
        let mut a = member("a", 1, Some("k"));
        let mut b = member("b", 1, Some("k"));
        let first = b.encode_heartbeat(false);
        let second = b.encode_heartbeat(false);
        assert_eq!(a.on_datagram(t0, &second, src()), Ok(up("b")));
        assert_eq!(a.on_datagram(t0, &second, src()), Err(RejectReason::Replay));
        assert_eq!(a.on_datagram(t0, &first, src()), Err(RejectReason::Replay));
        // A replay does not refresh liveness.
        let _ = a.on_datagram(t0 + 590 * MS, &second, src());
        assert_eq!(a.tick(t0 + 600 * MS).len(), 1);
    }

    #[test]
    fn leaving_marks_dead_at_once_and_the_incarnation_stays_dead() {
        let t0 = Instant::now();
        let mut a = member("a", 1, None);
        let mut b = member("b", 1, None);
        let _ = a.on_datagram(t0, &b.encode_heartbeat(false), src());
        let late = b.encode_heartbeat(false);
        let leaves: Vec<_> = (0..3).map(|_| b.encode_heartbeat(true)).collect();
        assert_eq!(
            a.on_datagram(t0 + MS, &leaves[0], src()),
            Ok(Some(Change::Down {
                node: "b".into(),
                reason: DownReason::Left
            }))
        );
        assert_eq!(a.alive(), names(&["a"]));
        assert_eq!(a.on_datagram(t0 + MS, &leaves[1], src()), Ok(None));
        assert_eq!(a.on_datagram(t0 + MS, &leaves[2], src()), Ok(None));
        assert_eq!(
            a.on_datagram(t0 + MS, &late, src()),
            Err(RejectReason::Replay)
        );
        assert_eq!(
            a.on_datagram(t0 + MS, &b.encode_heartbeat(false), src()),
            Err(RejectReason::AfterLeave)
        );
        assert!(a.tick(t0 + 10 * 600 * MS).is_empty(), "no second Down");
        assert_eq!(a.alive(), names(&["a"]));
    }

    #[test]
    fn first_heartbeat_leaving_is_recorded_dead() {
        let t0 = Instant::now();
        let mut a = member("a", 1, None);
        let mut b = member("b", 1, None);
        assert_eq!(
            a.on_datagram(t0, &b.encode_heartbeat(true), src()),
            Ok(None)
        );
        assert_eq!(a.alive(), names(&["a"]));
    }

    #[test]
    fn new_incarnation_replaces_old_one() {
        let t0 = Instant::now();
        let mut a = member("a", 1, None);
        let mut b1 = member("b", 10, None);
        for _ in 0..5 {
            let _ = a.on_datagram(t0, &b1.encode_heartbeat(false), src());
        }
        // Restart without being seen dead: sequence numbers start over.
        let mut b2 = member("b", 20, None);
        assert_eq!(
            a.on_datagram(t0 + MS, &b2.encode_heartbeat(false), src()),
            Ok(Some(Change::Restarted { node: "b".into() }))
        );
        // The old process's traffic is stale now.
        assert_eq!(
            a.on_datagram(t0 + MS, &b1.encode_heartbeat(false), src()),
            Err(RejectReason::StaleIncarnation)
        );
        // Leave, then restart: alive again.
        let _ = a.on_datagram(t0 + 2 * MS, &b2.encode_heartbeat(true), src());
        assert_eq!(a.alive(), names(&["a"]));
        let mut b3 = member("b", 30, None);
        assert_eq!(
            a.on_datagram(t0 + 3 * MS, &b3.encode_heartbeat(false), src()),
            Ok(up("b"))
        );
        // A new incarnation that leaves right away.
        let mut b4 = member("b", 40, None);
        assert_eq!(
            a.on_datagram(t0 + 4 * MS, &b4.encode_heartbeat(true), src()),
            Ok(Some(Change::Down {
                node: "b".into(),
                reason: DownReason::Left
            }))
        );
    }

    #[test]
    fn dead_peers_are_forgotten_after_forget_after() {
        let t0 = Instant::now();
        let mut a = member("a", 1, None);
        let mut b = member("b", 100, None);
        let _ = a.on_datagram(t0, &b.encode_heartbeat(false), src());
        assert_eq!(a.tick(t0 + Duration::from_secs(1)).len(), 1);
        let mut b_old_clock = member("b", 50, None);
        assert_eq!(
            a.on_datagram(
                t0 + Duration::from_secs(2),
                &b_old_clock.encode_heartbeat(false),
                src()
            ),
            Err(RejectReason::StaleIncarnation)
        );
        assert!(a.tick(t0 + Duration::from_secs(301)).is_empty());
        assert_eq!(a.last_source("b"), None, "forgotten");
        assert_eq!(
            a.on_datagram(
                t0 + Duration::from_secs(302),
                &b_old_clock.encode_heartbeat(false),
                src()
            ),
            Ok(up("b"))
        );
    }

    #[test]
    fn heartbeats_also_go_to_peers_that_reached_us() {
        let t0 = Instant::now();
        let mut a = member("a", 1, Some("k"));
        let mut b = member("b", 1, Some("k"));
        let b_addr: SocketAddr = "192.0.2.2:7946".parse().expect("addr");
        assert!(a.targets().is_empty());
        assert_eq!(
            a.on_datagram(t0, &b.encode_heartbeat(false), b_addr),
            Ok(up("b"))
        );
        assert_eq!(a.targets(), BTreeSet::from([b_addr]));
        // Dead peers are not heartbeated unless configured.
        a.tick(t0 + Duration::from_secs(2));
        assert!(a.targets().is_empty());
    }

    #[test]
    fn unverified_claims_only_add_to_unheard_by() {
        let t0 = Instant::now();
        let mut a = member("a", 1, Some("k1"));
        a.set_local(names(&["a", "b"]), false);
        let other = Codec::new(Some("k2"));
        let says = |hears: Hears, trusts_gossip: bool, seq: u64| Heartbeat {
            trusts_gossip,
            hears,
            ..hb("b", 1, seq, false)
        };
        let not_a = || Hears::AllBut(BTreeSet::from([name_id("a")]));
        // A speaker with another secret that elects from its gossip and does not hear "a".
        let bytes = other.encode(&says(not_a(), true, 1));
        assert_eq!(a.on_datagram(t0, &bytes, src()), Err(RejectReason::BadTag));
        assert_eq!(a.unheard_by(), names(&["b"]));
        assert!(a.take_report_change());
        // An unverified "I hear you now" cannot clear it (forged claims only silence).
        let bytes = other.encode(&says(Hears::AllBut(BTreeSet::new()), true, 2));
        assert_eq!(a.on_datagram(t0, &bytes, src()), Err(RejectReason::BadTag));
        assert_eq!(a.unheard_by(), names(&["b"]));
        // It expires after dead_after without a new claim.
        a.tick(t0 + Duration::from_millis(599));
        assert_eq!(a.unheard_by(), names(&["b"]));
        a.tick(t0 + Duration::from_millis(600));
        assert!(a.unheard_by().is_empty());
        // Not counted from a speaker that decides from Kubernetes alone, nor from one that
        // Kubernetes does not list.
        let bytes = other.encode(&says(not_a(), false, 3));
        let _ = a.on_datagram(t0, &bytes, src());
        assert!(a.unheard_by().is_empty());
        a.set_local(names(&["a"]), false);
        let bytes = other.encode(&says(not_a(), true, 4));
        let _ = a.on_datagram(t0, &bytes, src());
        assert!(a.unheard_by().is_empty());
        // An authenticated heartbeat sets and clears it, and its report is kept.
        a.set_local(names(&["a", "b"]), false);
        let same = Codec::new(Some("k1"));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            a.on_datagram(t1, &same.encode(&says(not_a(), true, 5)), src()),
            Ok(up("b"))
        );
        assert_eq!(a.unheard_by(), names(&["b"]));
        assert_eq!(
            a.reports().get("b"),
            Some(&Report {
                hears: not_a(),
                trusts_gossip: true
            })
        );
        let bytes = same.encode(&says(Hears::AllBut(BTreeSet::new()), true, 6));
        assert_eq!(a.on_datagram(t1, &bytes, src()), Ok(None));
        assert!(a.unheard_by().is_empty());
    }

    #[test]
    fn own_report_lists_whom_it_does_not_hear() {
        let t0 = Instant::now();
        let mut a = member("a", 1, None);
        a.set_local(names(&["a", "b", "c"]), true);
        let mut b = member("b", 1, None);
        a.on_datagram(t0, &b.encode_heartbeat(false), src())
            .unwrap();
        let hb = Codec::new(None).decode(&a.encode_heartbeat(false)).unwrap();
        assert!(hb.trusts_gossip);
        assert_eq!(hb.hears, Hears::AllBut(BTreeSet::from([name_id("c")])));
        assert_eq!(hb.hears.hears("b"), Some(true));
        assert_eq!(hb.hears.hears("c"), Some(false));
        // More unheard than heard: the list of those it hears is the shorter one.
        a.set_local(names(&["a", "b", "c", "d", "e", "f"]), false);
        let hb = Codec::new(None).decode(&a.encode_heartbeat(false)).unwrap();
        assert_eq!(
            hb.hears,
            Hears::Only(BTreeSet::from([name_id("a"), name_id("b")]))
        );
    }

    #[test]
    fn majority_counts_reports_and_the_speaker_itself() {
        let trusts = |not: &[&str]| Report {
            hears: Hears::AllBut(not.iter().map(|n| name_id(n)).collect()),
            trusts_gossip: true,
        };
        let known = names(&["a", "b", "c"]);
        // "b" does not hear "a"; "a" hears everyone: "c" hears "a", so "b" counts "a" too.
        let at_b = heard_by_majority(
            "b",
            &names(&["b", "c"]),
            &BTreeMap::from([("c".into(), trusts(&[]))]),
            &known,
        );
        assert_eq!(at_b, known);
        // Nobody hears "a" although it hears everyone: it leaves itself out.
        let at_a = heard_by_majority(
            "a",
            &names(&["a", "b", "c"]),
            &BTreeMap::from([("b".into(), trusts(&["a"])), ("c".into(), trusts(&["a"]))]),
            &known,
        );
        assert_eq!(at_a, names(&["b", "c"]));
        // A crashed speaker nobody hears is not kept; the survivor of two keeps itself.
        assert_eq!(
            heard_by_majority("a", &names(&["a"]), &BTreeMap::new(), &names(&["a", "b"])),
            names(&["a"])
        );
        // A peer of the previous release (no report) counts only itself.
        let v1 = Report {
            hears: Hears::Unknown,
            trusts_gossip: false,
        };
        let at_a = heard_by_majority(
            "a",
            &names(&["a", "b"]),
            &BTreeMap::from([("b".into(), v1)]),
            &names(&["a", "b"]),
        );
        assert_eq!(at_a, names(&["b"]));
    }

    #[test]
    fn without_a_secret_a_claimed_source_is_not_answered() {
        // Failed before: any datagram with a spoofed source made the speaker send it
        // heartbeats (a reflector).
        let t0 = Instant::now();
        let mut a = member("a", 1, None);
        let mut b = member("b", 1, None);
        let victim: SocketAddr = "203.0.113.9:53".parse().expect("addr");
        assert_eq!(
            a.on_datagram(t0, &b.encode_heartbeat(false), victim),
            Ok(up("b"))
        );
        assert!(a.targets().is_empty());
    }

    #[test]
    fn own_name_is_loopback_or_duplicate() {
        let t0 = Instant::now();
        let mut a = member("a", 1, None);
        let own = a.encode_heartbeat(false);
        assert_eq!(a.on_datagram(t0, &own, src()), Err(RejectReason::Loopback));
        let mut impostor = member("a", 2, None);
        assert_eq!(
            a.on_datagram(t0, &impostor.encode_heartbeat(false), src()),
            Err(RejectReason::DuplicateName)
        );
        assert_eq!(a.alive(), names(&["a"]));
    }

    #[test]
    fn node_table_is_bounded() {
        let t0 = Instant::now();
        let mut a = Membership::new(
            "a",
            1,
            Params {
                max_nodes: 2,
                ..Params::default()
            },
        )
        .unwrap();
        for n in ["b", "c"] {
            assert_eq!(
                a.on_datagram(t0, &member(n, 1, None).encode_heartbeat(false), src()),
                Ok(up(n))
            );
        }
        assert_eq!(
            a.on_datagram(t0, &member("d", 1, None).encode_heartbeat(false), src()),
            Err(RejectReason::TooManyNodes)
        );
        // Known nodes still get through.
        let mut b = member("b", 2, None);
        assert!(a.on_datagram(t0, &b.encode_heartbeat(false), src()).is_ok());
    }

    #[test]
    fn set_peers_excludes_own_address() {
        let mut a = member("a", 1, None);
        let own: SocketAddr = "10.0.0.1:7946".parse().unwrap();
        let other: SocketAddr = "10.0.0.2:7946".parse().unwrap();
        assert!(a.set_peers([own, other].into(), own));
        assert_eq!(a.peers(), &BTreeSet::from([other]));
        assert!(!a.set_peers([other].into(), own));
    }

    #[test]
    fn sequence_numbers_increase_per_round() {
        let mut a = member("a", 1, None);
        let codec = Codec::new(None);
        let s1 = codec.decode(&a.encode_heartbeat(false)).unwrap().seq;
        let s2 = codec.decode(&a.encode_heartbeat(true)).unwrap().seq;
        assert!(s2 > s1);
    }

    #[test]
    fn fencing_decision_table() {
        // API reachable: never fenced.
        assert!(!fenced(true, 1, 5));
        assert!(!fenced(true, 0, 100));
        // API lost: fenced without a strict majority.
        assert!(fenced(false, 1, 5));
        assert!(fenced(false, 2, 5));
        assert!(!fenced(false, 3, 5));
        assert!(fenced(false, 2, 4), "half is not a majority");
        assert!(!fenced(false, 3, 4));
        // Single speaker: never fenced by majority.
        assert!(!fenced(false, 1, 1));
        // Two speakers, the other one gone, API gone: step back.
        assert!(fenced(false, 1, 2));
        assert!(!fenced(false, 2, 2));
        // No pods listed yet / stale list smaller than what we see.
        assert!(!fenced(false, 1, 0));
        assert!(!fenced(false, 4, 3));
        assert!(!fenced(false, usize::MAX, usize::MAX));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            let _ = Codec::new(None).decode(&bytes);
            let _ = Codec::new(Some("k")).decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_mutated_heartbeats(
            name in "[a-z0-9.-]{1,253}",
            inc: u64, seq: u64, leaving: bool,
            flips in proptest::collection::vec((0usize..300, any::<u8>()), 1..4),
            cut in 0usize..300,
        ) {
            for secret in [None, Some("k")] {
                let codec = Codec::new(secret);
                let mut b = codec.encode(&hb(&name, inc, seq, leaving));
                for (i, x) in &flips {
                    if let Some(byte) = b.get_mut(*i) {
                        *byte ^= x;
                    }
                }
                let _ = codec.decode(&b);
                let _ = codec.decode(&b[..cut.min(b.len())]);
            }
        }

        #[test]
        fn encode_decode_roundtrip(
            name in "[a-z0-9.-]{1,253}",
            inc: u64, seq: u64, leaving: bool, trusts_gossip: bool,
            kind in 0u8..3,
            ids in proptest::collection::btree_set(any::<u32>(), 0..=MAX_LIST),
            secret in proptest::option::of("[ -~]{1,64}"),
        ) {
            let codec = Codec::new(secret.as_deref());
            let hears = match kind {
                0 => Hears::AllBut(ids),
                1 => Hears::Only(ids),
                _ => Hears::Unknown,
            };
            let hb = Heartbeat { trusts_gossip, hears, ..hb(&name, inc, seq, leaving) };
            let bytes = codec.encode(&hb);
            prop_assert!(bytes.len() <= MAX_DATAGRAM);
            prop_assert_eq!(codec.decode(&bytes), Ok(hb));
        }

        #[test]
        fn fencing_is_monotonic(api: bool, alive in 0usize..1000, known in 0usize..1000) {
            // More alive peers never fence; fewer known peers never fence; API access unfences.
            if !fenced(api, alive, known) {
                prop_assert!(!fenced(api, alive + 1, known));
                prop_assert!(!fenced(api, alive, known.saturating_sub(1)));
            }
            prop_assert!(!fenced(true, alive, known));
            prop_assert_eq!(fenced(false, alive, known), 2 * alive <= known);
        }

        /// Random interleavings of heartbeats, replays, leaves, restarts and ticks: self is
        /// always alive, an alive peer was heard within `dead_after`, and the reported changes
        /// track the alive set exactly.
        #[test]
        fn alive_set_tracks_changes(ops in proptest::collection::vec((0u8..6, 0usize..3, 0u64..400), 1..200)) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut me = member("me", 1, Some("k"));
            let mut senders: Vec<Membership> =
                ["p0", "p1", "p2"].iter().map(|n| member(n, 1, Some("k"))).collect();
            let mut incs = [1u64; 3];
            let mut sent: Vec<Vec<u8>> = Vec::new();
            let mut last_heard: BTreeMap<String, Instant> = BTreeMap::new();
            let mut expected = names(&["me"]);
            for (op, who, dt) in ops {
                now += Duration::from_millis(dt);
                let name = format!("p{who}");
                let changes = match op {
                    0..=2 => {
                        let b = senders[who].encode_heartbeat(false);
                        sent.push(b.clone());
                        let r = me.on_datagram(now, &b, src());
                        if r.is_ok() { last_heard.insert(name.clone(), now); }
                        r.ok().flatten().into_iter().collect::<Vec<_>>()
                    }
                    3 => {
                        let b = senders[who].encode_heartbeat(true);
                        me.on_datagram(now, &b, src()).ok().flatten().into_iter().collect()
                    }
                    4 => {
                        incs[who] += 1;
                        senders[who] = member(&name, incs[who], Some("k"));
                        Vec::new()
                    }
                    _ => {
                        let r = sent.get(usize::try_from(dt).unwrap_or(0) % sent.len().max(1)).cloned();
                        if let Some(b) = r {
                            // Replays are always rejected or harmless leaves of dead nodes.
                            let before = me.alive();
                            let res = me.on_datagram(now, &b, src());
                            prop_assert!(res.is_err() || me.alive() == before);
                        }
                        Vec::new()
                    }
                };
                let mut changes = changes;
                changes.extend(me.tick(now));
                for c in changes {
                    match c {
                        Change::Up { node } => prop_assert!(expected.insert(node)),
                        Change::Down { node, .. } => prop_assert!(expected.remove(&node)),
                        Change::Restarted { node } => prop_assert!(expected.contains(&node)),
                    }
                }
                let alive = me.alive();
                prop_assert_eq!(&alive, &expected);
                prop_assert!(alive.contains("me"));
                for n in alive.iter().filter(|n| *n != "me") {
                    let heard = last_heard.get(n).copied().unwrap_or(t0);
                    prop_assert!(now.saturating_duration_since(heard) < me.params().dead_after);
                }
            }
        }
    }
}
