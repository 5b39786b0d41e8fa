//! A TCP proxy between a binary under test and the apiserver that injects transport faults:
//! half-open connections (bytes swallowed with no FIN or RST, as when a NAT entry or a load
//! balancer in the path vanished), resets (RST on every connection) and added latency. TLS
//! passes through untouched: the harness apiserver's certificate names 127.0.0.1.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// What the proxy does to connections accepted from now on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Forward.
    None,
    /// Accept, then swallow every byte both ways, for good.
    HalfOpen,
    /// Accept, then reset.
    Reset,
    /// Forward each chunk after this delay.
    Delay(Duration),
}

struct Conn {
    /// Swallow everything from now on (the path died).
    dead: AtomicBool,
    /// Reset now.
    reset: Notify,
}

struct Shared {
    upstream: SocketAddr,
    fault: Mutex<Fault>,
    conns: Mutex<Vec<Arc<Conn>>>,
    accepted: AtomicU64,
    forwarded: AtomicU64,
}

/// The running proxy; dropping it stops accepting (open connections end with their peers).
pub(crate) struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listen on 127.0.0.1 (a free port) and forward to `upstream`.
    pub(crate) async fn start(upstream: SocketAddr) -> Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            fault: Mutex::new(Fault::None),
            conns: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                s.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(s.clone(), client));
            }
        });
        Ok(FaultProxy { addr, shared, task })
    }

    /// Where clients connect.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Bytes forwarded so far (both ways).
    pub(crate) fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// Set the fault for new connections and apply it to the open ones: `HalfOpen` kills
    /// their path for good (they stay open and silent), `Reset` resets them; `None` and
    /// `Delay` leave dead connections dead (a half-open connection does not come back).
    pub(crate) fn set(&self, fault: Fault) {
        if let Ok(mut f) = self.shared.fault.lock() {
            *f = fault;
        }
        let conns = self
            .shared
            .conns
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        for c in conns {
            match fault {
                Fault::HalfOpen => c.dead.store(true, Ordering::Relaxed),
                Fault::Reset => c.reset.notify_one(),
                Fault::None | Fault::Delay(_) => {}
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(shared: Arc<Shared>, client: TcpStream) {
    let fault = shared.fault.lock().map(|f| *f).unwrap_or(Fault::None);
    let conn = Arc::new(Conn {
        dead: AtomicBool::new(fault == Fault::HalfOpen),
        reset: Notify::new(),
    });
    if fault == Fault::Reset {
        reset(&client);
        return;
    }
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        reset(&client);
        return;
    };
    if let Ok(mut conns) = shared.conns.lock() {
        conns.retain(|c| Arc::strong_count(c) > 1);
        conns.push(conn.clone());
    }
    // Closing either socket from here on sends RST (SO_LINGER 0): a reset ends both at once by
    // dropping them; an ordinary end has already passed its FIN on (`pump`).
    reset(&client);
    reset(&server);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(shared.clone(), conn.clone(), cr, sw);
    let down = pump(shared.clone(), conn.clone(), sr, cw);
    tokio::select! {
        (a, b) = async { tokio::join!(up, down) } => {
            // Both directions ended by themselves: close both halves normally.
            drop((a, b));
        }
        () = conn.reset.notified() => {}
    }
}

/// Copy `from` to `to` until `from` ends, swallowing everything once the connection is dead.
async fn pump(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
) -> (OwnedReadHalf, OwnedWriteHalf) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if conn.dead.load(Ordering::Relaxed) {
            continue;
        }
        let fault = shared.fault.lock().map(|f| *f).unwrap_or(Fault::None);
        if let Fault::Delay(d) = fault {
            tokio::time::sleep(d).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        shared.forwarded.fetch_add(n as u64, Ordering::Relaxed);
    }
    if !conn.dead.load(Ordering::Relaxed) {
        let _ = to.shutdown().await;
    }
    (from, to)
}

/// Make closing `s` send RST (SO_LINGER 0).
fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}
