//! The master's state, owned by one `Cluster` behind a lock: nodes (registration from the
//! store, liveness and the last report in memory), jobs and their instances (placements in
//! the store, reported states in memory: agents report them again after a master restart).
//! Every change that must survive a restart is committed to the store before it is
//! answered or acted on.
//!
//! Records (JSON, `"version": 1`): `nodes/<name>` → [`NodeRecord`], `jobs/<name>` →
//! [`JobRecord`], `placements/<job>/<index>` → [`PlacementRecord`], `identities/<fp>` →
//! [`Identity`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use berth_api::cluster::{
    Amount, Assignment, ClusterEvent, ClusterNodeView, Heartbeat, HeartbeatReply, InstanceState,
    InstanceView, JobSpec, JobView, NodeState, Registration, ReportedState, UsageReport,
    INSTANCE_LABEL, JOB_LABEL,
};
use berth_api::pod::RestartPolicy;
use serde::{Deserialize, Serialize};

use super::placement::{self, Candidate, Need};
use super::store::{Store, Write};
use crate::agent::error::ApiError;

/// Layout version of every record.
const VERSION: u32 = 1;
/// Events kept for `cluster events`.
const EVENTS_KEPT: usize = 2000;

/// Who a client certificate is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Identity {
    /// `admin.json`'s certificate: every request.
    Admin,
    /// A node's certificate: its own registration, heartbeats and desired set.
    Node(String),
}

/// `nodes/<name>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Layout version.
    pub version: u32,
    /// As registered.
    pub registration: Registration,
    /// `drain`ed: no new pods.
    #[serde(default)]
    pub draining: bool,
}

/// `jobs/<name>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// Layout version.
    pub version: u32,
    /// The job.
    pub spec: JobSpec,
    /// Its pods' QoS class.
    pub qos: String,
    /// Summed requests of one pod.
    pub requests: Amount,
    /// Host ports (protocol, port) one pod publishes.
    #[serde(default)]
    pub host_ports: Vec<(String, u16)>,
    /// RFC 3339.
    pub created: String,
}

/// `placements/<job>/<index>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlacementRecord {
    /// Layout version.
    pub version: u32,
    /// Placements so far.
    pub incarnation: u32,
    /// Its node (none: pending).
    pub node: Option<String>,
}

/// Timing of heartbeats and loss.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A node without a heartbeat for this long is lost.
    pub node_timeout: Duration,
    /// Shortest heartbeat period.
    pub heartbeat_floor: Duration,
    /// Heartbeats per second the master aims at in total (the period grows with the
    /// number of nodes, Nomad's rule).
    pub heartbeats_per_second: f64,
}

impl Timing {
    fn period(&self, nodes: usize) -> Duration {
        let spread = Duration::from_secs_f64(nodes as f64 / self.heartbeats_per_second.max(1.0));
        spread
            .max(self.heartbeat_floor)
            // Never so long that a live node looks lost.
            .min(self.node_timeout / 3)
    }
}

struct Node {
    record: NodeRecord,
    revision: u64,
    last_seen: Instant,
    heard: bool,
    lost: bool,
    usage: Option<UsageReport>,
    generation: u64,
    /// The generation, for heartbeats held until it changes.
    watch: tokio::sync::watch::Sender<u64>,
}

struct Job {
    record: JobRecord,
}

struct Instance {
    incarnation: u32,
    node: Option<String>,
    state: InstanceState,
    message: Option<String>,
    /// Nodes that refused this instance.
    excluded: Vec<String>,
}

fn uid(job: &str, index: u32, incarnation: u32) -> String {
    format!("{job}.{index}.{incarnation}")
}

/// The cluster.
pub struct Cluster {
    store: Arc<dyn Store>,
    timing: Timing,
    nodes: BTreeMap<String, Node>,
    jobs: BTreeMap<String, Job>,
    instances: BTreeMap<(String, u32), Instance>,
    /// Instances per node: a heartbeat's desired set without a scan of every instance.
    by_node: HashMap<String, std::collections::BTreeSet<(String, u32)>>,
    identities: HashMap<String, Identity>,
    events: VecDeque<ClusterEvent>,
    seq: u64,
    /// New work waits for placement (a job, a node, a move): placed at once.
    pending: bool,
    /// Instances no node could take at the last placement: tried again on the clock.
    unplaced: usize,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.nodes.len())
            .field("jobs", &self.jobs.len())
            .field("instances", &self.instances.len())
            .finish()
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn placement_key(job: &str, index: u32) -> String {
    format!("placements/{job}/{index:06}")
}

