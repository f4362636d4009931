//! Container lifecycles through a private agent: exec, logs, detach and inspect from other
//! processes, kill/stop/rm, a killed supervisor or init, an agent restart, terminals. Every
//! test's `Root` checks at drop that no mount or cgroup of it is left.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::time::{Duration, Instant};

use common::{
    containers_dir_entries, import, run_code as run, run_detached, state, wait_for, Root,
};

#[test]
fn exec_joins_the_running_container() {
    let root = Root::new();
    import(&root);
    let id = run_detached(
        &root,
        &[
            "--name",
            "svc",
            "--hostname",
            "svc1",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    assert_eq!(root.ok(&["exec", "svc", "hostname"]), "svc1\n");
    let (code, out, _) = run(
        &root,
        &[
            "exec",
            "-e",
            "X=1",
            "-w",
            "/tmp",
            "svc",
            "sh",
            "-c",
            "echo $X; pwd; exit 5",
        ],
    );
    assert_eq!((code, out.as_str()), (5, "1\n/tmp\n"));
    let (code, _, err) = run(&root, &["exec", "svc", "nosuch"]);
    assert_eq!(code, 127, "{err}");
    assert_eq!(
        root.ok(&["exec", "-u", "nobody", "svc", "id", "-u"]),
        "65534\n"
    );
    // Same pid namespace: the init is pid 1 there.
    assert_eq!(
        root.ok(&["exec", "svc", "cat", "/proc/1/cmdline"]),
        "sleep\x001000\x00"
    );
    let mut child = root
        .cmd(&["exec", "-i", "svc", "sh", "-c", "read line; echo got:$line"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got:hello\n");
    // The exec'd process is in the container's cgroup.
    let cgroups = root.ok(&["exec", "svc", "cat", "/proc/self/cgroup"]);
    let own = root.ok(&["exec", "svc", "cat", "/proc/1/cgroup"]);
    assert_eq!(cgroups, own);
    assert!(cgroups.contains(&id), "{cgroups}");
    let top = root.ok(&["top", "svc"]);
    assert!(top.contains("sleep 1000"), "{top}");
    root.ok(&["kill", "svc"]);
    wait_for("exit", || state(&root, &id)["status"] == "stopped");
    let err = root.fails(&["exec", "svc", "true"]);
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn logs_rotate_tail_and_follow() {
    let root = Root::with_agent_args(&["--log-max-size", "2k", "--log-max-files", "2"]);
    import(&root);
    let id = run_detached(
        &root,
        &[
            "busybox",
            "sh",
            "-c",
            "i=0; while [ $i -lt 400 ]; do echo line-$i; i=$((i+1)); done; echo err-line >&2",
        ],
    );
    wait_for("exit", || state(&root, &id)["status"] == "stopped");
    let logdir = root.path().join("containers").join(&id).join("logs");
    let files: Vec<_> = std::fs::read_dir(&logdir).unwrap().flatten().collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        assert!(f.metadata().unwrap().len() <= 2048);
    }
    let out = root.run(&["logs", "--tail", "2", &id]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "line-399\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err-line\n");
    let ts = root.ok(&["logs", "-t", "--tail", "1", &id]);
    assert!(ts.is_empty(), "the last record went to stderr");
    root.ok(&["rm", &id]);

    // Follow a running container until it exits.
    let id = run_detached(
        &root,
        &[
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3; do echo tick$i; sleep 0.3; done",
        ],
    );
    let out = root.ok(&["logs", "-f", &id]);
    assert_eq!(out, "tick1\ntick2\ntick3\n");
    root.ok(&["rm", &id]);
}

#[test]
fn detach_then_inspect_kill_and_remove_from_other_processes() {
    let root = Root::new();
    import(&root);
    let id = run_detached(&root, &["--name", "bg", "busybox", "sleep", "1000"]);
    assert_eq!(id.len(), 64);
    let s = state(&root, "bg");
    assert_eq!(s["ociVersion"], "1.0.2");
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["status"], "running");
    let pid = s["pid"].as_i64().unwrap();
    assert!(pid > 1);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(std::path::Path::new(s["bundle"].as_str().unwrap())
        .join("config.json")
        .exists());
    let ps = root.ok(&["ps"]);
    assert!(
        ps.contains(&id[..12]) && ps.contains("running") && ps.contains("bg"),
        "{ps}"
    );
    assert_eq!(root.ok(&["list", "-q"]).trim(), &id[..12]);
    let err = root.fails(&["rm", "bg"]);
    assert!(err.contains("running"), "{err}");
    root.ok(&["kill", "-s", "KILL", &id[..8]]);
    wait_for("exit", || state(&root, &id)["status"] == "stopped");
    let s = state(&root, &id);
    assert_eq!(s["exitCode"], 137);
    assert_eq!(s["signal"], 9);
    assert_eq!(root.ok(&["wait", "bg"]).trim(), "137");
    root.ok(&["rm", "bg"]);
    assert_eq!(root.ok(&["ps", "-q"]), "");
    assert!(root.fails(&["state", "bg"]).contains("no such container"));
}

#[test]
fn stop_escalates_and_kills_the_whole_cgroup() {
    let root = Root::new();
    import(&root);
    // sh as PID 1 ignores SIGTERM; its background children would outlive it.
    let id = run_detached(
        &root,
        &[
            "busybox",
            "sh",
            "-c",
            "sleep 1000 & sleep 1000 & sleep 1000",
        ],
    );
    wait_for("three sleeps", || {
        root.ok(&["top", &id]).matches("sleep 1000").count() == 3
    });
    let top = root.ok(&["top", &id]);
    let pids: Vec<i32> = top
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let started = Instant::now();
    root.ok(&["stop", "-t", "1", &id]);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(state(&root, &id)["exitCode"], 137);
    for p in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists(),
            "pid {p} survived"
        );
    }
    let left = root.container_cgroups();
    assert!(left.is_empty(), "cgroups left: {left:?}");
    root.ok(&["rm", &id]);
}

#[test]
fn killed_supervisor_or_init_leave_nothing_after_rm() {
    let root = Root::new();
    import(&root);
    let id = run_detached(&root, &["busybox", "sleep", "1000"]);
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            root.path()
                .join("containers")
                .join(&id)
                .join("container.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let shim = record["shim"]["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) on the supervisor our agent started (pid from its record).
    unsafe { libc::kill(shim, libc::SIGKILL) };
    wait_for("the agent to see its supervisor gone", || {
        root.agent_log().contains("the container runs unsupervised")
    });
    assert_eq!(
        state(&root, &id)["status"],
        "running",
        "the container runs on unsupervised"
    );
    root.ok(&["rm", "-f", &id]);
    assert!(root.mounts().is_empty(), "{:?}", root.mounts());
    assert!(root.container_cgroups().is_empty());
    assert_eq!(containers_dir_entries(&root), 0);

    let id = run_detached(&root, &["busybox", "sleep", "1000"]);
    let pid = state(&root, &id)["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) on the container's init, which our agent started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for("exit", || state(&root, &id)["status"] == "stopped");
    assert_eq!(state(&root, &id)["exitCode"], 137);
    assert!(
        root.mounts().is_empty(),
        "a stopped container's rootfs is unmounted"
    );
    root.ok(&["rm", &id]);
}

#[test]
fn agent_sigterm_leaves_containers_running() {
    let mut root = Root::new();
    import(&root);
    let id = run_detached(&root, &["busybox", "sleep", "1000"]);
    let pid = state(&root, &id)["pid"].as_i64().unwrap();
    root.stop_agent(libc::SIGTERM);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // A create that died before writing its record leaves a bare dir: removed at start.
    let half = root.path().join("containers").join("ab".repeat(32));
    std::fs::create_dir_all(half.join("fs/upper")).unwrap();
    root.start_agent(&[]);
    assert!(!half.exists(), "half-created container dir left");
    let s = state(&root, &id);
    assert_eq!(s["status"], "running");
    assert_eq!(s["pid"], pid);
    assert_eq!(
        root.ok(&["exec", &id, "echo", "still-here"]),
        "still-here\n"
    );
    root.ok(&["stop", "-t", "0", &id]);
    assert_eq!(state(&root, &id)["status"], "stopped");
    root.ok(&["rm", &id]);
}

/// systemd's `Type=notify`: READY=1 once recovered (not when the socket is bound), and
/// the supervisors the agent starts do not inherit `NOTIFY_SOCKET`.
#[test]
fn the_agent_tells_systemd_it_is_ready_once_recovered() {
    let mut root = Root::new();
    import(&root);
    let id = run_detached(&root, &["busybox", "sleep", "1000"]);
    root.stop_agent(libc::SIGTERM);
    let half = root.path().join("containers").join("cd".repeat(32));
    std::fs::create_dir_all(half.join("fs/upper")).unwrap();
    let notify = root.path().join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    root.start_agent_with(
        std::path::Path::new(env!("CARGO_BIN_EXE_berth")),
        &[],
        &[("NOTIFY_SOCKET", notify.to_str().unwrap())],
    );
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).expect("a READY=1 datagram");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(
        !half.exists(),
        "ready before the half-created dir was removed"
    );
    // A supervisor started by this agent must not talk to systemd in its name.
    let second = run_detached(&root, &["busybox", "sleep", "1000"]);
    for c in [&id, &second] {
        let record: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                root.path()
                    .join("containers")
                    .join(c)
                    .join("container.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let shim = record["shim"]["pid"].as_i64().unwrap();
        let environ = std::fs::read(format!("/proc/{shim}/environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&environ).contains("NOTIFY_SOCKET"),
            "supervisor {shim} inherited NOTIFY_SOCKET"
        );
    }
    root.stop_agent(libc::SIGTERM);
    let n = listener.recv(&mut buf).expect("a STOPPING=1 datagram");
    assert_eq!(&buf[..n], b"STOPPING=1");
    root.start_agent(&[]);
    root.ok(&["rm", "-f", &id, &second]);
}

#[test]
fn terminal_and_interactive_stdin() {
    let root = Root::new();
    import(&root);
    let text = common::in_terminal(&root, "run --rm -t busybox tty");
    assert!(text.contains("/dev/pts/0"), "{text}");
    let mut child = root
        .cmd(&["run", "--rm", "-i", "busybox", "sh", "-c", "tr a-z A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SHOUT\n");
}

fn inspect(root: &Root, id: &str) -> serde_json::Value {
    serde_json::from_str(&root.ok(&["inspect", id])).unwrap()
}

#[test]
fn restart_policies_restart_the_same_container_with_its_writable_layer() {
    let mut root = Root::new();
    import(&root);
    // on-failure:5 — fails twice, then succeeds: two restarts of the same container, and
    // its writable layer keeps what each run wrote.
    let id = run_detached(
        &root,
        &[
            "--restart",
            "on-failure:5",
            "busybox",
            "sh",
            "-c",
            "echo run >> /count; [ $(wc -l < /count) -ge 3 ]",
        ],
    );
    wait_for("success after two restarts", || {
        let v = inspect(&root, &id);
        v["status"] == "stopped" && v["exit"]["exit_code"] == 0 && v["restarting"] == false
    });
    assert_eq!(inspect(&root, &id)["restart_count"], 2);
    let upper = root
        .path()
        .join("containers")
        .join(&id)
        .join("fs/upper/count");
    assert_eq!(std::fs::read_to_string(upper).unwrap(), "run\nrun\nrun\n");
    assert!(root.mounts().is_empty(), "unmounted once it stays stopped");

    // on-failure:1 — one restart, then it stays stopped with its code.
    let once = run_detached(
        &root,
        &["--restart", "on-failure:1", "busybox", "sh", "-c", "exit 3"],
    );
    wait_for("one restart", || {
        inspect(&root, &once)["restart_count"] == 1
            && inspect(&root, &once)["status"] == "stopped"
            && inspect(&root, &once)["restarting"] == false
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inspect(&root, &once)["restart_count"], 1);
    assert_eq!(state(&root, &once)["exitCode"], 3);

    // always — restarted after an exit; `stop` holds it off; `start` runs it again.
    let always = run_detached(
        &root,
        &[
            "--restart",
            "always",
            "--name",
            "svc",
            "busybox",
            "sh",
            "-c",
            "sleep 0.3",
        ],
    );
    wait_for("a restart", || {
        inspect(&root, &always)["restart_count"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    root.ok(&["stop", "-t", "1", "svc"]);
    let count = inspect(&root, &always)["restart_count"].clone();
    std::thread::sleep(Duration::from_millis(1500));
    let v = inspect(&root, &always);
    assert_eq!(
        (v["status"].as_str(), &v["restart_count"]),
        (Some("stopped"), &count)
    );
    // An agent restart starts an operator-stopped `always` container again, as dockerd does.
    root.stop_agent(libc::SIGTERM);
    root.start_agent(&[]);
    wait_for("started again by the agent", || {
        inspect(&root, &always)["status"] == "running"
            || inspect(&root, &always)["restart_count"].as_u64() > count.as_u64()
    });
    root.ok(&["stop", "-t", "1", "svc"]);
    // `berth start` of a stopped container: same id and name.
    let plain = run_detached(
        &root,
        &["--name", "again", "busybox", "sh", "-c", "echo hi"],
    );
    wait_for("exit", || state(&root, &plain)["status"] == "stopped");
    root.ok(&["start", "again"]);
    wait_for("second run", || root.ok(&["logs", "again"]) == "hi\nhi\n");
    assert_eq!(inspect(&root, &plain)["restart_count"], 0);

    let (code, _, err) = run(
        &root,
        &["run", "--rm", "--restart", "always", "busybox", "true"],
    );
    assert_eq!(code, 125);
    assert!(err.contains("conflicts with --rm"), "{err}");
    let (code, _, err) = run(&root, &["run", "--restart", "sometimes", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("--restart"), "{err}");
}
