//! What `cluster nodes|ls|ps|events` show, computed from the state.

use super::*;

impl Cluster {
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

    pub(super) fn job_view(&self, name: &str) -> Option<JobView> {
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