impl Cluster {
    /// Loads everything from `store`. Nodes get a full node timeout to report again.
    pub fn load(store: Arc<dyn Store>, timing: Timing) -> Result<Self> {
        let revision = store.revision()?;
        let now = Instant::now();
        let mut c = Cluster {
            store: store.clone(),
            timing,
            nodes: BTreeMap::new(),
            jobs: BTreeMap::new(),
            instances: BTreeMap::new(),
            by_node: HashMap::new(),
            identities: HashMap::new(),
            events: VecDeque::new(),
            seq: 0,
            pending: false,
            unplaced: 0,
        };
        for e in store.list("identities/")? {
            let fp = e.key.trim_start_matches("identities/").to_string();
            c.identities.insert(fp, serde_json::from_slice(&e.value)?);
        }
        for e in store.list("nodes/")? {
            let record: NodeRecord = serde_json::from_slice(&e.value)?;
            let name = record.registration.node_name.clone();
            c.nodes.insert(
                name,
                Node {
                    record,
                    revision: e.revision,
                    last_seen: now,
                    heard: false,
                    lost: false,
                    usage: None,
                    generation: revision,
                    watch: tokio::sync::watch::Sender::new(revision),
                },
            );
        }
        for e in store.list("jobs/")? {
            let record: JobRecord = serde_json::from_slice(&e.value)?;
            let name = record.spec.pod.name.clone();
            for index in 0..record.spec.count {
                c.instances.insert(
                    (name.clone(), index),
                    Instance {
                        incarnation: 1,
                        node: None,
                        state: InstanceState::Pending,
                        message: None,
                        excluded: Vec::new(),
                    },
                );
            }
            c.jobs.insert(name, Job { record });
        }
        for e in store.list("placements/")? {
            let p: PlacementRecord = serde_json::from_slice(&e.value)?;
            let mut parts = e.key.trim_start_matches("placements/").rsplitn(2, '/');
            let (Some(index), Some(job)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(index) = index.parse::<u32>() else {
                continue;
            };
            if let Some(i) = c.instances.get_mut(&(job.to_string(), index)) {
                i.incarnation = p.incarnation;
                i.state = if p.node.is_some() {
                    InstanceState::Assigned
                } else {
                    InstanceState::Pending
                };
                if let Some(n) = &p.node {
                    c.by_node
                        .entry(n.clone())
                        .or_default()
                        .insert((job.to_string(), index));
                }
                i.node = p.node;
            }
        }
        c.pending = c.instances.values().any(|i| i.node.is_none());
        Ok(c)
    }

    /// Who a certificate (by fingerprint) is.
    pub fn identity(&self, fingerprint: &str) -> Option<Identity> {
        self.identities.get(fingerprint).cloned()
    }

    /// Whether new work waits for placement.
    pub fn has_pending(&self) -> bool {
        self.pending
    }

    /// Whether placement should run: new work, or (on the clock) instances left unplaced
    /// whose nodes' figures may have changed since.
    pub fn needs_placement(&self, clock: bool) -> bool {
        self.pending || (clock && self.unplaced > 0)
    }

    fn event(&mut self, kind: &str, action: &str, subject: &str, message: impl Into<String>) {
        self.seq += 1;
        let e = ClusterEvent {
            seq: self.seq,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            kind: kind.into(),
            action: action.into(),
            subject: subject.into(),
            message: message.into(),
        };
        tracing::info!(kind, action, subject, message = %e.message, "cluster event");
        self.events.push_back(e);
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }

    fn commit(&self, expect: &[(String, u64)], writes: Vec<Write>) -> Result<u64, ApiError> {
        self.store.commit(expect, writes).map_err(|e| {
            if let Some(c) = e.downcast_ref::<super::store::Conflict>() {
                ApiError::conflict(c.to_string())
            } else {
                ApiError::internal(format!("the store: {e:#}"))
            }
        })
    }

    /// Records who a newly issued certificate is; earlier certificates of the same node
    /// stop working.
    pub fn add_identity(&mut self, fingerprint: &str, who: Identity) -> Result<(), ApiError> {
        let stale: Vec<String> = self
            .identities
            .iter()
            .filter(|(_, w)| **w == who && who != Identity::Admin)
            .map(|(f, _)| f.clone())
            .collect();
        let mut writes: Vec<Write> = stale
            .iter()
            .map(|f| Write::Delete(format!("identities/{f}")))
            .collect();
        writes.push(Write::Put(format!("identities/{fingerprint}"), json(&who)));
        self.commit(&[], writes)?;
        for f in stale {
            self.identities.remove(&f);
        }
        if let Identity::Node(n) = &who {
            self.event("node", "joined", n, "certificate issued");
        }
        self.identities.insert(fingerprint.to_string(), who);
        Ok(())
    }

    /// A node registers (again): its record is stored, it is ready.
    pub fn register(&mut self, reg: Registration) -> Result<(), ApiError> {
        let name = reg.node_name.clone();
        let (expect, draining) = match self.nodes.get(&name) {
            Some(n) => (n.revision, n.record.draining),
            None => (0, false),
        };
        let record = NodeRecord {
            version: VERSION,
            registration: reg,
            draining,
        };
        let revision = self.commit(
            &[(format!("nodes/{name}"), expect)],
            vec![Write::Put(format!("nodes/{name}"), json(&record))],
        )?;
        let known = self.nodes.contains_key(&name);
        let returned = self.nodes.get(&name).is_some_and(|n| n.lost);
        let n = self.nodes.entry(name.clone()).or_insert_with(|| Node {
            record: record.clone(),
            revision,
            last_seen: Instant::now(),
            heard: true,
            lost: false,
            usage: None,
            generation: revision,
            watch: tokio::sync::watch::Sender::new(revision),
        });
        n.record = record;
        n.revision = revision;
        n.last_seen = Instant::now();
        n.heard = true;
        n.lost = false;
        let action = match (known, returned) {
            (_, true) => "returned",
            (true, false) => "re-registered",
            (false, false) => "registered",
        };
        self.event("node", action, &name, "");
        self.pending = true;
        Ok(())
    }

    /// A heartbeat: liveness, usage, the states of its pods; answers the desired set when
    /// the node's generation differs.
    pub fn heartbeat(&mut self, name: &str, hb: Heartbeat) -> Result<HeartbeatReply, ApiError> {
        let Some(n) = self.nodes.get_mut(name) else {
            return Err(ApiError::not_found(format!(
                "node {name} is not registered"
            )));
        };
        n.last_seen = Instant::now();
        n.heard = true;
        n.usage = Some(hb.usage);
        let returned = std::mem::replace(&mut n.lost, false);
        if returned {
            self.event(
                "node",
                "returned",
                name,
                "heartbeats again; stale pods are stopped",
            );
            self.pending = true;
        }
        let mut moved = Vec::new();
        for r in hb.pods {
            let Some((key, inst)) = self.find(&r.instance) else {
                continue;
            };
            if inst.node.as_deref() != Some(name) {
                continue;
            }
            let new = match r.state {
                ReportedState::Running => InstanceState::Running,
                ReportedState::Succeeded => InstanceState::Succeeded,
                ReportedState::Failed => InstanceState::Failed,
                ReportedState::Revoked | ReportedState::Refused => {
                    moved.push((key, r.state, r.message));
                    continue;
                }
            };
            if let Some(i) = self.instances.get_mut(&key) {
                if i.state != new {
                    i.state = new;
                    i.message = r.message;
                }
            }
        }
        for (key, state, message) in moved {
            let why = message.unwrap_or_default();
            let action = if state == ReportedState::Refused {
                if let Some(i) = self.instances.get_mut(&key) {
                    i.excluded.push(name.to_string());
                }
                "refused"
            } else {
                "revoked"
            };
            self.event(
                "instance",
                action,
                &uid(&key.0, key.1, self.incarnation(&key)),
                why,
            );
            self.unplace(&key)?;
        }
        let nodes = self.nodes.len();
        let Some(n) = self.nodes.get(name) else {
            return Err(ApiError::not_found(format!(
                "node {name} is not registered"
            )));
        };
        let generation = n.generation;
        let desired = (hb.generation != generation).then(|| self.desired(name));
        Ok(HeartbeatReply {
            generation,
            desired,
            heartbeat_ms: self.timing.period(nodes).as_millis() as u64,
        })
    }

    /// A receiver that wakes when `name`'s desired set changes (taken under the lock, so
    /// no change after it is missed).
    pub fn subscribe(&self, name: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.nodes.get(name).map(|n| n.watch.subscribe())
    }

    /// The answer to a held heartbeat once it is let go: the desired set if it changed.
    pub fn settle_heartbeat(
        &self,
        name: &str,
        generation: u64,
    ) -> Result<HeartbeatReply, ApiError> {
        let Some(n) = self.nodes.get(name) else {
            return Err(ApiError::not_found(format!(
                "node {name} is not registered"
            )));
        };
        let current = n.generation;
        Ok(HeartbeatReply {
            generation: current,
            desired: (generation != current).then(|| self.desired(name)),
            heartbeat_ms: self.period().as_millis() as u64,
        })
    }

    /// The heartbeat period the nodes are asked for now.
    pub fn period(&self) -> Duration {
        self.timing.period(self.nodes.len())
    }

    fn incarnation(&self, key: &(String, u32)) -> u32 {
        self.instances.get(key).map(|i| i.incarnation).unwrap_or(0)
    }

    /// The instance a uid names, if it is the current incarnation.
    fn find(&self, instance: &str) -> Option<((String, u32), &Instance)> {
        let mut parts = instance.rsplitn(3, '.');
        let incarnation: u32 = parts.next()?.parse().ok()?;
        let index: u32 = parts.next()?.parse().ok()?;
        let job = parts.next()?.to_string();
        let key = (job, index);
        let i = self.instances.get(&key)?;
        (i.incarnation == incarnation).then_some((key, i))
    }

    /// Takes an instance off its node (a new incarnation waits for placement); the old
    /// node's generation moves, so it stops its copy.
    fn unplace(&mut self, key: &(String, u32)) -> Result<(), ApiError> {
        let Some(i) = self.instances.get(key) else {
            return Ok(());
        };
        let old = i.node.clone();
        let record = PlacementRecord {
            version: VERSION,
            incarnation: i.incarnation + 1,
            node: None,
        };
        let rev = self.commit(
            &[],
            vec![Write::Put(placement_key(&key.0, key.1), json(&record))],
        )?;
        self.unindex(key, old.as_deref());
        if let Some(i) = self.instances.get_mut(key) {
            i.incarnation += 1;
            i.node = None;
            i.state = InstanceState::Pending;
            i.message = None;
        }
        if let Some(n) = old.and_then(|o| self.nodes.get_mut(&o)) {
            n.generation = rev;
            n.watch.send_replace(rev);
        }
        self.pending = true;
        Ok(())
    }

    fn unindex(&mut self, key: &(String, u32), node: Option<&str>) {
        if let Some(set) = node.and_then(|n| self.by_node.get_mut(n)) {
            set.remove(key);
        }
    }

    /// What `name` should run.
    fn desired(&self, name: &str) -> Vec<Assignment> {
        let Some(keys) = self.by_node.get(name) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|key| {
                let (job, index) = key;
                let i = self.instances.get(key)?;
                let j = self.jobs.get(job)?;
                let mut pod = j.record.spec.pod.clone();
                let instance = uid(job, *index, i.incarnation);
                pod.name = format!("{job}-{index}");
                pod.labels.insert(JOB_LABEL.into(), job.clone());
                pod.labels.insert(INSTANCE_LABEL.into(), instance.clone());
                Some(Assignment { instance, pod })
            })
            .collect()
    }

