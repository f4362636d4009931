//! User namespaces on the host side: a user namespace with a task's id mapping (for
//! idmapped mounts and for a sandbox's namespaces to belong to), idmapped bind mounts of
//! image layers, and the owner shift of a copied rootfs where the file system refuses
//! idmapped mounts.
//!
//! Written against the raw mount API (`open_tree`, `mount_setattr`, `move_mount`): nix 0.29
//! has no wrapper for it, and libcontainer's is private to its init process.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use berth_api::userns::{IdMap, UsernsMode, RANGE_SIZE};

/// A user namespace step failed.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// A system call on a path.
    #[error("user namespace: {what} {path}: {source}")]
    Io {
        /// The step.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path, e: impl Into<std::io::Error>) -> UsernsError {
    UsernsError::Io {
        what,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// A new user namespace with `map`, as an open `/proc/PID/ns/user` of a child that lived
/// just long enough to own it (the namespace lives on as long as the file is open).
pub fn namespace_fd(map: &IdMap) -> Result<OwnedFd, UsernsError> {
    let mut stack = vec![0u8; 16 * 1024];
    let proc = Path::new("/proc");
    // SAFETY: the child runs only `pause` (async-signal-safe) until it is killed below; it
    // shares nothing with this (possibly threaded) process (no CLONE_VM).
    let child = unsafe {
        nix::sched::clone(
            Box::new(|| loop {
                libc::pause();
            }),
            &mut stack,
            nix::sched::CloneFlags::CLONE_NEWUSER,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(|e| io("clone", proc, e))?;
    let result = (|| {
        let dir = PathBuf::from(format!("/proc/{child}"));
        write_maps(&dir, map)?;
        let path = dir.join("ns/user");
        std::fs::File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| io("opening", &path, e))
    })();
    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(child, None);
    result
}

/// Writes `map` into `/proc/PID/{uid,gid}_map` of a process in a new user namespace (the
/// writer is root of the parent namespace, so no `setgroups` deny is needed).
pub fn write_maps(proc_dir: &Path, map: &IdMap) -> Result<(), UsernsError> {
    for (file, line) in [("uid_map", map.uid_line()), ("gid_map", map.gid_line())] {
        let path = proc_dir.join(file);
        std::fs::write(&path, line).map_err(|e| io("writing", &path, e))?;
    }
    Ok(())
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(path: &Path) -> Result<CString, UsernsError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|e| io("naming", path, e))
}

/// Bind-mounts `source` at `target` (an existing dir) read-only, with its owners seen
/// through `userns`'s mapping: a file owned by uid N on disk shows as the host id that
/// container uid N maps to. Fails with EINVAL where the file system cannot be idmapped.
pub fn idmapped_bind(
    source: &Path,
    target: &Path,
    userns: BorrowedFd<'_>,
) -> Result<(), UsernsError> {
    let (src, dst) = (cpath(source)?, cpath(target)?);
    // SAFETY: `src` is NUL-terminated and outlives the call; a negative result is checked.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(io("open_tree", source, std::io::Error::last_os_error()));
    }
    // SAFETY: a new descriptor owned by nobody else.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `attr` is a valid `mount_attr` of the size passed; the path is empty with
    // AT_EMPTY_PATH, so the call acts on `tree`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io("idmapping", source, std::io::Error::last_os_error()));
    }
    // SAFETY: both paths are NUL-terminated; `tree` is the detached mount to attach.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(io("attaching", target, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Shifts every owner below `root` into `map` (uid N → host uid of N), without following
/// symlinks: the fallback for a copied rootfs where idmapped mounts are refused. Ids
/// outside the range (above 65,535) become the range's last id, as the kernel shows
/// unmapped ids as the overflow id.
pub fn shift_owners(root: &Path, map: &IdMap) -> Result<(), UsernsError> {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io("reading", &path, e))?;
        let last = map.size - 1;
        let uid = map.host_uid(meta.uid().min(last)).unwrap_or(map.uid + last);
        let gid = map.host_gid(meta.gid().min(last)).unwrap_or(map.gid + last);
        // lchown clears set-id bits of a file: keep them.
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
            .map_err(|e| io("chown", &path, e))?;
        if !meta.file_type().is_symlink() && meta.mode() & 0o6000 != 0 {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(meta.mode()))
                .map_err(|e| io("chmod", &path, e))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| io("listing", &path, e))? {
                stack.push(entry.map_err(|e| io("listing", &path, e))?.path());
            }
        }
    }
    Ok(())
}

/// Gives `path` to the task's root (container uid/gid 0): the files Berth makes for a
/// task (`/etc/hosts`, `emptyDir` volumes, the upper dir's root).
pub fn chown_to_root(path: &Path, map: &IdMap) -> Result<(), UsernsError> {
    std::os::unix::fs::lchown(path, Some(map.uid), Some(map.gid)).map_err(|e| io("chown", path, e))
}

/// The host's support for user namespaces with idmapped rootfs layers, for `berth agent
/// --check`: whether an idmapped bind mount of `dir` (the image store) works.
pub fn probe(dir: &Path) -> Result<(), UsernsError> {
    let map = IdMap {
        uid: 1_000_000_000,
        gid: 1_000_000_000,
        size: RANGE_SIZE,
    };
    let ns = namespace_fd(&map)?;
    // The mount point lives in the temp dir: nothing is written where `dir` is.
    let target = std::env::temp_dir().join(format!(".berth-idmap-probe-{}", std::process::id()));
    std::fs::create_dir_all(&target).map_err(|e| io("creating", &target, e))?;
    let result = idmapped_bind(dir, &target, std::os::fd::AsFd::as_fd(&ns));
    if result.is_ok() {
        let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir(&target);
    result
}
