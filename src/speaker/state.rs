//! The speaker's decision loop: one task owns every piece of state ([`State`]), folds the
//! inputs of the watches, gossip and reloads, decides, and drives the layer 2 announcer and
//! the BGP sessions.

use super::gossip::{Gossip, LiveView, Local};
use super::world::{self, Mode, World};
use crate::bgp::{self, session::Sessions};
use crate::k8s::events::{Kind, Recorder};
use crate::l2::announcer::Announcer;
use crate::l2::plan::Plan;
use crate::metrics::{ClientMetrics, SpeakerMetrics};
use crate::reload::{Reload, Reloader};
use k8s_openapi::api::core::v1::ObjectReference;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use super::driver::*;

/// Everything the loop owns.
pub(super) struct State {
    pub(super) me: String,
    pub(super) recorder: Recorder,
    /// Bounds the Event writes in flight (they run off the loop, with a timeout).
    pub(super) event_slots: Arc<tokio::sync::Semaphore>,
    /// The start-up gates have passed once.
    pub(super) started: bool,
    pub(super) world: World,
    /// Object references of handled Services (for Events).
    /// What an Event about a Service needs beyond its key.
    pub(super) refs: BTreeMap<Arc<str>, SvcRef>,
    /// Slice key → service key (to drop slices that vanish during a relist).
    pub(super) slice_owner: BTreeMap<String, Arc<str>>,
    /// Keys seen during a running relist, per kind.
    pub(super) relisting: BTreeMap<Kind_, BTreeSet<String>>,
    pub(super) synced: BTreeSet<Kind_>,
    pub(super) expect_synced: BTreeSet<Kind_>,
    pub(super) pods_seen: bool,
    /// The latest apiserver probe (Pods list) succeeded.
    pub(super) api_ok: bool,
    pub(super) gossip_view: Option<LiveView>,
    pub(super) gossip_port: u16,
    pub(super) gossip_started: Instant,
    pub(super) warmup: Duration,
    pub(super) gossip: Option<Gossip>,
    pub(super) reload: Reloader,
    pub(super) config_ref: Option<ObjectReference>,
    pub(super) announcer: Announcer,
    /// What this node announces: IP → services.
    pub(super) owned: BTreeMap<IpAddr, Vec<Arc<str>>>,
    pub(super) last_live: BTreeSet<String>,
    pub(super) mode: Mode,
    /// This speaker currently leaves itself out because gossiping speakers do not hear it.
    pub(super) unheard: bool,
    /// The Pods list period outside minority.
    pub(super) normal_poll: Duration,
    /// Every node ever heard in our gossip.
    pub(super) heard_ever: BTreeSet<String>,
    pub(super) yield_to_go: bool,
    /// Go speakers we currently yield to.
    pub(super) foreign: Vec<String>,
    /// The BGP sessions.
    pub(super) bgp: Sessions,
    /// This node's labels (for the peers' node-selectors).
    pub(super) my_labels: BTreeMap<String, String>,
    /// What this node announces over BGP: IP → services.
    pub(super) bgp_owned: BTreeMap<IpAddr, Vec<Arc<str>>>,
    /// The config (sha256) whose BGP warning was last given.
    pub(super) bgp_warned: Option<String>,
    pub(super) poll_tx: watch::Sender<Duration>,
    pub(super) client_metrics: ClientMetrics,
    pub(super) metrics: SpeakerMetrics,
    pub(super) ready: Arc<AtomicBool>,
}

