//! The dashboard: one read-only page, rendered on the server (no build toolchain, no
//! script library), that refreshes its body every two seconds with a few lines of script.
//!
//! A browser holds no client certificate, so the admin opens a session with one:
//! `berth cluster dashboard` asks `POST /v1/cluster/dashboard/session` (admin certificate)
//! for a link `…/dashboard?session=TOKEN`; the page turns it into an `HttpOnly`, `Secure`,
//! `SameSite=Strict` cookie. Sessions live in the leader's memory for 12 hours (a new
//! leader asks for a new link).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use berth_api::cluster::{ClusterEvent, ClusterNodeView, InstanceView, JobView, NodeState};
use berth_api::ErrorCode;
use serde::Deserialize;

use super::routes::{admin, with, Peer};
use super::Master;
use crate::agent::error::ApiError;

/// How long a session link works.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Events shown.
const EVENTS_SHOWN: usize = 40;

/// Open sessions: token → expiry.
#[derive(Debug, Default)]
pub struct Sessions(Mutex<HashMap<String, Instant>>);

impl Sessions {
    fn open(&self) -> Result<String, ApiError> {
        let token = super::pki::random_hex(24).map_err(ApiError::internal)?;
        let mut s = self
            .0
            .lock()
            .map_err(|_| ApiError::internal("the sessions lock is poisoned"))?;
        s.retain(|_, until| *until > Instant::now());
        s.insert(token.clone(), Instant::now() + SESSION_TTL);
        Ok(token)
    }

    fn valid(&self, token: &str) -> bool {
        self.0
            .lock()
            .map(|s| s.get(token).is_some_and(|until| *until > Instant::now()))
            .unwrap_or(false)
    }
}

/// `POST /v1/cluster/dashboard/session` (admin): a link that opens the dashboard.
pub async fn session(
    State(m): State<Arc<Master>>,
    Extension(peer): Extension<Peer>,
) -> Result<impl IntoResponse, ApiError> {
    admin(&m, &peer).await?;
    let token = m.sessions.open()?;
    Ok(Json(serde_json::json!({
        "url": format!("{}/dashboard?session={token}", m.url),
    })))
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    session: Option<String>,
    /// `body`: only the part the script swaps in.
    part: Option<String>,
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("berth_session=").map(str::to_string))
}

/// `GET /dashboard`: the page (or, with `?part=body`, its refreshed body).
pub async fn page(
    State(m): State<Arc<Master>>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = q.session {
        if !m.sessions.valid(&token) {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "this dashboard link expired: `berth cluster dashboard` prints a new one",
            ));
        }
        // The token leaves the address bar at once.
        return Ok((
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/dashboard".to_string()),
                (
                    header::SET_COOKIE,
                    format!("berth_session={token}; Path=/; Secure; HttpOnly; SameSite=Strict"),
                ),
            ],
        )
            .into_response());
    }
    if !cookie(&headers).is_some_and(|t| m.sessions.valid(&t)) {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "no dashboard session: open the link `berth cluster dashboard` prints",
        ));
    }
    let (nodes, instances, jobs, events) = with(&m, |c| {
        Ok((c.nodes(), c.instances(None), c.jobs(), c.events(0)))
    })
    .await?;
    let body = render_body(&m, &nodes, &instances, &jobs, &events);
    if q.part.as_deref() == Some("body") {
        return Ok(Html(body).into_response());
    }
    Ok(Html(format!(
        "{HEAD}<main id=\"body\">{body}</main>{SCRIPT}</body></html>"
    ))
    .into_response())
}

