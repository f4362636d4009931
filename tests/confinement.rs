//! Every process that enters a container is confined like its init: `berth exec` and
//! command health checks read their own `/proc/self/status` (seccomp mode, no-new-privs,
//! the five capability sets) and must match the init's; namespace and mount escapes that
//! fail from the init fail from an exec too. And the capability sets match Docker's for
//! root and non-root users, `--cap-add` and `--cap-drop` (ALL and single ones).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use common::{import, run_code as run, run_detached, wait_for, Root};

/// Docker's default capability set as a mask (moby `oci/caps/defaults.go`).
const DOCKER_DEFAULT: u64 = 0xa80425fb;

/// The confinement lines of a `/proc/<pid>/status`.
fn confinement(status: &str) -> Vec<String> {
    status
        .lines()
        .filter(|l| {
            [
                "Seccomp:",
                "NoNewPrivs:",
                "CapInh:",
                "CapPrm:",
                "CapEff:",
                "CapBnd:",
                "CapAmb:",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn field(lines: &[String], key: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
        .to_string()
}

fn mask(lines: &[String], key: &str) -> u64 {
    u64::from_str_radix(&field(lines, key), 16).unwrap()
}

/// The init's status read from the host, and an exec's own.
fn init_and_exec(root: &Root, id: &str, exec_args: &[&str]) -> (Vec<String>, Vec<String>) {
    let st = common::state(root, id);
    let pid = st["pid"].as_i64().unwrap();
    let init = confinement(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap());
    let mut args = vec!["exec"];
    args.extend_from_slice(exec_args);
    args.extend_from_slice(&[id, "cat", "/proc/self/status"]);
    let exec = confinement(&root.ok(&args));
    (init, exec)
}

#[test]
fn exec_and_health_checks_are_confined_like_the_init() {
    let root = Root::new();
    import(&root);
    for extra in [
        &[][..],
        &["--security-opt", "no-new-privileges"][..],
        &["-u", "1000"][..],
        &["--cap-drop", "ALL"][..],
        &["--cap-add", "NET_ADMIN", "-u", "1000:1000"][..],
    ] {
        let mut args = extra.to_vec();
        args.extend_from_slice(&[
            "--health-cmd",
            "cat /proc/self/status > /tmp/health.status",
            "--health-interval",
            "200ms",
            "busybox",
            "sleep",
            "1000",
        ]);
        let id = run_detached(&root, &args);
        let (init, exec) = init_and_exec(&root, &id, &[]);
        assert_eq!(field(&init, "Seccomp"), "2", "{extra:?}: {init:?}");
        assert_eq!(exec, init, "{extra:?}: exec differs from the init");
        wait_for("the health check's status file", || {
            run(&root, &["exec", &id, "test", "-s", "/tmp/health.status"]).0 == 0
        });
        let health = confinement(&root.ok(&["exec", &id, "cat", "/tmp/health.status"]));
        assert_eq!(
            health, init,
            "{extra:?}: health check differs from the init"
        );
        // A terminal exec takes the same path.
        let tty = common::in_terminal(&root, &format!("exec -t {id} cat /proc/self/status"));
        assert_eq!(confinement(&tty), init, "{extra:?}: exec -t");
        root.ok(&["rm", "-f", &id]);
    }
}

#[test]
fn exec_cannot_escape_where_the_init_cannot() {
    let root = Root::new();
    import(&root);
    let id = run_detached(&root, &["busybox", "sleep", "1000"]);
    for probe in [
        "unshare -U -r -m true",
        "unshare -m true",
        "mount -t tmpfs none /mnt",
    ] {
        let (code, out, err) = run(&root, &["exec", &id, "sh", "-c", probe]);
        assert_ne!(code, 0, "{probe} succeeded from exec: {out}{err}");
        // The same from a fresh process of the init's kind.
        let (code, _, _) = run(&root, &["run", "--rm", "busybox", "sh", "-c", probe]);
        assert_ne!(code, 0, "{probe} succeeded from an init");
    }
    // Unconfined on request, for both.
    let free = run_detached(
        &root,
        &[
            "--security-opt",
            "seccomp=unconfined",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    let (init, exec) = init_and_exec(&root, &free, &[]);
    assert_eq!(field(&init, "Seccomp"), "0");
    assert_eq!(exec, init);
    root.ok(&["rm", "-f", &id, &free]);
}

/// options, then the inheritable, permitted, effective, bounding and ambient sets
type Case = (Vec<&'static str>, u64, u64, u64, u64, u64);

/// Docker's sets, for root and non-root users (`docker run … grep Cap /proc/1/status`).
#[test]
fn capabilities_match_docker() {
    let root = Root::new();
    import(&root);
    let bit = |n: u32| 1u64 << n;
    const NET_ADMIN: u32 = 12;
    const KILL: u32 = 5;
    const AUDIT_WRITE: u32 = 29;
    const CHOWN: u32 = 0;
    // (options, inheritable, permitted, effective, bounding, ambient)
    let cases: Vec<Case> = vec![
        (vec![], 0, DOCKER_DEFAULT, DOCKER_DEFAULT, DOCKER_DEFAULT, 0),
        (vec!["-u", "1000"], 0, 0, 0, DOCKER_DEFAULT, 0),
        (vec!["-u", "nobody"], 0, 0, 0, DOCKER_DEFAULT, 0),
        (vec!["--cap-drop", "ALL"], 0, 0, 0, 0, 0),
        (vec!["--cap-drop", "ALL", "-u", "1000"], 0, 0, 0, 0, 0),
        (
            vec!["--cap-drop", "AUDIT_WRITE"],
            0,
            DOCKER_DEFAULT & !bit(AUDIT_WRITE),
            DOCKER_DEFAULT & !bit(AUDIT_WRITE),
            DOCKER_DEFAULT & !bit(AUDIT_WRITE),
            0,
        ),
        (
            vec!["--cap-drop", "KILL"],
            0,
            DOCKER_DEFAULT & !bit(KILL),
            DOCKER_DEFAULT & !bit(KILL),
            DOCKER_DEFAULT & !bit(KILL),
            0,
        ),
        (
            vec!["--cap-drop", "CHOWN", "--cap-add", "NET_ADMIN"],
            0,
            (DOCKER_DEFAULT & !bit(CHOWN)) | bit(NET_ADMIN),
            (DOCKER_DEFAULT & !bit(CHOWN)) | bit(NET_ADMIN),
            (DOCKER_DEFAULT & !bit(CHOWN)) | bit(NET_ADMIN),
            0,
        ),
        (
            vec!["--cap-drop", "ALL", "--cap-add", "KILL"],
            0,
            bit(KILL),
            bit(KILL),
            bit(KILL),
            0,
        ),
        // Non-root: only what was added explicitly, as ambient (moby#52830).
        (
            vec!["--cap-add", "NET_ADMIN", "-u", "1000"],
            bit(NET_ADMIN),
            bit(NET_ADMIN),
            bit(NET_ADMIN),
            DOCKER_DEFAULT | bit(NET_ADMIN),
            bit(NET_ADMIN),
        ),
        (
            vec!["--cap-drop", "ALL", "--cap-add", "KILL", "-u", "1000"],
            bit(KILL),
            bit(KILL),
            bit(KILL),
            bit(KILL),
            bit(KILL),
        ),
    ];
    for (opts, inh, prm, eff, bnd, amb) in cases {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(&opts);
        args.extend_from_slice(&["busybox", "cat", "/proc/self/status"]);
        let (code, out, err) = run(&root, &args);
        assert_eq!(code, 0, "{opts:?}: {err}");
        let lines = confinement(&out);
        let got = [
            mask(&lines, "CapInh"),
            mask(&lines, "CapPrm"),
            mask(&lines, "CapEff"),
            mask(&lines, "CapBnd"),
            mask(&lines, "CapAmb"),
        ];
        assert_eq!(
            got,
            [inh, prm, eff, bnd, amb],
            "{opts:?}: [inh, prm, eff, bnd, amb] as {:x?}",
            got
        );
    }
    // Dropping every capability one by one works (the init starts, exit 0).
    for cap in [
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    ] {
        let (code, _, err) = run(
            &root,
            &["run", "--rm", "--cap-drop", cap, "busybox", "true"],
        );
        assert_eq!(code, 0, "--cap-drop {cap}: {err}");
    }
}

/// A command the kernel refuses to execute (no valid format) fails its start with
/// Docker's 126 and the kernel's reason, for the init and for an exec alike (libcontainer
/// would only log it, after START); the same with a detached start.
#[test]
fn an_exec_failure_after_start_is_the_exit_reason() {
    use berth_integration::layout::{write_oci_layout, Image};
    use berth_integration::tarball::{Compression, Meta, TarBuilder};
    let root = Root::new();
    let mut t = TarBuilder::new();
    t.file("garbage", b"not a program\n", Meta::FILE.mode(0o755))
        .unwrap();
    t.file("private", b"#!/bin/sh\necho ran\n", Meta::FILE.mode(0o700))
        .unwrap();
    let image = Image::new(
        vec![
            berth_integration::fixtures::busybox_layer().unwrap(),
            t.finish().unwrap(),
        ],
        berth_integration::fixtures::busybox_config(),
    );
    let dir = tempfile::tempdir().unwrap();
    write_oci_layout(dir.path(), &[("odd:latest", &image)], Compression::Gzip).unwrap();
    root.ok(&["import", dir.path().to_str().unwrap()]);
    // Root runs a 0700 file, as the kernel allows (libcontainer's own check did not).
    assert_eq!(root.ok(&["run", "--rm", "odd", "/private"]), "ran\n");
    let (code, _, err) = run(&root, &["run", "--rm", "odd", "/garbage"]);
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("exec format error"), "{err}");
    let id = run_detached(&root, &["odd", "sleep", "1000"]);
    let (code, _, err) = run(&root, &["exec", &id, "/garbage"]);
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("exec format error"), "{err}");
    root.ok(&["rm", "-f", &id]);
    let id = root
        .ok(&["run", "-d", "odd", "/garbage"])
        .trim()
        .to_string();
    wait_for("the start failure", || {
        common::state(&root, &id)["status"] == "stopped"
    });
    let st = common::state(&root, &id);
    assert_eq!(st["exitCode"], 126, "{st}");
    assert_eq!(st["reason"], "start-failed", "{st}");
    root.ok(&["rm", &id]);
}
