//! Graded reclaim of the revocable tier, as a pure state machine: fed one round of figures
//! per sample (the same samples as the estimator), it says what the tier's knobs should be
//! and which steps were taken or undone. The agent turns knobs, journals the steps and
//! picks victims.
//!
//! CPU (Koordinator's suppress, without its kill): the revocable tier may use
//!
//! ```text
//! budget = capacity × cpu_suppress% − promised use − system use       (≥ the floor)
//! ```
//!
//! When its use passes the budget it is **throttled**: its CPU cap is set to the budget in
//! the same round, and follows the budget every round after (down at once, up as the
//! promised work frees CPU). The cap goes when the revocable work has used less than its
//! budget, by the hysteresis, for `recover_after`.
//!
//! Memory, one level at a time while the pressure holds for `step_after` at each level:
//!
//! ```text
//!          pressure            held                 held
//! none ─────────────▶ memory-high ─────▶ freeze ─────────▶ revoke (one victim; the tier
//!   ▲                     │  ▲              │               thaws, back to memory-high)
//!   └──calm recover_after─┘  └──calm────────┘
//! ```
//!
//! Pressure: tasks' working set plus system use above `capacity × memory_pressure%`, or the
//! node's memory PSI (`full avg10`) above its threshold. Calm: below the threshold by the
//! hysteresis, and PSI under half its threshold. `memory-high` pushes the tier back toward
//! what is left for it under the threshold. Nothing here ever acts on promised work.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The controller's constants; every one is a key of `[revocable]` in the agent's config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReclaimConfig {
    /// Share of CPU capacity promised plus revocable work may use before the revocable
    /// tier is throttled (percent; Koordinator's CPU suppress threshold, 65).
    pub cpu_suppress_percent: f64,
    /// Share of memory capacity above which memory reclaim starts (percent; 70, as
    /// Koordinator's memory evict threshold).
    pub memory_pressure_percent: f64,
    /// Node memory PSI `full avg10` (percent of time) that counts as pressure too; 0: off.
    pub memory_psi_full: f64,
    /// How far below a threshold counts as calm (percent of capacity).
    pub hysteresis_percent: f64,
    /// How long pressure holds at one memory step before the next.
    pub step_after: Duration,
    /// How long calm holds before one step is undone.
    pub recover_after: Duration,
    /// The least CPU a throttled tier keeps (millicores).
    pub min_cpu: f64,
}

impl Default for ReclaimConfig {
    fn default() -> Self {
        Self {
            cpu_suppress_percent: 65.0,
            memory_pressure_percent: 70.0,
            memory_psi_full: 10.0,
            hysteresis_percent: 5.0,
            step_after: Duration::from_secs(2),
            recover_after: Duration::from_secs(5),
            min_cpu: 10.0,
        }
    }
}

/// A bad constant.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("[revocable] {key} = {value}: {reason}")]
pub struct ReclaimConfigError {
    /// The config key.
    pub key: &'static str,
    /// Its value.
    pub value: String,
    /// Why not.
    pub reason: &'static str,
}

impl ReclaimConfig {
    /// Refuses constants out of range.
    pub fn validate(&self) -> Result<(), ReclaimConfigError> {
        let pct = |key, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 100.0 {
                Ok(())
            } else {
                Err(ReclaimConfigError {
                    key,
                    value: v.to_string(),
                    reason: "must be above 0 and at most 100",
                })
            }
        };
        pct("cpu_suppress_percent", self.cpu_suppress_percent)?;
        pct("memory_pressure_percent", self.memory_pressure_percent)?;
        if !(0.0..=100.0).contains(&self.memory_psi_full) {
            return Err(ReclaimConfigError {
                key: "memory_psi_full",
                value: self.memory_psi_full.to_string(),
                reason: "must be 0 (off) to 100",
            });
        }
        if !(0.0..50.0).contains(&self.hysteresis_percent) {
            return Err(ReclaimConfigError {
                key: "hysteresis_percent",
                value: self.hysteresis_percent.to_string(),
                reason: "must be 0 to below 50",
            });
        }
        if !(self.min_cpu.is_finite() && self.min_cpu >= 1.0) {
            return Err(ReclaimConfigError {
                key: "min_cpu",
                value: self.min_cpu.to_string(),
                reason: "must be at least 1 millicore",
            });
        }
        Ok(())
    }
}

/// One round's figures (millicores and bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Round {
    /// Seconds on a monotonic clock.
    pub now: f64,
    /// CPU capacity.
    pub cpu_capacity: f64,
    /// CPU used by guaranteed, burstable and best-effort tasks.
    pub cpu_promised: f64,
    /// CPU used outside every task.
    pub cpu_system: f64,
    /// CPU used by revocable tasks.
    pub cpu_revocable: f64,
    /// Memory capacity.
    pub memory_capacity: f64,
    /// Working set of promised tasks.
    pub memory_promised: f64,
    /// Memory used outside every task.
    pub memory_system: f64,
    /// Working set of revocable tasks.
    pub memory_revocable: f64,
    /// Node memory PSI `full avg10`, where the kernel has it.
    pub memory_psi_full: Option<f64>,
    /// Revocable tasks running.
    pub revocable_tasks: usize,
}

