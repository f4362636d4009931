//! The Prometheus endpoint (`--metrics-addr`, off by default): per-container and per-pod
//! cpu, memory, pids, restarts and OOM kills read from cgroups at scrape time, and the
//! agent's own numbers (containers and pods by state, image store size, API latency, CNI
//! operation latency).
//!
//! The text format is written here: it is a few lines per metric, values are gathered on
//! scrape from cgroupfs, and a metrics registry crate would hold copies of them for nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::node::{Action, Node};

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 10] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0,
];

/// Latency histograms by label set (`route="…"` for the API, filled by [`track`];
/// `op="add",result="ok"` for CNI operations).
#[derive(Debug, Default)]
pub struct Latencies {
    routes: Mutex<BTreeMap<String, Histogram>>,
}

/// The API's latencies.
pub type ApiLatency = Latencies;

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Latencies {
    /// Counts one observation of the series `labels` (already in Prometheus form).
    pub fn observe(&self, labels: &str, secs: f64) {
        let Ok(mut routes) = self.routes.lock() else {
            return;
        };
        let h = routes.entry(labels.to_string()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }
}

/// Middleware of the API: times every request by its route pattern. Streams (logs -f,
/// attach, events) count until their headers are sent.
pub async fn track(State(latency): State<Arc<ApiLatency>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let began = std::time::Instant::now();
    let resp = next.run(req).await;
    latency.observe(
        &format!("route=\"{}\"", esc(&route)),
        began.elapsed().as_secs_f64(),
    );
    resp
}

/// What the owner hands out for one scrape.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Containers.
    pub containers: Vec<ContainerRow>,
    /// Pods.
    pub pods: Vec<PodRow>,
    /// Containers by status.
    pub by_status: BTreeMap<String, u64>,
    /// The node's resource model.
    pub node: crate::api::node::NodeView,
}

/// One container of a scrape.
#[derive(Debug)]
pub struct ContainerRow {
    /// Its series' labels: `id="…",name="…",pod="…"`.
    labels: String,
    cgroup: PathBuf,
    running: bool,
    restarts: u32,
    health: Option<String>,
}

/// One pod of a scrape.
#[derive(Debug)]
pub struct PodRow {
    /// Its series' labels: `pod="…",qos="…"`.
    labels: String,
    phase: String,
    cgroup: PathBuf,
    restarts: u32,
}

/// The owner's side of a scrape.
pub fn snapshot(node: &Node) -> Snapshot {
    let mut s = Snapshot {
        node: super::usage::view(node),
        ..Snapshot::default()
    };
    for c in node.containers.values() {
        let status = c.status();
        *s.by_status
            .entry(format!("{status:?}").to_lowercase())
            .or_default() += 1;
        let member = c.record().task.pod.as_ref();
        let restarts = member
            .and_then(|m| node.pods.get(&m.pod_id))
            .and_then(|p| p.record().containers.get(&member?.container))
            .map_or(0, |slot| slot.restart_count);
        let pod = member.map(|m| m.pod_name.as_str()).unwrap_or_default();
        s.containers.push(ContainerRow {
            labels: format!(
                "id=\"{}\",name=\"{}\",pod=\"{}\"",
                esc(&c.record().id),
                esc(&c.record().name),
                esc(pod)
            ),
            cgroup: c.record().cgroup_path.clone(),
            running: status == berth_runtime::state::Status::Running,
            restarts,
            health: c.health.as_ref().map(|h| h.status.to_string()),
        });
    }
    for p in node.pods.values() {
        s.pods.push(PodRow {
            labels: format!(
                "pod=\"{}\",qos=\"{}\"",
                esc(&p.record().name),
                p.record().qos
            ),
            phase: p.phase().to_string(),
            cgroup: p.record().cgroup_path.clone(),
            restarts: p
                .record()
                .containers
                .values()
                .map(|m| m.restart_count)
                .sum(),
        });
    }
    s
}

/// Bytes on disk below `dir` (allocated blocks, not apparent sizes).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else {
                continue;
            };
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The cgroup usage families of one scope (`container` or `pod`), a row per labelled cgroup.
fn usage_families(out: &mut String, scope: &str, rows: &[(&str, berth_runtime::cgroups::Usage)]) {
    type Pick = fn(&berth_runtime::cgroups::Usage) -> f64;
    let families: [(&str, &str, &str, Pick); 4] = [
        ("cpu_usage_seconds_total", "counter", "CPU time used", |u| {
            u.cpu_usage_ns as f64 / 1e9
        }),
        (
            "memory_usage_bytes",
            "gauge",
            "Memory in use, page cache included",
            |u| u.memory_usage as f64,
        ),
        ("pids", "gauge", "Tasks", |u| u.pids_current as f64),
        ("oom_kills_total", "counter", "OOM kills", |u| {
            u.oom_kills as f64
        }),
    ];
    for (suffix, kind, help, pick) in families {
        let name = format!("berth_{scope}_{suffix}");
        family(
            out,
            &name,
            kind,
            &format!("{help} in the {scope}'s cgroup."),
        );
        for (labels, u) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {}", pick(u));
        }
    }
}

