//! Start: tell a created container's supervisor to start it, and connect to supervisors.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use berth_runtime::state::Status;
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

/// `POST /v1/containers/{id}/start`: a created container is started, a stopped one run
/// again (as `docker start`: same id, name, writable layer). `then` gets the init's pid.
pub fn start(
    node: &mut Node,
    key: &str,
    then: impl FnOnce(&mut Node, Result<i32, ApiError>) + Send + 'static,
) {
    let checked = node.resolve_id(key).and_then(|id| {
        let c = node
            .containers
            .get(&id)
            .ok_or_else(|| ApiError::no_such_container(key))?;
        refuse_while_busy(c, key)?;
        Ok((id, c.status()))
    });
    match checked {
        Ok((id, Status::Created)) => start_created(node, &id, then),
        Ok((_, Status::Running)) => then(
            node,
            Err(ApiError::conflict(format!(
                "container {key} is already running"
            ))),
        ),
        Ok((id, Status::Stopped)) => super::relaunch::relaunch(node, &id, false, then),
        Err(e) => then(node, Err(e)),
    }
}

/// Work on the container is in flight: refused with what.
pub fn refuse_while_busy(c: &super::node::Container, key: &str) -> Result<(), ApiError> {
    if c.removing.is_some() {
        return Err(ApiError::conflict(format!(
            "container {key} is being removed"
        )));
    }
    if let Some(what) = c.busy {
        return Err(ApiError::conflict(format!("container {key} is {what}")));
    }
    Ok(())
}

/// Starts a container in the created state (its init waits for START): START is sent off
/// the owner; the start is recorded once the supervisor confirms.
pub fn start_created(
    node: &mut Node,
    id: &str,
    then: impl FnOnce(&mut Node, Result<i32, ApiError>) + Send + 'static,
) {
    let Some(c) = node.containers.get_mut(id) else {
        then(node, Err(ApiError::no_such_container(id)));
        return;
    };
    c.busy = Some("being started");
    let socket = c.dir.socket();
    let id = id.to_string();
    node.spawn(
        "starting a container",
        async move {
            let mut stream = connect(&socket).await?;
            send_start(&mut stream).await
        },
        move |node, result| {
            if let Some(c) = node.containers.get_mut(&id) {
                c.busy = None;
            }
            // Answered once the start is on disk.
            match result.and_then(|r| super::lifecycle::started(node, &id).map(|w| (r, w))) {
                Ok((pid, written)) => node.spawn(
                    "recording a start",
                    async move { written.result().await.map(|()| pid) },
                    then,
                ),
                Err(e) => then(node, Err(e)),
            }
        },
    );
}

/// `POST /v1/containers/{id}/attach`: a connection to the supervisor; with `start`, START
/// is sent on it and the start recorded (and journaled) before the client hears back, so a
/// client that sees the container end never finds it without its start.
pub fn attach(node: &mut Node, key: &str, start: bool, reply: super::node::Reply<UnixStream>) {
    let checked = node.resolve(key).and_then(|c| {
        if c.known_exit().is_some() {
            return Err(ApiError::conflict(format!(
                "container {} has exited",
                c.record().id
            )));
        }
        if start {
            refuse_while_busy(c, key)?;
        }
        Ok((c.record().id.clone(), c.dir.socket()))
    });
    let (id, socket) = match checked {
        Ok(x) => x,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    node.spawn(
        "attaching to a container",
        async move {
            let mut stream = connect(&socket).await?;
            if start {
                stream
                    .write_all(&protocol::encode(protocol::START, b""))
                    .await
                    .map_err(ApiError::internal)?;
            }
            Ok(stream)
        },
        move |node, result: Result<UnixStream, ApiError>| {
            match result {
                Ok(stream) if start => match super::lifecycle::started(node, &id) {
                    // The client hears back once the start is on disk.
                    Ok(written) => {
                        tokio::spawn(async move {
                            let _ = reply.send(written.result().await.map(|()| stream));
                        });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                other => {
                    let _ = reply.send(other);
                }
            }
        },
    );
}
