//! Writes tar entries below a root directory fd.
//!
//! Every parent directory is opened with `openat2(RESOLVE_IN_ROOT)`, so symlinks (absolute
//! or `../`-laden) inside the layer resolve as if the snapshot were `/`: an entry written
//! "through" a symlink lands inside the snapshot, never outside. The final component is
//! created with `*at` calls that do not follow it (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`).
//! The last parent fd is cached: tars list a directory's entries together.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmodat, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::path::{normalize, split};
use super::{classify, FaultCell, UnpackError};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

fn fs_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> UnpackError + 'a {
    move |errno| UnpackError::Fs {
        op,
        path: path.to_path_buf(),
        source: errno.into(),
    }
}

fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open call and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Writes the entries of one layer into a snapshot directory.
pub struct LayerWriter {
    root: OwnedFd,
    cached: Option<(PathBuf, OwnedFd)>,
    /// Directory mtimes, applied at the end (writing children changes them).
    dir_times: Vec<(PathBuf, i64)>,
    entries: u64,
    buf: Vec<u8>,
    fault: FaultCell,
}

impl std::fmt::Debug for LayerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerWriter")
            .field("entries", &self.entries)
            .finish()
    }
}

impl LayerWriter {
    /// Opens the snapshot root `dest`.
    pub(crate) fn open(dest: &Path, fault: FaultCell) -> Result<Self, UnpackError> {
        let fd = nix::fcntl::open(
            dest,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(fs_err("open snapshot", dest))?;
        Ok(Self {
            root: own(fd),
            cached: None,
            dir_times: Vec::new(),
            entries: 0,
            buf: vec![0; 256 * 1024],
            fault,
        })
    }

    /// Applies directory mtimes; returns the number of entries written.
    pub(crate) fn finish(mut self) -> Result<u64, UnpackError> {
        self.cached = None;
        for (path, mtime) in std::mem::take(&mut self.dir_times).into_iter().rev() {
            if let Ok(fd) = self.resolve(&path) {
                let t = TimeSpec::new(mtime, 0);
                let _ = nix::sys::stat::futimens(fd.as_raw_fd(), &t, &t);
            }
        }
        Ok(self.entries)
    }

    fn resolve(&self, rel: &Path) -> Result<OwnedFd, Errno> {
        if rel.as_os_str().is_empty() {
            return nix::unistd::dup(self.root.as_raw_fd()).map(own);
        }
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(self.root.as_raw_fd(), rel, how).map(own)
    }

    /// The fd of directory `rel` (inside the root), created with mode 0755 if missing.
    fn parent(&mut self, rel: &Path) -> Result<RawFd, UnpackError> {
        if rel.as_os_str().is_empty() {
            return Ok(self.root.as_raw_fd());
        }
        if let Some((p, fd)) = &self.cached {
            if p == rel {
                return Ok(fd.as_raw_fd());
            }
        }
        let fd = match self.resolve(rel) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => self.mkdir_all(rel)?,
            Err(e) => return Err(fs_err("open directory", rel)(e)),
        };
        let raw = fd.as_raw_fd();
        self.cached = Some((rel.to_path_buf(), fd));
        Ok(raw)
    }

    /// Creates the missing directories of `rel`. A component that is a symlink is
    /// followed the way `RESOLVE_IN_ROOT` follows it (its target created if missing), so
    /// the result is the same directory a later `resolve(rel)` opens — always inside.
    fn mkdir_all(&mut self, rel: &Path) -> Result<OwnedFd, UnpackError> {
        self.mkdir_all_depth(rel, 0)
    }

