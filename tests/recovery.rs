//! Restart without loss: the agent is killed (`kill -9`) or stopped (SIGTERM) with pods
//! running; on start it re-adopts every container, restarts none, reports what exited while
//! it was away with the real exit code and time, and tears down a pod it was starting.
//! Root only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::{events_json, import, wait_for, write_spec, Root};

fn ps_json(root: &Root) -> Vec<serde_json::Value> {
    serde_json::from_str(&root.ok(&["ps", "--format", "json"])).unwrap()
}

/// id → (status, pid)
fn snapshot(root: &Root) -> BTreeMap<String, (String, i64)> {
    ps_json(root)
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                (
                    c["status"].as_str().unwrap().to_string(),
                    c["pid"].as_i64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

#[test]
fn fifty_containers_in_ten_pods_survive_kill_9_of_the_agent() {
    let mut root = Root::new();
    import(&root);
    for p in 0..10 {
        let containers: Vec<String> = (0..5)
            .map(|c| format!("  - {{name: c{c}, image: busybox, command: [sleep, '1000']}}"))
            .collect();
        let spec = write_spec(
            &root,
            &format!("p{p}"),
            &format!(
                "name: p{p}\nrestartPolicy: Never\ncontainers:\n{}\n",
                containers.join("\n")
            ),
        );
        root.ok(&["pod", "run", &spec]);
    }
    let before = snapshot(&root);
    assert_eq!(before.len(), 50);
    assert!(before.values().all(|(s, pid)| s == "running" && *pid > 0));

    root.stop_agent(libc::SIGKILL);
    // While the agent is away, one container ends with a known code.
    let (victim, (_, victim_pid)) = before.iter().next().unwrap();
    let killed_at = chrono::Utc::now();
    // SAFETY: kill(2) on the pid of a container this test started.
    unsafe {
        libc::kill(*victim_pid as i32, libc::SIGKILL);
    }
    // Its supervisor records the exit (atomically) even with no agent to tell.
    let exit_file = root
        .path()
        .join("containers")
        .join(victim)
        .join("exit.json");
    wait_for("the exit record", || exit_file.exists());

    let began = Instant::now();
    root.start_agent(&[]);
    let after = snapshot(&root);
    let adopted_in = began.elapsed();
    assert_eq!(after.len(), 50, "no container lost");
    for (id, (status, pid)) in &after {
        if id == victim {
            assert_eq!(status, "stopped");
        } else {
            assert_eq!(
                (status.as_str(), *pid),
                ("running", before[id].1),
                "{id} re-adopted"
            );
        }
    }
    eprintln!("re-adopted 50 containers in {adopted_in:?}");
    let state = common::state(&root, victim);
    assert_eq!(state["exitCode"], 137);
    // Reported with the time it exited, not the time the agent noticed.
    let exited = || -> Option<serde_json::Value> {
        events_json(&root, "event=exited")
            .into_iter()
            .find(|e| e["id"] == victim.as_str())
    };
    wait_for("the missed exit's event", || exited().is_some());
    let ev = exited().unwrap();
    assert_eq!(ev["attributes"]["exitCode"], "137");
    let t = chrono::DateTime::parse_from_rfc3339(ev["time"].as_str().unwrap()).unwrap();
    let off = (t.with_timezone(&chrono::Utc) - killed_at)
        .num_milliseconds()
        .abs();
    assert!(off < 1000, "exit time {t} vs kill at {killed_at}");
    // Nothing was restarted (restartPolicy Never), nothing re-created.
    let pods: Vec<serde_json::Value> =
        serde_json::from_str(&root.ok(&["pod", "ls", "--format", "json"])).unwrap();
    assert_eq!(pods.len(), 10);
    let restarts: u64 = pods
        .iter()
        .flat_map(|p| p["members"].as_object().unwrap().values())
        .map(|s| s["restart_count"].as_u64().unwrap())
        .sum();
    assert_eq!(restarts, 0);
    assert!(!root.agent_log().contains("panicked"));

    // SIGTERM (systemctl restart) keeps them too, and exec still works.
    root.stop_agent(libc::SIGTERM);
    root.start_agent(&[]);
    let again = snapshot(&root);
    assert_eq!(again, after);
    // An upgrade: another executable (installed elsewhere, as a package would rename a new
    // one into place while the supervisors keep running the old one) adopts them all.
    let upgraded = root.path().join("upgrade/berth");
    std::fs::create_dir_all(upgraded.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_berth"), &upgraded).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_berth-monitor"),
        upgraded.with_file_name("berth-monitor"),
    )
    .unwrap();
    root.stop_agent(libc::SIGTERM);
    root.start_agent_from(&upgraded, &[]);
    assert_eq!(snapshot(&root), after);
    let some = after.keys().find(|id| *id != victim).unwrap();
    assert_eq!(
        root.ok(&["exec", some, "echo", "still-here"]),
        "still-here\n"
    );
}

#[test]
fn a_pod_caught_half_started_is_torn_down_and_bad_state_files_are_skipped() {
    let mut root = Root::new();
    import(&root);
    // The init container keeps the pod in `starting` while the agent is killed.
    let spec = write_spec(
        &root,
        "slow",
        r#"
name: slow
volumes: [{name: v, emptyDir: {}}]
initContainers: [{name: wait, image: busybox, command: [sleep, "1000"]}]
containers: [{name: app, image: busybox, command: [sleep, "1000"]}]
"#,
    );
    let mut run = root
        .cmd(&["pod", "run", &spec])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the init container", || {
        ps_json(&root).iter().any(|c| c["status"] == "running")
    });
    root.stop_agent(libc::SIGKILL);
    let _ = run.wait();
    // A corrupt pod record and a container record from a future version.
    let junk = root.path().join("pods").join("f".repeat(64));
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("pod.json"), b"{\"version\": 1, \"id\": ").unwrap();
    let future = root.path().join("containers").join("e".repeat(64));
    std::fs::create_dir_all(&future).unwrap();
    std::fs::write(future.join("container.json"), br#"{"version": 99}"#).unwrap();

    root.start_agent(&[]);
    wait_for("the half-started pod to go", || {
        root.ok(&["pod", "ls", "-q"]).trim().is_empty() && ps_json(&root).is_empty()
    });
    let log = root.agent_log();
    assert!(
        log.contains("removing a pod the agent was starting"),
        "{log}"
    );
    assert!(log.contains("unsupported version 99"), "{log}");
    assert!(
        log.contains("skipping a pod whose state cannot be read"),
        "{log}"
    );
    assert!(root.mounts().is_empty(), "{:?}", root.mounts());
    assert!(
        root.container_cgroups().is_empty(),
        "{:?}",
        root.container_cgroups()
    );
    let events = root.ok(&["events", "--until", "0s", "--filter", "type=pod", "--json"]);
    assert!(
        events.contains("agent stopped while starting the pod"),
        "{events}"
    );
    std::fs::remove_dir_all(junk).unwrap();
    std::fs::remove_dir_all(future).unwrap();
}

