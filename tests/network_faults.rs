//! CNI faults through the real agent and plugins: a missing plugin, a malformed or absent
//! network, a plugin that fails or hangs in ADD or DEL, and an agent killed mid-ADD —
//! each leaves no namespace, veth, lease, cached attachment or iptables rule behind, and
//! the agent keeps serving meanwhile. Root only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::net::{
    bridge_ports, chain_conflist, free_port, http_get, http_unreachable, iptables_rules_with,
    lease_dir, leases, plugin,
};
use common::{import, pod_json, wait_for, write_spec, Root};

/// Writes `hang-plugin`: its ADD records its pid and sleeps (other commands succeed).
/// Returns the pid file.
fn hang_plugin(dir: &std::path::Path) -> std::path::PathBuf {
    let pids = dir.join("hang.pids");
    plugin(
        dir,
        "hang-plugin",
        &format!(
            r#"cat >/dev/null; [ "$CNI_COMMAND" = ADD ] || exit 0
echo $$ >> {}; exec sleep 600"#,
            pids.display()
        ),
    );
    pids
}

#[test]
fn plugin_faults_fail_the_pod_and_leave_nothing_behind() {
    let plugins = tempfile::tempdir().unwrap();
    let pids = hang_plugin(plugins.path());
    plugin(
        plugins.path(),
        "fail-plugin",
        r#"cat >/dev/null; [ "$CNI_COMMAND" = ADD ] || exit 0
echo '{"cniVersion":"1.0.0","code":7,"msg":"quota exceeded","details":"try later"}'; exit 1"#,
    );
    let dirs = format!("{}:/usr/lib/cni", plugins.path().display());
    let root = Root::with_bridge(&["--cni-timeout", "2s", "--cni-plugin-dir", &dirs]);
    import(&root);
    let bridge = root.bridge.clone().unwrap().0;
    let conf = root.path().join("net.d");
    let ipam = root.path().join("faults-ipam");
    for (name, then) in [
        ("missing", "no-such-plugin"),
        ("failing", "fail-plugin"),
        ("hanging", "hang-plugin"),
    ] {
        std::fs::write(
            conf.join(format!("{name}.conflist")),
            chain_conflist(&root, name, then, &ipam),
        )
        .unwrap();
    }
    std::fs::write(
        conf.join("broken.conflist"),
        "{\"cniVersion\": \"1.0.0\", \"name\": \"broken\",",
    )
    .unwrap();

    for (network, want) in [
        ("missing", "plugin \"no-such-plugin\" not found in"),
        (
            "failing",
            "plugin fail-plugin ADD: quota exceeded: try later (CNI error 7)",
        ),
        ("hanging", "plugin hang-plugin ADD: timed out after 2s"),
        ("broken", "no network named \"broken\""),
        ("nowhere", "no network named \"nowhere\""),
    ] {
        let spec = write_spec(
            &root,
            network,
            &format!(
                "name: p-{network}\nnetwork: {network}\ncontainers:\n  - {{name: c, image: busybox, command: [sleep, '1000']}}\n"
            ),
        );
        let began = Instant::now();
        let err = if network == "hanging" {
            // While a plugin hangs the agent keeps serving, and the pod being set up
            // cannot be removed under the plugin's feet.
            let pending = root
                .cmd(&["pod", "run", &spec])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            wait_for("the hanging plugin", || pids.exists());
            let asked = Instant::now();
            assert!(root.ok(&["pod", "ls"]).contains("p-hanging"));
            root.ok(&["ps"]);
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "{:?}",
                asked.elapsed()
            );
            let busy = root.fails(&["pod", "rm", "-f", "p-hanging"]);
            assert!(busy.contains("still being set up"), "{busy}");
            let out = pending.wait_with_output().unwrap();
            assert!(!out.status.success());
            String::from_utf8_lossy(&out.stderr).into_owned()
        } else {
            root.fails(&["pod", "run", &spec])
        };
        assert!(
            err.contains(&format!("pod p-{network} failed to start")),
            "{network}: {err}"
        );
        assert!(err.contains(want), "{network}: {err}");
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "{network} took {:?}",
            began.elapsed()
        );
        if network == "broken" {
            assert!(
                err.contains("broken.conflist"),
                "the unreadable file is named: {err}"
            );
        }
        // Nothing is left: no pod, namespace, veth, lease, cached attachment or rule.
        assert!(root.ok(&["pod", "ls", "-q"]).trim().is_empty());
        assert_eq!(common::pods_dir_entries(&root), 0, "{network}");
        assert!(root.mounts().is_empty(), "{network}: {:?}", root.mounts());
        assert!(
            bridge_ports(&bridge).is_empty(),
            "{network}: {:?}",
            bridge_ports(&bridge)
        );
        assert!(leases(&ipam.join(network)).is_empty(), "{network}");
        assert_eq!(
            std::fs::read_dir(root.path().join("cni/cache")).map_or(0, |d| d.count()),
            0
        );
        let rules = iptables_rules_with(&format!("name: \\\"{network}\\\""));
        assert!(rules.is_empty(), "{network}: {rules:?}");
    }
    // The hung plugin was killed, not left running.
    let pid: i32 = std::fs::read_to_string(&pids)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for("the hung plugin to be gone", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.is_empty() || stat.contains(") Z")
    });
    // The failed pods are reported as such.
    let events = common::events_json(&root, "type=pod");
    let failed = events.iter().filter(|e| e["action"] == "failed").count();
    assert_eq!(failed, 5, "{events:?}");
}

