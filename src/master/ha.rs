//! Leader election among masters on etcd: each master holds a lease (TTL `--lease-ttl`,
//! kept alive every third of it) and tries to create `<prefix>/leader` on it; the one that
//! created it leads — loads the state from the store and serves — and fences its commits on
//! the key's revision (etcd.rs). The others follow: they redirect requests to the leader
//! and try again when the key is gone (its lease expired or was revoked).
//!
//! A leader serves only while its lease is sure to be alive: until the send time of its
//! last answered keep-alive plus the TTL, on the monotonic clock, which runs on while the
//! process is stopped. A leader resumed after SIGSTOP therefore steps down before it
//! answers anything, and a commit it had in flight fails its fence.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::etcd::Etcd;
use super::Master;

/// `<prefix>/leader` and `<prefix>/masters/<name>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MasterInfo {
    /// Layout version.
    pub version: u32,
    /// The master's name (`--name`, default the host name and port).
    pub name: String,
    /// `https://HOST:PORT` agents and admins reach it at.
    pub url: String,
    /// RFC 3339: since it leads (the leader key) or runs (its entry).
    pub since: String,
}

/// What this master is now.
#[derive(Debug, Clone)]
pub enum Role {
    /// Elected: serves until `valid_until` unless a keep-alive moves it.
    Leading {
        /// RFC 3339.
        since: String,
        /// The leader key's revision (the fence).
        revision: i64,
    },
    /// Another master leads (None: none is elected, or etcd is away).
    Following(Option<MasterInfo>),
}

/// The election's state, shared with the routes.
#[derive(Debug)]
pub struct Election {
    /// This master.
    pub me: MasterInfo,
    /// The lease's TTL.
    pub ttl: Duration,
    role: Mutex<Role>,
    /// The lease held now.
    lease: Mutex<Option<i64>>,
    /// The lease is alive at least until then.
    valid_until: Mutex<Option<Instant>>,
}

impl Election {
    /// A master that follows until elected.
    pub fn new(me: MasterInfo, ttl: Duration) -> Self {
        Self {
            me,
            ttl,
            role: Mutex::new(Role::Following(None)),
            lease: Mutex::new(None),
            valid_until: Mutex::new(None),
        }
    }

    /// The role now; a leader whose lease may have expired is reported as following.
    pub fn role(&self) -> Role {
        let role = self
            .role
            .lock()
            .map(|r| r.clone())
            .unwrap_or(Role::Following(None));
        match role {
            Role::Leading { .. } if !self.lease_alive() => Role::Following(None),
            r => r,
        }
    }

    /// Whether this master may serve as the leader now.
    pub fn leading(&self) -> bool {
        matches!(self.role(), Role::Leading { .. })
    }

    fn lease_alive(&self) -> bool {
        self.valid_until
            .lock()
            .ok()
            .and_then(|v| *v)
            .is_some_and(|v| Instant::now() < v)
    }

    fn set_role(&self, r: Role) {
        if let Ok(mut role) = self.role.lock() {
            *role = r;
        }
    }

