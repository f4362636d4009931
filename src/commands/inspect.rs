use anyhow::Result;

use super::query;
use crate::cli::InspectArgs;
use crate::client::Client;

pub async fn run(client: &Client, args: InspectArgs) -> Result<()> {
    let out: serde_json::Value = client
        .get(&format!(
            "/v1/images/inspect?{}",
            query(&[("name", args.image)])
        ))
        .await?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
