//! The master's state, owned by one `Cluster` behind a lock: nodes (registration from the
//! store, liveness and the last report in memory), jobs and their instances (placements in
//! the store, reported states in memory: agents report them again after a master restart).
//! Every change that must survive a restart is committed to the store before it is
//! answered or acted on.
//!
//! Records (JSON, `"version": 1`): `nodes/<name>` → [`NodeRecord`], `jobs/<name>` →
//! [`JobRecord`], `placements/<job>/<index>` → [`PlacementRecord`], `identities/<fp>` →
//! [`Identity`].

mod jobs;
mod place;
#[cfg(test)]
mod tests;
mod views;

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

impl Instance {
    /// A job's instance before its first placement.
    fn new() -> Self {
        Self {
            incarnation: 1,
            node: None,
            state: InstanceState::Pending,
            message: None,
            excluded: Vec::new(),
        }
    }
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
    /// Loads everything from `store`. Nodes get a full node timeout to report again, plus
    /// `grace` (a new leader: the time agents take to give up on the old one).
    pub fn load(store: Arc<dyn Store>, timing: Timing, grace: Duration) -> Result<Self> {
        let revision = store.revision()?;
        // In the future: `elapsed()` is zero until then.
        let now = Instant::now() + grace;
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
                c.instances.insert((name.clone(), index), Instance::new());
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
        if kind == "node" && action == "lost" {
            // What an operator must see at the default log level.
            tracing::warn!(kind, action, subject, message = %e.message, "cluster event");
        } else {
            tracing::info!(kind, action, subject, message = %e.message, "cluster event");
        }
        self.events.push_back(e);
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }

    fn commit(&self, expect: &[(String, u64)], writes: Vec<Write>) -> Result<u64, ApiError> {
        self.store.commit(expect, writes).map_err(|e| {
            if let Some(c) = e.downcast_ref::<super::store::Conflict>() {
                ApiError::conflict(c.to_string())
            } else if e.downcast_ref::<super::store::Unavailable>().is_some()
                || e.downcast_ref::<super::etcd::Fenced>().is_some()
            {
                ApiError::new(
                    berth_api::ErrorCode::Unavailable,
                    // A timed-out etcd transaction may still apply once the quorum is back
                    // (etcd's rule): the caller must not be told it did not.
                    format!(
                        "{e:#}; the change was not confirmed (it may still apply once the store answers)"
                    ),
                )
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
        let mut unplaced = Vec::with_capacity(moved.len());
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
            unplaced.push(key);
        }
        self.unplace(&unplaced)?;
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

    /// Takes instances off their nodes, each with a new incarnation waiting for placement,
    /// in one commit (a lost node's pods move in one fsync, not one each); the old nodes'
    /// generations move, so they stop their copies.
    fn unplace(&mut self, keys: &[(String, u32)]) -> Result<(), ApiError> {
        let writes: Vec<Write> = keys
            .iter()
            .filter_map(|key| {
                let i = self.instances.get(key)?;
                let record = PlacementRecord {
                    version: VERSION,
                    incarnation: i.incarnation + 1,
                    node: None,
                };
                Some(Write::Put(placement_key(&key.0, key.1), json(&record)))
            })
            .collect();
        if writes.is_empty() {
            return Ok(());
        }
        let rev = self.commit(&[], writes)?;
        for key in keys {
            let Some(i) = self.instances.get_mut(key) else {
                continue;
            };
            let old = i.node.take();
            i.incarnation += 1;
            i.state = InstanceState::Pending;
            i.message = None;
            self.unindex(key, old.as_deref());
            if let Some(n) = old.and_then(|o| self.nodes.get_mut(&o)) {
                n.generation = rev;
                n.watch.send_replace(rev);
            }
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
}
