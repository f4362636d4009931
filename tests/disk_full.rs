//! A pull onto a full disk: the data root is a 6 MiB tmpfs, the layer 8 MiB of
//! incompressible bytes. The error says "no space left on device" with the data root, the
//! layer is not retried, the registry is not blamed, the agent logs it, and what was stored
//! before stays usable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::process::Command;

use berth_integration::fake_registry::FakeRegistry;
use berth_integration::layout::{write_oci_layout, Image};
use berth_integration::tarball::{Compression, Meta, TarBuilder};
use common::Root;

/// Deterministic bytes gzip cannot shrink (xorshift64).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The data root on a small tmpfs for the life of the value; unmounted at drop.
struct SmallDisk<'a> {
    root: &'a mut Root,
}

impl<'a> SmallDisk<'a> {
    fn mount(root: &'a mut Root, size: &str) -> Self {
        root.stop_agent(libc::SIGTERM);
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "berth-small",
            ])
            .arg(root.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs on the data root");
        root.start_agent(&[]);
        SmallDisk { root }
    }
}

impl Drop for SmallDisk<'_> {
    fn drop(&mut self) {
        self.root.stop_agent(libc::SIGTERM);
        let _ = Command::new("umount").arg(self.root.path()).status();
    }
}

#[test]
fn a_full_disk_is_reported_as_such_and_not_retried() {
    let mut root = Root::new();
    let fake = FakeRegistry::start(None).unwrap();
    let layouts = tempfile::tempdir().unwrap();
    let small = {
        let mut t = TarBuilder::new();
        t.file("small.txt", b"fits\n", Meta::FILE).unwrap();
        Image::new(
            vec![t.finish().unwrap()],
            serde_json::json!({"Cmd": ["true"]}),
        )
    };
    let big = {
        let mut t = TarBuilder::new();
        t.file("noise.bin", &noise(8 << 20), Meta::FILE).unwrap();
        Image::new(
            vec![t.finish().unwrap()],
            serde_json::json!({"Cmd": ["true"]}),
        )
    };
    for (repo, image) in [("small", &small), ("big", &big)] {
        let dir = layouts.path().join(repo);
        write_oci_layout(&dir, &[("latest", image)], Compression::Gzip).unwrap();
        fake.serve_layout(&dir, repo).unwrap();
    }
    let host = fake.host();
    let disk = SmallDisk::mount(&mut root, "6m");
    let root = &*disk.root;
    root.ok(&["pull", &format!("{host}/small:latest")]);

    let out = root.run(&["pull", &format!("{host}/big:latest")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no space left on device"), "{stderr}");
    assert!(
        stderr.contains(&root.path().display().to_string()),
        "{stderr}"
    );
    assert!(
        !stderr.contains("size mismatch"),
        "blamed the blob: {stderr}"
    );
    assert!(
        !stderr.to_lowercase().contains("retry"),
        "retried: {stderr}"
    );
    assert!(
        root.agent_log().contains("disk full while storing a layer"),
        "{}",
        root.agent_log()
    );
    // What was stored before is intact and listed; nothing of the failed pull is.
    let images = root.images_json();
    assert_eq!(images.len(), 1, "{images:?}");
    assert!(images[0]["reference"]
        .as_str()
        .unwrap()
        .ends_with("small:latest"));
    drop(disk);
}
