//! Pod and container networking through the real CNI plugins of
//! `containernetworking-plugins` (bridge, host-local, portmap, firewall, loopback) in real
//! network namespaces, on loopback and bridges each test makes for itself: traffic by IP
//! between pods and containers, published ports reached from the host, CHECK, leases
//! released and iptables rules gone after removal, plugin faults rolled back, and DEL after
//! an agent crash. Root only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::net::{bridge_ports, iptables_rules_with, leases};
use common::{import, pod_json, wait_for, write_spec, Root};

/// A TCP port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on `addr` over HTTP/1.0, retried until it answers (or 20 s); the body.
fn http_get(addr: &str, path: &str) -> String {
    let began = Instant::now();
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect_timeout(
                &addr.parse().unwrap(),
                Duration::from_secs(2),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match attempt {
            Ok(text) if text.starts_with("HTTP/1.") => {
                return text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
            }
            _ if began.elapsed() > Duration::from_secs(20) => {
                panic!("no HTTP answer from {addr}{path}: {attempt:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn ip_of_pod(root: &Root, pod: &str) -> String {
    pod_json(root, pod)["record"]["network"]["ips"][0]
        .as_str()
        .expect("pod ip")
        .to_string()
}

fn ip_of_container(root: &Root, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&root.ok(&["inspect", name])).unwrap();
    v["record"]["network"]["ips"][0]
        .as_str()
        .expect("container ip")
        .to_string()
}

/// host-local's lease dir of the default network.
fn lease_dir(root: &Root) -> PathBuf {
    root.path().join("cni/ipam/berth")
}

#[test]
fn pods_and_containers_talk_by_ip_and_publish_ports() {
    let root = Root::with_bridge(&[]);
    import(&root);
    let bridge = root.bridge.clone().unwrap().0;
    let (pod_port, ctr_port) = (free_port(), free_port());
    let spec = write_spec(
        &root,
        "web",
        &format!(
            r#"
name: web
containers:
  - name: server
    image: busybox
    command: [httpd, -f, -p, "8080", -h, /etc]
    ports: [{{containerPort: 8080, hostPort: {pod_port}, hostIP: 127.0.0.1}}]
"#
        ),
    );
    let pod_id = root.ok(&["pod", "run", &spec]).trim().to_string();
    let ctr_id = root
        .ok(&[
            "run",
            "-d",
            "--name",
            "client",
            "--hostname",
            "client",
            "-p",
            &format!("{ctr_port}:80"),
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/etc",
        ])
        .trim()
        .to_string();
    let (pod_ip, ctr_ip) = (ip_of_pod(&root, "web"), ip_of_container(&root, "client"));
    let subnet = root.bridge.clone().unwrap().1;
    let prefix = subnet.rsplit_once('.').unwrap().0;
    assert!(
        pod_ip.starts_with(prefix) && ctr_ip.starts_with(prefix),
        "{pod_ip} {ctr_ip} in {subnet}"
    );
    assert_ne!(pod_ip, ctr_ip);
    assert_eq!(bridge_ports(&bridge).len(), 2);

    // Container → pod and pod → container, by IP, across the bridge.
    let got = root.ok(&[
        "exec",
        "client",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{pod_ip}:8080/hostname"),
    ]);
    assert_eq!(got.trim(), "web");
    let got = root.ok(&[
        "exec",
        "web_server",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{ctr_ip}:80/hostname"),
    ]);
    assert_eq!(got.trim(), "client");
    // /etc/hosts names the container's own address.
    let hosts = root.ok(&["exec", "web_server", "cat", "/etc/hosts"]);
    assert!(hosts.contains(&format!("{pod_ip}\tweb")), "{hosts}");

    // The host reaches both published ports on 127.0.0.1 (portmap's DNAT of local traffic).
    assert_eq!(
        http_get(&format!("127.0.0.1:{pod_port}"), "/hostname").trim(),
        "web"
    );
    assert_eq!(
        http_get(&format!("127.0.0.1:{ctr_port}"), "/hostname").trim(),
        "client"
    );

    // ps and pod ls show addresses and ports.
    let ps = root.ok(&["ps"]);
    assert!(
        ps.contains(&ctr_ip) && ps.contains(&format!("0.0.0.0:{ctr_port}->80/tcp")),
        "{ps}"
    );
    let ls = root.ok(&["pod", "ls"]);
    assert!(
        ls.contains(&pod_ip) && ls.contains(&format!("127.0.0.1:{pod_port}->8080/tcp")),
        "{ls}"
    );
    let nets = root.ok(&["network", "ls"]);
    assert!(
        nets.contains("berth (default)") && nets.contains("bridge,portmap,firewall,loopback"),
        "{nets}"
    );

    // A host port already published is refused, and nothing is made for the refused one.
    let err = root.fails(&[
        "run",
        "-d",
        "-p",
        &format!("{ctr_port}:80"),
        "busybox",
        "true",
    ]);
    assert!(err.contains("already published"), "{err}");
    let err = root.fails(&[
        "run",
        "-d",
        "--network",
        "none",
        "-p",
        "1234:80",
        "busybox",
        "true",
    ]);
    assert!(err.contains("conflicts with --network none"), "{err}");
    assert_eq!(leases(&lease_dir(&root)).len(), 2);

    // CHECK passes, then fails once the container's interface is gone.
    assert!(root.ok(&["network", "check", "web"]).contains("ok"));
    assert!(root.ok(&["network", "check", "client"]).contains("ok"));
    let netns = root.path().join("netns").join(&ctr_id).join("net");
    let status = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "link", "del", "eth0"])
        .status()
        .unwrap();
    assert!(status.success());
    let err = root.fails(&["network", "check", "client"]);
    assert!(err.contains("network berth: plugin"), "{err}");

    // Removal releases leases, veths and every iptables rule of both.
    assert!(!iptables_rules_with(&pod_id).is_empty());
    root.ok(&["rm", "-f", "client"]);
    root.ok(&["pod", "rm", "-f", "web"]);
    assert!(
        leases(&lease_dir(&root)).is_empty(),
        "{:?}",
        leases(&lease_dir(&root))
    );
    assert!(
        bridge_ports(&bridge).is_empty(),
        "{:?}",
        bridge_ports(&bridge)
    );
    for id in [&pod_id, &ctr_id] {
        assert!(
            iptables_rules_with(id).is_empty(),
            "{:?}",
            iptables_rules_with(id)
        );
    }
    assert!(http_unreachable(pod_port));
}

/// Nothing answers on 127.0.0.1:`port` any more.
fn http_unreachable(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(500),
    )
    .is_err()
}

