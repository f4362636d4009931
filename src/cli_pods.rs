//! Command-line grammar of `berth pod …` and `berth events`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum PodCommand {
    /// Start a pod from a spec file (JSON or YAML; `-` reads stdin).
    Run(PodRunArgs),
    /// List pods.
    #[command(alias = "list", alias = "ps")]
    Ls(PodLsArgs),
    /// Everything known about a pod (JSON).
    Inspect(PodIdArgs),
    /// Stop a pod's containers: SIGTERM, then SIGKILL after the grace period.
    Stop(PodStopArgs),
    /// Remove pods.
    Rm(PodRmArgs),
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// List the CNI networks of the agent's config dir.
    #[command(alias = "list")]
    Ls(PodLsArgs),
    /// Run CNI CHECK on a pod's or container's network.
    Check(PodIdArgs),
}

#[derive(Debug, Args)]
pub struct PodRunArgs {
    /// The spec file.
    pub spec: PathBuf,
    /// When to pull the pod's images (`--pull` alone: `missing`); `never` refuses a spec
    /// whose image the agent lacks, naming the field.
    #[arg(long, value_enum, default_value = "missing", num_args = 0..=1, default_missing_value = "missing", value_name = "POLICY")]
    pub pull: crate::cli::PullPolicy,
}

#[derive(Debug, Args)]
pub struct PodLsArgs {
    /// `table` or `json`.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PodIdArgs {
    /// Pod name, id or id prefix.
    pub pod: String,
}

#[derive(Debug, Args)]
pub struct PodStopArgs {
    /// Seconds to wait after SIGTERM.
    #[arg(short = 't', long, default_value_t = 10)]
    pub time: u64,
    /// Pods.
    #[arg(required = true)]
    pub pods: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PodRmArgs {
    /// Stop running containers first.
    #[arg(short, long)]
    pub force: bool,
    /// Pods.
    #[arg(required = true)]
    pub pods: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The API's JSON (`GET /v1/node`) instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this container (with `--stats`: required).
    pub id: Option<String>,
    /// Events since: RFC 3339 time, Unix seconds, or a duration ago (`10m`).
    #[arg(long)]
    pub since: Option<String>,
    /// Events until (same forms); without it, new events are followed.
    #[arg(long)]
    pub until: Option<String>,
    /// `key=value` (type, event, container, pod, image, id, name); repeatable.
    #[arg(short, long = "filter")]
    pub filters: Vec<String>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Print the container's usage periodically, like `runc events --stats`.
    #[arg(long)]
    pub stats: bool,
    /// Seconds between `--stats` lines.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
}
