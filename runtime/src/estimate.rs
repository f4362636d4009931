//! The usage estimator behind oversubscription: a reservation per task in Borg's manner
//! and the node's slack in Koordinator's, fed one usage sample per task per second.
//!
//! Per task (CPU in millicores, memory in bytes of working set):
//!
//! ```text
//! reservation = cap                                   while the task is warming up
//! target      = max(P(percentile, last `window` samples), last sample) × (1 + margin),
//!               at most the larger of cap and the last sample
//! reservation = target                                when target ≥ reservation (rises at once)
//! reservation = target + (reservation − target) × 2^(−Δt / half_life)   otherwise (decays)
//! ```
//!
//! where `cap` is the task's limit (else its request; else none: a task without either
//! starts at zero and is carried by its usage). The warm-up counts from the later of the
//! task's start and the estimator's own start, so after an agent restart every task holds
//! its whole cap again until it warmed up: the estimate starts safe, never optimistic.
//!
//! Per node (each resource):
//!
//! ```text
//! slack = max(0, capacity × threshold − Σ reservations of non-revocable tasks − system usage)
//! system usage = max(system reserved, node usage − Σ usage of every task)
//! ```
//!
//! and no slack at all until the estimator itself has run for the warm-up.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The estimator's constants; every one is a key of `[revocable]` in the agent's config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EstimatorConfig {
    /// How long a new task (or every task, after an agent start) holds its whole cap.
    pub warmup: Duration,
    /// How many samples the percentile looks at (the agent's config gives seconds).
    pub window: usize,
    /// The percentile of usage a reservation decays toward (0–100).
    pub percentile: f64,
    /// Head room above that percentile, in percent.
    pub margin_percent: f64,
    /// How fast a reservation falls toward its target: half the gap goes in this time.
    pub decay_half_life: Duration,
    /// The share of the node's CPU capacity it fills, revocable work included (percent).
    pub cpu_threshold_percent: f64,
    /// The share of the node's memory capacity it fills, revocable work included (percent).
    pub memory_threshold_percent: f64,
}

impl Default for EstimatorConfig {
    /// Borg's five-minute warm-up; Koordinator's reclaim thresholds (CPU 60%, memory 65%).
    fn default() -> Self {
        Self {
            warmup: Duration::from_secs(300),
            window: 300,
            percentile: 95.0,
            margin_percent: 10.0,
            decay_half_life: Duration::from_secs(300),
            cpu_threshold_percent: 60.0,
            memory_threshold_percent: 65.0,
        }
    }
}

/// A bad constant.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EstimatorError {
    /// Out of its range.
    #[error("revocable.{key} = {value} is out of range: {range}")]
    OutOfRange {
        /// The config key.
        key: &'static str,
        /// What was given.
        value: String,
        /// What is allowed.
        range: &'static str,
    },
}

impl EstimatorConfig {
    /// Checks every constant is in its range.
    pub fn validate(&self) -> Result<(), EstimatorError> {
        let pct = |key: &'static str, v: f64, lo: f64| {
            if v.is_finite() && v >= lo && v <= 100.0 {
                Ok(())
            } else {
                Err(EstimatorError::OutOfRange {
                    key,
                    value: v.to_string(),
                    range: if lo > 0.0 {
                        "more than 0, at most 100"
                    } else {
                        "0 to 100"
                    },
                })
            }
        };
        pct("percentile", self.percentile, 0.0)?;
        pct("cpu_threshold_percent", self.cpu_threshold_percent, 1.0)?;
        pct(
            "memory_threshold_percent",
            self.memory_threshold_percent,
            1.0,
        )?;
        if !(self.margin_percent.is_finite() && (0.0..=1000.0).contains(&self.margin_percent)) {
            return Err(EstimatorError::OutOfRange {
                key: "margin_percent",
                value: self.margin_percent.to_string(),
                range: "0 to 1000",
            });
        }
        if self.window == 0 || self.window > 86_400 {
            return Err(EstimatorError::OutOfRange {
                key: "window",
                value: format!("{} samples", self.window),
                range: "1 s to 24 h",
            });
        }
        if self.decay_half_life.is_zero() {
            return Err(EstimatorError::OutOfRange {
                key: "decay_half_life",
                value: "0s".into(),
                range: "more than 0",
            });
        }
        Ok(())
    }
}

/// One resource's reservation of one task.
#[derive(Debug, Clone)]
struct Reservation {
    cap: Option<f64>,
    value: f64,
    history: VecDeque<f64>,
}

