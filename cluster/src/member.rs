use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::cluster::{
    Assignment, Heartbeat, HeartbeatReply, JoinRequest, JoinResponse, PodReport, Registration,
    ReportedState, UsageReport,
};
use berth_api::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::client::{Client, ClientError};
use crate::tls;

/// Requests to the master give up after this long (heartbeats are retried).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Creates of assigned pods at once.
const PARALLEL_CREATES: usize = 8;

/// What can go wrong joining or keeping the credential.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The master's CA is not the pinned one.
    #[error("the master's CA is {found}, not the pinned --ca-cert-hash {pinned}")]
    CaMismatch {
        /// Its hash.
        found: String,
        /// The pin.
        pinned: String,
    },
    /// A request failed.
    #[error("joining {master}: {source}")]
    Request {
        /// Master URL.
        master: String,
        /// Why.
        source: ClientError,
    },
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The credential file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Layout version of `member.json`.
const CREDENTIAL_VERSION: u32 = 1;

/// The node's membership, kept in `<agent root>/cluster/member.json` (mode 0600, written
/// atomically): `{"version":1,"master":URL,"node_name":…,"ca_pem":…,"cert_pem":…,
/// "key_pem":…}`. Obtained once by [`join`]; later starts use it as is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credential {
    /// Layout version.
    pub version: u32,
    /// `https://HOST:PORT`.
    pub master: String,
    /// The node's name in the cluster.
    pub node_name: String,
    /// The cluster CA.
    pub ca_pem: String,
    /// The node's certificate.
    pub cert_pem: String,
    /// Its key.
    pub key_pem: String,
}

impl Credential {
    /// Reads `path`; `None` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<Self>, MemberError> {
        let err = |reason: String| MemberError::File {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| err(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Writes `path` atomically (temp, fsync, rename, fsync of the dir), mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), MemberError> {
        let err = |reason: String| MemberError::File {
            path: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let body = serde_json::to_vec_pretty(self).map_err(|e| err(e.to_string()))?;
        berth_fsutil::atomic::write_atomic(path, &body, 0o600).map_err(|e| err(e.to_string()))
    }

    /// A client of the master presenting this node's certificate.
    pub fn client(&self) -> Result<Client, ClientError> {
        let config = tls::client_config(&self.ca_pem, Some((&self.cert_pem, &self.key_pem)))?;
        Client::new(&self.master, config, REQUEST_TIMEOUT)
    }
}

/// `GET /v1/cluster/ca`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaAnswer {
    /// The cluster CA, PEM.
    pub ca_pem: String,
}

/// Joins the cluster: fetches the CA over an unverified connection and checks it against
/// `ca_hash`, then sends the token over a connection that trusts only that CA.
pub async fn join(
    master: &str,
    token: &str,
    ca_hash: &str,
    node_name: &str,
) -> Result<Credential, MemberError> {
    let req = |source| MemberError::Request {
        master: master.to_string(),
        source,
    };
    let open = Client::new(master, tls::unverified_config()?, REQUEST_TIMEOUT).map_err(req)?;
    let ca: CaAnswer = open.get("/v1/cluster/ca").await.map_err(req)?;
    let found = tls::ca_hash(&ca.ca_pem)?;
    if found != ca_hash {
        return Err(MemberError::CaMismatch {
            found,
            pinned: ca_hash.to_string(),
        });
    }
    let pinned = Client::new(
        master,
        tls::client_config(&ca.ca_pem, None)?,
        REQUEST_TIMEOUT,
    )
    .map_err(req)?;
    let joined: JoinResponse = pinned
        .post(
            "/v1/cluster/join",
            &JoinRequest {
                token: token.to_string(),
                node_name: node_name.to_string(),
            },
        )
        .await
        .map_err(req)?;
    Ok(Credential {
        version: CREDENTIAL_VERSION,
        master: master.to_string(),
        node_name: node_name.to_string(),
        ca_pem: ca.ca_pem,
        cert_pem: joined.cert_pem,
        key_pem: joined.key_pem,
    })
}

/// A pod the master assigned, as the node has it.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalPod {
    /// Pod name.
    pub name: String,
    /// Its instance label.
    pub instance: String,
    /// Its state.
    pub state: ReportedState,
    /// Why it failed.
    pub message: Option<String>,
    /// Its stop grace period.
    pub grace: Duration,
}

/// Why an assigned pod was not created.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateError {
    /// Admission refused it (resources): reported, so the master places it elsewhere.
    Refused(String),
    /// Something else (an image pull): retried next round.
    Failed(String),
}

