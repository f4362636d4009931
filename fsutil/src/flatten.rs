//! The copy fallback: applies snapshots (bottom first) one after the other to a
//! directory, with overlayfs semantics — a 0:0 character device deletes the path below it,
//! an opaque directory hides what the lower layers had there, a directory over a
//! non-directory replaces it. Ownership, modes, times, xattrs and hard links are kept.
//!
//! Safe against hostile content because every path written is built by descending from
//! `dest` through directories this function created or checked with `symlink_metadata`:
//! a symlink from a lower layer is replaced, never followed.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{mknod, Mode, SFlag};
use nix::sys::time::TimeSpec;

use crate::FsError;

fn fs_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FsError + 'a {
    FsError::io(op, path)
}

/// Applies `layers` (snapshot directories, bottom first) to `dest`, which must exist.
pub fn flatten(layers: &[PathBuf], dest: &Path) -> Result<(), FsError> {
    for layer in layers {
        let mut links = HashMap::new();
        apply_dir(layer, dest, &mut links)?;
    }
    Ok(())
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    let (Ok(p), Ok(k)) = (
        CString::new(path.as_os_str().as_bytes()),
        CString::new("trusted.overlay.opaque"),
    ) else {
        return false;
    };
    let mut buf = [0u8; 4];
    // SAFETY: both strings are NUL-terminated and `buf` is a valid writable buffer of its
    // length; lgetxattr does not follow a final symlink and writes at most buf.len() bytes.
    let n = unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    n == 1 && buf[0] == b'y'
}

fn remove_any(path: &Path) -> Result<(), FsError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(fs_err("remove", path)),
        Ok(_) => fs::remove_file(path).map_err(fs_err("remove", path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(fs_err("stat", path)(e)),
    }
}

fn copy_owner_times(src: &fs::Metadata, dest: &Path, follow: bool) -> Result<(), FsError> {
    std::os::unix::fs::lchown(dest, Some(src.uid()), Some(src.gid()))
        .map_err(fs_err("chown", dest))?;
    if follow {
        fs::set_permissions(dest, fs::Permissions::from_mode(src.mode() & 0o7777))
            .map_err(fs_err("chmod", dest))?;
    }
    let t = TimeSpec::new(src.mtime(), src.mtime_nsec());
    nix::sys::stat::utimensat(
        None,
        dest,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| fs_err("set times", dest)(e.into()))
}

/// Copies the extended attributes of `from` to `to` (after chown, which would clear
/// `security.capability`), except overlayfs' own.
fn copy_xattrs(from: &Path, to: &Path) -> Result<(), FsError> {
    let (Ok(src), Ok(dst)) = (
        CString::new(from.as_os_str().as_bytes()),
        CString::new(to.as_os_str().as_bytes()),
    ) else {
        return Ok(());
    };
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: `src` is NUL-terminated and `names` a writable buffer of names.len() bytes;
    // llistxattr writes at most that many bytes and does not follow a final symlink.
    let n = unsafe { libc::llistxattr(src.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Ok(());
    }
    let mut value = vec![0u8; 64 * 1024];
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let Ok(key) = CString::new(name) else {
            continue;
        };
        // SAFETY: NUL-terminated strings; `value` is writable for value.len() bytes.
        let len = unsafe {
            libc::lgetxattr(
                src.as_ptr(),
                key.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len < 0 {
            continue;
        }
        // SAFETY: NUL-terminated strings; `value[..len]` was just filled by lgetxattr.
        let rc = unsafe {
            libc::lsetxattr(
                dst.as_ptr(),
                key.as_ptr(),
                value.as_ptr().cast(),
                len as usize,
                0,
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if !matches!(err.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) {
                return Err(fs_err("set xattr", to)(err));
            }
        }
    }
    Ok(())
}

fn apply_dir(
    src: &Path,
    dest: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), FsError> {
    let entries = fs::read_dir(src).map_err(fs_err("read directory", src))?;
    for entry in entries {
        let entry = entry.map_err(fs_err("read directory", src))?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).map_err(fs_err("stat", &from))?;
        if is_whiteout(&meta) {
            remove_any(&to)?;
            continue;
        }
        if meta.is_dir() {
            let existing = fs::symlink_metadata(&to).ok();
            let keep = existing.as_ref().is_some_and(|m| m.is_dir()) && !is_opaque(&from);
            if !keep {
                remove_any(&to)?;
                fs::create_dir(&to).map_err(fs_err("create directory", &to))?;
            }
            apply_dir(&from, &to, links)?;
            copy_owner_times(&meta, &to, true)?;
            copy_xattrs(&from, &to)?;
            continue;
        }
        remove_any(&to)?;
        let key = (meta.dev(), meta.ino());
        if meta.nlink() > 1 {
            if let Some(first) = links.get(&key) {
                fs::hard_link(first, &to).map_err(fs_err("create hard link", &to))?;
                continue;
            }
        }
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(fs_err("read symlink", &from))?;
            symlink(&target, &to).map_err(fs_err("create symlink", &to))?;
            copy_owner_times(&meta, &to, false)?;
        } else if ft.is_file() {
            fs::copy(&from, &to).map_err(fs_err("copy", &to))?;
            copy_owner_times(&meta, &to, true)?;
            copy_xattrs(&from, &to)?;
        } else {
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFIFO
            };
            mknod(&to, kind, Mode::from_bits_truncate(0o600), meta.rdev())
                .map_err(|e| fs_err("create node", &to)(e.into()))?;
            copy_owner_times(&meta, &to, true)?;
        }
        if meta.nlink() > 1 {
            links.insert(key, to);
        }
    }
    Ok(())
}
