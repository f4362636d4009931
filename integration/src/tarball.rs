use std::io::Write;

use anyhow::Result;
use tar::{EntryType, Header};

/// Builds an uncompressed tar in memory.
pub struct TarBuilder {
    inner: tar::Builder<Vec<u8>>,
}

impl std::fmt::Debug for TarBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TarBuilder")
    }
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Metadata of one entry.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

impl Meta {
    pub const FILE: Meta = Meta {
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
    };
    pub const DIR: Meta = Meta {
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
    };
    pub fn mode(self, mode: u32) -> Self {
        Self { mode, ..self }
    }
    pub fn owner(self, uid: u64, gid: u64) -> Self {
        Self { uid, gid, ..self }
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        let mut inner = tar::Builder::new(Vec::new());
        inner.mode(tar::HeaderMode::Complete);
        Self { inner }
    }

    /// A header whose name and link fields are copied byte for byte: no validation, so
    /// hostile names (`../x`, absolute paths) can be written.
    fn raw(name: &[u8], link: &[u8], kind: EntryType, size: u64, meta: Meta) -> Header {
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            let n = name.len().min(old.name.len());
            old.name[..n].copy_from_slice(&name[..n]);
            let l = link.len().min(old.linkname.len());
            old.linkname[..l].copy_from_slice(&link[..l]);
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(meta.mode);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(meta.mtime);
        h.set_cksum();
        h
    }

    pub fn dir(&mut self, path: &str, meta: Meta) -> Result<&mut Self> {
        let h = Self::raw(path.as_bytes(), b"", EntryType::Directory, 0, meta);
        self.inner.append(&h, std::io::empty())?;
        Ok(self)
    }

    pub fn file(&mut self, path: &str, data: &[u8], meta: Meta) -> Result<&mut Self> {
        let h = Self::raw(
            path.as_bytes(),
            b"",
            EntryType::Regular,
            data.len() as u64,
            meta,
        );
        self.inner.append(&h, data)?;
        Ok(self)
    }

    /// A file with PAX records before it (xattrs are `SCHILY.xattr.<name>`).
    pub fn file_with_pax(
        &mut self,
        path: &str,
        data: &[u8],
        meta: Meta,
        pax: &[(&str, &[u8])],
    ) -> Result<&mut Self> {
        let mut records = Vec::new();
        for (key, value) in pax {
            let body_len = 1 + key.len() + 1 + value.len() + 1;
            let mut len = body_len + 1;
            while len.to_string().len() + body_len != len {
                len = len.to_string().len() + body_len;
            }
            write!(records, "{len} {key}=")?;
            records.extend_from_slice(value);
            records.push(b'\n');
        }
        let h = Self::raw(
            b"PaxHeader",
            b"",
            EntryType::XHeader,
            records.len() as u64,
            Meta::FILE,
        );
        self.inner.append(&h, records.as_slice())?;
        self.file(path, data, meta)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let h = Self::raw(
            path.as_bytes(),
            target.as_bytes(),
            EntryType::Symlink,
            0,
            Meta::FILE.mode(0o777),
        );
        self.inner.append(&h, std::io::empty())?;
        Ok(self)
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let h = Self::raw(
            path.as_bytes(),
            target.as_bytes(),
            EntryType::Link,
            0,
            Meta::FILE,
        );
        self.inner.append(&h, std::io::empty())?;
        Ok(self)
    }

    pub fn fifo(&mut self, path: &str, meta: Meta) -> Result<&mut Self> {
        let h = Self::raw(path.as_bytes(), b"", EntryType::Fifo, 0, meta);
        self.inner.append(&h, std::io::empty())?;
        Ok(self)
    }

    pub fn char_device(
        &mut self,
        path: &str,
        major: u32,
        minor: u32,
        meta: Meta,
    ) -> Result<&mut Self> {
        let mut h = Self::raw(path.as_bytes(), b"", EntryType::Char, 0, meta);
        h.set_device_major(major)?;
        h.set_device_minor(minor)?;
        h.set_cksum();
        self.inner.append(&h, std::io::empty())?;
        Ok(self)
    }

    pub fn finish(self) -> Result<Vec<u8>> {
        Ok(self.inner.into_inner()?)
    }
}

/// Layer compressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn compress(self, tar: &[u8]) -> Result<Vec<u8>> {
        Ok(match self {
            Compression::None => tar.to_vec(),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(tar)?;
                enc.finish()?
            }
            Compression::Zstd => zstd::encode_all(tar, 3)?,
        })
    }

    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}
