//! Command-line grammar. Names and meanings follow docker/podman where they overlap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Berth: a node agent that pulls images and runs tasks and pods in containers.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
pub struct Cli {
    /// The agent's API socket.
    #[arg(
        long,
        global = true,
        env = "BERTH_SOCKET",
        default_value = "/run/berth/berth.sock"
    )]
    pub socket: PathBuf,

    /// Data root of the agent: content store, snapshots, image records, containers.
    #[arg(
        long,
        global = true,
        env = "BERTH_ROOT",
        default_value = "/var/lib/berth"
    )]
    pub root: PathBuf,

    /// Configuration file of the agent (TOML; `.json` read as JSON); missing means defaults.
    #[arg(
        long,
        global = true,
        env = "BERTH_CONFIG",
        default_value = "/etc/berth/config.toml"
    )]
    pub config: PathBuf,

    /// `--socket` and `--root` came from their defaults (the config file may set them).
    #[arg(skip)]
    pub defaulted: (bool, bool),

    /// `--config` was not on the command line (`berth cluster` then reads `BERTH_CLUSTER`).
    #[arg(skip)]
    pub config_defaulted: bool,

    /// Log filter (error, warn, info, debug, trace, or tracing directives).
    #[arg(long, global = true)]
    pub log_level: Option<String>,

    /// Log format: `text` or `json` (one object per line; `BERTH_LOG_FORMAT`).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    pub log_format: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent (root daemon, owner of the node's state).
    Agent(crate::cli_containers::AgentArgs),
    /// Run a command in a new container.
    Run(crate::cli_containers::RunArgs),
    /// Create a container without starting it.
    Create(crate::cli_containers::RunArgs),
    /// Start a created container.
    Start(crate::cli_containers::IdArgs),
    /// List containers.
    #[command(alias = "list")]
    Ps(crate::cli_containers::PsArgs),
    /// The runc-style state of a container (JSON).
    State(crate::cli_containers::IdArgs),
    /// Everything known about a container (JSON).
    Inspect(crate::cli_containers::IdArgs),
    /// A container's output.
    Logs(crate::cli_containers::LogsArgs),
    /// Send a signal to a container's init.
    Kill(crate::cli_containers::KillArgs),
    /// SIGTERM, then SIGKILL to every process after a grace period.
    Stop(crate::cli_containers::StopArgs),
    /// Remove containers.
    #[command(alias = "delete")]
    Rm(crate::cli_containers::RmArgs),
    /// Run a command in a running container.
    Exec(crate::cli_containers::ExecArgs),
    /// The processes of a container.
    Top(crate::cli_containers::IdArgs),
    /// Resource usage of a container, from its cgroup.
    Stats(crate::cli_containers::StatsArgs),
    /// Wait for a container to exit; prints its exit code.
    Wait(crate::cli_containers::IdArgs),
    /// Pull an image from a registry and unpack its layers.
    Pull(PullArgs),
    /// Import a `docker save` archive or an OCI image layout (directory or tar).
    Import(ImportArgs),
    /// List images.
    #[command(alias = "ls")]
    Images(ImagesArgs),
    /// Remove images (and the content only they used).
    Rmi(RmiArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Pods: co-located containers sharing network, IPC and UTS namespaces.
    #[command(subcommand)]
    Pod(crate::cli_pods::PodCommand),
    /// Lifecycle events (journal, then live), or a container's usage with `--stats`.
    Events(crate::cli_pods::EventsArgs),
    /// The node's resources: capacity, reserve, allocatable, allocation and use per QoS
    /// tier, the revocable estimate, pressure and reclaim state.
    Node(crate::cli_pods::NodeArgs),
    /// CNI networks: list them, check an attachment.
    #[command(subcommand)]
    Network(crate::cli_pods::NetworkCommand),
    /// The central allocator: `master init` creates a cluster, `master` serves it.
    Master(crate::cli_cluster::MasterArgs),
    /// Jobs, instances, nodes and events of a cluster (admin credential: `--config
    /// ADMIN.json` or `BERTH_CLUSTER`).
    Cluster(crate::cli_cluster::ClusterArgs),
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove images.
    Rm(RmiArgs),
    /// Remove blobs and snapshots no image uses.
    Prune(PruneArgs),
    /// Show an image's record, config and rootfs mounts as JSON.
    Inspect(InspectArgs),
    /// Write an image's flattened rootfs into a directory (the copy fallback of overlayfs).
    Rootfs(RootfsArgs),
    /// Pull an image (same as `berth pull`).
    Pull(PullArgs),
    /// Import an archive (same as `berth import`).
    Import(ImportArgs),
}

/// When `run`, `create` and `pod run` pull an image, as Docker's and podman's `--pull`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    /// Pull when the agent does not have the image.
    #[default]
    Missing,
    /// Pull every time (the registry's newest under the tag).
    Always,
    /// Never pull: refuse when the image is missing.
    Never,
}

#[derive(Debug, Args, Clone)]
pub struct RegistryArgs {
    /// Credentials for the registry, `USER:PASSWORD`.
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "BERTH_REGISTRY_CREDS",
        hide_env_values = true
    )]
    pub creds: Option<String>,

    /// Docker auth file (default: $DOCKER_CONFIG/config.json or ~/.docker/config.json).
    #[arg(long)]
    pub authfile: Option<PathBuf>,

    /// Speak plain HTTP to this registry (`host[:port]`); repeatable. Loopback registries
    /// always are, as with Docker.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
}

impl RegistryArgs {
    /// No credentials, no insecure registries.
    pub fn none() -> Self {
        RegistryArgs {
            creds: None,
            authfile: None,
            insecure_registries: Vec::new(),
        }
    }
}

/// What pulls and imports share: which platform to take and how far a layer may expand.
#[derive(Debug, Args, Clone)]
pub struct UnpackArgs {
    /// Most uncompressed bytes one layer may expand to (e.g. 512m, 20g).
    #[arg(long, value_name = "SIZE")]
    pub max_layer_size: Option<String>,
    /// Platform to pick from a multi-platform image, `os/arch[/variant]` (default: this host).
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference (`busybox`, `host:5000/repo:tag`, `repo@sha256:…`).
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub unpack: UnpackArgs,
    /// Print only the image reference when done.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A `docker save` tar (optionally gzipped), an OCI layout directory, or its tar; `-`
    /// reads a tar from standard input.
    pub path: PathBuf,
    /// Name the imported image (only for archives holding one image).
    #[arg(long, short)]
    pub tag: Option<String>,
    #[command(flatten)]
    pub unpack: UnpackArgs,
    /// Print only the image references when done.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only images of this repository (`busybox`) or reference (`busybox:1.36`).
    pub reference: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Only image ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full digests and ids.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Image references or ids.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove an image id even when several references name it (all of them go).
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Image reference or id.
    pub image: String,
}

#[derive(Debug, Args)]
pub struct RootfsArgs {
    /// Image reference or id.
    pub image: String,
    /// Existing empty directory to write into.
    pub dest: PathBuf,
}
