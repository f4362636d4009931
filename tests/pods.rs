//! Pods through the real agent: shared namespaces and volumes, init containers, restart
//! policy with back-off, QoS cgroups and admission, spec errors, roll-back, and recovery of
//! 50 containers after `kill -9` of the agent. Root only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    cgroup_dirs, events_json, import, member, pod_json, pods_dir_entries, wait_for, write_spec,
    Root,
};

#[test]
fn containers_of_a_pod_share_localhost_a_volume_and_a_hostname() {
    let root = Root::new();
    import(&root);
    let spec = write_spec(
        &root,
        "web",
        r#"
name: web
volumes:
  - {name: shared, emptyDir: {}}
containers:
  - name: server
    image: busybox
    command: [sh, -c, "echo hello-from-server > /www/index.html; exec httpd -f -p 8080 -h /www"]
    volumeMounts: [{name: shared, mountPath: /www}]
  - name: client
    image: busybox
    command: [sh, -c, "until wget -q -O /data/got http://127.0.0.1:8080/index.html; do sleep 0.1; done; hostname > /data/host.tmp; mv /data/host.tmp /data/host; exec sleep 1000"]
    volumeMounts: [{name: shared, mountPath: /data}]
"#,
    );
    let id = root.ok(&["pod", "run", &spec]).trim().to_string();
    assert_eq!(id.len(), 64);
    let volume = root.path().join("pods").join(&id).join("volumes/shared");
    wait_for("the client's download", || volume.join("host").exists());
    assert_eq!(
        std::fs::read_to_string(volume.join("got")).unwrap().trim(),
        "hello-from-server"
    );
    assert_eq!(
        std::fs::read_to_string(volume.join("host")).unwrap().trim(),
        "web"
    );

    // Same network namespace, own mount namespaces; best-effort QoS cgroup tree.
    let server = member(&root, "web", "server");
    let client = member(&root, "web", "client");
    let pid = |id: &str| common::state(&root, id)["pid"].as_i64().unwrap();
    let ns = |pid: i64, n: &str| std::fs::read_link(format!("/proc/{pid}/ns/{n}")).unwrap();
    let (a, b) = (pid(&server), pid(&client));
    for n in ["net", "ipc", "uts"] {
        assert_eq!(ns(a, n), ns(b, n), "{n} shared");
    }
    assert_ne!(ns(a, "mnt"), ns(b, "mnt"));
    assert_ne!(ns(a, "net"), ns(std::process::id() as i64, "net"));
    let pod_cg = root.cgroup_root.join("besteffort").join(&id);
    assert!(!cgroup_dirs(&pod_cg.join(&server)).is_empty());
    let shares = cgroup_dirs(&pod_cg)
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("cpu.shares")).ok());
    if let Some(s) = shares {
        assert_eq!(s.trim(), "2");
    }

    let ls = root.ok(&["pod", "ls"]);
    assert!(
        ls.contains("web") && ls.contains("running") && ls.contains("2/2"),
        "{ls}"
    );
    let ps = root.ok(&["ps"]);
    assert!(
        ps.lines().filter(|l| l.contains(" web ")).count() == 2,
        "{ps}"
    );

    // A pod's container goes with its pod, not alone.
    let err = root.fails(&["rm", "-f", &client]);
    assert!(err.contains("belongs to pod web"), "{err}");
    assert_eq!(common::state(&root, &client)["status"], "running");

    root.ok(&["pod", "stop", "-t", "1", "web"]);
    assert_eq!(pod_json(&root, "web")["phase"], "stopped");
    root.ok(&["pod", "rm", "web"]);
    assert_eq!(pods_dir_entries(&root), 0);
    assert!(root.mounts().is_empty(), "{:?}", root.mounts());
    assert!(root.container_cgroups().is_empty());
    assert_eq!(common::containers_dir_entries(&root), 0);
}

