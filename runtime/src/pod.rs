//! Pod specs as a kubelet user writes them (JSON or YAML), checked field by field, and the
//! plan they turn into: one [`TaskSpec`] per container, the QoS class and the pod's totals.
//!
//! ```yaml
//! name: web
//! restartPolicy: Always            # Always | OnFailure | Never
//! shareProcessNamespace: false
//! volumes:
//!   - {name: shared, emptyDir: {}}                       # dir under the pod's sandbox
//!   - {name: cache, emptyDir: {medium: Memory, sizeLimit: 64Mi}}   # tmpfs
//!   - {name: conf, hostPath: {path: /etc/app}}
//! initContainers: [...]            # same fields as containers; run in order first
//! containers:
//!   - name: httpd
//!     image: busybox
//!     command: [httpd]             # replaces the image's Entrypoint
//!     args: [-f, -p, "8080"]       # replaces the image's Cmd
//!     env: [{name: A, value: b}]
//!     workingDir: /www
//!     user: "1000:1000"
//!     resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: "1", memory: 128Mi}}
//!     volumeMounts: [{name: shared, mountPath: /www, readOnly: false}]
//!     livenessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 5, failureThreshold: 3}
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::health::{HealthCheck, Probe};
use crate::task::{Resources, TaskSpec, Tmpfs, Volume};

/// A pod spec error naming the field (`containers[1].resources.limits.cpu`).
#[derive(Debug, thiserror::Error)]
#[error("invalid pod spec: {field}: {reason}")]
pub struct PodSpecError {
    /// Field path.
    pub field: String,
    /// Why.
    pub reason: String,
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> PodSpecError {
    PodSpecError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// When the agent restarts a container of the pod that ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Whatever the exit code.
    #[default]
    Always,
    /// On a non-zero exit (or a kill).
    OnFailure,
    /// Never.
    Never,
}

impl RestartPolicy {
    /// Whether an exit with this code is restarted.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit_code != 0,
            Self::Never => false,
        }
    }
}

/// A pod spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    /// Unique name on the node.
    pub name: String,
    /// Host name of the pod's UTS namespace (default: the pod name).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Restart policy of every container.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// One PID namespace for the pod, with Berth's init as PID 1.
    #[serde(default)]
    pub share_process_namespace: bool,
    /// Pod volumes.
    #[serde(default)]
    pub volumes: Vec<PodVolume>,
    /// Run one after another, each to a zero exit, before the containers start.
    #[serde(default)]
    pub init_containers: Vec<PodContainer>,
    /// The containers.
    pub containers: Vec<PodContainer>,
}

/// A pod volume: exactly one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodVolume {
    /// Name the mounts refer to.
    pub name: String,
    /// A fresh dir (or tmpfs with `medium: Memory`) living as long as the pod.
    #[serde(default)]
    pub empty_dir: Option<EmptyDir>,
    /// A host path.
    #[serde(default)]
    pub host_path: Option<HostPath>,
}

/// `emptyDir`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmptyDir {
    /// `Memory` for a tmpfs.
    #[serde(default)]
    pub medium: Option<String>,
    /// tmpfs size.
    #[serde(default)]
    pub size_limit: Option<Quantity>,
}

/// `hostPath`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPath {
    /// Absolute, existing path.
    pub path: PathBuf,
}

/// A quantity as YAML gives it: a number or a string (`100m`, `64Mi`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    /// `1`, `0.5`.
    Number(f64),
    /// `100m`, `1Gi`.
    Text(String),
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodContainer {
    /// Name, unique in the pod.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Replaces the image's Entrypoint.
    #[serde(default)]
    pub command: Vec<String>,
    /// Replaces the image's Cmd.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `uid[:gid]` or `name[:group]`.
    #[serde(default)]
    pub user: Option<String>,
    /// Requests and limits.
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// Pod volumes mounted here.
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
    /// Liveness probe; failing, the container is killed and the restart policy applies.
    #[serde(default)]
    pub liveness_probe: Option<ProbeSpec>,
}

/// `{name, value}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// `resources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRequirements {
    /// What the scheduler and the admission count.
    #[serde(default)]
    pub requests: ResourceList,
    /// Hard caps.
    #[serde(default)]
    pub limits: ResourceList,
}

