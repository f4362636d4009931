use anyhow::Result;

use berth_api::image::PruneView;

use crate::cli::PruneArgs;
use crate::client::Client;
use crate::format;

pub async fn run(client: &Client, args: PruneArgs) -> Result<()> {
    let report: PruneView = client.post("/v1/images/prune", &()).await?;
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