impl State {
    pub(super) async fn run(&mut self, mut rx: mpsc::Receiver<Input>) -> anyhow::Result<()> {
        /// Inputs after which the loop hands freed memory back to the kernel.
        const TRIM_AFTER_INPUTS: usize = 1000;
        // Until the first decision, a tick re-checks the start-up gates (warm-up is a timer);
        // after that every change arrives as an input.
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut churn = 0usize;
        loop {
            crate::http::decision_loop().beat();
            tokio::select! {
                input = rx.recv() => {
                    let Some(input) = input else { break };
                    if matches!(input, Input::Shutdown) {
                        break;
                    }
                    let mut changed = self.apply(input).await;
                    let mut applied = 1;
                    // Fold everything already queued before deciding once.
                    while let Ok(more) = rx.try_recv() {
                        if matches!(more, Input::Shutdown) {
                            return self.shutdown().await;
                        }
                        changed |= self.apply(more).await;
                        applied += 1;
                    }
                    // A Pods poll or gossip view equal to the last one decides nothing new:
                    // deciding over thousands of Services every poll period would churn
                    // megabytes of temporaries for nothing (BENCHMARKS.md, speaker memory).
                    if changed || !self.started {
                        self.decide().await;
                    }
                    // After a burst (start-up, a relist, a mass change) hand its memory back.
                    churn += applied;
                    if churn >= TRIM_AFTER_INPUTS {
                        churn = 0;
                        crate::sys::release_free_memory_soon();
                    }
                }
                _ = tick.tick(), if !self.started => self.decide().await,
            }
        }
        self.shutdown().await
    }

    /// Post an Event without blocking the loop: a hung apiserver connection must not stop
    /// failover, fencing or shutdown.
    pub(super) fn event(&self, r: ObjectReference, kind: Kind, reason: &str, msg: String) {
        let Ok(slot) = self.event_slots.clone().try_acquire_owned() else {
            debug!(reason, "Too many Event writes in flight; dropping one");
            return;
        };
        let recorder = self.recorder.clone();
        let reason = reason.to_string();
        tokio::spawn(async move {
            let write = recorder.publish(&r, kind, &reason, &msg);
            if tokio::time::timeout(EVENT_TIMEOUT, write).await.is_err() {
                debug!(reason = %reason, "Event write timed out");
            }
            drop(slot);
        });
    }

    /// Planned stop: go quiet first, then tell the other speakers (they take over on the first
    /// LEAVING heartbeat). The other order leaves both answering for the ~10 ms `leave()`
    /// spends repeating its message; this one leaves nobody answering for about a millisecond.
    pub(super) async fn shutdown(&mut self) -> anyhow::Result<()> {
        info!("Shutting down: withdrawing announcements and leaving the gossip");
        self.announcer.set_owned(BTreeSet::new());
        self.bgp.shutdown(Duration::from_secs(3)).await;
        if let Some(g) = self.gossip.take() {
            g.leave().await;
        }
        Ok(())
    }

