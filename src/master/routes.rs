//! The cluster API's routes (docs/cluster.md). Each checks who is asking — the identity of
//! the connection's client certificate — then hands the request to the cluster state. Only
//! the CA and `join` answer without a certificate; `join` checks the token.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use berth_api::cluster::{Heartbeat, JobRequest, JoinRequest, JoinResponse, Registration};
use berth_api::ErrorCode;
use berth_cluster::member::CaAnswer;
use serde::Deserialize;

use super::state::{Cluster, Identity};
use super::Master;
use crate::agent::error::ApiError;

/// The fingerprint of the connection's client certificate, if it presented one.
#[derive(Debug, Clone)]
pub struct Peer(pub Option<String>);

type Shared = Arc<Master>;

/// Every route.
pub fn router(master: Shared) -> Router {
    Router::new()
        .route("/v1/cluster/ca", get(ca))
        .route("/v1/cluster/join", post(join))
        .route("/v1/cluster/nodes", get(nodes))
        .route("/v1/cluster/nodes/{name}/register", post(register))
        .route("/v1/cluster/nodes/{name}/heartbeat", post(heartbeat))
        .route("/v1/cluster/nodes/{name}/drain", post(drain))
        .route("/v1/cluster/jobs", get(jobs).post(submit))
        .route("/v1/cluster/jobs/{name}", get(job).delete(remove))
        .route("/v1/cluster/instances", get(instances))
        .route("/v1/cluster/events", get(events))
        .route("/v1/cluster/status", get(super::status::status))
        .route("/dashboard", get(super::dashboard::page))
        .route(
            "/v1/cluster/dashboard/session",
            post(super::dashboard::session),
        )
        .layer(axum::middleware::from_fn_with_state(
            master.clone(),
            super::status::follow_the_leader,
        ))
        .with_state(master)
}

/// The error of a master that does not lead (in flight while leadership changed hands).
pub fn not_leading() -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        "this master does not lead now (an election is under way); try again or ask the leader",
    )
}

/// Runs `f` on the cluster state off the async workers (a commit fsyncs), and wakes the
/// placement loop when `f` left instances pending.
pub async fn with<T: Send + 'static>(
    m: &Shared,
    f: impl FnOnce(&mut Cluster) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let m = m.clone();
    tokio::task::spawn_blocking(move || {
        if m.ha.as_ref().is_some_and(|(_, e)| !e.leading()) {
            return Err(not_leading());
        }
        let mut c = m
            .cluster
            .lock()
            .map_err(|_| ApiError::internal("the cluster state lock is poisoned"))?;
        let Some(c) = c.as_mut() else {
            return Err(not_leading());
        };
        let r = f(c);
        if c.has_pending() {
            m.wake.notify_one();
        }
        r
    })
    .await
    .map_err(ApiError::internal)?
}

/// Who the connection's certificate is. Never blocks an async worker on the state's lock
/// (a commit may hold it while etcd answers): uncontended it is read at once, else on the
/// blocking pool.
async fn identity(m: &Shared, peer: &Peer) -> Result<Identity, ApiError> {
    let Some(fp) = peer.0.clone() else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "a client certificate of the cluster is required",
        ));
    };
    // None: the lock is busy.
    let quick: Option<Result<Option<Identity>, ApiError>> = match m.cluster.try_lock() {
        Ok(c) => Some(c.as_ref().map(|c| c.identity(&fp)).ok_or_else(not_leading)),
        Err(std::sync::TryLockError::Poisoned(_)) => Some(Err(ApiError::internal(
            "the cluster state lock is poisoned",
        ))),
        Err(std::sync::TryLockError::WouldBlock) => None,
    };
    let found = match quick {
        Some(r) => r?,
        None => with(m, move |c| Ok(c.identity(&fp))).await?,
    };
    found.ok_or_else(unknown_certificate)
}

fn unknown_certificate() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "this certificate is no longer valid (the node joined again, or the cluster was re-initialised)",
    )
}

/// Whether the peer is the admin, from the store (a follower has no state). Blocks: run
/// it on the blocking pool.
pub fn admin_from_store(m: &Shared, peer: &Peer) -> Result<(), ApiError> {
    let Some(fp) = &peer.0 else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "a client certificate of the cluster is required",
        ));
    };
    let key = format!("identities/{fp}");
    let who: Option<Identity> = m
        .store
        .list(&key)
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("{e:#}")))?
        .into_iter()
        .find(|e| e.key == key)
        .and_then(|e| serde_json::from_slice(&e.value).ok());
    match who {
        Some(Identity::Admin) => Ok(()),
        Some(Identity::Node(n)) => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("node {n}'s certificate may not do this: an admin credential is required"),
        )),
        None => Err(unknown_certificate()),
    }
}

pub async fn admin(m: &Shared, peer: &Peer) -> Result<(), ApiError> {
    match identity(m, peer).await? {
        Identity::Admin => Ok(()),
        Identity::Node(n) => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("node {n}'s certificate may not do this: an admin credential is required"),
        )),
    }
}

