//! The cluster API of `berth master` (HTTPS, JSON, `/v1/cluster/…`, docs/cluster.md): an
//! agent joins with a token, registers its node, and heartbeats its usage and the status of
//! the pods the master assigned to it; each answer carries the node's desired set when it
//! changed. Operators submit jobs (a pod template, a count, a QoS tier, label constraints
//! and a placement strategy) and read nodes, instances and events.
//!
//! Pods the master assigns carry two labels ([`JOB_LABEL`], [`INSTANCE_LABEL`]); an agent
//! reconciles only pods with an instance label, so pods started locally are never touched.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pod::{bad, PodSpec, PodSpecError};

/// Label naming the job of a pod the master assigned.
pub const JOB_LABEL: &str = "berth.io/job";
/// Label naming the instance (job, index, incarnation) of a pod the master assigned.
pub const INSTANCE_LABEL: &str = "berth.io/instance";

/// `POST /v1/cluster/join` (no client certificate; the token authenticates).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The cluster's join token.
    pub token: String,
    /// The node's name, unique in the cluster.
    pub node_name: String,
}

/// The node's credential: a client certificate (CN `node:<name>`) and its key, PEM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// Echoes the request.
    pub node_name: String,
    /// Certificate, signed by the cluster CA.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// CPU and memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    /// Thousandths of a CPU.
    pub millicpu: u64,
    /// Bytes.
    pub memory: u64,
}

impl Amount {
    /// Both resources, summed.
    pub fn plus(self, o: Amount) -> Amount {
        Amount {
            millicpu: self.millicpu + o.millicpu,
            memory: self.memory + o.memory,
        }
    }

    /// Both resources, never below zero.
    pub fn minus(self, o: Amount) -> Amount {
        Amount {
            millicpu: self.millicpu.saturating_sub(o.millicpu),
            memory: self.memory.saturating_sub(o.memory),
        }
    }

    /// Whether `need` fits in this.
    pub fn holds(self, need: Amount) -> bool {
        need.millicpu <= self.millicpu && need.memory <= self.memory
    }
}

/// `POST /v1/cluster/nodes/{name}/register`: who the node is and what it has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Node name (the one its certificate names).
    pub node_name: String,
    /// Host name of the machine.
    pub hostname: String,
    /// `--node-label k=v`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Machine (or declared) capacity.
    pub capacity: Amount,
    /// Capacity − system reserve.
    pub allocatable: Amount,
    /// `uname -r`.
    #[serde(default)]
    pub kernel: String,
    /// 1 or 2.
    #[serde(default)]
    pub cgroup_version: u8,
    /// The agent's version.
    #[serde(default)]
    pub agent_version: String,
}

/// The usage part of a heartbeat (`berth node`'s figures).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// Requests of guaranteed and burstable work on the node.
    pub allocated: Amount,
    /// Requests of revocable work on the node.
    #[serde(default)]
    pub allocated_revocable: Amount,
    /// Measured use (smoothed).
    #[serde(default)]
    pub used: Amount,
    /// The revocable estimate minus what revocable work holds.
    #[serde(default)]
    pub revocable_free: Amount,
    /// PSI `some avg10` of CPU and memory, percent, where the kernel has it.
    #[serde(default)]
    pub pressure: Option<(f64, f64)>,
}

/// Where an instance of a job is in its life, as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Not placed: no node fits (the reason says why).
    Pending,
    /// Assigned to a node that has not reported it yet.
    Assigned,
    /// Reported starting or running.
    Running,
    /// Its pod ended and will not restart.
    Succeeded,
    /// Its pod failed and will not restart.
    Failed,
}

/// A pod's status as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportedState {
    /// Starting or running.
    Running,
    /// Ended, will not restart.
    Succeeded,
    /// Failed, will not restart.
    Failed,
    /// Taken back by the node's reclaim (a revocable pod): to be placed again.
    Revoked,
    /// The agent refused it (admission): to be placed elsewhere.
    Refused,
}

