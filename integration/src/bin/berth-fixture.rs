//! `berth-fixture`: writes the test images built from Debian's busybox-static.
//!
//! ```text
//! berth-fixture all OUT_DIR                    every fixture (see fixtures::write_all)
//! berth-fixture fat OUT_LAYOUT SRC_DIR...      a big image: one gzip layer per SRC_DIR
//! ```

use std::path::PathBuf;

use anyhow::{bail, Result};
use berth_integration::{fixtures, layout, tarball};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("all") if args.len() == 2 => fixtures::write_all(&PathBuf::from(&args[1])),
        Some("fat") if args.len() >= 3 => {
            let mut layers = Vec::new();
            for src in &args[2..] {
                let mut b = tar::Builder::new(Vec::new());
                b.follow_symlinks(false);
                let name = src.trim_start_matches('/');
                b.append_dir_all(name, src)?;
                layers.push(b.into_inner()?);
            }
            let image = layout::Image::new(layers, serde_json::json!({"Cmd": ["sh"]}));
            layout::write_oci_layout(
                &PathBuf::from(&args[1]),
                &[("latest", &image)],
                tarball::Compression::Gzip,
            )
        }
        _ => bail!("usage: berth-fixture all OUT_DIR | berth-fixture fat OUT_LAYOUT SRC_DIR..."),
    }
}
