//! Layer unpacking.
//!
//! A layer arrives as a byte stream (from the network while it downloads, or from a stored
//! blob); it is decompressed, hashed (the diff id) and counted (the bomb limit) on the way,
//! and each tar entry is written below the snapshot root by [`writer`], which resolves
//! every parent path with `openat2(RESOLVE_IN_ROOT)` so no entry can land outside. Whiteouts
//! become overlayfs whiteouts; `berth_fsutil::flatten` applies a stack of such snapshots to one
//! directory when overlayfs is not available.
//!
//! The tar crate parses headers (ustar, GNU long names, PAX); its own `unpack` is not used
//! because it checks paths with `canonicalize` on the host (racy, and wrong for absolute
//! symlinks inside a layer), knows nothing of whiteouts, and sets no xattrs by fd.

/// Applying a stack of snapshots into one directory (the copy fallback).
/// Lexical path normalisation for tar entry names.
pub mod path;
/// Writing tar entries below a root directory fd.
pub mod writer;

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::digest::{Digest, Hasher};

/// Default limit of uncompressed bytes per layer (decompression bomb guard).
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 32 << 30;

/// Errors while unpacking one layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The compressed stream is corrupt.
    #[error("corrupt {format} stream: {source}")]
    Decompress {
        /// `gzip` or `zstd`.
        format: &'static str,
        /// The decoder's error.
        source: io::Error,
    },
    /// The tar stream is malformed.
    #[error("malformed tar stream: {source}")]
    Tar {
        /// The parser's error.
        source: io::Error,
    },
    /// The input stream itself failed (download error, truncated file).
    #[error("reading layer: {source}")]
    Source {
        /// The reader's error.
        source: io::Error,
    },
    /// More uncompressed bytes than allowed (a decompression bomb, or a limit set too low).
    #[error("layer expands beyond the limit of {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: u64,
    },
    /// An entry name or link target leaves the snapshot (`../`).
    #[error("layer entry {path:?} escapes the snapshot directory")]
    PathEscape {
        /// The name as written in the tar.
        path: String,
    },
    /// A hard link names a target that is not earlier in the same layer.
    #[error("hard link {path:?} points to {target:?}, which is not in this layer")]
    LinkTargetMissing {
        /// The link.
        path: String,
        /// Its target.
        target: String,
    },
    /// A filesystem operation on the snapshot failed.
    #[error("{op} {path:?}: {source}")]
    Fs {
        /// What was being done.
        op: &'static str,
        /// Path inside the snapshot.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The uncompressed tar did not hash to the diff id the image config promises.
    #[error("layer content hashes to {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        /// From the config.
        expected: Digest,
        /// What the tar hashed to.
        actual: Digest,
    },
}

/// How the layer bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// zstd.
    Zstd,
    /// Look at the magic bytes (docker-archive layers carry no media type).
    Detect,
}

/// Limits for one unpack.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// Uncompressed bytes allowed per layer.
    pub max_bytes: u64,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_LAYER_BYTES,
        }
    }
}

/// What an unpack produced.
#[derive(Debug, Clone)]
pub struct UnpackStats {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub unpacked_size: u64,
    /// Entries written.
    pub entries: u64,
}

/// Which layer of the reader stack failed first; lets one io::Error be told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    Source,
    Decompress(&'static str),
    TooLarge(u64),
}

pub(crate) type FaultCell = Rc<Cell<Fault>>;

/// Maps an io::Error from reading through the stack to the layer that caused it.
pub(crate) fn classify(fault: &FaultCell, source: io::Error) -> UnpackError {
    match fault.get() {
        Fault::Source => UnpackError::Source { source },
        Fault::Decompress(format) => UnpackError::Decompress { format, source },
        Fault::TooLarge(limit) => UnpackError::TooLarge { limit },
        Fault::None => UnpackError::Tar { source },
    }
}

/// Records `tag` as the fault when its inner reader fails first.
struct Watch<R> {
    inner: R,
    fault: FaultCell,
    tag: Fault,
}

impl<R: Read> Read for Watch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| {
            if self.fault.get() == Fault::None {
                self.fault.set(self.tag);
            }
        })
    }
}

/// Hashes the uncompressed stream and enforces the size limit.
struct Limited<R> {
    inner: R,
    hasher: Hasher,
    limit: u64,
    fault: FaultCell,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if self.hasher.len() > self.limit {
            self.fault.set(Fault::TooLarge(self.limit));
            return Err(io::Error::other("layer size limit exceeded"));
        }
        Ok(n)
    }
}

