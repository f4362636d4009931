//! `berth shim`: the short-lived helpers the agent and the monitors start — the
//! libcontainer create of a container or exec process (`berth_runtime::supervisor`), a
//! pod's sandbox, and a runc-run-style runner for benchmarks. Runs on the main thread only.
//! The resident per-container process is the separate `berth-monitor` binary.
//!
//! Arguments are parsed by hand (`berth_monitor::args`); the grammar is private between the
//! agent, the monitor and this file:
//!
//! ```text
//! berth shim create --id ID --bundle DIR --lc-root DIR [--console SOCK] [--stdin] [--network-none]   (fds: berth_monitor::helper)
//! berth shim exec-create --id ID --dir DIR --process FILE [--console SOCK] [--stdin]
//! berth shim run  --id ID --bundle DIR --state DIR      (runc-run style, for benchmarks)
//! berth shim sandbox --dir DIR --hostname NAME [--share-pid] [--host-network] [--monitor EXE] [--userns UID:GID:SIZE]   (a pod's namespaces)
//! berth shim sandbox --dir DIR --net-only [--userns UID:GID:SIZE]    (the network namespace of a container on a CNI network)
//! ```

use std::ffi::OsString;
use std::process::ExitCode;

use berth_monitor::args::Parsed;
use berth_monitor::report::{take_stdout, Ready};
use berth_runtime::supervisor::helper::{
    run_create, run_exec_create, CreateOptions, ExecCreateOptions,
};
use berth_runtime::supervisor::run_bundle;

fn dispatch(args: &[OsString]) -> Result<i32, String> {
    let (mode, rest) = args
        .split_first()
        .ok_or("berth shim: create, exec-create, run or sandbox")?;
    let p = Parsed::new(rest)?;
    match mode.to_string_lossy().as_ref() {
        "create" => Ok(run_create(CreateOptions {
            id: p.text("--id")?,
            bundle: p.path("--bundle")?,
            lc_root: p.path("--lc-root")?,
            console: p.path("--console").ok(),
            stdin: p.flag("--stdin"),
            network_none: p.flag("--network-none"),
        })),
        "exec-create" => Ok(run_exec_create(ExecCreateOptions {
            id: p.text("--id")?,
            dir: p.path("--dir")?,
            process: p.path("--process")?,
            console: p.path("--console").ok(),
            stdin: p.flag("--stdin"),
        })),
        "run" => Ok(run_bundle(
            &p.text("--id")?,
            &p.path("--bundle")?,
            &p.path("--state")?,
        )),
        "sandbox" => {
            use std::io::Write;
            let mut out = take_stdout();
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
            // `--userns UID:GID:SIZE`: the namespaces belong to a new user namespace.
            let idmap = match p.text("--userns").ok() {
                None => None,
                Some(t) => Some(parse_idmap(&t).ok_or(format!("bad --userns {t:?}"))?),
            };
            let ready = match berth_runtime::sandbox::create(
                &p.path("--dir")?,
                hostname.as_deref(),
                namespaces,
                p.path("--monitor").ok().as_deref(),
                idmap.as_ref(),
            ) {
                Ok(pid) => Ready::pid(pid.unwrap_or(0)),
                Err(e) => Ready::failed(e.to_string(), 125),
            };
            let line = serde_json::to_string(&ready).map_err(|e| e.to_string())?;
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
            Ok(if ready.error.is_some() { 125 } else { 0 })
        }
        other => Err(format!("unknown shim mode {other:?}")),
    }
}

/// `UID:GID:SIZE`, as the agent passes a task's id range.
fn parse_idmap(text: &str) -> Option<berth_runtime::userns::IdMap> {
    let mut parts = text.split(':').map(|p| p.parse::<u32>().ok());
    let (uid, gid, size) = (parts.next()??, parts.next()??, parts.next()??);
    Some(berth_runtime::userns::IdMap { uid, gid, size })
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
