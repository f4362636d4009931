//! Containers through a private agent, as configured: exit codes and bad input, the image
//! config, namespaces, cgroup limits (OOM, pids, cpu quota), filesystem options, layer
//! order, capabilities and seccomp. Every test's `Root` checks at drop that no mount or
//! cgroup of it is left.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use common::{
    cgroup_dirs, containers_dir_entries, fixtures, import, run_code as run, run_detached, state,
    wait_for, Root,
};

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
        &["run", "--rm", "--network", "bridge/0", "busybox", "true"],
        &[
            "run",
            "--rm",
            "-p",
            "80",
            "--network",
            "host",
            "busybox",
            "true",
        ],
    ] {
        let (code, _, err) = run(&root, bad);
        assert_eq!(code, 125, "{bad:?}: {err}");
        assert!(err.contains("invalid"), "{bad:?}: {err}");
    }
    // A network no config defines.
    let (code, _, err) = run(
        &root,
        &["run", "--rm", "--network", "nonet", "busybox", "true"],
    );
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("no network named \"nonet\""), "{err}");
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
    assert_eq!(inspect["exposed_ports"], serde_json::json!(["8080/tcp"]));
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
    let id = run_detached(
        &root,
        &[
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
        ],
    );
    // --cpus and -m: limits are its requests, so guaranteed.
    let cg = root.cgroup_root.join("guaranteed").join(&id);
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
    let stats = || -> serde_json::Value {
        serde_json::from_str(&root.ok(&["stats", "--json", &id])).unwrap()
    };
    wait_for("CFS throttling", || {
        stats()["cpu_throttled_periods"].as_u64().unwrap() > 0
    });
    let stats = stats();
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
    let id = run_detached(&root, &["busybox", "sleep", "1000"]);
    assert!(root.mounts().is_empty(), "no overlay with --rootfs-copy");
    assert_eq!(
        root.ok(&["exec", &id, "cat", "/etc/group"]).lines().count(),
        3
    );
    root.ok(&["rm", "-f", &id]);
}

#[test]
fn logs_follow_streams_until_the_container_exits() {
    let root = Root::new();
    import(&root);
    // The second line is written only once the follower is there (the flag file appears
    // when `logs -f` has printed the first).
    let flag = tempfile::tempdir().unwrap();
    let id = run_detached(
        &root,
        &[
            "-v",
            &format!("{}:/flag", flag.path().display()),
            "busybox",
            "sh",
            "-c",
            "echo one; while [ ! -e /flag/go ]; do sleep 0.05; done; echo two",
        ],
    );
    let mut follow = root
        .cmd(&["logs", "-f", &id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(follow.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "one\n");
    std::fs::write(flag.path().join("go"), b"").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "two\n");
    // It ended by itself, with the container.
    assert!(follow.wait().unwrap().success());
    assert_eq!(state(&root, &id)["status"], "stopped");
    root.ok(&["rm", &id]);
}