/// `{cpu, memory}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceList {
    /// CPUs (`500m`, `2`).
    #[serde(default)]
    pub cpu: Option<Quantity>,
    /// Bytes (`64Mi`, `1G`).
    #[serde(default)]
    pub memory: Option<Quantity>,
}

/// `volumeMounts[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMount {
    /// A volume of the pod.
    pub name: String,
    /// Absolute path in the container.
    pub mount_path: PathBuf,
    /// Read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A kubelet probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeSpec {
    /// `{command: [...]}`.
    #[serde(default)]
    pub exec: Option<ExecAction>,
    /// `{path, port}`.
    #[serde(default)]
    pub http_get: Option<HttpGetAction>,
    /// `{port}`.
    #[serde(default)]
    pub tcp_socket: Option<TcpSocketAction>,
    /// Start period.
    #[serde(default)]
    pub initial_delay_seconds: f64,
    /// Interval (default 10).
    #[serde(default)]
    pub period_seconds: Option<f64>,
    /// Timeout (default 1).
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// Failures in a row (default 3).
    #[serde(default)]
    pub failure_threshold: Option<u32>,
}

/// `exec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecAction {
    /// Argument vector.
    pub command: Vec<String>,
}

/// `httpGet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGetAction {
    /// Path (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// Port.
    pub port: u16,
}

/// `tcpSocket`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSocketAction {
    /// Port.
    pub port: u16,
}

/// What makes a container part of a pod: the namespaces it joins and its cgroup parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMember {
    /// Pod id.
    pub pod_id: String,
    /// Pod name.
    pub pod_name: String,
    /// Container name in the pod.
    pub container: String,
    /// Dir with the pod's `net`, `ipc`, `uts` (and `pid`) namespace files.
    pub namespaces: PathBuf,
    /// Join the pod's PID namespace.
    pub share_pid: bool,
    /// The pod's cgroup; the container's is a child of it.
    pub cgroup_parent: PathBuf,
    /// An init container.
    pub init: bool,
    /// Restarts before this instance.
    pub restart_count: u32,
}

/// Quality of service, fixed at admission as the kubelet does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    /// Every container has cpu and memory limits equal to its requests.
    Guaranteed,
    /// Some requests or limits.
    Burstable,
    /// None at all: runs on slack, lowest CPU weight.
    BestEffort,
}

impl QosClass {
    /// The cgroup dir below the agent's root.
    pub fn dir(self) -> &'static str {
        match self {
            Self::Guaranteed => "guaranteed",
            Self::Burstable => "burstable",
            Self::BestEffort => "besteffort",
        }
    }

    /// Class of a single container from Docker options: limits are its requests.
    pub fn of_task(r: &Resources) -> Self {
        if r.cpus.is_some() && r.memory.is_some() {
            Self::Guaranteed
        } else if r.cpus.is_some()
            || r.memory.is_some()
            || r.cpu_shares.is_some()
            || r.memory_reservation.is_some()
        {
            Self::Burstable
        } else {
            Self::BestEffort
        }
    }
}

impl std::fmt::Display for QosClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.dir())
    }
}

/// The checked spec turned into tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct PodPlan {
    /// QoS class.
    pub qos: QosClass,
    /// Init containers, in order (names, tasks without pod membership yet).
    pub init: Vec<(String, TaskSpec)>,
    /// App containers.
    pub containers: Vec<(String, TaskSpec)>,
    /// Summed requests: millicpus and bytes.
    pub requests: (u64, u64),
    /// Pod-wide limits when every app container has one: CPUs and bytes.
    pub limits: (Option<f64>, Option<i64>),
}

/// Parses a spec from JSON or YAML text.
pub fn parse(text: &str) -> Result<PodSpec, PodSpecError> {
    // YAML is a superset of JSON: one parser for both, with its line and column.
    serde_yaml::from_str(text).map_err(|e| bad("spec", e.to_string()))
}

