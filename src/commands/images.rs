use anyhow::Result;
use berth_api::image::short_digest;
use berth_api::ImageView;

use super::query;
use crate::cli::ImagesArgs;
use crate::client::Client;
use crate::format;

pub async fn run(client: &Client, args: ImagesArgs) -> Result<()> {
    let path = match &args.reference {
        Some(r) => format!("/v1/images?{}", query(&[("reference", r.clone())])),
        None => "/v1/images".to_string(),
    };
    let images: Vec<ImageView> = client.get(&path).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&images)?);
        return Ok(());
    }
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for image in &images {
            let id = if args.no_trunc {
                image.id.clone()
            } else {
                short_digest(&image.id).to_string()
            };
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(());
    }
    let mut rows = vec![
        ["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"]
            .map(String::from)
            .to_vec(),
    ];
    for image in &images {
        let (repo, tag) = (
            image.repository.clone(),
            image.tag.clone().unwrap_or_else(|| "<none>".into()),
        );
        let (digest, id) = if args.no_trunc {
            (image.digest.clone(), image.id.clone())
        } else {
            (
                format!("sha256:{}", short_digest(&image.digest)),
                short_digest(&image.id).to_string(),
            )
        };
        rows.push(vec![
            repo,
            tag,
            digest,
            id,
            format::age(image.created.as_deref()),
            format::size(image.size),
        ]);
    }
    print!("{}", format::table(&rows));
    Ok(())
}
