//! A placement round: the candidates of a job (each node's free resources, host ports and
//! the job's instances on it) and the pending instances placed in one commit.

use super::*;

impl Cluster {
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
}
