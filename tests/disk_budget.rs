//! Disk budgets per task where the file system keeps no project quotas (this host's kernel
//! has no CONFIG_QUOTA; the kernel-enforced path runs in the cgroup v2 VM lane,
//! `tests/vm_v2.rs`): use is measured, a task past its budget is evicted with the reason
//! `disk-limit` while the others run on, and `stats` and `node` show use per task.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use common::{
    events_json, import, pod_json, run_code as run, run_detached, wait_for, write_spec, Root,
};

fn state(root: &Root, id: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&root.ok(&["inspect", id])).unwrap();
    if v.is_array() {
        v[0].clone()
    } else {
        v
    }
}

#[test]
fn a_task_past_its_budget_is_evicted_and_the_others_run_on() {
    let root = Root::with_agent_args(&["--disk-check-interval", "1s"]);
    import(&root);
    let node: serde_json::Value = serde_json::from_str(&root.ok(&["node", "--json"])).unwrap();
    assert_eq!(node["disk"]["enforcement"], "measured", "{}", node["disk"]);
    // 20 MB written against a budget of 8 MiB; a neighbour writes 4 MB of its 64 MiB.
    let hog = run_detached(
        &root,
        &[
            "--storage-opt",
            "size=8m",
            "busybox",
            "sh",
            "-c",
            "dd if=/dev/zero of=/fill bs=1M count=20 2>/dev/null; sleep 1000",
        ],
    );
    let calm = run_detached(
        &root,
        &[
            "--storage-opt",
            "size=64m",
            "busybox",
            "sh",
            "-c",
            "dd if=/dev/zero of=/fill bs=1M count=4 2>/dev/null; sleep 1000",
        ],
    );
    wait_for("the hog's eviction", || {
        state(&root, &hog)["exit"]["reason"].as_str() == Some("disk-limit")
    });
    let ev = events_json(&root, "type=container,event=evicted");
    assert!(
        ev.iter()
            .any(|e| e["id"] == hog.as_str() && e["attributes"]["reason"] == "disk-limit"),
        "{ev:?}"
    );
    // Its restart policy does not bring it back, and the neighbour runs on with its use shown.
    assert_eq!(state(&root, &hog)["status"], "stopped");
    wait_for("the neighbour's use measured", || {
        state(&root, &calm)["disk"]["used"].as_u64().unwrap_or(0) >= 4 << 20
    });
    assert_eq!(state(&root, &calm)["status"], "running");
    let stats: serde_json::Value =
        serde_json::from_str(&root.ok(&["stats", "--json", &calm])).unwrap();
    assert_eq!(stats["disk"]["limit"], 64u64 << 20, "{stats}");
    assert!(
        stats["disk"]["used"].as_u64().unwrap() >= 4 << 20,
        "{stats}"
    );
    assert!(root.ok(&["stats", &calm]).contains("DISK "));
    let node: serde_json::Value = serde_json::from_str(&root.ok(&["node", "--json"])).unwrap();
    let tasks = node["disk"]["tasks"].as_array().unwrap();
    assert!(
        tasks
            .iter()
            .any(|t| t["id"] == calm.as_str() && t["used"].as_u64().unwrap() >= 4 << 20),
        "{tasks:?}"
    );
    assert!(root.ok(&["node"]).contains("Disk per task: measured"));
    // The agent and the image store keep working.
    let (code, _, err) = run(&root, &["run", "--rm", "busybox", "true"]);
    assert_eq!(code, 0, "{err}");
    root.ok(&["images"]);

    // A pod: its emptyDir is over the sum of its containers' limits: the pod is evicted.
    let spec = write_spec(
        &root,
        "filler",
        "name: filler\nrestartPolicy: Always\nvolumes:\n- {name: scratch, emptyDir: {}}\ncontainers:\n\
         - name: w\n  image: busybox\n  command: [sh, -c, 'dd if=/dev/zero of=/s/fill bs=1M count=16 2>/dev/null; sleep 1000']\n  \
         volumeMounts: [{name: scratch, mountPath: /s}]\n  resources: {limits: {ephemeral-storage: 6Mi}}\n",
    );
    root.ok(&["pod", "run", &spec]);
    wait_for("the pod's eviction", || {
        pod_json(&root, "filler")["phase"] == "failed"
    });
    let pod = pod_json(&root, "filler");
    assert!(pod["message"].as_str().unwrap().contains("budget"), "{pod}");
    assert_eq!(pod["disk"]["limit"], 6u64 << 20);
    let ev = events_json(&root, "type=pod,event=evicted");
    assert!(
        ev.iter()
            .any(|e| e["action"] == "evicted" && e["attributes"]["reason"] == "disk-limit"),
        "{ev:?}"
    );
    root.ok(&["pod", "rm", "-f", "filler"]);
    root.ok(&["rm", "-f", &hog, &calm]);
}

#[test]
fn bad_budgets_are_refused_before_anything_is_made() {
    let root = Root::new();
    import(&root);
    for (opt, want) in [
        ("size=lots", "--storage-opt size"),
        ("quota=1g", "expected size=SIZE"),
    ] {
        let (code, _, err) = run(&root, &["run", "--storage-opt", opt, "busybox", "true"]);
        assert_eq!(code, 125, "{opt}: {err}");
        assert!(err.contains(want), "{opt}: {err}");
    }
    let spec = write_spec(
        &root,
        "bad",
        "name: bad\ncontainers:\n- {name: c, image: busybox, resources: {limits: {ephemeral-storage: '-1'}}}\n",
    );
    let err = root.fails(&["pod", "run", &spec]);
    assert!(
        err.contains("containers[0].resources.limits.ephemeral-storage"),
        "{err}"
    );
    assert_eq!(common::containers_dir_entries(&root), 0);
}
