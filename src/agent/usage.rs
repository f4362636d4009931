//! The node's measured usage, every `sample_interval` (500 ms) and on PSI triggers
//! (`pressure.rs`): every running container's cgroup (CPU time,
//! working set), the node's CPU and memory and PSI are read in the blocking pool (never on
//! the owner), then on the owner the samples feed the estimator (a reservation per task,
//! the node's revocable slack: `berth_runtime::estimate`) and the reclaim controller
//! (`berth_runtime::reclaim`, applied by `agent/reclaim.rs`). `GET /v1/node` and the
//! metrics read the figures kept here.
//!
//! With a declared capacity (`capacity_cpu`, `capacity_memory`) only Berth's own tasks
//! count as used (and the system reserve as the least system use): the rest of the machine
//! is not the node's. Otherwise the whole machine's use counts.
//!
//! After an agent restart everything starts over: the estimator offers no slack until it
//! has warmed up again (never optimistic), and reclaim starts from a released tier.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use berth_runtime::estimate::{Estimator, NodeUsage, TaskResources, TaskUsage};
use berth_runtime::pod::QosClass;
use berth_runtime::reclaim::{Reclaim, Round};
use berth_runtime::sample::{CgroupSample, NodeSample, Pressure};

use super::error::ApiError;
use super::node::Node;
use super::Settings;
use crate::api::node::{NodePressure, NodeView, PressureView, ResourceView, TierFigures};

/// The usage figures the owner keeps.
#[derive(Debug)]
pub struct Usage {
    estimator: Estimator,
    reclaim: Reclaim,
    /// The monotonic origin of every time here.
    clock: Instant,
    /// Each task's last CPU time: when (s) and how much (ns).
    last_cpu: HashMap<String, (f64, u64)>,
    /// The node's last busy time: when (s) and how much (ns).
    last_node: Option<(f64, u64)>,
    /// A sample is being read.
    sampling: bool,
    /// Revocable tasks running at the last sample.
    revocable_tasks: usize,
    /// Node use, smoothed: millicores and bytes.
    smoothed: Option<(f64, f64)>,
    /// Last sample's use per tier: CPU and memory.
    by_tier: (TierFigures, TierFigures),
    pressure: Option<[Pressure; 3]>,
    /// v2: each tier's own PSI.
    tier_pressure: Vec<(QosClass, [Pressure; 3])>,
    samples: u64,
    /// Steps taken since start, by step.
    pub(super) steps: BTreeMap<String, u64>,
    /// Tasks revoked since start.
    pub(super) revoked: u64,
    /// The knobs last written to the revocable tier, with the tasks a CPU cap was split
    /// over (v1); `None` until the first write.
    pub(super) written: Option<(
        berth_runtime::reclaim::Knobs,
        Vec<berth_runtime::tier::CappedTask>,
    )>,
    /// A knob write is in flight.
    pub(super) writing: bool,
}

impl Usage {
    /// Nothing measured yet: the estimator starts its warm-up now.
    pub fn new(settings: &Settings) -> Self {
        Usage {
            estimator: Estimator::new(settings.estimator, 0.0),
            reclaim: Reclaim::new(settings.reclaim),
            clock: Instant::now(),
            last_cpu: HashMap::new(),
            last_node: None,
            sampling: false,
            revocable_tasks: 0,
            smoothed: None,
            by_tier: Default::default(),
            pressure: None,
            tier_pressure: Vec::new(),
            samples: 0,
            steps: BTreeMap::new(),
            revoked: 0,
            written: None,
            writing: false,
        }
    }

    /// Seconds since the agent started (the estimator's clock).
    fn now(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    /// The reclaim state: `none`, `throttle`, `memory-high` or `freeze`.
    pub fn reclaim_state(&self) -> &'static str {
        self.reclaim.state()
    }

    /// The reclaim controller.
    pub(super) fn reclaim(&self) -> &Reclaim {
        &self.reclaim
    }

    /// Revocable tasks running at the last sample.
    pub fn revocable_tasks(&self) -> usize {
        self.revocable_tasks
    }

