//! What a caller asks to run: the task spec carried by the API (`POST /v1/containers`) and
//! stored in `container.json`, with Docker's option names and their parsers and checks.
//!
//! Parsing lives here, not in the CLI, so the agent refuses a bad request from any client
//! with the same message the CLI would print.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A bad task option; `field` names the option as the user typed it.
#[derive(Debug, thiserror::Error)]
#[error("invalid {field} {value:?}: {reason}")]
pub struct TaskError {
    /// Option name, e.g. `--memory`.
    pub field: &'static str,
    /// The rejected value.
    pub value: String,
    /// Why.
    pub reason: String,
}

/// A [`TaskError`] for `field`, quoting at most 80 characters of `value`.
pub fn bad(field: &'static str, value: &str, reason: impl Into<String>) -> TaskError {
    // A message quotes a value, not a megabyte of it.
    let value = match value.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_string(),
    };
    TaskError {
        field,
        value,
        reason: reason.into(),
    }
}

/// The kernel's limit for one argument or environment string (`MAX_ARG_STRLEN`, 32 pages):
/// a longer one fails `execve` with E2BIG.
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

/// The kernel's limit for the whole argument list and environment of `execve`: a quarter of
/// the stack limit the process inherits (at least 128 KiB, at most 6 MiB × 3/4).
pub fn max_arg_bytes() -> usize {
    let stack = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_STACK)
        .map(|(soft, _)| soft)
        .unwrap_or(8 << 20);
    let quarter = usize::try_from(stack / 4).unwrap_or(usize::MAX);
    quarter.clamp(128 << 10, (6 << 20) / 4 * 3)
}

/// What `execve` counts for `strings`: each string with its NUL, and a pointer for each.
pub fn arg_bytes<'a>(strings: impl Iterator<Item = &'a String>) -> usize {
    strings
        .map(|s| s.len() + 1 + std::mem::size_of::<usize>())
        .sum()
}

/// Refuses any string the kernel would refuse in `execve` (E2BIG), naming the option.
fn check_exec_strings(field: &'static str, strings: &[String]) -> Result<(), TaskError> {
    for s in strings {
        if s.len() >= MAX_ARG_STRLEN {
            let key = s.split('=').next().unwrap_or_default();
            return Err(bad(
                field,
                key,
                format!(
                    "{} bytes; the kernel refuses an argument or variable of {MAX_ARG_STRLEN} bytes or more (E2BIG)",
                    s.len()
                ),
            ));
        }
    }
    Ok(())
}

pub use crate::network::{NetworkMode, PublishedPort};

/// Docker's `--restart` of a single container (pods have their own policy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "name")]
pub enum RestartPolicy {
    /// Never (`no`).
    #[default]
    No,
    /// Whatever the exit, unless stopped by the operator.
    Always,
    /// As `always`, and an operator's stop also holds across agent restarts.
    UnlessStopped,
    /// On a non-zero exit, at most `max_retries` times (0: no limit).
    OnFailure {
        /// Limit of restarts.
        #[serde(default)]
        max_retries: u32,
    },
}

impl RestartPolicy {
    /// Whether a container that ended with `exit_code` after `restarts` restarts again.
    pub fn restarts(self, exit_code: i32, restarts: u32, stopped_by_operator: bool) -> bool {
        if stopped_by_operator {
            return false;
        }
        match self {
            Self::No => false,
            Self::Always | Self::UnlessStopped => true,
            Self::OnFailure { max_retries } => {
                exit_code != 0 && (max_retries == 0 || restarts < max_retries)
            }
        }
    }

    fn is_no(&self) -> bool {
        *self == Self::No
    }
}

impl FromStr for RestartPolicy {
    type Err = TaskError;
    fn from_str(s: &str) -> Result<Self, TaskError> {
        let (name, max) = s.split_once(':').map_or((s, None), |(n, m)| (n, Some(m)));
        let policy = match (name, max) {
            ("no", None) => Self::No,
            ("always", None) => Self::Always,
            ("unless-stopped", None) => Self::UnlessStopped,
            ("on-failure", None) => Self::OnFailure { max_retries: 0 },
            ("on-failure", Some(m)) => Self::OnFailure {
                max_retries: m
                    .parse()
                    .map_err(|_| bad("--restart", s, "the retry count must be a number"))?,
            },
            _ => {
                return Err(bad(
                    "--restart",
                    s,
                    "expected no, always, unless-stopped or on-failure[:max-retries]",
                ))
            }
        };
        Ok(policy)
    }
}

