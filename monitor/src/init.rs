//! `berth-monitor init`: creates the container through the helper, reports to the agent,
//! starts it on the first attached START, relays its I/O, reaps it, cleans up and records
//! the exit in `exit.json`.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use berth_api::attach as protocol;

use crate::event_loop::{exec_failure, exit_record, EventLoop, Managed};
use crate::exit::ExitRecord;
use crate::helper::{Helper, EXEC_FAILURE_READ_FD, EXEC_FAILURE_WRITE_FD};
use crate::logs::{LogWriter, Rotation};
use crate::report::{self, Ready};
use crate::setup::{self, ContainerStdio};
use crate::{io_err, MonitorError};

/// Options of `berth-monitor init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The `berth` binary that runs the create helper.
    pub berth: PathBuf,
    /// Container id.
    pub id: String,
    /// The container's state dir (also the bundle).
    pub dir: PathBuf,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open for attached clients.
    pub stdin: bool,
    /// New network namespace: bring `lo` up.
    pub network_none: bool,
    /// The container's cgroup (OOM count, final kill).
    pub cgroup_path: PathBuf,
    /// Log rotation.
    pub rotation: Rotation,
}

/// libcontainer's state dir of the container (`lc/<id>`), removed at its end as
/// libcontainer's own delete would (Berth sets no hooks).
fn libcontainer_state(dir: &Path, id: &str) -> PathBuf {
    dir.join("lc").join(id)
}

/// Everything a created container leaves: its processes, the helper, libcontainer's state,
/// the cgroup.
fn clean_up(opts: &InitOptions, helper: Option<Helper>) {
    crate::cgroup::kill_all(&opts.cgroup_path);
    if let Some(h) = helper {
        h.finish();
    }
    let _ = std::fs::remove_dir_all(libcontainer_state(&opts.dir, &opts.id));
    let left = crate::cgroup::remove(&opts.cgroup_path);
    if !left.is_empty() {
        crate::log(format_args!("cgroup directories left: {left:?}"));
    }
}

/// Runs the monitor; returns its exit code.
pub fn run(opts: InitOptions, ready_out: std::fs::File) -> i32 {
    let mut ready_out = Some(ready_out);
    let exit_path = opts.dir.join("exit.json");
    setup::detach();
    setup::stall_if_asked(&opts.dir.join("container.json"));
    let fail = |ready_out: &mut Option<std::fs::File>, e: MonitorError| {
        let code = e.exit_code();
        crate::log(format_args!("container failed: {e}"));
        let failed = ExitRecord::failed(code, "start-failed", e.to_string());
        if let Err(e) = crate::exit::write(&exit_path, &failed) {
            // The agent also hears the failure on the ready pipe below.
            crate::log(format_args!("recording a failed start: {e}"));
        }
        report::send(ready_out, &Ready::failed(e.to_string(), code));
        1
    };
    let prepared = (|| {
        std::env::set_current_dir(&opts.dir).map_err(io_err("entering the container dir"))?;
        let listener = setup::bind(Path::new("shim.sock"))?;
        let (stdio, ours) = setup::stdio(opts.tty, opts.stdin, "console.sock")?;
        let log = LogWriter::open(&opts.dir.join("logs"), opts.rotation)
            .map_err(io_err("opening the log"))?;
        let (fail_r, fail_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| io_err("making the exec-failure pipe")(e.into()))?;
        Ok::<_, MonitorError>((listener, stdio, ours, log, fail_r, fail_w))
    })();
    let (listener, stdio, (outputs, stdin_w), log, fail_r, fail_w) = match prepared {
        Ok(p) => p,
        Err(e) => return fail(&mut ready_out, e),
    };
    let (mut helper, pid, console) = match create(&opts, stdio, &fail_r, fail_w) {
        Ok(created) => created,
        Err((helper, e)) => {
            clean_up(&opts, helper);
            return fail(&mut ready_out, e);
        }
    };
    let (outputs, stdin_w, tty_master) = match console {
        Some(console) => match setup::receive_pty(&console) {
            Ok(master) => {
                let _ = std::fs::remove_file("console.sock");
                let writer = master.try_clone().ok();
                let tty = master.try_clone().ok();
                (vec![(master, protocol::STDOUT)], writer, tty)
            }
            Err(e) => {
                clean_up(&opts, Some(helper));
                return fail(&mut ready_out, e);
            }
        },
        None => (outputs, stdin_w, None),
    };
    report::send(&mut ready_out, &Ready::pid(pid));
    let mut lp = match EventLoop::new(listener, outputs, stdin_w, tty_master, Some(log)) {
        Ok(l) => l,
        Err(e) => {
            crate::log(format_args!("monitor set-up failed: {e}"));
            clean_up(&opts, Some(helper));
            return 1;
        }
    };
    crate::memory::release_setup_memory();
    let mut start = || helper.start();
    let status = exec_failure(
        lp.run(Managed::Init {
            start: &mut start,
            pid,
        }),
        &fail_r,
    );
    let oom = crate::cgroup::oom_kills(&opts.cgroup_path) > 0;
    clean_up(&opts, Some(helper));
    let record = exit_record(status, oom);
    if let Err(e) = crate::exit::write(&exit_path, &record) {
        crate::log(format_args!("recording the exit failed: {e}"));
    }
    lp.finish(&record);
    0
}

type Created = (Helper, i32, Option<std::os::unix::net::UnixListener>);

/// Has the helper create the container: the helper, the init's pid, the console listener.
fn create(
    opts: &InitOptions,
    stdio: ContainerStdio,
    fail_r: &OwnedFd,
    fail_w: OwnedFd,
) -> Result<Created, (Option<Helper>, MonitorError)> {
    let mut args: Vec<OsString> = vec![
        "create".into(),
        "--id".into(),
        opts.id.clone().into(),
        "--bundle".into(),
        opts.dir.clone().into(),
        "--lc-root".into(),
        opts.dir.join("lc").into(),
    ];
    if opts.network_none {
        args.push("--network-none".into());
    }
    let read_copy = fail_r.try_clone().map_err(|e| (None, io_err("dup")(e)))?;
    let mut fds = vec![
        (fail_w, EXEC_FAILURE_WRITE_FD),
        (read_copy, EXEC_FAILURE_READ_FD),
    ];
    let console = stdio.for_helper(&mut args, &mut fds);
    let mut helper = Helper::spawn(&opts.berth, args, fds, true).map_err(|e| (None, e))?;
    match helper.read() {
        Ok(pid) => Ok((helper, pid, console)),
        Err(e) => Err((Some(helper), e)),
    }
}
