//! Shared helpers of the integration tests: a private data root per test, the built
//! `berth` binary, and the busybox fixtures (built once per test binary).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub use berth_integration::require_root;

/// A private data root; removed at drop.
pub struct Root {
    pub dir: tempfile::TempDir,
}

impl Root {
    pub fn new() -> Self {
        require_root();
        Self {
            dir: tempfile::Builder::new()
                .prefix("berth-test-root-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `berth --root <root> --config <none> ARGS…`, with no docker auth file and no tty.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("--root")
            .arg(self.path())
            .arg("--config")
            .arg(self.path().join("no-config.json"))
            .env("DOCKER_CONFIG", self.path().join("no-docker-config"))
            .env_remove("BERTH_REGISTRY_CREDS")
            .args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running berth")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "berth {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn images_json(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["images", "--json"])).expect("images --json is JSON")
    }

    /// Files left in the ingest directories (there must be none after any command).
    pub fn leftovers(&self) -> Vec<PathBuf> {
        ["content/ingest", "snapshots/ingest"]
            .iter()
            .flat_map(|d| {
                std::fs::read_dir(self.path().join(d))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
            })
            .collect()
    }

    pub fn blob_count(&self) -> usize {
        std::fs::read_dir(self.path().join("content/blobs/sha256"))
            .map(|r| r.count())
            .unwrap_or(0)
    }

    pub fn snapshot_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.path().join("snapshots/sha256"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()
    }

    /// The overlay lower dirs of an image, top first.
    pub fn lowerdirs(&self, image: &str) -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["image", "inspect", image])).expect("inspect JSON");
        v[0]["Rootfs"]["LowerDirs"]
            .as_array()
            .expect("LowerDirs")
            .iter()
            .map(|s| s.as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// The busybox fixtures (see `berth_integration::fixtures::write_all`), built once and
/// kept in cargo's test scratch directory (inside `target/`, so nothing is left in /tmp).
/// Keyed by the busybox binary and a format version; built in a private directory and
/// renamed into place, so test binaries running at the same time never see half of it.
pub fn fixtures() -> &'static Path {
    const FORMAT: u32 = 2;
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let busybox = std::fs::read(berth_integration::fixtures::BUSYBOX)
            .expect("reading /bin/busybox: install busybox-static");
        let key = &berth_integration::layout::sha256_hex(&busybox)[..12];
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(format!("fixtures-{key}-v{FORMAT}"));
        if !dir.is_dir() {
            let tmp = tempfile::Builder::new()
                .prefix(".fixtures-")
                .tempdir_in(base)
                .expect("temp dir");
            berth_integration::fixtures::write_all(tmp.path())
                .expect("building fixtures from busybox-static");
            // Another test binary may have won the race; its copy is identical.
            let built = tmp.keep();
            if std::fs::rename(&built, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&built);
            }
        }
        dir
    })
}

/// A read-only overlay mount of the given lower dirs; unmounted at drop.
pub struct Overlay {
    pub dir: tempfile::TempDir,
}

impl Overlay {
    pub fn mount(lowers: &[String]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-mnt-")
            .tempdir()
            .expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("lowerdir={},ro", lowers.join(":")))
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting overlay failed");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A sorted listing of a tree: path, type, mode, uid, gid, size, symlink target.
pub fn listing(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            let m = std::fs::symlink_metadata(&path).expect("stat");
            let rel = path
                .strip_prefix(root)
                .expect("prefix")
                .display()
                .to_string();
            let target = std::fs::read_link(&path)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            let size = if m.is_dir() { 0 } else { m.size() };
            out.push(format!(
                "{rel} {:o} {}:{} {size} {target}",
                m.mode(),
                m.uid(),
                m.gid()
            ));
            if m.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}