/// A bind mount from the host (`-v host:ctr[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Absolute host path; must exist.
    pub source: PathBuf,
    /// Absolute path in the container.
    pub target: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

impl FromStr for Volume {
    type Err = TaskError;
    fn from_str(s: &str) -> Result<Self, TaskError> {
        let parts: Vec<&str> = s.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [src, dst] => (*src, *dst, false),
            [src, dst, "ro"] => (*src, *dst, true),
            [src, dst, "rw"] => (*src, *dst, false),
            [_, _, mode] => return Err(bad("--volume", s, format!("unknown mode {mode:?}"))),
            _ => return Err(bad("--volume", s, "expected HOST:CONTAINER[:ro]")),
        };
        if !source.starts_with('/') || !target.starts_with('/') {
            return Err(bad("--volume", s, "both paths must be absolute"));
        }
        Ok(Volume {
            source: source.into(),
            target: target.into(),
            read_only,
        })
    }
}

/// A tmpfs mount (`--tmpfs /path[:size=64m,mode=1777]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tmpfs {
    /// Absolute path in the container.
    pub target: PathBuf,
    /// Extra mount options (size, mode, ...), comma separated.
    pub options: Vec<String>,
}

impl FromStr for Tmpfs {
    type Err = TaskError;
    fn from_str(s: &str) -> Result<Self, TaskError> {
        let (target, opts) = s.split_once(':').unwrap_or((s, ""));
        if !target.starts_with('/') {
            return Err(bad("--tmpfs", s, "path must be absolute"));
        }
        let options: Vec<String> = opts
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect();
        for o in &options {
            let key = o.split('=').next().unwrap_or_default();
            let allowed = [
                "size",
                "mode",
                "nr_inodes",
                "uid",
                "gid",
                "ro",
                "rw",
                "exec",
                "noexec",
                "suid",
                "nosuid",
                "dev",
                "nodev",
            ];
            if !allowed.contains(&key) {
                return Err(bad("--tmpfs", s, format!("unknown option {key:?}")));
            }
        }
        Ok(Tmpfs {
            target: target.into(),
            options,
        })
    }
}

/// Resource limits; `None` = unlimited / kernel default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// CPUs of quota (`--cpus 1.5`).
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Relative weight, cgroup v1 shares scale (`--cpu-shares`, 2..262144).
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// Hard memory limit in bytes (`-m`).
    #[serde(default)]
    pub memory: Option<i64>,
    /// Soft limit in bytes (`--memory-reservation`; v2: `memory.low`).
    #[serde(default)]
    pub memory_reservation: Option<i64>,
    /// Throttling point in bytes (v2 `memory.high`; v1: soft limit).
    #[serde(default)]
    pub memory_high: Option<i64>,
    /// Maximum number of tasks (`--pids-limit`).
    #[serde(default)]
    pub pids_limit: Option<i64>,
    /// CPUs it may run on (`--cpuset-cpus 0-2,4`), in the kernel's list syntax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
}

/// Everything needed to create one container, beside the image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Image reference as given.
    pub image: String,
    /// `--name`; a generated one if absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Arguments after the image (replace the image's Cmd).
    #[serde(default)]
    pub command: Vec<String>,
    /// `--entrypoint` (replaces the image's Entrypoint; `""` clears it).
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `-e KEY=VALUE` (or `KEY` taken from the caller's environment by the CLI).
    #[serde(default)]
    pub env: Vec<String>,
    /// `-w`.
    #[serde(default)]
    pub workdir: Option<String>,
    /// `-u uid[:gid]|name[:group]`.
    #[serde(default)]
    pub user: Option<String>,
    /// `--hostname`; default: the short container id.
    #[serde(default)]
    pub hostname: Option<String>,
    /// `-v`.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// `--tmpfs`.
    #[serde(default)]
    pub tmpfs: Vec<Tmpfs>,
    /// `--read-only`.
    #[serde(default)]
    pub read_only: bool,
    /// Limits.
    #[serde(default)]
    pub resources: Resources,
    /// `--cap-add` (canonical `CAP_*` names, or `ALL`).
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `--security-opt no-new-privileges`.
    #[serde(default)]
    pub no_new_privileges: bool,
    /// `--security-opt seccomp=unconfined`.
    #[serde(default)]
    pub seccomp_unconfined: bool,
    /// `--network`.
    #[serde(default)]
    pub network: NetworkMode,
    /// Published ports (CNI networks only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PublishedPort>,
    /// `-t`.
    #[serde(default)]
    pub tty: bool,
    /// `-i`: keep stdin open for an attached client.
    #[serde(default)]
    pub stdin: bool,
    /// `--rm`: remove when it exits.
    #[serde(default)]
    pub auto_remove: bool,
    /// Extra annotations (shown by `berth state`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Health check (`--health-*`, a pod's `livenessProbe`; else the image's HEALTHCHECK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::HealthCheck>,
    /// `--restart`.
    #[serde(default, skip_serializing_if = "RestartPolicy::is_no")]
    pub restart: RestartPolicy,
    /// `--no-healthcheck`: ignore the image's HEALTHCHECK.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_healthcheck: bool,
    /// Pod membership; set by the agent for containers of a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<crate::pod::PodMember>,
    /// `--revocable`: runs on the node's measured slack in the revocable tier (lowest CPU
    /// weight), admitted against the revocable estimate, throttled, frozen or revoked when
    /// the promised work needs its resources back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revocable: bool,
    /// `--userns host|auto`; unset: the agent's default (`--userns-default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<crate::userns::UsernsMode>,
    /// `--storage-opt size=`: the budget in bytes of its writable layer, logs and (in a pod)
    /// `emptyDir` volumes (a pod's `ephemeral-storage` limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_size: Option<i64>,
}

