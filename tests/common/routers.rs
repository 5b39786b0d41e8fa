//! Real BGP routers for integration tests: GoBGP (`gobgpd`), BIRD 2, FRR `bgpd` (without
//! zebra) and exabgp, each started inside a network namespace from a config written here, and
//! the routes they RECEIVED read back in one normalized shape ([`Route`]). Used as
//! `#[path = "common/routers.rs"] mod routers;`. Needs root and the Debian packages gobgpd,
//! bird2, frr and exabgp (`make deps`).
//!
//! Roles: a neighbour is passive unless [`Neighbor::active`] (MetalLB's peers never connect:
//! the speaker dials port 179). Every router imports everything and exports nothing, except a
//! GoBGP router with an active neighbour, which is an announcer ([`Router::announce`]).
//!
//! What each router supports (see `tests/routers.rs`, which checks it):
//!
//! | router | MD5 | IPv6 | GR helper (stale routes) | no 4-octet AS capability |
//! |---|---|---|---|---|
//! | GoBGP 3.10 | yes | yes | yes, per route | no (always advertised) |
//! | BIRD 2.0.12 | yes | yes | yes; stale derived per session | `enable as4 off` |
//! | FRR 8.4 bgpd | yes | yes | yes, per route | `dont-capability-negotiate` (no capabilities at all: IPv4 unicast only, no GR) |
//! | exabgp 4.2 | yes | yes | no RIB: routes go when the session goes | `capability { asn4 disable; }` |
//!
//! Graceful restart (RFC 4724, helper side): with [`Neighbor::graceful_restart`] `Some(t)` the
//! router advertises the capability (restart time `t`) and keeps the speaker's routes, marked
//! stale, when the session drops; how long is the restart time the SPEAKER advertised (FRR
//! also bounds the wait for End-of-RIB by `stalepath-time t`). With `None` the router does
//! not do GR (BIRD `graceful restart off`, FRR `graceful-restart-disable`, GoBGP not
//! enabled), so the routes go with the session. BIRD 2.0.12 prints no per-route stale flag for
//! regular GR; a BIRD route is reported stale while its protocol shows
//! `Neighbor graceful restart active` / `Neighbor GR:` (from the session drop until the
//! peer's End-of-RIB).
//!
//! One router per namespace (they all listen on port 179 there).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use ipnet::IpNet;
use serde_json::Value;

/// Generous default for waits (a loaded 2-core machine must pass).
pub(crate) const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Gobgp,
    Bird,
    Frr,
    Exabgp,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [Kind::Gobgp, Kind::Bird, Kind::Frr, Kind::Exabgp];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Gobgp => "gobgp",
            Kind::Bird => "bird",
            Kind::Frr => "frr",
            Kind::Exabgp => "exabgp",
        }
    }

    /// Whether the router's programs are installed (`make deps` installs them).
    pub(crate) fn installed(self) -> bool {
        match self {
            Kind::Gobgp => on_path("gobgpd") && on_path("gobgp"),
            Kind::Bird => on_path("bird") && on_path("birdc"),
            Kind::Frr => frr_bgpd().is_file() && on_path("vtysh"),
            Kind::Exabgp => on_path("exabgp"),
        }
    }

    /// Whether the router can leave out the 4-octet AS capability
    /// ([`Neighbor::four_octet_as`] `false`).
    pub(crate) fn can_disable_four_octet_as(self) -> bool {
        !matches!(self, Kind::Gobgp)
    }

    /// Whether the router keeps a restarting speaker's routes as stale.
    pub(crate) fn graceful_restart_helper(self) -> bool {
        !matches!(self, Kind::Exabgp)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// FRR's daemons are not on PATH; take bgpd's directory from the package list.
fn frr_bgpd() -> &'static Path {
    static BGPD: OnceLock<PathBuf> = OnceLock::new();
    BGPD.get_or_init(|| frr_daemon("bgpd"))
}

/// The path of FRR daemon `name` (`bgpd`, `bfdd`) from the package's file list.
pub(crate) fn frr_daemon(name: &str) -> PathBuf {
    let suffix = format!("/{name}");
    std::process::Command::new("dpkg")
        .args(["-L", "frr"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.ends_with(&suffix))
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(format!("/usr/lib/frr/{name}")))
}

/// One BGP neighbour of a test router (usually the speaker under test).
#[derive(Clone, Debug)]
pub(crate) struct Neighbor {
    pub(crate) address: IpAddr,
    pub(crate) asn: u32,
    /// TCP MD5 (RFC 2385) key; no quotes, backslashes or whitespace.
    pub(crate) password: Option<String>,
    /// Hold time in seconds (keepalive is a third of it); 0 = the router's default.
    pub(crate) hold_time: u16,
    /// Graceful-restart helper with this restart time (see the module docs).
    pub(crate) graceful_restart: Option<u16>,
    pub(crate) ipv4: bool,
    pub(crate) ipv6: bool,
    /// `false`: do not advertise the 4-octet AS capability (a "2-byte-AS-only" peer); see
    /// [`Kind::can_disable_four_octet_as`].
    pub(crate) four_octet_as: bool,
    /// Connect to the neighbour (default: passive, only accept).
    pub(crate) active: bool,
    /// BFD for this session (BIRD only): (interval in ms, multiplier). BIRD runs one
    /// `protocol bfd` whose interface options come from the first neighbour that has it.
    pub(crate) bfd: Option<(u32, u8)>,
}

impl Neighbor {
    /// A passive neighbour with hold time 9, no MD5, no GR, the address family of `address`
    /// and 4-octet AS numbers.
    pub(crate) fn new(address: IpAddr, asn: u32) -> Neighbor {
        Neighbor {
            address,
            asn,
            password: None,
            hold_time: 9,
            graceful_restart: None,
            ipv4: address.is_ipv4(),
            ipv6: address.is_ipv6(),
            four_octet_as: true,
            active: false,
            bfd: None,
        }
    }

    fn keepalive(&self) -> u16 {
        (self.hold_time / 3).max(1)
    }

    fn families(&self) -> Vec<(&'static str, bool)> {
        // (family name, is IPv6)
        let mut f = Vec::new();
        if self.ipv4 {
            f.push(("ipv4", false));
        }
        if self.ipv6 {
            f.push(("ipv6", true));
        }
        f
    }
}

#[derive(Clone, Debug)]
pub(crate) struct RouterConfig {
    pub(crate) router_id: Ipv4Addr,
    pub(crate) asn: u32,
    /// The router's own addresses (one per family is enough); a neighbour uses the first of
    /// its own family as the local address.
    pub(crate) local_addresses: Vec<IpAddr>,
    pub(crate) neighbors: Vec<Neighbor>,
}

