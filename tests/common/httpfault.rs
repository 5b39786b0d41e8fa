//! An HTTP/1.1 proxy between a binary under test and `kubectl proxy` (which authenticates to
//! the apiserver) that injects apiserver errors: a chosen status (5xx, 409 Conflict, 403 from
//! an admission webhook, …) for the next requests matching a rule, and `410 Gone` inside a
//! watch stream (the `ERROR` event the apiserver sends when a watch's resourceVersion is too
//! old). Every request travels on its own connection (`Connection: close` is forced), so each
//! one is seen; requests no rule matches are spliced through untouched.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, anyhow};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What to answer instead of forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// This HTTP status with a `Status` body of this reason.
    Status(u16, &'static str),
    /// `200`, then one watch `ERROR` event with a `410 Expired` Status, then the end.
    WatchGone,
}

/// The next `count` requests whose method is one of `methods` and whose target contains every
/// one of `contains` get `answer`.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub(crate) methods: &'static [&'static str],
    pub(crate) contains: Vec<String>,
    pub(crate) answer: Answer,
    pub(crate) count: usize,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    injected: Vec<(String, Answer)>,
}

/// The running proxy; dropping it stops it and ends the connections it splices.
pub(crate) struct HttpFault {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Bumped to end every spliced connection (the client must reconnect).
    cut: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl HttpFault {
    /// Listen on 127.0.0.1 (a free port), forwarding to the plain-HTTP `upstream`.
    pub(crate) async fn start(upstream: SocketAddr) -> Result<HttpFault> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let (cut, cut_rx) = watch::channel(0);
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (st, cut_rx) = (st.clone(), cut_rx.clone());
                tokio::spawn(async move {
                    let _ = serve(client, upstream, st, cut_rx).await;
                });
            }
        });
        Ok(HttpFault {
            addr,
            state,
            cut,
            task,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn add(&self, rule: Rule) {
        if let Ok(mut s) = self.state.lock() {
            s.rules.push(rule);
        }
    }

    /// The requests answered by a rule so far: request line and answer.
    pub(crate) fn injected(&self) -> Vec<(String, Answer)> {
        self.state
            .lock()
            .map(|s| s.injected.clone())
            .unwrap_or_default()
    }

    /// End every connection being spliced (watches included).
    pub(crate) fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for HttpFault {
    fn drop(&mut self) {
        self.task.abort();
        self.cut_all();
    }
}

fn status_body(code: u16, reason: &str) -> String {
    format!(
        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"injected by the test proxy","reason":"{reason}","code":{code}}}"#
    )
}

async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
    mut cut: watch::Receiver<u64>,
) -> Result<()> {
    cut.borrow_and_update();
    let mut client = BufReader::new(client);
    // The request head, line by line (bounded).
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = client.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok(());
        }
        anyhow::ensure!(head.len() + n < 65_536, "request head too long");
        let end = line == b"\r\n";
        head.push(line);
        if end {
            break;
        }
    }
    let request_line = String::from_utf8_lossy(&head[0]).trim_end().to_string();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let answer = {
        let mut s = state.lock().map_err(|_| anyhow!("state poisoned"))?;
        let hit = s.rules.iter_mut().find(|r| {
            r.count > 0
                && r.methods.contains(&method.as_str())
                && r.contains.iter().all(|c| target.contains(c.as_str()))
        });
        let answer = hit.map(|r| {
            r.count -= 1;
            r.answer
        });
        if let Some(a) = answer {
            s.injected.push((request_line.clone(), a));
        }
        answer
    };
    // Body bytes read past the head with it.
    let early = client.buffer().to_vec();
    let mut client = client.into_inner();
    match answer {
        Some(Answer::Status(code, reason)) => {
            let body = status_body(code, reason);
            let resp = format!(
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(resp.as_bytes()).await?;
            client.shutdown().await?;
            Ok(())
        }
        Some(Answer::WatchGone) => {
            let event = format!(
                "{{\"type\":\"ERROR\",\"object\":{}}}\n",
                status_body(410, "Expired")
            );
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{event}\r\n0\r\n\r\n",
                event.len()
            );
            client.write_all(resp.as_bytes()).await?;
            client.shutdown().await?;
            Ok(())
        }
        None => {
            let mut up = TcpStream::connect(upstream)
                .await
                .context("connecting upstream")?;
            // One request per connection, so that the next one is seen too.
            let mut out = Vec::new();
            for line in &head[..head.len() - 1] {
                let lower = String::from_utf8_lossy(line).to_ascii_lowercase();
                if !lower.starts_with("connection:") && !lower.starts_with("keep-alive:") {
                    out.extend_from_slice(line);
                }
            }
            out.extend_from_slice(b"Connection: close\r\n\r\n");
            out.extend_from_slice(&early);
            up.write_all(&out).await?;
            let (mut cr, mut cw) = client.split();
            let (mut ur, mut uw) = up.split();
            tokio::select! {
                _ = tokio::io::copy(&mut cr, &mut uw) => {
                    // The request body is sent; keep relaying the answer.
                    let _ = tokio::select! {
                        r = tokio::io::copy(&mut ur, &mut cw) => r.map(|_| ()),
                        _ = cut.changed() => Ok(()),
                    };
                }
                _ = tokio::io::copy(&mut ur, &mut cw) => {}
                _ = cut.changed() => {}
            }
            Ok(())
        }
    }
}

/// `kubectl proxy` for `kubeconfig` on a free port of 127.0.0.1: plain HTTP in, the
/// kubeconfig's identity towards the apiserver.
pub(crate) async fn kubectl_proxy(
    mut kubectl: tokio::process::Command,
    kubeconfig: &std::path::Path,
) -> Result<(tokio::process::Child, SocketAddr)> {
    let mut child = kubectl
        .arg("proxy")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--port=0", "--address=127.0.0.1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting kubectl proxy")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("kubectl proxy: no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .context("kubectl proxy did not start within 30 s")??
        .ok_or_else(|| anyhow!("kubectl proxy exited"))?;
    // "Starting to serve on 127.0.0.1:PORT"
    let addr = line
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow!("kubectl proxy said {line:?}"))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr))
}