/// Parses `12`, `12b`, `64k`, `512m`, `2g`, `1t` (binary units, Docker's grammar, any case)
/// into bytes: Berth's one size grammar for flags and config keys. `Ki`, `Mi`, `Gi`, `Ti`
/// are taken as the same binary units (so a Kubernetes-style `512Mi` means what it says);
/// Kubernetes' decimal quantities are only for pod spec fields (`pod::parse_memory`).
pub fn parse_bytes(field: &'static str, s: &str) -> Result<i64, TaskError> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let t = match t.strip_suffix('i') {
        Some(unit) if unit.ends_with(['k', 'm', 'g', 't']) => unit,
        _ => t,
    };
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| bad(field, s, "expected a size like 512m or 2g"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(bad(field, s, "must be positive"));
    }
    let bytes = value * mult as f64;
    if bytes >= i64::MAX as f64 {
        return Err(bad(field, s, "too large"));
    }
    Ok(bytes as i64)
}

/// Parses `--cpus` (a positive decimal, at most the host's CPU count is not enforced: the
/// kernel accepts any quota, as Docker does only on older versions).
pub fn parse_cpus(s: &str) -> Result<f64, TaskError> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| bad("--cpus", s, "expected a number like 0.5 or 2"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(bad("--cpus", s, "must be greater than 0"));
    }
    if v < 0.01 {
        return Err(bad("--cpus", s, "minimum is 0.01"));
    }
    Ok(v)
}

/// Parses a CPU list in the kernel's syntax (`0-2,4`, as `cpuset.cpus` and Docker's
/// `--cpuset-cpus`) into the set of CPU numbers; `field` names the flag or key.
pub fn parse_cpuset(
    field: &'static str,
    s: &str,
) -> Result<std::collections::BTreeSet<u32>, TaskError> {
    let invalid = || bad(field, s, "expected CPU numbers and ranges like 0-2,4");
    let mut set = std::collections::BTreeSet::new();
    for part in s.trim().split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: u32 = a.trim().parse().map_err(|_| invalid())?;
        let b: u32 = b.trim().parse().map_err(|_| invalid())?;
        if a > b || b >= 4096 {
            return Err(invalid());
        }
        set.extend(a..=b);
    }
    Ok(set)
}

