//! Pods through the real agent: shared namespaces and volumes, init containers, restart
//! policy with back-off, QoS cgroups and admission, spec errors, roll-back, and recovery of
//! 50 containers after `kill -9` of the agent. Root only.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{cgroup_dirs, import, wait_for, Root};

fn write_spec(root: &Root, name: &str, yaml: &str) -> String {
    let path = root.path().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

fn pod_json(root: &Root, pod: &str) -> serde_json::Value {
    serde_json::from_str(&root.ok(&["pod", "inspect", pod])).unwrap()
}

/// Id of the current container of slot `name`.
fn member(root: &Root, pod: &str, name: &str) -> String {
    pod_json(root, pod)["record"]["containers"][name]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn pods_dir_entries(root: &Root) -> usize {
    std::fs::read_dir(root.path().join("pods"))
        .map(|d| d.count())
        .unwrap_or(0)
}

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
    command: [sh, -c, "until wget -q -O /data/got http://127.0.0.1:8080/index.html; do sleep 0.1; done; hostname > /data/host; exec sleep 1000"]
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
    assert_eq!(std::fs::read_to_string(volume.join("host")).unwrap().trim(), "web");

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
    assert!(ls.contains("web") && ls.contains("running") && ls.contains("2/2"), "{ls}");
    let ps = root.ok(&["ps"]);
    assert!(ps.lines().filter(|l| l.contains(" web ")).count() == 2, "{ps}");

    root.ok(&["pod", "stop", "-t", "1", "web"]);
    assert_eq!(pod_json(&root, "web")["record"]["phase"], "stopped");
    root.ok(&["pod", "rm", "web"]);
    assert_eq!(pods_dir_entries(&root), 0);
    assert!(root.mounts().is_empty(), "{:?}", root.mounts());
    assert!(root.container_cgroups().is_empty());
    assert_eq!(common::containers_dir_entries(&root), 0);
}
