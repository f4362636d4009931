//! The HTTP API (docs/api.md): each handler parses its request into an [`Action`] for the
//! owner, or streams from what the owner handed out (logs, attach, wait).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use berth_runtime::state::ExitRecord;
use berth_runtime::supervisor::protocol;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use super::error::ApiError;
use super::node::{Action, Handle};
use super::request::Strict;
use crate::api::*;

/// The owner's inbox, every handler's state.
pub type Tx = mpsc::Sender<Action>;

/// Routes of `/v1`.
pub fn router(tx: Tx) -> Router {
    Router::new()
        .route("/v1/version", get(version))
        .route("/v1/node", get(node_view))
        .route("/v1/images", get(list_images))
        .route("/v1/images/pull", post(pull))
        .route("/v1/images/import", post(import))
        .route("/v1/images/inspect", get(inspect_image))
        .route("/v1/images/remove", post(remove_image))
        .route("/v1/images/prune", post(prune))
        .route("/v1/images/rootfs", post(rootfs))
        .route("/v1/containers", post(create).get(list))
        .route("/v1/containers/{id}", get(inspect).merge(delete(remove)))
        .route("/v1/containers/{id}/start", post(start))
        .route("/v1/containers/{id}/attach", post(attach))
        .route("/v1/containers/{id}/wait", post(wait))
        .route("/v1/containers/{id}/kill", post(kill))
        .route("/v1/containers/{id}/stop", post(stop))
        .route("/v1/containers/{id}/logs", get(logs))
        .route("/v1/containers/{id}/top", get(top))
        .route("/v1/containers/{id}/stats", get(stats))
        .route("/v1/containers/{id}/exec", post(exec))
        .route(
            "/v1/containers/{id}/exec/{exec_id}/attach",
            post(exec_attach),
        )
        .merge(super::routes_pods::router())
        .with_state(tx)
}

/// Sends an action built around a reply channel and awaits the answer.
pub async fn ask<T>(
    tx: &Tx,
    make: impl FnOnce(oneshot::Sender<Result<T, ApiError>>) -> Action,
) -> Result<T, ApiError> {
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply))
        .await
        .map_err(|_| ApiError::internal("the agent is shutting down"))?;
    rx.await
        .map_err(|_| ApiError::internal("the agent dropped the request"))?
}

async fn resolve(tx: &Tx, id: String) -> Result<Handle, ApiError> {
    ask(tx, |r| Action::Resolve(id, r)).await
}

/// Answered by the owner: an answer means the agent has recovered (a readiness probe).
async fn version(State(tx): State<Tx>) -> Result<Json<serde_json::Value>, ApiError> {
    ask(&tx, Action::Ready).await?;
    Ok(Json(
        serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "api": "v1" }),
    ))
}

fn ndjson(mut rx: mpsc::Receiver<ProgressLine>) -> Response {
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|line| {
            line.map(|l| {
                let mut bytes = serde_json::to_vec(&l).unwrap_or_default();
                bytes.push(b'\n');
                Ok::<_, Infallible>(bytes)
            })
        })
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| ApiError::internal(e).into_response())
}

async fn pull(
    State(tx): State<Tx>,
    Strict(req): Strict<PullRequest>,
) -> Result<Response, ApiError> {
    let (lines, rx) = mpsc::channel(64);
    tx.send(Action::Pull(req, lines))
        .await
        .map_err(|_| ApiError::internal("the agent is shutting down"))?;
    Ok(ndjson(rx))
}

async fn import(State(tx): State<Tx>, Query(q): Query<ImportQuery>) -> Result<Response, ApiError> {
    if q.path.as_deref().is_none_or(|p| !p.starts_with('/')) {
        return Err(ApiError::bad_request("import needs an absolute path"));
    }
    let (lines, rx) = mpsc::channel(64);
    tx.send(Action::Import(q, lines))
        .await
        .map_err(|_| ApiError::internal("the agent is shutting down"))?;
    Ok(ndjson(rx))
}

async fn list_images(
    State(tx): State<Tx>,
    Query(q): Query<crate::api::ListImagesQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        ask(&tx, |r| Action::ListImages(q.reference, r)).await?,
    ))
}

#[derive(Deserialize)]
struct NameQuery {
    name: String,
}

async fn inspect_image(
    State(tx): State<Tx>,
    Query(q): Query<NameQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(ask(&tx, |r| Action::InspectImage(q.name, r)).await?))
}

async fn remove_image(
    State(tx): State<Tx>,
    Strict(req): Strict<RemoveImageRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(ask(&tx, |r| Action::RemoveImage(req, r)).await?))
}

async fn prune(State(tx): State<Tx>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(ask(&tx, Action::Prune).await?))
}

async fn rootfs(
    State(tx): State<Tx>,
    Strict(req): Strict<RootfsRequest>,
) -> Result<impl IntoResponse, ApiError> {
    ask(&tx, |r| Action::Rootfs(req, r)).await?;
    Ok(Json(serde_json::json!({})))
}