async fn node(m: &Shared, peer: &Peer, name: &str) -> Result<(), ApiError> {
    match identity(m, peer).await? {
        Identity::Node(n) if n == name => Ok(()),
        Identity::Node(n) => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("node {n}'s certificate may not act for node {name}"),
        )),
        Identity::Admin => Err(ApiError::new(
            ErrorCode::Forbidden,
            "only the node itself registers and reports",
        )),
    }
}

async fn ca(State(m): State<Shared>) -> Json<CaAnswer> {
    Json(CaAnswer {
        ca_pem: m.ca_pem.clone(),
    })
}

/// Node names as the agent's pod names: lowercase letters, digits, '-' and '.'.
fn check_node_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "node name {name:?} must be 1-63 lowercase letters, digits, '-' or '.'"
        ))
        .in_field("node_name"))
    }
}

/// Compares in time independent of where the strings differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn join(
    State(m): State<Shared>,
    Json(req): Json<JoinRequest>,
) -> Result<Json<JoinResponse>, ApiError> {
    if !same_secret(req.token.trim(), &m.token) {
        return Err(ApiError::new(ErrorCode::Unauthorized, "wrong join token"));
    }
    check_node_name(&req.node_name)?;
    let (cert_pem, key_pem) = m
        .authority
        .issue_client(&format!("node:{}", req.node_name))
        .map_err(|e| ApiError::internal(format!("issuing a certificate: {e:#}")))?;
    let der =
        berth_cluster::tls::certs("node certificate", &cert_pem).map_err(ApiError::internal)?;
    let fp = berth_cluster::tls::fingerprint(&der[0]);
    let name = req.node_name.clone();
    with(&m, move |c| c.add_identity(&fp, Identity::Node(name))).await?;
    Ok(Json(JoinResponse {
        node_name: req.node_name,
        cert_pem,
        key_pem,
    }))
}

async fn register(
    State(m): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    Json(reg): Json<Registration>,
) -> Result<impl IntoResponse, ApiError> {
    node(&m, &peer, &name).await?;
    if reg.node_name != name {
        return Err(ApiError::bad_request(format!(
            "node_name {:?} is not {name:?}",
            reg.node_name
        )));
    }
    with(&m, move |c| c.register(reg)).await?;
    Ok(Json(serde_json::json!({})))
}

async fn heartbeat(
    State(m): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    Json(hb): Json<Heartbeat>,
) -> Result<impl IntoResponse, ApiError> {
    node(&m, &peer, &name).await?;
    let wait = hb.wait_ms.map(Duration::from_millis);
    let seen = hb.generation;
    let who = name.clone();
    let (reply, watch) = with(&m, move |c| {
        let reply = c.heartbeat(&who, hb)?;
        // Held only while the set is current, and never longer than the period.
        let hold = wait
            .filter(|_| reply.desired.is_none())
            .map(|w| w.min(c.period()));
        let watch = hold.and_then(|h| c.subscribe(&who).map(|rx| (rx, h)));
        Ok((reply, watch))
    })
    .await?;
    let Some((mut rx, hold)) = watch else {
        return Ok(Json(reply));
    };
    if tokio::time::timeout(hold, rx.changed()).await.is_err() {
        return Ok(Json(reply));
    }
    Ok(Json(
        with(&m, move |c| c.settle_heartbeat(&name, seen)).await?,
    ))
}

async fn nodes(
    State(m): State<Shared>,
    Extension(peer): Extension<Peer>,
) -> Result<impl IntoResponse, ApiError> {
    admin(&m, &peer).await?;
    Ok(Json(with(&m, |c| Ok(c.nodes())).await?))
}

async fn drain(
    State(m): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    admin(&m, &peer).await?;
    let moved = with(&m, move |c| c.drain(&name)).await?;
    Ok(Json(serde_json::json!({ "moved": moved })))
}

async fn jobs(
    State(m): State<Shared>,
    Extension(peer): Extension<Peer>,
) -> Result<impl IntoResponse, ApiError> {
    admin(&m, &peer).await?;
    Ok(Json(with(&m, |c| Ok(c.jobs())).await?))
}

async fn job(
    State(m): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    admin(&m, &peer).await?;
    let view = with(&m, move |c| {
        c.jobs()
            .into_iter()
            .find(|j| j.name == name)
            .ok_or_else(|| ApiError::not_found(format!("no such job: {name}")))
    })
    .await?;
    Ok(Json(view))
}

async fn submit(
    State(m): State<Shared>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<JobRequest>,
) -> Result<impl IntoResponse, ApiError> {
    admin(&m, &peer).await?;
    let view = with(&m, move |c| c.submit(req.job, req.qos)).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn remove(
    State(m): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    admin(&m, &peer).await?;
    with(&m, move |c| c.remove(&name)).await?;
    Ok(Json(serde_json::json!({})))
}

#[derive(Deserialize)]
struct InstancesQuery {
    job: Option<String>,
}

async fn instances(
    State(m): State<Shared>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<InstancesQuery>,
) -> Result<impl IntoResponse, ApiError> {
    admin(&m, &peer).await?;
    Ok(Json(
        with(&m, move |c| Ok(c.instances(q.job.as_deref()))).await?,
    ))
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    since: u64,
}

async fn events(
    State(m): State<Shared>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<EventsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    admin(&m, &peer).await?;
    Ok(Json(with(&m, move |c| Ok(c.events(q.since))).await?))
}