    /// Memory pressure outlasted every reclaim step with nothing revocable left: the
    /// eviction of promised work (the last resort) may act.
    pub fn reclaim_exhausted(&self) -> bool {
        self.reclaim.exhausted()
    }
}

/// A running container to sample.
struct Target {
    id: String,
    cgroup: PathBuf,
    qos: QosClass,
    resources: TaskResources,
    /// Seconds it has run.
    running_for: f64,
}

/// One round of readings.
struct Sampled {
    at: f64,
    node: NodeSample,
    pressure: Option<[Pressure; 3]>,
    /// v2: each QoS tier's own PSI (`cpu.pressure`, `memory.pressure`, `io.pressure`).
    tiers: Vec<(QosClass, [Pressure; 3])>,
    tasks: Vec<(Target, Option<CgroupSample>)>,
}

/// What a task asks for (millicores and bytes), from its Docker-style resources: a pod
/// member's CPU request is its weight (`requests.cpu` × 1024 shares), a lone container's
/// its `--cpus`; the memory request is the reservation, else the limit.
pub fn task_resources(task: &berth_runtime::task::TaskSpec) -> TaskResources {
    let r = &task.resources;
    let cpu_limit = r.cpus.map(|c| c * 1000.0);
    let cpu_request = if task.pod.is_some() {
        r.cpu_shares
            .filter(|s| *s > 2)
            .map(|s| s as f64 * 1000.0 / 1024.0)
    } else {
        cpu_limit
    };
    TaskResources {
        cpu_request,
        cpu_limit,
        memory_request: r.memory_reservation.or(r.memory).map(|m| m as f64),
        memory_limit: r.memory.map(|m| m as f64),
        revocable: task.revocable,
    }
}

fn running_for(started: Option<&str>) -> f64 {
    started
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map_or(0.0, |t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .map_or(0.0, |d| d.as_secs_f64())
        })
}

/// Starts a round of sampling unless one is in flight (the 1 s tick).
pub fn tick(node: &mut Node) {
    if node.usage.sampling {
        return;
    }
    let targets: Vec<Target> = node
        .containers
        .values()
        .filter(|c| c.record().started.is_some() && c.exit.borrow().is_none())
        .filter_map(|c| {
            let r = c.record();
            Some(Target {
                id: r.id.clone(),
                cgroup: r.cgroup_path.clone(),
                qos: c.qos()?,
                resources: task_resources(&r.task),
                running_for: running_for(r.started.as_deref()),
            })
        })
        .collect();
    node.usage.sampling = true;
    let clock = node.usage.clock;
    // With reserved CPUs, the node's CPU use counts only the CPUs containers may use.
    let cpus = if node.settings.reserved_cpus.is_empty() {
        Default::default()
    } else {
        node.settings.cpuset.clone()
    };
    let tier_paths: Vec<(QosClass, PathBuf)> = TIERS
        .iter()
        .map(|q| (*q, node.settings.qos_cgroup(*q)))
        .collect();
    node.spawn_blocking(
        "sampling usage",
        move || {
            let tasks = targets
                .into_iter()
                .map(|t| {
                    let s = berth_runtime::sample::cgroup(&t.cgroup);
                    (t, s)
                })
                .collect();
            let tiers = if berth_runtime::cgroups::is_v2() {
                tier_paths
                    .iter()
                    .filter_map(|(q, p)| Some((*q, berth_runtime::sample::cgroup_pressure(p)?)))
                    .collect()
            } else {
                Vec::new()
            };
            Ok(Sampled {
                at: clock.elapsed().as_secs_f64(),
                node: berth_runtime::sample::node(&cpus),
                pressure: berth_runtime::sample::node_pressure(),
                tiers,
                tasks,
            })
        },
        |node, sampled: Result<Sampled, ApiError>| {
            node.usage.sampling = false;
            match sampled {
                Ok(s) => observe(node, s),
                Err(e) => tracing::warn!(error = %e.message, "sampling usage"),
            }
        },
    );
}

