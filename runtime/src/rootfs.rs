//! A container's root filesystem: overlayfs with the image's layer snapshots as lower dirs and
//! a per-container upper/work dir; a full copy (flattened layers) where overlayfs is refused.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

/// Mounting or removing a rootfs failed.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A mount call failed.
    #[error("mounting {target}: {source}")]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// The error.
        source: nix::Error,
    },
    /// A directory could not be prepared.
    #[error("preparing {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The copy fallback failed.
    #[error("copying layers into {path}: {reason}")]
    Copy {
        /// The destination.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// How the rootfs was made (recorded, so removal knows what to undo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootfsKind {
    /// overlayfs mount at `rootfs/`.
    Overlay,
    /// Plain directory with the flattened layers.
    Copy,
}

/// Directories of one container's filesystem, all below its state dir.
#[derive(Debug, Clone)]
pub struct RootfsDirs {
    /// Mount point (or the copy).
    pub rootfs: PathBuf,
    /// overlay upper dir.
    pub upper: PathBuf,
    /// overlay work dir.
    pub work: PathBuf,
}

impl RootfsDirs {
    /// The layout under a container dir: `rootfs/`, `fs/upper`, `fs/work`.
    pub fn under(container_dir: &Path) -> Self {
        RootfsDirs {
            rootfs: container_dir.join("rootfs"),
            upper: container_dir.join("fs/upper"),
            work: container_dir.join("fs/work"),
        }
    }
}

fn mkdir(path: &Path) -> Result<(), RootfsError> {
    std::fs::create_dir_all(path).map_err(|e| RootfsError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Mounts overlayfs over `lowers` (given bottom layer first, as an image lists them); falls
/// back to a copy when the kernel
/// refuses overlayfs (e.g. the state dir itself is on overlayfs without support for it) or
/// when `force_copy` is set.
pub fn prepare(
    dirs: &RootfsDirs,
    lowers: &[PathBuf],
    force_copy: bool,
) -> Result<RootfsKind, RootfsError> {
    mkdir(&dirs.rootfs)?;
    if !force_copy {
        mkdir(&dirs.upper)?;
        mkdir(&dirs.work)?;
        match mount_overlay(dirs, lowers) {
            Ok(()) => return Ok(RootfsKind::Overlay),
            Err(e) => tracing::warn!(error = %e, "overlayfs refused; copying the layers instead"),
        }
    }
    berth_fsutil::flatten::flatten(lowers, &dirs.rootfs).map_err(|e| RootfsError::Copy {
        path: dirs.rootfs.clone(),
        reason: e.to_string(),
    })?;
    Ok(RootfsKind::Copy)
}

fn mount_overlay(dirs: &RootfsDirs, lowers: &[PathBuf]) -> Result<(), RootfsError> {
    // overlayfs wants the top layer first.
    let lower = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let data = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        dirs.upper.display(),
        dirs.work.display()
    );
    mount(
        Some("overlay"),
        &dirs.rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| RootfsError::Mount {
        target: dirs.rootfs.clone(),
        source: e,
    })
}

/// True if `path` is a mount point (listed in `/proc/self/mountinfo`).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.display().to_string();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

/// Unmounts the rootfs (detaching if busy) — idempotent.
pub fn unmount(dirs: &RootfsDirs) -> Result<(), RootfsError> {
    while is_mounted(&dirs.rootfs) {
        match umount2(&dirs.rootfs, MntFlags::empty()) {
            Ok(()) => {}
            Err(nix::errno::Errno::EBUSY) => {
                umount2(&dirs.rootfs, MntFlags::MNT_DETACH).map_err(|e| RootfsError::Mount {
                    target: dirs.rootfs.clone(),
                    source: e,
                })?
            }
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => {
                return Err(RootfsError::Mount {
                    target: dirs.rootfs.clone(),
                    source: e,
                })
            }
        }
    }
    Ok(())
}
