//! `berth-fixture`: writes the test images built from Debian's busybox-static, and the
//! benchmark's "fat" image built from the machine's own files.
//!
//! ```text
//! berth-fixture all OUT_DIR
//!     every test fixture (see fixtures::write_all)
//! berth-fixture dir OUT_LAYOUT SRC_DIR CMD...
//!     an OCI layout of busybox plus one layer holding SRC_DIR's contents, with Cmd CMD
//!     (the benchmarks' nginx and stress-ng images, from the host's Debian packages)
//! berth-fixture fat OUT_LAYOUT MAX_BYTES MAX_FILES LAYERS SRC_DIR...
//!     an OCI layout whose one image holds the first files of SRC_DIRs (sorted walk) up to
//!     MAX_BYTES or MAX_FILES (files over MAX_BYTES/200 skipped), cut into LAYERS gzip layers of about equal size
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_integration::{fixtures, layout, tarball};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("all") if args.len() == 2 => fixtures::write_all(&PathBuf::from(&args[1])),
        Some("fat") if args.len() >= 6 => {
            let max_bytes: u64 = args[2].parse().context("MAX_BYTES")?;
            let max_files: usize = args[3].parse().context("MAX_FILES")?;
            let layers: usize = args[4].parse().context("LAYERS")?;
            fat(Path::new(&args[1]), max_bytes, max_files, layers.max(1), &args[5..])
        }
        Some("dir") if args.len() >= 4 => dir_image(Path::new(&args[1]), Path::new(&args[2]), &args[3..]),
        _ => bail!("usage: berth-fixture all OUT_DIR | berth-fixture dir OUT_LAYOUT SRC_DIR CMD... | berth-fixture fat OUT_LAYOUT MAX_BYTES MAX_FILES LAYERS SRC_DIR..."),
    }
}

/// busybox plus `src`'s contents as a second layer, with `cmd` as its Cmd.
fn dir_image(out: &Path, src: &Path, cmd: &[String]) -> Result<()> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", src)
        .with_context(|| format!("archiving {}", src.display()))?;
    let layer = b.into_inner()?;
    let mut config = fixtures::busybox_config();
    config["Cmd"] = serde_json::json!(cmd);
    let image = layout::Image::new(vec![fixtures::busybox_layer()?, layer], config);
    layout::write_oci_layout(out, &[("latest", &image)], tarball::Compression::Gzip)
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let is_dir = meta.is_dir();
        if is_dir || meta.is_file() || meta.file_type().is_symlink() {
            out.push((path.clone(), meta));
        }
        if is_dir {
            walk(&path, out);
        }
    }
}

fn fat(
    out: &Path,
    max_bytes: u64,
    max_files: usize,
    layers: usize,
    sources: &[String],
) -> Result<()> {
    let mut all = Vec::new();
    for src in sources {
        walk(Path::new(src), &mut all);
    }
    let (mut bytes, mut files, mut chosen) = (0u64, 0usize, Vec::new());
    for (path, meta) in all {
        if bytes >= max_bytes || files >= max_files {
            break;
        }
        // Skip the few huge files so the image has many files, like a real distro layer.
        if meta.is_file() && meta.len() > max_bytes / 200 {
            continue;
        }
        if !meta.is_dir() {
            files += 1;
            bytes += meta.len();
        }
        chosen.push((path, meta, bytes));
    }
    let per_layer = bytes.div_ceil(layers as u64).max(1);
    let mut tars: Vec<tar::Builder<Vec<u8>>> =
        (0..layers).map(|_| tar::Builder::new(Vec::new())).collect();
    let mut made: Vec<std::collections::BTreeSet<PathBuf>> = vec![Default::default(); layers];
    for (path, meta, cumulative) in chosen {
        let layer = ((cumulative.saturating_sub(1)) / per_layer).min(layers as u64 - 1) as usize;
        let builder = &mut tars[layer];
        builder.follow_symlinks(false);
        // Parent directories first, once per layer.
        let mut parents: Vec<&Path> = path
            .ancestors()
            .skip(1)
            .filter(|p| p.parent().is_some())
            .collect();
        parents.reverse();
        for parent in parents {
            if made[layer].insert(parent.to_path_buf()) {
                builder.append_dir(parent.strip_prefix("/")?, parent)?;
            }
        }
        let name = path.strip_prefix("/")?;
        if meta.is_dir() {
            if made[layer].insert(path.clone()) {
                builder.append_dir(name, &path)?;
            }
        } else {
            builder.append_path_with_name(&path, name)?;
        }
    }
    let tars = tars
        .into_iter()
        .map(|b| b.into_inner())
        .collect::<std::io::Result<Vec<_>>>()?;
    eprintln!("fat image: {files} files, {bytes} bytes of file data, {layers} layers");
    let image = layout::Image::new(tars, serde_json::json!({"Cmd": ["sh"]}));
    layout::write_oci_layout(out, &[("latest", &image)], tarball::Compression::Gzip)
}
