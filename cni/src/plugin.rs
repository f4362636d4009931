//! One plugin call as the spec's "execution protocol" defines it: the plugin binary is
//! found by its `type` in the plugin dirs (`CNI_PATH`), parameters come in `CNI_*`
//! environment variables, the network configuration on stdin, and the result (or a CNI
//! error object) on stdout. Written by hand: no maintained Rust crate runs CNI plugins.
//!
//! Every call is bounded by a timeout. The plugin runs in a process group of its own so a
//! hung plugin is killed with whatever it started (iptables, an IPAM plugin) and nothing of
//! it is left behind.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::CniError;

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Attach the container to the network.
    Add,
    /// Verify the attachment.
    Check,
    /// Detach and release (IP leases, rules).
    Del,
    /// Versions the plugin speaks.
    Version,
}

impl Operation {
    /// `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Check => "CHECK",
            Self::Del => "DEL",
            Self::Version => "VERSION",
        }
    }
}

/// What every plugin of one attachment is called with.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The operation.
    pub op: Operation,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS`: the network namespace file.
    pub netns: &'a str,
    /// `CNI_IFNAME`: the interface to make inside.
    pub ifname: &'a str,
    /// `CNI_ARGS`: `K=V;K=V`.
    pub args: &'a str,
    /// `CNI_PATH`: where plugins (and the IPAM plugins they call) are.
    pub plugin_dirs: &'a [PathBuf],
    /// Longest a plugin may run.
    pub timeout: Duration,
}

/// The plugin binary called `plugin` in the first dir holding it.
pub fn find(plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    use std::os::unix::fs::PermissionsExt;
    for dir in dirs {
        let path = dir.join(plugin);
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(path);
            }
        }
    }
    Err(CniError::PluginNotFound {
        plugin: plugin.to_string(),
        dirs: join_dirs(dirs),
    })
}

fn join_dirs(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Spawns `cmd`, retrying for up to a second while the executable is "text file busy"
/// (ETXTBSY): a plugin being installed, or a file another thread of this process has open
/// for writing at the moment a concurrent fork copied its descriptors (the fork's child
/// holds it until its own exec). Either passes within milliseconds.
fn spawn_retrying_busy(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match cmd.spawn() {
            Err(e)
                if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Runs `plugin` for `call` with `config` on stdin. `Ok(None)` when the plugin printed
/// nothing (DEL, CHECK); a CNI error object on stdout becomes [`CniError::Plugin`].
pub fn run(plugin: &str, call: &Call<'_>, config: &[u8]) -> Result<Option<Value>, CniError> {
    let path = find(plugin, call.plugin_dirs)?;
    let command = call.op.as_str();
    let failed = |reason: String| CniError::Failed {
        plugin: plugin.to_string(),
        command,
        reason,
    };
    let mut cmd = Command::new(&path);
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            }),
        )
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_ARGS", call.args)
        .env("CNI_PATH", join_dirs(call.plugin_dirs))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let mut child = spawn_retrying_busy(&mut cmd).map_err(CniError::io("running", &path))?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Pipes are served by threads: a plugin may fill stdout before reading all of stdin.
    if let Some(mut stdin) = child.stdin.take() {
        let input = config.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    // Polled rather than waited on: the plugin is reaped only after it is known to be done,
    // so its process group id is still ours when a timeout kills the group.
    let mut pause = Duration::from_micros(500);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= call.timeout => {
                let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                return Err(CniError::Timeout {
                    plugin: plugin.to_string(),
                    command,
                    seconds: call.timeout.as_secs_f64(),
                });
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(e) => return Err(failed(format!("waiting: {e}"))),
        }
    };
    // A plugin that left a child holding its output gets a second, not forever.
    let out = stdout
        .recv_timeout(Duration::from_secs(1))
        .map_err(|_| failed("its output was not closed after it exited".into()))?;
    let err = stderr
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_default();
    tracing::debug!(plugin, command, elapsed = ?started.elapsed(), %status, "cni plugin");
    let parsed: Option<Value> = if out.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice(&out) {
            Ok(v) => Some(v),
            Err(e) if status.success() => {
                return Err(failed(format!("output is not JSON ({e}): {}", tail(&out))))
            }
            Err(_) => None,
        }
    };
    if status.success() {
        return Ok(parsed);
    }
    if let Some(Value::Object(o)) = &parsed {
        if let Some(msg) = o.get("msg").and_then(Value::as_str) {
            let details = o
                .get("details")
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty())
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            return Err(CniError::Plugin {
                plugin: plugin.to_string(),
                command,
                code: o.get("code").and_then(Value::as_u64).unwrap_or(999) as u32,
                msg: msg.to_string(),
                details,
            });
        }
    }
    let why = if err.is_empty() { &out } else { &err };
    Err(failed(format!("{status}: {}", tail(why))))
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            // A plugin's output is a small JSON document; 1 MiB is plenty.
            let _ = p.by_ref().take(1 << 20).read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let start = text
        .char_indices()
        .rev()
        .nth(1000)
        .map(|(i, _)| i)
        .unwrap_or(0);
    text[start..].to_string()
}

/// The plugin dirs of a `a:b:c` search path.
pub fn split_path(path: &str) -> Vec<PathBuf> {
    path.split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn call(dirs: &[PathBuf], timeout_ms: u64) -> Call<'_> {
        Call {
            op: Operation::Add,
            container_id: "c1",
            netns: "/proc/self/ns/net",
            ifname: "eth0",
            args: "A=1",
            plugin_dirs: dirs,
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn passes_parameters_and_reads_results_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().join("none"), dir.path().to_path_buf()];
        script(
            dir.path(),
            "echoer",
            r#"read -r conf; printf '{"cmd":"%s","id":"%s","if":"%s","args":"%s","conf":%s}' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_IFNAME" "$CNI_ARGS" "$conf""#,
        );
        let out = run("echoer", &call(&dirs, 5000), b"{\"x\":1}\n")
            .unwrap()
            .unwrap();
        assert_eq!(out["cmd"], "ADD");
        assert_eq!(out["id"], "c1");
        assert_eq!(out["if"], "eth0");
        assert_eq!(out["args"], "A=1");
        assert_eq!(out["conf"]["x"], 1);

        script(
            dir.path(),
            "failer",
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"no addresses left","details":"range full"}'; exit 1"#,
        );
        let e = run("failer", &call(&dirs, 5000), b"{}")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "plugin failer ADD: no addresses left: range full (CNI error 11)"
        );
        script(dir.path(), "crasher", "echo oops >&2; exit 3");
        let e = run("crasher", &call(&dirs, 5000), b"{}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exit status: 3") && e.contains("oops"), "{e}");
        script(dir.path(), "garbage", "echo not-json");
        let e = run("garbage", &call(&dirs, 5000), b"{}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not JSON"), "{e}");
        let e = run("missing", &call(&dirs, 5000), b"{}")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("plugin \"missing\" not found in "), "{e}");
    }

    #[test]
    fn a_hung_plugin_and_its_children_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        let pidfile = dir.path().join("child.pid");
        script(
            dir.path(),
            "hang",
            &format!("sleep 30 & echo $! > {}; wait", pidfile.display()),
        );
        let began = Instant::now();
        let e = run("hang", &call(&dirs, 300), b"{}").unwrap_err();
        assert!(matches!(e, CniError::Timeout { .. }), "{e}");
        assert!(began.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild went with the group (a zombie until init reaps it, at most).
        let gone = (0..200).any(|_| {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            std::thread::sleep(Duration::from_millis(10));
            state.is_empty() || state.contains(") Z")
        });
        assert!(gone, "the plugin's child {pid} outlived the timeout");
    }
}
