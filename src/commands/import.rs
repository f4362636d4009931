use std::io::Write;

use anyhow::{Context, Result};

use super::query;
use crate::cli::ImportArgs;
use crate::client::Client;

/// A temporary copy of standard input, removed when dropped.
struct Spool(std::path::PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub async fn run(client: &Client, args: ImportArgs) -> Result<()> {
    let mut _spool = None;
    let path = if args.path.as_os_str() == "-" {
        // The agent reads archives by path: stdin is spooled to a private temporary file.
        let path = std::env::temp_dir().join(format!("berth-import-{}", std::process::id()));
        let spool = Spool(path.clone());
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        std::io::copy(&mut std::io::stdin().lock(), &mut file).context("reading standard input")?;
        file.flush()?;
        _spool = Some(spool);
        path
    } else {
        std::path::absolute(&args.path)?
    };
    let max = args
        .unpack
        .max_layer_size
        .as_deref()
        .map(|t| crate::config::parse_size("--max-layer-size", t))
        .transpose()?;
    let mut q = vec![("path", path.display().to_string())];
    if let Some(t) = &args.tag {
        q.push(("tag", t.clone()));
    }
    if let Some(p) = &args.unpack.platform {
        q.push(("platform", p.clone()));
    }
    if let Some(m) = max {
        q.push(("max_layer_bytes", m.to_string()));
    }
    let records = super::pull::follow(
        client,
        &format!("/v1/images/import?{}", query(&q)),
        None,
        args.quiet,
    )
    .await
    .with_context(|| format!("importing {}", args.path.display()))?;
    for record in records {
        if !args.quiet {
            println!("Loaded image: {} ({})", record.reference, record.id);
        } else {
            println!("{}", record.reference);
        }
    }
    Ok(())
}
