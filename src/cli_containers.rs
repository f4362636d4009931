//! Command-line grammar of the agent and container commands (Docker's and runc's names).

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Check the host (kernel features, cgroups, overlayfs, binaries), print what is
    /// missing, and exit (1 if something required is missing).
    #[arg(long)]
    pub check: bool,
    /// Cgroup root for containers, absolute in every hierarchy (default: `berth` below the
    /// agent's own cgroup).
    #[arg(long, env = "BERTH_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// Rotate a container's log file at this size (default 10m).
    #[arg(long)]
    pub log_max_size: Option<String>,
    /// Log files kept per container, the current one included (default 3).
    #[arg(long)]
    pub log_max_files: Option<u32>,
    /// Copy image layers into each rootfs instead of mounting overlayfs.
    #[arg(long)]
    pub rootfs_copy: bool,
    /// First restart back-off of a pod container; doubles per restart up to 5 minutes
    /// (default 10s).
    #[arg(long)]
    pub restart_backoff: Option<String>,
    /// CPU kept for the system, not admitted to pods (e.g. 500m; default 0).
    #[arg(long)]
    pub system_reserved_cpu: Option<String>,
    /// Memory kept for the system, not admitted to pods (e.g. 512m; default 0).
    #[arg(long)]
    pub system_reserved_memory: Option<String>,
    /// Serve Prometheus metrics on this TCP address (e.g. 127.0.0.1:9323); off by default.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Disk use (percent of the data root's filesystem) that starts image GC (default 85).
    #[arg(long)]
    pub image_gc_high_percent: Option<u8>,
    /// Disk use image GC brings the filesystem down to (default 80).
    #[arg(long)]
    pub image_gc_low_percent: Option<u8>,
    /// Evict best-effort, then burstable pods when the node has less memory available
    /// (e.g. 500m; 0 never; default 100m).
    #[arg(long)]
    pub eviction_memory_available: Option<String>,
    /// Size of one events journal file (two are kept; default 1m).
    #[arg(long)]
    pub events_max_size: Option<String>,
    /// How long the usage estimator watches before it offers revocable resources, and each
    /// new task holds its whole request meanwhile (default 5m; 0 for tests and demos).
    #[arg(long)]
    pub revocable_warmup: Option<String>,
    /// CPU the node offers (e.g. 2 or 1500m; default: the machine's). With a declared
    /// capacity only Berth's own tasks and the system reserve count against it.
    #[arg(long)]
    pub capacity_cpu: Option<String>,
    /// Memory the node offers (e.g. 8g; default: the machine's).
    #[arg(long)]
    pub capacity_memory: Option<String>,
    /// CPUs kept out of every container (e.g. 0 or 0-1), as the kubelet's reserved CPUs.
    #[arg(long)]
    pub reserved_cpus: Option<String>,
    /// Host ids for tasks in user namespaces of their own (START:COUNT, 65,536 per task;
    /// default: berth's entries in /etc/subuid and /etc/subgid, else 2^30 up, 1024 tasks).
    #[arg(long)]
    pub userns_pool: Option<String>,
    /// `--userns` of tasks that do not say: host (default) or auto (a pod's `hostUsers`
    /// likewise).
    #[arg(long)]
    pub userns_default: Option<String>,
    /// How often disk use per task is measured where no project quota counts it (10s).
    #[arg(long)]
    pub disk_check_interval: Option<String>,
    /// Join the cluster of this master (`https://HOST:PORT`), then report to it and run
    /// what it assigns. Once joined, the credential in the data root is used.
    #[arg(long)]
    pub master: Option<String>,
    /// The cluster's join token (first start only).
    #[arg(long, env = "BERTH_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// `sha256:…` of the cluster CA, as `berth master init` printed it (first start only).
    #[arg(long)]
    pub ca_cert_hash: Option<String>,
    /// The node's name in the cluster (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// A label of the node for jobs' constraints (`k=v`; repeat for more).
    #[arg(long = "node-label")]
    pub node_labels: Vec<String>,
    /// Dir of CNI network configurations (default /etc/cni/net.d).
    #[arg(long)]
    pub cni_conf_dir: Option<PathBuf>,
    /// CNI plugin search path (default /opt/cni/bin:/usr/lib/cni).
    #[arg(long)]
    pub cni_plugin_dir: Option<String>,
    /// Longest one CNI plugin call may run (default 30s).
    #[arg(long)]
    pub cni_timeout: Option<String>,
    /// Network of pods and of `run --network bridge|default` (default `berth`, installed
    /// when missing; `none` for loopback only).
    #[arg(long)]
    pub default_network: Option<String>,
    /// Bridge device of the installed default network (default berth0).
    #[arg(long)]
    pub bridge_name: Option<String>,
    /// Subnet of the installed default network (default: a free 10.x.0.0/16).
    #[arg(long)]
    pub bridge_subnet: Option<String>,
    /// Open API connections at most (default 1024; lowered to what the open-files limit
    /// allows with 256 descriptors in reserve); more are answered 503.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Time a client has to send a request's headers, and that a keep-alive connection may
    /// stay idle (default 10s). Streams (logs -f, events, attach) are not cut once asked.
    #[arg(long)]
    pub api_idle_timeout: Option<String>,
    /// Containers (init and app) a pod may have (default 64).
    #[arg(long)]
    pub max_pod_containers: Option<usize>,
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
    /// CPUs it may run on (`0-2,4`).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Run on the node's measured slack: admitted against the revocable estimate, lowest
    /// CPU weight, throttled, frozen or revoked when promised work needs the resources.
    #[arg(long)]
    pub revocable: bool,
    /// User namespace: auto (a range of 65,536 host ids of its own: root inside is an
    /// unprivileged id outside) or host (default: the agent's --userns-default).
    #[arg(long)]
    pub userns: Option<String>,
    /// Storage options, Docker's syntax: size=1G caps its writable layer and logs.
    #[arg(long = "storage-opt")]
    pub storage_opt: Vec<String>,
    /// Add a capability (`NET_ADMIN`, `ALL`).
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop a capability.
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// `no-new-privileges` or `seccomp=unconfined`.
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// `bridge` (the agent's default network), a CNI network's name, `none` (own
    /// namespace with only lo) or `host`.
    #[arg(long, default_value = "bridge")]
    pub network: String,
    /// Publish a port: `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`.
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Restart policy: no, always, unless-stopped, on-failure[:max-retries].
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Health check command, run with `/bin/sh -c` in the container (healthy on exit 0).
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Health check: HTTP GET `PORT[/path]` on the container's loopback (2xx/3xx healthy).
    #[arg(long, conflicts_with_all = ["health_cmd", "health_tcp"])]
    pub health_http: Option<String>,
    /// Health check: TCP connect to `PORT` on the container's loopback.
    #[arg(long, conflicts_with = "health_cmd")]
    pub health_tcp: Option<u16>,
    /// Time between health checks (default 30s).
    #[arg(long, default_value = "30s")]
    pub health_interval: String,
    /// A check running longer fails (default 30s).
    #[arg(long, default_value = "30s")]
    pub health_timeout: String,
    /// Consecutive failures that make the container unhealthy.
    #[arg(long, default_value_t = 3)]
    pub health_retries: u32,
    /// Failures in this time after start do not count.
    #[arg(long, default_value = "0s")]
    pub health_start_period: String,
    /// Ignore the image's HEALTHCHECK.
    #[arg(long, conflicts_with_all = ["health_cmd", "health_http", "health_tcp"])]
    pub no_healthcheck: bool,
    /// Run in the background and print the id.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// When to pull the image (`--pull` alone: `missing`).
    #[arg(long, value_enum, default_value = "missing", num_args = 0..=1, default_missing_value = "missing", value_name = "POLICY")]
    pub pull: crate::cli::PullPolicy,
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
