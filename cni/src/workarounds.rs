//! Known bugs of the reference plugins Debian ships (containernetworking-plugins 1.1.1 in
//! bookworm), worked around so a Berth host stays clean with them. Each one names the
//! upstream issue; each is harmless with fixed plugins (it finds nothing to do).

use std::path::Path;
use std::process::Command;

use crate::CniError;

/// portmap before 1.2.0 fails CHECK of every IPv4-only attachment: it looks for IPv6 NAT
/// chains it never made (<https://github.com/containernetworking/plugins/issues/819>).
pub fn is_portmap_ipv6_check_bug(e: &CniError) -> bool {
    matches!(e, CniError::Plugin { plugin, msg, .. }
        if plugin == "portmap" && msg.starts_with("could not check ipv6 dnat"))
}

/// Whether `path` is a namespace file (a bind mount of one); false when the namespace is
/// gone (unmounted, or the file removed).
pub fn is_namespace(path: &Path) -> bool {
    // "nsfs" as a filesystem magic number.
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    // f_type is i64 on x86_64 glibc and narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 as i64 == NSFS_MAGIC)
}

/// bridge 1.1.x's DEL reads the addresses whose `ipMasq` rules it removes from the
/// interface inside the container: when the namespace or the interface is gone it releases
/// the IP but leaves the rules. This removes what it left (nothing with a fixed bridge): the
/// POSTROUTING jump and the per-attachment chain, both tagged with the comment
/// `name: "<network>" id: "<container id>"`. Returns the number of rules removed.
pub fn remove_leftover_masquerade(network: &str, container_id: &str) -> Result<usize, CniError> {
    let listing = iptables(&["-t", "nat", "-S"])?;
    let comment = format!("--comment \"name: \\\"{network}\\\" id: \\\"{container_id}\\\"\"");
    let mut removed = 0;
    let mut chains = Vec::new();
    for line in listing.lines().filter(|l| l.contains(&comment)) {
        let mut args = split_rule(line);
        let Some(first) = args.first_mut() else {
            continue;
        };
        if first != "-A" {
            continue;
        }
        *first = "-D".into();
        let chain = args.get(1).cloned().unwrap_or_default();
        if chain.starts_with("CNI-") {
            // Emptied and removed as a whole below.
            if !chains.contains(&chain) {
                chains.push(chain);
            }
            continue;
        }
        let mut full = vec!["-t".to_string(), "nat".into()];
        full.extend(args);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        iptables(&refs)?;
        removed += 1;
    }
    for chain in chains {
        iptables(&["-t", "nat", "-F", &chain])?;
        iptables(&["-t", "nat", "-X", &chain])?;
        removed += 1;
    }
    Ok(removed)
}

fn iptables(args: &[&str]) -> Result<String, CniError> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(CniError::io("running", Path::new("iptables")))?;
    if !out.status.success() {
        return Err(CniError::Failed {
            plugin: "bridge".into(),
            command: "DEL",
            reason: format!(
                "iptables {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Splits one `iptables -S` line into arguments: words, with double-quoted strings (and
/// their `\"` escapes) kept whole.
fn split_rule(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped, mut any) = (false, false, false);
    for c in line.chars() {
        match c {
            _ if escaped => {
                cur.push(c);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    args.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            _ => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        args.push(cur);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_split_like_a_shell_would() {
        let line = r#"-A POSTROUTING -s 10.232.0.3/32 -m comment --comment "name: \"n\" id: \"zz9\"" -j CNI-84"#;
        assert_eq!(
            split_rule(line),
            [
                "-A",
                "POSTROUTING",
                "-s",
                "10.232.0.3/32",
                "-m",
                "comment",
                "--comment",
                r#"name: "n" id: "zz9""#,
                "-j",
                "CNI-84"
            ]
        );
        assert!(is_namespace(Path::new("/proc/self/ns/net")));
        assert!(!is_namespace(Path::new("/proc/self/status")));
        assert!(!is_namespace(Path::new("/nonexistent")));
    }
}