    /// Fold one input into the state. False when it cannot change a decision (a Pods list,
    /// probe or gossip view equal to the last one); true otherwise.
    pub(super) async fn apply(&mut self, input: Input) -> bool {
        self.client_metrics.updates.inc();
        match input {
            Input::Config(c) => {
                if c.reference.is_some() {
                    self.config_ref = c.reference.clone();
                }
                let owned = self.all_announced();
                let outcome = self.reload.offer(c.payload.as_ref(), |cfg| {
                    world::check_announced(cfg, &owned)
                });
                self.handle_reload(outcome).await;
            }
            Input::Relist(k) => {
                self.relisting.insert(k, BTreeSet::new());
            }
            Input::RelistDone(k) => {
                let seen = self.relisting.remove(&k).unwrap_or_default();
                match k {
                    Kind_::Services => {
                        self.world.services.retain(|key, _| seen.contains(&**key));
                        self.refs.retain(|key, _| seen.contains(&**key));
                    }
                    Kind_::Slices => {
                        let gone: Vec<(String, Arc<str>)> = self
                            .slice_owner
                            .iter()
                            .filter(|(s, _)| !seen.contains(*s))
                            .map(|(s, o)| (s.clone(), o.clone()))
                            .collect();
                        for (slice, svc) in gone {
                            self.remove_slice(&slice, &svc);
                        }
                    }
                    Kind_::Endpoints => {
                        self.world.endpoints.retain(|key, _| seen.contains(&**key));
                    }
                    Kind_::Nodes => self.world.nodes.retain(|key, _| seen.contains(key)),
                }
                if k != Kind_::Nodes {
                    // The list pages are gone; hand their memory back (BENCHMARKS.md).
                    crate::sys::release_free_memory();
                }
                self.synced.insert(k);
            }
            Input::Service(key, info) => {
                self.mark_seen(Kind_::Services, &key);
                match info {
                    Some((info, r)) => {
                        let key = self.world.key(&key);
                        self.world.services.insert(key.clone(), info);
                        self.refs.insert(key, r);
                    }
                    None => {
                        self.world.services.remove(&*key);
                        self.refs.remove(&*key);
                    }
                }
            }
            Input::Slice(slice, svc, nodes) => {
                self.mark_seen(Kind_::Slices, &slice);
                match nodes {
                    Some(nodes) => {
                        if let Some(old) = self.slice_owner.get(&slice).cloned()
                            && *old != *svc
                        {
                            self.remove_slice(&slice, &old);
                        }
                        let svc = self.world.key(&svc);
                        self.world
                            .endpoints
                            .entry(svc.clone())
                            .or_default()
                            .set(&slice, nodes);
                        self.slice_owner.insert(slice, svc);
                    }
                    None => self.remove_slice(&slice, &svc),
                }
            }
            Input::Endpoints(key, nodes) => {
                self.mark_seen(Kind_::Endpoints, &key);
                match nodes {
                    Some(nodes) => {
                        let mut ready = world::ReadyNodes::default();
                        ready.set("endpoints", nodes);
                        let key = self.world.key(&key);
                        self.world.endpoints.insert(key, ready);
                    }
                    None => {
                        self.world.endpoints.remove(&*key);
                    }
                }
            }
            Input::Node(name, info) => {
                self.mark_seen(Kind_::Nodes, &name);
                match info {
                    Some((i, labels)) => {
                        let same_labels = labels.as_ref().is_none_or(|l| *l == self.my_labels);
                        if let Some(l) = labels {
                            self.my_labels = l;
                        }
                        // Kubelets rewrite Node status every few minutes without a change here.
                        if self.world.nodes.insert(name, i) == Some(i) && same_labels {
                            return false;
                        }
                    }
                    None => {
                        if name == self.me {
                            self.my_labels.clear();
                        }
                        self.world.nodes.remove(&name);
                    }
                }
            }
            Input::Pods(result) => match result {
                Some(pods) => {
                    if self.api_ok && self.pods_seen && self.world.pods == pods {
                        return false;
                    }
                    self.api_ok = true;
                    self.pods_seen = true;
                    self.world.pods = pods;
                    if let Some(g) = &self.gossip {
                        let port = self.gossip_port;
                        g.set_peers(
                            self.world
                                .peer_ips(&self.me)
                                .into_iter()
                                .map(|ip| SocketAddr::new(ip, port))
                                .collect(),
                        );
                    }
                    self.tell_gossip();
                }
                None => {
                    self.client_metrics.update_errors.inc();
                    return std::mem::replace(&mut self.api_ok, false);
                }
            },
            Input::Api(ok) => {
                if !ok {
                    self.client_metrics.update_errors.inc();
                }
                return std::mem::replace(&mut self.api_ok, ok) != ok;
            }
            Input::Live(view) => {
                if self.gossip_view.as_ref() == Some(&view) {
                    return false;
                }
                self.heard_ever.extend(view.alive.iter().cloned());
                // A speaker we hear but have not listed yet (it just started): list again now,
                // so both sides elect from the same set without waiting for the next poll.
                if let Some(pods) = &self.world.pods
                    && view
                        .alive
                        .iter()
                        .any(|n| n != &self.me && !pods.values().any(|p| &p.node == n))
                {
                    self.poll_tx.send_modify(|_| {});
                }
                self.gossip_view = Some(view);
            }
            Input::BgpProblem(msg) => {
                error!("{msg}");
                if let Some(r) = self.config_ref.clone() {
                    self.event(r, Kind::Warning, "BGPSessionFailed", msg);
                }
            }
            Input::Shutdown => {}
        }
        true
    }

    pub(super) fn mark_seen(&mut self, kind: Kind_, key: &str) {
        if let Some(seen) = self.relisting.get_mut(&kind) {
            seen.insert(key.to_string());
        }
    }

