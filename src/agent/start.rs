//! Start: tell a created container's supervisor to start it, and connect to supervisors.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use berth_runtime::state::{write_json, Status};
use berth_runtime::supervisor::protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::error::ApiError;
use super::node::Node;

/// Connects to a supervisor socket. State dirs can be deeper than a socket address allows
/// (108 bytes), so the directory is opened and the socket reached through `/proc/self/fd`.
pub async fn connect(socket: &Path) -> Result<UnixStream, ApiError> {
    let dir = socket
        .parent()
        .ok_or_else(|| ApiError::internal("socket without a directory"))?;
    let name = socket
        .file_name()
        .ok_or_else(|| ApiError::internal("socket without a name"))?;
    let dir_fd = std::fs::File::open(dir)
        .map_err(|e| ApiError::internal(format!("opening {}: {e}", dir.display())))?;
    let short = format!(
        "/proc/self/fd/{}/{}",
        dir_fd.as_raw_fd(),
        name.to_string_lossy()
    );
    let stream = UnixStream::connect(&short).await.map_err(|e| {
        ApiError::conflict(format!(
            "the container's supervisor is not reachable ({e}); it may have exited"
        ))
    })?;
    drop(dir_fd);
    Ok(stream)
}

/// Reads one frame of the supervisor protocol: its type and payload.
pub async fn read_frame(stream: &mut UnixStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > protocol::MAX_PAYLOAD {
        return Err(std::io::Error::other("oversized frame"));
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    Ok((head[0], payload))
}

/// Reads frames until STARTED, ERROR or EXIT.
pub async fn send_start(stream: &mut UnixStream) -> Result<i32, ApiError> {
    stream
        .write_all(&protocol::encode(protocol::START, b""))
        .await
        .map_err(ApiError::internal)?;
    let read = async {
        loop {
            let (kind, payload) = read_frame(stream).await?;
            match kind {
                protocol::STARTED => {
                    let v: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                    return Ok::<_, std::io::Error>(Ok(v["pid"].as_i64().unwrap_or(0) as i32));
                }
                protocol::ERROR => {
                    return Ok(Err(String::from_utf8_lossy(&payload).into_owned()));
                }
                protocol::EXIT => return Ok(Err("the process exited before starting".into())),
                _ => {}
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(60), read).await {
        Ok(Ok(Ok(pid))) => Ok(pid),
        Ok(Ok(Err(msg))) => Err(ApiError::bad_request(msg).with_exit_code(125)),
        Ok(Err(e)) => Err(ApiError::internal(format!(
            "talking to the supervisor: {e}"
        ))),
        Err(_) => Err(ApiError::internal("the supervisor did not answer START")),
    }
}

pub async fn start(node: &mut Node, key: &str) -> Result<i32, ApiError> {
    let id = node.resolve_id(key)?;
    let Some(c) = node.containers.get(&id) else {
        return Err(ApiError::no_such_container(&key));
    };
    match c.status() {
        Status::Created => {}
        Status::Running => {
            return Err(ApiError::conflict(format!(
                "container {key} is already running"
            )))
        }
        // As `docker start`: the same container again (same id, name, writable layer).
        Status::Stopped => return super::relaunch::relaunch(node, &id, false).await,
    }
    start_created(node, &id).await
}

/// Starts a container in the created state (its init waits for START).
pub async fn start_created(node: &mut Node, id: &str) -> Result<i32, ApiError> {
    let Some(c) = node.containers.get(id) else {
        return Err(ApiError::no_such_container(&id));
    };
    let mut stream = connect(&c.dir.socket()).await?;
    let pid = send_start(&mut stream).await?;
    mark_started(node, id);
    Ok(pid)
}

/// Records the start time (once).
pub fn mark_started(node: &mut Node, id: &str) {
    if let Some(c) = node.containers.get_mut(id) {
        if c.record.started.is_none() {
            c.record.started = Some(berth_runtime::state::now());
            if let Err(e) = write_json(&c.dir.record(), &c.record) {
                tracing::error!(error = %e, "recording the start");
            }
            let mut ev =
                crate::agent::events::Event::new("container", "started", id, &c.record.name);
            if let Some(m) = &c.record.task.pod {
                ev = ev.with("pod", &m.pod_name);
            }
            node.emit(ev);
            node.watch_health(id);
        }
    }
}