    fn extend(&self, until: Option<Instant>) {
        if let Ok(mut v) = self.valid_until.lock() {
            *v = until;
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// How often a follower looks for a vacant leader key and a leader checks its own.
fn poll(ttl: Duration) -> Duration {
    (ttl / 20).clamp(Duration::from_millis(100), Duration::from_millis(500))
}

/// Campaigns, leads and follows until the process ends.
pub async fn run(m: Arc<Master>, etcd: Arc<Etcd>, election: Arc<Election>) {
    loop {
        if let Err(e) = term(&m, &etcd, &election).await {
            tracing::warn!(error = %format!("{e:#}"), "election: etcd; trying again");
        }
        step_down(&m, &etcd, &election).await;
        tokio::time::sleep(poll(election.ttl)).await;
    }
}

/// Gives up leadership (if held): no state, no fence, no lease.
async fn step_down(m: &Arc<Master>, etcd: &Arc<Etcd>, election: &Arc<Election>) {
    let was = matches!(
        election.role.lock().map(|r| r.clone()),
        Ok(Role::Leading { .. })
    );
    election.set_role(Role::Following(None));
    election.extend(None);
    etcd.set_fence(None);
    if was {
        tracing::warn!(master = %election.me.name, "no longer the leader");
        let m = m.clone();
        // The state goes with the lock (a request in flight finishes first).
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(mut c) = m.cluster.lock() {
                *c = None;
            }
        })
        .await;
    }
}

/// One lease: campaign, lead or follow while it lives. Every request goes through
/// [`Etcd::call`], so the loss of one member costs a retry on the next, not the lease.
async fn term(m: &Arc<Master>, etcd: &Arc<Etcd>, election: &Arc<Election>) -> Result<()> {
    let ttl = election.ttl;
    let granted_at = Instant::now();
    let secs = ttl.as_secs().max(2) as i64;
    let lease = etcd
        .call("granting a lease", |mut c| async move {
            c.lease_grant(secs, None).await
        })
        .await?;
    let id = lease.id();
    if let Ok(mut l) = election.lease.lock() {
        *l = Some(id);
    }
    election.extend(Some(
        granted_at + Duration::from_secs(lease.ttl().max(0) as u64),
    ));
    let opts = etcd.options().clone();
    let leader_key = opts.key("leader");
    let entry = serde_json::to_vec(&MasterInfo {
        since: now(),
        ..election.me.clone()
    })?;
    let entry_key = opts.key(&format!("masters/{}", election.me.name));
    etcd.call("registering the master", |mut c| {
        let (k, v) = (entry_key.clone(), entry.clone());
        async move { c.put(k, v, Some(PutOptions::new().with_lease(id))).await }
    })
    .await?;
    let mut next_keepalive = Instant::now() + ttl / 3;
    let result: Result<()> = loop {
        // Keep the lease alive every third of its TTL; a failed try is tried again at the
        // next poll, until the lease may have expired.
        if Instant::now() >= next_keepalive {
            let sent = Instant::now();
            let answered = etcd
                .call("keeping the lease alive", |mut c| async move {
                    let (mut keeper, mut answers) = c.lease_keep_alive(id).await?;
                    keeper.keep_alive().await?;
                    answers.message().await
                })
                .await;
            match answered {
                Ok(Some(a)) if a.ttl() > 0 => {
                    election.extend(Some(sent + Duration::from_secs(a.ttl() as u64)));
                    next_keepalive = sent + ttl / 3;
                }
                Ok(_) => break Err(anyhow::anyhow!("the lease expired")),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "keeping the lease alive; trying again");
                    next_keepalive = Instant::now() + poll(ttl);
                }
            }
        }
        if !election.lease_alive() {
            break Err(anyhow::anyhow!("the lease may have expired"));
        }
        let role = election
            .role
            .lock()
            .map(|r| r.clone())
            .unwrap_or(Role::Following(None));
        match role {
            Role::Leading { revision, .. } => {
                if etcd.was_fenced() {
                    break Err(anyhow::anyhow!("a commit failed its fence"));
                }
                // The key is still ours (an operator may have deleted it).
                let k = leader_key.clone();
                let held = etcd
                    .call("reading the leader key", |mut c| {
                        let k = k.clone();
                        async move { c.get(k, None).await }
                    })
                    .await
                    .ok()
                    .map(|r| r.kvs().first().map(|k| k.mod_revision()) == Some(revision));
                if held == Some(false) {
                    break Err(anyhow::anyhow!("the leader key changed"));
                }
            }
            Role::Following(_) => {
                let me = serde_json::to_vec(&MasterInfo {
                    since: now(),
                    ..election.me.clone()
                })?;
                let txn = Txn::new()
                    .when(vec![Compare::create_revision(
                        leader_key.as_str(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then(vec![TxnOp::put(
                        leader_key.as_str(),
                        me,
                        Some(PutOptions::new().with_lease(id)),
                    )])
                    .or_else(vec![TxnOp::get(leader_key.as_str(), None)]);
                let r = match etcd
                    .call("campaigning", |mut c| {
                        let txn = txn.clone();
                        async move { c.txn(txn).await }
                    })
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(error = %format!("{e:#}"), "campaigning");
                        election.set_role(Role::Following(None));
                        tokio::time::sleep(poll(ttl)).await;
                        continue;
                    }
                };
                if r.succeeded() {
                    let revision = r.header().map_or(0, |h| h.revision());
                    if let Err(e) = lead(m, etcd, election, &leader_key, revision).await {
                        break Err(e);
                    }
                } else {
                    let leader = r.op_responses().into_iter().find_map(|op| match op {
                        etcd_client::TxnOpResponse::Get(g) => g
                            .kvs()
                            .first()
                            .and_then(|k| serde_json::from_slice::<MasterInfo>(k.value()).ok()),
                        _ => None,
                    });
                    election.set_role(Role::Following(leader));
                }
            }
        }
        let until_keepalive = next_keepalive.saturating_duration_since(Instant::now());
        tokio::time::sleep(poll(ttl).min(until_keepalive)).await;
    };
    // Revoked: the next leader need not wait out the TTL.
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        etcd.call("revoking the lease", |mut c| async move {
            c.lease_revoke(id).await
        }),
    )
    .await;
    if let Ok(mut l) = election.lease.lock() {
        *l = None;
    }
    result
}

/// At shutdown: the lease goes, and with it the leader key and this master's entry, so
/// another master leads at once instead of after the TTL.
pub async fn resign(etcd: &Etcd, election: &Election) {
    let id = election.lease.lock().ok().and_then(|mut l| l.take());
    election.extend(None);
    if let Some(id) = id {
        let revoke = etcd.call("revoking the lease", |mut c| async move {
            c.lease_revoke(id).await
        });
        match tokio::time::timeout(Duration::from_secs(2), revoke).await {
            Ok(Ok(_)) => tracing::info!("resigned: lease revoked"),
            _ => tracing::warn!("could not revoke the lease: another master leads after its TTL"),
        }
    }
}

/// Just elected at `revision`: fence the store, load the state, serve.
async fn lead(
    m: &Arc<Master>,
    etcd: &Arc<Etcd>,
    election: &Arc<Election>,
    leader_key: &str,
    revision: i64,
) -> Result<()> {
    etcd.set_fence(Some((leader_key.to_string(), revision)));
    let (m2, store) = (m.clone(), etcd.clone());
    let timing = m.timing;
    tokio::task::spawn_blocking(move || -> Result<()> {
        // Agents held by a stopped leader give up on it after their request timeout and
        // a hold (at most a third of the node timeout): only then is their silence news.
        let grace = berth_cluster::member::REQUEST_TIMEOUT + timing.node_timeout / 3;
        let cluster = super::state::Cluster::load(store, timing, grace)?;
        tracing::info!(?cluster, "state loaded");
        let mut c = m2
            .cluster
            .lock()
            .map_err(|_| anyhow::anyhow!("the cluster state lock is poisoned"))?;
        *c = Some(cluster);
        Ok(())
    })
    .await??;
    let since = now();
    tracing::warn!(master = %election.me.name, revision, "elected leader");
    election.set_role(Role::Leading { since, revision });
    m.wake.notify_one();
    Ok(())
}