const HEAD: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>Berth cluster</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
.nodes{display:flex;flex-wrap:wrap;gap:1em}
.node{background:#fff;border:1px solid #ccc;border-radius:6px;padding:.8em;width:24em}
.node.lost{border-color:#c00;background:#fee}.node.draining{border-color:#d80}
.state{font-weight:bold}.lost .state{color:#c00}
.legend span{display:inline-block;margin-right:1em}.sw{width:.8em;height:.8em;display:inline-block;margin-right:.3em}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
.pods{margin:.4em 0 0;padding-left:1.2em}.running{color:#070}.pending{color:#a60}.failed{color:#c00}
</style></head><body><h1>Berth cluster</h1>
<div class="legend"><span><i class="sw" style="background:#ddd"></i>allocatable</span><span><i class="sw" style="background:#4a7fd4"></i>allocated</span><span><i class="sw" style="background:#2a2"></i>used</span><span><i class="sw" style="background:#e9a23b"></i>revocable free</span></div>
"#;

/// Refreshes the body every 2 s; a failed fetch leaves the last one and says so.
const SCRIPT: &str = r#"<script>
async function refresh(){
  try{const r=await fetch('/dashboard?part=body',{credentials:'same-origin'});
      if(r.ok){document.getElementById('body').innerHTML=await r.text();}
      else{document.getElementById('stale').textContent='refresh failed: '+r.status;}}
  catch(e){const s=document.getElementById('stale');if(s)s.textContent='master unreachable';}
}
setInterval(refresh,2000);
</script>"#;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One resource's bars: allocated, used and revocable free over allocatable.
fn bars(
    label: &str,
    total: u64,
    allocated: u64,
    used: u64,
    revocable: u64,
    unit: &dyn Fn(u64) -> String,
) -> String {
    let w = |v: u64| {
        if total == 0 {
            0.0
        } else {
            (v as f64 / total as f64).min(1.0) * 200.0
        }
    };
    format!(
        r##"<div class="res" data-resource="{label}">{label} <svg width="210" height="34" role="img" aria-label="{label}">
<rect x="0" y="0" width="200" height="34" fill="#ddd"/>
<rect class="allocated" x="0" y="2" width="{a:.1}" height="10" fill="#4a7fd4"/>
<rect class="used" x="0" y="12" width="{u:.1}" height="10" fill="#2a2"/>
<rect class="revocable" x="0" y="22" width="{r:.1}" height="10" fill="#e9a23b"/>
</svg> {al} / {tot} allocated, {us} used, {rv} revocable free</div>"##,
        a = w(allocated),
        u = w(used),
        r = w(revocable),
        al = unit(allocated),
        tot = unit(total),
        us = unit(used),
        rv = unit(revocable),
    )
}

fn cpu(m: u64) -> String {
    format!("{:.2} CPU", m as f64 / 1000.0)
}

fn mem(b: u64) -> String {
    format!("{} MiB", b >> 20)
}

fn render_body(
    m: &Master,
    nodes: &[ClusterNodeView],
    instances: &[InstanceView],
    jobs: &[JobView],
    events: &[ClusterEvent],
) -> String {
    let mut o = String::new();
    let leader = match &m.ha {
        None => format!("one master ({}), embedded store", esc(&m.url)),
        Some((etcd, e)) => {
            let since = match e.role() {
                super::ha::Role::Leading { since, .. } => since,
                super::ha::Role::Following(_) => "?".into(),
            };
            format!(
                "leader {} ({}) since {}, store etcd {}",
                esc(&e.me.name),
                esc(&m.url),
                esc(&since),
                esc(&etcd.options().endpoints.join(","))
            )
        }
    };
    let lost = nodes.iter().filter(|n| n.state == NodeState::Lost).count();
    let _ = write!(
        o,
        "<p id=\"summary\">{leader} · {} nodes ({lost} lost) · {} jobs · {} pods · updated {} <span id=\"stale\"></span></p><h2>Nodes</h2><div class=\"nodes\">",
        nodes.len(),
        jobs.len(),
        instances.len(),
        chrono::Utc::now().format("%H:%M:%S")
    );
    let mut by_node: BTreeMap<&str, Vec<&InstanceView>> = BTreeMap::new();
    for i in instances {
        if let Some(n) = &i.node {
            by_node.entry(n.as_str()).or_default().push(i);
        }
    }
    for n in nodes {
        let name = &n.registration.node_name;
        let state = match n.state {
            NodeState::Ready => "ready",
            NodeState::Draining => "draining",
            NodeState::Lost => "lost",
        };
        let total = n.registration.allocatable;
        let usage = n.usage.clone().unwrap_or_default();
        let allocated = n.assigned.plus(usage.allocated_revocable);
        let heard = n.last_heartbeat_ms.map_or("not yet".to_string(), |ms| {
            format!("{:.1} s ago", ms as f64 / 1000.0)
        });
        let _ = write!(
            o,
            "<div class=\"node {state}\" data-node=\"{n}\"><b>{n}</b> <span class=\"state\">{state}</span> · heartbeat {heard} · {c} pods",
            n = esc(name),
            c = n.instances
        );
        o.push_str(&bars(
            "cpu",
            total.millicpu,
            allocated.millicpu,
            usage.used.millicpu,
            usage.revocable_free.millicpu,
            &cpu,
        ));
        o.push_str(&bars(
            "memory",
            total.memory,
            allocated.memory,
            usage.used.memory,
            usage.revocable_free.memory,
            &mem,
        ));
        if let Some((c, mm)) = usage.pressure {
            let _ = write!(o, "<div>pressure: cpu {c:.1}%, memory {mm:.1}%</div>");
        }
        o.push_str("<ul class=\"pods\">");
        for i in by_node.get(name.as_str()).into_iter().flatten() {
            let _ = write!(
                o,
                "<li class=\"{s}\" data-pod=\"{p}\">{p} <i>{s}</i></li>",
                p = esc(&i.instance),
                s = format!("{:?}", i.state).to_lowercase()
            );
        }
        o.push_str("</ul></div>");
    }
    o.push_str("</div><h2>Jobs</h2><table id=\"jobs\"><tr><th>job</th><th>qos</th><th>count</th><th>states</th><th>pods (node)</th></tr>");
    for j in jobs {
        let states: Vec<String> = j.states.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let pods: Vec<String> = instances
            .iter()
            .filter(|i| i.job == j.name)
            .map(|i| {
                format!(
                    "<span data-job-pod=\"{}\">{} ({})</span>",
                    esc(&i.instance),
                    esc(&i.instance),
                    esc(i.node.as_deref().unwrap_or("pending"))
                )
            })
            .collect();
        let _ = write!(
            o,
            "<tr data-job=\"{n}\"><td>{n}</td><td>{q}</td><td>{c}</td><td>{s}</td><td>{p}</td></tr>",
            n = esc(&j.name),
            q = esc(&j.qos),
            c = j.count,
            s = states.join(", "),
            p = pods.join(" ")
        );
    }
    o.push_str("</table><h2>Reclaim</h2><ul id=\"reclaim\">");
    let reclaim: Vec<&ClusterEvent> = events
        .iter()
        .rev()
        .filter(|e| e.action == "revoked" || e.action == "refused")
        .take(EVENTS_SHOWN)
        .collect();
    if reclaim.is_empty() {
        o.push_str("<li>no revocable pod was taken back</li>");
    }
    for e in reclaim {
        let _ = write!(
            o,
            "<li>{} {} {} {}</li>",
            esc(&e.time),
            esc(&e.action),
            esc(&e.subject),
            esc(&e.message)
        );
    }
    o.push_str("</ul><h2>Recent events</h2><table id=\"events\"><tr><th>time</th><th>kind</th><th>action</th><th>subject</th><th>message</th></tr>");
    for e in events.iter().rev().take(EVENTS_SHOWN) {
        let _ = write!(
            o,
            "<tr class=\"event\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.time),
            esc(&e.kind),
            esc(&e.action),
            esc(&e.subject),
            esc(&e.message)
        );
    }
    o.push_str("</table>");
    o
}