/// CPU quantity → millicpus: `250m`, `0.5`, `2`.
pub fn parse_cpu(field: &str, q: &Quantity) -> Result<u64, PodSpecError> {
    let text = q.to_string();
    let t = text.trim();
    let (num, scale) = match t.strip_suffix('m') {
        Some(n) => (n, 1.0),
        None => (t, 1000.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| bad(field, format!("invalid cpu quantity {text:?} (want 250m, 0.5 or 2)")))?;
    if !v.is_finite() || v <= 0.0 || v * scale > 1e9 {
        return Err(bad(field, format!("cpu quantity {text:?} out of range")));
    }
    Ok(((v * scale).round() as u64).max(1))
}

/// Memory quantity → bytes: `128974848`, `129e6`, `129M`, `123Mi`.
pub fn parse_memory(field: &str, q: &Quantity) -> Result<i64, PodSpecError> {
    let text = q.to_string();
    let t = text.trim();
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (num, scale) = SUFFIXES
        .iter()
        .find_map(|(s, m)| t.strip_suffix(s).map(|n| (n, *m)))
        .unwrap_or((t, 1.0));
    let v: f64 = num.parse().map_err(|_| {
        bad(
            field,
            format!("invalid memory quantity {text:?} (want 64Mi, 1G or bytes)"),
        )
    })?;
    let bytes = v * scale;
    if !bytes.is_finite() || bytes < 4096.0 || bytes >= i64::MAX as f64 {
        return Err(bad(
            field,
            format!("memory quantity {text:?} out of range (at least 4Ki)"),
        ));
    }
    Ok(bytes as i64)
}

fn check_dns_name(field: &str, name: &str) -> Result<(), PodSpecError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("{name:?} must be lowercase letters, digits and '-' (at most 63)"),
        ))
    }
}

/// Requests and limits of one container, defaulted as the kubelet does (a limit without a
/// request requests the limit).
struct Sized {
    cpu_request: Option<u64>,
    cpu_limit: Option<u64>,
    mem_request: Option<i64>,
    mem_limit: Option<i64>,
}

fn sizes(field: &str, r: &ResourceRequirements) -> Result<Sized, PodSpecError> {
    let cpu = |q: &Option<Quantity>, f: &str| {
        q.as_ref()
            .map(|q| parse_cpu(&format!("{field}.{f}.cpu"), q))
            .transpose()
    };
    let mem = |q: &Option<Quantity>, f: &str| {
        q.as_ref()
            .map(|q| parse_memory(&format!("{field}.{f}.memory"), q))
            .transpose()
    };
    let cpu_limit = cpu(&r.limits.cpu, "limits")?;
    let mem_limit = mem(&r.limits.memory, "limits")?;
    let cpu_request = cpu(&r.requests.cpu, "requests")?.or(cpu_limit);
    let mem_request = mem(&r.requests.memory, "requests")?.or(mem_limit);
    if let (Some(req), Some(lim)) = (cpu_request, cpu_limit) {
        if req > lim {
            return Err(bad(
                format!("{field}.requests.cpu"),
                "must not exceed limits.cpu",
            ));
        }
    }
    if let (Some(req), Some(lim)) = (mem_request, mem_limit) {
        if req > lim {
            return Err(bad(
                format!("{field}.requests.memory"),
                "must not exceed limits.memory",
            ));
        }
    }
    Ok(Sized {
        cpu_request,
        cpu_limit,
        mem_request,
        mem_limit,
    })
}