    fn mkdir_all_depth(&mut self, rel: &Path, depth: usize) -> Result<OwnedFd, UnpackError> {
        if depth > 40 {
            return Err(fs_err("create directory", rel)(Errno::ELOOP));
        }
        let mut prefix = PathBuf::new();
        for component in rel.components() {
            let candidate = prefix.join(component);
            match self.resolve(&candidate) {
                Ok(_) => {}
                Err(Errno::ENOENT) => {
                    let parent = self
                        .resolve(&prefix)
                        .map_err(fs_err("open directory", &prefix))?;
                    let name = component.as_os_str();
                    match mkdirat(
                        Some(parent.as_raw_fd()),
                        name,
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) => {}
                        Err(Errno::EEXIST) => {
                            // A dangling symlink: create what it points to, in the root.
                            let target = nix::fcntl::readlinkat(Some(parent.as_raw_fd()), name)
                                .map_err(fs_err("create directory", &candidate))?;
                            let inner = super::path::resolve_in_root(&prefix, target.as_bytes());
                            self.mkdir_all_depth(&inner, depth + 1)?;
                        }
                        Err(e) => return Err(fs_err("create directory", &candidate)(e)),
                    }
                }
                Err(e) => return Err(fs_err("open directory", &candidate)(e)),
            }
            prefix = candidate;
        }
        self.resolve(rel).map_err(fs_err("open directory", rel))
    }

    /// Writes one entry.
    pub(crate) fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let lossy = || String::from_utf8_lossy(&raw).into_owned();
        let rel = normalize(&raw).ok_or_else(|| UnpackError::PathEscape { path: lossy() })?;
        let xattrs = read_xattrs(entry);
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        let mtime = header.mtime().unwrap_or(0) as i64;

        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            return Ok(());
        }
        self.entries += 1;
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            // Symlinks, directories, whiteouts and links may replace a cached directory.
            self.cached = None;
        }
        let Some((parent, name)) = split(&rel) else {
            // The root itself ("./"): take its metadata.
            if kind.is_dir() {
                let root = self.root.as_raw_fd();
                chown_chmod(root, uid, gid, mode, &rel)?;
                self.dir_times.push((rel, mtime));
            }
            return Ok(());
        };
        let name_str = name.to_string_lossy();
        if let Some(target) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            let dirfd = self.parent(parent)?;
            if name_str == OPAQUE_MARKER {
                return set_xattr(dirfd, OPAQUE_XATTR, b"y", &rel);
            }
            if target.starts_with(WHITEOUT_PREFIX)
                || target.is_empty()
                || target == "."
                || target == ".."
            {
                return Ok(()); // aufs bookkeeping (.wh..wh.plnk and friends): not content
            }
            let target = OsStr::new(target);
            remove_existing(dirfd, target, &rel)?;
            return mknodat(Some(dirfd), target, SFlag::S_IFCHR, Mode::empty(), 0)
                .map_err(fs_err("create whiteout", &rel));
        }
        let dirfd = self.parent(parent)?;

        if kind.is_dir() {
            match mkdirat(Some(dirfd), name, Mode::from_bits_truncate(0o700)) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    let is_dir = nix::sys::stat::fstatat(
                        Some(dirfd),
                        name,
                        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                    .unwrap_or(false);
                    if !is_dir {
                        remove_existing(dirfd, name, &rel)?;
                        mkdirat(Some(dirfd), name, Mode::from_bits_truncate(0o700))
                            .map_err(fs_err("create directory", &rel))?;
                    }
                }
                Err(e) => return Err(fs_err("create directory", &rel)(e)),
            }
            let fd = open_child_dir(dirfd, name, &rel)?;
            chown_chmod(fd.as_raw_fd(), uid, gid, mode, &rel)?;
            for (k, v) in &xattrs {
                set_xattr(fd.as_raw_fd(), k, v, &rel)?;
            }
            self.dir_times.push((rel, mtime));
        } else if kind.is_file() || kind == tar::EntryType::Continuous || kind.is_gnu_sparse() {
            let flags = OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC;
            let mut replaced = false;
            let fd = match openat(Some(dirfd), name, flags, Mode::from_bits_truncate(0o600)) {
                Err(Errno::EEXIST) => {
                    // What it replaces may be a directory holding the cached parent.
                    replaced = true;
                    remove_existing(dirfd, name, &rel)?;
                    openat(Some(dirfd), name, flags, Mode::from_bits_truncate(0o600))
                }
                other => other,
            }
            .map_err(fs_err("create file", &rel))?;
            let mut file = File::from(own(fd));
            loop {
                let n = match entry.read(&mut self.buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(classify(&self.fault, e)),
                };
                file.write_all(&self.buf[..n])
                    .map_err(|source| UnpackError::Fs {
                        op: "write",
                        path: rel.clone(),
                        source,
                    })?;
            }
            let fd = file.as_raw_fd();
            chown_chmod(fd, uid, gid, mode, &rel)?;
            for (k, v) in &xattrs {
                set_xattr(fd, k, v, &rel)?;
            }
            let t = TimeSpec::new(mtime, 0);
            nix::sys::stat::futimens(fd, &t, &t).map_err(fs_err("set times", &rel))?;
            if replaced {
                self.cached = None; // dirfd is not used past this point
            }
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            let target = OsStr::from_bytes(&target);
            match symlinkat(target, Some(dirfd), name) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    remove_existing(dirfd, name, &rel)?;
                    symlinkat(target, Some(dirfd), name).map_err(fs_err("create symlink", &rel))?;
                }
                Err(e) => return Err(fs_err("create symlink", &rel)(e)),
            }
            set_owner_mode_times(dirfd, name, uid, gid, None, mtime, &rel)?;
        } else if kind.is_hard_link() {
            let raw_target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            let target_lossy = String::from_utf8_lossy(&raw_target).into_owned();
            let target = normalize(&raw_target).ok_or_else(|| UnpackError::PathEscape {
                path: target_lossy.clone(),
            })?;
            if target == rel {
                return Ok(());
            }
            let missing = || UnpackError::LinkTargetMissing {
                path: lossy(),
                target: target_lossy.clone(),
            };
            let (tparent, tname) = split(&target).ok_or_else(missing)?;
            let tdir = match self.resolve(tparent) {
                Ok(fd) => fd,
                Err(Errno::ENOENT | Errno::ENOTDIR) => return Err(missing()),
                Err(e) => return Err(fs_err("open directory", tparent)(e)),
            };
            let link = |dirfd: RawFd| {
                linkat(
                    Some(tdir.as_raw_fd()),
                    tname,
                    Some(dirfd),
                    name,
                    nix::fcntl::AtFlags::empty(),
                )
            };
            match link(dirfd) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    remove_existing(dirfd, name, &rel)?;
                    link(dirfd).map_err(fs_err("create hard link", &rel))?;
                }
                Err(Errno::ENOENT) => return Err(missing()),
                Err(e) => return Err(fs_err("create hard link", &rel)(e)),
            }
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let sflag = if kind.is_character_special() {
                SFlag::S_IFCHR
            } else if kind.is_block_special() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFIFO
            };
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            let dev = nix::sys::stat::makedev(major.into(), minor.into());
            let perm = Mode::from_bits_truncate(0o600);
            if let Err(Errno::EEXIST) = mknodat(Some(dirfd), name, sflag, perm, dev) {
                remove_existing(dirfd, name, &rel)?;
                mknodat(Some(dirfd), name, sflag, perm, dev)
                    .map_err(fs_err("create node", &rel))?;
            }
            set_owner_mode_times(dirfd, name, uid, gid, Some(mode), mtime, &rel)?;
        } else {
            tracing::debug!(path = %rel.display(), ?kind, "skipping unsupported tar entry type");
            self.entries -= 1;
        }
        Ok(())
    }
}