/// What the member loop needs from the node: the agent implements it with its owner's
/// actions, the simulator with pods in memory.
pub trait LocalNode: Clone + Send + Sync + 'static {
    /// Who the node is and what it has.
    fn registration(&self) -> impl std::future::Future<Output = Registration> + Send;
    /// Its usage figures.
    fn usage(&self) -> impl std::future::Future<Output = UsageReport> + Send;
    /// Its pods that carry an instance label (and only those).
    fn pods(&self) -> impl std::future::Future<Output = Result<Vec<LocalPod>, String>> + Send;
    /// Creates and starts an assigned pod.
    fn create(
        &self,
        a: Assignment,
    ) -> impl std::future::Future<Output = Result<(), CreateError>> + Send;
    /// Stops and removes a pod no longer assigned.
    fn remove(
        &self,
        name: String,
        grace: Duration,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
    /// The master followed now (`master`), of all it knows, and whether it answers.
    fn following(
        &self,
        _master: String,
        _masters: Vec<String>,
        _connected: bool,
    ) -> impl std::future::Future<Output = ()> + Send {
        async {}
    }
}

/// Refusals of the current desired set, reported until the master moves the instance.
type Refusals = Arc<Mutex<HashMap<String, String>>>;

/// Runs the member side until the task is dropped: register, heartbeat with jitter,
/// converge on the desired set. With the master away nothing local is touched (static
/// stability): the last desired set is kept, and only the master's answer changes it.
pub async fn run(cred: Credential, node: impl LocalNode) {
    let client = match cred.client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cluster client");
            return;
        }
    };
    let refusals: Refusals = Arc::default();
    let (desired_tx, desired_rx) =
        tokio::sync::watch::channel::<Option<Arc<Vec<Assignment>>>>(None);
    let (period_tx, period_rx) = tokio::sync::watch::channel(Duration::from_secs(1));
    // A round that changed pods wakes the heartbeat, which reports them at once instead
    // of after the answer the master holds.
    let changed = Arc::new(tokio::sync::Notify::new());
    let reconciler = tokio::spawn(reconcile_loop(
        node.clone(),
        desired_rx,
        period_rx,
        refusals.clone(),
        changed.clone(),
    ));
    let _abort = AbortOnDrop(reconciler);
    let mut registered = false;
    let mut following: Option<(String, bool)> = None;
    let mut generation = 0u64;
    let mut failures = 0u32;
    let mut period = Duration::from_secs(1);
    let name = cred.node_name.clone();
    loop {
        let sent = std::time::Instant::now();
        let mut news = false;
        // Held for 80–100% of the period: nodes woken together (a master restart, a large
        // job) would otherwise stay in step, period after period.
        let hold = period.mul_f64(0.9 + spread());
        let outcome = if registered {
            tokio::select! {
                r = beat(&client, &name, &node, generation, hold, &refusals) => r,
                // The held request is dropped (its connection with it); a new one reports.
                () = changed.notified() => continue,
            }
        } else {
            let reg = node.registration().await;
            client
                .post::<_, serde_json::Value>(&format!("/v1/cluster/nodes/{name}/register"), &reg)
                .await
                .map(|_| None)
        };
        let now_following = (client.base(), outcome.is_ok());
        if following.as_ref() != Some(&now_following) {
            node.following(now_following.0.clone(), client.bases(), now_following.1)
                .await;
            following = Some(now_following);
        }
        match outcome {
            Ok(reply) => {
                if failures > 0 || !registered {
                    tracing::info!(master = client.base(), node = %name, "connected to the master");
                }
                failures = 0;
                if !registered {
                    registered = true;
                    // Heartbeat at once: it brings the desired set.
                    continue;
                }
                if let Some(reply) = reply {
                    period = Duration::from_millis(reply.heartbeat_ms.max(50));
                    let _ = period_tx.send(period);
                    if let Some(set) = reply.desired {
                        let keep: HashSet<&str> = set.iter().map(|a| a.instance.as_str()).collect();
                        if let Ok(mut r) = refusals.lock() {
                            r.retain(|k, _| keep.contains(k.as_str()));
                        }
                        generation = reply.generation;
                        news = true;
                        let _ = desired_tx.send(Some(Arc::new(set)));
                    }
                }
            }
            Err(e) => {
                if e.code() == Some(ErrorCode::NotFound) {
                    // The master does not know the node (its store was replaced).
                    registered = false;
                    generation = 0;
                }
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error = %e, failures, "cluster heartbeat failed; pods keep running");
                }
            }
        }
        let wait = if failures > 0 {
            // Back off up to the period, fast at first (a master restart).
            Duration::from_millis(100 * 2u64.pow(failures.min(6)))
                .min(period.max(Duration::from_secs(1)))
        } else if news {
            // A new set: the next heartbeat waits for the round that applies it (up to a
            // hold), so it reports the result on this connection; dropping a held request
            // to report would cost a new connection and TLS handshake each time.
            hold
        } else {
            // The master held the answer as asked: the next heartbeat follows at once; one
            // that came early with nothing new (a master that holds none) waits for what is
            // left of the hold.
            hold.saturating_sub(sent.elapsed())
        };
        if !wait.is_zero() && failures == 0 {
            // A round that changed pods is reported at once, also during the wait.
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = changed.notified() => {}
            }
        } else if !wait.is_zero() {
            tokio::time::sleep(jitter(wait)).await;
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// ±10%, so that many agents started together spread their heartbeats.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(1.0 + spread())
}