impl RouterConfig {
    fn local_for(&self, peer: IpAddr) -> Option<IpAddr> {
        self.local_addresses
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == peer.is_ipv4())
    }

    fn check(&self, kind: Kind) -> Result<()> {
        ensure!(!self.neighbors.is_empty(), "{kind}: no neighbours");
        for n in &self.neighbors {
            ensure!(
                n.ipv4 || n.ipv6,
                "{kind}: neighbour {} has no family",
                n.address
            );
            if let Some(p) = &n.password {
                ensure!(
                    !p.is_empty()
                        && p.len() <= 80
                        && !p
                            .chars()
                            .any(|c| c.is_whitespace() || matches!(c, '"' | '\\' | '\'')),
                    "{kind}: unsupported MD5 password {p:?}"
                );
            }
            ensure!(
                n.four_octet_as || kind.can_disable_four_octet_as(),
                "{kind} cannot leave out the 4-octet AS capability (neighbour {})",
                n.address
            );
            ensure!(
                n.four_octet_as || n.asn <= 0xffff,
                "{kind}: a 2-byte-AS neighbour needs a 2-byte AS ({})",
                n.asn
            );
            ensure!(
                n.hold_time == 0 || n.hold_time >= 3,
                "{kind}: hold time {} (0 or >= 3)",
                n.hold_time
            );
            if kind == Kind::Exabgp {
                ensure!(
                    self.local_for(n.address).is_some(),
                    "exabgp needs a local address of the family of {}",
                    n.address
                );
            }
        }
        Ok(())
    }
}

/// A route the router received from a neighbour, normalized across routers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Route {
    pub(crate) prefix: IpNet,
    pub(crate) next_hop: IpAddr,
    /// AS numbers of all segments, in order (sets flattened).
    pub(crate) as_path: Vec<u32>,
    /// As the router shows it (BIRD and FRR fill in 100 for eBGP routes without one).
    pub(crate) local_pref: Option<u32>,
    /// "A:B", sorted numerically.
    pub(crate) communities: Vec<String>,
    /// Kept by graceful restart after the session dropped (see the module docs for BIRD).
    pub(crate) stale: bool,
    /// The neighbour it came from.
    pub(crate) from: Option<IpAddr>,
}

