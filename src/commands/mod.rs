//! One file per command group. Every command except `agent` and `shim` is a thin client of
//! the agent's API.

mod attach;
mod cluster;
mod containers;
mod images;
mod import;
mod inspect;
mod node;
mod pods;
mod prune;
mod pull;
mod rmi;
mod rootfs;
mod run;

use std::process::ExitCode;

use anyhow::Result;

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

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let client = Client::new(cli.socket.clone());
    match cli.command {
        Command::Agent(ref args) => crate::daemon::agent(&cli, args).await?,
        Command::Master(ref args) => cluster::master(&cli, args).await?,
        Command::Cluster(ref args) => cluster::cluster(&cli, args).await?,
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
        Command::Pod(c) => pods::pod(&client, c).await?,
        Command::Network(c) => pods::network(&client, c).await?,
        Command::Node(a) => node::show(&client, &a).await?,
        Command::Events(a) => pods::events(&client, a).await?,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// The client side speaks only the wire types (`berth-api`): a change of the agent's
    /// on-disk records or of a library's types cannot change what a client parses.
    #[test]
    fn client_code_imports_only_the_wire_crate() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files: Vec<_> = std::fs::read_dir(src.join("commands"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        for f in [
            "cli.rs",
            "cli_containers.rs",
            "cli_pods.rs",
            "client.rs",
            "progress.rs",
        ] {
            files.push(src.join(f));
        }
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // Tests (this one names what is forbidden) are not client code.
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            for forbidden in [
                "berth_runtime",
                "berth_images",
                "berth_cni",
                "berth_fsutil",
                "crate::agent",
            ] {
                assert!(
                    !text.contains(forbidden),
                    "{} uses {forbidden}: client code imports only berth_api",
                    file.display()
                );
            }
        }
    }
}