fn probe(field: &str, p: &ProbeSpec) -> Result<HealthCheck, PodSpecError> {
    let probes = [
        p.exec.as_ref().map(|e| Probe::Exec {
            command: e.command.clone(),
        }),
        p.http_get.as_ref().map(|h| Probe::Http {
            port: h.port,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
        }),
        p.tcp_socket.as_ref().map(|t| Probe::Tcp { port: t.port }),
    ];
    let mut set = probes.into_iter().flatten();
    let (Some(probe), None) = (set.next(), set.next()) else {
        return Err(bad(field, "needs exactly one of exec, httpGet, tcpSocket"));
    };
    match &probe {
        Probe::Exec { command } if command.is_empty() => {
            return Err(bad(format!("{field}.exec.command"), "must not be empty"))
        }
        Probe::Http { path, .. } if !path.starts_with('/') => {
            return Err(bad(format!("{field}.httpGet.path"), "must start with /"))
        }
        _ => {}
    }
    let secs = |v: Option<f64>, default: f64, f: &str| -> Result<u64, PodSpecError> {
        let s = v.unwrap_or(default);
        if !s.is_finite() || s <= 0.0 || s > 86400.0 {
            return Err(bad(format!("{field}.{f}"), "must be between 0 and 86400"));
        }
        Ok((s * 1000.0) as u64)
    };
    if !(0.0..=86400.0).contains(&p.initial_delay_seconds) {
        return Err(bad(
            format!("{field}.initialDelaySeconds"),
            "must be between 0 and 86400",
        ));
    }
    Ok(HealthCheck {
        probe,
        interval_ms: secs(p.period_seconds, 10.0, "periodSeconds")?,
        timeout_ms: secs(p.timeout_seconds, 1.0, "timeoutSeconds")?,
        retries: p.failure_threshold.unwrap_or(3).max(1),
        start_period_ms: (p.initial_delay_seconds * 1000.0) as u64,
    })
}