/// The kernel's list syntax of a set of CPUs (`0-2,4`).
pub fn format_cpuset(set: &std::collections::BTreeSet<u32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// Canonical `CAP_*` name of a capability as Docker accepts it (`net_admin`, `CAP_NET_ADMIN`,
/// `ALL`).
pub fn parse_capability(field: &'static str, s: &str) -> Result<String, TaskError> {
    let upper = s.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let name = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    caps::Capability::from_str(&name).map_err(|_| bad(field, s, "unknown capability"))?;
    Ok(name)
}

impl TaskSpec {
    /// Checks every option, the way the agent does before anything is created.
    pub fn validate(&self) -> Result<(), TaskError> {
        if self.image.trim().is_empty() {
            return Err(bad("image", &self.image, "must not be empty"));
        }
        if let Some(name) = &self.name {
            check_name(name)?;
        }
        if self.auto_remove && !self.restart.is_no() {
            return Err(bad(
                "--restart",
                &format!("{:?}", self.restart).to_lowercase(),
                "conflicts with --rm",
            ));
        }
        if !self.publish.is_empty() && self.network.cni().is_none() {
            return Err(bad(
                "--publish",
                &self.publish[0].to_string(),
                format!(
                    "conflicts with --network {}: ports are published on a CNI network",
                    self.network
                ),
            ));
        }
        if let Some(h) = &self.hostname {
            let ok = !h.is_empty()
                && h.len() <= 63
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(bad("--hostname", h, "not a valid host name"));
            }
        }
        for e in &self.env {
            let key = e.split('=').next().unwrap_or_default();
            if key.is_empty() || e.contains('\0') {
                return Err(bad("--env", e, "expected KEY=VALUE"));
            }
        }
        check_exec_strings("--env", &self.env)?;
        check_exec_strings("command", &self.command)?;
        check_exec_strings(
            "--entrypoint",
            self.entrypoint.as_deref().unwrap_or_default(),
        )?;
        let total = arg_bytes(
            self.env
                .iter()
                .chain(&self.command)
                .chain(self.entrypoint.iter().flatten()),
        );
        if total > max_arg_bytes() {
            return Err(bad(
                "--env",
                &format!("{} variables", self.env.len()),
                format!(
                    "command and environment take {total} bytes; the kernel allows {} (E2BIG)",
                    max_arg_bytes()
                ),
            ));
        }
        if let Some(h) = &self.health {
            h.validate()?;
        }
        if let Some(w) = &self.workdir {
            if !w.starts_with('/') {
                return Err(bad("--workdir", w, "must be an absolute path"));
            }
        }
        if let Some(u) = &self.user {
            if u.is_empty() || u.contains('\0') || u.split(':').count() > 2 {
                return Err(bad("--user", u, "expected uid[:gid] or name[:group]"));
            }
        }
        for v in &self.volumes {
            if !v.source.is_absolute() || !v.target.is_absolute() {
                return Err(bad(
                    "--volume",
                    &v.source.display().to_string(),
                    "paths must be absolute",
                ));
            }
            if !v.source.exists() {
                return Err(bad(
                    "--volume",
                    &v.source.display().to_string(),
                    "source does not exist on the host",
                ));
            }
        }
        let r = &self.resources;
        if let Some(c) = r.cpus {
            parse_cpus(&c.to_string())?;
            let host = std::thread::available_parallelism().map_or(1, |n| n.get());
            if c > host as f64 {
                return Err(bad(
                    "--cpus",
                    &c.to_string(),
                    format!("range is 0.01 to {host} (the CPUs available)"),
                ));
            }
        }
        if let Some(s) = r.cpu_shares {
            if !(2..=262_144).contains(&s) {
                return Err(bad("--cpu-shares", &s.to_string(), "must be 2..262144"));
            }
        }
        for (field, v) in [
            ("--memory", r.memory),
            ("--memory-reservation", r.memory_reservation),
            ("memory_high", r.memory_high),
        ] {
            if let Some(v) = v {
                if v < 6 << 20 {
                    return Err(bad(field, &v.to_string(), "minimum is 6m"));
                }
            }
        }
        if let (Some(m), Some(high)) = (r.memory, r.memory_high) {
            if high > m {
                return Err(bad(
                    "memory_high",
                    &high.to_string(),
                    "must not be above --memory",
                ));
            }
        }
        if let (Some(m), Some(res)) = (r.memory, r.memory_reservation) {
            if res > m {
                return Err(bad(
                    "--memory-reservation",
                    &res.to_string(),
                    "must be below --memory",
                ));
            }
        }
        if let Some(c) = &r.cpuset_cpus {
            parse_cpuset("--cpuset-cpus", c)?;
        }
        if let Some(p) = r.pids_limit {
            if p == 0 || p < -1 {
                return Err(bad(
                    "--pids-limit",
                    &p.to_string(),
                    "must be positive (or -1)",
                ));
            }
        }
        for c in &self.cap_add {
            parse_capability("--cap-add", c)?;
        }
        for c in &self.cap_drop {
            parse_capability("--cap-drop", c)?;
        }
        Ok(())
    }
}