    pub(super) fn remove_slice(&mut self, slice: &str, svc: &str) {
        self.slice_owner.remove(slice);
        if let Some(by) = self.world.endpoints.get_mut(svc)
            && by.remove(slice)
        {
            self.world.endpoints.remove(svc);
        }
    }

    pub(super) async fn handle_reload(&mut self, outcome: Reload) {
        match outcome {
            Reload::Unchanged => {}
            Reload::Applied { sha256, config } => {
                info!(sha256 = %sha256, pools = config.pools.len(), "Config loaded");
                if let Some(r) = self.config_ref.clone() {
                    let msg = format!(
                        "config {} applied on node {}: {} pools",
                        &sha256[..12.min(sha256.len())],
                        self.me,
                        config.pools.len()
                    );
                    self.event(r, Kind::Normal, "ConfigLoaded", msg);
                }
            }
            Reload::Rejected { sha256, why } => {
                self.client_metrics.update_errors.inc();
                warn!(sha256 = %sha256, reason = why.reason(), error = %why, "Config rejected; keeping the previous one");
                if let Some(r) = self.config_ref.clone() {
                    let msg = format!(
                        "config {} rejected by the speaker on node {}, the previous config stays in force: {why}",
                        &sha256[..12.min(sha256.len())],
                        self.me
                    );
                    self.event(r, Kind::Warning, why.reason(), msg);
                }
            }
            Reload::Missing => {
                if self.reload.loaded() {
                    warn!("The config is gone; keeping the last good one (announcements continue)");
                } else {
                    warn!("No config yet: nothing is announced until the ConfigMap exists");
                }
            }
        }
        self.client_metrics.set_config(
            self.reload.loaded(),
            self.reload.stale(),
            self.reload.current_sha256(),
        );
    }

    /// Recompute what this node announces and push the difference out.
    pub(super) async fn decide(&mut self) {
        let synced = self.expect_synced.is_subset(&self.synced) && self.pods_seen;
        let warm = self.gossip.is_none() || self.gossip_started.elapsed() >= self.warmup;
        self.ready
            .store(synced && self.reload.loaded(), Ordering::Relaxed);
        let Some(config) = self.reload.current().cloned() else {
            return;
        };
        if !synced || !warm {
            return;
        }
        self.started = true;
        let known = self.world.known_speakers(&self.me);
        let gossip_alive = self.gossip_view.as_ref().map(|v| &v.alive);
        let mode = world::mode(
            gossip_alive.map(|a| self.world.listed_alive(&self.me, a).len()),
            known,
            self.api_ok,
            self.heard_ever.len() > 1,
        );
        if mode != self.mode {
            match mode {
                Mode::Normal => info!(known, "Hearing a majority of the speakers"),
                Mode::KubernetesOnly => warn!(
                    known,
                    heard = gossip_alive.map(|a| a.len()).unwrap_or(0),
                    "Hearing less than half of the speakers; deciding from Kubernetes signals alone"
                ),
                Mode::Fenced => warn!(
                    known,
                    "Fenced: neither the apiserver nor a majority of the speakers is reachable; announcing nothing"
                ),
            }
            let _ = self.poll_tx.send(if mode == Mode::Normal {
                self.normal_poll
            } else {
                POD_POLL_MINORITY
            });
            self.mode = mode;
        }
        self.metrics.fenced.set(i64::from(mode == Mode::Fenced));
        self.tell_gossip();
        let unheard_by = world::unheard_by(mode, self.gossip_view.as_ref());
        if unheard_by.is_some() != self.unheard {
            self.unheard = unheard_by.is_some();
            if let Some(by) = unheard_by {
                warn!(
                    ?by,
                    "Speakers that elect from their gossip do not hear this one (another memberlist secret, or a one-way path); announcing nothing they could also announce"
                );
            } else {
                info!("No speaker electing from its gossip reports not hearing this one any more");
            }
        }
        let live = self
            .world
            .candidates(&self.me, mode, self.gossip_view.as_ref());
        self.metrics
            .members_alive
            .set(gossip_alive.map_or(live.len(), |a| a.len()) as i64);
        let foreign = if self.gossip.is_some() && self.yield_to_go {
            let alive = self
                .gossip_view
                .as_ref()
                .map(|v| v.alive.clone())
                .unwrap_or_default();
            self.world.foreign_speakers(&self.me, &alive)
        } else {
            Vec::new()
        };
        if foreign != self.foreign {
            if foreign.is_empty() {
                info!("No MetalLB Go speaker is Ready any more; announcing");
            } else {
                warn!(nodes = ?foreign, "MetalLB Go speakers are still Ready on these nodes; announcing nothing until they are gone (--yield-to-go-speakers)");
            }
            self.foreign = foreign;
        }
        let plan = if mode == Mode::Fenced || !self.foreign.is_empty() {
            Plan::default()
        } else {
            self.world.plan(&config, &live, &self.me)
        };
        self.push(plan, &live).await;
        self.decide_bgp(&config).await;
    }

