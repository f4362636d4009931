//! The agent's cgroup work, all through youki's `libcgroups` (the library libcontainer itself
//! uses, so paths mean the same thing): where Berth's cgroup root is, statistics, OOM
//! detection, killing everything in a container's cgroup, and removal.
//!
//! Paths are absolute from each hierarchy's root, as libcontainer takes `cgroupsPath`. On
//! cgroup v1 one path serves every controller, so the root is built from the deepest of the
//! agent's own per-controller paths (the others must be its prefixes): every cgroup Berth
//! creates is then below the agent's own cgroup in every hierarchy.

use std::path::{Path, PathBuf};

use libcgroups::common::{AnyCgroupManager, CgroupManager};

/// A cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `/proc/self/cgroup` could not be read or used.
    #[error("reading /proc/self/cgroup: {0}")]
    Own(String),
    /// libcgroups refused.
    #[error("cgroup {path}: {reason}")]
    Manager {
        /// The cgroup.
        path: PathBuf,
        /// libcgroups' message.
        reason: String,
    },
}

fn manager_err(path: &Path) -> impl Fn(String) -> CgroupError + '_ {
    move |reason| CgroupError::Manager {
        path: path.to_path_buf(),
        reason,
    }
}

const MOUNT: &str = "/sys/fs/cgroup";

/// True on a pure cgroup v2 host.
pub fn is_v2() -> bool {
    Path::new(MOUNT).join("cgroup.controllers").exists()
}

/// The controllers Berth needs on v1.
const V1_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids", "devices", "freezer"];

/// The agent's own cgroup, as one absolute path valid for every hierarchy Berth uses.
pub fn own_cgroup() -> Result<PathBuf, CgroupError> {
    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| CgroupError::Own(e.to_string()))?;
    own_cgroup_from(&text, is_v2())
}

/// [`own_cgroup`] on given `/proc/self/cgroup` text.
pub fn own_cgroup_from(text: &str, v2: bool) -> Result<PathBuf, CgroupError> {
    let mut paths = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        let wanted = if v2 {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| V1_CONTROLLERS.contains(&c))
        };
        if wanted {
            paths.push(PathBuf::from(path));
        }
    }
    let deepest = paths
        .iter()
        .max_by_key(|p| p.components().count())
        .cloned()
        .ok_or_else(|| CgroupError::Own("no usable cgroup controller".into()))?;
    if let Some(other) = paths.iter().find(|p| !deepest.starts_with(p)) {
        return Err(CgroupError::Own(format!(
            "the agent's cgroups {} and {} are not nested; set --cgroup-root",
            deepest.display(),
            other.display()
        )));
    }
    Ok(deepest)
}

/// Berth's default cgroup root: `berth` below the agent's own cgroup.
pub fn default_root() -> Result<PathBuf, CgroupError> {
    Ok(own_cgroup()?.join("berth"))
}

/// Controllers Berth hands down on cgroup v2 when the host has them.
const V2_CONTROLLERS: &[&str] = &["cpu", "memory", "pids", "cpuset", "io"];

/// Makes the agent's own cgroup `own` able to hand its controllers to containers below it,
/// on cgroup v2.
///
/// A v2 cgroup that holds processes cannot enable controllers for its children (the "no
/// internal processes" rule; only the root is exempt). An agent started by systemd with
/// `Delegate=yes` sits in its unit's cgroup, so without this its containers would get no
/// cpu, memory or pids controller. As containerd and the kubelet do under delegation, the
/// agent moves itself into a leaf of its own subtree (`<own>/agent`; its monitors follow it
/// there) and enables the controllers on `own`. Returns the leaf when it moved. Other
/// processes in `own` are not the agent's to move: that is an error that says so.
pub fn delegate_v2(own: &Path) -> Result<Option<PathBuf>, CgroupError> {
    delegate_v2_in(Path::new(MOUNT), own, std::process::id())
}

