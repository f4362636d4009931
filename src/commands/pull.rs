use anyhow::{Context, Result};
use berth_images::pull::{pull, PullOptions};
use berth_images::reference::ImageRef;
use berth_images::registry::RegistryOptions;

use super::Env;
use crate::cli::{PullArgs, RegistryArgs};

pub fn registry_options(env: &Env, args: &RegistryArgs) -> Result<RegistryOptions> {
    let mut insecure = env.config.insecure_registries.clone();
    insecure.extend(args.insecure_registries.iter().cloned());
    let credentials = match &args.creds {
        Some(text) => {
            let (user, pass) = text
                .split_once(':')
                .context("--creds wants USER:PASSWORD")?;
            Some((user.to_string(), pass.to_string()))
        }
        None => None,
    };
    Ok(RegistryOptions {
        insecure,
        credentials,
        authfile: args.authfile.clone(),
    })
}

pub async fn run(env: &Env, args: PullArgs) -> Result<()> {
    let reference = ImageRef::parse(&args.reference)?;
    let options = PullOptions {
        registry: registry_options(env, &args.registry)?,
        unpack: env.unpack_options(&args.unpack)?,
        platform: super::platform(args.unpack.platform.as_deref())?,
    };
    let progress = crate::progress::for_terminal(args.quiet);
    let record = pull(&env.store, &reference, &options, progress)
        .await
        .with_context(|| format!("pulling {reference}"))?;
    if !args.quiet {
        println!("Digest: {}", record.digest);
    }
    println!("{}", record.reference);
    Ok(())
}