/// Checks every field and builds the plan. `volume_dir` names the host dir of an `emptyDir`.
pub fn plan(
    spec: &PodSpec,
    volume_dir: &dyn Fn(&str) -> PathBuf,
) -> Result<PodPlan, PodSpecError> {
    check_dns_name("name", &spec.name)?;
    if let Some(h) = &spec.hostname {
        check_dns_name("hostname", h)?;
    }
    if spec.containers.is_empty() {
        return Err(bad("containers", "a pod needs at least one container"));
    }
    let mut volumes = BTreeSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let field = format!("volumes[{i}]");
        check_dns_name(&format!("{field}.name"), &v.name)?;
        if !volumes.insert(v.name.as_str()) {
            return Err(bad(
                format!("{field}.name"),
                format!("duplicate volume {:?}", v.name),
            ));
        }
        match (&v.empty_dir, &v.host_path) {
            (Some(e), None) => {
                if let Some(m) = e.medium.as_deref().filter(|m| !m.is_empty()) {
                    if m != "Memory" {
                        return Err(bad(
                            format!("{field}.emptyDir.medium"),
                            format!("{m:?}: want Memory or nothing"),
                        ));
                    }
                }
                if let Some(q) = &e.size_limit {
                    parse_memory(&format!("{field}.emptyDir.sizeLimit"), q)?;
                }
            }
            (None, Some(h)) => {
                if !h.path.is_absolute() || !h.path.exists() {
                    return Err(bad(
                        format!("{field}.hostPath.path"),
                        format!("{} must be an existing absolute path", h.path.display()),
                    ));
                }
            }
            _ => {
                return Err(bad(
                    field,
                    "needs exactly one of emptyDir and hostPath",
                ))
            }
        }
    }

    let mut names = BTreeSet::new();
    let mut sized = Vec::new();
    let mut build = |list: &[PodContainer], kind: &str| -> Result<Vec<(String, TaskSpec)>, PodSpecError> {
        let mut out = Vec::new();
        for (i, c) in list.iter().enumerate() {
            let field = format!("{kind}[{i}]");
            check_dns_name(&format!("{field}.name"), &c.name)?;
            if !names.insert(c.name.clone()) {
                return Err(bad(
                    format!("{field}.name"),
                    format!("duplicate container name {:?}", c.name),
                ));
            }
            if c.image.trim().is_empty() {
                return Err(bad(format!("{field}.image"), "missing image"));
            }
            let s = sizes(&format!("{field}.resources"), &c.resources)?;
            let mut task = TaskSpec {
                image: c.image.clone(),
                name: Some(format!("{}_{}", spec.name, c.name)),
                entrypoint: (!c.command.is_empty()).then(|| c.command.clone()),
                command: c.args.clone(),
                env: c.env.iter().map(|e| format!("{}={}", e.name, e.value)).collect(),
                workdir: c.working_dir.clone(),
                user: c.user.clone(),
                ..TaskSpec::default()
            };
            task.resources = Resources {
                cpus: s.cpu_limit.map(|m| m as f64 / 1000.0),
                // Requests are weights, as the kubelet sets them: 1024 shares per CPU.
                cpu_shares: Some(s.cpu_request.map_or(2, |m| (m * 1024 / 1000).max(2))),
                memory: s.mem_limit,
                memory_reservation: s.mem_request.filter(|_| s.mem_limit.is_some()),
                ..Resources::default()
            };
            for (j, m) in c.volume_mounts.iter().enumerate() {
                let mfield = format!("{field}.volumeMounts[{j}]");
                let Some(v) = spec.volumes.iter().find(|v| v.name == m.name) else {
                    return Err(bad(
                        format!("{mfield}.name"),
                        format!("volume {:?} is not declared in volumes", m.name),
                    ));
                };
                if !m.mount_path.is_absolute() {
                    return Err(bad(format!("{mfield}.mountPath"), "must be absolute"));
                }
                match (&v.empty_dir, &v.host_path) {
                    (Some(e), _) if e.medium.as_deref() == Some("Memory") => {
                        let mut options = vec!["mode=1777".to_string()];
                        if let Some(q) = &e.size_limit {
                            options.push(format!("size={}", parse_memory(&mfield, q)?));
                        }
                        if m.read_only {
                            options.push("ro".into());
                        }
                        task.tmpfs.push(Tmpfs {
                            target: m.mount_path.clone(),
                            options,
                        });
                    }
                    (Some(_), _) => task.volumes.push(Volume {
                        source: volume_dir(&v.name),
                        target: m.mount_path.clone(),
                        read_only: m.read_only,
                    }),
                    (None, Some(h)) => task.volumes.push(Volume {
                        source: h.path.clone(),
                        target: m.mount_path.clone(),
                        read_only: m.read_only,
                    }),
                    (None, None) => {}
                }
            }
            if let Some(p) = &c.liveness_probe {
                task.health = Some(probe(&format!("{field}.livenessProbe"), p)?);
            }
            // emptyDir sources exist only once the sandbox is made; the rest is checked now.
            let mut check = task.clone();
            check.volumes.retain(|v| v.source.exists());
            check
                .validate()
                .map_err(|e| bad(field.clone(), e.to_string()))?;
            sized.push((kind == "containers", s));
            out.push((c.name.clone(), task));
        }
        Ok(out)
    };
    let init = build(&spec.init_containers, "initContainers")?;
    let containers = build(&spec.containers, "containers")?;

    let all_guaranteed = sized.iter().all(|(_, s)| {
        s.cpu_limit.is_some()
            && s.mem_limit.is_some()
            && s.cpu_request == s.cpu_limit
            && s.mem_request == s.mem_limit
    });
    let none = sized.iter().all(|(_, s)| {
        s.cpu_limit.is_none()
            && s.mem_limit.is_none()
            && s.cpu_request.is_none()
            && s.mem_request.is_none()
    });
    let qos = if all_guaranteed {
        QosClass::Guaranteed
    } else if none {
        QosClass::BestEffort
    } else {
        QosClass::Burstable
    };
    // The pod needs the larger of its app containers' sum and its biggest init container.
    let total = |pick: &dyn Fn(&Sized) -> u64| -> u64 {
        let apps: u64 = sized.iter().filter(|(a, _)| *a).map(|(_, s)| pick(s)).sum();
        let init = sized.iter().filter(|(a, _)| !*a).map(|(_, s)| pick(s)).max();
        apps.max(init.unwrap_or(0))
    };
    let requests = (
        total(&|s| s.cpu_request.unwrap_or(0)),
        total(&|s| s.mem_request.unwrap_or(0) as u64),
    );
    let apps: Vec<&Sized> = sized.iter().filter(|(a, _)| *a).map(|(_, s)| s).collect();
    let limits = (
        apps.iter()
            .map(|s| s.cpu_limit)
            .sum::<Option<u64>>()
            .map(|m| m.max(total(&|s| s.cpu_limit.unwrap_or(0))) as f64 / 1000.0),
        apps.iter()
            .map(|s| s.mem_limit)
            .sum::<Option<i64>>()
            .map(|b| b.max(total(&|s| s.mem_limit.unwrap_or(0) as u64) as i64)),
    );
    Ok(PodPlan {
        qos,
        init,
        containers,
        requests,
        limits,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn plan_of(yaml: &str) -> Result<PodPlan, PodSpecError> {
        plan(&parse(yaml)?, &|n| PathBuf::from(format!("/pods/x/volumes/{n}")))
    }

    #[test]
    fn quantities() {
        let q = |s: &str| Quantity::Text(s.into());
        assert_eq!(parse_cpu("f", &q("250m")).unwrap(), 250);
        assert_eq!(parse_cpu("f", &Quantity::Number(1.5)).unwrap(), 1500);
        assert!(parse_cpu("f", &q("1.5x")).is_err());
        assert!(parse_cpu("f", &q("-1")).is_err());
        assert_eq!(parse_memory("f", &q("64Mi")).unwrap(), 64 << 20);
        assert_eq!(parse_memory("f", &q("1G")).unwrap(), 1_000_000_000);
        assert_eq!(parse_memory("f", &q("129e6")).unwrap(), 129_000_000);
        assert!(parse_memory("f", &q("12Q")).is_err());
    }

    #[test]
    fn qos_classes() {
        let g = plan_of(
            "name: a\ncontainers:\n- {name: c, image: busybox, resources: {limits: {cpu: 1, memory: 64Mi}}}\n",
        )
        .unwrap();
        assert_eq!(g.qos, QosClass::Guaranteed);
        assert_eq!(g.requests, (1000, 64 << 20));
        assert_eq!(g.limits, (Some(1.0), Some(64 << 20)));
        let b = plan_of(
            "name: a\ncontainers:\n- {name: c, image: busybox, resources: {requests: {cpu: 100m}}}\n- {name: d, image: busybox}\n",
        )
        .unwrap();
        assert_eq!(b.qos, QosClass::Burstable);
        assert_eq!(b.limits, (None, None));
        assert_eq!(b.containers[0].1.resources.cpu_shares, Some(102));
        let e = plan_of("name: a\ncontainers:\n- {name: c, image: busybox}\n").unwrap();
        assert_eq!(e.qos, QosClass::BestEffort);
        assert_eq!(e.containers[0].1.resources.cpu_shares, Some(2));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("name: a\ncontainers:\n- {name: c, image: b}\n- {name: c, image: b}\n", "containers[1].name"),
            ("name: a\ncontainers:\n- {name: c, image: ''}\n", "containers[0].image"),
            ("name: a\ncontainers:\n- {name: c, image: b, resources: {limits: {cpu: 1.5x}}}\n", "containers[0].resources.limits.cpu"),
            ("name: a\ncontainers:\n- {name: c, image: b, volumeMounts: [{name: v, mountPath: /v}]}\n", "containers[0].volumeMounts[0].name"),
            ("name: A\ncontainers:\n- {name: c, image: b}\n", "name"),
            ("name: a\ncontainers: []\n", "containers"),
            ("name: a\ncontainers:\n- {name: c, image: b, livenessProbe: {periodSeconds: 1}}\n", "containers[0].livenessProbe"),
            ("name: a\nbogus: 1\ncontainers: []\n", "spec"),
        ];
        for (yaml, field) in cases {
            let e = plan_of(yaml).unwrap_err();
            assert_eq!(e.field, field, "{yaml}: {e}");
        }
    }

    #[test]
    fn json_and_volumes() {
        let p = plan_of(
            r#"{"name":"a","volumes":[{"name":"s","emptyDir":{}},{"name":"m","emptyDir":{"medium":"Memory","sizeLimit":"1Mi"}}],
               "containers":[{"name":"c","image":"b","command":["sh"],"args":["-c","x"],
               "volumeMounts":[{"name":"s","mountPath":"/s"},{"name":"m","mountPath":"/m","readOnly":true}]}]}"#,
        )
        .unwrap();
        let t = &p.containers[0].1;
        assert_eq!(t.entrypoint, Some(vec!["sh".to_string()]));
        assert_eq!(t.command, vec!["-c", "x"]);
        assert_eq!(t.volumes[0].source, PathBuf::from("/pods/x/volumes/s"));
        assert_eq!(t.tmpfs[0].options, vec!["mode=1777", "size=1048576", "ro"]);
        assert_eq!(t.name.as_deref(), Some("a_c"));
    }
}