impl Reservation {
    fn new(cap: Option<f64>) -> Self {
        Self {
            cap,
            value: cap.unwrap_or(0.0),
            history: VecDeque::new(),
        }
    }

    fn observe(&mut self, cfg: &EstimatorConfig, usage: f64, warm: bool, dt: f64) {
        self.history.push_back(usage.max(0.0));
        while self.history.len() > cfg.window {
            self.history.pop_front();
        }
        if !warm {
            // Warming up: the whole cap, or what it uses when it has none or uses more.
            self.value = self.cap.unwrap_or(0.0).max(usage);
            return;
        }
        // The latest sample counts too: a reservation rises with usage at once, and a
        // percentile alone would wait until enough high samples filled its window.
        let high = percentile(&self.history, cfg.percentile).max(usage);
        let mut target = high * (1.0 + cfg.margin_percent / 100.0);
        if let Some(cap) = self.cap {
            // What it uses beyond its cap is bounded by the kernel (a limit), or by its
            // usage (a request only): the reservation never passes the larger of the two.
            target = target.min(cap.max(usage));
        }
        if target >= self.value {
            self.value = target;
        } else {
            let keep = 0.5f64.powf(dt / cfg.decay_half_life.as_secs_f64());
            self.value = target + (self.value - target) * keep;
        }
    }
}

/// The `p`-th percentile (nearest rank) of `xs`; 0 when empty.
fn percentile(xs: &VecDeque<f64>, p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v: Vec<f64> = xs.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// What a task asks for, per resource: millicores and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TaskResources {
    /// CPU request (millicores).
    pub cpu_request: Option<f64>,
    /// CPU limit (millicores).
    pub cpu_limit: Option<f64>,
    /// Memory request (bytes).
    pub memory_request: Option<f64>,
    /// Memory limit (bytes).
    pub memory_limit: Option<f64>,
    /// Runs on slack (its reservation does not shrink the slack).
    pub revocable: bool,
}

/// One sample of a task: CPU rate (millicores) and working set (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskUsage {
    /// CPU in millicores over the last interval.
    pub cpu: f64,
    /// Memory working set: usage minus inactive file pages.
    pub memory: f64,
}

#[derive(Debug, Clone)]
struct Task {
    resources: TaskResources,
    since: f64,
    cpu: Reservation,
    memory: Reservation,
    usage: TaskUsage,
}

/// One resource's figures of the node (millicores or bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// The node's capacity (the machine's, or what the operator declared).
    pub capacity: f64,
    /// Σ reservations of non-revocable tasks.
    pub reserved: f64,
    /// Measured use of the whole node.
    pub used: f64,
    /// Use outside every task (the system, the agent).
    pub system: f64,
    /// Σ use of revocable tasks.
    pub revocable_used: f64,
    /// What revocable work may have: the slack.
    pub revocable: f64,
}

/// The node's estimate: per task reservations and the slack, one resource each.
#[derive(Debug, Clone)]
pub struct Estimator {
    cfg: EstimatorConfig,
    started: f64,
    last: Option<f64>,
    tasks: HashMap<String, Task>,
    cpu: Figures,
    memory: Figures,
}

/// The node-wide sample beside the tasks'.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeUsage {
    /// CPU capacity (millicores).
    pub cpu_capacity: f64,
    /// CPU kept for the system (millicores): the least system usage counted.
    pub cpu_reserved: f64,
    /// Memory capacity (bytes).
    pub memory_capacity: f64,
    /// Memory kept for the system (bytes): the least system usage counted.
    pub memory_reserved: f64,
    /// CPU in use on the whole node (millicores).
    pub cpu_used: f64,
    /// Memory in use on the whole node (bytes: total minus available).
    pub memory_used: f64,
}

impl Estimator {
    /// An estimator started at `now` (seconds on a monotonic clock).
    pub fn new(cfg: EstimatorConfig, now: f64) -> Self {
        Self {
            cfg,
            started: now,
            last: None,
            tasks: HashMap::new(),
            cpu: Figures::default(),
            memory: Figures::default(),
        }
    }

    /// The constants.
    pub fn config(&self) -> &EstimatorConfig {
        &self.cfg
    }

    /// A task to follow; `started` is when it started (seconds, the same clock), which the
    /// warm-up counts from unless the estimator started later.
    pub fn track(&mut self, id: &str, resources: TaskResources, started: f64) {
        let task = Task {
            resources,
            since: started.max(self.started),
            cpu: Reservation::new(resources.cpu_limit.or(resources.cpu_request)),
            memory: Reservation::new(resources.memory_limit.or(resources.memory_request)),
            usage: TaskUsage::default(),
        };
        self.tasks.entry(id.to_string()).or_insert(task);
    }