#[test]
fn an_agent_crash_then_delete_releases_everything() {
    let plugins = tempfile::tempdir().unwrap();
    let pids = hang_plugin(plugins.path());
    let dirs = format!("{}:/usr/lib/cni", plugins.path().display());
    let mut root = Root::with_bridge(&["--cni-plugin-dir", &dirs]);
    import(&root);
    let bridge = root.bridge.clone().unwrap().0;
    let ipam = root.path().join("hang-ipam");
    std::fs::write(
        root.path().join("net.d/hanging.conflist"),
        chain_conflist(&root, "hanging", "hang-plugin", &ipam),
    )
    .unwrap();

    // 1. A running pod on the default network, then `kill -9` of the agent; its network
    //    namespace goes while the agent is away (its processes killed, the mount gone).
    let port = free_port();
    let spec = write_spec(
        &root,
        "steady",
        &format!("name: steady\nrestartPolicy: Never\ncontainers:\n  - name: c\n    image: busybox\n    command: [httpd, -f, -p, '80', -h, /etc]\n    ports: [{{containerPort: 80, hostPort: {port}}}]\n"),
    );
    let steady = root.ok(&["pod", "run", &spec]).trim().to_string();
    assert_eq!(
        http_get(&format!("127.0.0.1:{port}"), "/hostname").trim(),
        "steady"
    );
    assert_eq!(leases(&lease_dir(&root)).len(), 1);
    let pid = pod_json(&root, "steady")["containers"][0]["pid"]
        .as_i64()
        .unwrap();

    // 2. A pod whose ADD hangs in its second plugin when the agent dies: the bridge part is
    //    done (a lease taken, a veth made), the cache entry has no result yet.
    let spec = write_spec(
        &root,
        "stuck",
        "name: stuck\nnetwork: hanging\ncontainers:\n  - {name: c, image: busybox, command: [sleep, '1000']}\n",
    );
    let mut pending = root.cmd(&["pod", "run", &spec]).spawn().unwrap();
    wait_for("the hanging plugin", || pids.exists());
    assert_eq!(leases(&ipam.join("hanging")).len(), 1);
    root.stop_agent(libc::SIGKILL);
    let _ = pending.wait();
    let hung: i32 = std::fs::read_to_string(&pids)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) of the plugin our agent started (its pid, written by itself).
    unsafe {
        libc::kill(hung, libc::SIGKILL);
    }
    // SAFETY: kill(2) of the container init our agent started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let ns = root.path().join("pods").join(&steady).join("ns/net");
    assert!(Command::new("umount").arg(&ns).status().unwrap().success());
    wait_for("the pod's veth to go with its namespace", || {
        bridge_ports(&bridge).len() == 1
    });

    // Restarted, the agent tears the half-started pod down (DEL from its cache entry), and
    // removing the pod whose namespace is gone still releases its lease and rules.
    root.start_agent(&["--cni-plugin-dir", &dirs]);
    wait_for("the half-started pod's teardown", || {
        leases(&ipam.join("hanging")).is_empty() && bridge_ports(&bridge).is_empty()
    });
    assert!(root.ok(&["pod", "ls"]).contains("steady"));
    root.ok(&["pod", "rm", "-f", "steady"]);
    assert!(leases(&lease_dir(&root)).is_empty());
    assert!(
        iptables_rules_with(&steady).is_empty(),
        "{:?}",
        iptables_rules_with(&steady)
    );
    assert!(iptables_rules_with("name: \\\"hanging\\\"").is_empty());
    assert!(http_unreachable(port));
    assert_eq!(
        std::fs::read_dir(root.path().join("cni/cache")).map_or(0, |d| d.count()),
        0
    );
}