    /// Tells the gossip what its heartbeats carry besides liveness: the listed speakers (from
    /// the first Pods list on, so that reports received before the first election already
    /// count) and whether this speaker elects from its gossip (only once it elects at all).
    fn tell_gossip(&self) {
        if let Some(g) = &self.gossip {
            g.set_local(Local {
                expected: self.world.speaker_nodes(),
                trusts_gossip: self.started && self.mode == Mode::Normal,
            });
        }
    }

    /// Every IP this node announces (layer 2 and BGP), with its services.
    pub(super) fn all_announced(&self) -> BTreeMap<IpAddr, Vec<String>> {
        let mut all: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for (ip, svcs) in self.owned.iter().chain(&self.bgp_owned) {
            all.entry(*ip)
                .or_default()
                .extend(svcs.iter().map(|s| s.to_string()));
        }
        all
    }

    /// Retry a config rejected as stale, now that the announcements changed.
    pub(super) async fn retry_pending(&mut self) {
        if self.reload.has_pending() {
            let owned = self.all_announced();
            if let Some(outcome) = self.reload.retry(|c| world::check_announced(c, &owned)) {
                self.handle_reload(outcome).await;
            }
        }
    }

    /// BGP: run the sessions of the peers that select this node and give them the routes
    /// (spec §7.5–§7.7). Unlike layer 2, BGP announcements do not depend on the liveness
    /// of other speakers, on fencing or on the Go-speaker yield: every eligible node
    /// announces (routers spread traffic over all of them), as in MetalLB.
    pub(super) async fn decide_bgp(&mut self, config: &crate::config::Config) {
        let peers: Vec<crate::config::Peer> = config
            .peers
            .iter()
            .filter(|p| crate::config::selector::any_matches(&p.node_selectors, &self.my_labels))
            .cloned()
            .collect();
        self.bgp.set_bfd_profiles(&config.bfd_profiles);
        self.bgp.set_peers(&peers);
        let desired = bgp::advertise::desired(config, &self.world.service_list(), &self.me);
        let sha = self.reload.current_sha256().map(str::to_string);
        if self.bgp_warned != sha {
            self.bgp_warned = sha;
            self.warn_bgp(config, &peers);
        }
        let mut owned: BTreeMap<IpAddr, Vec<Arc<str>>> = BTreeMap::new();
        for (svc, ip) in &desired.announced {
            owned.entry(*ip).or_default().push(self.world.key(svc));
        }
        self.bgp.set_routes(desired.routes);
        if owned == self.bgp_owned {
            return;
        }
        let (old, new) = (pairs(&self.bgp_owned), pairs(&owned));
        for (ip, svc) in old.difference(&new) {
            self.metrics
                .announced
                .remove(svc.clone(), "bgp", &self.me, &ip.to_string());
            let why = desired.skipped.get(&**svc).copied().unwrap_or("notBGP");
            info!(service = %svc, ip = %ip, reason = why, protocol = "bgp", "Withdrawn");
        }
        let mut assigned = BTreeSet::new();
        for (ip, svc) in new.difference(&old) {
            self.metrics
                .announced
                .set(svc.clone(), "bgp", &self.me, &ip.to_string());
            info!(service = %svc, ip = %ip, protocol = "bgp", "Announcing from this node");
            assigned.insert(svc.clone());
        }
        self.bgp_owned = owned;
        self.retry_pending().await;
        for svc in assigned {
            if let Some(r) = self.refs.get(&svc).map(|r| r.reference(&svc)) {
                let msg = format!("announcing from node {:?} with protocol \"bgp\"", self.me);
                self.event(r, Kind::Normal, "nodeAssigned", msg);
            }
        }
    }