#[test]
fn init_containers_run_in_order_before_the_app() {
    let root = Root::new();
    import(&root);
    let spec = write_spec(
        &root,
        "init",
        r#"
name: init
restartPolicy: Never
volumes: [{name: v, emptyDir: {}}]
initContainers:
  - {name: first, image: busybox, command: [sh, -c, "sleep 0.3; echo first >> /v/order"], volumeMounts: [{name: v, mountPath: /v}]}
  - {name: second, image: busybox, command: [sh, -c, "echo second >> /v/order"], volumeMounts: [{name: v, mountPath: /v}]}
containers:
  - {name: app, image: busybox, command: [sh, -c, "echo app >> /v/order; cat /v/order"], volumeMounts: [{name: v, mountPath: /v}]}
"#,
    );
    root.ok(&["pod", "run", &spec]);
    wait_for("the pod to succeed", || {
        pod_json(&root, "init")["phase"] == "succeeded"
    });
    let app = member(&root, "init", "app");
    assert_eq!(root.ok(&["logs", &app]), "first\nsecond\napp\n");
    let p = pod_json(&root, "init");
    for init in ["first", "second"] {
        assert_eq!(p["members"][init]["done"], true);
    }

    // A failing init container with restartPolicy Never: the pod is rolled back.
    let bad = write_spec(
        &root,
        "badinit",
        r#"
name: badinit
restartPolicy: Never
initContainers: [{name: fails, image: busybox, command: [sh, -c, "exit 4"]}]
containers: [{name: app, image: busybox, command: [sleep, "100"]}]
"#,
    );
    let err = root.fails(&["pod", "run", &bad]);
    assert!(
        err.contains("init container fails exited with code 4"),
        "{err}"
    );
    assert!(root
        .fails(&["pod", "inspect", "badinit"])
        .contains("no such pod"));
    assert_eq!(pods_dir_entries(&root), 1);
}