    /// `cluster run`: checks the job (its pod spec as an agent would, the QoS asked for
    /// against the one its resources give), stores it, and leaves its instances pending.
    pub fn submit(&mut self, job: JobSpec, qos: Option<String>) -> Result<JobView, ApiError> {
        let name = job.pod.name.clone();
        let plan = berth_runtime::pod::plan(&job.pod, &|_| std::path::PathBuf::from("/"))
            .map_err(|e| ApiError::bad_request(e.to_string()).in_field(&e.field))?;
        let class = serde_json::to_value(plan.qos)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        if let Some(q) = qos.filter(|q| *q != class) {
            return Err(ApiError::bad_request(format!(
                "qos: the pod's resources make it {class}, not {q}"
            ))
            .in_field("qos"));
        }
        if name.len() > 40 {
            return Err(ApiError::bad_request(format!(
                "name: {name:?} is longer than 40 characters (pods are named <job>-<index>)"
            ))
            .in_field("name"));
        }
        if self.jobs.contains_key(&name) {
            return Err(ApiError::name_in_use("job", &name));
        }
        let record = JobRecord {
            version: VERSION,
            spec: job,
            qos: class,
            requests: Amount {
                millicpu: plan.requests.0,
                memory: plan.requests.1,
            },
            host_ports: plan
                .ports
                .iter()
                .map(|p| (p.protocol.clone(), p.host_port))
                .collect(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        self.commit(
            &[(format!("jobs/{name}"), 0)],
            vec![Write::Put(format!("jobs/{name}"), json(&record))],
        )?;
        for index in 0..record.spec.count {
            self.instances.insert(
                (name.clone(), index),
                Instance {
                    incarnation: 1,
                    node: None,
                    state: InstanceState::Pending,
                    message: None,
                    excluded: Vec::new(),
                },
            );
        }
        self.event(
            "job",
            "submitted",
            &name,
            format!("{} instances", record.spec.count),
        );
        self.jobs.insert(name.clone(), Job { record });
        self.pending = true;
        self.job_view(&name)
            .ok_or_else(|| ApiError::internal("the job vanished"))
    }

    /// `cluster rm`: the job and its placements go; its nodes stop its pods.
    pub fn remove(&mut self, name: &str) -> Result<(), ApiError> {
        if !self.jobs.contains_key(name) {
            return Err(ApiError::not_found(format!("no such job: {name}")));
        }
        let keys: Vec<(String, u32)> = self
            .instances
            .keys()
            .filter(|(j, _)| j == name)
            .cloned()
            .collect();
        let mut writes = vec![Write::Delete(format!("jobs/{name}"))];
        writes.extend(
            keys.iter()
                .map(|(j, i)| Write::Delete(placement_key(j, *i))),
        );
        let rev = self.commit(&[], writes)?;
        for k in &keys {
            if let Some(i) = self.instances.remove(k) {
                self.unindex(k, i.node.as_deref());
                if let Some(n) = i.node.and_then(|n| self.nodes.get_mut(&n)) {
                    n.generation = rev;
                    n.watch.send_replace(rev);
                }
            }
        }
        self.jobs.remove(name);
        self.event("job", "removed", name, "");
        Ok(())
    }

    /// `cluster drain`: no new pods on the node; its pods are placed elsewhere.
    pub fn drain(&mut self, name: &str) -> Result<u32, ApiError> {
        let Some(n) = self.nodes.get(name) else {
            return Err(ApiError::not_found(format!("no such node: {name}")));
        };
        let mut record = n.record.clone();
        record.draining = true;
        let rev = self.commit(
            &[(format!("nodes/{name}"), n.revision)],
            vec![Write::Put(format!("nodes/{name}"), json(&record))],
        )?;
        if let Some(n) = self.nodes.get_mut(name) {
            n.record = record;
            n.revision = rev;
        }
        let moved = self.move_off(name, "drained")?;
        self.event("node", "draining", name, format!("{moved} instances moved"));
        Ok(moved)
    }

    /// Unplaces the live instances of `node` (a lost node's `Never` pods fail instead).
    fn move_off(&mut self, node: &str, why: &str) -> Result<u32, ApiError> {
        let keys: Vec<(String, u32)> = self
            .by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter(|k| {
                self.instances.get(*k).is_some_and(|i| {
                    !matches!(i.state, InstanceState::Succeeded | InstanceState::Failed)
                })
            })
            .cloned()
            .collect();
        let mut moved = 0;
        for k in keys {
            let never = self
                .jobs
                .get(&k.0)
                .is_some_and(|j| j.record.spec.pod.restart_policy == RestartPolicy::Never);
            if never && why == "lost" {
                if let Some(i) = self.instances.get_mut(&k) {
                    i.state = InstanceState::Failed;
                    i.message = Some(format!("node {node} lost"));
                }
                continue;
            }
            self.unplace(&k)?;
            moved += 1;
        }
        Ok(moved)
    }

    /// Marks nodes silent for longer than the node timeout lost and moves their pods.
    pub fn check_liveness(&mut self) -> Result<(), ApiError> {
        let timeout = self.timing.node_timeout;
        let lost: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.lost && n.last_seen.elapsed() > timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for name in lost {
            if let Some(n) = self.nodes.get_mut(&name) {
                n.lost = true;
            }
            let moved = self.move_off(&name, "lost")?;
            self.event(
                "node",
                "lost",
                &name,
                format!("no heartbeat for {timeout:?}; {moved} instances placed again"),
            );
        }
        Ok(())
    }

    fn candidates(&self, job: &str) -> Vec<Candidate> {
        let mut assigned: HashMap<&str, (Amount, Amount, u32)> = HashMap::new();
        let mut ports: HashMap<&str, std::collections::HashSet<(String, u16)>> = HashMap::new();
        for ((j, _), i) in &self.instances {
            let Some(node) = i.node.as_deref() else {
                continue;
            };
            if matches!(i.state, InstanceState::Succeeded | InstanceState::Failed) {
                continue;
            }
            let Some(rec) = self.jobs.get(j).map(|j| &j.record) else {
                continue;
            };
            if !rec.host_ports.is_empty() {
                ports
                    .entry(node)
                    .or_default()
                    .extend(rec.host_ports.iter().cloned());
            }
            let e = assigned.entry(node).or_default();
            if rec.spec.pod.revocable {
                // Revocable work the node has not reported yet still takes room.
                if i.state == InstanceState::Assigned {
                    e.1 = e.1.plus(rec.requests);
                }
            } else {
                e.0 = e.0.plus(rec.requests);
            }
            if j == job {
                e.2 += 1;
            }
        }
        self.nodes
            .iter()
            .map(|(name, n)| {
                let (a, r, of_job) = assigned.get(name.as_str()).copied().unwrap_or_default();
                let free = n
                    .usage
                    .as_ref()
                    .map(|u| u.revocable_free)
                    .unwrap_or_default();
                Candidate {
                    name: name.clone(),
                    ready: !n.lost && !n.record.draining,
                    labels: n.record.registration.labels.clone(),
                    allocatable: n.record.registration.allocatable,
                    assigned: a,
                    revocable_free: free.minus(r),
                    of_job,
                    ports: ports.remove(name.as_str()).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Places every pending instance, job by job, and stores the placements in one commit.
    pub fn place(&mut self) -> Result<usize, ApiError> {
        self.pending = false;
        let jobs: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, i)| i.node.is_none() && i.state == InstanceState::Pending)
            .map(|((j, _), _)| j.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut placed: Vec<((String, u32), String, u32)> = Vec::new();
        let mut unplaced: Vec<((String, u32), String)> = Vec::new();
        for job in jobs {
            let Some(rec) = self.jobs.get(&job).map(|j| j.record.clone()) else {
                continue;
            };
            let mut cands = self.candidates(&job);
            let keys: Vec<(String, u32)> = self
                .instances
                .iter()
                .filter(|((j, _), i)| {
                    *j == job && i.node.is_none() && i.state == InstanceState::Pending
                })
                .map(|(k, _)| k.clone())
                .collect();
            let mut cursor = 0;
            for k in keys {
                let Some(inst) = self.instances.get(&k) else {
                    continue;
                };
                let need = Need {
                    requests: rec.requests,
                    revocable: rec.spec.pod.revocable,
                    constraints: &rec.spec.constraints,
                    strategy: rec.spec.strategy,
                    excluded: &inst.excluded,
                    ports: &rec.host_ports,
                };
                match placement::choose(&cands, &need, cursor) {
                    Ok(ix) => {
                        cursor = ix + 1;
                        placement::take(&mut cands[ix], &need);
                        placed.push((k, cands[ix].name.clone(), inst.incarnation));
                    }
                    Err(why) => unplaced.push((k, why)),
                }
            }
        }
        if !placed.is_empty() {
            let writes = placed
                .iter()
                .map(|((j, i), node, inc)| {
                    let r = PlacementRecord {
                        version: VERSION,
                        incarnation: *inc,
                        node: Some(node.clone()),
                    };
                    Write::Put(placement_key(j, *i), json(&r))
                })
                .collect();
            let rev = self.commit(&[], writes)?;
            for (k, node, inc) in &placed {
                self.by_node
                    .entry(node.clone())
                    .or_default()
                    .insert(k.clone());
                if let Some(i) = self.instances.get_mut(k) {
                    i.node = Some(node.clone());
                    i.state = InstanceState::Assigned;
                    i.message = None;
                }
                if let Some(n) = self.nodes.get_mut(node) {
                    n.generation = rev;
                    n.watch.send_replace(rev);
                }
                self.event("instance", "placed", &uid(&k.0, k.1, *inc), node.clone());
            }
        }
        self.unplaced = unplaced.len();
        for (k, why) in unplaced {
            if let Some(i) = self.instances.get_mut(&k) {
                if i.message.as_deref() != Some(why.as_str()) {
                    i.message = Some(why.clone());
                    let inc = i.incarnation;
                    self.event("instance", "pending", &uid(&k.0, k.1, inc), why);
                }
            }
        }
        Ok(placed.len())
    }

    /// `cluster nodes`.
    pub fn nodes(&self) -> Vec<ClusterNodeView> {
        let mut assigned: HashMap<&str, (Amount, u32)> = HashMap::new();
        for ((j, _), i) in &self.instances {
            let (Some(node), Some(job)) = (i.node.as_deref(), self.jobs.get(j)) else {
                continue;
            };
            let e = assigned.entry(node).or_default();
            e.0 = e.0.plus(job.record.requests);
            e.1 += 1;
        }
        self.nodes
            .iter()
            .map(|(name, n)| {
                let (a, count) = assigned.get(name.as_str()).copied().unwrap_or_default();
                ClusterNodeView {
                    registration: n.record.registration.clone(),
                    state: if n.lost {
                        NodeState::Lost
                    } else if n.record.draining {
                        NodeState::Draining
                    } else {
                        NodeState::Ready
                    },
                    last_heartbeat_ms: n.heard.then(|| n.last_seen.elapsed().as_millis() as u64),
                    assigned: a,
                    instances: count,
                    usage: n.usage.clone(),
                    generation: n.generation,
                }
            })
            .collect()
    }

    fn job_view(&self, name: &str) -> Option<JobView> {
        let j = self.jobs.get(name)?;
        let mut states = BTreeMap::new();
        for ((job, _), i) in &self.instances {
            if job == name {
                let k = serde_json::to_value(i.state)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                *states.entry(k).or_insert(0) += 1;
            }
        }
        Some(JobView {
            name: name.to_string(),
            count: j.record.spec.count,
            qos: j.record.qos.clone(),
            strategy: j.record.spec.strategy,
            constraints: j.record.spec.constraints.clone(),
            created: j.record.created.clone(),
            states,
            spec: j.record.spec.clone(),
        })
    }

    /// `cluster ls`.
    pub fn jobs(&self) -> Vec<JobView> {
        self.jobs.keys().filter_map(|n| self.job_view(n)).collect()
    }

    /// `cluster ps [JOB]`.
    pub fn instances(&self, job: Option<&str>) -> Vec<InstanceView> {
        self.instances
            .iter()
            .filter(|((j, _), _)| job.is_none_or(|f| f == j))
            .map(|((j, index), i)| InstanceView {
                job: j.clone(),
                index: *index,
                instance: uid(j, *index, i.incarnation),
                incarnation: i.incarnation,
                node: i.node.clone(),
                state: i.state,
                message: i.message.clone(),
            })
            .collect()
    }

    /// `cluster events`: those after `since` (a sequence number).
    pub fn events(&self, since: u64) -> Vec<ClusterEvent> {
        self.events
            .iter()
            .filter(|e| e.seq > since)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use berth_api::cluster::{PodReport, Strategy};

    fn cluster(dir: &std::path::Path, timeout: Duration) -> Cluster {
        let store: Arc<dyn Store> =
            Arc::new(super::super::store::Embedded::open(&dir.join("s.redb")).unwrap());
        let timing = Timing {
            node_timeout: timeout,
            heartbeat_floor: Duration::from_millis(100),
            heartbeats_per_second: 1000.0,
        };
        Cluster::load(store, timing).unwrap()
    }

    fn node(name: &str) -> Registration {
        Registration {
            node_name: name.into(),
            allocatable: Amount {
                millicpu: 2000,
                memory: 1 << 30,
            },
            ..Default::default()
        }
    }

    fn job(count: u32) -> JobSpec {
        let (mut spec, _) = berth_api::cluster::parse_job(
            "name: j\ncontainers: [{name: c, image: busybox, resources: {requests: {cpu: 100m}}}]\n",
        )
        .unwrap();
        spec.count = count;
        spec.strategy = Strategy::Spread;
        spec
    }

    fn report(c: &mut Cluster, node: &str, instance: &str, state: ReportedState) -> HeartbeatReply {
        let hb = Heartbeat {
            generation: 0,
            usage: UsageReport::default(),
            pods: vec![PodReport {
                instance: instance.into(),
                state,
                message: Some("why".into()),
            }],
            wait_ms: None,
        };
        c.heartbeat(node, hb).unwrap()
    }

    #[test]
    fn revoked_and_refused_instances_move_lost_nodes_lose_theirs_and_restarts_keep_placements() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cluster(dir.path(), Duration::from_secs(60));
        c.register(node("a")).unwrap();
        c.register(node("b")).unwrap();
        c.submit(job(2), Some("burstable".into())).unwrap();
        assert_eq!(c.place().unwrap(), 2);
        let on_a = c.desired("a");
        assert_eq!(on_a.len(), 1);
        assert_eq!(on_a[0].pod.labels[INSTANCE_LABEL], on_a[0].instance);
        let first = on_a[0].instance.clone();

        // Revoked on a: a new incarnation, placed again (a and b each hold one: spread).
        let before = c.nodes.get("a").unwrap().generation;
        report(&mut c, "a", &first, ReportedState::Revoked);
        assert!(c.nodes.get("a").unwrap().generation > before);
        assert!(c.desired("a").is_empty());
        c.place().unwrap();
        let again: Vec<String> = c
            .instances(None)
            .iter()
            .map(|i| i.instance.clone())
            .collect();
        assert!(
            again.contains(&"j.0.2".to_string()) || again.contains(&"j.1.2".to_string()),
            "{again:?}"
        );
        // A stale report of the old incarnation changes nothing.
        let reply = report(&mut c, "a", &first, ReportedState::Failed);
        assert!(reply.desired.is_some());

        // Refused on its node: never placed there again.
        let (node_of, uid) = c
            .instances(None)
            .into_iter()
            .find(|i| i.incarnation == 2)
            .map(|i| (i.node.unwrap(), i.instance))
            .unwrap();
        report(&mut c, &node_of, &uid, ReportedState::Refused);
        c.place().unwrap();
        let moved = c
            .instances(None)
            .into_iter()
            .find(|i| i.incarnation == 3)
            .unwrap();
        assert_ne!(moved.node.as_deref(), Some(node_of.as_str()));

        // Placements survive a restart of the master.
        let placed: Vec<(String, Option<String>)> = c
            .instances(None)
            .into_iter()
            .map(|i| (i.instance, i.node))
            .collect();
        drop(c);
        let mut c = cluster(dir.path(), Duration::from_millis(1));
        let again: Vec<(String, Option<String>)> = c
            .instances(None)
            .into_iter()
            .map(|i| (i.instance, i.node))
            .collect();
        assert_eq!(placed, again);

        // Silent past the timeout: both nodes lost, nothing placed on them.
        std::thread::sleep(Duration::from_millis(5));
        c.check_liveness().unwrap();
        assert!(c.nodes().iter().all(|n| n.state == NodeState::Lost));
        c.place().unwrap();
        assert!(c.instances(None).iter().all(|i| i.node.is_none()));
        assert!(c.events(0).iter().any(|e| e.action == "lost"));

        // Removing the job empties every desired set.
        c.remove("j").unwrap();
        assert!(c.desired("a").is_empty() && c.desired("b").is_empty());
        assert!(c.instances(None).is_empty());
    }
}
