use anyhow::{bail, Context, Result};

use super::Env;
use crate::cli::RmiArgs;

pub async fn run(env: &Env, args: RmiArgs) -> Result<()> {
    for name in &args.images {
        let matched = env
            .store
            .find_images(name)
            .with_context(|| format!("removing {name}"))?;
        if matched.len() > 1 && !args.force {
            let refs: Vec<&str> = matched.iter().map(|r| r.reference.as_str()).collect();
            bail!(
                "image {name} is referenced by {} references ({}): remove them by name, or use -f",
                refs.len(),
                refs.join(", ")
            );
        }
        let removed = env
            .store
            .remove_images(name)
            .with_context(|| format!("removing {name}"))?;
        for record in removed {
            println!("Untagged: {}", record.reference);
        }
    }
    // Content only the removed images used goes now, as with `docker rmi`.
    let store = env.store.clone();
    let report = tokio::task::spawn_blocking(move || berth_images::gc::collect(&store)).await??;
    for blob in &report.blobs_removed {
        println!("Deleted: {blob}");
    }
    Ok(())
}
