//! The knobs of a parent cgroup that reclaim turns (the revocable tier) and the CPU set an
//! agent keeps for itself, on cgroup v1 and v2:
//!
//! | knob | cgroup v1 | cgroup v2 |
//! |---|---|---|
//! | CPU cap | each task's `cpu.cfs_quota_us`: its share of the cap (see below) | `cpu.max` (`max`: none) |
//! | memory push-back | `memory/<path>/memory.soft_limit_in_bytes` (-1: none) | `memory.high` (`max`) |
//! | freeze | `freezer/<path>/freezer.state` `FROZEN`/`THAWED` | `cgroup.freeze` `1`/`0` |
//! | CPU set | `cpuset/<path>/cpuset.cpus` (each level filled from its parent) | `cpuset.cpus` |
//!
//! On v1 the kernel refuses a parent quota below a child's (`EINVAL`), and a child with a
//! larger quota could then not even be created under a capped parent; so there the cap is
//! split evenly over the tier's tasks, each held to the smaller of its share and its own
//! limit, and given back its own limit when the cap goes. v2 caps the parent alone (a
//! child's `cpu.max` above its parent's is allowed; the smaller one holds).
//!
//! Written by hand, not through libcgroups: its managers configure the cgroup of a process
//! from a whole OCI resources block; here one file changes at a time, on a cgroup that holds
//! no process itself, every second if need be.

use std::path::{Path, PathBuf};

/// Where cgroupfs is mounted.
const MOUNT: &str = "/sys/fs/cgroup";

/// The CFS period Berth uses everywhere (µs).
pub const PERIOD_US: u64 = 100_000;

/// Smallest quota the kernel takes (µs).
const MIN_QUOTA_US: u64 = 1_000;

/// A knob could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// A file of the cgroup.
    #[error("cgroup file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// One cgroup in every hierarchy (v1) or the unified one (v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    mount: PathBuf,
    rel: PathBuf,
    v2: bool,
}

impl Tier {
    /// The cgroup at `path` (absolute from each hierarchy's root) on this host.
    pub fn new(path: &Path) -> Self {
        Self::in_mount(Path::new(MOUNT), path, crate::cgroups::is_v2())
    }

    /// The cgroup at `path` below a given cgroupfs mount (a fake tree in tests).
    pub fn in_mount(mount: &Path, path: &Path, v2: bool) -> Self {
        Tier {
            mount: mount.to_path_buf(),
            rel: path.strip_prefix("/").unwrap_or(path).to_path_buf(),
            v2,
        }
    }

    /// The file `name` of the `controller` hierarchy (v1) or the unified one.
    fn file(&self, controller: &str, name: &str) -> PathBuf {
        if self.v2 {
            self.mount.join(&self.rel).join(name)
        } else {
            self.mount.join(controller).join(&self.rel).join(name)
        }
    }

    fn write(&self, controller: &str, name: &str, value: &str) -> Result<(), TierError> {
        let path = self.file(controller, name);
        std::fs::write(&path, value).map_err(|e| TierError::File {
            reason: format!("writing {value:?}: {e}"),
            path,
        })
    }

