//! Command-line grammar of `berth master …` and `berth cluster …`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MasterArgs {
    #[command(subcommand)]
    pub command: Option<MasterCommand>,
    /// Address to serve HTTPS on (default: the one `master init` was given).
    #[arg(long)]
    pub listen: Option<String>,
    /// A node without a heartbeat for this long is lost and its pods placed elsewhere
    /// (25 s: found lost within 30 s of its failure also when the master is busy).
    #[arg(long, default_value = "25s")]
    pub node_timeout: String,
    /// Shortest heartbeat period asked of agents.
    #[arg(long, default_value = "5s")]
    pub heartbeat_floor: String,
    /// Heartbeats per second the master takes in total: the period grows with the number
    /// of nodes past the floor (Nomad's rule).
    #[arg(long, default_value_t = 1000.0)]
    pub heartbeat_rate: f64,
}

#[derive(Debug, Subcommand)]
pub enum MasterCommand {
    /// Create the cluster's identity (CA, master certificate, admin credential, join
    /// token) in `--root`, and print the agents' join command.
    Init(MasterInitArgs),
}

#[derive(Debug, Args)]
pub struct MasterInitArgs {
    /// Address the master will serve on (its certificate and `admin.json` name it).
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: String,
    /// More names or addresses for the master's certificate.
    #[arg(long)]
    pub san: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    // The admin credential is `--config` (the global flag; here it names the `admin.json`
    // that `berth master init` wrote), else `BERTH_CLUSTER`, else the default master root's.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Submit a job (a pod spec plus `count`, `qos`, `constraints`, `strategy`).
    Run(ClusterRunArgs),
    /// List jobs.
    #[command(alias = "list")]
    Ls(JsonArgs),
    /// List instances (of one job).
    Ps(ClusterPsArgs),
    /// List nodes: state, heartbeat, allocatable, assigned, used, revocable free.
    Nodes(JsonArgs),
    /// Remove a job: its pods are stopped on their nodes.
    Rm(ClusterNameArgs),
    /// Move a node's pods elsewhere and place nothing new on it.
    Drain(ClusterNameArgs),
    /// Cluster events: nodes registered and lost, instances placed, pending, moved.
    Events(ClusterEventsArgs),
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ClusterRunArgs {
    /// The job file (YAML or JSON; `-` reads stdin).
    pub file: PathBuf,
    /// JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ClusterPsArgs {
    /// Only this job's instances.
    pub job: Option<String>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ClusterNameArgs {
    /// Job or node name.
    pub name: String,
    /// JSON answer.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ClusterEventsArgs {
    /// Only events after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub since: u64,
    /// JSON instead of lines.
    #[arg(long)]
    pub json: bool,
}