fn sniff(head: &[u8]) -> Compression {
    match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        _ => Compression::None,
    }
}

/// Unpacks the layer read from `source` into the existing, empty directory `dest`.
///
/// All of `source` is consumed, also past the end of the tar, so a tee on it (the blob
/// ingest of a streaming pull) sees every byte.
pub fn unpack_layer<R: Read>(
    source: R,
    compression: Compression,
    dest: &Path,
    options: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let fault: FaultCell = Rc::new(Cell::new(Fault::None));
    let mut raw = BufReader::with_capacity(
        1 << 20,
        Watch {
            inner: source,
            fault: fault.clone(),
            tag: Fault::Source,
        },
    );
    let compression = match compression {
        Compression::Detect => sniff(raw.fill_buf().map_err(|e| classify(&fault, e))?),
        other => other,
    };
    let decoder: Box<dyn Read + '_> = match compression {
        Compression::Gzip => Box::new(Watch {
            inner: flate2::bufread::MultiGzDecoder::new(&mut raw),
            fault: fault.clone(),
            tag: Fault::Decompress("gzip"),
        }),
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(&mut raw).map_err(|source| {
                UnpackError::Decompress {
                    format: "zstd",
                    source,
                }
            })?;
            Box::new(Watch {
                inner: dec,
                fault: fault.clone(),
                tag: Fault::Decompress("zstd"),
            })
        }
        Compression::None | Compression::Detect => Box::new(&mut raw),
    };
    let mut limited = Limited {
        inner: decoder,
        hasher: Hasher::default(),
        limit: options.max_bytes,
        fault: fault.clone(),
    };
    let entries = {
        let mut archive = tar::Archive::new(&mut limited);
        let mut writer = writer::LayerWriter::open(dest, fault.clone())?;
        for entry in archive.entries().map_err(|e| classify(&fault, e))? {
            let mut entry = entry.map_err(|e| classify(&fault, e))?;
            writer.apply(&mut entry)?;
        }
        writer.finish()?
    };
    // The end-of-archive blocks and any padding belong to the diff id too.
    io::copy(&mut limited, &mut io::sink()).map_err(|e| classify(&fault, e))?;
    let unpacked_size = limited.hasher.len();
    let diff_id = std::mem::take(&mut limited.hasher).finish();
    drop(limited);
    io::copy(&mut raw, &mut io::sink()).map_err(|e| classify(&fault, e))?;
    Ok(UnpackStats {
        diff_id,
        unpacked_size,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    let _ = b.append_data(&mut h, path, *d);
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    let _ = b.append_data(&mut h, path, std::io::empty());
                }
            }
        }
        b.into_inner().unwrap_or_default()
    }

    fn require_root() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "unpack tests chown files: run as root");
    }

    #[test]
    fn whiteouts_and_stats() -> Result<(), Box<dyn std::error::Error>> {
        require_root();
        let dir = tempfile::tempdir()?;
        let tar = tar_of(&[
            ("d", None),
            ("d/.wh.gone", Some(b"")),
            ("d/.wh..wh..opq", Some(b"")),
            ("d/f", Some(b"hi")),
        ]);
        let stats = unpack_layer(
            tar.as_slice(),
            Compression::Detect,
            dir.path(),
            &UnpackOptions::default(),
        )?;
        assert_eq!(stats.diff_id, Digest::of(&tar));
        assert_eq!(stats.unpacked_size, tar.len() as u64);
        let gone = std::fs::symlink_metadata(dir.path().join("d/gone"))?;
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &gone.file_type()
        ));
        assert!(!dir.path().join("d/.wh.gone").exists());
        assert_eq!(std::fs::read(dir.path().join("d/f"))?, b"hi");
        Ok(())
    }

    #[test]
    fn a_file_replacing_a_directory_ends_writes_below_it() -> Result<(), Box<dyn std::error::Error>>
    {
        require_root();
        let dir = tempfile::tempdir()?;
        let tar = tar_of(&[
            ("d", None),
            ("d/x", Some(b"1")),
            ("d", Some(b"now a file")),
            ("d/after", Some(b"2")),
        ]);
        let err = unpack_layer(
            tar.as_slice(),
            Compression::None,
            dir.path(),
            &UnpackOptions::default(),
        );
        assert!(matches!(err, Err(UnpackError::Fs { .. })), "{err:?}");
        assert_eq!(std::fs::read(dir.path().join("d"))?, b"now a file");
        Ok(())
    }
}
