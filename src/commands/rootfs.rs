use anyhow::{bail, Context, Result};

use super::Env;
use crate::cli::RootfsArgs;

pub async fn run(env: &Env, args: RootfsArgs) -> Result<()> {
    let mut images = env.store.find_images(&args.image)?;
    let Some(image) = images.pop() else {
        bail!("no such image: {}", args.image)
    };
    let meta = std::fs::metadata(&args.dest)
        .with_context(|| format!("destination {}", args.dest.display()))?;
    if !meta.is_dir() || std::fs::read_dir(&args.dest)?.next().is_some() {
        bail!(
            "destination {} must be an existing empty directory",
            args.dest.display()
        );
    }
    let layers: Vec<_> = image
        .snapshots()
        .map(|d| env.store.snapshot_path(d))
        .collect();
    let dest = args.dest.clone();
    tokio::task::spawn_blocking(move || berth_images::unpack::flatten::flatten(&layers, &dest))
        .await?
        .with_context(|| {
            format!(
                "writing rootfs of {} to {}",
                image.reference,
                args.dest.display()
            )
        })?;
    Ok(())
}
