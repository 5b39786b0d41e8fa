//! core/v1 Events, the kind MetalLB 0.9–0.12's RBAC grants (`events` create/patch in the core
//! group). kube's `Recorder` writes events.k8s.io/v1, which that RBAC forbids, so we build
//! core/v1 Events ourselves, with client-go's recorder semantics (MetalLB 0.12.1 records
//! through client-go's `record.NewBroadcaster`, internal/k8s/k8s.go:137–139):
//!
//! - dedup: the same source, object, type, reason and message as an earlier Event PATCHes that
//!   Event's `count`, `lastTimestamp` and `message` instead of creating another (client-go
//!   `eventLogger`, an LRU of 4096 keys, no time limit); a PATCH that finds the Event gone (the
//!   apiserver's Event TTL) creates it again;
//! - aggregation: ten different messages for the same object, type and reason within ten
//!   minutes become one "(combined from similar events): …" Event (`EventAggregator`);
//! - spam filter: 25 Events per source and object, then one per five minutes
//!   (`EventSourceObjectSpamFilter`);
//! - writes are queued (1000, dropped when full) and written by one task, one at a time, each
//!   with a timeout: posting an Event never waits for the apiserver, and a failed write is
//!   dropped (logged once), as client-go does after its retries.
//!
//! The correlation is pure ([`Correlator`], clock passed in). Unlike client-go's legacy Events
//! we set `eventTime` and the reporting fields, so the apiserver applies its limits to them:
//! messages are cut to 1024 bytes and `reportingInstance`, `reason` and `action` to 128.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `Normal`.
    Normal,
    /// `Warning`.
    Warning,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Normal => "Normal",
            Kind::Warning => "Warning",
        }
    }
}

/// The apiserver's limit on an Event message (`NoteLengthLimit`), in bytes.
pub const MESSAGE_LIMIT: usize = 1024;
/// The apiserver's limit on `reportingInstance`, `reason` and `action`, in bytes.
pub const FIELD_LIMIT: usize = 128;
/// Events waiting to be written (client-go's `maxQueuedEvents`); more are dropped.
const QUEUE: usize = 1000;
/// One Event write (create or patch) must finish within this time.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Entries of each correlation cache (client-go's `maxLruCacheEntries`).
const CACHE_ENTRIES: usize = 4096;
/// Different messages with one reason before they are combined (`defaultAggregateMaxEvents`).
const AGGREGATE_MAX: usize = 10;
/// The window of that count (`defaultAggregateIntervalInSeconds`).
const AGGREGATE_WINDOW: Duration = Duration::from_secs(600);
/// Events per source and object before the refill rate applies (`defaultSpamBurst`).
const SPAM_BURST: f64 = 25.0;
/// One more Event per source and object every this long (`defaultSpamQPS` = 1/300).
const SPAM_REFILL: Duration = Duration::from_secs(300);

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The object reference of any resource.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        ..Default::default()
    }
}

/// The name of an object, for messages.
pub fn name_of<K: ResourceExt>(obj: &K) -> String {
    obj.name_any()
}

/// What to write for one Event occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A new Event object named `name` (count 1, or `count` when re-creating a lost one).
    Create {
        /// The Event's name.
        name: String,
        /// Its message (possibly combined).
        message: String,
    },
    /// Another occurrence of the Event `name`: set its count and lastTimestamp.
    Patch {
        /// The existing Event's name.
        name: String,
        /// The new count.
        count: i32,
        /// When it first happened.
        first: Timestamp,
        /// Its message (possibly combined).
        message: String,
    },
    /// Dropped by the spam filter.
    Skip,
}

/// One occurrence, as the correlator sees it.
#[derive(Debug, Clone)]
pub struct Occurrence<'a> {
    /// Source component and host.
    pub source: (&'a str, &'a str),
    /// The object.
    pub object: &'a ObjectReference,
    /// Normal or Warning.
    pub kind: Kind,
    /// Reason.
    pub reason: &'a str,
    /// Message.
    pub message: &'a str,
}

impl Occurrence<'_> {
    fn object_key(&self) -> String {
        let o = self.object;
        [
            self.source.0,
            self.source.1,
            o.kind.as_deref().unwrap_or_default(),
            o.namespace.as_deref().unwrap_or_default(),
            o.name.as_deref().unwrap_or_default(),
            o.uid.as_deref().unwrap_or_default(),
            o.api_version.as_deref().unwrap_or_default(),
        ]
        .join("\u{0}")
    }

    fn aggregate_key(&self) -> String {
        format!(
            "{}\u{0}{}\u{0}{}",
            self.object_key(),
            self.kind.as_str(),
            self.reason
        )
    }

    fn event_key(&self, message: &str) -> String {
        format!(
            "{}\u{0}{}\u{0}{}",
            self.aggregate_key(),
            self.object.field_path.as_deref().unwrap_or_default(),
            message
        )
    }
}