#[test]
fn a_hanging_del_holds_nothing_up_and_is_retried_at_the_next_start() {
    let plugins = tempfile::tempdir().unwrap();
    let once = plugins.path().join("hung-once");
    // Hangs in its first DEL only (until the agent's timeout kills it).
    plugin(
        plugins.path(),
        "slow-del",
        &format!(
            r#"cat >/dev/null; [ "$CNI_COMMAND" = DEL ] || {{ [ "$CNI_COMMAND" = ADD ] && echo '{{"cniVersion":"1.0.0"}}'; exit 0; }}
[ -e {0} ] && exit 0; touch {0}; exec sleep 600"#,
            once.display()
        ),
    );
    let dirs = format!("{}:/usr/lib/cni", plugins.path().display());
    let flags = ["--cni-timeout", "2s", "--cni-plugin-dir", &dirs];
    let mut root = Root::with_bridge(&flags);
    import(&root);
    let bridge = root.bridge.clone().unwrap().0;
    let ipam = root.path().join("slow-ipam");
    std::fs::write(
        root.path().join("net.d/slow.conflist"),
        chain_conflist(&root, "slow", "slow-del", &ipam),
    )
    .unwrap();
    let spec = write_spec(
        &root,
        "slow",
        "name: slow\nnetwork: slow\ncontainers:\n  - {name: c, image: busybox, command: [sleep, '1000']}\n",
    );
    let id = root.ok(&["pod", "run", &spec]).trim().to_string();
    assert_eq!(leases(&ipam.join("slow")).len(), 1);

    let pending = root.cmd(&["pod", "rm", "-f", "slow"]).spawn().unwrap();
    wait_for("the DEL to hang", || once.exists());
    let asked = Instant::now();
    root.ok(&["ps"]);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    let busy = root.fails(&["pod", "rm", "-f", "slow"]);
    assert!(busy.contains("being removed"), "{busy}");
    let out = pending.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");

    // The timed-out DEL left its cache entry (bridge's part ran: lease and veth are gone).
    assert!(root.ok(&["pod", "ls", "-q"]).trim().is_empty());
    assert!(leases(&ipam.join("slow")).is_empty());
    assert!(bridge_ports(&bridge).is_empty());
    let cache = root.path().join("cni/cache");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
    // The next start DELs what nothing owns any more.
    root.stop_agent(libc::SIGTERM);
    root.start_agent(&flags);
    wait_for("the orphaned attachment's DEL", || {
        std::fs::read_dir(&cache).map_or(0, |d| d.count()) == 0
    });
    assert!(iptables_rules_with(&id).is_empty());
}
