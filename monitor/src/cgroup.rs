//! The little cgroup work a monitor does when its container ends: read the OOM-kill count,
//! kill what is left, remove the cgroup in every hierarchy.
//!
//! Written by hand rather than through libcgroups (which the agent uses): a monitor stays
//! resident for the container's whole life, and these are a few file reads, writes and
//! `rmdir`s that do not justify linking a cgroup library into every one of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MOUNT: &str = "/sys/fs/cgroup";

/// True on a pure cgroup v2 host.
pub fn is_v2() -> bool {
    Path::new(MOUNT).join("cgroup.controllers").exists()
}

/// OOM kills recorded by the kernel for the cgroup (v1 `memory.oom_control`, v2
/// `memory.events`); 0 if unreadable.
pub fn oom_kills(path: &Path) -> u64 {
    oom_kills_in(Path::new(MOUNT), path, is_v2())
}

/// [`oom_kills`] below a given cgroupfs mount (tests use a fake tree).
pub fn oom_kills_in(mount: &Path, path: &Path, v2: bool) -> u64 {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let file = if v2 {
        mount.join(rel).join("memory.events")
    } else {
        mount.join("memory").join(rel).join("memory.oom_control")
    };
    let text = std::fs::read_to_string(file).unwrap_or_default();
    parse_flat_keyed(&text)
        .get("oom_kill")
        .copied()
        .unwrap_or(0)
}

/// `key value` lines (cgroup "flat keyed" files).
pub fn parse_flat_keyed(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

/// The cgroup's directory in every hierarchy where it exists.
fn dirs(path: &Path) -> Vec<PathBuf> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if is_v2() {
        let dir = Path::new(MOUNT).join(rel);
        return if dir.is_dir() { vec![dir] } else { Vec::new() };
    }
    std::fs::read_dir(MOUNT)
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join(rel))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// SIGKILLs every process in the cgroup until it is empty (1 s at most): v2's
/// `cgroup.kill` where the kernel has it, else kill passes over `cgroup.procs` with the v1
/// freezer holding forks still in between.
pub fn kill_all(path: &Path) {
    let dirs = dirs(path);
    let Some(procs_dir) = dirs
        .iter()
        .find(|d| d.join("cgroup.procs").exists())
        .cloned()
    else {
        return;
    };
    if procs(&procs_dir).is_empty() {
        return;
    }
    let kill_file = procs_dir.join("cgroup.kill");
    let freezer = dirs
        .iter()
        .find(|d| d.join("freezer.state").exists())
        .map(|d| d.join("freezer.state"));
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let pids = procs(&procs_dir);
        if pids.is_empty() {
            break;
        }
        if std::fs::write(&kill_file, "1").is_err() {
            if let Some(f) = &freezer {
                let _ = std::fs::write(f, "FROZEN");
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if let Some(f) = &freezer {
                let _ = std::fs::write(f, "THAWED");
            }
        }
        // Killed processes leave `cgroup.procs` once the kernel has torn them down.
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Kills what is left and removes the cgroup from every hierarchy; `rmdir` is retried for
/// up to a second while the last processes are torn down. Returns the directories left.
pub fn remove(path: &Path) -> Vec<PathBuf> {
    kill_all(path);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut left = dirs(path);
    while !left.is_empty() {
        left.retain(|d| match std::fs::remove_dir(d) {
            Ok(()) => false,
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        });
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_from_a_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        let v2 = root.path().join("berth/c1");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(
            v2.join("memory.events"),
            "low 0\nhigh 3\nmax 9\noom 2\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(oom_kills_in(root.path(), Path::new("/berth/c1"), true), 2);
        let v1 = root.path().join("memory/berth/c1");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(
            v1.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(oom_kills_in(root.path(), Path::new("/berth/c1"), false), 1);
        assert_eq!(
            oom_kills_in(root.path(), Path::new("/berth/none"), false),
            0
        );
    }
}