/// The QoS tiers, in the order the API lists them.
const TIERS: [QosClass; 4] = [
    QosClass::Guaranteed,
    QosClass::Burstable,
    QosClass::BestEffort,
    QosClass::Revocable,
];

fn tier_add(t: &mut TierFigures, qos: QosClass, v: f64) {
    match qos {
        QosClass::Guaranteed => t.guaranteed += v,
        QosClass::Burstable => t.burstable += v,
        QosClass::BestEffort => t.besteffort += v,
        QosClass::Revocable => t.revocable += v,
    }
}

/// Applies a round of readings.
fn observe(node: &mut Node, s: Sampled) {
    let settings = node.settings.clone();
    let u = &mut node.usage;
    let mut usage = HashMap::new();
    let mut by_tier = (TierFigures::default(), TierFigures::default());
    let mut revocable_tasks = 0;
    let mut seen = std::collections::HashSet::new();
    for (t, sample) in &s.tasks {
        let Some(sample) = sample else { continue };
        seen.insert(t.id.clone());
        // First sight: its average since it started (so a new hog counts at once), no more
        // than its own limit or the node can give (a start's burst over a few ms would read
        // as more); then the rate since the last sample.
        let most = t
            .resources
            .cpu_limit
            .unwrap_or(f64::MAX)
            .min(settings.capacity.0 as f64);
        let cpu = match u.last_cpu.get(&t.id) {
            Some((at, ns)) if s.at > *at => {
                sample.cpu_ns.saturating_sub(*ns) as f64 / ((s.at - at) * 1e6)
            }
            Some(_) => 0.0,
            None if t.running_for > 0.1 => (sample.cpu_ns as f64 / (t.running_for * 1e6)).min(most),
            None => 0.0,
        };
        u.last_cpu.insert(t.id.clone(), (s.at, sample.cpu_ns));
        let memory = sample.working_set as f64;
        tier_add(&mut by_tier.0, t.qos, cpu);
        tier_add(&mut by_tier.1, t.qos, memory);
        if t.qos == QosClass::Revocable {
            revocable_tasks += 1;
        }
        u.estimator.track(
            &t.id,
            t.resources,
            u.clock.elapsed().as_secs_f64() - t.running_for,
        );
        usage.insert(t.id.clone(), TaskUsage { cpu, memory });
    }
    u.last_cpu.retain(|id, _| seen.contains(id));
    let gone: Vec<String> = u
        .estimator
        .tracked()
        .filter(|id| !seen.contains(*id))
        .map(str::to_string)
        .collect();
    for id in gone {
        u.estimator.forget(&id);
    }
    let tasks_cpu: f64 = usage.values().map(|t| t.cpu).sum();
    let tasks_memory: f64 = usage.values().map(|t| t.memory).sum();
    let dt = u.last_node.map_or(1.0, |(at, _)| (s.at - at).max(0.01));
    let node_cpu = match u.last_node {
        Some((at, ns)) if s.at > at => {
            s.node.busy_ns.saturating_sub(ns) as f64 / ((s.at - at) * 1e6)
        }
        _ => tasks_cpu,
    };
    u.last_node = Some((s.at, s.node.busy_ns));
    let (cpu_used, memory_used) = if settings.capacity_declared {
        (tasks_cpu, tasks_memory)
    } else {
        (
            node_cpu,
            s.node.memory_total.saturating_sub(s.node.memory_available) as f64,
        )
    };
    u.estimator.observe(
        s.at,
        NodeUsage {
            cpu_capacity: settings.capacity.0 as f64,
            cpu_reserved: settings.reserved_millicpu as f64,
            memory_capacity: settings.capacity.1 as f64,
            memory_reserved: settings.reserved_memory as f64,
            cpu_used,
            memory_used,
        },
        &usage,
    );
    // Smoothed over ~10 s for display; the controllers use the last sample.
    let alpha = 1.0 - (-dt / 10.0f64).exp();
    u.smoothed = Some(match u.smoothed {
        Some((c, m)) => (c + alpha * (cpu_used - c), m + alpha * (memory_used - m)),
        None => (cpu_used, memory_used),
    });
    u.by_tier = by_tier;
    u.revocable_tasks = revocable_tasks;
    u.pressure = s.pressure;
    u.samples += 1;
    // Memory stalls of promised work: its tiers' own PSI on v2, else the node's.
    let promised_psi = s
        .tiers
        .iter()
        .filter(|(q, _)| *q != QosClass::Revocable)
        .map(|(_, p)| p[1].full_avg10)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let memory_psi = promised_psi.or(s.pressure.map(|p| p[1].full_avg10));
    u.tier_pressure = s.tiers;
    let (cpu, memory) = (u.estimator.cpu(), u.estimator.memory());
    let round = Round {
        now: s.at,
        cpu_capacity: settings.capacity.0 as f64,
        cpu_promised: tasks_cpu - by_tier.0.revocable,
        cpu_system: cpu.system,
        cpu_revocable: by_tier.0.revocable,
        memory_capacity: settings.capacity.1 as f64,
        memory_promised: tasks_memory - by_tier.1.revocable,
        memory_system: memory.system,
        memory_revocable: by_tier.1.revocable,
        memory_psi_full: memory_psi,
        revocable_tasks,
    };
    let outcome = u.reclaim.observe(round);
    super::reclaim::apply(node, outcome);
}

