//! The one way the agent reads a file that an image (or a running container) controls:
//! `/etc/passwd`, `/etc/group`, the command to run.
//!
//! The path is resolved inside the root (`openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`,
//! so no symlink leads out of it), first as an `O_PATH` descriptor: no open side effect, no
//! wait. Only a regular file within the size cap is then opened for reading — through that
//! same descriptor (`/proc/self/fd/N`), so a container cannot swap the file in between —
//! with `O_NONBLOCK`. A FIFO (whose open would wait for a writer), a device node (whose open
//! may act on a host device: a watchdog, a tape), a socket, a directory or a multi-GB file
//! is refused with an error that names it, never waited on.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};

/// Files the agent reads from an image are small; 4 MiB is far above any real `/etc/passwd`.
pub const MAX_IMAGE_FILE_BYTES: u64 = 4 << 20;

/// How long one read may take; regular files on local disks take microseconds.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a file of an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageFileError {
    /// Opening or reading failed.
    #[error("reading {path} of the image: {source}")]
    Io {
        /// The path inside the root.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The path names something else than a regular file.
    #[error("{path} of the image is a {kind}, not a regular file")]
    NotRegular {
        /// The path inside the root.
        path: String,
        /// fifo, character device, ...
        kind: &'static str,
    },
    /// The file is larger than the cap.
    #[error("{path} of the image is {size} bytes, more than the {max} bytes allowed")]
    TooLarge {
        /// The path inside the root.
        path: String,
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The read did not end in time.
    #[error("reading {path} of the image took longer than {secs} s")]
    TimedOut {
        /// The path inside the root.
        path: String,
        /// The limit.
        secs: u64,
    },
}

/// What `st_mode` names, for messages.
pub fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "regular file",
        libc::S_IFDIR => "directory",
        libc::S_IFIFO => "fifo",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFSOCK => "socket",
        libc::S_IFLNK => "symlink",
        _ => "special file",
    }
}

/// An `O_PATH` descriptor of `path` resolved inside `root`, and its `stat`; `None` when it
/// does not exist. Opening with `O_PATH` has no effect on the file and never blocks.
pub fn open_path(
    root: &Path,
    path: &str,
) -> Result<Option<(OwnedFd, nix::sys::stat::FileStat)>, ImageFileError> {
    let io = |e: std::io::Error| ImageFileError::Io {
        path: path.to_string(),
        source: e,
    };
    let dir = File::open(root).map_err(io)?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(dir.as_raw_fd(), path.trim_start_matches('/'), how) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(io(e.into())),
    };
    // SAFETY: `fd` was just returned by a successful openat2 and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| io(e.into()))?;
    Ok(Some((fd, st)))
}

/// Reads the regular file `path` inside `root` (at most `max` bytes); `None` when it does
/// not exist. Anything else than a regular file is an error.
pub fn read(root: &Path, path: &str, max: u64) -> Result<Option<Vec<u8>>, ImageFileError> {
    let Some((fd, st)) = open_path(root, path)? else {
        return Ok(None);
    };
    let mode = st.st_mode;
    if mode & libc::S_IFMT != libc::S_IFREG {
        return Err(ImageFileError::NotRegular {
            path: path.to_string(),
            kind: kind_of(mode),
        });
    }
    let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
    if size > max {
        return Err(ImageFileError::TooLarge {
            path: path.to_string(),
            size,
            max,
        });
    }
    let io = |e: std::io::Error| ImageFileError::Io {
        path: path.to_string(),
        source: e,
    };
    // Re-open the very inode checked above (not the path again, which could change).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(proc_fd_path(&fd))
        .map_err(io)?;
    let started = Instant::now();
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut chunk = [0u8; 64 * 1024];
    let mut limited = file.take(max + 1);
    loop {
        if started.elapsed() > READ_TIMEOUT {
            return Err(ImageFileError::TimedOut {
                path: path.to_string(),
                secs: READ_TIMEOUT.as_secs(),
            });
        }
        match limited.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    // It grew after the stat: the cap still holds.
    if bytes.len() as u64 > max {
        return Err(ImageFileError::TooLarge {
            path: path.to_string(),
            size: bytes.len() as u64,
            max,
        });
    }
    Ok(Some(bytes))
}

fn proc_fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn root_with_etc() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        dir
    }

    #[test]
    fn reads_a_regular_file_and_refuses_the_rest() {
        let dir = root_with_etc();
        let etc = dir.path().join("etc");
        std::fs::write(etc.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let got = read(dir.path(), "/etc/passwd", 1024).unwrap().unwrap();
        assert!(got.starts_with(b"root:"));
        assert!(read(dir.path(), "/etc/nothing", 1024).unwrap().is_none());

        nix::unistd::mkfifo(
            &etc.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let e = read(dir.path(), "/etc/fifo", 1024).unwrap_err();
        assert!(e.to_string().contains("is a fifo"), "{e}");

        let e = read(dir.path(), "/etc", 1024).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");

        std::fs::write(etc.join("big"), vec![b'x'; 2048]).unwrap();
        let e = read(dir.path(), "/etc/big", 1024).unwrap_err();
        assert!(e.to_string().contains("2048 bytes"), "{e}");
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = root_with_etc();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("etc/passwd")).unwrap();
        // The host's /etc/hostname exists; the root's does not.
        assert!(read(dir.path(), "/etc/passwd", 1024).unwrap().is_none());
        std::os::unix::fs::symlink("../../../../dev/zero", dir.path().join("etc/group")).unwrap();
        assert!(read(dir.path(), "/etc/group", 1024).unwrap().is_none());
    }
}