#[test]
fn restart_policy_restarts_with_a_growing_back_off() {
    let root = Root::with_agent_args(&["--restart-backoff", "200ms"]);
    import(&root);
    // Fails twice, then succeeds: OnFailure restarts it twice, then the pod has succeeded.
    let spec = write_spec(
        &root,
        "flaky",
        r#"
name: flaky
restartPolicy: OnFailure
volumes: [{name: v, emptyDir: {}}]
containers:
  - name: job
    image: busybox
    command: [sh, -c, "echo run >> /v/runs; [ $(wc -l < /v/runs) -ge 3 ]"]
    volumeMounts: [{name: v, mountPath: /v}]
"#,
    );
    let began = Instant::now();
    root.ok(&["pod", "run", &spec]);
    wait_for("the pod to succeed", || {
        pod_json(&root, "flaky")["phase"] == "succeeded"
    });
    // Back-offs of 200 ms and 400 ms.
    assert!(began.elapsed() >= Duration::from_millis(600));
    let p = pod_json(&root, "flaky");
    assert_eq!(p["members"]["job"]["restart_count"], 2);
    assert_eq!(
        p["containers"].as_array().unwrap().len(),
        1,
        "old instances removed"
    );
    let ls = root.ok(&["pod", "ls"]);
    assert!(ls.contains("succeeded"), "{ls}");
    let evs = events_json(&root, "pod=flaky");
    let restarted: Vec<_> = evs.iter().filter(|e| e["action"] == "restarted").collect();
    assert_eq!(restarted.len(), 2, "{evs:?}");
    let t = |e: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).unwrap()
    };
    let exits: Vec<_> = evs.iter().filter(|e| e["action"] == "exited").collect();
    assert_eq!(exits.len(), 3, "{evs:?}");
    assert_eq!(exits[0]["attributes"]["exitCode"], "1");
    // The second back-off is longer than the first.
    let gap1 = t(restarted[0]) - t(exits[0]);
    let gap2 = t(restarted[1]) - t(exits[1]);
    assert!(gap1.num_milliseconds() >= 200, "{gap1}");
    assert!(gap2.num_milliseconds() >= 400, "{gap2}");

    // Always: a container that exits 0 is restarted too, also when it ends while the
    // pod's next container is still starting.
    let spec = write_spec(
        &root,
        "always",
        "name: always\ncontainers: [{name: c, image: busybox, command: [true]}, \
         {name: d, image: busybox, command: [sleep, '100']}]\n",
    );
    root.ok(&["pod", "run", &spec]);
    wait_for("a restart", || {
        pod_json(&root, "always")["members"]["c"]["restart_count"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    root.ok(&["pod", "rm", "-f", "always"]);
}

#[test]
fn qos_classes_place_cgroups_and_admission_refuses_what_does_not_fit() {
    let root = Root::with_agent_args(&["--system-reserved-cpu", "500m"]);
    import(&root);
    let spec = write_spec(
        &root,
        "g",
        r#"
name: g
containers:
  - {name: a, image: busybox, command: [sleep, "100"], resources: {limits: {cpu: 250m, memory: 32Mi}}}
  - {name: b, image: busybox, command: [sleep, "100"], resources: {limits: {cpu: 250m, memory: 32Mi}}}
"#,
    );
    let id = root.ok(&["pod", "run", &spec]).trim().to_string();
    assert_eq!(pod_json(&root, "g")["qos"], "guaranteed");
    let pod_cg = root.cgroup_root.join("guaranteed").join(&id);
    let a = member(&root, "g", "a");
    let read = |cg: &Path, file: &str| -> Option<String> {
        cgroup_dirs(cg)
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .map(|s| s.trim().to_string())
    };
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert_eq!(read(&pod_cg, "cpu.max").unwrap(), "50000 100000");
        assert_eq!(
            read(&pod_cg, "memory.max").unwrap(),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(&pod_cg.join(&a), "cpu.max").unwrap(), "25000 100000");
    } else {
        assert_eq!(read(&pod_cg, "cpu.cfs_quota_us").unwrap(), "50000");
        assert_eq!(
            read(&pod_cg, "memory.limit_in_bytes").unwrap(),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(&pod_cg, "cpu.shares").unwrap(), "512");
        assert_eq!(read(&pod_cg.join(&a), "cpu.cfs_quota_us").unwrap(), "25000");
        assert_eq!(
            read(&pod_cg.join(&a), "memory.limit_in_bytes").unwrap(),
            (32u64 << 20).to_string()
        );
        let besteffort = root.cgroup_root.join("besteffort");
        assert_eq!(read(&besteffort, "cpu.shares").unwrap(), "2");
    }
    // The container's processes are in its cgroup below the pod's.
    let pid = common::state(&root, &a)["pid"].as_i64().unwrap();
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.contains(&format!("guaranteed/{id}/{a}")), "{own}");

    // Burstable: requests without limits.
    let spec = write_spec(
        &root,
        "b",
        "name: b\ncontainers: [{name: c, image: busybox, command: [sleep, '100'], resources: {requests: {cpu: 100m}}}]\n",
    );
    let bid = root.ok(&["pod", "run", &spec]).trim().to_string();
    assert_eq!(pod_json(&root, "b")["qos"], "burstable");
    assert!(!cgroup_dirs(&root.cgroup_root.join("burstable").join(&bid)).is_empty());

    // More CPU than the node has left after the reserve: refused, nothing made.
    let spec = write_spec(
        &root,
        "huge",
        "name: huge\ncontainers: [{name: c, image: busybox, command: [sleep, '1'], resources: {requests: {cpu: '64'}}}]\n",
    );
    let before = pods_dir_entries(&root);
    let err = root.fails(&["pod", "run", &spec]);
    assert!(err.contains("insufficient cpu"), "{err}");
    assert_eq!(pods_dir_entries(&root), before);
    let spec = write_spec(
        &root,
        "fat",
        "name: fat\ncontainers: [{name: c, image: busybox, command: [sleep, '1'], resources: {requests: {memory: 100Ti}}}]\n",
    );
    assert!(root
        .fails(&["pod", "run", &spec])
        .contains("insufficient memory"));
    // A best-effort pod is always admitted.
    let spec = write_spec(
        &root,
        "be",
        "name: be\ncontainers: [{name: c, image: busybox, command: [sleep, '100']}]\n",
    );
    root.ok(&["pod", "run", &spec]);
    for p in ["g", "b", "be"] {
        root.ok(&["pod", "rm", "-f", p]);
    }
    assert!(root.container_cgroups().is_empty());
}