/// Requests of admitted work per tier (pods starting or running, lone containers not
/// ended): millicores and bytes.
fn allocated(node: &Node) -> (TierFigures, TierFigures) {
    use super::pod::PodPhase;
    let mut out = (TierFigures::default(), TierFigures::default());
    for p in node.pods.values() {
        if matches!(p.phase(), PodPhase::Starting | PodPhase::Running) {
            let r = p.record();
            tier_add(&mut out.0, r.qos, r.requests_millicpu as f64);
            tier_add(&mut out.1, r.qos, r.requests_memory as f64);
        }
    }
    for c in node.containers.values() {
        let r = c.record();
        if r.task.pod.is_some() || c.exit.borrow().is_some() {
            continue;
        }
        let res = task_resources(&r.task);
        let qos = QosClass::of_spec(&r.task);
        tier_add(&mut out.0, qos, res.cpu_request.unwrap_or(0.0));
        tier_add(&mut out.1, qos, res.memory_request.unwrap_or(0.0));
    }
    out
}

/// Admits revocable work asking for `cpu` millicores and `memory` bytes against the
/// revocable estimate minus what revocable work already holds, or says why not.
pub fn admit_revocable(node: &Node, what: &str, cpu: f64, memory: f64) -> Result<(), ApiError> {
    let u = &node.usage;
    let (alloc_cpu, alloc_mem) = allocated(node);
    let now = u.now();
    let warming = if u.estimator.warmed_up(now) {
        String::new()
    } else {
        let left = u.estimator.config().warmup.as_secs_f64() - now;
        format!(
            " (the usage estimator is warming up for {:.0}s more: revocable_warmup)",
            left.max(0.0)
        )
    };
    let free_cpu = (u.estimator.cpu().revocable - alloc_cpu.revocable).max(0.0);
    if cpu > free_cpu {
        return Err(ApiError::insufficient(format!(
            "insufficient revocable cpu: {what} requests {cpu:.0}m, {free_cpu:.0}m of the node's revocable estimate ({:.0}m) are free{warming}",
            u.estimator.cpu().revocable
        )));
    }
    let free_mem = (u.estimator.memory().revocable - alloc_mem.revocable).max(0.0);
    if memory > free_mem {
        return Err(ApiError::insufficient(format!(
            "insufficient revocable memory: {what} requests {} MiB, {} MiB of the node's revocable estimate ({} MiB) are free{warming}",
            (memory / 1048576.0).ceil(),
            (free_mem / 1048576.0).floor(),
            (u.estimator.memory().revocable / 1048576.0).floor()
        )));
    }
    Ok(())
}

