use anyhow::Result;

use crate::api::RootfsRequest;
use crate::cli::RootfsArgs;
use crate::client::Client;

pub async fn run(client: &Client, args: RootfsArgs) -> Result<()> {
    let req = RootfsRequest {
        image: args.image,
        dest: std::path::absolute(&args.dest)?,
    };
    let _: serde_json::Value = client.post("/v1/images/rootfs", &req).await?;
    Ok(())
}
