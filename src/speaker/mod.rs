//! The speaker: in layer 2 mode it answers ARP and NDP for the LoadBalancer IPs this node
//! wins and hands them over fast when a speaker dies; in BGP mode it announces them to routers
//! ([`crate::bgp`]); it applies config edits live.
//!
//! ```text
//!  ConfigMap (watch) / --config-file ─┐
//!  Services, EndpointSlices|Endpoints,│
//!  Nodes (watch); speaker Pods (poll) ┼─► one decision loop (driver) ──► l2::announcer
//!  liveness gossip (UDP 7946)        ─┘     reload::Reloader (pure)        (AF_PACKET ARP/NDP,
//!                                           world::World (pure)             gratuitous bursts)
//!                                           l2::plan + l2::election (pure)
//!                                           bgp::advertise (pure) ────────► bgp::session
//!                                                                           (one task per peer)
//! ```
//!
//! BGP announcements follow MetalLB: every node whose peers' node-selectors match its labels
//! announces `Cluster` services with a ready endpoint anywhere and `Local` services with a
//! ready endpoint on the node; the liveness, fencing and yield rules below are layer 2's.
//!
//! - [`world`] (pure) folds what the watches report into compact maps and answers "who is a
//!   live candidate" and "what does this node announce".
//! - [`liveness`] (pure) and [`gossip`] (its UDP driver) say which speakers are alive, within
//!   ~0.6 s of a crash and at once on a planned stop.
//! - Three private modules run it: `driver` (flags and wiring: clients, RBAC probes, tasks,
//!   signals), `watches` (the Kubernetes watches and polls, each feeding one input channel) and
//!   `state` (the decision loop: one task owns all state and pushes the owned IP set to the
//!   announcer; withdrawals take effect before the call returns).
//!
//! # Who announces
//!
//! MetalLB 0.11–0.12's election, unchanged: the owner of a service's IPs is the candidate with
//! the lowest `sha256(node "#" first_ip)`; candidates are, for `Cluster` services, the live
//! speakers, and for `Local` ones the live speakers with a ready endpoint; nobody without a
//! ready endpoint. Every speaker computes the same answer from the same inputs. A speaker is
//! live when its Pod is Ready, its Node is not NotReady / out-of-service, and (with gossip) the
//! gossip hears it ([`world`]). Unlike 0.12, `Cluster` services are announced without gossip
//! too (MetalLB #2005), from the Kubernetes signals alone.
//!
//! # Partitions and fencing
//!
//! The danger in layer 2 is two nodes answering for one IP: clients then flip between MACs. A
//! speaker decides in one of three [`world::Mode`]s from what it can reach:
//!
//! - It hears at least half of the speakers it knows (the speakers Kubernetes considers live):
//!   gossip is trusted. It elects from the speakers that a majority hears, by the reports each
//!   heartbeat carries of whom its sender hears ([`liveness::heard_by_majority`]), not merely
//!   from those it hears itself: with UDP lost one way between two nodes, both still count
//!   both as long as a third hears them, and a node whose heartbeats nobody accepts (lost, or
//!   refused as from an older incarnation after its clock went back) reads that in every
//!   report and leaves itself out. Dead peers drop out; the next node in the election order
//!   takes over. The survivor of a two-speaker cluster hears one of two and takes over at once.
//! - It hears less than half but reaches the apiserver, or its gossip has never heard any
//!   peer: its own gossip view is the suspicious one (if it trusted it, it would elect itself
//!   for everything), so it ignores gossip and elects from the Kubernetes signals, like every
//!   other speaker would without gossip. If gossip never worked anywhere (UDP 7946 firewalled,
//!   mismatched secrets), every speaker lands here and they agree. But while a speaker that
//!   trusts its gossip says it does not hear this one (read even from heartbeats it cannot
//!   authenticate: another secret, during a rotation), the others elect without it, so it
//!   leaves itself out of its own election too ([`world::World::candidates`]). Unauthenticated
//!   claims are used for that alone: a forger can make a speaker announce less, never more.
//! - It reaches neither a strict majority nor the apiserver: it is **fenced** and answers
//!   nothing ([`liveness::fenced`]). This is the node cut off the network: the majority side
//!   sees it dead after `dead_after` and gives its IPs to another node, and without fencing the
//!   cut-off node would go on answering for them the moment any link came back, before its
//!   gossip caught up. Requiring both losses keeps an apiserver restart (gossip fine) or a
//!   gossip-only problem (apiserver fine) from silencing anyone. Without gossip a speaker is
//!   never fenced: it cannot tell a partition from an apiserver upgrade.
//!
//! The apiserver probe is a speaker Pods list: every 1 s while hearing a minority, with a 1.5 s
//! timeout. Under MetalLB's RBAC (`list`, not `watch`) that list is also how Pods are read, every
//! 3 s, and at once when gossip hears a speaker not listed yet; with `watch` (our manifest) the
//! Pods are watched. A cut-off
//! speaker is therefore fenced about 0.6 s (gossip) + up to 1.5 s (probe) after the cut.
//!
//! Residual risks, stated: a gossip partition in which every side reaches the apiserver (the
//! minority side elects from Kubernetes signals, the majority side without it) can give an IP
//! two owners until it heals, as can gossip that stops working both ways after it once worked
//! in a cluster of two (each side hears one of two, exactly half); MetalLB's memberlist has the
//! same failure mode (#740). A speaker whose clock went back stays out of the election until
//! its peers forget its older incarnation (`forget_after`, 5 min). Without a memberlist secret
//! the gossip does not run at all (anyone could forge it); Kubernetes signals decide. Under MetalLB's RBAC (Pods `list` only) speakers see a Pod's readiness
//! change at their own 3 s poll, so a readiness flip can leave two owners or none for up to 3 s;
//! with `watch` (our manifest) it is the watch latency.
//!
//! # Rolling image swap from MetalLB's Go speakers
//!
//! Go speakers gossip over memberlist and cannot see ours. While any speaker Pod that runs
//! another image and was never heard in our gossip is Ready, our speakers announce nothing
//! (`--yield-to-go-speakers`, default on): the Go speakers elect among themselves and cover
//! every IP. When the last one goes (its Pod is deleted or turns NotReady), ours take over with
//! a gratuitous burst. See the README for the procedure.
//!
//! # Start-up
//!
//! Nothing is announced before the config is loaded, every watch has listed once, the Pods list
//! has answered, and the gossip has run for two `dead_after` periods (so peers are heard before
//! this speaker elects; otherwise it would briefly elect itself for everything).

mod driver;
pub mod gossip;
pub mod liveness;
mod state;
mod watches;
pub mod world;

pub use driver::Args;