#[test]
fn spec_errors_name_the_field_and_start_nothing() {
    let root = Root::new();
    import(&root);
    let cases = [
        (
            "name: d\ncontainers: [{name: c, image: busybox}, {name: c, image: busybox}]\n",
            "containers[1].name: duplicate container name",
        ),
        (
            "name: m\ncontainers: [{name: c, image: nosuchimage}]\n",
            "containers[0].image: no such image: nosuchimage",
        ),
        (
            "name: q\ncontainers: [{name: c, image: busybox, resources: {limits: {cpu: 1.5x}}}]\n",
            "containers[0].resources.limits.cpu: invalid cpu quantity \"1.5x\"",
        ),
        (
            "name: v\ncontainers: [{name: c, image: busybox, volumeMounts: [{name: data, mountPath: /d}]}]\n",
            "containers[0].volumeMounts[0].name: volume \"data\" is not declared",
        ),
        (
            "name: u\ncontainers: [{name: c, image: busybox, bogus: 1}]\n",
            "unknown field `bogus`",
        ),
        ("name: e\ncontainers: []\n", "containers: a pod needs at least one container"),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let spec = write_spec(&root, &format!("case{i}"), yaml);
        let err = root.fails(&["pod", "run", "--pull", "never", &spec]);
        assert!(err.contains(want), "{yaml}: {err}");
    }
    assert_eq!(pods_dir_entries(&root), 0);
    assert_eq!(common::containers_dir_entries(&root), 0);
    assert!(root.ok(&["pod", "ls", "-q"]).is_empty());
    // The same name twice.
    let spec = write_spec(
        &root,
        "ok",
        "name: twice\ncontainers: [{name: c, image: busybox, command: [sleep, '100']}]\n",
    );
    root.ok(&["pod", "run", &spec]);
    assert!(root
        .fails(&["pod", "run", &spec])
        .contains("already in use"));
    root.ok(&["pod", "rm", "-f", "twice"]);
}

#[test]
fn a_container_that_cannot_start_rolls_the_whole_pod_back() {
    let root = Root::new();
    import(&root);
    let spec = write_spec(
        &root,
        "half",
        r#"
name: half
volumes: [{name: v, emptyDir: {}}]
containers:
  - {name: good, image: busybox, command: [sleep, "100"], volumeMounts: [{name: v, mountPath: /v}]}
  - {name: bad, image: busybox, command: [/no/such/command]}
"#,
    );
    let err = root.fails(&["pod", "run", &spec]);
    assert!(
        err.contains("container bad") && err.contains("/no/such/command"),
        "{err}"
    );
    assert_eq!(pods_dir_entries(&root), 0);
    assert_eq!(common::containers_dir_entries(&root), 0);
    assert!(root.mounts().is_empty(), "{:?}", root.mounts());
    assert!(
        root.container_cgroups().is_empty(),
        "{:?}",
        root.container_cgroups()
    );
    let events = root.ok(&["events", "--until", "0s", "--filter", "type=pod"]);
    assert!(
        events.contains("pod failed") || events.contains(" failed "),
        "{events}"
    );
}