/// One assigned pod in a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodReport {
    /// [`INSTANCE_LABEL`] value.
    pub instance: String,
    /// Its state.
    pub state: ReportedState,
    /// Why (a refusal's reason, a failure's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /v1/cluster/nodes/{name}/heartbeat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Generation of the desired set the agent holds (0: none).
    pub generation: u64,
    /// Usage.
    pub usage: UsageReport,
    /// Every pod with an instance label on the node.
    pub pods: Vec<PodReport>,
    /// The agent accepts an answer held this long (milliseconds) when its desired set is
    /// current: the master answers as soon as the set changes, or when the time is up, so
    /// a change reaches the node at once with one request in flight per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// A pod the node should run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// [`INSTANCE_LABEL`] value.
    pub instance: String,
    /// The pod (name `<job>-<index>`, labels set).
    pub pod: PodSpec,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Generation of the node's desired set (increases with every change; never reused,
    /// also across master restarts).
    pub generation: u64,
    /// The whole desired set when `generation` differs from the agent's.
    #[serde(default)]
    pub desired: Option<Vec<Assignment>>,
    /// When to send the next heartbeat, milliseconds (before jitter).
    pub heartbeat_ms: u64,
}

/// How a job's instances are spread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Fill the fullest node that fits (fewest nodes busy).
    #[default]
    Binpack,
    /// Fewest instances of the job per node, then the emptiest node.
    Spread,
}

/// A job: `count` instances of a pod template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The pod template (its `name` names the job).
    pub pod: PodSpec,
    /// Instances wanted.
    pub count: u32,
    /// Nodes must carry every one of these labels.
    #[serde(default)]
    pub constraints: BTreeMap<String, String>,
    /// Placement strategy.
    #[serde(default)]
    pub strategy: Strategy,
}

/// Keys of a job file beside the pod spec's.
const JOB_KEYS: [&str; 4] = ["count", "qos", "constraints", "strategy"];

/// Parses a job file (YAML or JSON): the pod spec's fields plus `count` (default 1),
/// `qos` (`revocable` sets the pod's tier; another value must be the class the pod's
/// resources give, checked by the master), `constraints` (label → value) and `strategy`.
/// Returns the spec and the `qos` asked for.
pub fn parse_job(text: &str) -> Result<(JobSpec, Option<String>), PodSpecError> {
    let value: serde_json::Value =
        yaml_serde::from_str(text).map_err(|e| bad("job", e.to_string()))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(bad("job", "must be a mapping"));
    };
    let mut extra = serde_json::Map::new();
    for k in JOB_KEYS {
        if let Some(v) = map.remove(k) {
            extra.insert(k.to_string(), v);
        }
    }
    let pod: PodSpec = serde_path_to_error::deserialize(serde_json::Value::Object(map))
        .map_err(|e| bad(e.path().to_string(), e.inner().to_string()))?;
    let count = match extra.get("count") {
        None => 1,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| bad("count", format!("{v} is not a count from 1 to 100000")))?,
    };
    let qos = match extra.get("qos") {
        None => None,
        Some(serde_json::Value::String(q)) => {
            if !["guaranteed", "burstable", "besteffort", "revocable"].contains(&q.as_str()) {
                return Err(bad(
                    "qos",
                    format!("{q:?} is not guaranteed, burstable, besteffort or revocable"),
                ));
            }
            Some(q.clone())
        }
        Some(v) => return Err(bad("qos", format!("{v} is not a string"))),
    };
    let constraints = match extra.get("constraints") {
        None => BTreeMap::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| bad("constraints", format!("a map of label to value: {e}")))?,
    };
    let strategy = match extra.get("strategy") {
        None => Strategy::default(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| bad("strategy", format!("{v} is not binpack or spread")))?,
    };
    let mut pod = pod;
    if qos.as_deref() == Some("revocable") {
        pod.revocable = true;
    }
    Ok((
        JobSpec {
            pod,
            count,
            constraints,
            strategy,
        },
        qos,
    ))
}

/// `POST /v1/cluster/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRequest {
    /// The job.
    pub job: JobSpec,
    /// The QoS tier asked for, checked against the pod's resources.
    #[serde(default)]
    pub qos: Option<String>,
}

/// A job as `berth cluster ls` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// Name.
    pub name: String,
    /// Instances wanted.
    pub count: u32,
    /// QoS class of its pods.
    pub qos: String,
    /// Placement strategy.
    pub strategy: Strategy,
    /// Label constraints.
    pub constraints: BTreeMap<String, String>,
    /// RFC 3339.
    pub created: String,
    /// Instances per state.
    pub states: BTreeMap<String, u32>,
    /// The spec.
    pub spec: JobSpec,
}