/// A memory step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryLevel {
    /// No memory reclaim.
    #[default]
    None,
    /// The tier's memory is pushed back (`memory.high` / soft limit).
    MemoryHigh,
    /// The tier is frozen.
    Freeze,
}

/// A step taken or undone, for the events journal and the metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// `throttle`, `memory-high`, `freeze` or `revoke`.
    pub step: &'static str,
    /// Taken (`true`) or undone.
    pub applied: bool,
    /// The knob's new value: millicores of CPU cap, bytes of memory high; 0 otherwise.
    pub target: f64,
    /// What drove it: `cpu`, `memory` or `memory-psi`.
    pub signal: &'static str,
    /// The signal's value (millicores, bytes or percent).
    pub value: f64,
    /// The threshold it was compared with.
    pub threshold: f64,
}

/// What the tier's knobs should be after a round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Knobs {
    /// CPU cap (millicores), if throttled.
    pub cpu_cap: Option<f64>,
    /// Memory high (bytes), at memory-high or above.
    pub memory_high: Option<f64>,
    /// Frozen.
    pub frozen: bool,
}

/// The controller's state.
#[derive(Debug, Clone, Default)]
pub struct Reclaim {
    cfg: ReclaimConfig,
    knobs: Knobs,
    memory: MemoryLevel,
    /// Since when the memory signal has held (pressure at this level, or calm).
    memory_since: f64,
    cpu_calm_since: Option<f64>,
    /// The memory signal of the last round.
    signal: Option<Signal>,
    /// Memory pressure that outlasted every step with no revocable task left: the
    /// agent's eviction (the last resort) may act.
    exhausted: bool,
}

/// A round's outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Steps taken or undone this round, in order.
    pub steps: Vec<Step>,
    /// Kill one revocable task now (the agent picks the cheapest).
    pub revoke: bool,
}

impl Reclaim {
    /// A controller with nothing reclaimed.
    pub fn new(cfg: ReclaimConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    /// The knobs as they should be now.
    pub fn knobs(&self) -> Knobs {
        self.knobs
    }

    /// The memory level.
    pub fn memory_level(&self) -> MemoryLevel {
        self.memory
    }

    /// Memory pressure held past every step with nothing revocable left to take.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// The state in one word for `berth node` and the metrics: `none`, `throttle`,
    /// `memory-high`, `freeze` (the highest step in force).
    pub fn state(&self) -> &'static str {
        match (self.memory, self.knobs.cpu_cap.is_some()) {
            (MemoryLevel::Freeze, _) => "freeze",
            (MemoryLevel::MemoryHigh, _) => "memory-high",
            (MemoryLevel::None, true) => "throttle",
            (MemoryLevel::None, false) => "none",
        }
    }

    /// One round.
    pub fn observe(&mut self, r: Round) -> Outcome {
        let mut out = Outcome::default();
        self.cpu(&r, &mut out);
        self.memory(&r, &mut out);
        out
    }

    fn cpu(&mut self, r: &Round, out: &mut Outcome) {
        let cfg = self.cfg;
        let threshold = r.cpu_capacity * cfg.cpu_suppress_percent / 100.0;
        let budget = (threshold - r.cpu_promised - r.cpu_system).max(cfg.min_cpu);
        let demand = r.cpu_promised + r.cpu_system + r.cpu_revocable;
        match self.knobs.cpu_cap {
            None if r.cpu_revocable > budget => {
                self.knobs.cpu_cap = Some(budget);
                self.cpu_calm_since = None;
                out.steps.push(Step {
                    step: "throttle",
                    applied: true,
                    target: budget,
                    signal: "cpu",
                    value: demand,
                    threshold,
                });
            }
            None => {}
            Some(_) => {
                self.knobs.cpu_cap = Some(budget);
                let slack = r.cpu_capacity * cfg.hysteresis_percent / 100.0;
                if r.cpu_revocable + slack < budget {
                    let since = *self.cpu_calm_since.get_or_insert(r.now);
                    if r.now - since >= cfg.recover_after.as_secs_f64() {
                        self.knobs.cpu_cap = None;
                        self.cpu_calm_since = None;
                        out.steps.push(Step {
                            step: "throttle",
                            applied: false,
                            target: 0.0,
                            signal: "cpu",
                            value: demand,
                            threshold,
                        });
                    }
                } else {
                    self.cpu_calm_since = None;
                }
            }
        }
    }