async fn create(
    State(tx): State<Tx>,
    Strict(task): Strict<berth_runtime::task::TaskSpec>,
) -> Result<impl IntoResponse, ApiError> {
    let created = ask(&tx, |r| Action::Create(Box::new(task), r)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn node_view(State(tx): State<Tx>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(ask(&tx, Action::Node).await?))
}

async fn list(State(tx): State<Tx>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(ask(&tx, Action::List).await?))
}

async fn inspect(
    State(tx): State<Tx>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(resolve(&tx, id).await?.info))
}

async fn start(
    State(tx): State<Tx>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let pid = ask(&tx, |r| Action::Start(id, r)).await?;
    Ok(Json(serde_json::json!({ "pid": pid })))
}

#[derive(Deserialize)]
struct AttachQuery {
    #[serde(default)]
    start: bool,
}

/// Upgrades the connection and splices it to `stream`, a supervisor's socket: the client
/// then speaks the supervisor protocol (`runtime::supervisor::protocol`) directly.
fn splice(mut stream: tokio::net::UnixStream, req: Request) -> Response {
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = hyper_util::rt::TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut stream).await;
            }
            Err(e) => tracing::debug!(error = %e, "attach upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "berth-attach")
        .body(Body::empty())
        .unwrap_or_else(|e| ApiError::internal(e).into_response())
}

async fn attach(
    State(tx): State<Tx>,
    Path(id): Path<String>,
    Query(q): Query<AttachQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let stream = ask(&tx, |reply| Action::Attach {
        id,
        start: q.start,
        reply,
    })
    .await?;
    Ok(splice(stream, req))
}

async fn exec_attach(
    State(tx): State<Tx>,
    Path((id, exec_id)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    if exec_id.len() != 16 || !exec_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request("bad exec id"));
    }
    let h = resolve(&tx, id).await?;
    let mut stream = super::start::connect(&h.dir.execs().join(format!("{exec_id}.sock"))).await?;
    stream
        .write_all(&protocol::encode(protocol::START, b""))
        .await
        .map_err(ApiError::internal)?;
    Ok(splice(stream, req))
}

async fn wait_exit(h: &mut Handle) -> Option<ExitRecord> {
    h.exit
        .wait_for(|e| e.is_some())
        .await
        .ok()
        .and_then(|e| e.clone())
}

async fn wait(State(tx): State<Tx>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let mut h = resolve(&tx, id).await?;
    let exit = wait_exit(&mut h)
        .await
        .ok_or_else(|| ApiError::internal("the container was lost"))?;
    Ok(Json(exit))
}

async fn kill(
    State(tx): State<Tx>,
    Path(id): Path<String>,
    Query(q): Query<KillQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let text = q.signal.unwrap_or_else(|| "TERM".into());
    let sig = parse_signal(&text)
        .ok_or_else(|| ApiError::bad_request(format!("unknown signal {text:?}")))?;
    ask(&tx, |reply| Action::Kill {
        id,
        signal: sig,
        all: false,
        reply,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stop(
    State(tx): State<Tx>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let grace = Duration::from_secs(q.timeout.unwrap_or(10));
    ask(&tx, |r| Action::Stop(id, grace, r)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove(
    State(tx): State<Tx>,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<impl IntoResponse, ApiError> {
    ask(&tx, |r| Action::Remove(id, q.force, r)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logs(
    State(tx): State<Tx>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let rx = ask(&tx, |r| Action::Logs(id, q, r)).await?;
    let mut rx = rx;
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|c| c.map(Ok::<_, Infallible>))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}

async fn top(State(tx): State<Tx>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let h = resolve(&tx, id).await?;
    let path = std::path::PathBuf::from(&h.info.cgroup_path);
    let top = tokio::task::spawn_blocking(move || super::probe::top(&path))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(top))
}

async fn stats(
    State(tx): State<Tx>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let h = resolve(&tx, id).await?;
    if h.exit.borrow().is_some() {
        return Err(ApiError::conflict(format!(
            "container {} is not running",
            h.id
        )));
    }
    let path = std::path::PathBuf::from(&h.info.cgroup_path);
    let mut usage = tokio::task::spawn_blocking(move || {
        let m = berth_runtime::cgroups::manager(&path).map_err(ApiError::internal)?;
        berth_runtime::cgroups::usage(&m, &path).map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)??;
    usage.disk = h.info.disk.clone();
    Ok(Json(usage))
}

async fn exec(
    State(tx): State<Tx>,
    Path(id): Path<String>,
    Strict(req): Strict<ExecRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let exec_id = ask(&tx, |r| Action::Exec(id, Box::new(req), r)).await?;
    Ok((StatusCode::CREATED, Json(ExecCreated { exec_id })))
}