/// One instance of a job (`berth cluster ps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// Job name.
    pub job: String,
    /// 0-based index.
    pub index: u32,
    /// [`INSTANCE_LABEL`] value.
    pub instance: String,
    /// Placements so far (1 for the first).
    pub incarnation: u32,
    /// Node it is assigned to.
    pub node: Option<String>,
    /// State.
    pub state: InstanceState,
    /// Why it is pending, or how it ended.
    #[serde(default)]
    pub message: Option<String>,
}

/// A node's liveness as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Heartbeating.
    Ready,
    /// Heartbeating, but no new pods (its pods move away).
    Draining,
    /// No heartbeat for longer than the node timeout: its pods were placed elsewhere.
    Lost,
}

/// A node as `berth cluster nodes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterNodeView {
    /// Its registration.
    pub registration: Registration,
    /// Liveness.
    pub state: NodeState,
    /// Milliseconds since its last heartbeat (none since the master started: null).
    pub last_heartbeat_ms: Option<u64>,
    /// Requests of the instances the master assigned to it.
    pub assigned: Amount,
    /// Instances assigned to it.
    pub instances: u32,
    /// Its last usage report.
    pub usage: Option<UsageReport>,
    /// Generation of its desired set.
    pub generation: u64,
}

/// A cluster event (`berth cluster events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterEvent {
    /// Increasing number.
    pub seq: u64,
    /// RFC 3339.
    pub time: String,
    /// `node` or `job` or `instance`.
    pub kind: String,
    /// `registered`, `lost`, `placed`, `pending`, …
    pub action: String,
    /// Node, job or instance name.
    pub subject: String,
    /// Details.
    #[serde(default)]
    pub message: String,
}

/// `admin.json`, written by `berth master init`: what `berth cluster` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminConfig {
    /// Layout version.
    pub version: u32,
    /// `https://HOST:PORT`.
    pub master: String,
    /// The cluster CA, PEM.
    pub ca_pem: String,
    /// The admin's client certificate, PEM.
    pub cert_pem: String,
    /// Its key, PEM.
    pub key_pem: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn job_files_name_their_bad_field() {
        let (job, qos) = parse_job(
            "name: web\ncount: 3\nqos: revocable\nstrategy: spread\nconstraints: {zone: a}\n\
             containers: [{name: c, image: busybox}]\n",
        )
        .unwrap();
        assert_eq!(job.count, 3);
        assert!(job.pod.revocable);
        assert_eq!(qos.as_deref(), Some("revocable"));
        assert_eq!(job.strategy, Strategy::Spread);
        assert_eq!(job.constraints["zone"], "a");
        let e = parse_job("name: w\ncount: 0\ncontainers: []\n").unwrap_err();
        assert_eq!(e.field, "count");
        let e = parse_job("name: w\nstrategy: fast\ncontainers: []\n").unwrap_err();
        assert_eq!(e.field, "strategy");
        let e = parse_job("name: w\ncontainers: [{name: c, image: b, bogus: 1}]\n").unwrap_err();
        assert!(e.field.starts_with("containers[0]"), "{}", e.field);
    }
}

/// One master of `berth cluster status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MasterStatus {
    /// Its name.
    pub name: String,
    /// `https://HOST:PORT`.
    pub url: String,
    /// Whether it leads.
    pub leader: bool,
    /// RFC 3339: since it runs (its registration in the store).
    pub since: String,
}

/// The store behind the masters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// `embedded` (redb, one master) or `etcd`.
    pub kind: String,
    /// etcd's endpoints, or the embedded store's file.
    pub endpoints: Vec<String>,
    /// Key prefix (etcd).
    #[serde(default)]
    pub prefix: String,
    /// Its revision now (null: it did not answer).
    pub revision: Option<u64>,
    /// Why it did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/cluster/status` (`berth cluster status`): served by every master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The master that answered.
    pub answered_by: String,
    /// The leader (null: none elected now).
    pub leader: Option<MasterStatus>,
    /// RFC 3339: since when the leader leads.
    pub leader_since: Option<String>,
    /// Every running master.
    pub masters: Vec<MasterStatus>,
    /// The store.
    pub store: StoreStatus,
}
