//! The once-a-second usage sample behind the estimator: per cgroup the CPU time used so far
//! and the memory working set, node-wide CPU time, memory available and PSI.
//!
//! Read by hand rather than through libcgroups' `stats()` (which `berth stats` uses): that
//! reads every controller's files, and the agent samples every container every second;
//! here it is two or three small files per container.
//!
//! | figure | cgroup v1 | cgroup v2 |
//! |---|---|---|
//! | CPU time (ns) | `cpuacct/<path>/cpuacct.usage` | `<path>/cpu.stat` `usage_usec` × 1000 |
//! | working set | `memory.usage_in_bytes` − `total_inactive_file` | `memory.current` − `inactive_file` |
//! | pressure | node-wide `/proc/pressure/*` | `<path>/{cpu,memory,io}.pressure` |

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use berth_monitor::cgroup::parse_flat_keyed;

/// Where cgroupfs is mounted.
const MOUNT: &str = "/sys/fs/cgroup";

/// One cgroup's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupSample {
    /// CPU time used since the cgroup was made (ns).
    pub cpu_ns: u64,
    /// Memory in use minus inactive file pages (bytes).
    pub working_set: u64,
}

/// Reads a cgroup's counters (`path` as recorded: below the hierarchy's root); `None` when
/// the cgroup is gone.
pub fn cgroup(path: &Path) -> Option<CgroupSample> {
    cgroup_in(Path::new(MOUNT), path, crate::cgroups::is_v2())
}

/// [`cgroup`] below a given mount (tests use a fake tree).
pub fn cgroup_in(mount: &Path, path: &Path, v2: bool) -> Option<CgroupSample> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let read = |p: PathBuf| std::fs::read_to_string(p).ok();
    if v2 {
        let dir = mount.join(rel);
        let cpu = read(dir.join("cpu.stat"))?;
        let cpu_ns = parse_flat_keyed(&cpu).get("usage_usec").copied()? * 1000;
        let current: u64 = read(dir.join("memory.current"))
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let stat = read(dir.join("memory.stat")).unwrap_or_default();
        let inactive = parse_flat_keyed(&stat)
            .get("inactive_file")
            .copied()
            .unwrap_or(0);
        return Some(CgroupSample {
            cpu_ns,
            working_set: current.saturating_sub(inactive),
        });
    }
    let cpu_ns = read(mount.join("cpuacct").join(rel).join("cpuacct.usage"))?
        .trim()
        .parse()
        .ok()?;
    let memory = mount.join("memory").join(rel);
    let usage: u64 = read(memory.join("memory.usage_in_bytes"))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let stat = read(memory.join("memory.stat")).unwrap_or_default();
    let inactive = parse_flat_keyed(&stat)
        .get("total_inactive_file")
        .copied()
        .unwrap_or(0);
    Some(CgroupSample {
        cpu_ns,
        working_set: usage.saturating_sub(inactive),
    })
}

/// Node-wide counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeSample {
    /// CPU time spent busy on all CPUs (ns): every `/proc/stat` column but idle and iowait.
    pub busy_ns: u64,
    /// Memory total (bytes).
    pub memory_total: u64,
    /// Memory available (bytes, the kernel's `MemAvailable`).
    pub memory_available: u64,
}

/// Reads `/proc/stat` and `/proc/meminfo`; CPU time counts only the CPUs in `cpus` (the
/// ones containers may use: what runs on reserved CPUs competes with no container), or
/// every CPU when `cpus` is empty.
pub fn node(cpus: &std::collections::BTreeSet<u32>) -> NodeSample {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    node_from(&stat, &meminfo, clock_ticks(), cpus)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100)
}

/// [`node`] from the files' text (`hz`: clock ticks per second).
pub fn node_from(
    stat: &str,
    meminfo: &str,
    hz: u64,
    cpus: &std::collections::BTreeSet<u32>,
) -> NodeSample {
    let busy = |l: &str| -> u64 {
        l.split_whitespace()
            .skip(1)
            .take(8)
            .enumerate()
            // user nice system idle iowait irq softirq steal: not idle (3), iowait (4).
            .filter(|(i, _)| *i != 3 && *i != 4)
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .sum()
    };
    let busy_ticks: u64 = if cpus.is_empty() {
        stat.lines().find(|l| l.starts_with("cpu ")).map_or(0, busy)
    } else {
        stat.lines()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .and_then(|f| f.strip_prefix("cpu"))
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| cpus.contains(&n))
            })
            .map(busy)
            .sum()
    };
    let kb = |key: &str| -> u64 {
        meminfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    NodeSample {
        busy_ns: busy_ticks * (1_000_000_000 / hz.max(1)),
        memory_total: kb("MemTotal:"),
        memory_available: kb("MemAvailable:"),
    }
}

