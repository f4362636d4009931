use anyhow::{Context, Result};
use berth_images::import::{import, ImportOptions};
use berth_images::reference::ImageRef;

use super::Env;
use crate::cli::ImportArgs;

pub async fn run(env: &Env, args: ImportArgs) -> Result<()> {
    let tag = args.tag.as_deref().map(ImageRef::parse).transpose()?;
    let options = ImportOptions {
        tag,
        unpack: env.unpack_options(&args.unpack)?,
        platform: super::platform(args.unpack.platform.as_deref())?,
    };
    let progress = crate::progress::for_terminal(args.quiet);
    let records = import(&env.store, &args.path, &options, progress)
        .await
        .with_context(|| format!("importing {}", args.path.display()))?;
    for record in records {
        if !args.quiet {
            println!("Loaded image: {} ({})", record.reference, record.config);
        } else {
            println!("{}", record.reference);
        }
    }
    Ok(())
}
