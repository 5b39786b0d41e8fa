//! A minimal HTTP/1.1 endpoint for `/metrics`, `/healthz` and `/readyz` (MetalLB serves
//! `/metrics` on `--port`, 7472, and its 0.12 manifests probe it). No framework: one request
//! per connection, bounded reads, never panics on what a client sends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serve until the process ends. `ready` answers `/readyz`.
pub async fn serve(listener: TcpListener, registry: Registry, ready: Arc<AtomicBool>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let path = path.split('?').next().unwrap_or(path);
            let (status, ctype, body) = match path {
                "/metrics" => (
                    "200 OK",
                    "text/plain; version=0.0.4",
                    crate::metrics::render(&registry),
                ),
                "/healthz" | "/livez" => ("200 OK", "text/plain", "ok\n".to_string()),
                "/readyz" if ready.load(Ordering::Relaxed) => {
                    ("200 OK", "text/plain", "ok\n".to_string())
                }
                "/readyz" => (
                    "503 Service Unavailable",
                    "text/plain",
                    "not ready\n".to_string(),
                ),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