/// A map that keeps at most [`CACHE_ENTRIES`] keys, forgetting the least recently used. Keys
/// are kept as 64-bit hashes under a per-process random key: client-go's keys are whole
/// strings (object, reason, message: a few hundred bytes each, three caches of 4096), which
/// at a start with thousands of Services was megabytes for the same decisions; a collision
/// (one in 2^64 per pair, not steerable from outside) would merge two Events' counts.
#[derive(Debug)]
struct Lru<V> {
    map: HashMap<u64, (u64, V)>,
    tick: u64,
    hasher: std::collections::hash_map::RandomState,
}

impl<V> Default for Lru<V> {
    fn default() -> Self {
        Lru {
            map: HashMap::new(),
            tick: 0,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl<V> Lru<V> {
    fn hash(&self, key: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.tick += 1;
        let tick = self.tick;
        let h = self.hash(key);
        self.map.get_mut(&h).map(|(t, v)| {
            *t = tick;
            v
        })
    }

    fn insert(&mut self, key: &str, v: V) {
        self.tick += 1;
        let h = self.hash(key);
        if self.map.len() >= CACHE_ENTRIES && !self.map.contains_key(&h) {
            let oldest = self.map.iter().min_by_key(|(_, (t, _))| *t);
            if let Some(k) = oldest.map(|(k, _)| *k) {
                self.map.remove(&k);
            }
        }
        self.map.insert(h, (self.tick, v));
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct Aggregate {
    /// Hashes of the distinct messages (only their number matters).
    messages: BTreeSet<u64>,
    last: Instant,
}

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    count: i32,
    first: Timestamp,
}

/// client-go's `EventCorrelator` (tools/record/events_cache.go): spam filter, aggregation,
/// dedup. Pure: the caller passes the monotonic and wall clocks.
#[derive(Debug, Default)]
pub struct Correlator {
    spam: Lru<Bucket>,
    aggregates: Lru<Aggregate>,
    seen: Lru<Seen>,
}

impl Correlator {
    /// Decide what to write for `occ` at `now` (monotonic) / `wall` (for names and times).
    pub fn observe(&mut self, occ: &Occurrence<'_>, now: Instant, wall: Timestamp) -> Write {
        // Spam filter: a token bucket per source + object.
        let okey = occ.object_key();
        let refill = 1.0 / SPAM_REFILL.as_secs_f64();
        let allowed = match self.spam.get_mut(&okey) {
            Some(b) => {
                let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
                b.tokens = (b.tokens + elapsed * refill).min(SPAM_BURST);
                b.at = now;
                let ok = b.tokens >= 1.0;
                if ok {
                    b.tokens -= 1.0;
                }
                ok
            }
            None => {
                self.spam.insert(
                    &okey,
                    Bucket {
                        tokens: SPAM_BURST - 1.0,
                        at: now,
                    },
                );
                true
            }
        };
        if !allowed {
            return Write::Skip;
        }

        // Aggregation: many different messages for one reason become one combined Event.
        let akey = occ.aggregate_key();
        let message = truncate_utf8(occ.message, MESSAGE_LIMIT);
        let fresh = || Aggregate {
            messages: BTreeSet::new(),
            last: now,
        };
        let mut agg = match self.aggregates.get_mut(&akey) {
            Some(a) if now.saturating_duration_since(a.last) <= AGGREGATE_WINDOW => {
                std::mem::replace(a, fresh())
            }
            _ => fresh(),
        };
        agg.messages.insert(self.aggregates.hash(message));
        agg.last = now;
        let combined = agg.messages.len() >= AGGREGATE_MAX;
        if combined {
            agg.messages.pop_first();
        }
        self.aggregates.insert(&akey, agg);
        let (key, message) = if combined {
            let m = format!("(combined from similar events): {message}");
            (akey, truncate_utf8(&m, MESSAGE_LIMIT).to_string())
        } else {
            (occ.event_key(message), message.to_string())
        };

        // Dedup: the same Event again is another count on the first one.
        if let Some(s) = self.seen.get_mut(&key) {
            s.count = s.count.saturating_add(1);
            return Write::Patch {
                name: s.name.clone(),
                count: s.count,
                first: s.first,
                message,
            };
        }
        let name = event_name(occ.object.name.as_deref().unwrap_or("object"), wall);
        self.seen.insert(
            &key,
            Seen {
                name: name.clone(),
                count: 1,
                first: wall,
            },
        );
        Write::Create { name, message }
    }
}

/// client-go's Event names: `<object>.<unix nanoseconds in hex>`, within the 253-byte limit.
fn event_name(object: &str, wall: Timestamp) -> String {
    let suffix = format!(".{:x}", wall.as_nanosecond().max(0));
    format!(
        "{}{suffix}",
        truncate_utf8(object, 253usize.saturating_sub(suffix.len()))
    )
}

/// One Event to write.
#[derive(Debug)]
struct Job {
    object: ObjectReference,
    kind: Kind,
    reason: String,
    message: String,
}

/// Writes core/v1 Events for one component (`metallb-controller`, `metallb-speaker`). Cheap to
/// clone; posting never waits for the apiserver.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Job>,
}

static WARNED: AtomicBool = AtomicBool::new(false);

impl Recorder {
    /// A recorder for `component` (the Event source), optionally naming the host. Starts its
    /// writer task (needs a Tokio runtime).
    pub fn new(client: Client, component: &'static str, host: Option<String>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(client, component, host, rx));
        Recorder { tx }
    }

    /// Queue an Event about `obj`; dropped (debug log) when the queue is full.
    pub fn post(&self, obj: &ObjectReference, kind: Kind, reason: &str, message: &str) {
        let job = Job {
            object: obj.clone(),
            kind,
            reason: reason.to_string(),
            message: message.to_string(),
        };
        if self.tx.try_send(job).is_err() {
            tracing::debug!(reason, "Event queue full; dropping an Event");
        }
    }

    /// [`Recorder::post`], for callers that await: returns at once.
    pub async fn publish(&self, obj: &ObjectReference, kind: Kind, reason: &str, message: &str) {
        self.post(obj, kind, reason, message);
    }
}

/// The one task that writes a recorder's Events, in order.
async fn writer(
    client: Client,
    component: &'static str,
    host: Option<String>,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut correlator = Correlator::default();
    let instance = truncate_utf8(host.as_deref().unwrap_or(component), FIELD_LIMIT).to_string();
    while let Some(job) = rx.recv().await {
        let wall = Timestamp::now();
        let occ = Occurrence {
            source: (component, host.as_deref().unwrap_or_default()),
            object: &job.object,
            kind: job.kind,
            reason: &job.reason,
            message: &job.message,
        };
        let write = correlator.observe(&occ, Instant::now(), wall);
        let ns = job
            .object
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        let reason = truncate_utf8(&job.reason, FIELD_LIMIT);
        let build = |name: String, message: String, count: i32, first: Timestamp| Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: job.object.clone(),
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(job.kind.as_str().into()),
            source: Some(EventSource {
                component: Some(component.into()),
                host: host.clone(),
            }),
            first_timestamp: Some(Time(first)),
            last_timestamp: Some(Time(wall)),
            event_time: Some(MicroTime(first)),
            reporting_component: Some(component.into()),
            reporting_instance: Some(instance.clone()),
            action: Some(reason.to_string()),
            count: Some(count),
            ..Default::default()
        };
        let result = match write {
            Write::Skip => {
                tracing::debug!(reason, "Event dropped by the spam filter");
                continue;
            }
            Write::Create { name, message } => {
                let ev = build(name, message, 1, wall);
                timed(api.create(&PostParams::default(), &ev)).await
            }
            Write::Patch {
                name,
                count,
                first,
                message,
            } => {
                let patch = serde_json::json!({
                    "count": count,
                    "lastTimestamp": Time(wall),
                    "message": message,
                });
                match timed(api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))).await
                {
                    // Gone (the Event TTL expired): write it again, as client-go does.
                    Err(e) if is_not_found(&e) => {
                        let ev = build(name, message, count, first);
                        timed(api.create(&PostParams::default(), &ev)).await
                    }
                    r => r,
                }
            }
        };
        if let Err(e) = result {
            let object = job.object.name.as_deref().unwrap_or_default();
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, reason, object, "Cannot write Events; carrying on without them");
            } else {
                tracing::debug!(error = %e, reason, object, "Event not written");
            }
        }
    }
}

