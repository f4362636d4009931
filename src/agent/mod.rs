//! `berth agent`: the root daemon, single owner of the node's state.
//!
//! Threads: the tokio runtime (2 workers) serves the API on a Unix socket (and, opt-in,
//! metrics on TCP) and runs the owner task ([`node::Node`]): containers, pods, the events
//! journal, health results, eviction and image GC checks on a 1 s tick. Blocking
//! filesystem work goes to tokio's blocking pool; HTTP/TCP health checks to short-lived
//! threads of their own (they enter a container's network namespace).
//! Processes: one supervisor (`berth shim`) per container and per exec, each in its own
//! session, and a pod init per pod with a shared PID namespace; they outlive the agent, so
//! SIGTERM (or `kill -9`) stops the agent and leaves containers running.

mod actions;
mod backoff;
pub mod check;
mod create;
mod create_networked;
mod disk;
mod disk_budget;
pub mod error;
pub mod events;
mod evict;
mod exec;
mod exit;
mod health;
pub mod idmap;
mod images;
mod kill;
mod lifecycle;
mod logs;
pub mod member;
mod metrics;
mod metrics_node;
pub mod network;
pub mod node;
pub mod notify;
mod persist;
pub mod pod;
mod pressure;
mod probe;
mod reclaim;
mod relaunch;
mod remove;
mod request;
mod routes;
mod routes_pods;
pub mod server;
mod slots;
mod start;
mod task_dir;
pub(crate) mod usage;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use berth_images::store::Store;
use berth_runtime::logs::Rotation;
use tokio::sync::mpsc;

/// What the agent was started with.
#[derive(Debug)]
pub struct Settings {
    /// Data root.
    pub root: PathBuf,
    /// The image store below it.
    pub store: Store,
    /// Cgroup root (absolute, below the agent's own cgroup by default).
    pub cgroup_root: PathBuf,
    /// This binary (`/proc/self/exe` resolved at start): the create helper and sandboxes.
    pub exe: PathBuf,
    /// `berth-monitor`, installed beside it: each container's resident supervisor.
    pub monitor: PathBuf,
    /// Container log rotation.
    pub rotation: Rotation,
    /// Always copy the rootfs instead of mounting overlayfs.
    pub rootfs_copy: bool,
    /// The configuration file.
    pub config: crate::config::Config,
    /// Log filter handed to supervisors.
    pub log_level: String,
    /// First restart back-off of a pod container (doubles per restart).
    pub restart_backoff: Duration,
    /// Back-off cap.
    pub restart_backoff_max: Duration,
    /// CPU kept for the system: millicpus.
    pub reserved_millicpu: u64,
    /// Memory kept for the system: bytes.
    pub reserved_memory: u64,
    /// Events journal size per file.
    pub events_max_bytes: u64,
    /// Image GC watermarks: high and low percent of disk use.
    pub image_gc: (u8, u8),
    /// Evict pods when the node has less memory available (bytes; 0: never).
    pub eviction_memory_available: u64,
    /// CNI networks and plugins.
    pub network: network::NetworkSettings,
    /// Latency of CNI operations, for the metrics endpoint.
    pub cni_latency: metrics::Latencies,
    /// Containers (init and app) a pod may have.
    pub max_pod_containers: usize,
    /// What the node offers (declared or the machine's): millicpus and bytes.
    pub capacity: (u64, u64),
    /// The capacity was declared: only Berth's tasks and the system reserve count against
    /// it (the rest of the machine is someone else's).
    pub capacity_declared: bool,
    /// CPUs containers may run on (online minus `reserved_cpus`).
    pub cpuset: std::collections::BTreeSet<u32>,
    /// CPUs kept out of every container.
    pub reserved_cpus: std::collections::BTreeSet<u32>,
    /// The estimator's constants.
    pub estimator: berth_runtime::estimate::EstimatorConfig,
    /// The reclaim controller's constants.
    pub reclaim: berth_runtime::reclaim::ReclaimConfig,
    /// How often usage is sampled (the estimator and reclaim act on each sample).
    pub sample_interval: Duration,
    /// Host ids handed out to tasks in user namespaces of their own.
    pub userns_pool: idmap::IdPool,
    /// `--userns` of a task that does not say (`--userns-default`).
    pub userns_default: berth_runtime::userns::UsernsMode,
    /// The data root's project quotas, where its file system keeps them.
    pub quotas: Option<Arc<berth_runtime::quota::ProjectQuotas>>,
    /// Why there are none.
    pub quota_unavailable: Option<String>,
    /// How often disk use per task is measured.
    pub disk_check_interval: Duration,
}

