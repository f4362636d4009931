//! The agent's owner never waits: a container whose supervisor hangs at start (made to by
//! the `BERTH_FAULT_STALL_START` fault-injection variable) leaves every other verb
//! answering, and can itself be removed with `rm -f`, which undoes its create.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{import, run_detached, state, wait_for, write_spec, Root};

/// The create in flight has made its state dir and record: its supervisor is starting.
fn record_named(root: &Root, name: &str) -> bool {
    std::fs::read_dir(root.path().join("containers"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read_to_string(e.path().join("container.json"))
                .is_ok_and(|t| t.contains(&format!("\"name\": \"{name}\"")))
        })
}

#[test]
fn a_supervisor_hung_at_start_blocks_no_other_verb_and_rm_f_undoes_it() {
    let mut root = Root::new();
    import(&root);
    root.stop_agent(libc::SIGTERM);
    root.start_agent_with(
        Path::new(env!("CARGO_BIN_EXE_berth")),
        &[],
        &[("BERTH_FAULT_STALL_START", "stuck")],
    );
    let mut stuck = root
        .cmd(&["create", "--name", "stuck", "busybox", "sleep", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the stuck create to reach its supervisor", || {
        record_named(&root, "stuck")
    });
    // Everything else answers while that create waits (it would for 60 s).
    let began = Instant::now();
    root.ok(&["ps"]);
    let other = run_detached(&root, &["--name", "other", "busybox", "sleep", "100"]);
    assert_eq!(state(&root, &other)["status"], "running");
    assert_eq!(root.ok(&["run", "--rm", "busybox", "echo", "hi"]), "hi\n");
    assert_eq!(root.ok(&["exec", &other, "echo", "in"]), "in\n");
    let spec = write_spec(
        &root,
        "p",
        "name: p\ncontainers: [{name: c, image: busybox, command: [sleep, '100']}]\n",
    );
    root.ok(&["pod", "run", &spec]);
    root.ok(&["pod", "rm", "-f", "p"]);
    // The name is taken while it is being created.
    let err = root.fails(&["create", "--name", "stuck", "busybox", "true"]);
    assert!(err.contains("already in use"), "{err}");
    assert!(
        stuck.try_wait().unwrap().is_none(),
        "the stuck create ended early"
    );
    assert!(
        began.elapsed() < Duration::from_secs(50),
        "verbs waited on the stuck create"
    );

    // rm -f cancels it: the create's client hears why, nothing of it is left.
    root.ok(&["rm", "-f", "stuck"]);
    let out = stuck.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("removed while being created"), "{err}");
    assert!(!record_named(&root, "stuck"), "the state dir was left");
    root.ok(&["rm", "-f", &other]);
    assert!(root.mounts().is_empty(), "{:?}", root.mounts());
    assert!(
        root.container_cgroups().is_empty(),
        "{:?}",
        root.container_cgroups()
    );
    let ps = root.ok(&["ps"]);
    assert!(!ps.contains("stuck"), "{ps}");
}

/// Makes `file` unwritable by the agent's atomic writer: a directory in its place makes the
/// final rename fail (EISDIR), as a full or broken disk would.
fn break_record(file: &Path) {
    std::fs::remove_file(file).unwrap();
    std::fs::create_dir(file).unwrap();
}

fn mend_record(file: &Path) {
    std::fs::remove_dir(file).unwrap();
}

#[test]
fn a_failed_state_write_is_an_error_for_the_caller_and_an_event_and_the_agent_serves_on() {
    let root = Root::new();
    import(&root);
    // A container with a restart policy: `stop` records that the operator holds it off.
    let id = run_detached(&root, &["--restart", "always", "busybox", "sleep", "100"]);
    let record = root
        .path()
        .join("containers")
        .join(&id)
        .join("container.json");
    break_record(&record);
    let err = root.fails(&["stop", "-t", "1", &id]);
    assert!(err.contains("recording an operator's stop"), "{err}");
    let events = common::events_json(&root, "type=container,event=error");
    assert!(
        events.iter().any(|e| e["id"] == id.as_str()
            && e["attributes"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("recording an operator's stop"))),
        "{events:?}"
    );
    // The agent serves on, and the container can still be removed.
    root.ok(&["ps"]);
    mend_record(&record);
    root.ok(&["rm", "-f", &id]);

    // A pod whose record cannot be written: its stop is an error, and a `pod error` event.
    let spec = write_spec(
        &root,
        "w",
        "name: w\ncontainers: [{name: c, image: busybox, command: [sleep, '100']}]\n",
    );
    root.ok(&["pod", "run", &spec]);
    let pod_id = common::pod_json(&root, "w")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pod_record = root.path().join("pods").join(&pod_id).join("pod.json");
    break_record(&pod_record);
    let err = root.fails(&["pod", "stop", "-t", "1", "w"]);
    assert!(err.contains("could not be written"), "{err}");
    let events = common::events_json(&root, "type=pod,event=error");
    assert!(
        events.iter().any(|e| e["id"] == pod_id.as_str()),
        "{events:?}"
    );
    // In memory it is stopped: the agent goes on from there.
    assert_eq!(common::pod_json(&root, "w")["phase"], "stopped");
    mend_record(&pod_record);
    root.ok(&["pod", "rm", "-f", "w"]);
    assert!(root.container_cgroups().is_empty());
}
