//! The node's pool of host ids for tasks in user namespaces of their own: each container
//! (or pod, whose containers share it) holds one range of 65,536 ids from the pool while it
//! exists; a range is free again only once its holder is removed (its files on disk carry
//! those ids). The holdings are not a file of their own: each holder's record carries its
//! range, and recovery rebuilds the pool from the records.
//!
//! The pool: `--userns-pool START:COUNT` (config `userns_pool`), else the `berth` entries of
//! `/etc/subuid` and `/etc/subgid` (as podman and the kubelet take theirs), else the
//! built-in default below.

use berth_runtime::userns::{IdMap, RANGE_SIZE};

use super::error::ApiError;

/// The pool when none is configured: 1024 ranges from 2^30, far above login users and
/// the ranges `useradd` hands out from 100,000.
pub const DEFAULT_POOL: IdPool = IdPool {
    uid: 1 << 30,
    gid: 1 << 30,
    count: 1024 * RANGE_SIZE,
};

/// Host ids the agent may hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPool {
    /// First uid.
    pub uid: u32,
    /// First gid.
    pub gid: u32,
    /// Ids in the pool (uids and gids alike).
    pub count: u32,
}

impl IdPool {
    /// Whole ranges in the pool.
    pub fn ranges(&self) -> u32 {
        self.count / RANGE_SIZE
    }

    fn range(&self, slot: u32) -> IdMap {
        IdMap {
            uid: self.uid + slot * RANGE_SIZE,
            gid: self.gid + slot * RANGE_SIZE,
            size: RANGE_SIZE,
        }
    }

    fn slot_of(&self, map: &IdMap) -> Option<u32> {
        let off = map.uid.checked_sub(self.uid)?;
        (off % RANGE_SIZE == 0 && off / RANGE_SIZE < self.ranges()).then_some(off / RANGE_SIZE)
    }

    /// Parses `START:COUNT` (uids and gids alike) or `UID:GID:COUNT`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let nums: Vec<u32> = text
            .split(':')
            .map(|p| p.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("invalid userns pool {text:?}: want START:COUNT"))?;
        let pool = match nums[..] {
            [start, count] => IdPool {
                uid: start,
                gid: start,
                count,
            },
            [uid, gid, count] => IdPool { uid, gid, count },
            _ => return Err(format!("invalid userns pool {text:?}: want START:COUNT")),
        };
        if pool.uid == 0 || pool.gid == 0 {
            return Err(format!(
                "invalid userns pool {text:?}: it must not include root (id 0)"
            ));
        }
        if pool.ranges() == 0 {
            return Err(format!(
                "invalid userns pool {text:?}: COUNT must hold at least one range of {RANGE_SIZE} ids"
            ));
        }
        if u64::from(pool.uid.max(pool.gid)) + u64::from(pool.count) > u64::from(u32::MAX) {
            return Err(format!("invalid userns pool {text:?}: past the last id"));
        }
        Ok(pool)
    }

    /// The `berth` entries of `/etc/subuid` and `/etc/subgid` (the first of each).
    pub fn from_subid_files(user: &str) -> Option<Self> {
        let entry = |path: &str| -> Option<(u32, u32)> {
            let text = std::fs::read_to_string(path).ok()?;
            text.lines().find_map(|l| {
                let mut f = l.trim().split(':');
                (f.next()? == user).then_some(())?;
                Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
            })
        };
        let (uid, ucount) = entry("/etc/subuid")?;
        let (gid, gcount) = entry("/etc/subgid")?;
        let pool = IdPool {
            uid,
            gid,
            count: ucount.min(gcount),
        };
        (pool.ranges() > 0 && uid > 0 && gid > 0).then_some(pool)
    }
}

/// Modes of the data root for tasks in user namespaces: their root (an unprivileged host
/// id) must reach its rootfs mount point and its namespace files when libcontainer mounts
/// and joins them. So the data root and `containers/`, `pods/`, `netns/` are searchable by
/// anyone but not listable (0711); a task's own dir is `root:<its gid>` 0710 (only its
/// root and the host's pass; nobody but host root writes there, see [`gate`]); everything
/// else in the data root (the image store with its setuid files and device nodes, the
/// CNI cache, the events) is the agent's alone (0700).
pub fn open_data_root(root: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m))
    };
    for dir in ["containers", "pods", "netns"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    mode(root, 0o711)?;
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let m = if ["containers", "pods", "netns"].iter().any(|d| name == *d) {
            0o711
        } else {
            0o700
        };
        mode(&entry.path(), m)?;
    }
    Ok(())
}