/// [`delegate_v2`] below a given cgroup2 mount, for the process `pid`.
pub fn delegate_v2_in(mount: &Path, own: &Path, pid: u32) -> Result<Option<PathBuf>, CgroupError> {
    let rel = own.strip_prefix("/").unwrap_or(own);
    if rel.as_os_str().is_empty() {
        return Ok(None);
    }
    let dir = mount.join(rel);
    let err = |p: &Path, what: String| CgroupError::Manager {
        path: p.to_path_buf(),
        reason: what,
    };
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<&str> = V2_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .collect();
    let ctl = dir.join("cgroup.subtree_control");
    let enable = || -> Result<(), std::io::Error> {
        let enabled = std::fs::read_to_string(&ctl).unwrap_or_default();
        for c in &wanted {
            if !enabled.split_whitespace().any(|e| e == *c) {
                std::fs::write(&ctl, format!("+{c}"))?;
            }
        }
        Ok(())
    };
    let enabled = std::fs::read_to_string(&ctl).unwrap_or_default();
    if wanted
        .iter()
        .all(|c| enabled.split_whitespace().any(|e| e == *c))
    {
        return Ok(None);
    }
    let procs: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if procs.is_empty() {
        enable().map_err(|e| err(&ctl, format!("enabling {}: {e}", wanted.join(" "))))?;
        return Ok(None);
    }
    let others: Vec<u32> = procs.iter().copied().filter(|p| *p != pid).collect();
    if !others.is_empty() {
        return Err(err(
            &dir,
            format!(
                "cgroup v2: it holds processes besides the agent ({}), so it cannot hand cpu, memory and pids to containers below it; run the agent in a cgroup of its own (systemd: Delegate=yes) or set --cgroup-root",
                others.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    // Into the leaf before any controller is enabled: the kernel refuses to move a process
    // into a child of a cgroup that already hands some down while it holds processes.
    let leaf = dir.join("agent");
    if !leaf.is_dir() {
        std::fs::create_dir(&leaf).map_err(|e| err(&leaf, format!("creating: {e}")))?;
    }
    std::fs::write(leaf.join("cgroup.procs"), pid.to_string())
        .map_err(|e| err(&leaf, format!("moving the agent in: {e}")))?;
    enable().map_err(|e| err(&ctl, format!("enabling {}: {e}", wanted.join(" "))))?;
    Ok(Some(own.join("agent")))
}

/// libcgroups' manager for an absolute cgroup path.
pub fn manager(path: &Path) -> Result<AnyCgroupManager, CgroupError> {
    libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: path.to_path_buf(),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| manager_err(path)(e.to_string()))
}

pub use berth_api::stats::Usage;

/// Reads usage through libcgroups.
pub fn usage(manager: &AnyCgroupManager, path: &Path) -> Result<Usage, CgroupError> {
    let s = manager
        .stats()
        .map_err(|e| manager_err(path)(e.to_string()))?;
    let cache = s
        .memory
        .stats
        .get("cache")
        .or_else(|| s.memory.stats.get("file"))
        .copied()
        .unwrap_or(s.memory.cache);
    // libcgroups passes v2's microsecond counters through unconverted; v1 is nanoseconds.
    let ns = match manager {
        AnyCgroupManager::V2(_) => 1000,
        _ => 1,
    };
    Ok(Usage {
        cpu_usage_ns: s.cpu.usage.usage_total * ns,
        cpu_user_ns: s.cpu.usage.usage_user * ns,
        cpu_system_ns: s.cpu.usage.usage_kernel * ns,
        cpu_periods: s.cpu.throttling.periods,
        cpu_throttled_periods: s.cpu.throttling.throttled_periods,
        cpu_throttled_ns: s.cpu.throttling.throttled_time * ns,
        memory_usage: s.memory.memory.usage,
        memory_limit: s.memory.memory.limit,
        memory_cache: cache,
        memory_max_usage: s.memory.memory.max_usage,
        pids_current: s.pids.current,
        pids_limit: s.pids.limit,
        oom_kills: oom_kills(path),
        disk: None,
    })
}

pub use berth_monitor::cgroup::{oom_kills, oom_kills_in};

/// Processes in the cgroup.
pub fn pids(manager: &AnyCgroupManager, path: &Path) -> Result<Vec<i32>, CgroupError> {
    Ok(manager
        .get_all_pids()
        .map_err(|e| manager_err(path)(e.to_string()))?
        .into_iter()
        .map(|p| p.as_raw())
        .collect())
}

/// True if the cgroup exists in any hierarchy (a failed creation may have made only some).
pub fn exists(path: &Path) -> bool {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if is_v2() {
        return Path::new(MOUNT).join(rel).is_dir();
    }
    std::fs::read_dir(MOUNT)
        .map(|d| d.flatten().any(|e| e.path().join(rel).is_dir()))
        .unwrap_or(false)
}

/// SIGKILLs every process in the cgroup until it is empty (`berth_monitor::cgroup::kill_all`:
/// v2 `cgroup.kill`, else kill passes with the v1 freezer holding forks in between).
///
/// By hand, not through libcgroups: its freezer re-creates a cgroup directory that the
/// container's monitor removed a moment before (both kill at a container's end), which
/// left an empty cgroup behind.
pub fn kill_all(path: &Path) -> Result<(), CgroupError> {
    berth_monitor::cgroup::kill_all(path);
    Ok(())
}

/// How long [`remove`] keeps trying: a killed process (an exec or a health check whose
/// parent has not reaped it yet) keeps a cgroup busy until it is gone, which under load
/// takes longer than libcgroups' own ~100 ms of retries.
const REMOVE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Kills what is left and removes the cgroup in every hierarchy (no error if already gone).
/// Blocking: polls until the cgroup is empty and gone, or [`REMOVE_PATIENCE`] has passed.
pub fn remove(path: &Path) -> Result<(), CgroupError> {
    let deadline = std::time::Instant::now() + REMOVE_PATIENCE;
    loop {
        if !exists(path) {
            return Ok(());
        }
        kill_all(path)?;
        let m = manager(path)?;
        match m.remove() {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(manager_err(path)(e.to_string()));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

/// Limits of a parent cgroup (a QoS class or a pod): only weights and caps, no processes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ParentLimits {
    /// CPU weight on the v1 shares scale (2..262144).
    pub cpu_shares: Option<u64>,
    /// CPUs of quota.
    pub cpus: Option<f64>,
    /// Memory cap in bytes.
    pub memory: Option<i64>,
}

/// Creates a parent cgroup in every hierarchy Berth uses and writes its limits.
///
/// Written by hand, not through libcgroups: its managers set up a cgroup for a process
/// (`add_task` creates the directories), and a parent holds no process; here it is a
/// `mkdir` and up to three files per hierarchy.
pub fn ensure_parent(path: &Path, limits: &ParentLimits) -> Result<(), CgroupError> {
    ensure_parent_in(Path::new(MOUNT), path, limits, is_v2())
}

/// [`ensure_parent`] below a given cgroupfs mount (a fake tree in tests).
pub fn ensure_parent_in(
    mount: &Path,
    path: &Path,
    limits: &ParentLimits,
    v2: bool,
) -> Result<(), CgroupError> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let err = |what: &str, p: &Path, e: std::io::Error| CgroupError::Manager {
        path: p.to_path_buf(),
        reason: format!("{what}: {e}"),
    };
    let write = |p: PathBuf, value: String| -> Result<(), CgroupError> {
        std::fs::write(&p, &value).map_err(|e| err(&format!("writing {value:?}"), &p, e))
    };
    const PERIOD: u64 = 100_000;
    if v2 {
        // Each level must hand cpu, memory and pids down to the next.
        let mut dir = mount.to_path_buf();
        for part in rel.components() {
            let ctl = dir.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&ctl).unwrap_or_default();
            for c in ["cpu", "memory", "pids"] {
                if !enabled.split_whitespace().any(|e| e == c) {
                    let _ = std::fs::write(&ctl, format!("+{c}"));
                }
            }
            dir.push(part);
            if !dir.is_dir() {
                std::fs::create_dir(&dir).map_err(|e| err("creating", &dir, e))?;
            }
        }
        if let Some(shares) = limits.cpu_shares {
            // libcontainer's (and runc's) shares → weight mapping.
            let weight = 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142;
            write(dir.join("cpu.weight"), weight.to_string())?;
        }
        if let Some(cpus) = limits.cpus {
            let quota = (cpus * PERIOD as f64).round() as u64;
            write(dir.join("cpu.max"), format!("{quota} {PERIOD}"))?;
        }
        if let Some(m) = limits.memory {
            write(dir.join("memory.max"), m.to_string())?;
        }
        return Ok(());
    }
    for controller in V1_CONTROLLERS {
        let hierarchy = mount.join(controller);
        if !hierarchy.is_dir() {
            continue;
        }
        let dir = hierarchy.join(rel);
        std::fs::create_dir_all(&dir).map_err(|e| err("creating", &dir, e))?;
        match *controller {
            "cpu" => {
                if let Some(shares) = limits.cpu_shares {
                    write(dir.join("cpu.shares"), shares.to_string())?;
                }
                if let Some(cpus) = limits.cpus {
                    write(dir.join("cpu.cfs_period_us"), PERIOD.to_string())?;
                    let quota = (cpus * PERIOD as f64).round() as u64;
                    write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
                }
            }
            "memory" => {
                if let Some(m) = limits.memory {
                    write(dir.join("memory.limit_in_bytes"), m.to_string())?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Removes empty cgroup directories from `path` up to (and including) `top`, in every
/// hierarchy; stops at the first one still in use. For the cgroup root of a test agent.
pub fn remove_empty_up_to(path: &Path, top: &Path) {
    let mounts: Vec<PathBuf> = if is_v2() {
        vec![PathBuf::from(MOUNT)]
    } else {
        std::fs::read_dir(MOUNT)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for mount in mounts {
        let mut p = path.to_path_buf();
        while p.starts_with(top) {
            let full = mount.join(p.strip_prefix("/").unwrap_or(&p));
            if full.is_dir() && std::fs::remove_dir(&full).is_err() {
                break;
            }
            if !p.pop() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn own_cgroup_picks_the_deepest_nested_path() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n2:cpuacct:/\n0::/\n";
        assert_eq!(
            own_cgroup_from(v1, false).unwrap(),
            Path::new("/process_api/abc")
        );
        let v2 = "0::/system.slice/berth.service\n";
        assert_eq!(
            own_cgroup_from(v2, true).unwrap(),
            Path::new("/system.slice/berth.service")
        );
        let split = "4:memory:/a/b\n1:cpu:/c\n";
        assert!(own_cgroup_from(split, false).is_err());
    }

    #[test]
    fn parent_limits_in_fake_trees() {
        let limits = ParentLimits {
            cpu_shares: Some(2),
            cpus: Some(1.5),
            memory: Some(1 << 20),
        };
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.subtree_control"), "").unwrap();
        ensure_parent_in(v2.path(), Path::new("/berth/besteffort/pod"), &limits, true).unwrap();
        let pod = v2.path().join("berth/besteffort/pod");
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(pod.join("cpu.weight")), "1");
        assert_eq!(read(pod.join("cpu.max")), "150000 100000");
        assert_eq!(read(pod.join("memory.max")), "1048576");
        // A plain file stands in for subtree_control: the last write wins.
        assert_eq!(read(v2.path().join("cgroup.subtree_control")), "+pids");

        let v1 = tempfile::tempdir().unwrap();
        for c in ["cpu", "memory", "pids"] {
            std::fs::create_dir(v1.path().join(c)).unwrap();
        }
        ensure_parent_in(v1.path(), Path::new("/berth/g/pod"), &limits, false).unwrap();
        let cpu = v1.path().join("cpu/berth/g/pod");
        assert_eq!(read(cpu.join("cpu.shares")), "2");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "150000");
        assert_eq!(
            read(v1.path().join("memory/berth/g/pod/memory.limit_in_bytes")),
            "1048576"
        );
        assert!(v1.path().join("pids/berth/g/pod").is_dir());
    }

    #[test]
    fn v2_delegation_enables_controllers_or_says_who_is_in_the_way() {
        let t = tempfile::tempdir().unwrap();
        let own = t.path().join("svc");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::write(own.join("cgroup.subtree_control"), "").unwrap();
        std::fs::write(own.join("cgroup.procs"), "42\n").unwrap();
        // Only the agent there: it moves into a leaf, then the controllers are enabled.
        assert_eq!(
            delegate_v2_in(t.path(), Path::new("/svc"), 42).unwrap(),
            Some(PathBuf::from("/svc/agent"))
        );
        assert_eq!(
            std::fs::read_to_string(own.join("agent/cgroup.procs")).unwrap(),
            "42"
        );
        // The root is exempt from the rule.
        assert_eq!(delegate_v2_in(t.path(), Path::new("/"), 42).unwrap(), None);
        // Another process is in the way: an error naming it, nothing moved.
        std::fs::write(own.join("cgroup.subtree_control"), "").unwrap();
        std::fs::write(own.join("cgroup.procs"), "42\n7\n").unwrap();
        let e = delegate_v2_in(t.path(), Path::new("/svc"), 42).unwrap_err();
        assert!(e.to_string().contains("besides the agent (7)"), "{e}");
    }

    #[test]
    fn v2_stats_from_a_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        let cg = root.path().join("berth/c1");
        std::fs::create_dir_all(&cg).unwrap();
        for (f, v) in [
            ("cgroup.controllers", "cpu memory pids\n"),
            ("cpu.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
            ("memory.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
            ("io.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
            ("io.stat", ""),
            ("cpu.stat", "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\nnr_periods 10\nnr_throttled 4\nthrottled_usec 300\n"),
            ("memory.current", "4096\n"),
            ("memory.max", "8192\n"),
            ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"),
            ("memory.swap.current", "0\n"),
            ("memory.swap.max", "max\n"),
            ("memory.swap.events", "max 0\nfail 0\n"),
            ("memory.stat", "file 1024\nanon 3072\n"),
            ("pids.current", "3\n"),
            ("pids.max", "max\n"),
        ] {
            std::fs::write(cg.join(f), v).unwrap();
        }
        // libcgroups reads hugetlb files for every page size the host has.
        for size in ["2MB", "1GB"] {
            for (f, v) in [("current", "0\n"), ("max", "max\n"), ("events", "max 0\n")] {
                std::fs::write(cg.join(format!("hugetlb.{size}.{f}")), v).unwrap();
            }
        }
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let m =
            libcgroups::v2::manager::Manager::new(root.path().to_path_buf(), "/berth/c1".into())
                .unwrap()
                .any();
        let u = usage(&m, Path::new("/berth/c1")).unwrap();
        assert_eq!(u.cpu_usage_ns, 2_000_000);
        assert_eq!(u.cpu_throttled_periods, 4);
        assert_eq!(u.memory_usage, 4096);
        assert_eq!(u.memory_cache, 1024);
        assert_eq!(u.pids_current, 3);
    }
}
