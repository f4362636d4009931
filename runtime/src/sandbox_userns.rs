//! A sandbox whose namespaces belong to a user namespace of the task's own (a pod with
//! `hostUsers: false`, a lone container with `--userns auto` on a CNI network). Only the
//! owner of a network namespace may mount sysfs in it or bind ports below 1024 there, so
//! the namespaces are made by a worker inside the new user namespace, while this process
//! (root in the host's namespaces) writes its id maps and bind-mounts the namespace files.
//!
//! The worker: unshare(USER), wait for its maps, become root of it, unshare the rest, set
//! the host name, bring `lo` up, fork the pod init (with a shared PID namespace), report,
//! wait until its namespaces are held, exit.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sched::{unshare, CloneFlags};

use crate::sandbox::{bind_ns, fork_pod_init, io, unshare_shared, Namespaces, SandboxError};
use crate::userns::IdMap;

/// Makes the sandbox (`dir/user` beside the others); returns the pod init's pid.
pub fn create(
    dir: &Path,
    hostname: Option<&str>,
    ns: Namespaces,
    monitor: Option<&Path>,
    map: &IdMap,
) -> Result<Option<i32>, SandboxError> {
    {
        // Only the task's root (and the host's) may pass: libcontainer opens the namespace
        // files as the task's root.
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::chown(dir, Some(0), Some(map.gid)).map_err(|e| io("chown", dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710))
            .map_err(|e| io("chmod", dir, e))?;
    }
    let (report_r, report_w) = nix::unistd::pipe().map_err(|e| io("pipe", dir, e))?;
    let (go_r, go_w) = nix::unistd::pipe().map_err(|e| io("pipe", dir, e))?;
    // SAFETY: the helper is single-threaded, so the child may run ordinary code.
    match unsafe { nix::unistd::fork() }.map_err(|e| io("fork", dir, e))? {
        nix::unistd::ForkResult::Child => {
            drop((report_r, go_w));
            let code = match worker(dir, hostname, ns, monitor, report_w, go_r) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // SAFETY: ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop((report_w, go_r));
            let result = lead(dir, ns, map, child.as_raw(), report_r, go_w);
            let _ = nix::sys::wait::waitpid(child, None);
            result
        }
    }
}

/// The parent's side: maps, go, the worker's report, the bind mounts.
fn lead(
    dir: &Path,
    ns: Namespaces,
    map: &IdMap,
    worker: i32,
    report: OwnedFd,
    go: OwnedFd,
) -> Result<Option<i32>, SandboxError> {
    let mut report = std::fs::File::from(report);
    let mut go = std::fs::File::from(go);
    let mut byte = [0u8; 1];
    report
        .read_exact(&mut byte)
        .map_err(|e| io("waiting for the user namespace of", dir, e))?;
    let proc_dir = PathBuf::from(format!("/proc/{worker}"));
    crate::userns::write_maps(&proc_dir, map).map_err(|e| io("mapping ids of", dir, e_io(e)))?;
    go.write_all(b"g").map_err(|e| io("signalling", dir, e))?;
    // The worker's report: "ok <pod init pid>" or "error <text>".
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while report.read(&mut b).map_err(|e| io("reading", dir, e))? == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    let pod_init = match line.strip_prefix("ok ") {
        Some(pid) => pid.trim().parse::<i32>().unwrap_or(0),
        None => {
            return Err(io(
                "making namespaces in the user namespace of",
                dir,
                std::io::Error::other(line.strip_prefix("error ").unwrap_or(&line).to_string()),
            ))
        }
    };
    bind_ns(&proc_dir.join("ns/user"), &dir.join("user"))?;
    if ns.net {
        bind_ns(&proc_dir.join("ns/net"), &dir.join("net"))?;
    }
    if ns.ipc_uts {
        for name in ["ipc", "uts"] {
            bind_ns(&proc_dir.join("ns").join(name), &dir.join(name))?;
        }
    }
    if pod_init > 0 {
        bind_ns(
            &PathBuf::from(format!("/proc/{pod_init}/ns/pid")),
            &dir.join("pid"),
        )?;
    }
    // Closing `go` lets the worker end: its namespaces are held by the mounts now.
    drop(go);
    Ok((pod_init > 0).then_some(pod_init))
}

fn e_io(e: crate::userns::UsernsError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// The worker's side (in the forked child).
fn worker(
    dir: &Path,
    hostname: Option<&str>,
    ns: Namespaces,
    monitor: Option<&Path>,
    report: OwnedFd,
    go: OwnedFd,
) -> Result<(), SandboxError> {
    let mut report = std::fs::File::from(report);
    let mut go = std::fs::File::from(go);
    let result = (|| {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| io("unshare user", dir, e))?;
        report
            .write_all(b"u")
            .map_err(|e| io("reporting", dir, e))?;
        let mut byte = [0u8; 1];
        go.read_exact(&mut byte)
            .map_err(|e| io("waiting for the id maps of", dir, e))?;
        // Root of the new namespace (host uid `map.uid`): what it makes is its own.
        nix::unistd::setgroups(&[]).map_err(|e| io("setgroups", dir, e))?;
        nix::unistd::setresgid(0.into(), 0.into(), 0.into())
            .map_err(|e| io("setresgid", dir, e))?;
        nix::unistd::setresuid(0.into(), 0.into(), 0.into())
            .map_err(|e| io("setresuid", dir, e))?;
        unshare_shared(dir, hostname, ns)?;
        if !ns.pid {
            return Ok(0);
        }
        unshare(CloneFlags::CLONE_NEWPID).map_err(|e| io("unshare pid", dir, e))?;
        fork_pod_init(dir, monitor)
    })();
    let line = match &result {
        Ok(pid) => format!("ok {pid}\n"),
        Err(e) => format!("error {e}\n"),
    };
    let _ = report.write_all(line.as_bytes());
    // Held until the parent has bound the namespace files (it closes `go`).
    let mut rest = Vec::new();
    let _ = go.read_to_end(&mut rest);
    result.map(|_| ())
}
