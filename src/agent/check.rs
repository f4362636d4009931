//! `berth agent --check`: what the host has of what Berth needs, one line per item, with
//! what to do about anything missing. Required items fail the check; optional ones only
//! disable a feature.

use std::path::Path;

struct Item {
    name: &'static str,
    ok: bool,
    required: bool,
    detail: String,
}

fn item(name: &'static str, ok: bool, required: bool, detail: impl Into<String>) -> Item {
    Item {
        name,
        ok,
        required,
        detail: detail.into(),
    }
}

fn find_binary(name: &str, dirs: &[&str]) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(dirs.iter().copied())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

fn items(root: &Path) -> Vec<Item> {
    let mut out = Vec::new();
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let version: Vec<u32> = release
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .filter_map(|p| p.parse().ok())
        .collect();
    let new_enough = version.as_slice() >= [4u32, 18].as_slice();
    out.push(item("kernel >= 4.18", new_enough, true, release));
    let monitor = std::fs::read_link("/proc/self/exe")
        .map(|exe| exe.with_file_name("berth-monitor"))
        .unwrap_or_default();
    out.push(item(
        "berth-monitor",
        monitor.is_file(),
        true,
        if monitor.is_file() {
            monitor.display().to_string()
        } else {
            format!(
                "missing at {}: install it beside berth (each container's supervisor)",
                monitor.display()
            )
        },
    ));
    out.push(item(
        "running as root",
        nix::unistd::geteuid().is_root(),
        true,
        "the agent creates namespaces, mounts and cgroups",
    ));
    for ns in ["mnt", "pid", "net", "ipc", "uts", "cgroup"] {
        let ok = Path::new("/proc/self/ns").join(ns).exists();
        out.push(item("namespace", ok, true, ns));
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlay = filesystems.lines().any(|l| l.ends_with("overlay"));
    out.push(item(
        "overlayfs",
        overlay,
        false,
        if overlay {
            "in /proc/filesystems".to_string()
        } else {
            "missing: `modprobe overlay`; without it every rootfs is a copy (slow)".to_string()
        },
    ));
    out.push(item(
        "seccomp filters",
        Path::new("/proc/sys/kernel/seccomp/actions_avail").exists(),
        true,
        "CONFIG_SECCOMP_FILTER",
    ));
    let v2 = berth_runtime::cgroups::is_v2();
    let mode = if v2 {
        "v2 (unified)"
    } else if Path::new("/sys/fs/cgroup/unified").is_dir() {
        "v1 (hybrid)"
    } else {
        "v1"
    };
    out.push(item("cgroup version", true, true, mode));
    for c in ["cpu", "memory", "pids", if v2 { "io" } else { "freezer" }] {
        let ok = if v2 {
            std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
                .unwrap_or_default()
                .split_whitespace()
                .any(|x| x == c)
        } else {
            Path::new("/sys/fs/cgroup").join(c).is_dir()
        };
        out.push(item("cgroup controller", ok, c != "io", c));
    }
    match berth_runtime::cgroups::own_cgroup() {
        Ok(p) => out.push(item(
            "own cgroup",
            true,
            true,
            format!("{} (containers go below it)", p.display()),
        )),
        Err(e) => out.push(item("own cgroup", false, true, e.to_string())),
    }
    let cni = ["/opt/cni/bin", "/usr/lib/cni"];
    for plugin in ["bridge", "host-local", "loopback", "portmap", "firewall"] {
        let found = find_binary(plugin, &cni);
        out.push(item(
            "CNI plugin",
            found.is_some(),
            false,
            found.unwrap_or_else(|| {
                format!("{plugin} missing: apt-get install containernetworking-plugins")
            }),
        ));
    }
    let iptables = find_binary("iptables", &["/usr/sbin", "/sbin"]);
    out.push(item(
        "iptables",
        iptables.is_some(),
        false,
        iptables.unwrap_or_else(|| "missing: port publishing needs it".into()),
    ));
    let probe = if root.exists() { root } else { Path::new("/") };
    match nix::sys::statvfs::statvfs(probe) {
        Ok(s) => {
            let free = s.blocks_available() * s.fragment_size();
            out.push(item(
                "data root space",
                free > 1 << 30,
                false,
                format!("{} free at {}", crate::format::size(free), probe.display()),
            ));
        }
        Err(e) => out.push(item("data root space", false, false, e.to_string())),
    }
    // Where the image store is (or will be): the nearest existing dir.
    let store = std::iter::once(root.join("snapshots"))
        .chain(root.ancestors().map(Path::to_path_buf))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| std::path::PathBuf::from("/"));
    let userns = Path::new("/proc/self/ns/user").exists();
    out.push(item(
        "user namespaces",
        userns,
        false,
        if userns {
            "--userns auto, hostUsers: false".to_string()
        } else {
            "missing (CONFIG_USER_NS): --userns auto is refused".to_string()
        },
    ));
    if let Some(dir) = crate::agent::idmap::blocked_ancestor(root) {
        out.push(item(
            "data root reachable",
            false,
            false,
            format!(
                "{} is not searchable by others: --userns auto is refused (chmod o+x it)",
                dir.display()
            ),
        ));
    }
    match berth_runtime::userns::probe(&store) {
        Ok(()) => out.push(item(
            "idmapped layers",
            true,
            false,
            format!(
                "{}: --userns auto mounts layers idmapped (no copy)",
                store.display()
            ),
        )),
        Err(e) => out.push(item(
            "idmapped layers",
            false,
            false,
            format!("{e}: --userns auto copies and chowns each rootfs instead (slow)"),
        )),
    }
    match berth_runtime::quota::ProjectQuotas::open(&store) {
        Ok(_) => out.push(item(
            "disk budgets",
            true,
            false,
            format!("project quotas on {}: the kernel enforces --storage-opt size", store.display()),
        )),
        Err(e) => out.push(item(
            "disk budgets",
            false,
            false,
            format!(
                "{e}: no project quotas (ext4 -O project,quota mounted prjquota, or XFS pquota); --storage-opt size is measured and over-budget tasks evicted"
            ),
        )),
    }
    out
}

/// Prints the report; false if a required item is missing.
pub fn print_report(root: &Path) -> bool {
    let mut ok = true;
    for i in items(root) {
        let mark = match (i.ok, i.required) {
            (true, _) => "ok      ",
            (false, true) => "MISSING ",
            (false, false) => "optional",
        };
        ok &= i.ok || !i.required;
        println!("{mark}  {:<20} {}", i.name, i.detail);
    }
    ok
}
