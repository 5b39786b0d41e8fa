//! The HTTP endpoint of both binaries: `/metrics` (MetalLB serves it on `--port`, 7472, and its
//! 0.12 manifests probe it), `/healthz` and `/livez` (the decision loop is alive), `/readyz`.
//! I/O: hyper 1 (HTTP/1.1, one request per connection, header read timeout), never panics on
//! what a client sends.
//!
//! Like MetalLB (`http.ListenAndServe(":7472")`, internal/k8s/k8s.go:329 in v0.12.1), an empty
//! host listens on every address of both families: one `[::]` socket with `IPV6_V6ONLY` off,
//! falling back to `0.0.0.0` where the kernel has no IPv6.
//!
//! Liveness: the decision loop bumps a [`Heartbeat`] on every iteration (and on an idle tick);
//! `/healthz` fails with 503 once the last beat is older than the [`Liveness`] bound, so a
//! wedged loop gets the Pod restarted. Before the first beat (start-up, a standby controller
//! waiting for its Lease) the process counts as alive.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request head within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole exchange (head, body, response) must finish within this time.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Back-off after a failed `accept` (EMFILE, ENOBUFS …): starts here, doubles, capped at
/// [`ACCEPT_BACKOFF_MAX`]; as Go's `http.Server` does (5 ms … 1 s).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The speaker's liveness bound. Its loop wakes on every input, and inputs come at least every
/// 30 s when all is quiet (the apiserver probe when Pods are watched; the Pods poll, every 3 s,
/// otherwise): three of those periods.
pub const SPEAKER_LIVENESS: Duration = Duration::from_secs(90);

/// The instant all heartbeats count from (monotonic; immune to wall-clock steps).
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// When a decision loop last made progress.
#[derive(Debug, Default)]
pub struct Heartbeat {
    /// Milliseconds since [`origin`] plus one; 0 = never.
    last: AtomicU64,
}

impl Heartbeat {
    /// A heartbeat that has never beaten.
    pub fn new() -> Self {
        Heartbeat::default()
    }

    /// The loop made progress now.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    /// The loop made progress at `at` (tests drive the clock with this).
    pub fn beat_at(&self, at: Instant) {
        let ms = at.saturating_duration_since(origin()).as_millis();
        let ms = u64::try_from(ms).unwrap_or(u64::MAX - 1);
        self.last.store(ms + 1, Ordering::Relaxed);
    }

    /// How long ago the last beat was, as seen at `now`; `None` before the first beat.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            ms => {
                let at = origin() + Duration::from_millis(ms - 1);
                Some(now.saturating_duration_since(at))
            }
        }
    }
}

/// The heartbeat of this process's decision loop (each binary has exactly one loop).
pub fn decision_loop() -> &'static Arc<Heartbeat> {
    static LOOP: OnceLock<Arc<Heartbeat>> = OnceLock::new();
    LOOP.get_or_init(|| Arc::new(Heartbeat::new()))
}

/// What `/healthz` checks: a heartbeat and how old it may get.
#[derive(Debug, Clone)]
pub struct Liveness {
    heartbeat: Arc<Heartbeat>,
    bound: Duration,
}

impl Liveness {
    /// Alive while `heartbeat` is at most `bound` old (or has never beaten).
    pub fn new(heartbeat: Arc<Heartbeat>, bound: Duration) -> Self {
        Liveness { heartbeat, bound }
    }

    /// Whether the loop counts as alive at `now`.
    pub fn is_alive(&self, now: Instant) -> bool {
        self.heartbeat.age(now).is_none_or(|age| age <= self.bound)
    }
}

/// Bind the metrics port on `host`. The unspecified IPv6 address (`[::]`, what both binaries
/// use when no host is given) means every address of both families, as in Go: `IPV6_V6ONLY`
/// off, and `0.0.0.0` when the kernel has no IPv6. Needs a Tokio runtime.
pub fn bind(host: IpAddr, port: u16) -> io::Result<TcpListener> {
    if host != IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        return listen(SocketAddr::new(host, port), false);
    }
    listen(SocketAddr::new(host, port), true).or_else(|e| {
        debug!(error = %e, "No dual-stack socket; listening on IPv4 only");
        listen(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port), false)
    })
}

fn listen(addr: SocketAddr, dual_stack: bool) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if dual_stack {
        sock.set_only_v6(false)?;
    }
    // As Go does for listeners: a restarted process can bind while old connections linger.
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