impl Settings {
    /// `containers/` below the data root.
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// `pods/` below the data root.
    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    /// The cgroup of a QoS class.
    pub fn qos_cgroup(&self, qos: berth_runtime::pod::QosClass) -> PathBuf {
        self.cgroup_root.join(qos.dir())
    }

    /// Every parent a container's cgroup may have outside a pod (old layouts included).
    pub fn cgroup_parents(&self) -> Vec<PathBuf> {
        use berth_runtime::pod::QosClass;
        [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
            QosClass::Revocable,
        ]
        .into_iter()
        .map(|q| self.qos_cgroup(q))
        .chain([self.cgroup_root.clone()])
        .collect()
    }

    /// Node capacity minus the system reserve: millicpus and bytes.
    pub fn allocatable(&self) -> (u64, u64) {
        (
            self.capacity.0.saturating_sub(self.reserved_millicpu),
            self.capacity.1.saturating_sub(self.reserved_memory),
        )
    }

    /// The revocable tier's cgroup.
    pub fn revocable_cgroup(&self) -> PathBuf {
        self.qos_cgroup(berth_runtime::pod::QosClass::Revocable)
    }
}

/// Refuses a CPU set (`field` names the flag or spec field) with a CPU the machine lacks
/// or the agent keeps out of containers (`reserved_cpus`).
pub(crate) fn check_cpuset(
    settings: &Settings,
    field: &str,
    set: &std::collections::BTreeSet<u32>,
) -> Result<(), error::ApiError> {
    if let Some(c) = set.iter().find(|c| !settings.cpuset.contains(c)) {
        let why = if settings.reserved_cpus.contains(c) {
            "is reserved for the system (reserved_cpus)"
        } else {
            "does not exist on this machine"
        };
        return Err(error::ApiError::bad_request(format!(
            "{field}: CPU {c} {why}; containers may use {}",
            berth_runtime::task::format_cpuset(&settings.cpuset)
        )));
    }
    Ok(())
}

/// The machine's capacity: millicpus of the CPUs containers may use, and `MemTotal`.
fn machine_capacity(cpus: usize) -> (u64, u64) {
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    (cpus as u64 * 1000, mem)
}

