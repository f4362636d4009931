//! The API's accept loop on the Unix socket, with the limits a root daemon needs against
//! clients that misbehave (hand-written rather than `axum::serve`, which has neither):
//!
//! - a cap on open connections (`max_connections`, lowered to what the open-files limit
//!   allows with [`FDS_IN_RESERVE`] kept for supervisors, logs, plugins and the store); a
//!   connection past it is answered `503` with the reason and closed, so clients see why;
//! - a deadline for request headers (`api_idle_timeout`, hyper's header read timeout),
//!   which also ends keep-alive connections idle between requests. Once a request is read,
//!   its answer may stream for as long as it needs (`logs -f`, `events`, `wait`), and an
//!   upgraded connection (attach) is out of hyper's hands.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// File descriptors kept for everything but API connections.
pub const FDS_IN_RESERVE: u64 = 256;

/// What the loop enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (and to start its next request).
    pub idle_timeout: Duration,
}

/// Raises the soft open-files limit to the hard one (as dockerd and containerd run) and
/// returns the connection cap that leaves [`FDS_IN_RESERVE`] descriptors free.
pub fn connection_cap(requested: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    };
    let allowed = soft.saturating_sub(FDS_IN_RESERVE).max(1);
    requested
        .min(usize::try_from(allowed).unwrap_or(usize::MAX))
        .max(1)
}

/// Serves `app` on `listener` until `shutdown` completes; then waits up to `grace` for
/// requests in flight (streams would hold it forever).
pub async fn serve(
    listener: UnixListener,
    app: axum::Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) -> Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE/ENFILE: the reserve is in use; let connections end first.
                    tracing::warn!(error = %e, "accepting an API connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let app = app.clone();
                tokio::spawn(async move {
                    connection(stream, app, limits.idle_timeout).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(refuse(stream, limits.max_connections));
            }
        }
    }
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(grace, permits.acquire_many(all)).await;
    Ok(())
}

async fn connection(stream: UnixStream, app: axum::Router, idle_timeout: Duration) {
    let service = TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "API connection ended");
    }
}

/// Answers a connection over the cap with the reason, then closes it.
async fn refuse(mut stream: UnixStream, cap: usize) {
    let body = serde_json::json!({
        "code": "unavailable",
        "message": format!("too many connections to the agent (max_connections {cap}); retry later"),
        "exit_code": 125,
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    tracing::debug!(cap, "connection refused: at the connection cap");
}
