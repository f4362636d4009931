use anyhow::{bail, Result};
use berth_api::ImageView;
use hyper::Method;

use crate::api::{ProgressLine, PullRequest};
use crate::cli::{PullArgs, RegistryArgs, UnpackArgs};
use crate::client::Client;

/// The auth file the CLI user would use: `--authfile`, else `$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json` of the caller (the agent runs with its own environment).
fn authfile(args: &RegistryArgs) -> Option<std::path::PathBuf> {
    if let Some(p) = &args.authfile {
        return Some(std::path::absolute(p).unwrap_or_else(|_| p.clone()));
    }
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => std::path::PathBuf::from(dir).join("config.json"),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".docker/config.json"),
    };
    path.exists().then_some(path)
}

pub fn request(
    reference: &str,
    registry: &RegistryArgs,
    unpack: Option<&UnpackArgs>,
) -> Result<PullRequest> {
    Ok(PullRequest {
        reference: reference.to_string(),
        platform: unpack.and_then(|u| u.platform.clone()),
        insecure_registries: registry.insecure_registries.clone(),
        creds: registry.creds.clone(),
        authfile: authfile(registry),
        max_layer_bytes: unpack
            .and_then(|u| u.max_layer_size.as_deref())
            .map(|t| crate::config::parse_size("--max-layer-size", t))
            .transpose()?,
    })
}

/// Streams a pull or import: progress drawn, images returned, the agent's error raised.
pub async fn follow(
    client: &Client,
    path: &str,
    body: Option<Vec<u8>>,
    quiet: bool,
) -> Result<Vec<ImageView>> {
    let progress = crate::progress::for_terminal(quiet);
    let mut lines = client.stream(Method::POST, path, body).await?;
    let mut images = Vec::new();
    while let Some(line) = lines.line().await? {
        match serde_json::from_slice::<ProgressLine>(&line)? {
            ProgressLine::Progress(event) => progress.event(event),
            ProgressLine::Image(record) => images.push(*record),
            ProgressLine::Error(message) => bail!(message),
        }
    }
    Ok(images)
}

pub async fn pull(client: &Client, req: &PullRequest, quiet: bool) -> Result<ImageView> {
    let images = follow(
        client,
        "/v1/images/pull",
        Some(serde_json::to_vec(req)?),
        quiet,
    )
    .await?;
    images
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the agent ended the pull without an answer"))
}

pub async fn run(client: &Client, args: PullArgs) -> Result<()> {
    let req = request(&args.reference, &args.registry, Some(&args.unpack))?;
    let record = pull(client, &req, args.quiet).await?;
    if !args.quiet {
        println!("Digest: {}", record.digest);
    }
    println!("{}", record.reference);
    Ok(())
}