/// Renders a scrape (blocking: reads cgroupfs and walks the image store).
pub fn render(s: &Snapshot, root: &Path, latency: &Latencies, cni: &Latencies) -> String {
    let mut out = String::new();
    let usage = |path: &Path| {
        berth_runtime::cgroups::manager(path)
            .ok()
            .and_then(|m| berth_runtime::cgroups::usage(&m, path).ok())
    };
    let rows: Vec<(&str, berth_runtime::cgroups::Usage)> = s
        .containers
        .iter()
        .filter(|c| c.running)
        .filter_map(|c| usage(&c.cgroup).map(|u| (c.labels.as_str(), u)))
        .collect();
    usage_families(&mut out, "container", &rows);
    family(
        &mut out,
        "berth_container_restarts_total",
        "counter",
        "Restarts of the container's pod slot.",
    );
    for c in &s.containers {
        let _ = writeln!(
            out,
            "berth_container_restarts_total{{{}}} {}",
            c.labels, c.restarts
        );
    }
    family(
        &mut out,
        "berth_container_healthy",
        "gauge",
        "1 when the last health verdict is healthy (containers with a check).",
    );
    for c in s.containers.iter().filter(|c| c.running) {
        if let Some(h) = &c.health {
            let v = u8::from(h == "healthy");
            let _ = writeln!(
                out,
                "berth_container_healthy{{{},status=\"{h}\"}} {v}",
                c.labels
            );
        }
    }
    let rows: Vec<(&str, berth_runtime::cgroups::Usage)> = s
        .pods
        .iter()
        .filter_map(|p| usage(&p.cgroup).map(|u| (p.labels.as_str(), u)))
        .collect();
    usage_families(&mut out, "pod", &rows);
    family(
        &mut out,
        "berth_pod_restarts_total",
        "counter",
        "Restarts of the pod's containers.",
    );
    for p in &s.pods {
        let _ = writeln!(
            out,
            "berth_pod_restarts_total{{{}}} {}",
            p.labels, p.restarts
        );
    }
    family(&mut out, "berth_pods", "gauge", "Pods by phase.");
    let mut phases: BTreeMap<&str, u64> = BTreeMap::new();
    for p in &s.pods {
        *phases.entry(p.phase.as_str()).or_default() += 1;
    }
    for (phase, n) in phases {
        let _ = writeln!(out, "berth_pods{{phase=\"{phase}\"}} {n}");
    }
    family(
        &mut out,
        "berth_containers",
        "gauge",
        "Containers by status.",
    );
    for (status, n) in &s.by_status {
        let _ = writeln!(out, "berth_containers{{status=\"{status}\"}} {n}");
    }
    family(
        &mut out,
        "berth_image_store_bytes",
        "gauge",
        "Disk used by the image store (blobs and unpacked snapshots).",
    );
    let store = disk_usage(&root.join("content")) + disk_usage(&root.join("snapshots"));
    let _ = writeln!(out, "berth_image_store_bytes {store}");
    family(
        &mut out,
        "berth_agent_resident_memory_bytes",
        "gauge",
        "The agent's RSS.",
    );
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 4096;
    let _ = writeln!(out, "berth_agent_resident_memory_bytes {rss}");
    super::metrics_node::render(&mut out, &s.node);
    histogram(
        &mut out,
        "berth_api_request_duration_seconds",
        "API request latency by route, until the response headers.",
        latency,
    );
    histogram(
        &mut out,
        "berth_cni_operation_duration_seconds",
        "CNI ADD, DEL and CHECK of a whole plugin chain, by result.",
        cni,
    );
    out
}

/// One histogram family, a series per label set.
fn histogram(out: &mut String, name: &str, help: &str, l: &Latencies) {
    family(out, name, "histogram", help);
    let Ok(series) = l.routes.lock() else {
        return;
    };
    for (labels, h) in series.iter() {
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {}", h.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
    }
}

/// Serves `GET /metrics` on `addr` until the agent stops.
pub async fn serve(
    addr: std::net::SocketAddr,
    tx: mpsc::Sender<Action>,
    settings: Arc<super::Settings>,
    latency: Arc<ApiLatency>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for metrics on {addr}"))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (tx, settings, latency) = (tx.clone(), settings.clone(), latency.clone());
            async move {
                let snap = super::routes::ask(&tx, Action::Metrics).await;
                let Ok(snap) = snap else {
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new())
                        .into_response();
                };
                let text = tokio::time::timeout(
                    Duration::from_secs(30),
                    tokio::task::spawn_blocking(move || {
                        render(&snap, &settings.root, &latency, &settings.cni_latency)
                    }),
                )
                .await;
                match text {
                    Ok(Ok(t)) => (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        t,
                    )
                        .into_response(),
                    _ => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
        }),
    );
    tracing::info!(%addr, "serving metrics");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint");
        }
    }))
}