/// Options of `berth agent`.
#[derive(Debug)]
pub struct AgentOptions {
    /// Socket path.
    pub socket: PathBuf,
    /// Data root.
    pub root: PathBuf,
    /// Cgroup root; default `berth` below the agent's own cgroup.
    pub cgroup_root: Option<PathBuf>,
    /// Rotation.
    pub rotation: Rotation,
    /// Force the copy fallback.
    pub rootfs_copy: bool,
    /// Config file.
    pub config: crate::config::Config,
    /// Log filter for supervisors.
    pub log_level: String,
    /// First restart back-off.
    pub restart_backoff: Duration,
    /// CPU reserve, millicpus.
    pub reserved_millicpu: u64,
    /// Memory reserve, bytes.
    pub reserved_memory: u64,
    /// Events journal size per file.
    pub events_max_bytes: u64,
    /// Prometheus endpoint.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Image GC watermarks: high and low percent of disk use.
    pub image_gc: (u8, u8),
    /// Eviction threshold of available memory, bytes.
    pub eviction_memory_available: u64,
    /// CNI networks and plugins (the cache dir is set below the data root).
    pub network: network::NetworkSettings,
    /// Bridge and subnet of the default network, if Berth installs it.
    pub bridge: (String, Option<String>),
    /// Connection cap and header/idle deadline of the API socket.
    pub api_limits: server::Limits,
    /// Containers (init and app) a pod may have.
    pub max_pod_containers: usize,
    /// Capacity, reserved CPUs, the estimator's and reclaim's constants.
    pub node: crate::node_options::NodeOptions,
    /// The cluster to join and report to.
    pub membership: Option<member::Membership>,
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(opts: AgentOptions) -> Result<()> {
    let store = Store::open(&opts.root)
        .with_context(|| format!("opening data root {}", opts.root.display()))?;
    idmap::open_data_root(&opts.root)
        .with_context(|| format!("setting the modes of data root {}", opts.root.display()))?;
    let cgroup_root = match opts.cgroup_root {
        Some(p) => p,
        None => berth_runtime::cgroups::default_root().context("finding the cgroup root")?,
    };
    // v2: a cgroup with processes hands no controllers down; an agent in its unit's cgroup
    // moves into a leaf of its own first (computed root above stays where it was).
    if berth_runtime::cgroups::is_v2() {
        let own = berth_runtime::cgroups::own_cgroup().context("reading the agent's cgroup")?;
        if cgroup_root.starts_with(&own) {
            if let Some(leaf) = berth_runtime::cgroups::delegate_v2(&own)
                .context("delegating cgroup v2 controllers")?
            {
                tracing::info!(leaf = %leaf.display(), "moved into a leaf cgroup to delegate cpu, memory and pids");
            }
        }
    }
    let exe = std::fs::read_link("/proc/self/exe").context("resolving /proc/self/exe")?;
    let monitor = exe.with_file_name("berth-monitor");
    anyhow::ensure!(
        monitor.is_file(),
        "{} is missing: berth-monitor must be installed beside {}",
        monitor.display(),
        exe.display()
    );
    let online = berth_runtime::tier::online_cpus();
    let cpuset: std::collections::BTreeSet<u32> = online
        .difference(&opts.node.reserved_cpus)
        .copied()
        .collect();
    let machine = machine_capacity(cpuset.len());
    let (quotas, quota_unavailable) = match berth_runtime::quota::ProjectQuotas::open(&opts.root) {
        Ok(q) => {
            tracing::info!(root = %opts.root.display(), "disk budgets: project quotas");
            (Some(Arc::new(q)), None)
        }
        Err(e) => {
            tracing::info!(error = %e, "disk budgets: measured (no project quotas)");
            (None, Some(e.to_string()))
        }
    };
    let settings = Arc::new(Settings {
        root: opts.root.clone(),
        store,
        cgroup_root,
        exe,
        monitor,
        rotation: opts.rotation,
        rootfs_copy: opts.rootfs_copy,
        config: opts.config,
        log_level: opts.log_level,
        restart_backoff: opts.restart_backoff,
        restart_backoff_max: Duration::from_secs(300).max(opts.restart_backoff),
        reserved_millicpu: opts.reserved_millicpu,
        reserved_memory: opts.reserved_memory,
        events_max_bytes: opts.events_max_bytes,
        image_gc: opts.image_gc,
        eviction_memory_available: opts.eviction_memory_available,
        network: network::NetworkSettings {
            cni: berth_cni::Cni {
                cache_dir: opts.root.join("cni").join("cache"),
                ..opts.network.cni
            },
            ..opts.network
        },
        cni_latency: metrics::Latencies::default(),
        max_pod_containers: opts.max_pod_containers,
        capacity: (
            opts.node.capacity_millicpu.unwrap_or(machine.0),
            opts.node.capacity_memory.unwrap_or(machine.1),
        ),
        capacity_declared: opts.node.capacity_millicpu.is_some()
            || opts.node.capacity_memory.is_some(),
        cpuset: cpuset.clone(),
        reserved_cpus: opts.node.reserved_cpus.clone(),
        estimator: opts.node.estimator,
        reclaim: opts.node.reclaim,
        sample_interval: opts.node.sample_interval,
        userns_pool: opts.node.userns_pool,
        userns_default: opts.node.userns_default,
        quotas,
        quota_unavailable,
        disk_check_interval: opts.node.disk_check_interval,
    });
    // Reserved CPUs are kept out of the whole cgroup root (every tier below inherits it).
    if !settings.reserved_cpus.is_empty() {
        berth_runtime::tier::Tier::new(&settings.cgroup_root)
            .restrict_cpus(&berth_runtime::task::format_cpuset(&settings.cpuset))
            .with_context(|| {
                format!(
                    "keeping CPUs {} out of {}",
                    berth_runtime::task::format_cpuset(&settings.reserved_cpus),
                    settings.cgroup_root.display()
                )
            })?;
    }
    // QoS parents: best-effort work gets the lowest CPU weight, as the kubelet sets it;
    // revocable work runs only on CPU nobody else wants (SCHED_IDLE as a group, `cpu.idle`,
    // where the kernel has it: it gives way the moment promised work wakes, which the
    // lowest weight alone does not do), else at the lowest weight too. An idle group
    // takes no weight (the kernel refuses one), so it is made idle instead of weighted.
    for (qos, shares) in [
        (berth_runtime::pod::QosClass::Guaranteed, None),
        (berth_runtime::pod::QosClass::Burstable, None),
        (berth_runtime::pod::QosClass::BestEffort, Some(2)),
        (berth_runtime::pod::QosClass::Revocable, None),
    ] {
        let limits = berth_runtime::cgroups::ParentLimits {
            cpu_shares: shares,
            ..Default::default()
        };
        berth_runtime::cgroups::ensure_parent(&settings.qos_cgroup(qos), &limits)
            .with_context(|| format!("creating the {qos} cgroup"))?;
    }
    let revocable = settings.revocable_cgroup();
    let idle = berth_runtime::tier::Tier::new(&revocable)
        .set_idle()
        .context("making the revocable tier idle")?;
    if !idle {
        tracing::info!("the kernel has no cpu.idle: revocable work runs at the lowest weight");
        let lowest = berth_runtime::cgroups::ParentLimits {
            cpu_shares: Some(2),
            ..Default::default()
        };
        berth_runtime::cgroups::ensure_parent(&revocable, &lowest)
            .context("creating the revocable cgroup")?;
    }
    // Reclaim state is not carried over a restart: a tier a killed agent left throttled or
    // frozen is released here, and the controller starts again from the samples (so no
    // task stays frozen with nobody to thaw it).
    if let Err(e) = berth_runtime::tier::Tier::new(&settings.revocable_cgroup()).release() {
        tracing::warn!(error = %e, "releasing the revocable tier left by the last agent");
    }
    for dir in [settings.containers_dir(), settings.pods_dir()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A broken default network fails its pods with the reason; the agent still serves.
    if let Err(e) = network::install_default(
        &settings.network,
        &settings.root,
        &opts.bridge.0,
        opts.bridge.1.clone(),
    ) {
        tracing::error!(error = %e, "installing the default network");
    }

    if let Some(parent) = opts.socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // A socket file left by a previous agent: refuse if one still answers on it.
    if opts.socket.exists() {
        if tokio::net::UnixStream::connect(&opts.socket).await.is_ok() {
            anyhow::bail!("another agent is listening on {}", opts.socket.display());
        }
        std::fs::remove_file(&opts.socket)
            .with_context(|| format!("removing stale socket {}", opts.socket.display()))?;
    }
    // Created 0600 from the start: no window in which another user could connect.
    let old_umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = tokio::net::UnixListener::bind(&opts.socket);
    nix::sys::stat::umask(old_umask);
    let listener = listener.with_context(|| format!("listening on {}", opts.socket.display()))?;
    std::fs::set_permissions(&opts.socket, std::fs::Permissions::from_mode(0o600))?;

    let (tx, rx) = mpsc::channel(256);
    // Requests wait in the socket's backlog and the owner's inbox until recovery is done
    // and its follow-up actions applied; then the owner tells systemd it is ready.
    let writer = persist::StateWriter::start(tx.clone()).context("starting the state writer")?;
    let (node, recovery) = node::Node::recover(settings.clone(), tx.clone(), writer.clone());
    let owner = tokio::spawn(node.run(recovery, rx));
    // After recovery's actions (queued first): the master hears of the pods the node has.
    let membership = opts
        .membership
        .clone()
        .map(|m| member::start(m, opts.root.clone(), tx.clone()));
    let tick = |every: Duration, action: fn() -> node::Action| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if tx.send(action()).await.is_err() {
                    break;
                }
            }
        })
    };
    let ticker = tick(Duration::from_secs(1), || node::Action::Tick);
    let sampler = tick(settings.sample_interval, || node::Action::Sample);
    // And at once when tasks stall (PSI triggers), so reclaim follows within a fraction of
    // a second.
    pressure::start(tx.clone());
    tracing::info!(socket = %opts.socket.display(), root = %opts.root.display(), cgroup_root = %settings.cgroup_root.display(), "agent listening");
    let latency = Arc::new(metrics::ApiLatency::default());
    let metrics_task = match opts.metrics_addr {
        Some(addr) => {
            Some(metrics::serve(addr, tx.clone(), settings.clone(), latency.clone()).await?)
        }
        None => None,
    };
    let app = routes::router(tx).route_layer(axum::middleware::from_fn_with_state(
        latency,
        metrics::track,
    ));
    let shutdown = async move {
        crate::daemon::shutdown_signal().await;
        tracing::info!("shutting down; containers keep running");
        notify::send("STOPPING=1");
    };
    let limits = server::Limits {
        max_connections: server::connection_cap(opts.api_limits.max_connections),
        ..opts.api_limits
    };
    if limits.max_connections < opts.api_limits.max_connections {
        tracing::warn!(
            requested = opts.api_limits.max_connections,
            cap = limits.max_connections,
            "max_connections lowered to what the open-files limit allows"
        );
    }
    // Streams (attach, logs -f, wait) would hold a graceful shutdown forever: 2 s at most.
    server::serve(listener, app, limits, shutdown, Duration::from_secs(2))
        .await
        .context("serving the API")?;
    ticker.abort();
    if let Some(m) = membership {
        m.abort();
    }
    sampler.abort();
    owner.abort();
    // What the owner queued is on disk before the agent is gone.
    writer.flush().await;
    if let Some(t) = metrics_task {
        t.abort();
    }
    let _ = std::fs::remove_file(&opts.socket);
    Ok(())
}
