use anyhow::Result;
use berth_images::reference::ImageRef;

use berth_images::store::metadata::ImageRecord;

use crate::cli::ImagesArgs;
use crate::client::Client;
use crate::format;

pub async fn run(client: &Client, args: ImagesArgs) -> Result<()> {
    let mut images: Vec<ImageRecord> = client.get("/v1/images").await?;
    if let Some(filter) = &args.reference {
        // Like `docker images busybox`: a bare repository matches all its tags.
        let wanted = ImageRef::parse(filter)?;
        let has_tag = filter
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':') || last.contains('@'));
        images.retain(|image| match ImageRef::parse(&image.reference) {
            Ok(r) if has_tag => r == wanted,
            Ok(r) => r.name() == wanted.name(),
            Err(_) => false,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&images)?);
        return Ok(());
    }
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for image in &images {
            let id = if args.no_trunc {
                image.config.to_string()
            } else {
                image.config.short().to_string()
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
        let (repo, tag) = match ImageRef::parse(&image.reference) {
            Ok(r) => (r.name(), r.tag().unwrap_or("<none>").to_string()),
            Err(_) => (image.reference.clone(), "<none>".into()),
        };
        let (digest, id) = if args.no_trunc {
            (image.digest.to_string(), image.config.to_string())
        } else {
            (
                format!("sha256:{}", image.digest.short()),
                image.config.short().to_string(),
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
