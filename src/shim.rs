//! `berth shim`: entry of the per-container supervisor (see `berth_runtime::supervisor`).
//! Runs on the main thread only; its stdout is the start-up report pipe to the agent.
//!
//! Arguments are parsed by hand, not by clap: building clap's command tree for every
//! container would touch and keep memory in each of dozens of long-lived supervisors. The
//! grammar is private between the agent and this file:
//!
//! ```text
//! berth shim init --id ID --dir DIR --cgroup PATH --log-max-bytes N --log-max-files N [--tty] [--stdin] [--network-none]
//! berth shim exec --id ID --dir DIR --exec-id EID --process FILE [--tty] [--stdin]
//! berth shim run  --id ID --bundle DIR --state DIR      (runc-run style, for benchmarks)
//! berth shim sandbox --dir DIR --hostname NAME [--share-pid] [--host-network]   (a pod's namespaces)
//! berth shim sandbox --dir DIR --net-only     (the network namespace of a container on a CNI network)
//! ```

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::PathBuf;
use std::process::ExitCode;

use berth_runtime::logs::Rotation;
use berth_runtime::supervisor::{run_bundle, run_exec, run_init, ExecOptions, InitOptions};

/// Takes stdout as the report pipe and points fd 1 at /dev/null, so nothing else written
/// to stdout can corrupt the report or block on a pipe nobody reads.
fn report_pipe() -> std::fs::File {
    let dup = nix::unistd::dup(1).unwrap_or(-1);
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let fd = null.into_raw_fd();
        let _ = nix::unistd::dup2(fd, 1);
        let _ = nix::unistd::close(fd);
    }
    // SAFETY: `dup` is a descriptor we just created and own exclusively.
    unsafe { std::fs::File::from_raw_fd(dup) }
}

const FLAGS: &[&str] = &[
    "--tty",
    "--stdin",
    "--network-none",
    "--share-pid",
    "--host-network",
    "--net-only",
];

struct Parsed {
    values: HashMap<String, OsString>,
    flags: Vec<String>,
}

impl Parsed {
    fn new(args: &[OsString]) -> Result<Self, String> {
        let mut values = HashMap::new();
        let mut flags = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let key = a.to_string_lossy().into_owned();
            if FLAGS.contains(&key.as_str()) {
                flags.push(key);
            } else if key.starts_with("--") {
                let v = it.next().ok_or(format!("{key} needs a value"))?;
                values.insert(key, v.clone());
            } else {
                return Err(format!("unexpected argument {key:?}"));
            }
        }
        Ok(Parsed { values, flags })
    }
    fn os(&self, key: &str) -> Result<OsString, String> {
        self.values
            .get(key)
            .cloned()
            .ok_or(format!("{key} is required"))
    }
    fn text(&self, key: &str) -> Result<String, String> {
        Ok(self.os(key)?.to_string_lossy().into_owned())
    }
    fn path(&self, key: &str) -> Result<PathBuf, String> {
        self.os(key).map(PathBuf::from)
    }
    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<T, String> {
        self.text(key)?
            .parse()
            .map_err(|_| format!("{key} wants a number"))
    }
    fn flag(&self, key: &str) -> bool {
        self.flags.iter().any(|f| f == key)
    }
}

fn dispatch(args: &[OsString]) -> Result<i32, String> {
    let (mode, rest) = args.split_first().ok_or("berth shim: init, exec or run")?;
    let p = Parsed::new(rest)?;
    match mode.to_string_lossy().as_ref() {
        "init" => Ok(run_init(
            InitOptions {
                id: p.text("--id")?,
                dir: p.path("--dir")?,
                tty: p.flag("--tty"),
                stdin: p.flag("--stdin"),
                network_none: p.flag("--network-none"),
                cgroup_path: p.path("--cgroup")?,
                rotation: Rotation {
                    max_bytes: p.num("--log-max-bytes")?,
                    max_files: p.num("--log-max-files")?,
                },
            },
            report_pipe(),
        )),
        "exec" => Ok(run_exec(
            ExecOptions {
                id: p.text("--id")?,
                dir: p.path("--dir")?,
                exec_id: p.text("--exec-id")?,
                process: p.path("--process")?,
                tty: p.flag("--tty"),
                stdin: p.flag("--stdin"),
            },
            report_pipe(),
        )),
        "run" => Ok(run_bundle(
            &p.text("--id")?,
            &p.path("--bundle")?,
            &p.path("--state")?,
        )),
        "sandbox" => {
            use std::io::Write;
            let mut out = report_pipe();
            let net_only = p.flag("--net-only");
            let namespaces = berth_runtime::sandbox::Namespaces {
                net: !p.flag("--host-network"),
                ipc_uts: !net_only,
                pid: p.flag("--share-pid"),
            };
            let hostname = if net_only {
                None
            } else {
                Some(p.text("--hostname")?)
            };
            let ready = match berth_runtime::sandbox::create(
                &p.path("--dir")?,
                hostname.as_deref(),
                namespaces,
            ) {
                Ok(pid) => berth_runtime::supervisor::Ready {
                    pid: pid.unwrap_or(0),
                    error: None,
                    exit_code: None,
                },
                Err(e) => berth_runtime::supervisor::Ready {
                    pid: 0,
                    error: Some(e.to_string()),
                    exit_code: Some(125),
                },
            };
            let line = serde_json::to_string(&ready).map_err(|e| e.to_string())?;
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
            Ok(if ready.error.is_some() { 125 } else { 0 })
        }
        other => Err(format!("unknown supervisor mode {other:?}")),
    }
}

pub fn run(args: &[OsString]) -> ExitCode {
    match dispatch(args) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            eprintln!("berth shim: {e}");
            ExitCode::from(125)
        }
    }
}