    fn memory(&mut self, r: &Round, out: &mut Outcome) {
        let cfg = self.cfg;
        let threshold = r.memory_capacity * cfg.memory_pressure_percent / 100.0;
        let calm_line = threshold - r.memory_capacity * cfg.hysteresis_percent / 100.0;
        let used = r.memory_promised + r.memory_system + r.memory_revocable;
        let psi = r.memory_psi_full.unwrap_or(0.0);
        let psi_on = cfg.memory_psi_full > 0.0;
        let (signal, value, limit) = if used > threshold {
            (Signal::Pressure, used, threshold)
        } else if psi_on && psi > cfg.memory_psi_full {
            (Signal::Pressure, psi, cfg.memory_psi_full)
        } else if used < calm_line && (!psi_on || psi < cfg.memory_psi_full / 2.0) {
            (Signal::Calm, used, threshold)
        } else {
            (Signal::Between, used, threshold)
        };
        let source = if used <= threshold && signal == Signal::Pressure {
            "memory-psi"
        } else {
            "memory"
        };
        // The time a signal has held restarts when it changes, and at every step.
        if self.signal != Some(signal) {
            self.signal = Some(signal);
            self.memory_since = r.now;
        }
        // What the tier may keep below the calm line.
        let room = (calm_line - r.memory_promised - r.memory_system).max(0.0);
        let held = |since: f64, d: Duration| r.now - since >= d.as_secs_f64();
        let step = |step, applied, target| Step {
            step,
            applied,
            target,
            signal: source,
            value,
            threshold: limit,
        };
        self.exhausted = signal == Signal::Pressure && r.revocable_tasks == 0;
        if self.memory != MemoryLevel::None {
            self.knobs.memory_high = Some(room);
        }
        let next = match (self.memory, signal) {
            (MemoryLevel::None, Signal::Pressure) if r.revocable_tasks > 0 => {
                self.knobs.memory_high = Some(room);
                out.steps.push(step("memory-high", true, room));
                MemoryLevel::MemoryHigh
            }
            (MemoryLevel::MemoryHigh, Signal::Pressure)
                if r.revocable_tasks > 0 && held(self.memory_since, cfg.step_after) =>
            {
                self.knobs.frozen = true;
                out.steps.push(step("freeze", true, 0.0));
                MemoryLevel::Freeze
            }
            (MemoryLevel::Freeze, Signal::Pressure)
                if r.revocable_tasks > 0 && held(self.memory_since, cfg.step_after) =>
            {
                // One victim goes; what is left thaws and is watched again.
                out.revoke = true;
                out.steps.push(step("revoke", true, 0.0));
                self.knobs.frozen = false;
                MemoryLevel::MemoryHigh
            }
            (MemoryLevel::Freeze, Signal::Calm) if held(self.memory_since, cfg.recover_after) => {
                self.knobs.frozen = false;
                out.steps.push(step("freeze", false, 0.0));
                MemoryLevel::MemoryHigh
            }
            (MemoryLevel::MemoryHigh, Signal::Calm)
                if held(self.memory_since, cfg.recover_after) =>
            {
                self.knobs.memory_high = None;
                out.steps.push(step("memory-high", false, 0.0));
                MemoryLevel::None
            }
            (level, _) => level,
        };
        if next != self.memory {
            self.memory = next;
            self.memory_since = r.now;
        }
    }
}

