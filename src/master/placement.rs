//! Placement: filter, then score, one instance at a time over a batch, each choice taken
//! into account for the next (a pure function of the nodes' figures; the cluster state
//! calls it and persists the result).
//!
//! Filter: the node is ready (not lost, not draining), carries every constraint label, did
//! not refuse this instance, and has room: guaranteed/burstable requests against allocatable
//! minus what the master assigned; revocable requests against the node's reported revocable
//! free (minus revocable work assigned since that report). Score: bin-pack (the fullest node
//! that fits, so whole nodes stay free) or spread (fewest instances of the job, then the
//! emptiest node). Ties go to the name, so a placement is reproducible.

use std::collections::{BTreeMap, HashSet};

use berth_api::cluster::{Amount, Strategy};

/// One node as placement sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Node name.
    pub name: String,
    /// Ready for new work.
    pub ready: bool,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Allocatable.
    pub allocatable: Amount,
    /// Requests of guaranteed and burstable work assigned to it.
    pub assigned: Amount,
    /// Room for revocable work.
    pub revocable_free: Amount,
    /// Instances of the job being placed on it.
    pub of_job: u32,
    /// Host ports (protocol, port) its assigned instances publish.
    pub ports: HashSet<(String, u16)>,
}

/// What one instance needs.
#[derive(Debug, Clone)]
pub struct Need<'a> {
    /// Requests.
    pub requests: Amount,
    /// Placed on the revocable estimate.
    pub revocable: bool,
    /// Labels every node must carry.
    pub constraints: &'a BTreeMap<String, String>,
    /// Strategy.
    pub strategy: Strategy,
    /// Nodes that refused it.
    pub excluded: &'a [String],
    /// Host ports (protocol, port) it publishes.
    pub ports: &'a [(String, u16)],
}

fn mcpu(m: u64) -> String {
    format!("{m}m CPU")
}

fn mib(b: u64) -> String {
    format!("{} MiB", b >> 20)
}

/// Why `c` cannot take `need`, or `None` when it can.
pub fn unfit(c: &Candidate, need: &Need<'_>) -> Option<String> {
    if !c.ready {
        return Some("not ready".into());
    }
    if need.excluded.contains(&c.name) {
        return Some("refused it".into());
    }
    for (k, v) in need.constraints {
        if c.labels.get(k) != Some(v) {
            return Some(format!("lacks label {k}={v}"));
        }
    }
    if let Some((proto, port)) = need.ports.iter().find(|p| c.ports.contains(*p)) {
        return Some(format!("host port {port}/{proto} in use"));
    }
    let (free, what) = if need.revocable {
        (c.revocable_free, "revocable free")
    } else {
        (c.allocatable.minus(c.assigned), "free")
    };
    if need.requests.millicpu > free.millicpu {
        return Some(format!(
            "needs {}, {} {what}",
            mcpu(need.requests.millicpu),
            mcpu(free.millicpu)
        ));
    }
    if need.requests.memory > free.memory {
        return Some(format!(
            "needs {} memory, {} {what}",
            mib(need.requests.memory),
            mib(free.memory)
        ));
    }
    None
}

/// Share of `c`'s allocatable in use once `add` is placed (the larger of CPU and memory).
fn fullness(c: &Candidate, add: Amount) -> f64 {
    let used = c.assigned.plus(add);
    let f = |u: u64, a: u64| if a == 0 { 1.0 } else { u as f64 / a as f64 };
    f(used.millicpu, c.allocatable.millicpu).max(f(used.memory, c.allocatable.memory))
}

/// Nodes scored per choice at most, once that many fit (kube-scheduler's rule: at least
/// 100, else 5% of the nodes): a choice costs the same at 100 nodes and at 10,000, and the
/// rotating start spreads choices over every node.
pub fn feasible_limit(nodes: usize) -> usize {
    (nodes / 20).max(100)
}