/// Where connections come from ([`TcpListener`]; tests substitute failing ones).
trait Acceptor {
    fn accept_one(&self) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

impl Acceptor for TcpListener {
    async fn accept_one(&self) -> io::Result<TcpStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// What the handlers read.
#[derive(Clone)]
struct App {
    registry: Registry,
    /// The speaker's `metallb_speaker_announced`, written as text into the scrape.
    announced: Option<crate::metrics::Announced>,
    ready: Arc<AtomicBool>,
    liveness: Liveness,
}

/// Serve until the process ends. `ready` answers `/readyz`, `liveness` `/healthz` and
/// `/livez`. Registers the `process_*` collector on `registry` (as Go's client library does by
/// default).
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    announced: Option<crate::metrics::Announced>,
    ready: Arc<AtomicBool>,
    liveness: Liveness,
) {
    register_process_collector(&registry);
    let app = App {
        registry,
        announced,
        ready,
        liveness,
    };
    accept_loop(listener, app).await;
}

/// Register `process_cpu_seconds_total`, `process_resident_memory_bytes`, … once.
fn register_process_collector(registry: &Registry) {
    let pc = prometheus::process_collector::ProcessCollector::for_self();
    match registry.register(Box::new(pc)) {
        Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
        Err(e) => debug!(error = %e, "Cannot register the process collector"),
    }
}

async fn accept_loop<A: Acceptor>(listener: A, app: App) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut warned = false;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let sock = match listener.accept_one().await {
            Ok(s) => {
                backoff = ACCEPT_BACKOFF_MIN;
                s
            }
            Err(e) => {
                if !std::mem::replace(&mut warned, true) {
                    warn!(error = %e, "Accepting a metrics connection failed; backing off");
                } else {
                    debug!(error = %e, ?backoff, "Accepting a metrics connection failed");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let resp = app.respond(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(sock), svc);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(error = %e, "Metrics connection failed"),
                Err(_) => debug!("Metrics connection timed out"),
            }
            drop(slot);
        });
    }
}

