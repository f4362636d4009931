use anyhow::Result;

use super::Env;
use crate::cli::PruneArgs;
use crate::format;

pub async fn run(env: &Env, args: PruneArgs) -> Result<()> {
    let store = env.store.clone();
    let report = tokio::task::spawn_blocking(move || berth_images::gc::collect(&store)).await??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for blob in &report.blobs_removed {
        println!("Deleted blob: {blob}");
    }
    for snapshot in &report.snapshots_removed {
        println!("Deleted snapshot: {snapshot}");
    }
    println!(
        "Total reclaimed space: {}",
        format::size(report.bytes_freed)
    );
    Ok(())
}