/// The routes of `prefix` in `routes`.
pub(crate) fn routes_for(routes: &[Route], prefix: &str) -> Vec<Route> {
    let p: IpNet = prefix.parse().expect("a prefix");
    routes.iter().filter(|r| r.prefix == p).cloned().collect()
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NeighborInfo {
    pub(crate) established: bool,
    /// The router's own name for the state ("Established", "Active", "up", ...).
    pub(crate) state: String,
    pub(crate) remote_router_id: Option<Ipv4Addr>,
    /// Whether the neighbour advertised the 4-octet AS capability (None: unknown, e.g.
    /// exabgp, or not established).
    pub(crate) remote_four_octet_as: Option<bool>,
}

/// A running (or stopped) test router. Dropping it kills its processes and removes its
/// temp dir.
pub(crate) struct Router {
    kind: Kind,
    netns: String,
    dir: PathBuf,
    cfg: RouterConfig,
    child: Option<tokio::process::Child>,
    pid: Option<u32>,
    /// gobgpd's gRPC port (inside the namespace).
    api_port: u16,
}

static SEQ: AtomicU32 = AtomicU32::new(0);
static GOBGP_PORT: AtomicU16 = AtomicU16::new(50051);

impl Router {
    /// Write `cfg` into a fresh temp dir, check it with the router's own syntax check, start
    /// the daemon in `netns` and wait until its control interface answers and it listens on
    /// port 179 (when it has passive neighbours).
    pub(crate) async fn start(kind: Kind, netns: &str, cfg: &RouterConfig) -> Result<Router> {
        ensure!(
            kind.installed(),
            "{kind} is not installed (make deps installs gobgpd, bird2, frr and exabgp)"
        );
        cfg.check(kind)?;
        let dir = std::env::temp_dir().join(format!(
            "mlbrs-{kind}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut router = Router {
            kind,
            netns: netns.to_string(),
            dir,
            cfg: cfg.clone(),
            child: None,
            pid: None,
            api_port: if kind == Kind::Gobgp {
                GOBGP_PORT.fetch_add(1, Ordering::Relaxed)
            } else {
                0
            },
        };
        router.write_config()?;
        router.check_config().await?;
        router.spawn()?;
        router.wait_ready().await?;
        Ok(router)
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    pub(crate) fn netns(&self) -> &str {
        &self.netns
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    /// The daemon's pid (also its process group) while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("router.log")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join(match self.kind {
            Kind::Gobgp => "gobgpd.toml",
            Kind::Bird => "bird.conf",
            Kind::Frr => "bgpd.conf",
            Kind::Exabgp => "exabgp.conf",
        })
    }

    fn events_path(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }

    fn write_config(&self) -> Result<()> {
        let text = match self.kind {
            Kind::Gobgp => gobgp_config(&self.cfg),
            Kind::Bird => bird_config(&self.cfg),
            Kind::Frr => frr_config(&self.cfg, &self.netns),
            Kind::Exabgp => {
                let dump = self.dir.join("dump.sh");
                // Not `exec cat`: exabgp takes a closed stdout for a dead helper.
                std::fs::write(
                    &dump,
                    "#!/bin/sh\ncat >> \"$(dirname \"$0\")/events.jsonl\"\n",
                )?;
                run(std::process::Command::new("chmod").arg("755").arg(&dump))?;
                exabgp_config(&self.cfg, &dump)
            }
        };
        let path = self.config_path();
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    async fn check_config(&self) -> Result<()> {
        let conf = self.config_path();
        let mut cmd = tokio::process::Command::new(match self.kind {
            Kind::Gobgp => Path::new("gobgpd"),
            Kind::Bird => Path::new("bird"),
            Kind::Frr => frr_bgpd(),
            Kind::Exabgp => Path::new("exabgp"),
        });
        match self.kind {
            Kind::Gobgp => cmd.arg("-d").arg("-f").arg(&conf),
            Kind::Bird => cmd.arg("-p").arg("-c").arg(&conf),
            Kind::Frr => cmd
                .arg("-C")
                .arg("-f")
                .arg(&conf)
                .args(["-Z", "-S", "-u", "root", "-g", "root", "-P", "0"])
                .arg("--vty_socket")
                .arg(&self.dir)
                .arg("-i")
                .arg(self.dir.join("check.pid")),
            Kind::Exabgp => exabgp_env(&mut cmd).arg("--validate").arg(&conf),
        };
        let out = cmd
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("running the {} syntax check", self.kind))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // `bgpd -C` exits 0 even when a line is rejected; it logs the line instead.
        let frr_rejected = self.kind == Kind::Frr
            && [
                "No such command",
                "Unknown command",
                "Ambiguous command",
                "Command incomplete",
            ]
            .iter()
            .any(|m| text.contains(m));
        ensure!(
            out.status.success() && !frr_rejected,
            "{} rejected {} ({}): {text}\n--- config ---\n{}",
            self.kind,
            conf.display(),
            out.status,
            std::fs::read_to_string(&conf).unwrap_or_default()
        );
        Ok(())
    }

    fn spawn(&mut self) -> Result<()> {
        if self.kind == Kind::Exabgp {
            std::fs::write(self.events_path(), "")?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]);
        let conf = self.config_path();
        match self.kind {
            Kind::Gobgp => cmd
                .arg("gobgpd")
                .arg("-f")
                .arg(&conf)
                .arg("-p")
                .arg(format!("--api-hosts=127.0.0.1:{}", self.api_port))
                .arg("--pprof-disable"),
            Kind::Bird => cmd
                .args(["bird", "-f", "-c"])
                .arg(&conf)
                .arg("-s")
                .arg(self.dir.join("bird.ctl"))
                .arg("-P")
                .arg(self.dir.join("bird.pid")),
            Kind::Frr => cmd
                .arg(frr_bgpd())
                .arg("-f")
                .arg(&conf)
                .arg("-i")
                .arg(self.dir.join("bgpd.pid"))
                .arg("--vty_socket")
                .arg(&self.dir)
                .args(["-Z", "-S", "-u", "root", "-g", "root", "-P", "0"]),
            Kind::Exabgp => exabgp_env(&mut cmd).arg("exabgp").arg(&conf),
        };
        // `ip netns exec` execs the daemon: the child's pid is the daemon's, and its own
        // process group.
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} in {}", self.kind, self.netns))?;
        self.pid = child.id();
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let t = Instant::now();
        let passive = self.cfg.neighbors.iter().any(|n| !n.active);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                self.child = None;
                self.pid = None;
                bail!(
                    "{} in {} exited with {status} while starting; log:\n{}",
                    self.kind,
                    self.netns,
                    self.log_tail()
                );
            }
            let api = match self.kind {
                Kind::Gobgp => self.gobgp(&["global"]).await.is_ok(),
                Kind::Bird => self
                    .birdc("show status")
                    .await
                    .is_ok_and(|s| s.contains("Daemon is up and running")),
                Kind::Frr => self.vtysh("show bgp summary json").await.is_ok(),
                Kind::Exabgp => self.events_path().exists(),
            };
            if api && (!passive || self.listening().await) {
                return Ok(());
            }
            ensure!(
                t.elapsed() < WAIT,
                "{} in {} not ready within {WAIT:?}; log:\n{}",
                self.kind,
                self.netns,
                self.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether our daemon listens on port 179 in its namespace.
    async fn listening(&self) -> bool {
        let Some(pid) = self.pid else { return false };
        output(
            tokio::process::Command::new("ip")
                .args(["netns", "exec", &self.netns])
                .args(["ss", "-Htlnp", "sport = :179"]),
        )
        .await
        .is_ok_and(|s| s.contains(&format!("pid={pid},")))
    }

    /// Send `signal` (a `kill -s` name) to the daemon's process group.
    fn signal(&self, signal: &str) -> Result<()> {
        let pid = self
            .pid
            .ok_or_else(|| anyhow!("{} is not running", self.kind))?;
        run(std::process::Command::new("kill").args(["-s", signal, "--", &format!("-{pid}")]))
            .map(drop)
    }

    /// SIGSTOP: the router goes silent (no keepalives, no FIN), like a hung or cut-off box.
    pub(crate) fn pause(&self) -> Result<()> {
        self.signal("STOP")
    }

    pub(crate) fn resume(&self) -> Result<()> {
        self.signal("CONT")
    }

    /// SIGTERM and wait for the exit (SIGKILL after [`WAIT`]).
    pub(crate) async fn stop(&mut self) -> Result<()> {
        self.end("TERM").await
    }

    /// SIGKILL (a crash: the kernel closes the sockets, no NOTIFICATION).
    pub(crate) async fn kill(&mut self) -> Result<()> {
        self.end("KILL").await
    }

    async fn end(&mut self, signal: &str) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = self.signal("CONT");
        let _ = self.signal(signal);
        if tokio::time::timeout(WAIT, child.wait()).await.is_err() {
            let _ = self.signal("KILL");
            child.wait().await?;
        }
        self.pid = None;
        Ok(())
    }

    /// Stop (SIGTERM) if running and start again with the same config.
    pub(crate) async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.spawn()?;
        self.wait_ready().await
    }

    /// The last 40 lines of the router's log (stdout and stderr).
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Routes received from neighbours (best or not), sorted.
    pub(crate) async fn routes(&self) -> Result<Vec<Route>> {
        let mut routes = match self.kind {
            Kind::Gobgp => {
                let mut all = Vec::new();
                for afi in ["ipv4", "ipv6"] {
                    let text = self.gobgp(&["global", "rib", "-a", afi, "-j"]).await?;
                    all.extend(parse_gobgp_rib(&text)?);
                }
                all
            }
            Kind::Bird => {
                let text = self.birdc("show route all").await?;
                let mut stale = Vec::new();
                for (i, n) in self.cfg.neighbors.iter().enumerate() {
                    let info = self.birdc(&format!("show protocols all n{i}")).await?;
                    if bird_gr_active(&info) {
                        stale.push(n.address);
                    }
                }
                let mut routes = parse_bird_routes(&text, &|proto: &str| {
                    let i: usize = proto.strip_prefix('n')?.parse().ok()?;
                    self.cfg.neighbors.get(i).map(|n| n.address)
                })?;
                for r in &mut routes {
                    r.stale = r.from.is_some_and(|f| stale.contains(&f));
                }
                routes
            }
            Kind::Frr => {
                let mut all = Vec::new();
                for afi in ["ipv4", "ipv6"] {
                    let text = self
                        .vtysh(&format!("show bgp {afi} unicast json detail"))
                        .await?;
                    all.extend(parse_frr_routes(&text)?);
                }
                all
            }
            Kind::Exabgp => exabgp_fold(&self.exabgp_events()?)?.routes,
        };
        routes.sort();
        Ok(routes)
    }

    /// Poll [`Router::routes`] every 50 ms until `f` holds; on timeout fail with `what`, the
    /// last routes seen and the router's log tail.
    pub(crate) async fn wait_routes<F: Fn(&[Route]) -> bool>(
        &self,
        what: &str,
        timeout: Duration,
        f: F,
    ) -> Result<Vec<Route>> {
        let t = Instant::now();
        loop {
            let last = self.routes().await;
            if let Ok(r) = &last
                && f(r)
            {
                return last;
            }
            if t.elapsed() > timeout {
                let seen = match last {
                    Ok(r) => format!("{r:#?}"),
                    Err(e) => format!("error: {e:#}"),
                };
                bail!(
                    "{} in {}: {what}: not within {timeout:?}; last routes: {seen}\nlog:\n{}",
                    self.kind,
                    self.netns,
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub(crate) async fn session_established(&self, neighbor: IpAddr) -> Result<bool> {
        Ok(self.neighbor_info(neighbor).await?.established)
    }

    /// Wait until the session with `neighbor` is (`up`) or is not established.
    pub(crate) async fn wait_session(
        &self,
        neighbor: IpAddr,
        up: bool,
        timeout: Duration,
    ) -> Result<NeighborInfo> {
        let t = Instant::now();
        loop {
            let last = self.neighbor_info(neighbor).await;
            if let Ok(i) = &last
                && i.established == up
            {
                return last;
            }
            if t.elapsed() > timeout {
                bail!(
                    "{} in {}: session with {neighbor} not {} within {timeout:?}; last: {last:?}\nlog:\n{}",
                    self.kind,
                    self.netns,
                    if up { "established" } else { "down" },
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub(crate) async fn neighbor_info(&self, neighbor: IpAddr) -> Result<NeighborInfo> {
        let idx = self
            .cfg
            .neighbors
            .iter()
            .position(|n| n.address == neighbor)
            .ok_or_else(|| anyhow!("{neighbor} is not a neighbour of this {}", self.kind))?;
        match self.kind {
            Kind::Gobgp => {
                let v: Value = serde_json::from_str(
                    &self
                        .gobgp(&["neighbor", &neighbor.to_string(), "-j"])
                        .await?,
                )?;
                let state = &v["state"];
                let established = state["session_state"].as_u64() == Some(6)
                    || state["session_state"].as_str() == Some("ESTABLISHED");
                let caps = state["remote_cap"].as_array();
                Ok(NeighborInfo {
                    established,
                    state: state["session_state"].to_string(),
                    remote_router_id: state["router_id"].as_str().and_then(|s| s.parse().ok()),
                    remote_four_octet_as: established.then(|| {
                        caps.is_some_and(|c| {
                            c.iter().any(|c| {
                                c["type_url"]
                                    .as_str()
                                    .is_some_and(|t| t.ends_with("FourOctetASNCapability"))
                            })
                        })
                    }),
                })
            }
            Kind::Bird => Ok(parse_bird_protocol(
                &self.birdc(&format!("show protocols all n{idx}")).await?,
            )),
            Kind::Frr => {
                let v: Value = serde_json::from_str(
                    &self
                        .vtysh(&format!("show bgp neighbors {neighbor} json"))
                        .await?,
                )?;
                let n = &v[neighbor.to_string()];
                let state = n["bgpState"].as_str().unwrap_or_default().to_string();
                let established = state == "Established";
                Ok(NeighborInfo {
                    established,
                    remote_router_id: n["remoteRouterId"].as_str().and_then(|s| s.parse().ok()),
                    remote_four_octet_as: n["neighborCapabilities"]["4byteAs"]
                        .as_str()
                        .map(|s| s.contains("eceived"))
                        .or(established.then_some(false)),
                    state,
                })
            }
            Kind::Exabgp => Ok(exabgp_fold(&self.exabgp_events()?)?
                .neighbors
                .remove(&neighbor)
                .unwrap_or_default()),
        }
    }

    /// Inject a route (an announcer GoBGP only), e.g. `announce("203.0.113.10/32",
    /// &["64500:100"], None)`; the next hop is the session's local address.
    pub(crate) async fn announce(
        &self,
        prefix: &str,
        communities: &[&str],
        local_pref: Option<u32>,
    ) -> Result<()> {
        ensure!(self.kind == Kind::Gobgp, "announce: only gobgp announces");
        let p: IpNet = prefix.parse()?;
        let afi = if p.addr().is_ipv4() { "ipv4" } else { "ipv6" };
        let mut args = vec!["global", "rib", "-a", afi, "add", prefix];
        let comm = communities.join(",");
        if !communities.is_empty() {
            args.extend(["community", &comm]);
        }
        let lp = local_pref.map(|l| l.to_string());
        if let Some(lp) = &lp {
            args.extend(["local-pref", lp]);
        }
        self.gobgp(&args).await.map(drop)
    }

    pub(crate) async fn withdraw(&self, prefix: &str) -> Result<()> {
        ensure!(self.kind == Kind::Gobgp, "withdraw: only gobgp announces");
        let p: IpNet = prefix.parse()?;
        let afi = if p.addr().is_ipv4() { "ipv4" } else { "ipv6" };
        self.gobgp(&["global", "rib", "-a", afi, "del", prefix])
            .await
            .map(drop)
    }

    /// `ip netns exec NETNS gobgp -u 127.0.0.1 -p API_PORT` (a GoBGP router only), to add
    /// arguments to: e.g. a long-running `monitor global rib -j` whose lines a benchmark reads.
    pub(crate) fn gobgp_cli(&self) -> Result<tokio::process::Command> {
        ensure!(
            self.kind == Kind::Gobgp,
            "gobgp_cli: {} is not gobgp",
            self.kind
        );
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.netns,
            "gobgp",
            "-u",
            "127.0.0.1",
            "-p",
        ])
        .arg(self.api_port.to_string());
        Ok(cmd)
    }

    async fn gobgp(&self, args: &[&str]) -> Result<String> {
        output(
            tokio::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.netns,
                    "gobgp",
                    "-u",
                    "127.0.0.1",
                    "-p",
                ])
                .arg(self.api_port.to_string())
                .args(args),
        )
        .await
    }

    async fn birdc(&self, command: &str) -> Result<String> {
        // A unix socket: no need to enter the namespace.
        let out = output(
            tokio::process::Command::new("birdc")
                .arg("-s")
                .arg(self.dir.join("bird.ctl"))
                .args(command.split_whitespace()),
        )
        .await?;
        ensure!(!out.contains("Unable to connect"), "birdc {command}: {out}");
        Ok(out)
    }

    /// BIRD's view of its BFD session with `neighbor` (`birdc show bfd sessions`).
    pub(crate) async fn bird_bfd(&self, neighbor: IpAddr) -> Result<Option<BirdBfd>> {
        ensure!(self.kind == Kind::Bird, "bird_bfd: a BIRD router only");
        Ok(parse_bird_bfd(
            &self.birdc("show bfd sessions").await?,
            neighbor,
        ))
    }

    /// BIRD's `Last error:` of its BGP protocol with `neighbor` (e.g. "BFD session down").
    pub(crate) async fn bird_last_error(&self, neighbor: IpAddr) -> Result<Option<String>> {
        ensure!(
            self.kind == Kind::Bird,
            "bird_last_error: a BIRD router only"
        );
        let idx = self
            .cfg
            .neighbors
            .iter()
            .position(|n| n.address == neighbor)
            .ok_or_else(|| anyhow!("{neighbor} is not a neighbour"))?;
        let text = self.birdc(&format!("show protocols all n{idx}")).await?;
        Ok(text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Last error:"))
            .map(|e| e.trim().to_string()))
    }

    async fn vtysh(&self, command: &str) -> Result<String> {
        output(
            tokio::process::Command::new("vtysh")
                .arg("--vty_socket")
                .arg(&self.dir)
                .args(["-d", "bgpd", "-c", command]),
        )
        .await
    }

    fn exabgp_events(&self) -> Result<String> {
        std::fs::read_to_string(self.events_path())
            .with_context(|| format!("reading {}", self.events_path().display()))
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.signal("KILL");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn exabgp_env(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
    cmd.env("exabgp.daemon.user", "root")
        .env("exabgp.daemon.daemonize", "false")
        .env("exabgp.api.cli", "false")
        // No global listener: passive neighbours listen on their own local address.
        .env("exabgp.tcp.bind", "")
        .env("exabgp.log.destination", "stdout")
}

fn run(cmd: &mut std::process::Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn output(cmd: &mut tokio::process::Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------
// Configs

/// GoBGP TOML. A router with an active neighbour exports its global RIB (the announcer);
/// otherwise it exports nothing.
pub(crate) fn gobgp_config(cfg: &RouterConfig) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let locals: Vec<String> = cfg
        .local_addresses
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    let export = if cfg.neighbors.iter().any(|n| n.active) {
        "accept-route"
    } else {
        "reject-route"
    };
    let _ = write!(
        s,
        "[global.config]\n  as = {}\n  router-id = \"{}\"\n",
        cfg.asn, cfg.router_id
    );
    if !locals.is_empty() {
        let _ = writeln!(s, "  local-address-list = [{}]", locals.join(", "));
    }
    let _ = write!(
        s,
        "[global.apply-policy.config]\n  default-import-policy = \"accept-route\"\n  default-export-policy = \"{export}\"\n"
    );
    for n in &cfg.neighbors {
        let _ = write!(
            s,
            "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}\n",
            n.address, n.asn
        );
        if let Some(p) = &n.password {
            let _ = writeln!(s, "    auth-password = \"{p}\"");
        }
        let _ = write!(
            s,
            "  [neighbors.timers.config]\n    connect-retry = 1\n    idle-hold-time-after-reset = 1\n"
        );
        if n.hold_time != 0 {
            let _ = write!(
                s,
                "    hold-time = {}\n    keepalive-interval = {}\n",
                n.hold_time,
                n.keepalive()
            );
        }
        let _ = writeln!(s, "  [neighbors.transport.config]");
        if n.active {
            if let Some(l) = cfg.local_for(n.address) {
                let _ = writeln!(s, "    local-address = \"{l}\"");
            }
        } else {
            let _ = writeln!(s, "    passive-mode = true");
        }
        if let Some(t) = n.graceful_restart {
            let _ = write!(
                s,
                "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = {t}\n"
            );
        }
        for (fam, _) in n.families() {
            let _ = write!(
                s,
                "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{fam}-unicast\"\n"
            );
            if n.graceful_restart.is_some() {
                let _ = write!(
                    s,
                    "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n"
                );
            }
        }
    }
    s
}

/// BIRD 2 config: protocol `n{i}` per neighbour, no kernel protocol (nothing is installed
/// in the namespace's FIB).
pub(crate) fn bird_config(cfg: &RouterConfig) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "log stderr all;\nrouter id {};\nprotocol device {{}}\n",
        cfg.router_id
    );
    if let Some((ms, mult)) = cfg.neighbors.iter().find_map(|n| n.bfd) {
        let _ = writeln!(
            s,
            "protocol bfd {{ interface \"*\" {{ interval {ms} ms; multiplier {mult}; }}; }}"
        );
    }
    for (i, n) in cfg.neighbors.iter().enumerate() {
        let local = cfg
            .local_for(n.address)
            .map(|l| format!("{l} "))
            .unwrap_or_default();
        let _ = writeln!(s, "protocol bgp n{i} {{");
        let _ = writeln!(
            s,
            "  local {local}as {};\n  neighbor {} as {};",
            cfg.asn, n.address, n.asn
        );
        if !n.active {
            let _ = writeln!(s, "  passive on;");
        }
        // Defaults would refuse connections for 60 s after a session error, and delay the
        // first connect by 5 s.
        let _ = writeln!(
            s,
            "  connect delay time 1;\n  connect retry time 1;\n  error wait time 1, 2;"
        );
        if n.hold_time != 0 {
            let _ = writeln!(
                s,
                "  hold time {};\n  keepalive time {};",
                n.hold_time,
                n.keepalive()
            );
        }
        if let Some(p) = &n.password {
            let _ = writeln!(s, "  password \"{p}\";");
        }
        match n.graceful_restart {
            Some(t) => {
                let _ = writeln!(s, "  graceful restart on;\n  graceful restart time {t};");
            }
            None => {
                let _ = writeln!(s, "  graceful restart off;");
            }
        }
        if !n.four_octet_as {
            let _ = writeln!(s, "  enable as4 off;");
        }
        if n.bfd.is_some() {
            let _ = writeln!(s, "  bfd on;");
        }
        if n.asn == cfg.asn {
            // iBGP is multihop by default in BIRD; the speaker is on the same link.
            let _ = writeln!(s, "  direct;");
        }
        let ibgp = n.asn == cfg.asn;
        for (fam, _) in n.families() {
            let gw = if ibgp { " gateway direct;" } else { "" };
            let _ = writeln!(s, "  {fam} {{ import all; export none;{gw} }};");
        }
        let _ = writeln!(s, "}}");
    }
    s
}

/// FRR bgpd config (run without zebra).
pub(crate) fn frr_config(cfg: &RouterConfig, hostname: &str) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "frr defaults traditional\nhostname {hostname}\nlog stdout informational\n!\nroute-map MLBRS-NONE deny 10\nexit\n!\nrouter bgp {}\n bgp router-id {}\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n no bgp network import-check\n",
        cfg.asn, cfg.router_id
    );
    if let Some(t) = cfg
        .neighbors
        .iter()
        .filter_map(|n| n.graceful_restart)
        .max()
    {
        let _ = write!(
            s,
            " bgp graceful-restart\n bgp graceful-restart restart-time {t}\n bgp graceful-restart stalepath-time {t}\n"
        );
    }
    for n in &cfg.neighbors {
        let a = n.address;
        let _ = writeln!(s, " neighbor {a} remote-as {}", n.asn);
        if !n.active {
            let _ = writeln!(s, " neighbor {a} passive");
        } else if let Some(l) = cfg.local_for(a) {
            let _ = writeln!(s, " neighbor {a} update-source {l}");
        }
        if n.hold_time != 0 {
            let _ = writeln!(s, " neighbor {a} timers {} {}", n.keepalive(), n.hold_time);
        }
        let _ = writeln!(s, " neighbor {a} timers connect 1");
        if let Some(p) = &n.password {
            let _ = writeln!(s, " neighbor {a} password {p}");
        }
        if n.graceful_restart.is_none() {
            // FRR is a GR helper by default.
            let _ = writeln!(s, " neighbor {a} graceful-restart-disable");
        }
        if !n.four_octet_as {
            // FRR cannot drop only the AS4 capability: send none at all.
            let _ = writeln!(s, " neighbor {a} dont-capability-negotiate");
        }
    }
    for fam in ["ipv4", "ipv6"] {
        let ns: Vec<&Neighbor> = cfg
            .neighbors
            .iter()
            .filter(|n| if fam == "ipv4" { n.ipv4 } else { n.ipv6 })
            .collect();
        if ns.is_empty() {
            continue;
        }
        let _ = writeln!(s, " address-family {fam} unicast");
        for n in ns {
            let _ = write!(
                s,
                "  neighbor {0} activate\n  neighbor {0} route-map MLBRS-NONE out\n",
                n.address
            );
        }
        let _ = writeln!(s, " exit-address-family");
    }
    s.push_str("exit\n!\n");
    s
}

/// exabgp config: every received OPEN, UPDATE and session change goes as a JSON line to the
/// `dump` helper, which appends it to `events.jsonl`.
pub(crate) fn exabgp_config(cfg: &RouterConfig, dump: &Path) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "process dump {{\n  run {};\n  encoder json;\n}}\n",
        dump.display()
    );
    for n in &cfg.neighbors {
        let local = cfg
            .local_for(n.address)
            .map(|l| l.to_string())
            .unwrap_or_default();
        let _ = write!(
            s,
            "neighbor {} {{\n  router-id {};\n  local-address {local};\n  local-as {};\n  peer-as {};\n",
            n.address, cfg.router_id, cfg.asn, n.asn
        );
        if n.hold_time != 0 {
            let _ = writeln!(s, "  hold-time {};", n.hold_time);
        }
        if !n.active {
            let _ = writeln!(s, "  passive true;\n  listen 179;");
        }
        if let Some(p) = &n.password {
            let _ = writeln!(s, "  md5-password \"{p}\";");
        }
        let mut caps = String::new();
        if !n.four_octet_as {
            caps.push_str(" asn4 disable;");
        }
        if let Some(t) = n.graceful_restart {
            let _ = write!(caps, " graceful-restart {t};");
        }
        if !caps.is_empty() {
            let _ = writeln!(s, "  capability {{{caps} }}");
        }
        let fams: String = n
            .families()
            .iter()
            .map(|(f, _)| format!(" {f} unicast;"))
            .collect();
        let _ = writeln!(s, "  family {{{fams} }}");
        let _ = write!(
            s,
            "  api {{\n    processes [ dump ];\n    neighbor-changes;\n    receive {{ parsed; open; update; }}\n  }}\n}}\n"
        );
    }
    s
}

