//! Command-line grammar of the agent and container commands (Docker's and runc's names).

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Cgroup root for containers, absolute in every hierarchy (default: `berth` below the
    /// agent's own cgroup).
    #[arg(long, env = "BERTH_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// Rotate a container's log file at this size (e.g. 10m).
    #[arg(long, default_value = "10m")]
    pub log_max_size: String,
    /// Log files kept per container, the current one included.
    #[arg(long, default_value_t = 3)]
    pub log_max_files: u32,
    /// Copy image layers into each rootfs instead of mounting overlayfs.
    #[arg(long)]
    pub rootfs_copy: bool,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Container name.
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable `KEY=VALUE` (or `KEY`, taken from this shell).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// File of `KEY=VALUE` lines.
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// `uid[:gid]` or `name[:group]`.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Replace the image's entrypoint (`""` clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Host name of the container.
    #[arg(long = "hostname")]
    pub hostname: Option<String>,
    /// Bind mount `HOST:CONTAINER[:ro]`.
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// Mount the rootfs read-only.
    #[arg(long)]
    pub read_only: bool,
    /// tmpfs mount `PATH[:OPTIONS]`.
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// CPUs of quota (e.g. 0.5).
    #[arg(long, allow_hyphen_values = true)]
    pub cpus: Option<String>,
    /// Relative CPU weight (2..262144, default 1024).
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    /// Memory limit (e.g. 64m).
    #[arg(short = 'm', long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory soft limit.
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// Most tasks (processes and threads); -1 for no limit.
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Add a capability (`NET_ADMIN`, `ALL`).
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop a capability.
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// `no-new-privileges` or `seccomp=unconfined`.
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// `none` (own namespace with lo) or `host`.
    #[arg(long, default_value = "none")]
    pub network: String,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the id.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Pull options when the image is missing.
    #[command(flatten)]
    pub registry: crate::cli::RegistryArgs,
    /// Image.
    pub image: String,
    /// Command and arguments (replace the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// Container id, name or unique id prefix.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// `table` or `json`.
    #[arg(long, short = 'f', default_value = "table")]
    pub format: String,
    /// Full ids.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep following until the container stops.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, short = 'n')]
    pub tail: Option<usize>,
    /// Prefix each line with its time.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Container.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal name or number.
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    /// Container.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM.
    #[arg(short, long, default_value_t = 10)]
    pub time: u64,
    /// Containers.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill running containers first.
    #[arg(short, long)]
    pub force: bool,
    /// Containers.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Environment variable.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// User.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Container.
    pub id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print every N seconds until interrupted (like `runc events --stats`).
    #[arg(long)]
    pub interval: Option<u64>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Container.
    pub id: String,
}
