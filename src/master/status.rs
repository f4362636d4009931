//! `GET /v1/cluster/status` (every master answers it, from the store) and the rule that
//! sends every other request to the leader: a follower answers `307 Temporary Redirect`
//! to the same path on the leader (method and body kept), or 503 while none is elected.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use berth_api::cluster::{ClusterStatus, MasterStatus, StoreStatus};
use berth_api::ErrorCode;

use super::ha::{MasterInfo, Role};
use super::routes::{admin_from_store, Peer};
use super::Master;
use crate::agent::error::ApiError;

/// Paths every master serves itself.
const LOCAL: [&str; 2] = ["/v1/cluster/status", "/v1/cluster/ca"];

/// The middleware: on a follower, everything but [`LOCAL`] goes to the leader.
pub async fn follow_the_leader(State(m): State<Arc<Master>>, req: Request, next: Next) -> Response {
    let Some((_, election)) = &m.ha else {
        return next.run(req).await;
    };
    if LOCAL.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    match election.role() {
        Role::Leading { .. } => next.run(req).await,
        Role::Following(Some(leader)) if leader.url != m.url => {
            let target = format!(
                "{}{}",
                leader.url.trim_end_matches('/'),
                req.uri().path_and_query().map_or("/", |p| p.as_str())
            );
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, target)],
                format!("{} leads\n", leader.name),
            )
                .into_response()
        }
        Role::Following(_) => ApiError::new(
            ErrorCode::Unavailable,
            "no master leads now (an election is under way, or etcd has no quorum); try again",
        )
        .into_response(),
    }
}

/// `GET /v1/cluster/status` (admin).
pub async fn status(
    State(m): State<Arc<Master>>,
    Extension(peer): Extension<Peer>,
) -> Result<Json<ClusterStatus>, ApiError> {
    let m2 = m.clone();
    tokio::task::spawn_blocking(move || {
        admin_from_store(&m2, &peer)?;
        Ok(Json(gather(&m2)))
    })
    .await
    .map_err(ApiError::internal)?
}

/// Blocks (reads the store).
fn gather(m: &Master) -> ClusterStatus {
    let revision = m.store.revision();
    let error = revision.as_ref().err().map(|e| format!("{e:#}"));
    let Some((etcd, election)) = &m.ha else {
        let me = MasterStatus {
            name: "master".into(),
            url: m.url.clone(),
            leader: true,
            since: m.started.clone(),
        };
        return ClusterStatus {
            answered_by: me.name.clone(),
            leader: Some(me.clone()),
            leader_since: Some(m.started.clone()),
            masters: vec![me],
            store: StoreStatus {
                kind: "embedded".into(),
                endpoints: vec!["cluster.redb".into()],
                prefix: String::new(),
                revision: revision.ok(),
                error,
            },
        };
    };
    let leader_rec: Option<MasterInfo> = m
        .store
        .list("leader")
        .ok()
        .and_then(|l| l.into_iter().find(|e| e.key == "leader"))
        .and_then(|e| serde_json::from_slice(&e.value).ok());
    let mut masters: Vec<MasterStatus> = m
        .store
        .list("masters/")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| serde_json::from_slice::<MasterInfo>(&e.value).ok())
        .map(|i| MasterStatus {
            leader: leader_rec.as_ref().is_some_and(|l| l.name == i.name),
            name: i.name,
            url: i.url,
            since: i.since,
        })
        .collect();
    if masters.is_empty() && error.is_some() {
        // etcd is away: this master still names itself and what it knows.
        masters.push(MasterStatus {
            name: election.me.name.clone(),
            url: m.url.clone(),
            leader: election.leading(),
            since: m.started.clone(),
        });
    }
    let leader = masters.iter().find(|s| s.leader).cloned();
    let o = etcd.options();
    ClusterStatus {
        answered_by: election.me.name.clone(),
        leader_since: leader_rec.filter(|_| leader.is_some()).map(|l| l.since),
        leader,
        masters,
        store: StoreStatus {
            kind: "etcd".into(),
            endpoints: o.endpoints.clone(),
            prefix: o.prefix.clone(),
            revision: revision.ok(),
            error,
        },
    }
}
