use anyhow::Result;

use crate::api::{RemoveImageRequest, RemoveImageResponse};
use crate::cli::RmiArgs;
use crate::client::Client;

pub async fn run(client: &Client, args: RmiArgs) -> Result<()> {
    for name in &args.images {
        let req = RemoveImageRequest {
            name: name.clone(),
            force: args.force,
        };
        let resp: RemoveImageResponse = client.post("/v1/images/remove", &req).await?;
        for r in resp.untagged {
            println!("Untagged: {r}");
        }
        for d in resp.deleted {
            println!("Deleted: {d}");
        }
    }
    Ok(())
}
