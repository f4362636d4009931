//! Health checks: one task per running container with a check. Command checks run through
//! an exec supervisor (libcontainer's tenant exec: the container's namespaces, cgroup,
//! capabilities and seccomp), HTTP and TCP checks from a short-lived thread that enters the
//! container's network namespace (so they work with no network but loopback). Results go
//! to the owner, which keeps the state, emits `health_status` events, and for a pod
//! container (a liveness probe) kills it when unhealthy so the restart policy acts.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use berth_runtime::health::{HealthCheck, HealthStatus, Probe};
use berth_runtime::state::{ExitRecord, ProcessId};
use berth_runtime::supervisor::protocol;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use super::events::Event;
use super::node::{Action, Node};
use crate::api::ExecRequest;

/// Output kept per check.
const MAX_OUTPUT: usize = 4096;

/// Starts checking a container until it exits.
pub fn spawn(
    tx: mpsc::Sender<Action>,
    id: String,
    check: HealthCheck,
    init: ProcessId,
    execs: PathBuf,
    mut exit: watch::Receiver<Option<ExitRecord>>,
) {
    tokio::spawn(async move {
        let interval = Duration::from_millis(check.interval_ms.max(10));
        let timeout = Duration::from_millis(check.timeout_ms.max(10));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = exit.wait_for(|e| e.is_some()) => return,
            }
            if exit.borrow().is_some() {
                return;
            }
            let (ok, output) = probe(&tx, &id, &check.probe, init, &execs, timeout).await;
            if tx
                .send(Action::HealthResult {
                    id: id.clone(),
                    ok,
                    output,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    });
}

async fn probe(
    tx: &mpsc::Sender<Action>,
    id: &str,
    probe: &Probe,
    init: ProcessId,
    execs: &std::path::Path,
    timeout: Duration,
) -> (bool, String) {
    let timed_out = || (false, format!("health check timed out after {timeout:?}"));
    match probe {
        // Times itself: a command over time is killed and its files still removed.
        Probe::Exec { command } => match exec_probe(tx, id, command, execs, timeout).await {
            Ok((code, out)) => (code == 0, out),
            Err(e) => (false, e),
        },
        Probe::Tcp { port } => tokio::time::timeout(timeout, in_netns(init, *port, None))
            .await
            .unwrap_or_else(|_| timed_out()),
        Probe::Http { port, path } => {
            tokio::time::timeout(timeout, in_netns(init, *port, Some(path.clone())))
                .await
                .unwrap_or_else(|_| timed_out())
        }
    }
}

/// Runs the command through an exec supervisor; its files are removed afterwards.
async fn exec_probe(
    tx: &mpsc::Sender<Action>,
    id: &str,
    command: &[String],
    execs: &std::path::Path,
    timeout: Duration,
) -> Result<(i32, String), String> {
    let req = ExecRequest {
        command: command.to_vec(),
        ..ExecRequest::default()
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    tx.send(Action::Exec(id.to_string(), Box::new(req), reply))
        .await
        .map_err(|_| "the agent is stopping".to_string())?;
    let exec_id = rx
        .await
        .map_err(|_| "the agent dropped the check".to_string())?
        .map_err(|e| e.message)?;
    let result = drive_exec(&execs.join(format!("{exec_id}.sock")), timeout).await;
    for suffix in ["sock", "json", "log", "process.json"] {
        let _ = std::fs::remove_file(execs.join(format!("{exec_id}.{suffix}")));
    }
    result
}

/// START, then collect output until EXIT; past `timeout` the process is killed (as
/// Docker does) and its EXIT still awaited, so the supervisor has written its files before
/// they are removed.
async fn drive_exec(socket: &std::path::Path, timeout: Duration) -> Result<(i32, String), String> {
    let mut stream = super::start::connect(socket).await.map_err(|e| e.message)?;
    stream
        .write_all(&protocol::encode(protocol::START, b""))
        .await
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut started: Option<ProcessId> = None;
    let mut timed_out = false;
    let mut output = Vec::new();
    loop {
        let read = super::start::read_frame(&mut stream);
        let frame = match tokio::time::timeout_at(deadline, read).await {
            Ok(frame) => frame,
            Err(_) if !timed_out => {
                timed_out = true;
                if let Some(p) = started.filter(|p| p.is_alive()) {
                    // Our own exec process (pid and start time checked).
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p.pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                tokio::time::timeout(
                    Duration::from_secs(5),
                    super::start::read_frame(&mut stream),
                )
                .await
                .map_err(|_| "the timed-out check did not end".to_string())?
            }
            Err(_) => return Err("the timed-out check did not end".into()),
        };
        let (kind, payload) = frame.map_err(|e| format!("exec supervisor: {e}"))?;
        match kind {
            protocol::STDOUT | protocol::STDERR => {
                let room = MAX_OUTPUT.saturating_sub(output.len());
                output.extend_from_slice(&payload[..room.min(payload.len())]);
            }
            protocol::STARTED => {
                let v: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                started = v["pid"].as_i64().and_then(|p| ProcessId::of(p as i32));
            }
            protocol::EXIT if timed_out => {
                return Err(format!("health check timed out after {timeout:?}"));
            }
            protocol::EXIT => {
                let exit: ExitRecord =
                    serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
                return Ok((
                    exit.exit_code,
                    String::from_utf8_lossy(&output).into_owned(),
                ));
            }
            protocol::ERROR => return Err(String::from_utf8_lossy(&payload).into_owned()),
            _ => {}
        }
    }
}

/// TCP connect (and with `path`, an HTTP GET) to 127.0.0.1:`port` inside the network
/// namespace of `init`. A thread of its own: `setns` changes only the calling thread, and
/// the thread ends with the check, so no pooled thread is left in a container's namespace.
async fn in_netns(init: ProcessId, port: u16, path: Option<String>) -> (bool, String) {
    let (reply, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("health-netns".into())
        .spawn(move || {
            let _ = reply.send(check_in_netns(init, port, path.as_deref()));
        });
    if let Err(e) = spawned {
        return (false, format!("starting the check thread: {e}"));
    }
    rx.await
        .unwrap_or_else(|_| (false, "the check thread died".into()))
}

fn check_in_netns(init: ProcessId, port: u16, path: Option<&str>) -> (bool, String) {
    let ns = match std::fs::File::open(format!("/proc/{}/ns/net", init.pid)) {
        Ok(f) => f,
        Err(e) => return (false, format!("opening the network namespace: {e}")),
    };
    // The pid is still the container's init (not a recycled pid) after opening its ns.
    if !init.is_alive() {
        return (false, "the container is not running".into());
    }
    if let Err(e) = nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET) {
        return (false, format!("entering the network namespace: {e}"));
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(10);
    let mut stream = match std::net::TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => return (false, format!("connecting to {addr}: {e}")),
    };
    let Some(path) = path else {
        return (true, format!("connected to {addr}"));
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: berth-health/1\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return (false, format!("sending the request: {e}"));
    }
    let mut head = [0u8; 256];
    let n = match stream.read(&mut head) {
        Ok(n) => n,
        Err(e) => return (false, format!("reading the response: {e}")),
    };
    let text = String::from_utf8_lossy(&head[..n]);
    let status_line = text.lines().next().unwrap_or_default().to_string();
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    ((200..400).contains(&code), status_line)
}

/// The owner's side: state, event, and the liveness kill.
pub fn record(node: &mut Node, id: &str, ok: bool, output: String) {
    let Some(c) = node.containers.get_mut(id) else {
        return;
    };
    // A check that raced the container's end says nothing about its health.
    if c.known_exit().is_some() || c.removing.is_some() {
        return;
    }
    let Some(check) = c.record().task.health.clone() else {
        return;
    };
    let in_start_period = c
        .record()
        .started
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|t| {
            let elapsed = chrono::Utc::now().signed_duration_since(t);
            elapsed.num_milliseconds() < check.start_period_ms as i64
        });
    let state = c.health.get_or_insert_with(Default::default);
    let Some(status) = state.record(ok, in_start_period, check.retries, output.clone()) else {
        return;
    };
    let name = c.record().name.clone();
    let pod = c.record().task.pod.as_ref().map(|m| m.pod_name.clone());
    tracing::info!(id, %status, %output, "health changed");
    let mut ev = Event::new("container", "health_status", id, &name)
        .with("health", status)
        .with("output", output.trim());
    if let Some(p) = &pod {
        ev = ev.with("pod", p);
    }
    node.emit(ev);
    if status == HealthStatus::Unhealthy && pod.is_some() {
        // A failing liveness probe: the kubelet kills the container and lets the restart
        // policy decide.
        let mut ev = Event::new("container", "killed", id, &name).with("reason", "liveness");
        if let Some(p) = &pod {
            ev = ev.with("pod", p);
        }
        node.emit(ev);
        let (reply, answer) = tokio::sync::oneshot::channel();
        super::kill::request(node, id, nix::sys::signal::Signal::SIGKILL, true, reply);
        let id = id.to_string();
        tokio::spawn(async move {
            if let Ok(Err(e)) = answer.await {
                tracing::warn!(id, error = %e.message, "killing an unhealthy container");
            }
        });
    }
}