/// Pressure stall information of one resource: the share of the last 10 s some task
/// (`some`) or every task (`full`) waited for it, in percent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    /// `some avg10`.
    pub some_avg10: f64,
    /// `full avg10` (0 for CPU on kernels that do not report it).
    pub full_avg10: f64,
}

/// PSI of CPU, memory and I/O, node-wide (`/proc/pressure`); `None` when the kernel has
/// none (built without `CONFIG_PSI` or booted with `psi=0`).
pub fn node_pressure() -> Option<[Pressure; 3]> {
    pressure_in(Path::new("/proc/pressure"), ["cpu", "memory", "io"])
}

/// PSI of a cgroup (v2 only: `cpu.pressure`, `memory.pressure`, `io.pressure`).
pub fn cgroup_pressure(path: &Path) -> Option<[Pressure; 3]> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    pressure_in(
        &Path::new(MOUNT).join(rel),
        ["cpu.pressure", "memory.pressure", "io.pressure"],
    )
}

fn pressure_in(dir: &Path, files: [&str; 3]) -> Option<[Pressure; 3]> {
    let mut out = [Pressure::default(); 3];
    for (slot, file) in out.iter_mut().zip(files) {
        *slot = parse_pressure(&std::fs::read_to_string(dir.join(file)).ok()?);
    }
    Some(out)
}

/// Parses a PSI file (`some avg10=0.00 avg60=… total=…` and `full …`).
pub fn parse_pressure(text: &str) -> Pressure {
    let avg10 = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))
            .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("avg10=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    Pressure {
        some_avg10: avg10("some "),
        full_avg10: avg10("full "),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::float_cmp)]
    use super::*;

    #[test]
    fn reads_v1_and_v2_trees() {
        let t = tempfile::tempdir().unwrap();
        let v1 = t.path().join("v1");
        let cg = Path::new("/berth/guaranteed/c1");
        std::fs::create_dir_all(v1.join("cpuacct/berth/guaranteed/c1")).unwrap();
        std::fs::create_dir_all(v1.join("memory/berth/guaranteed/c1")).unwrap();
        std::fs::write(
            v1.join("cpuacct/berth/guaranteed/c1/cpuacct.usage"),
            "5000\n",
        )
        .unwrap();
        std::fs::write(
            v1.join("memory/berth/guaranteed/c1/memory.usage_in_bytes"),
            "1000\n",
        )
        .unwrap();
        std::fs::write(
            v1.join("memory/berth/guaranteed/c1/memory.stat"),
            "cache 10\ntotal_inactive_file 300\n",
        )
        .unwrap();
        assert_eq!(
            cgroup_in(&v1, cg, false),
            Some(CgroupSample {
                cpu_ns: 5000,
                working_set: 700
            })
        );
        let v2 = t.path().join("v2");
        std::fs::create_dir_all(v2.join("berth/guaranteed/c1")).unwrap();
        std::fs::write(
            v2.join("berth/guaranteed/c1/cpu.stat"),
            "usage_usec 7\nuser_usec 5\n",
        )
        .unwrap();
        std::fs::write(v2.join("berth/guaranteed/c1/memory.current"), "900\n").unwrap();
        std::fs::write(
            v2.join("berth/guaranteed/c1/memory.stat"),
            "anon 500\ninactive_file 100\n",
        )
        .unwrap();
        assert_eq!(
            cgroup_in(&v2, cg, true),
            Some(CgroupSample {
                cpu_ns: 7000,
                working_set: 800
            })
        );
        assert_eq!(cgroup_in(&v2, Path::new("/gone"), true), None);
    }

    #[test]
    fn node_counters_and_pressure_parse() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\ncpu1 10 0 0 9 9 0 0 0 0 0\n";
        let meminfo = "MemTotal:       2048 kB\nMemFree: 10 kB\nMemAvailable:    1024 kB\n";
        let n = node_from(stat, meminfo, 100, &Default::default());
        // 100 + 5 + 50 + 1 + 2 + 3 ticks of 10 ms.
        assert_eq!(n.busy_ns, 161 * 10_000_000);
        // Only CPU 1 (CPU 0 reserved): 10 ticks.
        let only1 = node_from(stat, meminfo, 100, &[1].into_iter().collect());
        assert_eq!(only1.busy_ns, 10 * 10_000_000);
        assert_eq!(n.memory_total, 2048 * 1024);
        assert_eq!(n.memory_available, 1024 * 1024);
        let p = parse_pressure(
            "some avg10=1.50 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.25 avg60=0 avg300=0 total=1\n",
        );
        assert_eq!(p.some_avg10, 1.5);
        assert_eq!(p.full_avg10, 0.25);
    }
}