    /// A task that is gone.
    pub fn forget(&mut self, id: &str) {
        self.tasks.remove(id);
    }

    /// Ids of the tasks followed.
    pub fn tracked(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    /// One round of samples at `now`: every followed task's usage (a task missing from
    /// `usage` counts as idle) and the node's.
    pub fn observe(&mut self, now: f64, node: NodeUsage, usage: &HashMap<String, TaskUsage>) {
        let dt = self.last.map_or(1.0, |l| (now - l).max(0.0));
        self.last = Some(now);
        let warmup = self.cfg.warmup.as_secs_f64();
        let cfg = self.cfg;
        for (id, task) in &mut self.tasks {
            let u = usage.get(id).copied().unwrap_or_default();
            let warm = now - task.since >= warmup;
            task.cpu.observe(&cfg, u.cpu, warm, dt);
            task.memory.observe(&cfg, u.memory, warm, dt);
            task.usage = u;
        }
        let node_warm = now - self.started >= warmup;
        let sum = |f: &dyn Fn(&Task) -> f64, revocable: Option<bool>| -> f64 {
            self.tasks
                .values()
                .filter(|t| revocable.is_none_or(|r| t.resources.revocable == r))
                .map(f)
                .sum()
        };
        let figures = |capacity: f64,
                       system_reserved: f64,
                       used: f64,
                       threshold: f64,
                       reservation: &dyn Fn(&Task) -> f64,
                       use_of: &dyn Fn(&Task) -> f64| {
            let reserved = sum(reservation, Some(false));
            let tasks_used = sum(use_of, None);
            let system = (used - tasks_used).max(system_reserved).max(0.0);
            let slack = if node_warm {
                (capacity * threshold / 100.0 - reserved - system).max(0.0)
            } else {
                0.0
            };
            Figures {
                capacity,
                reserved,
                used,
                system,
                revocable_used: sum(use_of, Some(true)),
                revocable: slack,
            }
        };
        self.cpu = figures(
            node.cpu_capacity,
            node.cpu_reserved,
            node.cpu_used,
            cfg.cpu_threshold_percent,
            &|t| t.cpu.value,
            &|t| t.usage.cpu,
        );
        self.memory = figures(
            node.memory_capacity,
            node.memory_reserved,
            node.memory_used,
            cfg.memory_threshold_percent,
            &|t| t.memory.value,
            &|t| t.usage.memory,
        );
    }

    /// The node's CPU figures (millicores).
    pub fn cpu(&self) -> Figures {
        self.cpu
    }

    /// The node's memory figures (bytes).
    pub fn memory(&self) -> Figures {
        self.memory
    }

    /// A task's reservations (millicores, bytes) and last usage.
    pub fn task(&self, id: &str) -> Option<(f64, f64, TaskUsage)> {
        self.tasks
            .get(id)
            .map(|t| (t.cpu.value, t.memory.value, t.usage))
    }

    /// Whether the estimator has run for its warm-up (before that, no slack).
    pub fn warmed_up(&self, now: f64) -> bool {
        now - self.started >= self.cfg.warmup.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::float_cmp)]
    use super::*;

    fn cfg(warmup: u64) -> EstimatorConfig {
        EstimatorConfig {
            warmup: Duration::from_secs(warmup),
            window: 60,
            decay_half_life: Duration::from_secs(10),
            ..EstimatorConfig::default()
        }
    }

    const NODE: NodeUsage = NodeUsage {
        cpu_capacity: 2000.0,
        cpu_reserved: 0.0,
        memory_capacity: 1000.0,
        memory_reserved: 0.0,
        cpu_used: 0.0,
        memory_used: 0.0,
    };

    fn with(cpu_used: f64, mem_used: f64) -> NodeUsage {
        NodeUsage {
            cpu_used,
            memory_used: mem_used,
            ..NODE
        }
    }

    fn usage(id: &str, cpu: f64, memory: f64) -> HashMap<String, TaskUsage> {
        HashMap::from([(id.to_string(), TaskUsage { cpu, memory })])
    }

    fn guaranteed(cpu: f64, mem: f64) -> TaskResources {
        TaskResources {
            cpu_request: Some(cpu),
            cpu_limit: Some(cpu),
            memory_request: Some(mem),
            memory_limit: Some(mem),
            revocable: false,
        }
    }