/// The index of the best node for `need` among the first [`feasible_limit`] that fit,
/// scanning from `start` round the list; or every node's reason when none fits.
pub fn choose(cands: &[Candidate], need: &Need<'_>, start: usize) -> Result<usize, String> {
    let mut best: Option<(usize, (i64, i64))> = None;
    let mut reasons = Vec::new();
    let limit = feasible_limit(cands.len());
    let mut feasible = 0;
    let n = cands.len();
    for i in (0..n).map(|k| (start + k) % n) {
        if feasible >= limit {
            break;
        }
        let c = &cands[i];
        if let Some(why) = unfit(c, need) {
            if reasons.len() < 20 {
                reasons.push(format!("{}: {why}", c.name));
            }
            continue;
        }
        feasible += 1;
        let full = (fullness(c, need.requests) * 1e6) as i64;
        // Lower is better.
        let key = match need.strategy {
            Strategy::Binpack => (-full, 0),
            Strategy::Spread => (i64::from(c.of_job), full),
        };
        if best.is_none_or(|(b, k)| key < k || (key == k && i < b)) {
            best = Some((i, key));
        }
    }
    match best {
        Some((i, _)) => Ok(i),
        None if cands.is_empty() => Err("no node has registered".into()),
        None => Err(format!("no node fits: {}", reasons.join("; "))),
    }
}

/// Takes a placement into account for the next choice.
pub fn take(c: &mut Candidate, need: &Need<'_>) {
    if need.revocable {
        c.revocable_free = c.revocable_free.minus(need.requests);
    } else {
        c.assigned = c.assigned.plus(need.requests);
    }
    c.of_job += 1;
    c.ports.extend(need.ports.iter().cloned());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node(name: &str, cpu: u64, zone: &str) -> Candidate {
        Candidate {
            name: name.into(),
            ready: true,
            labels: [("zone".to_string(), zone.to_string())].into(),
            allocatable: Amount {
                millicpu: cpu,
                memory: 1 << 30,
            },
            assigned: Amount::default(),
            revocable_free: Amount {
                millicpu: 500,
                memory: 256 << 20,
            },
            of_job: 0,
            ports: HashSet::new(),
        }
    }

    fn place(cands: &mut [Candidate], need: &Need<'_>, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let i = choose(cands, need, 0).unwrap();
                take(&mut cands[i], need);
                cands[i].name.clone()
            })
            .collect()
    }

    #[test]
    fn spread_binpack_constraints_and_revocable_room() {
        let none = BTreeMap::new();
        let mut need = Need {
            requests: Amount {
                millicpu: 500,
                memory: 64 << 20,
            },
            revocable: false,
            constraints: &none,
            strategy: Strategy::Spread,
            excluded: &[],
            ports: &[],
        };
        let mut cands = vec![
            node("a", 2000, "x"),
            node("b", 2000, "x"),
            node("c", 2000, "y"),
        ];
        assert_eq!(place(&mut cands, &need, 6), ["a", "b", "c", "a", "b", "c"]);
        for c in &mut cands {
            c.assigned = Amount::default();
            c.of_job = 0;
        }
        need.strategy = Strategy::Binpack;
        assert_eq!(place(&mut cands, &need, 5), ["a", "a", "a", "a", "b"]);
        let zone: BTreeMap<String, String> = [("zone".to_string(), "y".to_string())].into();
        need.constraints = &zone;
        let err = choose(&[node("a", 2000, "x")], &need, 0).unwrap_err();
        assert!(err.contains("a: lacks label zone=y"), "{err}");
        need.constraints = &none;
        need.revocable = true;
        need.requests.millicpu = 400;
        let mut one = vec![node("a", 2000, "x")];
        place(&mut one, &need, 1);
        let err = choose(&one, &need, 0).unwrap_err();
        assert!(
            err.contains("needs 400m CPU, 100m CPU revocable free"),
            "{err}"
        );
        need.revocable = false;
        let web = [("tcp".to_string(), 8080)];
        need.ports = &web;
        let mut two = vec![node("a", 2000, "x"), node("b", 2000, "x")];
        assert_eq!(place(&mut two, &need, 2), ["a", "b"]);
        let err = choose(&two, &need, 0).unwrap_err();
        assert!(err.contains("b: host port 8080/tcp in use"), "{err}");
        need.ports = &[];
        let excluded = ["a".to_string()];
        need.excluded = &excluded;
        assert!(choose(&one, &need, 0)
            .unwrap_err()
            .contains("a: refused it"));
    }
}
