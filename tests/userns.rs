//! User namespaces per task (`--userns auto`, a pod's `hostUsers: false`): root inside is
//! an unprivileged id outside; the image keeps its owners without a copy; files written to
//! volumes carry the mapped owner; a process that reaches the host's files through
//! `/proc/<pid>/root` of another task cannot write root's files; two tasks never share a
//! range (also across an agent restart); exec and health checks join the namespace; a
//! task's network namespace belongs to it (it may bind port 80).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use common::{import, pod_json, run_code as run, run_detached, wait_for, write_spec, Root};

/// A pool of three ranges of this test's own (ids far above anything else here).
fn pool(base: u32) -> String {
    format!("{base}:{}", 3 * 65_536)
}

fn inspect(root: &Root, id: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&root.ok(&["inspect", id])).unwrap();
    if v.is_array() {
        v[0].clone()
    } else {
        v
    }
}

/// The first host uid of a container's range, from `berth inspect`.
fn base_uid(root: &Root, id: &str) -> u64 {
    inspect(root, id)["idmap"]["uid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no idmap for {id}: {}", inspect(root, id)))
}

fn pid(root: &Root, id: &str) -> i64 {
    inspect(root, id)["pid"].as_i64().unwrap()
}

/// `Uid:` of `/proc/PID/status` on the host: real, effective, saved, fs.
fn host_uids(pid: i64) -> Vec<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect()
}

/// Inside the container the image's owners are as built: root's busybox, berth's home (1000).
fn assert_image_owners_inside(root: &Root, id: &str) {
    let owners = root.ok(&[
        "exec",
        id,
        "stat",
        "-c",
        "%u:%g",
        "/bin/busybox",
        "/home/berth",
    ]);
    assert_eq!(
        owners.split_whitespace().collect::<Vec<_>>(),
        vec!["0:0", "1000:1000"]
    );
}

fn owner(path: &std::path::Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    (m.uid(), m.gid())
}

