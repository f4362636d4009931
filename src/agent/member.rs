//! The agent as a member of a cluster (`--master`): the credential is obtained once (join
//! with the token, the CA pinned by its hash) and kept in `<root>/cluster/member.json`;
//! then `berth_cluster::member::run` registers, heartbeats and converges, acting on the
//! node through the owner's actions like any API client. Only pods that carry an instance
//! label are ever listed to the master or removed by it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use berth_api::cluster::{
    Amount, Assignment, Registration, ReportedState, UsageReport, INSTANCE_LABEL,
};
use berth_api::pod::PodPhase;
use berth_api::{ErrorCode, PodView};
use berth_cluster::member::{CreateError, Credential, LocalNode, LocalPod};
use tokio::sync::mpsc;

use super::node::Action;
use super::routes::ask;

/// What `--master` and its flags ask for.
#[derive(Debug, Clone)]
pub struct Membership {
    master: String,
    token: Option<String>,
    ca_hash: Option<String>,
    node_name: String,
    labels: BTreeMap<String, String>,
}

impl Membership {
    /// From the agent's flags; `None` without `--master`.
    pub fn from_args(args: &crate::cli_containers::AgentArgs) -> Result<Option<Self>> {
        let Some(master) = args.master.clone() else {
            if args.join_token.is_some() || args.ca_cert_hash.is_some() {
                anyhow::bail!("--join-token and --ca-cert-hash need --master");
            }
            return Ok(None);
        };
        if !master.starts_with("https://") {
            anyhow::bail!("--master {master:?}: the cluster API is HTTPS only (https://HOST:PORT)");
        }
        if let Some(h) = &args.ca_cert_hash {
            let hex = h.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!("--ca-cert-hash {h:?}: want sha256:<64 hex digits>");
            }
        }
        let node_name = match &args.node_name {
            Some(n) => n.clone(),
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .context("the host name (give --node-name)")?,
        };
        let mut labels = BTreeMap::new();
        for l in &args.node_labels {
            let (k, v) = l
                .split_once('=')
                .with_context(|| format!("--node-label {l:?}: want key=value"))?;
            labels.insert(k.to_string(), v.to_string());
        }
        Ok(Some(Self {
            master,
            token: args.join_token.clone(),
            ca_hash: args.ca_cert_hash.clone(),
            node_name,
            labels,
        }))
    }

    /// Checks at start that a credential exists or can be obtained (a clear error now,
    /// not a silent retry loop).
    pub fn check(&self, root: &std::path::Path) -> Result<()> {
        let path = credential_path(root);
        let have = Credential::load(&path)?.is_some_and(|c| c.node_name == self.node_name);
        if !have && (self.token.is_none() || self.ca_hash.is_none()) {
            anyhow::bail!(
                "joining {} needs --join-token and --ca-cert-hash (no credential in {})",
                self.master,
                path.display()
            );
        }
        Ok(())
    }
}

fn credential_path(root: &std::path::Path) -> PathBuf {
    root.join("cluster").join("member.json")
}

/// Joins when needed (retrying while the master is away), then runs the member loop.
pub fn start(
    m: Membership,
    root: PathBuf,
    tx: mpsc::Sender<Action>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let path = credential_path(&root);
        let mut failures = 0u32;
        let cred = loop {
            match Credential::load(&path) {
                Ok(Some(mut c)) if c.node_name == m.node_name => {
                    // The masters are the flag's (one added, one moved): the certificate
                    // stays valid, the cluster's CA is the same.
                    if c.master != m.master {
                        tracing::info!(from = %c.master, to = %m.master, "the cluster's masters changed");
                        c.master = m.master.clone();
                        if let Err(e) = c.save(&path) {
                            tracing::warn!(error = %e, "saving the cluster credential");
                        }
                    }
                    break c;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading the cluster credential; joining again")
                }
            }
            let (Some(token), Some(hash)) = (&m.token, &m.ca_hash) else {
                tracing::error!("no cluster credential and no join token");
                return;
            };
            match berth_cluster::member::join(&m.master, token, hash, &m.node_name).await {
                Ok(c) => {
                    if let Err(e) = c.save(&path) {
                        tracing::error!(error = %e, "saving the cluster credential");
                        return;
                    }
                    tracing::info!(master = %m.master, node = %m.node_name, "joined the cluster");
                    break c;
                }
                Err(e @ berth_cluster::member::MemberError::CaMismatch { .. }) => {
                    tracing::error!(error = %e, "not joining");
                    return;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "joining the cluster; retrying");
                    let wait = std::time::Duration::from_millis(200 * 2u64.pow(failures.min(6)));
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let node = AgentNode {
            tx,
            labels: m.labels,
            name: m.node_name,
        };
        berth_cluster::member::run(cred, node).await;
    })
}

/// The node, seen through the owner's actions.
#[derive(Debug, Clone)]
struct AgentNode {
    tx: mpsc::Sender<Action>,
    labels: BTreeMap<String, String>,
    name: String,
}

/// `GET /v1/node`'s figures (millicores, bytes) as the cluster API's.
fn amount(millicpu: f64, memory: f64) -> Amount {
    Amount {
        millicpu: millicpu.max(0.0).round() as u64,
        memory: memory.max(0.0) as u64,
    }
}