/// The memory signal of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// Above the threshold (or PSI above its own).
    Pressure,
    /// Below it by the hysteresis.
    Calm,
    /// Neither: the current step holds.
    Between,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::float_cmp)]
    use super::*;

    const GIB: f64 = (1u64 << 30) as f64;

    fn round(now: f64) -> Round {
        Round {
            now,
            cpu_capacity: 2000.0,
            memory_capacity: GIB,
            revocable_tasks: 1,
            ..Round::default()
        }
    }

    #[test]
    fn defaults_validate_and_bad_constants_are_refused() {
        assert!(ReclaimConfig::default().validate().is_ok());
        let bad = ReclaimConfig {
            cpu_suppress_percent: 120.0,
            ..ReclaimConfig::default()
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.key, "cpu_suppress_percent");
        assert!(e.to_string().contains("at most 100"), "{e}");
        let bad = ReclaimConfig {
            hysteresis_percent: -1.0,
            ..ReclaimConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn a_cpu_hog_is_throttled_in_the_round_promised_work_rises_and_freed_after_calm() {
        let mut c = Reclaim::new(ReclaimConfig::default());
        // Revocable alone at one CPU: under 65% of 2 CPUs, nothing.
        let out = c.observe(Round {
            cpu_revocable: 1000.0,
            ..round(0.0)
        });
        assert!(out.steps.is_empty());
        assert_eq!(c.state(), "none");
        // A guaranteed hog takes a CPU: budget 1300 - 1000 = 300 < 1000 → throttle now.
        let out = c.observe(Round {
            cpu_revocable: 1000.0,
            cpu_promised: 1000.0,
            ..round(1.0)
        });
        assert_eq!(out.steps.len(), 1);
        assert_eq!(out.steps[0].step, "throttle");
        assert!(out.steps[0].applied);
        assert_eq!(out.steps[0].target, 300.0);
        assert_eq!(c.knobs().cpu_cap, Some(300.0));
        assert_eq!(c.state(), "throttle");
        // The hog stops: the cap follows the budget up at once ...
        let out = c.observe(Round {
            cpu_revocable: 300.0,
            ..round(2.0)
        });
        assert!(out.steps.is_empty());
        assert_eq!(c.knobs().cpu_cap, Some(1300.0));
        // ... and goes once the tier stayed under it by the hysteresis for recover_after.
        for t in 3..=6 {
            let out = c.observe(Round {
                cpu_revocable: 1000.0,
                ..round(t as f64)
            });
            assert!(out.steps.is_empty(), "t={t}");
        }
        let out = c.observe(Round {
            cpu_revocable: 1000.0,
            ..round(7.0)
        });
        assert_eq!(out.steps.len(), 1);
        assert!(!out.steps[0].applied);
        assert_eq!(c.knobs().cpu_cap, None);
    }

    #[test]
    fn memory_pressure_goes_through_every_step_in_order_and_back() {
        let cfg = ReclaimConfig::default();
        let mut c = Reclaim::new(cfg);
        let pressed = |now| Round {
            memory_promised: 0.5 * GIB,
            memory_revocable: 0.4 * GIB,
            ..round(now)
        };
        let mut seen = Vec::new();
        let mut revoked_at = None;
        for t in 0..8 {
            let out = c.observe(pressed(t as f64));
            for s in &out.steps {
                seen.push((s.step, s.applied));
            }
            if out.revoke && revoked_at.is_none() {
                revoked_at = Some(t);
            }
        }
        assert_eq!(
            seen[..3],
            [("memory-high", true), ("freeze", true), ("revoke", true)]
        );
        // memory-high at 0, freeze 2 s later, revoke 2 s after that.
        assert_eq!(revoked_at, Some(4));
        // memory.high leaves the tier what is under the calm line beside promised work.
        let room = GIB * 0.65 - 0.5 * GIB;
        assert!((c.knobs().memory_high.unwrap() - room).abs() < 1.0);
        // The victim went: calm. Thawed already; memory-high undone after recover_after.
        let calm = |now| Round {
            memory_promised: 0.5 * GIB,
            revocable_tasks: 0,
            ..round(now)
        };
        let mut undone = Vec::new();
        for t in 8..20 {
            for s in c.observe(calm(t as f64)).steps {
                undone.push((s.step, s.applied));
            }
        }
        assert!(!c.knobs().frozen);
        assert_eq!(c.knobs().memory_high, None);
        assert!(undone.contains(&("memory-high", false)), "{undone:?}");
        assert_eq!(c.state(), "none");
    }

    #[test]
    fn a_frozen_tier_thaws_when_the_pressure_goes_before_anything_is_revoked() {
        let mut c = Reclaim::new(ReclaimConfig::default());
        let pressed = |now| Round {
            memory_promised: 0.5 * GIB,
            memory_revocable: 0.4 * GIB,
            ..round(now)
        };
        for t in 0..3 {
            assert!(!c.observe(pressed(t as f64)).revoke);
        }
        assert_eq!(c.state(), "freeze");
        assert!(c.knobs().frozen);
        let mut steps = Vec::new();
        for t in 3..15 {
            let out = c.observe(Round {
                memory_promised: 0.3 * GIB,
                memory_revocable: 0.1 * GIB,
                ..round(t as f64)
            });
            assert!(!out.revoke);
            steps.extend(out.steps.into_iter().map(|s| (s.step, s.applied)));
        }
        assert_eq!(steps, [("freeze", false), ("memory-high", false)]);
        assert_eq!(c.knobs(), Knobs::default());
    }

    #[test]
    fn pressure_with_nothing_revocable_is_left_to_eviction() {
        let mut c = Reclaim::new(ReclaimConfig::default());
        let out = c.observe(Round {
            memory_promised: 0.9 * GIB,
            revocable_tasks: 0,
            ..round(0.0)
        });
        assert!(out.steps.is_empty());
        assert!(c.exhausted());
        // PSI alone is pressure too.
        let mut c = Reclaim::new(ReclaimConfig::default());
        let out = c.observe(Round {
            memory_psi_full: Some(30.0),
            ..round(0.0)
        });
        assert_eq!(out.steps[0].signal, "memory-psi");
        assert_eq!(out.steps[0].value, 30.0);
    }
}
