//! Network helpers of the tests: a bridge and subnet per test, and what the host shows of
//! CNI attachments (bridge ports, iptables rules, host-local leases).

use std::path::Path;
use std::process::Command;

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