#[test]
fn a_restart_due_during_an_agent_outage_still_happens() {
    let mut root = Root::with_agent_args(&["--restart-backoff", "5s"]);
    import(&root);
    let spec = write_spec(
        &root,
        "crashy",
        "name: crashy\ncontainers: [{name: c, image: busybox, command: [sh, -c, 'sleep 0.2; exit 1']}]\n",
    );
    root.ok(&["pod", "run", &spec]);
    wait_for("the crash", || {
        !events_json(&root, "event=backoff").is_empty()
    });
    // Killed in the middle of the 5 s back-off: the new agent must not forget the restart.
    root.stop_agent(libc::SIGKILL);
    root.start_agent(&["--restart-backoff", "100ms"]);
    wait_for("the restart", || {
        !events_json(&root, "event=restarted").is_empty()
    });
    let p: serde_json::Value =
        serde_json::from_str(&root.ok(&["pod", "inspect", "crashy"])).unwrap();
    assert!(p["members"]["c"]["restart_count"].as_u64().unwrap() >= 1);
    assert_eq!(p["phase"], "running");
}

/// `kill -9` of the agent while clients create: afterwards every client told its id finds its
/// container, every create cut short before its answer is removed at start, and no
/// half-made directory is left. A container whose answer the agent sent just before it died
/// (its client saw the connection drop) is kept: the one ambiguity every create API has
/// when the server dies mid-reply, and the safe side of it.
#[test]
fn creates_cut_short_by_kill_9_leave_only_answered_containers() {
    let mut root = Root::new();
    import(&root);
    let clients: Vec<(String, std::process::Child)> = (0..12)
        .map(|i| {
            let name = format!("cut{i}");
            let child = root
                .cmd(&["create", "--name", &name, "busybox", "sleep", "100"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (name, child)
        })
        .collect();
    // Kill the agent in the middle: once the first container directory exists.
    wait_for("a create under way", || {
        common::containers_dir_entries(&root) > 0
    });
    root.stop_agent(libc::SIGKILL);
    let mut answered = Vec::new();
    for (name, child) in clients {
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            answered.push(name);
        }
    }
    root.start_agent(&[]);
    let pending = |root: &Root| {
        std::fs::read_dir(root.path().join("containers"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("create.pending").exists())
                    .count()
            })
            .unwrap_or(0)
    };
    let mut listed = Vec::new();
    let mut dirs = 0;
    let settled = common::poll_until(|| {
        listed = ps_json(&root)
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        dirs = common::containers_dir_entries(&root);
        pending(&root) == 0 && dirs == listed.len()
    });
    assert!(
        settled,
        "unanswered creates not removed: {} still pending; the agent lists {listed:?} with {dirs} container directories",
        pending(&root)
    );
    for name in &answered {
        assert!(
            listed.contains(name),
            "{name} was answered but is gone; the agent lists {listed:?}"
        );
    }
    assert!(
        listed.len() < 12,
        "every create finished before the kill: the test did not cut any short"
    );
}