/// PSI of CPU, memory and I/O as the API shows it.
fn pressure_view(p: &[Pressure; 3]) -> NodePressure {
    let one = |p: &Pressure| PressureView {
        some_avg10: p.some_avg10,
        full_avg10: p.full_avg10,
    };
    NodePressure {
        cpu: one(&p[0]),
        memory: one(&p[1]),
        io: one(&p[2]),
    }
}

/// `GET /v1/node`.
pub fn view(node: &Node) -> NodeView {
    let u = &node.usage;
    let settings = &node.settings;
    let (alloc_cpu, alloc_mem) = allocated(node);
    let (alloc_cpu_total, alloc_mem_total) = settings.allocatable();
    let smoothed = u.smoothed.unwrap_or_default();
    let figures = |f: berth_runtime::estimate::Figures,
                   reserve: u64,
                   allocatable: u64,
                   allocated: TierFigures,
                   used: f64,
                   by_tier: TierFigures| ResourceView {
        capacity: f.capacity.max(0.0),
        system_reserved: reserve as f64,
        allocatable: allocatable as f64,
        allocated,
        used,
        used_by_tier: by_tier,
        system: f.system,
        reserved: f.reserved,
        revocable: f.revocable,
        revocable_free: (f.revocable - allocated.revocable).max(0.0),
    };
    let mut cpu = figures(
        u.estimator.cpu(),
        settings.reserved_millicpu,
        alloc_cpu_total,
        alloc_cpu,
        smoothed.0,
        u.by_tier.0,
    );
    let mut memory = figures(
        u.estimator.memory(),
        settings.reserved_memory,
        alloc_mem_total,
        alloc_mem,
        smoothed.1,
        u.by_tier.1,
    );
    // Before the first sample the estimator knows no capacity.
    cpu.capacity = settings.capacity.0 as f64;
    memory.capacity = settings.capacity.1 as f64;
    let now = u.now();
    let knobs = u.reclaim.knobs();
    let mut tasks = crate::api::node::TierCounts::default();
    for c in node.containers.values() {
        if c.record().started.is_some() && c.exit.borrow().is_none() {
            match c.qos() {
                Some(QosClass::Guaranteed) => tasks.guaranteed += 1,
                Some(QosClass::Burstable) => tasks.burstable += 1,
                Some(QosClass::BestEffort) => tasks.besteffort += 1,
                Some(QosClass::Revocable) => tasks.revocable += 1,
                None => {}
            }
        }
    }
    NodeView {
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        kernel: nix::sys::utsname::uname()
            .ok()
            .and_then(|u| u.release().to_str().map(str::to_string))
            .unwrap_or_default(),
        cgroup_version: if berth_runtime::cgroups::is_v2() {
            "v2"
        } else {
            "v1"
        }
        .to_string(),
        cpuset: berth_runtime::task::format_cpuset(&settings.cpuset),
        reserved_cpus: (!settings.reserved_cpus.is_empty())
            .then(|| berth_runtime::task::format_cpuset(&settings.reserved_cpus)),
        cpu,
        memory,
        pressure: u.pressure.as_ref().map(pressure_view),
        pressure_by_tier: u
            .tier_pressure
            .iter()
            .map(|(q, p)| (q.to_string(), pressure_view(p)))
            .collect(),
        warmed_up: u.estimator.warmed_up(now),
        warmup_left_secs: (u.estimator.config().warmup.as_secs_f64() - now).max(0.0),
        samples: u.samples,
        reclaim: crate::api::node::ReclaimView {
            state: u.reclaim.state().to_string(),
            cpu_cap: knobs.cpu_cap,
            memory_high: knobs.memory_high,
            frozen: knobs.frozen,
            steps: u.steps.clone(),
            revoked: u.revoked,
        },
        tasks,
        cluster: node.member.clone(),
        disk: super::disk_budget::node_view(node),
        userns: {
            let (held, ranges) = node.idmaps.usage();
            crate::api::node::UsernsView {
                held,
                ranges,
                first_uid: settings.userns_pool.uid,
                default: match settings.userns_default {
                    berth_runtime::userns::UsernsMode::Host => "host",
                    berth_runtime::userns::UsernsMode::Auto => "auto",
                }
                .into(),
            }
        },
    }
}