#[test]
fn root_inside_is_an_unprivileged_id_outside_and_the_image_keeps_its_owners() {
    let root = Root::with_agent_args(&["--userns-pool", &pool(1_500_000_000)]);
    import(&root);
    let id = run_detached(
        &root,
        &[
            "--userns",
            "auto",
            "--health-cmd",
            // Healthy only inside a mapped namespace: the host's map starts "0 0".
            "awk '{exit ($2 == 0)}' /proc/self/uid_map",
            "--health-interval",
            "200ms",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    let base = base_uid(&root, &id);
    assert!(
        (1_500_000_000..1_500_000_000 + 3 * 65_536).contains(&base),
        "{base}"
    );
    let p = pid(&root, &id);
    assert_eq!(host_uids(p), vec![base; 4], "uid 0 inside, host view");
    // Inside: root, and the image's owners as built (root's files, berth's home at 1000).
    assert_eq!(root.ok(&["exec", &id, "id", "-u"]).trim(), "0");
    assert_image_owners_inside(&root, &id);
    // Outside, through the task's root: the same files with their host ids.
    let rootfs = std::path::PathBuf::from(format!("/proc/{p}/root"));
    let base32 = base as u32;
    assert_eq!(
        owner(&rootfs.join("home/berth")),
        (base32 + 1000, base32 + 1000)
    );
    assert_eq!(owner(&rootfs.join("bin/busybox")), (base32, base32));
    // Nothing of the image was chowned: its layer on disk keeps root's owner.
    let lower = root.lowerdirs("busybox");
    assert!(!lower.is_empty());
    assert_eq!(
        owner(&std::path::Path::new(&lower[0]).join("home/berth")),
        (1000, 1000)
    );
    // A file it writes in its own rootfs lands in the upper dir with its host id.
    root.ok(&["exec", &id, "touch", "/written"]);
    assert_eq!(owner(&rootfs.join("written")), (base32, base32));
    // Exec joins the init's user namespace, as root of it or as another user.
    let ns = std::fs::read_link(format!("/proc/{p}/ns/user")).unwrap();
    assert_eq!(
        root.ok(&["exec", &id, "readlink", "/proc/self/ns/user"])
            .trim(),
        ns.to_str().unwrap()
    );
    assert_eq!(
        root.ok(&["exec", &id, "cat", "/proc/self/uid_map"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec!["0".to_string(), base.to_string(), "65536".into()]
    );
    assert_eq!(
        root.ok(&["exec", "-u", "1000", &id, "id", "-u"]).trim(),
        "1000"
    );
    // Capabilities hold in its own namespaces only: the host's are out of reach.
    let (code, _, err) = run(
        &root,
        &["exec", &id, "sh", "-c", "echo 1 > /proc/sys/kernel/panic"],
    );
    assert_ne!(code, 0, "wrote a host sysctl: {err}");
    // The health check ran inside the namespace too (else it stays unhealthy).
    wait_for("healthy", || {
        inspect(&root, &id)["health"]["status"].as_str() == Some("healthy")
    });
    // A container without --userns runs as the host's root, as Docker's default.
    let plain = run_detached(&root, &["busybox", "sleep", "1000"]);
    assert_eq!(host_uids(pid(&root, &plain))[0], 0);
    assert!(inspect(&root, &plain)["idmap"].is_null());
    root.ok(&["rm", "-f", &id, &plain]);
}

#[test]
fn volumes_get_the_mapped_owner_and_root_files_reached_through_proc_stay_out_of_reach() {
    let root = Root::with_agent_args(&["--userns-pool", &pool(1_600_000_000)]);
    import(&root);
    use std::os::unix::fs::PermissionsExt;
    let vol = root.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(vol.join("roots"), "host root's\n").unwrap();
    let volarg = format!("{}:/data", vol.display());
    // A file made in a volume belongs to the task's range on the host.
    let (code, _, err) = run(
        &root,
        &[
            "run",
            "--rm",
            "--userns",
            "auto",
            "-v",
            &volarg,
            "busybox",
            "sh",
            "-c",
            "touch /data/new",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (uid, gid) = owner(&vol.join("new"));
    assert!(uid >= 1_600_000_000 && gid >= 1_600_000_000, "{uid}:{gid}");
    // Root inside cannot write what root outside owns.
    let (code, _, _) = run(
        &root,
        &[
            "run",
            "--rm",
            "--userns",
            "auto",
            "-v",
            &volarg,
            "busybox",
            "sh",
            "-c",
            "echo x >> /data/roots",
        ],
    );
    assert_ne!(code, 0, "a user namespace's root wrote a host root's file");
    assert_eq!(
        std::fs::read_to_string(vol.join("roots")).unwrap(),
        "host root's\n"
    );

    // Another task (the host's root inside) with a root-owned file in its rootfs; a task
    // that sees the host's /proc tries to write it through /proc/<pid>/root.
    let victim = run_detached(&root, &["busybox", "sleep", "1000"]);
    root.ok(&["exec", &victim, "sh", "-c", "echo intact > /victim"]);
    let vpid = pid(&root, &victim);
    let write = format!("echo pwned > /hostproc/{vpid}/root/victim");
    let (code, _, _) = run(
        &root,
        &[
            "run",
            "--rm",
            "--userns",
            "auto",
            "-v",
            "/proc:/hostproc",
            "busybox",
            "sh",
            "-c",
            &write,
        ],
    );
    assert_ne!(
        code, 0,
        "wrote through /proc/<pid>/root from a user namespace"
    );
    assert_eq!(
        root.ok(&["exec", &victim, "cat", "/victim"]).trim(),
        "intact"
    );
    // The same path works for a task without one: the probe itself is sound.
    let control = format!("echo control > /hostproc/{vpid}/root/victim");
    let (code, _, err) = run(
        &root,
        &[
            "run",
            "--rm",
            "-v",
            "/proc:/hostproc",
            "busybox",
            "sh",
            "-c",
            &control,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        root.ok(&["exec", &victim, "cat", "/victim"]).trim(),
        "control"
    );
    root.ok(&["rm", "-f", &victim]);
}

#[test]
fn two_tasks_never_share_a_range_and_ranges_outlive_an_agent_restart() {
    let base = 1_700_000_000u64;
    let mut root = Root::with_agent_args(&["--userns-pool", &pool(base as u32)]);
    import(&root);
    let a = run_detached(&root, &["--userns", "auto", "busybox", "sleep", "1000"]);
    let spec = write_spec(
        &root,
        "shared",
        "name: shared\nhostUsers: false\nvolumes:\n- {name: scratch, emptyDir: {}}\ncontainers:\n\
         - {name: one, image: busybox, command: [sh, -c, 'touch /s/one; sleep 1000'], volumeMounts: [{name: scratch, mountPath: /s}]}\n\
         - {name: two, image: busybox, command: [sleep, '1000']}\n",
    );
    root.ok(&["pod", "run", &spec]);
    let pod = pod_json(&root, "shared");
    let pod_base = pod["idmap"]["uid"].as_u64().expect("the pod's range");
    let members: Vec<String> = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(members.len(), 2);
    // The pod's containers share its range and its user namespace.
    let ns: Vec<_> = members
        .iter()
        .map(|m| {
            assert_eq!(base_uid(&root, m), pod_base);
            std::fs::read_link(format!("/proc/{}/ns/user", pid(&root, m))).unwrap()
        })
        .collect();
    assert_eq!(ns[0], ns[1]);
    // Its emptyDir belongs to its root; what a container writes there has its host id.
    let pod_dir = root.path().join("pods").join(pod["id"].as_str().unwrap());
    wait_for("the pod's file", || {
        pod_dir.join("volumes/scratch/one").exists()
    });
    assert_eq!(
        owner(&pod_dir.join("volumes/scratch/one")).0 as u64,
        pod_base
    );
    let b = run_detached(&root, &["--userns", "auto", "busybox", "sleep", "1000"]);
    let ranges = [base_uid(&root, &a), pod_base, base_uid(&root, &b)];
    let mut distinct = ranges.to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{ranges:?}");
    for r in ranges {
        assert!(
            (base..base + 3 * 65_536).contains(&r) && (r - base) % 65_536 == 0,
            "{r}"
        );
    }
    // The pool is spent: a fourth is refused, saying why.
    let (code, _, err) = run(&root, &["run", "-d", "--userns", "auto", "busybox", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("no free user namespace range"), "{err}");
    // The agent restarts: the ranges are held again from the records, not handed out twice.
    root.stop_agent(libc::SIGTERM);
    root.start_agent(&["--userns-pool", &pool(base as u32)]);
    let (code, _, err) = run(&root, &["run", "-d", "--userns", "auto", "busybox", "true"]);
    assert_eq!(code, 125, "after a restart: {err}");
    // A range is free again once its holder is removed (not merely stopped).
    root.ok(&["stop", "-t", "0", &a]);
    let (code, _, _) = run(&root, &["run", "-d", "--userns", "auto", "busybox", "true"]);
    assert_eq!(code, 125, "a stopped container still holds its range");
    root.ok(&["rm", "-f", &a]);
    let c = run_detached(&root, &["--userns", "auto", "busybox", "sleep", "1000"]);
    assert_eq!(base_uid(&root, &c), ranges[0]);
    assert_eq!(base_uid(&root, &b), ranges[2]);
    let node: serde_json::Value = serde_json::from_str(&root.ok(&["node", "--json"])).unwrap();
    assert_eq!(node["userns"]["held"], 3, "{}", node["userns"]);
    root.ok(&["pod", "rm", "-f", "shared"]);
    root.ok(&["rm", "-f", &b, &c]);
}

#[test]
fn a_task_on_a_network_of_its_own_owns_its_network_namespace() {
    let root = Root::with_bridge(&["--userns-pool", &pool(1_800_000_000)]);
    import(&root);
    // Binding port 80 needs CAP_NET_BIND_SERVICE over the network namespace: only its
    // owner has that, so the namespace must belong to the task's user namespace.
    let (code, out, err) = run(
        &root,
        &[
            "run",
            "--rm",
            "--userns",
            "auto",
            "busybox",
            "sh",
            "-c",
            "nc -l -p 80 & for i in $(seq 100); do netstat -ltn | grep -q ':80 ' && break; sleep 0.1; done; \
             netstat -ltn | grep -c ':80 '; cat /proc/self/uid_map",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next().map(str::trim), Some("1"), "{out}");
    assert!(
        lines.next().unwrap_or_default().split_whitespace().nth(1) != Some("0"),
        "{out}"
    );
    // On the host's network the task cannot mount sysfs (it does not own that namespace):
    // the host's /sys is bound read-only.
    let (code, out, err) = run(
        &root,
        &[
            "run",
            "--rm",
            "--userns",
            "auto",
            "--network",
            "host",
            "busybox",
            "sh",
            "-c",
            "ls /sys/class/net | grep -c '^lo$'; touch /sys/x 2>/dev/null && echo writable; exit 0",
        ],
    );
    assert_eq!((code, out.trim()), (0, "1"), "{err}");
    // The agent's default for tasks that do not say, and a pod's hostUsers: true overriding it.
    let mut root = root;
    root.stop_agent(libc::SIGTERM);
    root.start_agent(&[
        "--userns-pool",
        &pool(1_800_000_000),
        "--userns-default",
        "auto",
    ]);
    let id = run_detached(&root, &["busybox", "sleep", "1000"]);
    assert!(inspect(&root, &id)["idmap"]["uid"].as_u64().is_some());
    let spec = write_spec(
        &root,
        "hosty",
        "name: hosty\nhostUsers: true\ncontainers:\n- {name: c, image: busybox, command: [sleep, '1000']}\n",
    );
    root.ok(&["pod", "run", &spec]);
    assert!(pod_json(&root, "hosty")["idmap"].is_null());
    root.ok(&["pod", "rm", "-f", "hosty"]);
    root.ok(&["rm", "-f", &id]);
}

#[test]
fn where_layers_cannot_be_idmapped_the_copied_rootfs_is_shifted() {
    // `--rootfs-copy` takes the path a file system without idmapped mounts takes: the
    // flattened copy with its owners shifted into the task's range.
    let root = Root::with_agent_args(&["--userns-pool", &pool(1_900_000_000), "--rootfs-copy"]);
    import(&root);
    let id = run_detached(&root, &["--userns", "auto", "busybox", "sleep", "1000"]);
    let base = base_uid(&root, &id) as u32;
    assert_image_owners_inside(&root, &id);
    let copy = root.path().join("containers").join(&id).join("rootfs");
    assert_eq!(owner(&copy.join("home/berth")), (base + 1000, base + 1000));
    assert_eq!(owner(&copy.join("bin/busybox")), (base, base));
    root.ok(&["exec", &id, "touch", "/written"]);
    assert_eq!(owner(&copy.join("written")), (base, base));
    root.ok(&["rm", "-f", &id]);
}
