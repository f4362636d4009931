//! A container's root filesystem: overlayfs with the image's layer snapshots as lower dirs and
//! a per-container upper/work dir; a full copy (flattened layers) where overlayfs is refused.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::userns::IdMap;

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
///
/// With `idmap` (a task in a user namespace of its own) each layer is first bind-mounted
/// idmapped (`fs/l/N`, detached again once overlayfs holds its private clones), so the
/// image's files show with the task's host ids and nothing of the image is copied or
/// chowned; the upper dir stores what the task writes with its host ids. Where the file
/// system refuses idmapped mounts the copy's owners are shifted instead (a full walk:
/// the cost grows with the image, logged with its time).
pub fn prepare(
    dirs: &RootfsDirs,
    lowers: &[PathBuf],
    force_copy: bool,
    idmap: Option<&IdMap>,
) -> Result<RootfsKind, RootfsError> {
    mkdir(&dirs.rootfs)?;
    if !force_copy {
        mkdir(&dirs.upper)?;
        mkdir(&dirs.work)?;
        let mounted = match idmap {
            None => mount_overlay(dirs, lowers),
            Some(map) => mount_idmapped_overlay(dirs, lowers, map),
        };
        match mounted {
            Ok(()) => return Ok(RootfsKind::Overlay),
            Err(e) => tracing::warn!(error = %e, "overlayfs refused; copying the layers instead"),
        }
    }
    berth_fsutil::flatten::flatten(lowers, &dirs.rootfs).map_err(|e| RootfsError::Copy {
        path: dirs.rootfs.clone(),
        reason: e.to_string(),
    })?;
    if let Some(map) = idmap {
        let began = std::time::Instant::now();
        crate::userns::shift_owners(&dirs.rootfs, map).map_err(|e| RootfsError::Copy {
            path: dirs.rootfs.clone(),
            reason: e.to_string(),
        })?;
        tracing::info!(elapsed = ?began.elapsed(), "shifted the copied rootfs into the task's id range");
    }
    Ok(RootfsKind::Copy)
}

fn mount_idmapped_overlay(
    dirs: &RootfsDirs,
    lowers: &[PathBuf],
    map: &IdMap,
) -> Result<(), RootfsError> {
    let staging = dirs.upper.with_file_name("l");
    let userns = crate::userns::namespace_fd(map).map_err(|e| RootfsError::Copy {
        path: staging.clone(),
        reason: e.to_string(),
    })?;
    let mut mapped = Vec::with_capacity(lowers.len());
    let result = (|| {
        for (i, lower) in lowers.iter().enumerate() {
            let target = staging.join(i.to_string());
            mkdir(&target)?;
            crate::userns::idmapped_bind(lower, &target, std::os::fd::AsFd::as_fd(&userns))
                .map_err(|e| RootfsError::Copy {
                    path: target.clone(),
                    reason: e.to_string(),
                })?;
            mapped.push(target);
        }
        // The merged root takes the upper dir's owner: the image root's, shifted.
        let (uid, gid) = match mapped.first() {
            Some(bottom) => {
                use std::os::unix::fs::MetadataExt;
                let meta = std::fs::metadata(bottom).map_err(|e| RootfsError::Io {
                    path: bottom.clone(),
                    source: e,
                })?;
                (meta.uid(), meta.gid())
            }
            None => (map.uid, map.gid),
        };
        std::os::unix::fs::chown(&dirs.upper, Some(uid), Some(gid)).map_err(|e| {
            RootfsError::Io {
                path: dirs.upper.clone(),
                source: e,
            }
        })?;
        mount_overlay(dirs, &mapped)
    })();
    // overlayfs keeps private clones of its layers: the staging mounts can go either way.
    for target in &mapped {
        let _ = umount2(target, MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(&staging);
    result
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
    // overlayfs writes to the upper dir with its mounter's credentials: without
    // CAP_SYS_RESOURCE, so a task's project quota holds for what it writes.
    crate::quota::without_resource_override(|| {
        mount(
            Some("overlay"),
            &dirs.rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
    })
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