#[test]
fn a_shared_pid_namespace_has_berths_init_as_pid_1() {
    let root = Root::new();
    import(&root);
    let spec = write_spec(
        &root,
        "pidns",
        r#"
name: pidns
shareProcessNamespace: true
containers:
  - {name: a, image: busybox, command: [sleep, "100"]}
  - {name: b, image: busybox, command: [sleep, "100"]}
"#,
    );
    root.ok(&["pod", "run", &spec]);
    let a = member(&root, "pidns", "a");
    // b sees a's sleep and PID 1, which is not a container process.
    let ps = root.ok(&["exec", &a, "ps", "-o", "pid,args"]);
    let sleeps = ps.lines().filter(|l| l.contains("sleep 100")).count();
    assert_eq!(sleeps, 2, "{ps}");
    assert!(ps.lines().any(|l| l.trim_start().starts_with("1 ")), "{ps}");
    let init = pod_json(&root, "pidns")["pod_init_pid"].as_i64().unwrap();
    assert!(Path::new(&format!("/proc/{init}")).exists());
    root.ok(&["pod", "rm", "-f", "pidns"]);
    wait_for("the pod init to end", || {
        !Path::new(&format!("/proc/{init}")).exists()
            || std::fs::read_to_string(format!("/proc/{init}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
}

#[test]
fn a_memory_volume_is_one_tmpfs_shared_by_the_pod() {
    let root = Root::new();
    import(&root);
    let spec = write_spec(
        &root,
        "mem",
        r#"
name: mem
volumes: [{name: scratch, emptyDir: {medium: Memory, sizeLimit: 1Mi}}]
containers:
  - {name: writer, image: busybox, command: [sh, -c, "echo shared > /s/file; exec sleep 1000"], volumeMounts: [{name: scratch, mountPath: /s}]}
  - {name: reader, image: busybox, command: [sleep, "1000"], volumeMounts: [{name: scratch, mountPath: /r, readOnly: true}]}
"#,
    );
    let id = root.ok(&["pod", "run", &spec]).trim().to_string();
    let reader = member(&root, "mem", "reader");
    wait_for("the file", || {
        common::run_code(&root, &["exec", &reader, "cat", "/r/file"]).1 == "shared\n"
    });
    let df = root.ok(&["exec", &reader, "df", "-k", "/r"]);
    assert!(df.contains("tmpfs") && df.contains(" 1024 "), "{df}");
    let (code, _, _) = common::run_code(&root, &["exec", &reader, "touch", "/r/x"]);
    assert_ne!(code, 0, "read-only mount");
    let volume = root.path().join("pods").join(&id).join("volumes/scratch");
    assert!(root.mounts().iter().any(|m| Path::new(m) == volume));
    root.ok(&["pod", "rm", "-f", "mem"]);
    assert!(root.mounts().is_empty(), "{:?}", root.mounts());
    assert_eq!(pods_dir_entries(&root), 0);
}

#[test]
fn memory_pressure_evicts_best_effort_then_burstable_never_guaranteed() {
    let mut root = Root::new();
    import(&root);
    for (name, resources) in [
        ("be", ""),
        ("bu", ", resources: {requests: {memory: 8Mi}}"),
        ("gu", ", resources: {limits: {cpu: 100m, memory: 32Mi}}"),
    ] {
        let spec = write_spec(
            &root,
            name,
            &format!(
                "name: {name}\ncontainers: [{{name: c, image: busybox, command: [sleep, '1000']{resources}}}]\n"
            ),
        );
        root.ok(&["pod", "run", &spec]);
    }
    // The same pods under an agent that sees pressure everywhere (threshold above any
    // machine's memory): one eviction per second, in QoS order.
    root.stop_agent(libc::SIGTERM);
    root.start_agent(&["--eviction-memory-available", "1000Ti"]);
    wait_for("two evictions", || {
        events_json(&root, "type=pod,event=evicted").len() == 2
    });
    std::thread::sleep(Duration::from_millis(1500));
    let evicted: Vec<String> = events_json(&root, "type=pod,event=evicted")
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(evicted, ["be", "bu"]);
    for p in ["be", "bu"] {
        let j = pod_json(&root, p);
        assert_eq!(j["phase"], "failed");
        assert!(j["message"].as_str().unwrap().starts_with("evicted"));
        let c = member(&root, p, "c");
        wait_for("the evicted container to stop", || {
            common::state(&root, &c)["status"] == "stopped"
        });
        assert_eq!(pod_json(&root, p)["members"]["c"]["restart_count"], 0);
    }
    assert_eq!(pod_json(&root, "gu")["phase"], "running");
    let reasons = events_json(&root, "type=container,event=evicted");
    assert!(reasons
        .iter()
        .all(|e| e["attributes"]["reason"] == "memory-pressure"));
}
