//! FRR's BFD daemon (`bfdd`) as a test peer, run standalone inside a network namespace (no
//! zebra: `show bfd peers json` is the view we read). Recipe from
//! `shared/reference/test-peers.md`: bfdd refuses `-u root` ("not part of vty group"), so it
//! runs as `frr` with a socket directory it can write. Used as
//! `#[path = "common/bfdd.rs"] mod bfdd;` next to `mod routers;`.

#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// One configured peer.
pub(crate) struct Peer {
    pub(crate) peer: IpAddr,
    pub(crate) local: IpAddr,
    pub(crate) receive_ms: u32,
    pub(crate) transmit_ms: u32,
    pub(crate) multiplier: u8,
    /// RFC 5883 multihop (UDP 4784) instead of single hop.
    pub(crate) multihop: bool,
}

/// A running bfdd; killed (and its directory removed) on drop.
pub(crate) struct Bfdd {
    dir: PathBuf,
    child: tokio::process::Child,
}

impl Bfdd {
    /// Write the config, start bfdd in `netns` and wait until it answers.
    pub(crate) async fn start(netns: &str, peers: &[Peer]) -> Result<Bfdd> {
        let dir = std::env::temp_dir().join(format!(
            "mlbrs-bfdd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut conf = String::from("bfd\n");
        for p in peers {
            conf.push_str(&format!(
                " peer {}{} local-address {}\n  receive-interval {}\n  transmit-interval {}\n  detect-multiplier {}\n exit\n",
                p.peer,
                if p.multihop { " multihop" } else { "" },
                p.local,
                p.receive_ms,
                p.transmit_ms,
                p.multiplier
            ));
        }
        conf.push_str("exit\n");
        std::fs::write(dir.join("bfdd.conf"), conf)?;
        let st = std::process::Command::new("chown")
            .args(["-R", "frr:frr"])
            .arg(&dir)
            .status()?;
        ensure!(st.success(), "chown frr {}", dir.display());
        let log = std::fs::File::create(dir.join("bfdd.log"))?;
        let child = tokio::process::Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(crate::routers::frr_daemon("bfdd"))
            .arg("-f")
            .arg(dir.join("bfdd.conf"))
            .arg("-i")
            .arg(dir.join("bfdd.pid"))
            .arg("--vty_socket")
            .arg(&dir)
            .arg("--bfdctl")
            .arg(dir.join("bfdd.sock"))
            .args(["-u", "frr", "-g", "frr", "-P", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting bfdd")?;
        let b = Bfdd { dir, child };
        let t = Instant::now();
        while b.peers().await.is_err() {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("bfdd did not answer within 30 s: {}", b.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(b)
    }

    /// `show bfd peers json`.
    pub(crate) async fn peers(&self) -> Result<Vec<Value>> {
        let out = tokio::process::Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&self.dir)
            .args(["-d", "bfdd", "-c", "show bfd peers json"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(10), out).await??;
        ensure!(out.status.success(), "vtysh: {:?}", out);
        let v: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| String::from_utf8_lossy(&out.stdout).to_string())?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// The JSON of the peer `addr`, once `pred` holds for it (waits up to `within`).
    pub(crate) async fn wait_peer(
        &self,
        addr: IpAddr,
        within: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let t = Instant::now();
        let mut last = Value::Null;
        loop {
            if let Ok(ps) = self.peers().await
                && let Some(p) = ps
                    .into_iter()
                    .find(|p| p["peer"].as_str() == Some(&addr.to_string()))
            {
                if pred(&p) {
                    return Ok(p);
                }
                last = p;
            }
            ensure!(
                t.elapsed() < within,
                "bfdd: {what} not seen within {within:?}; last: {last}; log: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("bfdd.log")).unwrap_or_default()
    }
}

impl Drop for Bfdd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
