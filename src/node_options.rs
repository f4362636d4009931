//! `berth agent`'s node options: the capacity it offers, the CPUs it keeps out of every
//! container, and the `[revocable]` constants of the usage estimator and graded reclaim
//! (flag, then config file, then default; every bad value is an error at start that names
//! its key).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_runtime::estimate::EstimatorConfig;
use berth_runtime::reclaim::ReclaimConfig;

use crate::cli_containers::AgentArgs;
use crate::config::Config;

/// What the node offers and how it estimates and reclaims.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Declared CPU capacity (millicores); `None`: the machine's.
    pub capacity_millicpu: Option<u64>,
    /// Declared memory capacity (bytes); `None`: the machine's.
    pub capacity_memory: Option<u64>,
    /// CPUs kept out of every container.
    pub reserved_cpus: BTreeSet<u32>,
    /// The estimator's constants.
    pub estimator: EstimatorConfig,
    /// The reclaim controller's constants.
    pub reclaim: ReclaimConfig,
    /// How often usage is sampled.
    pub sample_interval: Duration,
    /// Host ids for tasks in user namespaces of their own.
    pub userns_pool: crate::agent::idmap::IdPool,
    /// `--userns` of tasks that do not say.
    pub userns_default: berth_runtime::userns::UsernsMode,
    /// How often disk use per task is measured by walking its dirs (no quotas).
    pub disk_check_interval: Duration,
}

fn duration(key: &str, text: Option<&str>, default: Duration) -> Result<Duration> {
    match text {
        None => Ok(default),
        Some(t) => berth_runtime::health::parse_duration(t)
            .with_context(|| format!("invalid {key} {t:?}: want a duration like 5m, 30s, 0")),
    }
}

fn cpu(key: &str, text: &str) -> Result<u64> {
    let q = berth_runtime::pod::Quantity::Text(text.to_string());
    let m = berth_runtime::pod::parse_cpu(key, &q)
        .map_err(|e| anyhow::anyhow!("invalid {key} {text:?}: {}", e.reason))?;
    Ok(m)
}

/// Reads the node options of `berth agent`.
pub fn resolve(args: &AgentArgs, config: &Config) -> Result<NodeOptions> {
    let capacity_millicpu = args
        .capacity_cpu
        .as_deref()
        .or(config.capacity_cpu.as_deref())
        .map(|t| cpu("capacity_cpu", t))
        .transpose()?;
    if capacity_millicpu == Some(0) {
        bail!("invalid capacity_cpu: must be above 0");
    }
    let capacity_memory = args
        .capacity_memory
        .as_deref()
        .or(config.capacity_memory.as_deref())
        .map(|t| crate::config::parse_size("capacity_memory", t))
        .transpose()?;
    if capacity_memory == Some(0) {
        bail!("invalid capacity_memory: must be above 0");
    }
    let reserved_cpus = match args
        .reserved_cpus
        .as_deref()
        .or(config.reserved_cpus.as_deref())
    {
        None => BTreeSet::new(),
        Some(t) => {
            let set = berth_runtime::task::parse_cpuset("reserved_cpus", t)
                .map_err(|e| anyhow::anyhow!("invalid reserved_cpus {t:?}: {}", e.reason))?;
            let online = berth_runtime::tier::online_cpus();
            if let Some(missing) = set.iter().find(|c| !online.contains(c)) {
                bail!(
                    "invalid reserved_cpus {t:?}: this machine has no CPU {missing} (online: {})",
                    berth_runtime::task::format_cpuset(&online)
                );
            }
            if online.iter().all(|c| set.contains(c)) {
                bail!("invalid reserved_cpus {t:?}: it leaves no CPU for containers");
            }
            set
        }
    };

    let r = &config.revocable;
    let sample_interval = duration(
        "[revocable] sample_interval",
        r.sample_interval.as_deref(),
        Duration::from_millis(500),
    )?;
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&sample_interval) {
        bail!("invalid [revocable] sample_interval {sample_interval:?}: want 100ms to 60s");
    }
    let d = EstimatorConfig::default();
    // `window` is seconds in the config; the estimator counts samples.
    let window_secs = r.window.unwrap_or(d.window);
    let per_second = 1.0 / sample_interval.as_secs_f64();
    let warmup_text = args.revocable_warmup.as_deref().or(r.warmup.as_deref());
    let estimator = EstimatorConfig {
        warmup: duration("revocable warmup", warmup_text, d.warmup)?,
        window: ((window_secs as f64 * per_second).round() as usize).max(1),
        percentile: r.percentile.unwrap_or(d.percentile),
        margin_percent: r.margin_percent.unwrap_or(d.margin_percent),
        decay_half_life: duration(
            "[revocable] decay_half_life",
            r.decay_half_life.as_deref(),
            d.decay_half_life,
        )?,
        cpu_threshold_percent: r.cpu_threshold_percent.unwrap_or(d.cpu_threshold_percent),
        memory_threshold_percent: r
            .memory_threshold_percent
            .unwrap_or(d.memory_threshold_percent),
    };
    estimator
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
    let d = ReclaimConfig::default();
    let reclaim = ReclaimConfig {
        cpu_suppress_percent: r.cpu_suppress_percent.unwrap_or(d.cpu_suppress_percent),
        memory_pressure_percent: r
            .memory_pressure_percent
            .unwrap_or(d.memory_pressure_percent),
        memory_psi_full: r.memory_psi_full.unwrap_or(d.memory_psi_full),
        hysteresis_percent: r.hysteresis_percent.unwrap_or(d.hysteresis_percent),
        step_after: duration(
            "[revocable] step_after",
            r.step_after.as_deref(),
            d.step_after,
        )?,
        recover_after: duration(
            "[revocable] recover_after",
            r.recover_after.as_deref(),
            d.recover_after,
        )?,
        min_cpu: match r.min_cpu.as_deref() {
            Some(t) => cpu("[revocable] min_cpu", t)? as f64,
            None => d.min_cpu,
        },
    };
    reclaim
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
    let userns_pool = match args
        .userns_pool
        .as_deref()
        .or(config.userns_pool.as_deref())
    {
        Some(t) => crate::agent::idmap::IdPool::parse(t).map_err(anyhow::Error::msg)?,
        None => crate::agent::idmap::IdPool::from_subid_files("berth")
            .unwrap_or(crate::agent::idmap::DEFAULT_POOL),
    };
    let userns_default = match args
        .userns_default
        .as_deref()
        .or(config.userns_default.as_deref())
    {
        Some(t) => berth_runtime::userns::UsernsMode::parse(t)
            .map_err(|_| anyhow::anyhow!("invalid userns_default {t:?}: want host or auto"))?,
        None => berth_runtime::userns::UsernsMode::Host,
    };
    let disk_check_interval = duration(
        "disk_check_interval",
        args.disk_check_interval
            .as_deref()
            .or(config.disk_check_interval.as_deref()),
        Duration::from_secs(10),
    )?;
    if disk_check_interval < Duration::from_secs(1) {
        bail!("invalid disk_check_interval {disk_check_interval:?}: want 1s or more");
    }
    Ok(NodeOptions {
        userns_pool,
        userns_default,
        disk_check_interval,
        sample_interval,
        capacity_millicpu,
        capacity_memory,
        reserved_cpus,
        estimator,
        reclaim,
    })
}
