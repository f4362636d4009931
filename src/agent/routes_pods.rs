//! The pod and event routes of the API (docs/api.md): pods are created from a JSON pod
//! spec; events stream as NDJSON, the journal first, then live ones; CNI networks are
//! listed and checked.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::events::{parse_filters, Event};
use super::node::Action;
use super::request::Strict;
use super::routes::{ask, Tx};

/// Routes of `/v1/pods`, `/v1/events` and `/v1/networks`.
pub fn router() -> Router<Tx> {
    Router::new()
        .route("/v1/pods", post(create).get(list))
        .route("/v1/pods/{id}", get(inspect).delete(remove))
        .route("/v1/pods/{id}/stop", post(stop))
        .route("/v1/events", get(events))
        .route("/v1/networks", get(networks))
        .route("/v1/networks/check/{id}", post(check_network))
}

async fn networks(State(tx): State<Tx>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(ask(&tx, Action::ListNetworks).await?))
}

/// CNI CHECK of a pod's or container's network; answers the networks checked.
async fn check_network(
    State(tx): State<Tx>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(ask(&tx, |r| Action::CheckNetwork(id, r)).await?))
}

async fn create(
    State(tx): State<Tx>,
    Strict(spec): Strict<berth_runtime::pod::PodSpec>,
) -> Result<impl IntoResponse, ApiError> {
    let info = ask(&tx, |r| Action::CreatePod(Box::new(spec), r)).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn list(State(tx): State<Tx>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(ask(&tx, Action::ListPods).await?))
}

async fn inspect(
    State(tx): State<Tx>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(ask(&tx, |r| Action::InspectPod(id, r)).await?))
}

#[derive(Deserialize)]
struct StopQuery {
    timeout: Option<u64>,
}

async fn stop(
    State(tx): State<Tx>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let grace = Duration::from_secs(q.timeout.unwrap_or(10));
    ask(&tx, |r| Action::StopPod(id, grace, r)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

async fn remove(
    State(tx): State<Tx>,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<impl IntoResponse, ApiError> {
    if q.force {
        // Stopping first lets each container record its exit, as `rm -f` of one does.
        let _ = ask(&tx, |r| Action::StopPod(id.clone(), Duration::ZERO, r)).await;
    }
    ask(&tx, |r| Action::RemovePod(id, q.force, r)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct EventsQuery {
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    filters: String,
    #[serde(default)]
    follow: bool,
}

fn time_of(field: &str, text: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|e| ApiError::bad_request(format!("invalid {field} {text:?}: {e}")))
}

fn in_window(
    e: &Event,
    since: Option<chrono::DateTime<chrono::FixedOffset>>,
    until: Option<chrono::DateTime<chrono::FixedOffset>>,
) -> bool {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(&e.time) else {
        return false;
    };
    since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u)
}

async fn events(State(tx): State<Tx>, Query(q): Query<EventsQuery>) -> Result<Response, ApiError> {
    let filters = parse_filters(&q.filters).map_err(ApiError::bad_request)?;
    let since = q
        .since
        .as_deref()
        .map(|s| time_of("since", s))
        .transpose()?;
    let until = q
        .until
        .as_deref()
        .map(|s| time_of("until", s))
        .transpose()?;
    let (history, mut live) = ask(&tx, Action::Events).await?;
    let (out, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let line = |e: &Event| {
        let mut b = serde_json::to_vec(e).unwrap_or_default();
        b.push(b'\n');
        b
    };
    tokio::spawn(async move {
        let mut last = 0;
        for e in &history {
            last = e.seq;
            if in_window(e, since, until) && e.matches(&filters) && out.send(line(e)).await.is_err()
            {
                return;
            }
        }
        if !q.follow {
            return;
        }
        loop {
            let e = match live.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            if e.seq <= last {
                continue;
            }
            if until
                .is_some_and(|u| chrono::DateTime::parse_from_rfc3339(&e.time).is_ok_and(|t| t > u))
            {
                return;
            }
            if e.matches(&filters) && out.send(line(&e)).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}
