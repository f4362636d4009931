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
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// This master's name among several on etcd (default: host name and port).
    #[arg(long)]
    pub name: Option<String>,
    /// URL agents and admins reach this master at, which followers redirect to (default:
    /// https:// and the listen address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// The leader's etcd lease: a leader that stops is replaced within this (and a poll,
    /// at most 0.5 s); shorter makes a pause of the leader's host (or of etcd) a failover.
    #[arg(long, default_value = "6s")]
    pub lease_ttl: String,
}

/// Where the masters' state lives when it is not the embedded store.
#[derive(Debug, Clone, Args)]
pub struct EtcdArgs {
    /// etcd members (`http://HOST:2379,…`): several masters share the state, one leads.
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix in etcd.
    #[arg(long, default_value = "/berth")]
    pub etcd_prefix: String,
    /// CA of etcd's certificates (https endpoints).
    #[arg(long)]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// Its key.
    #[arg(long, requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user as NAME:PASSWORD (etcd's auth).
    #[arg(long, env = "BERTH_ETCD_USER", hide_env_values = true)]
    pub etcd_user: Option<String>,
    /// Most writes per etcd transaction (etcd's --max-txn-ops; larger commits are split).
    #[arg(long, default_value_t = 128)]
    pub etcd_max_txn_ops: usize,
}

#[derive(Debug, Subcommand)]
pub enum MasterCommand {
    /// Create the cluster's identity (CA, master certificate, admin credential, join
    /// token) in `--root`, and print the agents' join command.
    Init(MasterInitArgs),
    /// Copy the cluster's records and identity from the embedded store to etcd, or back.
    /// The source must be quiet (its masters stopped) and the target empty.
    Migrate(MasterMigrateArgs),
}

#[derive(Debug, Args)]
pub struct MasterMigrateArgs {
    /// `etcd` (from `--root`'s embedded store) or `embedded` (from etcd into `--root`).
    #[arg(long, value_parser = ["etcd", "embedded"])]
    pub to: String,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Address of the master that will serve the embedded store (its certificate).
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: String,
}

#[derive(Debug, Args)]
pub struct MasterInitArgs {
    /// Address the master will serve on (its certificate and `admin.json` name it).
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: String,
    /// More names or addresses for the master's certificate.
    #[arg(long)]
    pub san: Vec<String>,
    #[command(flatten)]
    pub etcd: EtcdArgs,
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
    /// The masters, which one leads and since when, and the store behind them.
    Status(JsonArgs),
    /// Print a link that opens the dashboard in a browser (valid 12 hours).
    Dashboard,
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
