use anyhow::{bail, Result};
use serde_json::json;

use super::Env;
use crate::cli::InspectArgs;

pub fn run(env: &Env, args: InspectArgs) -> Result<()> {
    let images = env.store.find_images(&args.image)?;
    let mut out = Vec::new();
    for image in images {
        let config: serde_json::Value =
            serde_json::from_slice(&env.store.read_blob(&image.config)?)?;
        let diff_ids: Vec<_> = image.snapshots().cloned().collect();
        let missing: Vec<String> = diff_ids
            .iter()
            .filter(|d| !env.store.snapshot_path(d).is_dir())
            .map(|d| d.to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "image {} is missing snapshots {}; pull it again",
                image.reference,
                missing.join(", ")
            );
        }
        out.push(json!({
            "Id": image.config,
            "RepoTags": [image.reference],
            "RepoDigests": [image.digest],
            "Record": image,
            "Config": config,
            "Rootfs": {
                "LowerDirs": env.store.lowerdirs(&diff_ids),
                "Mounts": env.store.rootfs_mounts(&diff_ids),
            },
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
