//! The verbs on jobs and nodes that move instances: submit, remove, drain, and marking
//! silent nodes lost.

use super::*;

impl Cluster {
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
            self.instances
                .insert((name.clone(), index), Instance::new());
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
        let mut moved = Vec::with_capacity(keys.len());
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
            moved.push(k);
        }
        self.unplace(&moved)?;
        Ok(moved.len() as u32)
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
}