/// The first dir above the data root that others may not search: a task's root (an
/// unprivileged host id) could not reach its rootfs through it.
pub fn blocked_ancestor(root: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    root.ancestors()
        .skip(1)
        .find(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
        .map(std::path::Path::to_path_buf)
}

/// A range for `owner`, or why there is none (the pool is spent; the data root cannot be
/// reached by an unprivileged id).
pub fn allocate(node: &mut super::node::Node, owner: &str) -> Result<IdMap, ApiError> {
    if let Some(dir) = blocked_ancestor(&node.settings.root) {
        return Err(ApiError::conflict(format!(
            "a user namespace's root cannot reach the data root {}: {} is not searchable by others (chmod o+x {} or move the data root)",
            node.settings.root.display(),
            dir.display(),
            dir.display()
        ))
        .with_exit_code(125));
    }
    node.idmaps.allocate(owner)
}

/// Opens a task's dir to its root only: `root:<map.gid>` 0710.
pub fn gate(dir: &std::path::Path, map: &IdMap) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(dir, Some(0), Some(map.gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710))
}

/// The ranges held, by slot.
#[derive(Debug)]
pub struct IdRanges {
    pool: IdPool,
    held: super::slots::Slots,
}

impl IdRanges {
    /// An empty holding of `pool`.
    pub fn new(pool: IdPool) -> Self {
        IdRanges {
            pool,
            held: super::slots::Slots::default(),
        }
    }

    /// The range of `owner` (a container or pod id): the one it holds, else the lowest
    /// free one.
    pub fn allocate(&mut self, owner: &str) -> Result<IdMap, ApiError> {
        let ranges = self.pool.ranges();
        let Some(slot) = self.held.take(owner, 0..ranges) else {
            return Err(ApiError::conflict(format!(
                "no free user namespace range: all {ranges} ranges of the pool are held (--userns-pool)"
            ))
            .with_exit_code(125));
        };
        Ok(self.pool.range(slot))
    }

    /// Recovery: `owner` holds `map` (a range outside the pool, from an earlier pool, is
    /// kept by nobody here and never handed out again while it is outside).
    pub fn hold(&mut self, owner: &str, map: &IdMap) {
        if let Some(slot) = self.pool.slot_of(map) {
            if let Some(other) = self.held.hold(slot, owner) {
                tracing::error!(slot, owner, other, "two tasks recorded the same id range");
            }
        }
    }

    /// `owner` is gone: its range is free.
    pub fn release(&mut self, owner: &str) {
        self.held.release(owner);
    }

    /// Ranges held and in the pool.
    pub fn usage(&self) -> (usize, u32) {
        (self.held.len(), self.pool.ranges())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_never_shared_and_freed_only_on_release() {
        let mut r = IdRanges::new(IdPool::parse("100000:196608").unwrap());
        let a = r.allocate("a").unwrap();
        let b = r.allocate("b").unwrap();
        assert_eq!(a.uid, 100_000);
        assert_eq!(b.uid, 165_536);
        assert_eq!(r.allocate("a").unwrap(), a, "same owner, same range");
        let c = r.allocate("c").unwrap();
        assert!(r.allocate("d").is_err(), "pool of 3 ranges is full");
        r.release("b");
        assert_eq!(r.allocate("d").unwrap(), b);
        assert_ne!(c, a);
        let mut again = IdRanges::new(IdPool::parse("100000:196608").unwrap());
        again.hold("a", &a);
        assert_eq!(again.allocate("e").unwrap().uid, 165_536);
    }

    #[test]
    fn bad_pools_are_refused() {
        assert!(IdPool::parse("0:65536").is_err());
        assert!(IdPool::parse("100000:100").is_err());
        assert!(IdPool::parse("x").is_err());
        assert!(IdPool::parse("4294000000:65536000").is_err());
        assert_eq!(IdPool::parse("1:2:65536").unwrap().gid, 2);
    }
}