/// Writes an executable plugin script.
fn plugin(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A network whose chain is `bridge` (on the test's bridge, leases in `ipam`) then `then`.
fn chain_conflist(root: &Root, name: &str, then: &str, ipam: &Path) -> String {
    let (bridge, subnet) = root.bridge.clone().unwrap();
    format!(
        r#"{{"cniVersion":"1.0.0","name":"{name}","plugins":[
            {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":true,
              "ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"{subnet}"}}]]}}}},
            {{"type":"{then}"}}]}}"#,
        ipam.display()
    )
}

#[test]
fn plugin_faults_fail_the_pod_and_leave_nothing_behind() {
    let plugins = tempfile::tempdir().unwrap();
    let pids = plugins.path().join("hang.pids");
    plugin(
        plugins.path(),
        "fail-plugin",
        r#"cat >/dev/null; [ "$CNI_COMMAND" = ADD ] || exit 0
echo '{"cniVersion":"1.0.0","code":7,"msg":"quota exceeded","details":"try later"}'; exit 1"#,
    );
    plugin(
        plugins.path(),
        "hang-plugin",
        &format!(
            r#"cat >/dev/null; [ "$CNI_COMMAND" = ADD ] || exit 0
echo $$ >> {}; exec sleep 600"#,
            pids.display()
        ),
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
    let pids = plugins.path().join("hang.pids");
    plugin(
        plugins.path(),
        "hang-plugin",
        &format!(
            r#"cat >/dev/null; [ "$CNI_COMMAND" = ADD ] || exit 0
echo $$ >> {}; exec sleep 600"#,
            pids.display()
        ),
    );
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
fn host_network_and_none_pods() {
    let root = Root::with_bridge(&[]);
    import(&root);
    let spec = write_spec(
        &root,
        "hostnet",
        "name: hostnet\nhostNetwork: true\ncontainers:\n  - {name: c, image: busybox, command: [sleep, '1000']}\n",
    );
    root.ok(&["pod", "run", &spec]);
    let pid = pod_json(&root, "hostnet")["containers"][0]["pid"]
        .as_i64()
        .unwrap();
    let ns = |p: String| std::fs::read_link(p).unwrap();
    assert_eq!(
        ns(format!("/proc/{pid}/ns/net")),
        ns("/proc/self/ns/net".into())
    );
    assert!(pod_json(&root, "hostnet")["record"]["network"].is_null());

    let spec = write_spec(
        &root,
        "lonely",
        "name: lonely\nnetwork: none\ncontainers:\n  - {name: c, image: busybox, command: [sleep, '1000']}\n",
    );
    root.ok(&["pod", "run", &spec]);
    let links = root.ok(&["exec", "lonely_c", "ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "only lo: {links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    let err = root.fails(&["network", "check", "lonely"]);
    assert!(err.contains("on no CNI network"), "{err}");

    let bad = write_spec(
        &root,
        "bad",
        "name: bad\nhostNetwork: true\nnetwork: berth\ncontainers:\n  - {name: c, image: busybox}\n",
    );
    let err = root.fails(&["pod", "run", &bad]);
    assert!(err.contains("network: conflicts with hostNetwork"), "{err}");
    let bad = write_spec(
        &root,
        "bad2",
        "name: bad2\nnetwork: none\ncontainers:\n  - {name: c, image: busybox, ports: [{containerPort: 80, hostPort: 8080}]}\n",
    );
    let err = root.fails(&["pod", "run", &bad]);
    assert!(
        err.contains("containers[0].ports[0].hostPort: needs a CNI network"),
        "{err}"
    );
}

#[test]
fn a_0_4_0_single_plugin_network_attaches_checks_and_deletes() {
    let root = Root::with_bridge(&[]);
    import(&root);
    let (bridge, subnet) = root.bridge.clone().unwrap();
    // Same bridge, another /24 (the bridge takes a second gateway address).
    let mut octets: Vec<u32> = subnet
        .split(['.', '/'])
        .map(|p| p.parse().unwrap())
        .collect();
    octets[2] = (octets[2] + 128) % 256;
    let old_subnet = format!("10.{}.{}.0/24", octets[1], octets[2]);
    let ipam = root.path().join("old-ipam");
    std::fs::write(
        root.path().join("net.d/30-old.conf"),
        format!(
            r#"{{"cniVersion":"0.4.0","name":"old","type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":true,
                "ipam":{{"type":"host-local","dataDir":"{}","subnet":"{old_subnet}"}}}}"#,
            ipam.display()
        ),
    )
    .unwrap();
    let nets = root.ok(&["network", "ls"]);
    assert!(nets.contains("old") && nets.contains("0.4.0"), "{nets}");
    let id = root
        .ok(&[
            "run",
            "-d",
            "--name",
            "o",
            "--network",
            "old",
            "busybox",
            "sleep",
            "1000",
        ])
        .trim()
        .to_string();
    let ip = ip_of_container(&root, "o");
    let prefix = old_subnet.rsplit_once('.').unwrap().0;
    assert!(ip.starts_with(prefix), "{ip} in {old_subnet}");
    let inside = root.ok(&["exec", "o", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(inside.contains(&ip), "{inside}");
    assert!(root.ok(&["network", "check", "o"]).contains("ok (old)"));
    assert_eq!(leases(&ipam.join("old")).len(), 1);
    assert!(!iptables_rules_with(&id).is_empty());
    root.ok(&["rm", "-f", "o"]);
    assert!(leases(&ipam.join("old")).is_empty());
    assert!(
        iptables_rules_with(&id).is_empty(),
        "{:?}",
        iptables_rules_with(&id)
    );
    assert!(bridge_ports(&bridge).is_empty());
}
