//! Containers through a private agent: exit codes, the image config, namespaces, cgroup
//! limits (OOM, pids, cpu quota), filesystem options, capabilities and seccomp, exec, logs,
//! detach/inspect, stop/kill/rm, supervisor and init killed, agent restart. Every test's
//! `Root` checks at drop that no mount or cgroup of it is left.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::time::{Duration, Instant};

use common::{cgroup_dirs, fixtures, Root};

fn import(root: &Root) {
    let fx = fixtures();
    root.ok(&[
        "import",
        "--tag",
        "busybox",
        fx.join("busybox-oci.tar").to_str().unwrap(),
    ]);
    root.ok(&[
        "import",
        "--tag",
        "app",
        fx.join("app-oci").to_str().unwrap(),
    ]);
}

/// (exit code, stdout, stderr)
fn run(root: &Root, args: &[&str]) -> (i32, String, String) {
    let out = root.run(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn state(root: &Root, id: &str) -> serde_json::Value {
    serde_json::from_str(&root.ok(&["state", id])).unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn containers_dir_entries(root: &Root) -> usize {
    std::fs::read_dir(root.path().join("containers"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn exit_codes_and_bad_input_leave_nothing() {
    let root = Root::new();
    import(&root);
    assert_eq!(run(&root, &["run", "--rm", "busybox", "true"]).0, 0);
    let (code, out, err) = run(
        &root,
        &[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!((code, out.as_str(), err.as_str()), (3, "out\n", "err\n"));
    let (code, _, err) = run(&root, &["run", "--rm", "busybox", "nosuchcommand"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("executable file not found"), "{err}");
    for bad in [
        &["run", "--rm", "-m", "12x", "busybox", "true"][..],
        &["run", "--rm", "--cpus", "-1", "busybox", "true"],
        &["run", "--rm", "--cap-add", "CAP_FLY", "busybox", "true"],
        &[
            "run",
            "--rm",
            "-v",
            "/nonexistent/berth-test:/x",
            "busybox",
            "true",
        ],
        &[
            "run",
            "--rm",
            "--security-opt",
            "apparmor=x",
            "busybox",
            "true",
        ],
        &["run", "--rm", "--network", "bridge0", "busybox", "true"],
    ] {
        let (code, _, err) = run(&root, bad);
        assert_eq!(code, 125, "{bad:?}: {err}");
        assert!(err.contains("invalid"), "{bad:?}: {err}");
    }
    let (code, _, err) = run(&root, &["run", "--rm", "127.0.0.1:1/nope", "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("127.0.0.1:1/nope"), "{err}");
    // A name in use.
    root.ok(&["create", "--name", "taken", "busybox", "true"]);
    let (code, _, err) = run(&root, &["run", "--name", "taken", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("already in use"), "{err}");
    let err = root.fails(&["rm", "taken"]);
    assert!(
        err.contains("use -f"),
        "a created container is not removed without -f: {err}"
    );
    root.ok(&["rm", "-f", "taken"]);
    assert_eq!(containers_dir_entries(&root), 0, "state dirs left");
    assert!(root.container_cgroups().is_empty());
    assert!(root.mounts().is_empty(), "{:?}", root.mounts());
}

#[test]
fn image_config_env_user_workdir_and_overrides() {
    let root = Root::new();
    import(&root);
    let out = root.ok(&["run", "--name", "app1", "app"]);
    assert_eq!(out, "default-cmd\n1000\n1000\n/home/berth\nfixture\n");
    let inspect: serde_json::Value = serde_json::from_str(&root.ok(&["inspect", "app1"])).unwrap();
    assert_eq!(
        inspect["record"]["exposed_ports"],
        serde_json::json!(["8080/tcp"])
    );
    root.ok(&["rm", "app1"]);
    let out = root.ok(&[
        "run",
        "--rm",
        "-e",
        "APP_MODE=override",
        "-u",
        "0:0",
        "-w",
        "/tmp",
        "app",
        "id -u; pwd; echo $APP_MODE; echo $HOME",
    ]);
    assert_eq!(out, "0\n/tmp\noverride\n/root\n");
    let out = root.ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/echo",
        "app",
        "plain",
        "args",
    ]);
    assert_eq!(out, "plain args\n");
    let envfile = root.path().join("env");
    std::fs::write(&envfile, "# comment\nFROM_FILE=1\n\n").unwrap();
    let out = root.ok(&[
        "run",
        "--rm",
        "--env-file",
        envfile.to_str().unwrap(),
        "-u",
        "nobody",
        "busybox",
        "sh",
        "-c",
        "echo $FROM_FILE; id -un",
    ]);
    assert_eq!(out, "1\nnobody\n");
    let err = root.fails(&["run", "--rm", "-u", "nosuchuser", "busybox", "true"]);
    assert!(err.contains("nosuchuser"), "{err}");
}

#[test]
fn namespaces_hostname_pid1_and_network() {
    let root = Root::new();
    import(&root);
    let id = root
        .ok(&["create", "busybox", "hostname"])
        .trim()
        .to_string();
    let conn = root.run(&["start", &id]);
    assert!(conn.status.success());
    wait_for("exit", || state(&root, &id)["status"] == "stopped");
    let logs = root.ok(&["logs", &id]);
    assert_eq!(logs.trim(), &id[..12], "default hostname is the short id");
    root.ok(&["rm", &id]);
    assert_eq!(
        root.ok(&["run", "--rm", "--hostname", "box1", "busybox", "hostname"]),
        "box1\n"
    );
    assert_eq!(
        root.ok(&["run", "--rm", "busybox", "sh", "-c", "echo $$"]),
        "1\n"
    );
    let links = root.ok(&["run", "--rm", "busybox", "ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    let ping = root.ok(&[
        "run",
        "--rm",
        "busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "127.0.0.1",
    ]);
    assert!(ping.contains("1 packets received"), "{ping}");
    let host_links = std::fs::read_dir("/sys/class/net").unwrap().count();
    let links = root.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(links.split_whitespace().count(), host_links, "{links}");
    let hosts = root.ok(&["run", "--rm", "busybox", "cat", "/etc/hosts"]);
    assert!(hosts.contains("localhost"), "{hosts}");
}

#[test]
fn memory_limit_oom_is_reported() {
    let root = Root::new();
    import(&root);
    let (code, _, _) = run(
        &root,
        &[
            "run",
            "--name",
            "hog",
            "-m",
            "16m",
            "busybox",
            "sh",
            "-c",
            "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done",
        ],
    );
    assert_eq!(code, 137);
    let s = state(&root, "hog");
    assert_eq!(s["OOMKilled"], true, "{s}");
    assert_eq!(s["reason"], "oom-killed");
    assert_eq!(s["exitCode"], 137);
    let inspect: serde_json::Value = serde_json::from_str(&root.ok(&["inspect", "hog"])).unwrap();
    assert_eq!(inspect["OOMKilled"], true);
    root.ok(&["rm", "hog"]);
}

#[test]
fn limits_are_written_to_the_cgroup_and_enforced() {
    let root = Root::new();
    import(&root);
    let id = root
        .ok(&[
            "run",
            "-d",
            "--cpus",
            "0.1",
            "--cpu-shares",
            "512",
            "-m",
            "64m",
            "--memory-reservation",
            "32m",
            "--pids-limit",
            "20",
            "busybox",
            "sh",
            "-c",
            "while true; do :; done",
        ])
        .trim()
        .to_string();
    let cg = root.cgroup_root.join(&id);
    let dirs = cgroup_dirs(&cg);
    let read = |file: &str| -> String {
        dirs.iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .unwrap_or_else(|| panic!("{file} not found under {dirs:?}"))
            .trim()
            .to_string()
    };
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert_eq!(read("cpu.max"), "10000 100000");
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("pids.max"), "20");
    } else {
        assert_eq!(read("cpu.cfs_quota_us"), "10000");
        assert_eq!(read("cpu.shares"), "512");
        assert_eq!(read("memory.limit_in_bytes"), (64u64 << 20).to_string());
        assert_eq!(
            read("memory.soft_limit_in_bytes"),
            (32u64 << 20).to_string()
        );
        assert_eq!(read("pids.max"), "20");
    }
    std::thread::sleep(Duration::from_millis(1200));
    let stats: serde_json::Value =
        serde_json::from_str(&root.ok(&["stats", "--json", &id])).unwrap();
    assert!(
        stats["cpu_throttled_periods"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert!(stats["cpu_usage_ns"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["memory_limit"].as_u64().unwrap(), 64 << 20);
    assert_eq!(stats["pids_limit"].as_u64().unwrap(), 20);
    assert!(stats["pids_current"].as_u64().unwrap() >= 1);
    let table = root.ok(&["stats", &id]);
    assert!(table.contains("THROTTLED"), "{table}");
    root.ok(&["rm", "-f", &id]);

    // pids: the fifth process cannot be forked.
    let (code, _, err) = run(
        &root,
        &[
            "run",
            "--rm",
            "--pids-limit",
            "4",
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6; do sleep 5 & done; wait",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("can't fork") || err.contains("Resource temporarily unavailable"),
        "{err}"
    );
}

#[test]
fn filesystem_options() {
    let root = Root::new();
    import(&root);
    let host = tempfile::tempdir().unwrap();
    let v = format!("{}:/data", host.path().display());
    let ro = format!("{}:/ro:ro", host.path().display());
    let out = root.ok(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch",
        "-v",
        &v,
        "-v",
        &ro,
        "busybox",
        "sh",
        "-c",
        "touch /x 2>/dev/null && echo rootfs-writable; touch /scratch/a && echo tmpfs-ok; \
         echo hi > /data/f && echo volume-ok; touch /ro/g 2>/dev/null || echo ro-refused",
    ]);
    assert_eq!(out, "tmpfs-ok\nvolume-ok\nro-refused\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("f")).unwrap(),
        "hi\n"
    );
    // Writes go to the container's upper dir, never to the image.
    root.ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo x > /bin/busybox-changed; rm /bin/ls",
    ]);
    assert_eq!(
        root.ok(&["run", "--rm", "busybox", "sh", "-c", "ls /bin/ls"]),
        "/bin/ls\n"
    );
}

#[test]
fn capabilities_seccomp_and_no_new_privileges() {
    let root = Root::new();
    import(&root);
    let status = root.ok(&["run", "--rm", "busybox", "cat", "/proc/self/status"]);
    let field = |s: &str, k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    // Docker's default set.
    assert_eq!(field(&status, "CapEff:"), "00000000a80425fb", "{status}");
    assert_eq!(field(&status, "Seccomp:"), "2");
    assert_eq!(field(&status, "NoNewPrivs:"), "0");
    let err = root.fails(&[
        "run",
        "--rm",
        "--cap-drop",
        "chown",
        "busybox",
        "chown",
        "1",
        "/tmp",
    ]);
    assert!(err.contains("Operation not permitted"), "{err}");
    // mount(2) needs CAP_SYS_ADMIN and the seccomp filter refuses it without.
    let err = root.fails(&[
        "run", "--rm", "busybox", "mount", "-t", "tmpfs", "t", "/tmp",
    ]);
    assert!(
        err.contains("denied") || err.contains("not permitted"),
        "{err}"
    );
    let status = root.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "no-new-privileges",
        "--cap-add",
        "SYS_ADMIN",
        "busybox",
        "cat",
        "/proc/self/status",
    ]);
    assert_eq!(field(&status, "Seccomp:"), "0");
    assert_eq!(field(&status, "NoNewPrivs:"), "1");
    assert_eq!(field(&status, "CapEff:"), "00000000a82425fb");
    root.ok(&[
        "run",
        "--rm",
        "--cap-add",
        "SYS_ADMIN",
        "busybox",
        "mount",
        "-t",
        "tmpfs",
        "t",
        "/tmp",
    ]);
    // ALL: everything the agent itself may grant (its bounding set).
    let status = root.ok(&[
        "run",
        "--rm",
        "--cap-add",
        "ALL",
        "busybox",
        "cat",
        "/proc/self/status",
    ]);
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(field(&status, "CapEff:"), field(&own, "CapBnd:"));
}

#[test]
fn exec_joins_the_running_container() {
    let root = Root::new();
    import(&root);
    let id = root
        .ok(&[
            "run",
            "-d",
            "--name",
            "svc",
            "--hostname",
            "svc1",
            "busybox",
            "sleep",
            "1000",
        ])
        .trim()
        .to_string();
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
    let id = root
        .ok(&[
            "run",
            "-d",
            "busybox",
            "sh",
            "-c",
            "i=0; while [ $i -lt 400 ]; do echo line-$i; i=$((i+1)); done; echo err-line >&2",
        ])
        .trim()
        .to_string();
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
    let id = root
        .ok(&[
            "run",
            "-d",
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3; do echo tick$i; sleep 0.3; done",
        ])
        .trim()
        .to_string();
    let out = root.ok(&["logs", "-f", &id]);
    assert_eq!(out, "tick1\ntick2\ntick3\n");
    root.ok(&["rm", &id]);
}

#[test]
fn detach_then_inspect_kill_and_remove_from_other_processes() {
    let root = Root::new();
    import(&root);
    let id = root
        .ok(&["run", "-d", "--name", "bg", "busybox", "sleep", "1000"])
        .trim()
        .to_string();
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
    let id = root
        .ok(&[
            "run",
            "-d",
            "busybox",
            "sh",
            "-c",
            "sleep 1000 & sleep 1000 & sleep 1000",
        ])
        .trim()
        .to_string();
    std::thread::sleep(Duration::from_millis(300));
    let top = root.ok(&["top", &id]);
    assert_eq!(top.matches("sleep 1000").count(), 3, "{top}");
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
    assert!(root.container_cgroups().is_empty());
    root.ok(&["rm", &id]);
}

#[test]
fn killed_supervisor_or_init_leave_nothing_after_rm() {
    let root = Root::new();
    import(&root);
    let id = root
        .ok(&["run", "-d", "busybox", "sleep", "1000"])
        .trim()
        .to_string();
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
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        state(&root, &id)["status"],
        "running",
        "the container runs on unsupervised"
    );
    root.ok(&["rm", "-f", &id]);
    assert!(root.mounts().is_empty(), "{:?}", root.mounts());
    assert!(root.container_cgroups().is_empty());
    assert_eq!(containers_dir_entries(&root), 0);

    let id = root
        .ok(&["run", "-d", "busybox", "sleep", "1000"])
        .trim()
        .to_string();
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
    let id = root
        .ok(&["run", "-d", "busybox", "sleep", "1000"])
        .trim()
        .to_string();
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

#[test]
fn terminal_and_interactive_stdin() {
    let root = Root::new();
    import(&root);
    // `script` gives the CLI a terminal of its own.
    let cmd = format!(
        "{} --socket {} run --rm -t busybox tty",
        env!("CARGO_BIN_EXE_berth"),
        root.socket().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script (bsdutils)");
    let text = String::from_utf8_lossy(&out.stdout);
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

/// The layers stack in order: layer 3's whiteouts hide layer 2's files, its opaque dir hides
/// the older content, its motd replaces layer 2's — with overlayfs and with the copy.
fn check_multilayer(root: &Root) {
    let fx = fixtures();
    root.ok(&[
        "import",
        "--tag",
        "multi",
        fx.join("multilayer-oci").to_str().unwrap(),
    ]);
    let out = root.ok(&[
        "run",
        "--rm",
        "multi",
        "sh",
        "-c",
        "cat /etc/motd; ls /data; ls /data/opaque; cat /data/c.txt; echo $BERTH_FIXTURE; pwd",
    ]);
    assert_eq!(
        out,
        "layer three\na.txt\nabs.link\nc.txt\nd.link\nfifo\nkeep\nnew.txt\nnull\nopaque\n\
         setuid\nxattr.txt\nnew1\nalpha\nmultilayer\n/data\n"
    );
}

#[test]
fn multilayer_image_stacks_in_order() {
    let root = Root::new();
    check_multilayer(&root);
}

#[test]
fn copy_fallback_rootfs() {
    let root = Root::with_agent_args(&["--rootfs-copy"]);
    import(&root);
    check_multilayer(&root);
    let id = root
        .ok(&["run", "-d", "busybox", "sleep", "1000"])
        .trim()
        .to_string();
    assert!(root.mounts().is_empty(), "no overlay with --rootfs-copy");
    assert_eq!(
        root.ok(&["exec", &id, "cat", "/etc/group"]).lines().count(),
        3
    );
    root.ok(&["rm", "-f", &id]);
}
