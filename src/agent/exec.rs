//! Exec: a process in a running container, through its own supervisor (`berth shim exec`).
//! The process starts when a client attaches (`.../exec/{exec_id}/attach`).

use std::path::PathBuf;
use std::process::Stdio;

use berth_runtime::state::Status;
use berth_runtime::supervisor::confine::{exec_process, ExecOverrides};
use oci_spec::runtime::Spec;

use super::error::ApiError;
use super::node::{Node, Reply};
use super::Settings;
use crate::api::ExecRequest;

/// `POST /v1/containers/{id}/exec`: checked on the owner; the rest (reading the container's
/// spec and files, the supervisor's start-up) off it, answering `reply` from there.
pub fn exec(node: &mut Node, key: &str, req: ExecRequest, reply: Reply<String>) {
    let checked = node.resolve(key).and_then(|c| {
        if c.status() != Status::Running {
            return Err(
                ApiError::conflict(format!("container {key} is not running")).with_exit_code(126),
            );
        }
        // Its end is under way: an exec now would only race the removal of its cgroup
        // (Docker answers the same way).
        let pod_going = c.record().task.pod.as_ref().is_some_and(|m| {
            node.pods
                .get(&m.pod_id)
                .is_some_and(|p| p.busy == Some(super::pod::teardown::BUSY))
        });
        if c.removing.is_some() || pod_going {
            return Err(ApiError::conflict(format!(
                "container {key} is marked for removal and cannot be exec'd into"
            ))
            .with_exit_code(126));
        }
        Ok(Target {
            id: c.record().id.clone(),
            dir: c.dir.clone(),
            pid: c.record().init.map(|p| p.pid).unwrap_or(0),
        })
    });
    let target = match checked {
        Ok(t) => t,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    let settings = node.settings.clone();
    tokio::spawn(async move {
        let _ = reply.send(prepare_and_start(&settings, &target, req).await);
    });
}

/// The container an exec enters.
#[derive(Debug)]
struct Target {
    id: String,
    dir: berth_runtime::state::ContainerDir,
    pid: i32,
}

async fn prepare_and_start(
    settings: &Settings,
    c: &Target,
    req: ExecRequest,
) -> Result<String, ApiError> {
    let Some(command) = req.command.first() else {
        return Err(ApiError::bad_request("no command given").with_exit_code(125));
    };
    let root = PathBuf::from(format!("/proc/{}/root", c.pid));
    let spec_bytes = std::fs::read(c.dir.path().join("config.json")).map_err(ApiError::internal)?;
    let spec: Spec = serde_json::from_slice(&spec_bytes).map_err(ApiError::internal)?;
    let base_env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    let mut overrides = ExecOverrides {
        args: req.command.clone(),
        env: req.env.clone(),
        tty: req.tty,
        cwd: req.workdir.as_ref().map(PathBuf::from),
        user: None,
    };
    // The container's files are the container's to change (a FIFO for /etc/passwd, ...):
    // read through the image-file helper, in the blocking pool, with a deadline.
    let lookup = {
        let (root, command, user) = (root.clone(), command.clone(), req.user.clone());
        let env = exec_process(&spec, &overrides)
            .env()
            .clone()
            .unwrap_or(base_env);
        tokio::task::spawn_blocking(move || {
            let found = berth_runtime::spec::find_executable(&root, &command, &env);
            let user = user
                .map(|u| berth_runtime::spec::resolve_user(&root, &u))
                .transpose();
            (found, user)
        })
    };
    let (found, user) = tokio::time::timeout(berth_runtime::image_file::READ_TIMEOUT, lookup)
        .await
        .map_err(|_| {
            ApiError::internal("exec: reading the container's files timed out").with_exit_code(126)
        })?
        .map_err(ApiError::internal)?;
    if !found {
        return Err(ApiError::start_failed(
            format!("exec: {command:?}: executable file not found in $PATH"),
            127,
        ));
    }
    if let Some(u) = user.map_err(|e| ApiError::bad_request(e.to_string()).with_exit_code(126))? {
        overrides.user = Some((u.uid, u.gid, u.additional_gids));
    }
    let process = exec_process(&spec, &overrides);
    let exec_id = super::create::new_id()?[..16].to_string();
    let process_path = c.dir.execs().join(format!("{exec_id}.process.json"));
    let bytes = serde_json::to_vec(&process).map_err(ApiError::internal)?;
    berth_fsutil::atomic::write_atomic(&process_path, &bytes, 0o600).map_err(ApiError::internal)?;
    let log = std::fs::File::create(c.dir.execs().join(format!("{exec_id}.log")))
        .map_err(ApiError::internal)?;

    let s = settings;
    let mut cmd = tokio::process::Command::new(&s.monitor);
    cmd.arg("exec")
        .arg("--berth")
        .arg(&s.exe)
        .arg("--id")
        .arg(&c.id)
        .arg("--dir")
        .arg(c.dir.path())
        .arg("--exec-id")
        .arg(&exec_id)
        .arg("--process")
        .arg(&process_path);
    if req.tty {
        cmd.arg("--tty");
    }
    if req.stdin {
        cmd.arg("--stdin");
    }
    cmd.env("BERTH_LOG", &s.log_level)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(false);
    let (mut child, ready) = super::create::start_and_read_ready(cmd, None).await?;
    if let Some(error) = ready.error {
        let _ = child.wait().await;
        return Err(ApiError::start_failed(
            error,
            ready.exit_code.unwrap_or(126),
        ));
    }
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(exec_id)
}