/// A number in [-0.1, 0.1], from the clock's nanoseconds (no RNG needed for this).
fn spread() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 2001) / 10_000.0 - 0.1
}

async fn beat(
    client: &Client,
    name: &str,
    node: &impl LocalNode,
    generation: u64,
    hold: Duration,
    refusals: &Refusals,
) -> Result<Option<HeartbeatReply>, ClientError> {
    let (usage, pods) = tokio::join!(node.usage(), node.pods());
    let mut report: Vec<PodReport> = pods
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "listing pods for the heartbeat");
            Vec::new()
        })
        .into_iter()
        .map(|p| PodReport {
            instance: p.instance,
            state: p.state,
            message: p.message,
        })
        .collect();
    if let Ok(r) = refusals.lock() {
        report.extend(r.iter().map(|(instance, why)| PodReport {
            instance: instance.clone(),
            state: ReportedState::Refused,
            message: Some(why.clone()),
        }));
    }
    let hb = Heartbeat {
        generation,
        usage,
        pods: report,
        wait_ms: Some(hold.as_millis() as u64),
    };
    client
        .post_waiting(&format!("/v1/cluster/nodes/{name}/heartbeat"), &hb, hold)
        .await
        .map(Some)
}

/// Converges whenever the desired set changes, and every period besides (level-triggered:
/// a pod removed by hand, or a create that failed, is repaired on the next round).
async fn reconcile_loop(
    node: impl LocalNode,
    mut desired: tokio::sync::watch::Receiver<Option<Arc<Vec<Assignment>>>>,
    period: tokio::sync::watch::Receiver<Duration>,
    refusals: Refusals,
    changed: Arc<tokio::sync::Notify>,
) {
    loop {
        let set = desired.borrow_and_update().clone();
        if let Some(set) = set {
            if converge(&node, &set, &refusals).await {
                changed.notify_one();
            }
        }
        let wait = *period.borrow();
        tokio::select! {
            changed = desired.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One round: removes assigned pods no longer desired (or of an older incarnation), then
/// creates the desired ones missing, several at once. Whether a pod was removed, started
/// or refused (a create that failed and is retried next round changes nothing to report).
pub async fn converge(node: &impl LocalNode, set: &[Assignment], refusals: &Refusals) -> bool {
    let local = match node.pods().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "listing pods to reconcile");
            return false;
        }
    };
    let want: BTreeMap<&str, &Assignment> = set.iter().map(|a| (a.instance.as_str(), a)).collect();
    let mut have = HashSet::new();
    let mut removals = tokio::task::JoinSet::new();
    for p in &local {
        if want.contains_key(p.instance.as_str()) {
            have.insert(p.instance.clone());
            continue;
        }
        tracing::info!(pod = %p.name, instance = %p.instance, "removing a pod no longer assigned");
        let (node, name, grace) = (node.clone(), p.name.clone(), p.grace);
        // At once, each with its grace period (a stop waits for it).
        removals.spawn(async move {
            if let Err(e) = node.remove(name.clone(), grace).await {
                tracing::warn!(pod = %name, error = %e, "removing an unassigned pod");
            }
        });
    }
    let mut changed = !removals.is_empty();
    while removals.join_next().await.is_some() {}
    let refused: HashSet<String> = refusals
        .lock()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default();
    let missing: Vec<Assignment> = set
        .iter()
        .filter(|a| !have.contains(&a.instance) && !refused.contains(&a.instance))
        .cloned()
        .collect();
    let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL_CREATES));
    let mut creates = tokio::task::JoinSet::new();
    for a in missing {
        let node = node.clone();
        let limit = limit.clone();
        creates.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let instance = a.instance.clone();
            (instance, node.create(a).await)
        });
    }
    while let Some(done) = creates.join_next().await {
        let Ok((instance, result)) = done else {
            continue;
        };
        match result {
            Ok(()) => {
                changed = true;
                tracing::info!(%instance, "assigned pod started");
            }
            Err(CreateError::Refused(why)) => {
                changed = true;
                tracing::info!(%instance, reason = %why, "assigned pod refused");
                if let Ok(mut r) = refusals.lock() {
                    r.insert(instance, why);
                }
            }
            Err(CreateError::Failed(why)) => {
                tracing::warn!(%instance, error = %why, "creating an assigned pod; retried next round");
            }
        }
    }
    changed
}