/// An Event write error: the apiserver's, or a timeout.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("timed out after {WRITE_TIMEOUT:?}")]
    Timeout,
}

fn is_not_found(e: &WriteError) -> bool {
    matches!(e, WriteError::Api(kube::Error::Api(s)) if s.code == 404)
}

async fn timed<T>(f: impl Future<Output = kube::Result<T>>) -> Result<T, WriteError> {
    match tokio::time::timeout(WRITE_TIMEOUT, f).await {
        Ok(r) => r.map_err(WriteError::from),
        Err(_) => Err(WriteError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn occ<'a>(obj: &'a ObjectReference, reason: &'a str, message: &'a str) -> Occurrence<'a> {
        Occurrence {
            source: ("metallb-controller", ""),
            object: obj,
            kind: Kind::Warning,
            reason,
            message,
        }
    }

    #[test]
    fn truncates_on_a_character_boundary() {
        assert_eq!(truncate_utf8("abc", 3), "abc");
        assert_eq!(truncate_utf8("abcd", 3), "abc");
        // "é" is two bytes: never cut in the middle of it.
        assert_eq!(truncate_utf8("aé", 2), "a");
        let long = "é".repeat(600);
        let cut = truncate_utf8(&long, MESSAGE_LIMIT);
        assert_eq!(cut.len(), MESSAGE_LIMIT);
        assert!(long.starts_with(cut));
    }

    #[test]
    fn the_same_event_again_patches_the_first() {
        let mut c = Correlator::default();
        let (o, t0, w) = (svc("a"), Instant::now(), Timestamp::UNIX_EPOCH);
        let Write::Create { name, .. } = c.observe(&occ(&o, "AllocationFailed", "no IPs"), t0, w)
        else {
            panic!("first is a create");
        };
        for n in 2..=3 {
            let t = t0 + Duration::from_secs(n);
            match c.observe(&occ(&o, "AllocationFailed", "no IPs"), t, w) {
                Write::Patch {
                    name: n2, count, ..
                } => {
                    assert_eq!(n2, name);
                    assert_eq!(count, i32::try_from(n).unwrap());
                }
                other => panic!("{other:?}"),
            }
        }
        // Another message, reason or object is another Event.
        assert!(matches!(
            c.observe(&occ(&o, "AllocationFailed", "other"), t0, w),
            Write::Create { .. }
        ));
        assert!(matches!(
            c.observe(&occ(&svc("b"), "AllocationFailed", "no IPs"), t0, w),
            Write::Create { .. }
        ));
    }

    #[test]
    fn ten_messages_for_one_reason_are_combined() {
        let mut c = Correlator::default();
        let (o, t0, w) = (svc("a"), Instant::now(), Timestamp::UNIX_EPOCH);
        let msgs: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
        let writes: Vec<Write> = msgs
            .iter()
            .map(|m| c.observe(&occ(&o, "R", m), t0, w))
            .collect();
        assert!(
            writes[..9]
                .iter()
                .all(|w| matches!(w, Write::Create { .. }))
        );
        assert!(
            matches!(&writes[9], Write::Create { message, .. } if message == "(combined from similar events): m9")
        );
        assert!(
            matches!(&writes[10], Write::Patch { count: 2, message, .. } if message == "(combined from similar events): m10")
        );
        // After ten quiet minutes the count starts over.
        let later = t0 + AGGREGATE_WINDOW + Duration::from_secs(1);
        assert!(matches!(
            c.observe(&occ(&o, "R", "fresh"), later, w),
            Write::Create { message, .. } if message == "fresh"
        ));
    }

    #[test]
    fn spam_filter_allows_a_burst_then_one_per_five_minutes() {
        let mut c = Correlator::default();
        let (o, t0, w) = (svc("a"), Instant::now(), Timestamp::UNIX_EPOCH);
        let allowed = (0..30)
            .filter(|_| c.observe(&occ(&o, "R", "same"), t0, w) != Write::Skip)
            .count();
        assert_eq!(allowed, 25);
        assert_ne!(
            c.observe(&occ(&o, "R", "same"), t0 + SPAM_REFILL, w),
            Write::Skip
        );
        assert_eq!(
            c.observe(&occ(&o, "R", "same"), t0 + SPAM_REFILL, w),
            Write::Skip
        );
    }

    #[test]
    fn names_are_client_go_style_and_bounded() {
        let w = Timestamp::from_nanosecond(0x1234).unwrap();
        assert_eq!(event_name("svc", w), "svc.1234");
        assert!(event_name(&"x".repeat(300), w).len() <= 253);
    }
}
