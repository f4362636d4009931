//! Disk budgets per task. Where the data root's file system keeps project quotas (ext4 with
//! the `project` and `quota` features mounted `prjquota`, XFS mounted `pquota`), each task's
//! dir is a project of its own (`FS_XFLAG_PROJINHERIT`: whatever is made below inherits
//! it) and the kernel refuses writes past the budget with EDQUOT; usage is the project's
//! counter, read in one call. Elsewhere usage is measured by walking the task's dirs
//! ([`measure`]) and the agent evicts a task over its budget.
//!
//! Written against the raw `quotactl_fd(2)` and `FS_IOC_FSSETXATTR`: no maintained crate
//! wraps project quotas.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A quota step failed.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// A system call on a path.
    #[error("project quota: {what} {path}: {source}")]
    Io {
        /// The step.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path, source: std::io::Error) -> QuotaError {
    QuotaError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

const PRJQUOTA: u32 = 2;
const Q_GETINFO: u32 = 0x80_0005;
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;
const QIF_BLIMITS: u32 = 1;
/// `dqb_bhardlimit` counts blocks of this many bytes.
const QUOTA_BLOCK: u64 = 1024;
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const FS_XFLAG_PROJINHERIT: u32 = 0x200;

const fn qcmd(cmd: u32, typ: u32) -> u32 {
    (cmd << 8) | (typ & 0xff)
}

/// `struct if_dqblk`.
#[repr(C)]
#[derive(Default)]
struct IfDqblk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
}

/// `struct if_dqinfo`.
#[repr(C)]
#[derive(Default)]
struct IfDqinfo {
    bgrace: u64,
    igrace: u64,
    flags: u32,
    valid: u32,
}

/// `struct fsxattr`.
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// Project quotas of the file system holding the data root.
#[derive(Debug)]
pub struct ProjectQuotas {
    root: PathBuf,
    fd: std::fs::File,
}

impl ProjectQuotas {
    /// The project quotas of `root`'s file system, if it keeps them (ENOSYS, EINVAL,
    /// ESRCH, ENOTSUP otherwise: the reason is in the error).
    pub fn open(root: &Path) -> Result<Self, QuotaError> {
        let fd = std::fs::File::open(root).map_err(|e| io("opening", root, e))?;
        let q = ProjectQuotas {
            root: root.to_path_buf(),
            fd,
        };
        let mut info = IfDqinfo::default();
        q.quotactl(
            Q_GETINFO,
            0,
            &mut info as *mut IfDqinfo as *mut libc::c_void,
        )
        .map_err(|e| io("reading the project quota state of", root, e))?;
        Ok(q)
    }

    fn quotactl(&self, cmd: u32, id: u32, addr: *mut libc::c_void) -> std::io::Result<()> {
        // SAFETY: `addr` points to the structure `cmd` reads or writes, alive for the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_quotactl_fd,
                self.fd.as_raw_fd(),
                qcmd(cmd, PRJQUOTA),
                id,
                addr,
            )
        };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Makes `dir` (empty, or nearly: what is in it is not moved into the project) a part
    /// of `project`: whatever is created below it counts against the project.
    pub fn assign(&self, dir: &Path, project: u32) -> Result<(), QuotaError> {
        let f = std::fs::File::open(dir).map_err(|e| io("opening", dir, e))?;
        let mut x = FsXattr::default();
        // SAFETY: the ioctl fills an `fsxattr` of the size encoded in its number.
        if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x) } < 0 {
            return Err(io(
                "reading the attributes of",
                dir,
                std::io::Error::last_os_error(),
            ));
        }
        x.projid = project;
        x.xflags |= FS_XFLAG_PROJINHERIT;
        // SAFETY: as above; the kernel reads the structure.
        if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSSETXATTR, &x) } < 0 {
            return Err(io(
                "setting the project of",
                dir,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Caps `project` at `bytes` (0: no cap).
    pub fn set_limit(&self, project: u32, bytes: u64) -> Result<(), QuotaError> {
        let blocks = bytes.div_ceil(QUOTA_BLOCK);
        let mut q = IfDqblk {
            bhardlimit: blocks,
            bsoftlimit: blocks,
            valid: QIF_BLIMITS,
            ..IfDqblk::default()
        };
        self.quotactl(
            Q_SETQUOTA,
            project,
            &mut q as *mut IfDqblk as *mut libc::c_void,
        )
        .map_err(|e| io("setting the limit of a project on", &self.root, e))
    }

    /// Bytes `project` uses.
    pub fn usage(&self, project: u32) -> Result<u64, QuotaError> {
        let mut q = IfDqblk::default();
        self.quotactl(
            Q_GETQUOTA,
            project,
            &mut q as *mut IfDqblk as *mut libc::c_void,
        )
        .map_err(|e| io("reading the usage of a project on", &self.root, e))?;
        Ok(q.curspace)
    }
}

/// Bytes allocated below `dirs` (files and directories, by their blocks, each inode once;
/// other file systems mounted below are not entered): the fallback's measure, as `du`
/// counts. Missing dirs count 0.
pub fn measure(dirs: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    for top in dirs {
        let Ok(meta) = std::fs::symlink_metadata(top) else {
            continue;
        };
        let dev = meta.dev();
        let mut stack = vec![top.clone()];
        while let Some(path) = stack.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.dev() != dev || (meta.nlink() > 1 && !seen.insert(meta.ino())) {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    stack.extend(entries.flatten().map(|e| e.path()));
                }
            }
        }
    }
    total
}

/// Runs `f` with CAP_SYS_RESOURCE out of this thread's effective set: a mount made there
/// (overlayfs writes with its mounter's credentials) then respects quotas, which that
/// capability would let it pass.
pub fn without_resource_override<T>(f: impl FnOnce() -> T) -> T {
    use caps::{CapSet, Capability};
    let had = caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_RESOURCE).unwrap_or(false);
    if had {
        let _ = caps::drop(None, CapSet::Effective, Capability::CAP_SYS_RESOURCE);
    }
    let out = f();
    if had {
        let _ = caps::raise(None, CapSet::Effective, Capability::CAP_SYS_RESOURCE);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_counts_blocks_once_and_missing_dirs_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir(&a).unwrap();
        std::fs::write(a.join("f"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::hard_link(a.join("f"), a.join("g")).unwrap();
        let used = measure(&[a.clone(), dir.path().join("missing")]);
        assert!((64 * 1024..64 * 1024 + 16 * 1024).contains(&used), "{used}");
    }
}
