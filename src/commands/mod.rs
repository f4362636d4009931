//! One file per command. Each opens the store itself for now; when the agent lands these
//! become thin API clients.

mod images;
mod import;
mod inspect;
mod prune;
mod pull;
mod rmi;
mod rootfs;

use std::process::ExitCode;

use anyhow::{Context, Result};
use berth_images::store::Store;
use berth_images::unpack::UnpackOptions;

use crate::cli::{Cli, Command, ImageCommand, UnpackArgs};
use crate::config::{parse_size, Config};

/// What every command needs: the store and the configuration.
pub struct Env {
    pub store: Store,
    pub config: Config,
}

impl Env {
    fn open(cli: &Cli) -> Result<Self> {
        let config = Config::load(&cli.config)?;
        let store = Store::open(&cli.root)
            .with_context(|| format!("opening data root {}", cli.root.display()))?;
        Ok(Self { store, config })
    }

    pub fn unpack_options(&self, args: &UnpackArgs) -> Result<UnpackOptions> {
        let mut options = UnpackOptions::default();
        if let Some(max) = self.config.max_layer_bytes {
            options.max_bytes = max;
        }
        if let Some(text) = &args.max_layer_size {
            options.max_bytes = parse_size(text).context("--max-layer-size")?;
        }
        Ok(options)
    }
}

/// `--platform`, or this host's.
pub fn platform(flag: Option<&str>) -> Result<berth_images::manifest::Platform> {
    match flag {
        Some(text) => text.parse().map_err(anyhow::Error::msg),
        None => Ok(berth_images::manifest::Platform::host()),
    }
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let env = Env::open(&cli)?;
    match cli.command {
        Command::Pull(args) | Command::Image(ImageCommand::Pull(args)) => {
            pull::run(&env, args).await
        }
        Command::Import(args) | Command::Image(ImageCommand::Import(args)) => {
            import::run(&env, args).await
        }
        Command::Images(args) | Command::Image(ImageCommand::Ls(args)) => images::run(&env, args),
        Command::Rmi(args) | Command::Image(ImageCommand::Rm(args)) => rmi::run(&env, args).await,
        Command::Image(ImageCommand::Prune(args)) => prune::run(&env, args).await,
        Command::Image(ImageCommand::Inspect(args)) => inspect::run(&env, args),
        Command::Image(ImageCommand::Rootfs(args)) => rootfs::run(&env, args).await,
    }?;
    Ok(ExitCode::SUCCESS)
}
