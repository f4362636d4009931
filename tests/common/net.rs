//! Network helpers of the tests: a bridge and subnet per test, and what the host shows of
//! CNI attachments (bridge ports, iptables rules, host-local leases).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::Root;

/// A bridge name and /24 no other test of this run uses.
pub fn unique_bridge() -> (String, String) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    (
        format!("bt{}x{n}", pid % 100_000),
        format!("10.{}.{}.0/24", 210 + pid % 40, n % 256),
    )
}

/// Interfaces enslaved to `bridge` (veths of attached containers).
pub fn bridge_ports(bridge: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// Every iptables rule (all tables) that mentions `needle`.
pub fn iptables_rules_with(needle: &str) -> Vec<String> {
    let out = Command::new("iptables-save")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

/// Leases host-local holds in `dir` (files named after an IP address).
pub fn leases(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect()
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on `addr` over HTTP/1.0, retried until it answers (or 20 s); the body.
pub fn http_get(addr: &str, path: &str) -> String {
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

pub fn ip_of_pod(root: &Root, pod: &str) -> String {
    super::pod_json(root, pod)["network"]["ips"][0]
        .as_str()
        .expect("pod ip")
        .to_string()
}

pub fn ip_of_container(root: &Root, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&root.ok(&["inspect", name])).unwrap();
    v["network"]["ips"][0]
        .as_str()
        .expect("container ip")
        .to_string()
}

/// host-local's lease dir of the default network.
pub fn lease_dir(root: &Root) -> PathBuf {
    root.path().join("cni/ipam/berth")
}

/// Nothing answers on 127.0.0.1:`port` any more.
pub fn http_unreachable(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(500),
    )
    .is_err()
}

/// Writes an executable plugin script.
pub fn plugin(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A network whose chain is `bridge` (on the test's bridge, leases in `ipam`) then `then`.
pub fn chain_conflist(root: &Root, name: &str, then: &str, ipam: &Path) -> String {
    let (bridge, subnet) = root.bridge.clone().unwrap();
    format!(
        r#"{{"cniVersion":"1.0.0","name":"{name}","plugins":[
            {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":true,
              "ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"{subnet}"}}]]}}}},
            {{"type":"{then}"}}]}}"#,
        ipam.display()
    )
}