impl App {
    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, body: &'static str| (status, "text/plain", body.into());
        let (status, ctype, body): (StatusCode, &str, Bytes) = match req.uri().path() {
            "/metrics" => {
                // No trim after a scrape: a large body is one buffer above the mmap threshold,
                // unmapped when sent; and a scrape every second would keep postponing the trim
                // that follows a burst (BENCHMARKS.md, speaker memory).
                let body = crate::metrics::render_with(&self.registry, self.announced.as_ref());
                (StatusCode::OK, "text/plain; version=0.0.4", body.into())
            }
            "/healthz" | "/livez" if self.liveness.is_alive(Instant::now()) => {
                text(StatusCode::OK, "ok\n")
            }
            "/healthz" | "/livez" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the decision loop has not made progress\n",
            ),
            "/readyz" if self.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ok\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        };
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(ctype),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn app(bound: Duration) -> (Registry, Arc<Heartbeat>, App) {
        let registry = Registry::new();
        let c = prometheus::IntCounter::new("metallb_test_total", "test").unwrap();
        registry.register(Box::new(c)).unwrap();
        let hb = Arc::new(Heartbeat::new());
        let app = App {
            registry: registry.clone(),
            announced: None,
            ready: Arc::new(AtomicBool::new(true)),
            liveness: Liveness::new(hb.clone(), bound),
        };
        (registry, hb, app)
    }

    /// Serve `app` on `host` and return the port.
    async fn start(host: IpAddr, app: App) -> u16 {
        let l = bind(host, 0).unwrap();
        let port = l.local_addr().unwrap().port();
        register_process_collector(&app.registry);
        tokio::spawn(accept_loop(l, app));
        port
    }

    /// Wait until the server end of `client` has read everything sent so far (its receive
    /// queue in /proc/net/tcp{,6} is empty), so the next write is a separate read for it.
    /// Returns early when the server closed the connection.
    async fn wait_consumed(me: SocketAddr, peer: SocketAddr) {
        // /proc/net/tcp* columns: sl local_address rem_address st tx_queue:rx_queue …
        let (local, remote) = (
            format!(":{:04X}", peer.port()),
            format!(":{:04X}", me.port()),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut rx = None;
            for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                for line in text.lines().skip(1) {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    if cols.len() > 4 && cols[1].ends_with(&local) && cols[2].ends_with(&remote) {
                        let q = cols[4].split_once(':').map_or("", |(_, r)| r);
                        rx = u64::from_str_radix(q, 16).ok();
                    }
                }
            }
            if rx.is_none_or(|q| q == 0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server never read the first part"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Send `parts`, each once the server has read the one before, and return (status line,
    /// body).
    async fn exchange(addr: SocketAddr, parts: &[&[u8]]) -> (String, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (me, peer) = (s.local_addr().unwrap(), s.peer_addr().unwrap());
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                wait_consumed(me, peer).await;
            }
            // A server that answered early may have closed: the reply tells.
            if s.write_all(p).await.is_err() || s.flush().await.is_err() {
                break;
            }
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (
            head.lines().next().unwrap_or_default().to_string(),
            body.to_string(),
        )
    }

    fn local(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[tokio::test]
    async fn serves_a_request_split_across_segments() {
        let (_, _, app) = app(Duration::from_secs(30));
        let port = start(Ipv6Addr::UNSPECIFIED.into(), app).await;
        let (status, body) = exchange(
            local(port),
            &[b"GET /met", b"rics HTTP/1.1\r\nHost: x\r\n", b"\r\n"],
        )
        .await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("metallb_test_total 0"), "{body}");
    }

    #[tokio::test]
    async fn exposes_process_metrics() {
        let (_, _, app) = app(Duration::from_secs(30));
        let port = start(Ipv6Addr::UNSPECIFIED.into(), app).await;
        let (status, body) = exchange(local(port), &[b"GET /metrics HTTP/1.0\r\n\r\n"]).await;
        assert_eq!(status, "HTTP/1.0 200 OK");
        assert!(body.contains("process_cpu_seconds_total"), "{body}");
        assert!(body.contains("process_resident_memory_bytes"), "{body}");
    }

    #[tokio::test]
    async fn listens_on_both_families_without_a_host() {
        let (_, _, app) = app(Duration::from_secs(30));
        let port = start(Ipv6Addr::UNSPECIFIED.into(), app).await;
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            eprintln!("no IPv6 loopback here; only IPv4 checked");
        } else {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            let (status, _) = exchange(v6, &[b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"]).await;
            assert_eq!(status, "HTTP/1.1 200 OK");
        }
        let (status, _) =
            exchange(local(port), &[b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"]).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
    }

    #[tokio::test]
    async fn healthz_fails_once_the_loop_stalls() {
        let bound = Duration::from_secs(30);
        let (_, hb, app) = app(bound);
        let port = start(Ipv4Addr::LOCALHOST.into(), app).await;
        let get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".as_slice();
        // Never beaten (start-up): alive.
        assert_eq!(exchange(local(port), &[get]).await.0, "HTTP/1.1 200 OK");
        hb.beat();
        assert_eq!(exchange(local(port), &[get]).await.0, "HTTP/1.1 200 OK");
        // The last beat was twice the bound ago: the loop is wedged.
        let past = Instant::now().checked_sub(bound * 2).unwrap_or_else(origin);
        if past > origin() {
            hb.beat_at(past);
            let (status, _) = exchange(local(port), &[get]).await;
            assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
            let (status, _) =
                exchange(local(port), &[b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"]).await;
            assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        }
        // The loop ticks again.
        hb.beat();
        assert_eq!(exchange(local(port), &[get]).await.0, "HTTP/1.1 200 OK");
    }

    #[test]
    fn liveness_is_measured_against_the_bound() {
        let hb = Arc::new(Heartbeat::new());
        let l = Liveness::new(hb.clone(), Duration::from_secs(30));
        let t0 = origin() + Duration::from_secs(1000);
        assert!(l.is_alive(t0), "never beaten counts as alive");
        hb.beat_at(t0);
        assert!(l.is_alive(t0 + Duration::from_secs(30)));
        assert!(!l.is_alive(t0 + Duration::from_secs(31)));
    }

    /// Fails every accept immediately, as a listener out of file descriptors does; after
    /// `limit` attempts it blocks forever (so a spinning loop ends instead of hanging the test).
    struct Failing {
        attempts: Arc<AtomicUsize>,
        limit: usize,
    }

    impl Acceptor for Failing {
        async fn accept_one(&self) -> io::Result<TcpStream> {
            if self.attempts.fetch_add(1, Ordering::Relaxed) >= self.limit {
                std::future::pending::<()>().await;
            }
            Err(io::Error::from_raw_os_error(libc::EMFILE))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_instead_of_spinning() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let (_, _, app) = app(Duration::from_secs(30));
        let failing = Failing {
            attempts: attempts.clone(),
            limit: 10_000,
        };
        tokio::spawn(accept_loop(failing, app));
        // Virtual time (paused clock): ten seconds pass without waiting for them.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let n = attempts.load(Ordering::Relaxed);
        // 5 ms doubling to 1 s: about 8 attempts in the first second, then one a second.
        assert!((2..=30).contains(&n), "{n} accept attempts in 10 s");
    }
}
