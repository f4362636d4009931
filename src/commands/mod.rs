//! One file per command group. Every command except `agent` and `shim` is a thin client of
//! the agent's API.

mod attach;
mod containers;
mod images;
mod import;
mod inspect;
mod prune;
mod pull;
mod rmi;
mod rootfs;
mod run;

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::{Cli, Command, ImageCommand};
use crate::client::Client;

/// `a=b&c=d` with every byte outside RFC 3986's unreserved set percent-encoded.
pub fn query(pairs: &[(&str, String)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn agent(cli: &Cli, args: &crate::cli_containers::AgentArgs) -> Result<()> {
    let config = crate::config::Config::load(&cli.config)?;
    let max_bytes = crate::config::parse_size(&args.log_max_size).context("--log-max-size")?;
    let opts = crate::agent::AgentOptions {
        socket: cli.socket.clone(),
        root: cli.root.clone(),
        cgroup_root: args.cgroup_root.clone(),
        rotation: berth_runtime::logs::Rotation {
            max_bytes,
            max_files: args.log_max_files.max(1),
        },
        rootfs_copy: args.rootfs_copy,
        config,
        log_level: cli
            .log_level
            .clone()
            .or_else(|| std::env::var("BERTH_LOG").ok())
            .unwrap_or_else(|| "warn".into()),
    };
    crate::agent::run(opts).await
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let client = Client::new(cli.socket.clone());
    match cli.command {
        Command::Agent(ref args) => agent(&cli, args).await?,
        Command::Run(args) => return run::run(&client, args, true).await,
        Command::Create(args) => return run::run(&client, args, false).await,
        Command::Start(a) => containers::start(&client, &a.id).await?,
        Command::Ps(a) => containers::ps(&client, a).await?,
        Command::State(a) => containers::state(&client, &a.id).await?,
        Command::Inspect(a) => containers::inspect(&client, &a.id).await?,
        Command::Logs(a) => containers::logs(&client, a).await?,
        Command::Kill(a) => containers::kill(&client, a).await?,
        Command::Stop(a) => containers::stop(&client, a).await?,
        Command::Rm(a) => containers::rm(&client, a).await?,
        Command::Exec(a) => return containers::exec(&client, a).await,
        Command::Top(a) => containers::top(&client, &a.id).await?,
        Command::Stats(a) => containers::stats(&client, a).await?,
        Command::Wait(a) => return containers::wait(&client, &a.id).await,
        Command::Pull(args) | Command::Image(ImageCommand::Pull(args)) => {
            pull::run(&client, args).await?
        }
        Command::Import(args) | Command::Image(ImageCommand::Import(args)) => {
            import::run(&client, args).await?
        }
        Command::Images(args) | Command::Image(ImageCommand::Ls(args)) => {
            images::run(&client, args).await?
        }
        Command::Rmi(args) | Command::Image(ImageCommand::Rm(args)) => {
            rmi::run(&client, args).await?
        }
        Command::Image(ImageCommand::Prune(args)) => prune::run(&client, args).await?,
        Command::Image(ImageCommand::Inspect(args)) => inspect::run(&client, args).await?,
        Command::Image(ImageCommand::Rootfs(args)) => rootfs::run(&client, args).await?,
    }
    Ok(ExitCode::SUCCESS)
}
