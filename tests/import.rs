//! `berth import` of docker-save archives and OCI layouts, and the rootfs they give:
//! overlayfs of the snapshots and the copy fallback, with whiteouts applied and file
//! metadata preserved.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use common::{fixtures, listing, Overlay, Root};

#[test]
fn imports_every_archive_form_and_shares_layers() {
    let root = Root::new();
    let fx = fixtures();
    let out = root.ok(&["import", fx.join("busybox-oci.tar").to_str().unwrap()]);
    assert!(out.contains("localhost/busybox-oci:latest"), "{out}");
    root.ok(&["import", fx.join("busybox-docker.tar").to_str().unwrap()]);
    root.ok(&[
        "import",
        "--tag",
        "berth.test/multi:oci",
        fx.join("multilayer-oci").to_str().unwrap(),
    ]);
    root.ok(&["import", fx.join("multilayer-docker.tar").to_str().unwrap()]);
    let images = root.images_json();
    let names: Vec<&str> = images
        .iter()
        .map(|i| i["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "berth.test/busybox:latest",
            "berth.test/multi:oci",
            "berth.test/multilayer:latest",
            "localhost/busybox-oci:latest"
        ]
    );
    // One busybox layer + two data layers: each unpacked once although four images use them.
    assert_eq!(root.snapshot_dirs().len(), 3);
    assert!(root.leftovers().is_empty(), "{:?}", root.leftovers());
    let table = root.ok(&["images"]);
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(
        table.contains("berth.test/multilayer") && table.contains("latest"),
        "{table}"
    );
    // `images REPO` lists the repository's tags; `images REPO:TAG` just that one.
    let only = root.ok(&["images", "-q", "--no-trunc", "berth.test/multilayer"]);
    assert_eq!(only.lines().count(), 1, "{only}");
    assert_eq!(
        root.ok(&["images", "berth.test/multi:oci"]).lines().count(),
        2
    );
    assert_eq!(root.ok(&["images", "nothing/here"]).lines().count(), 1);

    // Two references share one image id: removing by id needs -f, as with docker rmi.
    let id = only.trim().trim_start_matches("sha256:")[..12].to_string();
    let err = root.fails(&["rmi", &id]);
    assert!(err.contains("referenced by 2 references"), "{err}");
    root.ok(&["rmi", "-f", &id]);
    assert_eq!(root.images_json().len(), 2);
    // The busybox layer is still used by the two busybox images.
    assert_eq!(root.snapshot_dirs().len(), 1);
}

#[test]
fn multilayer_rootfs_applies_whiteouts_and_keeps_metadata() {
    let root = Root::new();
    root.ok(&[
        "import",
        fixtures().join("multilayer-docker.tar").to_str().unwrap(),
    ]);
    let lowers = root.lowerdirs("berth.test/multilayer");
    assert_eq!(lowers.len(), 3);
    let mnt = Overlay::mount(&lowers);
    let data = mnt.path().join("data");
    assert!(!data.join("b.txt").exists(), "whiteout must delete b.txt");
    assert!(
        !data.join("gone").exists(),
        "whiteout must delete a directory"
    );
    let opaque: Vec<_> = std::fs::read_dir(data.join("opaque"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        opaque,
        ["new1"],
        "opaque directory hides the lower layer's files"
    );
    assert_eq!(
        std::fs::read_to_string(mnt.path().join("etc/motd")).unwrap(),
        "layer three\n"
    );
    let a = std::fs::metadata(data.join("a.txt")).unwrap();
    let c = std::fs::metadata(data.join("c.txt")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (c.ino(), 2), "hard link preserved");
    assert_eq!((a.uid(), a.gid()), (1000, 1000), "ownership preserved");
    assert_eq!(a.mtime(), 1_700_000_000, "mtime preserved");
    assert_eq!(
        std::fs::read_link(data.join("d.link")).unwrap().to_str(),
        Some("a.txt")
    );
    assert_eq!(
        std::fs::read_link(data.join("abs.link")).unwrap().to_str(),
        Some("/data/a.txt")
    );
    let setuid = std::fs::metadata(data.join("setuid")).unwrap();
    assert_eq!(setuid.mode() & 0o7777, 0o4755, "setuid bit preserved");
    assert!(std::fs::symlink_metadata(data.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let null = std::fs::metadata(data.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix_makedev(1, 3));
    assert_eq!(
        std::fs::metadata(data.join("keep")).unwrap().mode() & 0o777,
        0o750
    );
    assert_eq!(
        xattr(&data.join("xattr.txt"), "user.berth").as_deref(),
        Some(&b"hello"[..])
    );
    assert!(
        std::fs::metadata(mnt.path().join("bin/busybox"))
            .unwrap()
            .mode()
            & 0o111
            != 0
    );

    // The copy fallback gives the same tree.
    let flat = tempfile::tempdir().unwrap();
    root.ok(&[
        "image",
        "rootfs",
        "berth.test/multilayer",
        flat.path().to_str().unwrap(),
    ]);
    assert_eq!(listing(flat.path()), listing(mnt.path()));
    assert_eq!(
        xattr(&flat.path().join("data/xattr.txt"), "user.berth").as_deref(),
        Some(&b"hello"[..])
    );
}

#[test]
fn oci_multiplatform_index_picks_amd64_and_bad_archives_fail_cleanly() {
    let root = Root::new();
    let out = root.ok(&["import", fixtures().join("multiarch-oci").to_str().unwrap()]);
    assert!(out.contains("localhost/multiarch-oci:latest"), "{out}");
    assert_eq!(root.images_json()[0]["platform"], "linux/amd64");
    let arm = Root::new();
    let layout = fixtures().join("multiarch-oci");
    let layout = layout.to_str().unwrap();
    arm.ok(&["import", "--platform", "linux/arm64", layout]);
    assert_eq!(arm.images_json()[0]["platform"], "linux/arm64");
    let err = arm.fails(&["import", "--platform", "linux/s390x", layout]);
    assert!(err.contains("no manifest for linux/s390x"), "{err}");
    let err = arm.fails(&["import", "--platform", "linux", layout]);
    assert!(err.contains("invalid platform"), "{err}");

    // `import -` reads a tar from standard input, like `docker load`.
    let stdin = Root::new();
    let archive = std::fs::File::open(fixtures().join("busybox-docker.tar")).unwrap();
    let out = stdin.cmd(&["import", "-"]).stdin(archive).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdin.images_json()[0]["reference"],
        "berth.test/busybox:latest"
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.tar");
    std::fs::write(
        &junk,
        b"this is not a tar archive at all, not even close............",
    )
    .unwrap();
    let err = root.fails(&["import", junk.to_str().unwrap()]);
    assert!(err.contains("junk.tar"), "{err}");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = root.fails(&["import", empty.to_str().unwrap()]);
    assert!(err.contains("neither a docker save archive"), "{err}");
    // A layout whose blob does not match its name.
    let bad = dir.path().join("bad-oci");
    copy_dir(&fixtures().join("busybox-oci"), &bad);
    let blob = std::fs::read_dir(bad.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let err = root.fails(&["import", bad.to_str().unwrap()]);
    assert!(err.contains("digest mismatch"), "{err}");
    // Nothing stored before was lost.
    assert_eq!(root.images_json().len(), 1);
    assert!(root.leftovers().is_empty());
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn nix_makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfffff000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffffff00) << 12)
        | (minor & 0xff)
}

fn xattr(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: valid NUL-terminated strings and a writable buffer of the given length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}
