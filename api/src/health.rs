//! Health checks of a container: what to probe and how often, the way Docker's
//! `HEALTHCHECK` and the kubelet's liveness probes describe them. The agent runs them; this
//! module only holds the configuration, the state machine and the parsers.

use serde::{Deserialize, Serialize};

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum Probe {
    /// A command run inside the container; healthy on exit code 0.
    Exec {
        /// Argument vector.
        command: Vec<String>,
    },
    /// An HTTP GET to the container's loopback; healthy on a 2xx or 3xx status.
    Http {
        /// Port.
        port: u16,
        /// Path, starting with `/`.
        path: String,
    },
    /// A TCP connect to the container's loopback.
    Tcp {
        /// Port.
        port: u16,
    },
}

/// A check with its timing (milliseconds), Docker's defaults where unset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What to probe.
    pub probe: Probe,
    /// Time between checks.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// A check taking longer fails.
    #[serde(default = "default_interval")]
    pub timeout_ms: u64,
    /// Consecutive failures that make the container unhealthy.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Failures in this time after start do not count.
    #[serde(default)]
    pub start_period_ms: u64,
}

impl HealthCheck {
    /// Refuses timings that would make the agent busy-loop or never check.
    pub fn validate(&self) -> Result<(), crate::task::TaskError> {
        const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
        for (field, ms, min) in [
            ("--health-interval", self.interval_ms, 1),
            ("--health-timeout", self.timeout_ms, 1),
            ("--health-start-period", self.start_period_ms, 0),
        ] {
            if !(min..=YEAR_MS).contains(&ms) {
                return Err(crate::task::bad(
                    field,
                    &format!("{ms}ms"),
                    format!("must be {min}ms to 365 days"),
                ));
            }
        }
        if self.retries == 0 || self.retries > 1000 {
            return Err(crate::task::bad(
                "--health-retries",
                &self.retries.to_string(),
                "must be 1 to 1000",
            ));
        }
        Ok(())
    }
}

fn default_interval() -> u64 {
    30_000
}

fn default_retries() -> u32 {
    3
}

/// Health as `ps` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No verdict yet (within the start period, or no check passed or failed enough).
    #[default]
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` checks in a row failed.
    Unhealthy,
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        })
    }
}

/// The running state of a check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    /// Current verdict.
    pub status: HealthStatus,
    /// Failures in a row.
    pub failing_streak: u32,
    /// Output or error of the last check (truncated).
    pub last_output: String,
}

impl HealthState {
    /// Records one result; returns the new status when it changed. Failures inside the start
    /// period do not count, a success always does (as Docker).
    pub fn record(
        &mut self,
        ok: bool,
        in_start_period: bool,
        retries: u32,
        output: String,
    ) -> Option<HealthStatus> {
        self.last_output = output.chars().take(512).collect();
        let before = self.status;
        if ok {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else if !in_start_period {
            self.failing_streak += 1;
            if self.failing_streak >= retries.max(1) {
                self.status = HealthStatus::Unhealthy;
            }
        }
        (self.status != before).then_some(self.status)
    }
}

/// The image's own check (Docker's `HEALTHCHECK`, `config.Healthcheck` in the image
/// config: `Test` is `["CMD", args…]`, `["CMD-SHELL", command]` or `["NONE"]`; durations
/// in nanoseconds, 0 meaning the default).
pub fn from_image_config(config: &serde_json::Value) -> Option<HealthCheck> {
    let h = config.get("config")?.get("Healthcheck")?;
    let test: Vec<String> = h
        .get("Test")?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<_>>()?;
    let command = match test.split_first()? {
        (kind, rest) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
        (kind, [cmd]) if kind == "CMD-SHELL" => {
            vec!["/bin/sh".to_string(), "-c".to_string(), cmd.clone()]
        }
        _ => return None,
    };
    let ms = |key: &str, default: u64| {
        h.get(key)
            .and_then(serde_json::Value::as_u64)
            .filter(|ns| *ns > 0)
            .map_or(default, |ns| (ns / 1_000_000).max(1))
    };
    Some(HealthCheck {
        probe: Probe::Exec { command },
        interval_ms: ms("Interval", default_interval()),
        timeout_ms: ms("Timeout", default_interval()),
        retries: h
            .get("Retries")
            .and_then(serde_json::Value::as_u64)
            .filter(|r| *r > 0)
            .map_or(default_retries(), |r| r.min(u64::from(u32::MAX)) as u32),
        start_period_ms: ms("StartPeriod", 0),
    })
}

/// Parses a duration like Docker's and Go's: `300ms`, `10s`, `1m30s`, `2h`; a bare number is
/// seconds.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(secs) = t.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| std::time::Duration::from_secs_f64(secs));
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    (total.is_finite()).then(|| std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("-1"), None);
    }

    #[test]
    fn image_healthcheck() {
        let c = serde_json::json!({"config": {"Healthcheck": {
            "Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 2_000_000_000u64, "Retries": 5}}});
        let h = from_image_config(&c).unwrap_or_else(|| panic!("parsed"));
        assert_eq!(
            h.probe,
            Probe::Exec {
                command: vec!["/bin/sh".into(), "-c".into(), "curl -f localhost".into()]
            }
        );
        assert_eq!((h.interval_ms, h.timeout_ms, h.retries), (2000, 30_000, 5));
        let none = serde_json::json!({"config": {"Healthcheck": {"Test": ["NONE"]}}});
        assert!(from_image_config(&none).is_none());
        let cmd = serde_json::json!({"config": {"Healthcheck": {"Test": ["CMD", "true"]}}});
        assert!(from_image_config(&cmd).is_some());
        assert!(from_image_config(&serde_json::json!({"config": {}})).is_none());
    }

    #[test]
    fn transitions() {
        let mut s = HealthState::default();
        assert_eq!(s.record(false, true, 2, String::new()), None);
        assert_eq!(s.failing_streak, 0);
        assert_eq!(s.record(false, false, 2, String::new()), None);
        assert_eq!(
            s.record(false, false, 2, String::new()),
            Some(HealthStatus::Unhealthy)
        );
        assert_eq!(
            s.record(true, false, 2, String::new()),
            Some(HealthStatus::Healthy)
        );
        assert_eq!(s.record(true, false, 2, String::new()), None);
    }
}
