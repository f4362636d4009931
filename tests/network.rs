//! Pod and container networking through the real CNI plugins of
//! `containernetworking-plugins` (bridge, host-local, portmap, firewall, loopback) in real
//! network namespaces, on loopback and bridges each test makes for itself: traffic by IP
//! between pods and containers, published ports reached from the host, CHECK, leases
//! released and iptables rules gone after removal, host and none networks, a 0.4.0
//! network. Root only. Faults and crashes: `network_faults.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::net::{
    bridge_ports, free_port, http_get, http_unreachable, ip_of_container, ip_of_pod,
    iptables_rules_with, lease_dir, leases,
};
use common::{import, pod_json, wait_for, write_spec, Root};

#[test]
fn pods_and_containers_talk_by_ip_and_publish_ports() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let root = Root::with_bridge(&["--metrics-addr", &metrics]);
    import(&root);
    let bridge = root.bridge.clone().unwrap().0;
    let netns_before = ip_netns();
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
    // Pod → pod: a second pod fetches from the first by its IP, then ends.
    let peer = write_spec(
        &root,
        "peer",
        &format!(
            "name: peer\nrestartPolicy: Never\ncontainers:\n  - {{name: get, image: busybox, command: [wget, -q, -O, -, 'http://{pod_ip}:8080/hostname']}}\n"
        ),
    );
    root.ok(&["pod", "run", &peer]);
    wait_for("the peer pod to end", || {
        pod_json(&root, "peer")["phase"] == "succeeded"
    });
    assert_eq!(root.ok(&["logs", "peer_get"]).trim(), "web");
    assert_ne!(ip_of_pod(&root, "peer"), pod_ip);
    root.ok(&["pod", "rm", "peer"]);
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

    // `run --rm` returns once its network is released too.
    let cached = || {
        std::fs::read_dir(root.path().join("cni/cache"))
            .unwrap()
            .count()
    };
    assert_eq!(cached(), 2);
    let port = format!("{}:80", free_port());
    root.ok(&["run", "--rm", "-p", &port, "busybox", "true"]);
    assert_eq!(leases(&lease_dir(&root)).len(), 2);
    assert_eq!(cached(), 2);
    root.ok(&["run", "--rm", "-p", &port, "busybox", "true"]);

    // CHECK passes, then fails once the container's interface is gone.
    assert!(root.ok(&["network", "check", "web"]).contains("ok"));
    assert!(root.ok(&["network", "check", "client"]).contains("ok"));
    // Every ADD, DEL and CHECK so far is in the metrics.
    let text = http_get(&metrics, "/metrics");
    let count = |op: &str| -> u64 {
        let series =
            format!("berth_cni_operation_duration_seconds_count{{op=\"{op}\",result=\"ok\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |n| n.parse().unwrap())
    };
    assert_eq!(
        (count("add"), count("del"), count("check")),
        (5, 3, 2),
        "{text}"
    );
    let netns = root.path().join("netns").join(&ctr_id).join("net");
    let status = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "link", "del", "eth0"])
        .status()
        .unwrap();
    assert!(status.success());
    let err = root.fails(&["network", "check", "client"]);
    assert!(err.contains("network berth: plugin"), "{err}");

    // Removal releases leases, veths and every iptables rule of both; `ip netns` (where
    // other tools name namespaces) never saw ours.
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
    assert_eq!(ip_netns(), netns_before);
}

/// `ip netns list`.
fn ip_netns() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    assert!(pod_json(&root, "hostnet")["network"].is_null());

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