fn state_of(p: &PodView) -> (ReportedState, Option<String>) {
    let revoked = p
        .members
        .values()
        .any(|m| m.last_exit.as_ref().is_some_and(|e| e.reason == "revoked"));
    match p.phase {
        _ if revoked && p.phase != PodPhase::Running && p.phase != PodPhase::Starting => {
            (ReportedState::Revoked, p.message.clone())
        }
        PodPhase::Starting | PodPhase::Running => (ReportedState::Running, None),
        PodPhase::Succeeded => (ReportedState::Succeeded, None),
        PodPhase::Failed | PodPhase::Stopped => (ReportedState::Failed, p.message.clone()),
    }
}

impl LocalNode for AgentNode {
    async fn following(&self, master: String, masters: Vec<String>, connected: bool) {
        if master != masters.first().cloned().unwrap_or_default() || connected {
            tracing::debug!(%master, connected, "cluster member follows");
        }
        let view = crate::api::node::MemberView {
            node_name: self.name.clone(),
            master,
            masters,
            connected,
        };
        let _ = self.tx.send(Action::Member(view)).await;
    }

    async fn registration(&self) -> Registration {
        let view = ask(&self.tx, Action::Node).await.ok();
        let (capacity, allocatable, kernel, cgroup) = match &view {
            Some(v) => (
                amount(v.cpu.capacity, v.memory.capacity),
                amount(v.cpu.allocatable, v.memory.allocatable),
                v.kernel.clone(),
                if v.cgroup_version.contains('2') { 2 } else { 1 },
            ),
            None => Default::default(),
        };
        Registration {
            node_name: self.name.clone(),
            hostname: view
                .as_ref()
                .map(|v| v.hostname.clone())
                .unwrap_or_default(),
            labels: self.labels.clone(),
            capacity,
            allocatable,
            kernel,
            cgroup_version: cgroup,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    async fn usage(&self) -> UsageReport {
        let Ok(v) = ask(&self.tx, Action::Node).await else {
            return UsageReport::default();
        };
        let (c, m) = (&v.cpu, &v.memory);
        UsageReport {
            allocated: amount(
                c.allocated.guaranteed + c.allocated.burstable,
                m.allocated.guaranteed + m.allocated.burstable,
            ),
            allocated_revocable: amount(c.allocated.revocable, m.allocated.revocable),
            used: amount(c.used, m.used),
            revocable_free: amount(c.revocable_free, m.revocable_free),
            pressure: v.pressure.map(|p| (p.cpu.some_avg10, p.memory.some_avg10)),
        }
    }

    async fn pods(&self) -> Result<Vec<LocalPod>, String> {
        let pods = ask(&self.tx, Action::ListPods)
            .await
            .map_err(|e| e.message)?;
        Ok(pods
            .into_iter()
            .filter_map(|p| {
                let instance = p.spec.labels.get(INSTANCE_LABEL)?.clone();
                let (state, message) = state_of(&p);
                let grace = p.spec.termination_grace_period_seconds.unwrap_or(10);
                Some(LocalPod {
                    name: p.name,
                    instance,
                    state,
                    message,
                    grace: std::time::Duration::from_secs(grace),
                })
            })
            .collect())
    }

    async fn create(&self, a: Assignment) -> Result<(), CreateError> {
        let mut pulled = std::collections::BTreeSet::new();
        loop {
            let spec = Box::new(a.pod.clone());
            let err = match ask(&self.tx, |r| Action::CreatePod(spec, r)).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            match err.code {
                ErrorCode::InsufficientResources => return Err(CreateError::Refused(err.message)),
                ErrorCode::NoSuchImage => {
                    let Some(image) = err.about.clone().filter(|i| !pulled.contains(i)) else {
                        return Err(CreateError::Failed(err.message));
                    };
                    self.pull(&image).await.map_err(CreateError::Failed)?;
                    pulled.insert(image);
                }
                _ => return Err(CreateError::Failed(err.message)),
            }
        }
    }

    async fn remove(&self, name: String, grace: std::time::Duration) -> Result<(), String> {
        // Stopping first lets each container record its exit, as `pod rm -f` does.
        let _ = ask(&self.tx, |r| Action::StopPod(name.clone(), grace, r)).await;
        ask(&self.tx, |r| Action::RemovePod(name, true, r))
            .await
            .map_err(|e| e.message)
    }
}

impl AgentNode {
    async fn pull(&self, image: &str) -> Result<(), String> {
        let req = berth_api::image::PullRequest {
            reference: image.to_string(),
            platform: None,
            insecure_registries: Vec::new(),
            creds: None,
            authfile: None,
            max_layer_bytes: None,
        };
        let (lines, mut rx) = mpsc::channel(64);
        self.tx
            .send(Action::Pull(req, lines))
            .await
            .map_err(|_| "the agent is shutting down".to_string())?;
        let mut stored = false;
        while let Some(line) = rx.recv().await {
            match line {
                berth_api::image::ProgressLine::Error(e) => {
                    return Err(format!("pulling {image}: {e}"))
                }
                berth_api::image::ProgressLine::Image(_) => stored = true,
                berth_api::image::ProgressLine::Progress(_) => {}
            }
        }
        if stored {
            Ok(())
        } else {
            Err(format!("pulling {image}: the pull ended without an image"))
        }
    }
}