    #[test]
    fn a_task_holds_its_cap_while_warming_up_then_decays_toward_its_usage() {
        let mut e = Estimator::new(cfg(30), 0.0);
        e.track("a", guaranteed(1000.0, 400.0), 0.0);
        for t in 1..30 {
            e.observe(t as f64, with(100.0, 100.0), &usage("a", 100.0, 100.0));
            assert_eq!(e.task("a").unwrap().0, 1000.0, "held at {t}");
            assert_eq!(e.cpu().revocable, 0.0, "no slack while the node warms up");
        }
        let mut last = 1000.0;
        for t in 30..200 {
            e.observe(t as f64, with(100.0, 100.0), &usage("a", 100.0, 100.0));
            let r = e.task("a").unwrap().0;
            assert!(r <= last, "decays monotonically: {r} after {last}");
            last = r;
        }
        // Toward usage × (1 + margin) = 110, never below it.
        assert!((last - 110.0).abs() < 1.0, "{last}");
        // Slack: 2000 × 60% − 110 − 0 system.
        assert!(
            (e.cpu().revocable - (1200.0 - last)).abs() < 1e-6,
            "{:?}",
            e.cpu()
        );
    }

    #[test]
    fn a_reservation_rises_at_once_with_usage() {
        let mut e = Estimator::new(cfg(0), 0.0);
        e.track("a", guaranteed(1000.0, 400.0), 0.0);
        for t in 1..100 {
            e.observe(t as f64, with(50.0, 50.0), &usage("a", 50.0, 50.0));
        }
        assert!(e.task("a").unwrap().0 < 60.0);
        e.observe(100.0, with(900.0, 50.0), &usage("a", 900.0, 50.0));
        let r = e.task("a").unwrap().0;
        assert!(r >= 900.0, "rose at once: {r}");
        assert!(r <= 1000.0, "never above the limit: {r}");
        // The slack falls in the same round.
        assert!(e.cpu().revocable <= 1200.0 - 900.0, "{:?}", e.cpu());
    }

    #[test]
    fn the_estimator_starts_safe_after_a_restart() {
        // A task that has run for an hour when the agent (re)starts holds its cap again.
        let mut e = Estimator::new(cfg(30), 3600.0);
        e.track("a", guaranteed(1000.0, 400.0), 0.0);
        e.observe(3601.0, with(10.0, 10.0), &usage("a", 10.0, 10.0));
        assert_eq!(e.task("a").unwrap().0, 1000.0);
        assert_eq!(e.cpu().revocable, 0.0);
        assert_eq!(e.memory().revocable, 0.0);
        assert!(!e.warmed_up(3601.0));
    }

    #[test]
    fn system_use_and_revocable_tasks_count_as_koordinator_does() {
        let mut e = Estimator::new(cfg(0), 0.0);
        e.track("g", guaranteed(500.0, 200.0), 0.0);
        e.track(
            "r",
            TaskResources {
                revocable: true,
                ..guaranteed(800.0, 300.0)
            },
            0.0,
        );
        let mut u = usage("g", 500.0, 200.0);
        u.insert(
            "r".into(),
            TaskUsage {
                cpu: 800.0,
                memory: 300.0,
            },
        );
        // 1500 used on the node: 1300 by tasks, 200 by the system.
        e.observe(1.0, with(1500.0, 600.0), &u);
        let cpu = e.cpu();
        assert_eq!(cpu.system, 200.0);
        assert_eq!(cpu.revocable_used, 800.0);
        // The revocable task's reservation does not shrink the slack: 1200 − 500 − 200.
        assert_eq!(cpu.reserved, 500.0);
        assert_eq!(cpu.revocable, 500.0);
        // Memory: 1000 × 65% − 200 − (600 − 500) = 350.
        assert_eq!(e.memory().revocable, 350.0);
        // Never below zero.
        e.observe(2.0, with(2000.0, 1000.0), &u);
        assert_eq!(e.cpu().revocable, 0.0);
    }

    #[test]
    fn a_task_without_request_or_limit_is_carried_by_its_usage() {
        let mut e = Estimator::new(cfg(0), 0.0);
        e.track("b", TaskResources::default(), 0.0);
        e.observe(1.0, with(300.0, 100.0), &usage("b", 300.0, 100.0));
        assert!(e.task("b").unwrap().0 >= 300.0);
    }

    #[test]
    fn bad_constants_are_refused_with_their_key() {
        let bad = EstimatorConfig {
            cpu_threshold_percent: 120.0,
            ..EstimatorConfig::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("revocable.cpu_threshold_percent = 120"),
            "{err}"
        );
        assert!(EstimatorConfig::default().validate().is_ok());
        let bad = EstimatorConfig {
            window: 0,
            ..EstimatorConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