// ---------------------------------------------------------------------------------------
// Parsers

fn community(a: u32, b: u32) -> String {
    format!("{a}:{b}")
}

fn sort_communities(mut c: Vec<String>) -> Vec<String> {
    let key = |s: &String| -> (u64, u64, String) {
        let mut it = s
            .splitn(2, ':')
            .map(|x| x.parse::<u64>().unwrap_or(u64::MAX));
        (
            it.next().unwrap_or(u64::MAX),
            it.next().unwrap_or(u64::MAX),
            s.clone(),
        )
    };
    c.sort_by_key(key);
    c.dedup();
    c
}

/// `gobgp global rib -a AFI -j`: `{"prefix": [path, ...]}`; paths not received from a
/// neighbour (local ones) are skipped.
pub(crate) fn parse_gobgp_rib(text: &str) -> Result<Vec<Route>> {
    let text = text.trim();
    if text.is_empty() || text == "null" {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(text).with_context(|| format!("gobgp rib: {text}"))?;
    let mut out = Vec::new();
    let Some(map) = v.as_object() else {
        return Ok(out);
    };
    for (prefix, paths) in map {
        let prefix: IpNet = prefix
            .parse()
            .with_context(|| format!("gobgp prefix {prefix}"))?;
        for p in paths.as_array().into_iter().flatten() {
            let Some(from) = p["neighbor-ip"]
                .as_str()
                .and_then(|s| s.parse::<IpAddr>().ok())
            else {
                continue;
            };
            if from.is_unspecified() {
                continue;
            }
            let mut r = Route {
                prefix,
                next_hop: from,
                as_path: Vec::new(),
                local_pref: None,
                communities: Vec::new(),
                stale: p["stale"].as_bool().unwrap_or(false),
                from: Some(from),
            };
            let mut nh = None;
            for a in p["attrs"].as_array().into_iter().flatten() {
                match a["type"].as_u64() {
                    Some(2) => {
                        for seg in a["as_paths"].as_array().into_iter().flatten() {
                            r.as_path.extend(
                                seg["asns"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .filter_map(|x| x.as_u64())
                                    .map(|x| x as u32),
                            );
                        }
                    }
                    Some(3) | Some(14) => {
                        if let Some(h) = a["nexthop"].as_str().and_then(|s| s.parse().ok()) {
                            nh = Some(h);
                        }
                    }
                    Some(5) => r.local_pref = a["value"].as_u64().map(|x| x as u32),
                    Some(8) => {
                        r.communities = a["communities"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|c| c.as_u64())
                            .map(|c| community((c >> 16) as u32, (c & 0xffff) as u32))
                            .collect();
                    }
                    _ => {}
                }
            }
            r.next_hop = nh.ok_or_else(|| anyhow!("gobgp path of {prefix} has no next hop"))?;
            r.communities = sort_communities(r.communities);
            out.push(r);
        }
    }
    Ok(out)
}

/// `birdc show route all` (BIRD 2): a line starting with a prefix opens a network, further
/// routes of the same network start with whitespace, attribute lines with a tab.
/// `proto_neighbor` maps a protocol name to its neighbour address.
pub(crate) fn parse_bird_routes(
    text: &str,
    proto_neighbor: &dyn Fn(&str) -> Option<IpAddr>,
) -> Result<Vec<Route>> {
    let mut out: Vec<Route> = Vec::new();
    let mut prefix: Option<IpNet> = None;
    let mut cur: Option<Route> = None;
    let mut in_bgp = false;
    let flush = |cur: &mut Option<Route>, out: &mut Vec<Route>| {
        if let Some(mut r) = cur.take() {
            r.communities = sort_communities(std::mem::take(&mut r.communities));
            out.push(r);
        }
    };
    for line in text.lines() {
        if line.starts_with("BIRD ") || line.starts_with("Table ") || line.trim().is_empty() {
            continue;
        }
        if let Some(attr) = line.strip_prefix('\t') {
            let Some(r) = cur.as_mut().filter(|_| in_bgp) else {
                continue;
            };
            let (key, val) = attr.split_once(':').unwrap_or((attr, ""));
            let val = val.trim();
            match key.trim() {
                "BGP.as_path" => {
                    r.as_path = val
                        .split(|c: char| c.is_whitespace() || "{}()[],".contains(c))
                        .filter_map(|x| x.parse().ok())
                        .collect()
                }
                "BGP.next_hop" => {
                    if let Some(h) = val.split_whitespace().next().and_then(|h| h.parse().ok()) {
                        r.next_hop = h;
                    }
                }
                "BGP.local_pref" => r.local_pref = val.parse().ok(),
                "BGP.community" => {
                    r.communities = val
                        .split(')')
                        .filter_map(|c| {
                            let (a, b) = c.trim().trim_start_matches('(').split_once(',')?;
                            Some(community(a.trim().parse().ok()?, b.trim().parse().ok()?))
                        })
                        .collect()
                }
                _ => {}
            }
            continue;
        }
        // A route header: "PREFIX  unicast [proto time ...] * (100) [AS64500i]" or, for
        // another route of the same network, the same without PREFIX.
        let trimmed = line.trim_start();
        let mut words = trimmed.split_whitespace();
        if !line.starts_with(char::is_whitespace) {
            let Some(p) = words.next().and_then(|w| w.parse::<IpNet>().ok()) else {
                continue;
            };
            prefix = Some(p);
        }
        flush(&mut cur, &mut out);
        let Some(p) = prefix else { continue };
        let proto = trimmed
            .split_once('[')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_default();
        in_bgp = proto_neighbor(proto).is_some();
        if let Some(from) = proto_neighbor(proto) {
            cur = Some(Route {
                prefix: p,
                next_hop: from,
                as_path: Vec::new(),
                local_pref: None,
                communities: Vec::new(),
                stale: false,
                from: Some(from),
            });
        }
    }
    flush(&mut cur, &mut out);
    Ok(out)
}

/// Whether `birdc show protocols all NAME` shows a neighbour graceful restart in progress.
pub(crate) fn bird_gr_active(text: &str) -> bool {
    text.contains("Neighbor graceful restart active") || text.contains("Neighbor GR:")
}

/// `birdc show protocols all NAME`.
pub(crate) fn parse_bird_protocol(text: &str) -> NeighborInfo {
    let mut info = NeighborInfo::default();
    let mut in_neighbor_caps = false;
    let mut caps_seen = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some(s) = t.strip_prefix("BGP state:") {
            info.state = s.trim().to_string();
            info.established = info.state == "Established";
        } else if let Some(id) = t.strip_prefix("Neighbor ID:") {
            info.remote_router_id = id.trim().parse().ok();
        } else if t == "Neighbor capabilities" {
            in_neighbor_caps = true;
            caps_seen = true;
        } else if in_neighbor_caps && t == "4-octet AS numbers" {
            info.remote_four_octet_as = Some(true);
        } else if in_neighbor_caps && !line.starts_with("      ") {
            in_neighbor_caps = false;
        }
    }
    if caps_seen && info.remote_four_octet_as.is_none() {
        info.remote_four_octet_as = Some(false);
    }
    if !info.established {
        info.remote_four_octet_as = None;
    }
    info
}

/// FRR's JSON names for well-known communities, back to "A:B".
fn frr_well_known(name: &str) -> Option<u32> {
    let low = match name.to_ascii_lowercase().replace('-', "").as_str() {
        "gshut" => 0,
        "acceptown" => 1,
        "routefiltertranslatedv4" => 2,
        "routefilterv4" => 3,
        "routefiltertranslatedv6" => 4,
        "routefilterv6" => 5,
        "llgrstale" => 6,
        "nollgr" => 7,
        "acceptownnexthop" => 8,
        "blackhole" => 666,
        "noexport" => 65281,
        "noadvertise" => 65282,
        "localas" => 65283,
        "nopeer" => 65284,
        _ => return None,
    };
    Some(low)
}

/// `vtysh -c 'show bgp ipv4|ipv6 unicast json detail'` (FRR 8.4): `routes` maps a prefix
/// to an array whose first element describes the prefix and the others are paths.
pub(crate) fn parse_frr_routes(text: &str) -> Result<Vec<Route>> {
    let v: Value = serde_json::from_str(text).with_context(|| format!("FRR routes: {text}"))?;
    let mut out = Vec::new();
    for (prefix, paths) in v["routes"].as_object().into_iter().flatten() {
        let prefix: IpNet = prefix
            .parse()
            .with_context(|| format!("FRR prefix {prefix}"))?;
        let paths: Vec<&Value> = match paths {
            Value::Array(a) => a.iter().collect(),
            Value::Object(o) => o
                .get("paths")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        for p in paths {
            let Some(nhs) = p["nexthops"].as_array() else {
                continue;
            };
            let Some(from) = p["peer"]["peerId"]
                .as_str()
                .or(p["peerId"].as_str())
                .and_then(|s| s.parse::<IpAddr>().ok())
                .filter(|a| !a.is_unspecified())
            else {
                continue;
            };
            let next_hop = nhs
                .iter()
                .filter(|n| n["scope"].as_str() != Some("link-local"))
                .chain(nhs.iter())
                .find_map(|n| n["ip"].as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| anyhow!("FRR path of {prefix} has no next hop"))?;
            let mut as_path = Vec::new();
            if let Some(segs) = p["aspath"]["segments"].as_array() {
                for s in segs {
                    as_path.extend(
                        s["list"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|x| x.as_u64())
                            .map(|x| x as u32),
                    );
                }
            } else if let Some(s) = p["aspath"]["string"].as_str().or(p["path"].as_str()) {
                as_path = s
                    .split(|c: char| c.is_whitespace() || "{}(),".contains(c))
                    .filter_map(|x| x.parse().ok())
                    .collect();
            }
            let communities = p["community"]["list"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str())
                .map(|c| match frr_well_known(c) {
                    Some(low) => community(65535, low),
                    None => c.to_string(),
                })
                .collect();
            out.push(Route {
                prefix,
                next_hop,
                as_path,
                local_pref: p["locPrf"].as_u64().map(|x| x as u32),
                communities: sort_communities(communities),
                stale: p["stale"].as_bool().unwrap_or(false),
                from: Some(from),
            });
        }
    }
    Ok(out)
}

/// What exabgp's event log adds up to.
#[derive(Debug, Default)]
pub(crate) struct ExabgpState {
    pub(crate) routes: Vec<Route>,
    pub(crate) neighbors: BTreeMap<IpAddr, NeighborInfo>,
}

/// Fold exabgp's JSON events (one a line, API version 4.0.1 as exabgp 4.2 writes it): an
/// UPDATE's `announce`/`withdraw` change the table, a session going `down` (or exabgp
/// shutting down) drops the routes of that neighbour (exabgp keeps no RIB).
pub(crate) fn exabgp_fold(text: &str) -> Result<ExabgpState> {
    let mut table: BTreeMap<(IpAddr, IpNet), Route> = BTreeMap::new();
    let mut neighbors: BTreeMap<IpAddr, NeighborInfo> = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        // The last line can be incomplete while the helper writes it; an OPEN's
        // capabilities are not always valid JSON: take its fields by hand.
        let Ok(ev) = serde_json::from_str::<Value>(line) else {
            if line.contains(r#""type": "open""#)
                && line.contains(r#""direction": "receive""#)
                && let Some(peer) = json_str_field(line, "peer").and_then(|s| s.parse().ok())
            {
                let n: &mut NeighborInfo = neighbors.entry(peer).or_default();
                n.remote_router_id = json_str_field(line, "router_id").and_then(|s| s.parse().ok());
            }
            continue;
        };
        if ev["type"] == "notification" && ev["notification"] == "shutdown" {
            table.clear();
            for n in neighbors.values_mut() {
                n.established = false;
                n.state = "down".into();
            }
            continue;
        }
        let Some(peer) = ev["neighbor"]["address"]["peer"]
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok())
        else {
            continue;
        };
        match ev["type"].as_str() {
            Some("state") => {
                let state = ev["neighbor"]["state"].as_str().unwrap_or_default();
                let n = neighbors.entry(peer).or_default();
                n.state = state.to_string();
                n.established = state == "up";
                if state == "down" {
                    table.retain(|(p, _), _| *p != peer);
                    n.remote_router_id = None;
                }
            }
            Some("open") => {
                let msg = &ev["neighbor"]["open"];
                if ev["neighbor"]["direction"] == "receive" {
                    let n = neighbors.entry(peer).or_default();
                    n.remote_router_id = msg["router_id"].as_str().and_then(|s| s.parse().ok());
                }
            }
            Some("update") => {
                if ev["neighbor"]["direction"] != "receive" {
                    continue;
                }
                let upd = &ev["neighbor"]["message"]["update"];
                for (_, nlris) in upd["withdraw"].as_object().into_iter().flatten() {
                    for p in nlris.as_array().into_iter().flatten() {
                        if let Some(p) = exabgp_nlri(p) {
                            table.remove(&(peer, p));
                        }
                    }
                }
                let attr = &upd["attribute"];
                let mut as_path = Vec::new();
                flatten_asns(&attr["as-path"], &mut as_path);
                let communities: Vec<String> = attr["community"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| {
                        let c = c.as_array()?;
                        Some(community(
                            c.first()?.as_u64()? as u32,
                            c.get(1)?.as_u64()? as u32,
                        ))
                    })
                    .collect();
                let communities = sort_communities(communities);
                let local_pref = attr["local-preference"].as_u64().map(|x| x as u32);
                for (_, by_nh) in upd["announce"].as_object().into_iter().flatten() {
                    for (nh, nlris) in by_nh.as_object().into_iter().flatten() {
                        let Ok(next_hop) = nh.parse::<IpAddr>() else {
                            continue;
                        };
                        for p in nlris.as_array().into_iter().flatten() {
                            if let Some(prefix) = exabgp_nlri(p) {
                                table.insert(
                                    (peer, prefix),
                                    Route {
                                        prefix,
                                        next_hop,
                                        as_path: as_path.clone(),
                                        local_pref,
                                        communities: communities.clone(),
                                        stale: false,
                                        from: Some(peer),
                                    },
                                );
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(ExabgpState {
        routes: table.into_values().collect(),
        neighbors,
    })
}

/// The string value of the first `"key": "value"` in `line`.
fn json_str_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = &line[line.find(&format!("\"{key}\": \""))? + key.len() + 5..];
    Some(&rest[..rest.find('"')?])
}

fn exabgp_nlri(v: &Value) -> Option<IpNet> {
    v["nlri"].as_str().or(v.as_str())?.parse().ok()
}

fn flatten_asns(v: &Value, out: &mut Vec<u32>) {
    match v {
        Value::Number(n) => out.extend(n.as_u64().map(|x| x as u32)),
        Value::Array(a) => a.iter().for_each(|x| flatten_asns(x, out)),
        Value::Object(o) => o.values().for_each(|x| flatten_asns(x, out)),
        _ => {}
    }
}

/// One line of `birdc show bfd sessions`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BirdBfd {
    /// "Up", "Down", "Init", "AdminDown".
    pub(crate) state: String,
    /// "Since" as printed (changes when the session changes state).
    pub(crate) since: String,
    /// The transmit interval in use, seconds.
    pub(crate) interval: f64,
    /// The detection time, seconds.
    pub(crate) timeout: f64,
}

/// The session with `neighbor` in `birdc show bfd sessions` output:
/// `IP address  Interface  State  Since  Interval  Timeout` (Since may be two words).
pub(crate) fn parse_bird_bfd(text: &str, neighbor: IpAddr) -> Option<BirdBfd> {
    let addr = neighbor.to_string();
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() != Some(&addr.as_str()) || f.len() < 6 {
            return None;
        }
        let n = f.len();
        Some(BirdBfd {
            state: f[2].to_string(),
            since: f[3..n - 2].join(" "),
            interval: f[n - 2].parse().ok()?,
            timeout: f[n - 1].parse().ok()?,
        })
    })
}