    /// Say so (log and a Warning Event on the ConfigMap, once per config) when BGP pools
    /// cannot be announced from this node.
    pub(super) fn warn_bgp(&self, config: &crate::config::Config, peers: &[crate::config::Peer]) {
        let bgp_pools: Vec<&str> = config
            .pools
            .iter()
            .filter(|p| p.protocol == crate::config::Protocol::Bgp)
            .map(|p| p.name.as_str())
            .collect();
        let mut problems = Vec::new();
        if !bgp_pools.is_empty() && peers.is_empty() {
            problems.push(format!(
                "no BGP peer selects node {} (node-selectors), so BGP pools {} are not announced from it",
                self.me,
                bgp_pools.join(", ")
            ));
        }
        for msg in problems {
            warn!("{msg}");
            if let Some(r) = self.config_ref.clone() {
                self.event(r, Kind::Warning, "BGPNotAnnounced", msg);
            }
        }
    }

    pub(super) async fn push(&mut self, plan: Plan, live: &BTreeSet<String>) {
        let mut owned: BTreeMap<IpAddr, Vec<Arc<str>>> = BTreeMap::new();
        for a in &plan.announce {
            owned
                .entry(a.ip)
                .or_default()
                .push(self.world.key(&a.service));
        }
        if owned == self.owned && *live == self.last_live {
            return;
        }
        let ips: BTreeSet<IpAddr> = owned.keys().copied().collect();
        let before: BTreeSet<IpAddr> = self.owned.keys().copied().collect();
        // Withdrawals and takeovers go to the announcer first, Events and metrics after.
        self.announcer.set_owned(ips.clone());
        if *live != self.last_live {
            // A membership change re-confirms every IP still owned (MetalLB 0.9.4+, #736).
            let kept: BTreeSet<IpAddr> = ips.intersection(&before).copied().collect();
            if !kept.is_empty() {
                self.announcer.refresh(&kept);
            }
            debug!(live = ?live, "Live speakers changed");
            self.last_live = live.clone();
        }
        let (old_pairs, new_pairs) = (pairs(&self.owned), pairs(&owned));
        for (ip, svc) in old_pairs.difference(&new_pairs) {
            self.metrics
                .announced
                .remove(svc.clone(), "layer2", &self.me, &ip.to_string());
            let why = plan
                .skipped
                .get(&**svc)
                .map(|s| s.reason())
                .unwrap_or("notOwner");
            info!(service = %svc, ip = %ip, reason = why, "Withdrawn");
        }
        let mut assigned: BTreeSet<Arc<str>> = BTreeSet::new();
        for (ip, svc) in new_pairs.difference(&old_pairs) {
            self.metrics
                .announced
                .set(svc.clone(), "layer2", &self.me, &ip.to_string());
            info!(service = %svc, ip = %ip, "Announcing from this node");
            assigned.insert(svc.clone());
        }
        self.owned = owned;
        self.retry_pending().await;
        for svc in assigned {
            if let Some(r) = self.refs.get(&svc).map(|r| r.reference(&svc)) {
                let msg = format!(
                    "announcing from node {:?} with protocol \"layer2\"",
                    self.me
                );
                self.event(r, Kind::Normal, "nodeAssigned", msg);
            }
        }
    }
}

/// (IP, service) pairs of an IP → services map.
fn pairs(m: &BTreeMap<IpAddr, Vec<Arc<str>>>) -> BTreeSet<(IpAddr, Arc<str>)> {
    m.iter()
        .flat_map(|(ip, s)| s.iter().map(move |s| (*ip, s.clone())))
        .collect()
}
