//! Hostile layers: entries that try to leave the snapshot through `../`, absolute paths,
//! symlinks and hard links, and a decompression bomb. A sentinel file outside the data
//! root must stay untouched and nothing may appear beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::path::{Path, PathBuf};

use berth_integration::layout::{write_docker_archive, write_oci_layout, Image};
use berth_integration::tarball::{Compression, Meta, TarBuilder};
use common::Root;
use serde_json::json;

struct Outside {
    dir: tempfile::TempDir,
}

impl Outside {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-outside-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("sentinel"), b"original").unwrap();
        Self { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn sentinel(&self) -> PathBuf {
        self.path().join("sentinel")
    }
    fn assert_untouched(&self, case: &str) {
        assert_eq!(
            std::fs::read(self.sentinel()).unwrap(),
            b"original",
            "{case}: sentinel changed"
        );
        let names: Vec<_> = std::fs::read_dir(self.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            ["sentinel"],
            "{case}: something was written beside the sentinel"
        );
    }
}

fn archive_with(layer: Vec<u8>, dir: &Path) -> PathBuf {
    let path = dir.join("hostile.tar");
    let image = Image::new(vec![layer], json!({"Cmd": ["sh"]}));
    write_docker_archive(&path, &[("hostile/image:latest", &image)]).unwrap();
    path
}

/// Imports a one-layer image; returns (succeeded, stderr).
fn import(root: &Root, layer: Vec<u8>, extra: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_with(layer, dir.path());
    let mut args = vec!["import"];
    args.extend_from_slice(extra);
    let archive = archive.to_str().unwrap().to_string();
    args.push(&archive);
    let out = root.run(&args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dotdot_and_hardlink_escapes_are_rejected() {
    let outside = Outside::new();
    let root = Root::new();
    let depth = "../".repeat(32);
    let abs = outside.sentinel().display().to_string();

    let mut t = TarBuilder::new();
    t.file(
        &format!("{depth}{}", abs.trim_start_matches('/')),
        b"pwned",
        Meta::FILE,
    )
    .unwrap();
    let (ok, err) = import(&root, t.finish().unwrap(), &[]);
    assert!(!ok && err.contains("escapes the snapshot"), "{err}");
    outside.assert_untouched("../ path");

    let mut t = TarBuilder::new();
    t.hardlink("h", &format!("{depth}{}", abs.trim_start_matches('/')))
        .unwrap();
    t.file("h", b"pwned", Meta::FILE).unwrap();
    let (ok, err) = import(&root, t.finish().unwrap(), &[]);
    assert!(!ok && err.contains("escapes the snapshot"), "{err}");
    outside.assert_untouched("hard link with ../");

    // An absolute hard link target names a path inside the snapshot, which is not there.
    let mut t = TarBuilder::new();
    t.hardlink("h", &abs).unwrap();
    t.file("h", b"pwned", Meta::FILE).unwrap();
    let (ok, err) = import(&root, t.finish().unwrap(), &[]);
    assert!(!ok && err.contains("not in this layer"), "{err}");
    outside.assert_untouched("absolute hard link");

    assert!(root.leftovers().is_empty());
    assert!(root.snapshot_dirs().is_empty());
    assert!(root.images_json().is_empty());
}

#[test]
fn writes_through_symlinks_stay_inside_the_snapshot() {
    let outside = Outside::new();
    let root = Root::new();
    let abs_dir = outside.path().display().to_string();
    let mut t = TarBuilder::new();
    // Absolute symlink to the outside directory, then a file written through it.
    t.symlink("evil", &abs_dir).unwrap();
    t.file("evil/sentinel", b"pwned", Meta::FILE).unwrap();
    t.file("evil/new-file", b"pwned", Meta::FILE).unwrap();
    // Relative symlink climbing far up, then a write through it.
    t.symlink("up", &"../".repeat(40)).unwrap();
    t.file(
        &format!("up/{}/sentinel", abs_dir.trim_start_matches('/')),
        b"pwned",
        Meta::FILE,
    )
    .unwrap();
    // Symlink to the sentinel, a hard link to that symlink, then a file replacing the link.
    t.symlink("s", &outside.sentinel().display().to_string())
        .unwrap();
    t.hardlink("h", "s").unwrap();
    t.file("h", b"pwned", Meta::FILE).unwrap();
    // A directory entry and a symlink replacing each other.
    t.dir("d", Meta::DIR).unwrap();
    t.symlink("d", &abs_dir).unwrap();
    t.file("d/x", b"pwned", Meta::FILE).unwrap();
    let (ok, err) = import(&root, t.finish().unwrap(), &[]);
    outside.assert_untouched("symlink writes");
    assert!(ok, "contained writes are allowed, as in Docker: {err}");
    let snapshot = &root.snapshot_dirs()[0];
    let inside = snapshot.join(abs_dir.trim_start_matches('/'));
    assert_eq!(
        std::fs::read(inside.join("sentinel")).unwrap(),
        b"pwned",
        "the write landed inside the snapshot"
    );
    assert_eq!(std::fs::read(snapshot.join("h")).unwrap(), b"pwned");
    assert!(std::fs::symlink_metadata(snapshot.join("s"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn forged_overlay_xattrs_are_dropped() {
    let root = Root::new();
    let mut t = TarBuilder::new();
    t.file_with_pax(
        "f",
        b"x",
        Meta::FILE,
        &[("SCHILY.xattr.trusted.overlay.redirect", b"/etc")],
    )
    .unwrap();
    let (ok, err) = import(&root, t.finish().unwrap(), &[]);
    assert!(ok, "{err}");
    let f = root.snapshot_dirs()[0].join("f");
    let p = std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new("trusted.overlay.redirect").unwrap();
    let mut buf = [0u8; 16];
    // SAFETY: valid NUL-terminated strings and a writable buffer of the given length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(len < 0, "a layer must not set overlayfs' own xattrs");
}

#[test]
fn decompression_bomb_hits_the_limit() {
    let root = Root::new();
    let mut t = TarBuilder::new();
    t.file("zeros", &vec![0u8; 64 << 20], Meta::FILE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = Image::new(vec![t.finish().unwrap()], json!({"Cmd": ["sh"]}));
    write_oci_layout(
        &dir.path().join("bomb"),
        &[("latest", &image)],
        Compression::Gzip,
    )
    .unwrap();
    let blobs: u64 = std::fs::read_dir(dir.path().join("bomb/blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(blobs < 1 << 20, "the bomb is small compressed");
    let bomb = dir.path().join("bomb").display().to_string();
    let err = root.fails(&["import", "--max-layer-size", "8m", &bomb]);
    assert!(err.contains("beyond the limit of 8388608 bytes"), "{err}");
    assert!(root.leftovers().is_empty());
    assert!(root.snapshot_dirs().is_empty());
    // The same layer under the default limit is fine.
    root.ok(&["import", &bomb]);
}