    fn read(&self, controller: &str, name: &str) -> Result<String, TierError> {
        let path = self.file(controller, name);
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_string())
            .map_err(|e| TierError::File {
                reason: format!("reading: {e}"),
                path,
            })
    }

    /// Caps the CPU of everything below at `millicores` (`None`: no cap). On v1 the cap is
    /// split over `tasks` (their cgroups with their own limits in millicores) instead, and
    /// `None` gives each its own limit back; a task whose cgroup is gone is skipped.
    pub fn set_cpu_cap(
        &self,
        millicores: Option<u64>,
        tasks: &[CappedTask],
    ) -> Result<(), TierError> {
        let quota = |m: u64| (m * PERIOD_US / 1000).max(MIN_QUOTA_US);
        if self.v2 {
            let value = match millicores {
                Some(m) => format!("{} {PERIOD_US}", quota(m)),
                None => format!("max {PERIOD_US}"),
            };
            return self.write("cpu", "cpu.max", &value);
        }
        let share = millicores.map(|m| m / (tasks.len().max(1) as u64));
        for t in tasks {
            let own = Tier::in_mount(&self.mount, &t.cgroup, false);
            let wanted = match (share, t.limit) {
                (Some(s), Some(l)) => Some(s.min(l)),
                (Some(s), None) => Some(s),
                (None, limit) => limit,
            };
            let value = wanted.map_or("-1".to_string(), |m| quota(m).to_string());
            let result = own
                .write("cpu", "cpu.cfs_period_us", &PERIOD_US.to_string())
                .and_then(|()| own.write("cpu", "cpu.cfs_quota_us", &value));
            match result {
                Err(TierError::File { path, .. }) if !path.exists() => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// The CPU cap in millicores of this cgroup's own quota, if any.
    pub fn cpu_cap(&self) -> Result<Option<u64>, TierError> {
        let (quota, period) = if self.v2 {
            let text = self.read("cpu", "cpu.max")?;
            let mut parts = text.split_whitespace();
            let quota = parts.next().unwrap_or("max").to_string();
            let period = parts.next().unwrap_or("100000").to_string();
            (quota, period)
        } else {
            (
                self.read("cpu", "cpu.cfs_quota_us")?,
                self.read("cpu", "cpu.cfs_period_us")?,
            )
        };
        let period: u64 = period.parse().unwrap_or(PERIOD_US).max(1);
        Ok(quota.parse::<u64>().ok().map(|q| q * 1000 / period))
    }

    /// Pushes memory of everything below back toward `bytes` (`None`: no push): v2's
    /// `memory.high` throttles allocations and reclaims above it; v1 has only the soft
    /// limit, which the kernel enforces when the host itself runs short.
    pub fn set_memory_high(&self, bytes: Option<u64>) -> Result<(), TierError> {
        if self.v2 {
            let value = bytes.map_or("max".to_string(), |b| b.to_string());
            return self.write("memory", "memory.high", &value);
        }
        let value = bytes.map_or("-1".to_string(), |b| b.to_string());
        self.write("memory", "memory.soft_limit_in_bytes", &value)
    }

    /// Makes everything below `SCHED_IDLE` as a group (`cpu.idle`, v1 and v2, kernel 5.15+):
    /// it runs only when nothing else wants the CPU and gives way at once when something
    /// wakes, which the lowest weight alone does not do. `false` when the kernel has no
    /// such file.
    pub fn set_idle(&self) -> Result<bool, TierError> {
        if !self.file("cpu", "cpu.idle").exists() {
            return Ok(false);
        }
        self.write("cpu", "cpu.idle", "1").map(|()| true)
    }

    /// Freezes (`true`) or thaws everything below.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), TierError> {
        if self.v2 {
            return self.write("", "cgroup.freeze", if frozen { "1" } else { "0" });
        }
        self.write(
            "freezer",
            "freezer.state",
            if frozen { "FROZEN" } else { "THAWED" },
        )
    }

    /// Whether it is frozen (or freezing).
    pub fn frozen(&self) -> Result<bool, TierError> {
        if self.v2 {
            return Ok(self.read("", "cgroup.freeze")? == "1");
        }
        Ok(self.read("freezer", "freezer.state")? != "THAWED")
    }

    /// Undoes every reclaim knob: no CPU cap, no memory push, thawed. Missing files (a
    /// controller the host lacks) are skipped; the first other failure is returned.
    pub fn release(&self) -> Result<(), TierError> {
        let mut first = None;
        for result in [
            self.set_frozen(false),
            self.set_cpu_cap(None, &[]),
            self.set_memory_high(None),
        ] {
            if let Err(TierError::File { path, reason }) = result {
                if path.exists() && first.is_none() {
                    first = Some(TierError::File { path, reason });
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Keeps everything below on `cpus` (the kernel's list syntax). On v1 every level of
    /// the cpuset hierarchy down to it is created and filled from its parent first (a new
    /// v1 cpuset is empty, and an empty one takes no process); on v2 the cpuset controller
    /// is handed down each level.
    pub fn restrict_cpus(&self, cpus: &str) -> Result<(), TierError> {
        let err = |path: &Path, what: &str, e: std::io::Error| TierError::File {
            path: path.to_path_buf(),
            reason: format!("{what}: {e}"),
        };
        let base = if self.v2 {
            self.mount.clone()
        } else {
            self.mount.join("cpuset")
        };
        let mut dir = base;
        for part in self.rel.components() {
            if self.v2 {
                let ctl = dir.join("cgroup.subtree_control");
                let enabled = std::fs::read_to_string(&ctl).unwrap_or_default();
                if !enabled.split_whitespace().any(|c| c == "cpuset") {
                    std::fs::write(&ctl, "+cpuset").map_err(|e| err(&ctl, "enabling cpuset", e))?;
                }
            }
            let parent = dir.clone();
            dir.push(part);
            if !dir.is_dir() {
                std::fs::create_dir(&dir).map_err(|e| err(&dir, "creating", e))?;
            }
            if !self.v2 {
                for name in ["cpuset.mems", "cpuset.cpus"] {
                    let own = dir.join(name);
                    let current = std::fs::read_to_string(&own).unwrap_or_default();
                    if current.trim().is_empty() {
                        let from = std::fs::read_to_string(parent.join(name))
                            .map_err(|e| err(&parent.join(name), "reading", e))?;
                        std::fs::write(&own, from.trim())
                            .map_err(|e| err(&own, "filling from its parent", e))?;
                    }
                }
            }
        }
        let file = dir.join("cpuset.cpus");
        std::fs::write(&file, cpus).map_err(|e| err(&file, &format!("writing {cpus:?}"), e))
    }
}

/// A task of a capped tier, on v1: its cgroup and its own CPU limit (millicores).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CappedTask {
    /// Its cgroup (absolute from each hierarchy's root).
    pub cgroup: PathBuf,
    /// Its own limit (`--cpus`), if any.
    pub limit: Option<u64>,
}

/// CPUs the host has online (`/sys/devices/system/cpu/online`), as a set.
pub fn online_cpus() -> std::collections::BTreeSet<u32> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|t| berth_api::task::parse_cpuset("online", t.trim()).ok())
        .unwrap_or_else(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            (0..n).collect()
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fake(v2: bool) -> (tempfile::TempDir, Tier) {
        let dir = tempfile::tempdir().unwrap();
        let tier = Tier::in_mount(dir.path(), Path::new("/a/revocable"), v2);
        if v2 {
            let d = dir.path().join("a/revocable");
            std::fs::create_dir_all(&d).unwrap();
            for (f, v) in [
                ("cpu.max", "max 100000"),
                ("memory.high", "max"),
                ("cgroup.freeze", "0"),
            ] {
                std::fs::write(d.join(f), v).unwrap();
            }
        } else {
            for c in ["cpu", "memory", "freezer"] {
                std::fs::create_dir_all(dir.path().join(c).join("a/revocable")).unwrap();
            }
            let d = |c: &str| dir.path().join(c).join("a/revocable");
            std::fs::write(d("cpu").join("cpu.cfs_quota_us"), "-1").unwrap();
            std::fs::write(d("cpu").join("cpu.cfs_period_us"), "100000").unwrap();
            std::fs::write(d("freezer").join("freezer.state"), "THAWED").unwrap();
        }
        (dir, tier)
    }

    #[test]
    fn knobs_round_trip_on_both_versions() {
        for v2 in [false, true] {
            let (dir, tier) = fake(v2);
            assert_eq!(tier.cpu_cap().unwrap(), None);
            if v2 {
                tier.set_cpu_cap(Some(300), &[]).unwrap();
                assert_eq!(tier.cpu_cap().unwrap(), Some(300));
                // Below the kernel's minimum quota: the minimum.
                tier.set_cpu_cap(Some(0), &[]).unwrap();
                assert_eq!(tier.cpu_cap().unwrap(), Some(10));
            } else {
                // v1: split over the tasks, each at most its own limit; then given back.
                let task = |name: &str, limit| {
                    let rel = format!("a/revocable/{name}");
                    std::fs::create_dir_all(dir.path().join("cpu").join(&rel)).unwrap();
                    CappedTask {
                        cgroup: PathBuf::from("/").join(rel),
                        limit,
                    }
                };
                let tasks = [task("t1", Some(100)), task("t2", None)];
                let gone = CappedTask {
                    cgroup: PathBuf::from("/a/revocable/gone"),
                    limit: None,
                };
                let all = [tasks[0].clone(), tasks[1].clone(), gone];
                tier.set_cpu_cap(Some(400), &all).unwrap();
                let cap = |t: &CappedTask| {
                    Tier::in_mount(dir.path(), &t.cgroup, false)
                        .cpu_cap()
                        .unwrap()
                };
                assert_eq!(cap(&tasks[0]), Some(100));
                assert_eq!(cap(&tasks[1]), Some(133));
                tier.set_cpu_cap(None, &all).unwrap();
                assert_eq!(cap(&tasks[0]), Some(100));
                assert_eq!(cap(&tasks[1]), None);
                // The tier itself is never capped on v1.
                assert_eq!(tier.cpu_cap().unwrap(), None);
            }
            tier.set_frozen(true).unwrap();
            assert!(tier.frozen().unwrap());
            tier.set_memory_high(Some(64 << 20)).unwrap();
            let high = if v2 {
                dir.path().join("a/revocable/memory.high")
            } else {
                dir.path()
                    .join("memory/a/revocable/memory.soft_limit_in_bytes")
            };
            assert_eq!(std::fs::read_to_string(&high).unwrap(), "67108864");
            tier.release().unwrap();
            assert!(!tier.frozen().unwrap());
            assert_eq!(tier.cpu_cap().unwrap(), None);
            let undone = std::fs::read_to_string(&high).unwrap();
            assert_eq!(undone, if v2 { "max" } else { "-1" });
        }
    }

    #[test]
    fn v1_cpusets_are_filled_from_the_parent_level_by_level() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cpuset");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("cpuset.cpus"), "0-3\n").unwrap();
        std::fs::write(root.join("cpuset.mems"), "0\n").unwrap();
        let tier = Tier::in_mount(dir.path(), Path::new("/x/berth"), false);
        tier.restrict_cpus("1-3").unwrap();
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(read("x/cpuset.cpus"), "0-3");
        assert_eq!(read("x/cpuset.mems"), "0");
        assert_eq!(read("x/berth/cpuset.mems"), "0");
        assert_eq!(read("x/berth/cpuset.cpus"), "1-3");
    }
}