/// Owner, mode (not for symlinks) and mtime of the entry `name` in `dirfd`, never
/// following a final symlink. chown goes first: it clears setuid/setgid, which chmod sets.
fn set_owner_mode_times(
    dirfd: RawFd,
    name: &OsStr,
    uid: u32,
    gid: u32,
    mode: Option<u32>,
    mtime: i64,
    rel: &Path,
) -> Result<(), UnpackError> {
    let nofollow = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
    fchownat(
        Some(dirfd),
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nofollow,
    )
    .map_err(fs_err("chown", rel))?;
    if let Some(mode) = mode {
        fchmodat(
            Some(dirfd),
            name,
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(fs_err("chmod", rel))?;
    }
    let t = TimeSpec::new(mtime, 0);
    utimensat(Some(dirfd), name, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(fs_err("set times", rel))
}

/// chown first: it clears setuid/setgid bits, which chmod then sets.
fn chown_chmod(fd: RawFd, uid: u32, gid: u32, mode: u32, rel: &Path) -> Result<(), UnpackError> {
    nix::unistd::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(fs_err("chown", rel))?;
    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode)).map_err(fs_err("chmod", rel))
}

/// Opens the directory `name` in `dirfd`, refusing a symlink in its place.
fn open_child_dir(dirfd: RawFd, name: &OsStr, rel: &Path) -> Result<OwnedFd, UnpackError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(Some(dirfd), name, flags, Mode::empty())
        .map(own)
        .map_err(fs_err("open directory", rel))
}

