//! `berth-monitor exec`: waits for an attached START, has the helper run the process in
//! the container, relays its I/O, records its exit in `exec/<id>.json`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::event_loop::{exec_failure, exit_record, EventLoop, Managed};
use crate::helper::{Helper, EXEC_FAILURE_READ_FD, EXEC_FAILURE_WRITE_FD};
use crate::report::{self, Ready};
use crate::setup;
use crate::{io_err, MonitorError};

/// Options of `berth-monitor exec`.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The `berth` binary that runs the helper.
    pub berth: PathBuf,
    /// Container id.
    pub id: String,
    /// The container's state dir.
    pub dir: PathBuf,
    /// Exec id (names `exec/<id>.json` and `exec/<id>.sock`).
    pub exec_id: String,
    /// The OCI process description.
    pub process: PathBuf,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub stdin: bool,
}

/// Runs the monitor; returns its exit code.
pub fn run(opts: ExecOptions, ready_out: std::fs::File) -> i32 {
    let mut ready_out = Some(ready_out);
    setup::detach();
    let execs = opts.dir.join("exec");
    let record_path = execs.join(format!("{}.json", opts.exec_id));
    let socket = execs.join(format!("{}.sock", opts.exec_id));
    let console = format!("{}.console", opts.exec_id);
    let prepared = (|| {
        std::env::set_current_dir(&execs).map_err(io_err("entering the exec dir"))?;
        let listener = setup::bind(Path::new(&format!("{}.sock", opts.exec_id)))?;
        let (stdio, ours) = setup::stdio(opts.tty, opts.stdin, &console)?;
        let (fail_r, fail_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| io_err("making the exec-failure pipe")(e.into()))?;
        Ok::<_, MonitorError>((listener, stdio, ours, fail_r, fail_w))
    })();
    let (listener, stdio, (outputs, stdin_w), fail_r, fail_w) = match prepared {
        Ok(p) => p,
        Err(e) => {
            report::send(&mut ready_out, &Ready::failed(e.to_string(), 125));
            return 1;
        }
    };
    report::send(&mut ready_out, &Ready::pid(0));
    let mut lp = match EventLoop::new(listener, outputs, stdin_w, None, None) {
        Ok(l) => l,
        Err(e) => {
            crate::log(format_args!("monitor set-up failed: {e}"));
            return 1;
        }
    };
    let mut parts = Some((stdio, fail_w));
    let mut launch = |lp: &mut EventLoop| -> Result<i32, MonitorError> {
        let Some((stdio, fail_w)) = parts.take() else {
            return Err(MonitorError::Failed {
                code: 125,
                message: "the exec process was started already".into(),
            });
        };
        let mut args: Vec<OsString> = vec![
            "exec-create".into(),
            "--id".into(),
            opts.id.clone().into(),
            "--dir".into(),
            opts.dir.clone().into(),
            "--process".into(),
            opts.process.clone().into(),
        ];
        let mut fds = vec![
            (fail_w, EXEC_FAILURE_WRITE_FD),
            (
                fail_r.try_clone().map_err(io_err("dup"))?,
                EXEC_FAILURE_READ_FD,
            ),
        ];
        let console_listener = stdio.for_helper(&mut args, &mut fds);
        let mut helper = Helper::spawn(&opts.berth, args, fds, false)?;
        let launched = helper.read();
        helper.finish();
        let pid = launched?;
        if let Some(listener) = console_listener {
            let master = setup::receive_pty(&listener)?;
            let _ = std::fs::remove_file(&console);
            lp.attach_tty(master);
        }
        Ok(pid)
    };
    let status = exec_failure(
        lp.run(Managed::Exec {
            launch: &mut launch,
        }),
        &fail_r,
    );
    let record = exit_record(status, false);
    if let Err(e) = crate::exit::write(&record_path, &record) {
        // Attached clients still get the exit frame below.
        crate::log(format_args!("recording an exec's exit: {e}"));
    }
    lp.finish(&record);
    let _ = std::fs::remove_file(socket);
    0
}