/// Container names as Docker allows them: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 bytes.
pub fn check_name(name: &str) -> Result<(), TaskError> {
    if name.len() > 128 {
        return Err(bad(
            "--name",
            name,
            format!("{} characters; at most 128", name.len()),
        ));
    }
    let ok = !name.is_empty()
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(bad("--name", name, "expected [a-zA-Z0-9][a-zA-Z0-9_.-]*"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn published_ports_and_network_modes() {
        let p = |s: &str| PublishedPort::from_str(s).map(|p| p.to_string());
        assert_eq!(p("8080:80").unwrap(), "0.0.0.0:8080->80/tcp");
        assert_eq!(
            p("127.0.0.1:53:5353/UDP").unwrap(),
            "127.0.0.1:53->5353/udp"
        );
        assert_eq!(p("[::1]:8443:443").unwrap(), "::1:8443->443/tcp");
        for bad in [
            "80",
            "0:80",
            "8080:70000",
            "x:80",
            "8080:80/icmp",
            "a.b:1:2",
            "1:2:3:4",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        let m = |s: &str| NetworkMode::from_str(s);
        assert_eq!(m("none").unwrap(), NetworkMode::None);
        assert_eq!(m("host").unwrap(), NetworkMode::Host);
        assert_eq!(m("my-net.1").unwrap(), NetworkMode::Cni("my-net.1".into()));
        assert!(m("-x").is_err() && m("a/b").is_err() && m("").is_err());
        // Stored as plain strings: records written before CNI still read.
        let v: NetworkMode = serde_json::from_str("\"none\"").unwrap();
        assert_eq!(v, NetworkMode::None);
        assert_eq!(
            serde_json::to_string(&NetworkMode::Cni("b".into())).unwrap(),
            "\"b\""
        );
        let mut t = TaskSpec {
            image: "x".into(),
            publish: vec![PublishedPort::from_str("1:2").unwrap()],
            ..TaskSpec::default()
        };
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("conflicts with --network none"), "{e}");
        t.network = NetworkMode::Cni("berth".into());
        t.validate().unwrap();
    }

    #[test]
    fn restart_policies() {
        let p = |s: &str| RestartPolicy::from_str(s);
        assert_eq!(
            p("on-failure:3").ok(),
            Some(RestartPolicy::OnFailure { max_retries: 3 })
        );
        assert!(p("sometimes").is_err() && p("on-failure:x").is_err() && p("always:2").is_err());
        let f = RestartPolicy::OnFailure { max_retries: 2 };
        assert!(f.restarts(1, 1, false) && !f.restarts(1, 2, false) && !f.restarts(0, 0, false));
        assert!(RestartPolicy::Always.restarts(0, 99, false));
        assert!(!RestartPolicy::Always.restarts(1, 0, true));
        assert!(!RestartPolicy::No.restarts(1, 0, false));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("-m", "512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("-m", "2G").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("-m", "1.5k").unwrap(), 1536);
        assert_eq!(parse_bytes("-m", "4096").unwrap(), 4096);
        assert!(parse_bytes("-m", "12x").is_err());
        assert!(parse_bytes("-m", "-1m").is_err());
        assert!(parse_bytes("-m", "").is_err());
        assert_eq!(parse_bytes("-m", "512Mi").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("-m", "1GiB").unwrap(), 1 << 30);
        assert!(parse_bytes("-m", "1i").is_err());
    }

    #[test]
    fn cpus_and_caps() {
        assert_eq!(parse_cpus("1.5").unwrap(), 1.5);
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("nan").is_err());
        assert_eq!(parse_capability("c", "net_admin").unwrap(), "CAP_NET_ADMIN");
        assert_eq!(parse_capability("c", "CAP_CHOWN").unwrap(), "CAP_CHOWN");
        assert!(parse_capability("c", "CAP_FLY").is_err());
    }

    #[test]
    fn volumes_and_tmpfs() {
        let v: Volume = "/a:/b:ro".parse().unwrap();
        assert!(v.read_only);
        assert!("a:/b".parse::<Volume>().is_err());
        assert!("/a:/b:xx".parse::<Volume>().is_err());
        let t: Tmpfs = "/run:size=64m,mode=1777".parse().unwrap();
        assert_eq!(t.options, ["size=64m", "mode=1777"]);
        assert!("/run:bogus=1".parse::<Tmpfs>().is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let mut t = TaskSpec {
            image: "busybox".into(),
            ..Default::default()
        };
        t.validate().unwrap();
        t.volumes.push(Volume {
            source: "/nonexistent/berth".into(),
            target: "/x".into(),
            read_only: false,
        });
        assert!(t.validate().unwrap_err().to_string().contains("--volume"));
        t.volumes.clear();
        t.name = Some("-bad".into());
        assert!(t.validate().unwrap_err().to_string().contains("--name"));
    }
}