/// Removes what is at `name` so a new entry can take its place (a later entry of a layer
/// wins). A non-empty directory is removed whole.
fn remove_existing(dirfd: RawFd, name: &OsStr, rel: &Path) -> Result<(), UnpackError> {
    match unlinkat(Some(dirfd), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) => {
            let fd = open_child_dir(dirfd, name, rel)?;
            remove_tree(fd.as_raw_fd(), rel)?;
            unlinkat(Some(dirfd), name, UnlinkatFlags::RemoveDir)
                .map_err(fs_err("remove directory", rel))
        }
        Err(e) => Err(fs_err("remove", rel)(e)),
    }
}

fn remove_tree(dirfd: RawFd, rel: &Path) -> Result<(), UnpackError> {
    let dup = nix::unistd::dup(dirfd).map_err(fs_err("dup", rel))?;
    let mut dir = nix::dir::Dir::from_fd(dup).map_err(fs_err("read directory", rel))?;
    let names: Vec<CString> = dir
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for name in names {
        remove_existing(dirfd, OsStr::from_bytes(name.as_bytes()), rel)?;
    }
    Ok(())
}

/// The `SCHILY.xattr.*` PAX records of an entry, minus overlayfs' own attributes: a layer
/// must not forge `trusted.overlay.*` (redirects, opaque markers) behind our back.
fn read_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return Vec::new();
    };
    exts.filter_map(|e| e.ok())
        .filter_map(|e| {
            let key = e.key().ok()?.strip_prefix("SCHILY.xattr.")?.to_string();
            (!key.starts_with("trusted.overlay.")).then(|| (key, e.value_bytes().to_vec()))
        })
        .collect()
}

fn set_xattr(fd: RawFd, key: &str, value: &[u8], rel: &Path) -> Result<(), UnpackError> {
    let Ok(ckey) = CString::new(key) else {
        return Ok(());
    };
    // SAFETY: fd is an open descriptor, ckey a NUL-terminated string, and value a valid
    // buffer of value.len() bytes; fsetxattr reads them only for the duration of the call.
    let rc = unsafe { libc::fsetxattr(fd, ckey.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    // A filesystem without xattr support, or a namespace we may not write, is not fatal:
    // containerd and Docker skip such attributes too.
    match err.raw_os_error() {
        Some(libc::ENOTSUP) | Some(libc::EPERM) => {
            tracing::debug!(path = %rel.display(), key, "xattr not set: {err}");
            Ok(())
        }
        _ => Err(UnpackError::Fs {
            op: "set xattr",
            path: rel.to_path_buf(),
            source: err,
        }),
    }
}
