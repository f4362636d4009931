//! `berth master`: the thin central allocator. Agents join with a token and a pinned CA,
//! register, and heartbeat their usage and pod states; the master places jobs' instances
//! on nodes and answers each heartbeat with the node's desired set when it changed.
//!
//! Threads: the async workers serve HTTPS (TLS by rustls, HTTP/1.1 keep-alive); every
//! request's work on the state runs on the blocking pool under one lock (a commit fsyncs);
//! one placement loop places pending instances in batches and marks silent nodes lost.
//!
//! On disk (`--root`, default `/var/lib/berth-master`): the identity of `pki.rs` and the
//! store `cluster.redb` (`store.rs`) — or, with `--etcd-endpoints`, the store on etcd
//! (`etcd.rs`) shared by several masters of which one leads (`ha.rs`).

mod dashboard;
mod etcd;
mod ha;
mod migrate;
mod pki;
mod placement;
mod routes;
mod state;
mod status;
mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

pub use etcd::EtcdOptions;
pub use migrate::{migrate, Direction as MigrateDirection};
pub use state::Timing;

/// Shared by the routes and the placement loop.
#[derive(Debug)]
pub struct Master {
    /// The state; None on a master that does not lead.
    cluster: Mutex<Option<state::Cluster>>,
    store: Arc<dyn store::Store>,
    /// The etcd store and the election, with `--etcd-endpoints`.
    ha: Option<(Arc<etcd::Etcd>, Arc<ha::Election>)>,
    timing: Timing,
    authority: pki::Authority,
    token: String,
    ca_pem: String,
    wake: tokio::sync::Notify,
    /// `https://…` of this master.
    url: String,
    /// RFC 3339 of its start.
    started: String,
    /// The dashboard's sessions.
    sessions: dashboard::Sessions,
}

/// How `berth master` serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on.
    pub listen: String,
    /// Heartbeats and loss.
    pub timing: Timing,
    /// The store on etcd (None: the embedded store).
    pub etcd: Option<EtcdOptions>,
    /// This master's name among several (default: host name and port).
    pub name: Option<String>,
    /// `https://HOST:PORT` others reach it at (default: from the listen address).
    pub advertise: Option<String>,
    /// The leader's lease.
    pub lease_ttl: Duration,
}

/// The store's file below the root.
fn store_path(root: &Path) -> PathBuf {
    root.join("cluster.redb")
}

/// `berth master init`: prints the join command. With etcd, the first master's init
/// creates the cluster identity and puts it in etcd; later ones take it from there and make
/// only their own serving certificate.
pub async fn init(
    root: &Path,
    listen: &str,
    sans: &[String],
    etcd: Option<&EtcdOptions>,
) -> Result<()> {
    let (made, store): (pki::Initialised, Arc<dyn store::Store>) = match etcd {
        None => (
            pki::init(root, listen, sans, None)?,
            Arc::new(store::Embedded::open(&store_path(root))?),
        ),
        Some(o) => {
            let store = etcd::Etcd::open(o.clone()).await?;
            let client = store.client();
            let shared = migrate::download_identity(&client, o).await?;
            let joined = shared.is_some();
            let made = pki::init(root, listen, sans, shared)?;
            if joined {
                migrate::share_admin_urls(&client, o, root).await?;
            } else {
                migrate::upload_identity(&client, o, root).await?;
            }
            (made, Arc::new(store))
        }
    };
    let who = serde_json::to_vec(&state::Identity::Admin)?;
    let fp = made.admin_fingerprint.clone();
    tokio::task::spawn_blocking(move || {
        store.commit(
            &[],
            vec![store::Write::Put(format!("identities/{fp}"), who)],
        )
    })
    .await??;
    println!("cluster initialised in {}", root.display());
    println!(
        "admin credential: {}",
        pki::Paths::new(root).admin().display()
    );
    println!("join an agent with:");
    println!(
        "  berth agent --master {} --join-token {} --ca-cert-hash {}",
        made.url, made.token, made.ca_hash
    );
    Ok(())
}

/// `berth master`: serves until SIGTERM/SIGINT.
pub async fn serve(root: &Path, o: ServeOptions) -> Result<()> {
    let ServeOptions { listen, timing, .. } = o.clone();
    let listen = listen.as_str();
    let paths = pki::Paths::new(root);
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).with_context(|| {
            format!(
                "reading {} (run `berth master init --root {}` first)",
                p.display(),
                root.display()
            )
        })
    };
    let ca_pem = read(paths.ca())?;
    let tls =
        berth_cluster::tls::server_config(&ca_pem, &read(paths.cert())?, &read(paths.key())?)?;
    let token = read(paths.token())?.trim().to_string();
    let url = o
        .advertise
        .clone()
        .unwrap_or_else(|| format!("https://{listen}"));
    let (store, cluster, ha): (Arc<dyn store::Store>, _, _) = match &o.etcd {
        None => {
            let store: Arc<dyn store::Store> = Arc::new(store::Embedded::open(&store_path(root))?);
            let s2 = store.clone();
            let cluster = tokio::task::spawn_blocking(move || {
                state::Cluster::load(s2, timing, Duration::ZERO)
            })
            .await??;
            tracing::info!(?cluster, "state loaded");
            (store, Some(cluster), None)
        }
        Some(e) => {
            let etcd = Arc::new(etcd::Etcd::open(e.clone()).await?);
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "master".into());
            let port = listen.rsplit(':').next().unwrap_or("0");
            let me = ha::MasterInfo {
                version: 1,
                name: o.name.clone().unwrap_or_else(|| format!("{host}-{port}")),
                url: url.clone(),
                since: String::new(),
            };
            let election = Arc::new(ha::Election::new(me, o.lease_ttl));
            (
                etcd.clone() as Arc<dyn store::Store>,
                None,
                Some((etcd, election)),
            )
        }
    };
    let master = Arc::new(Master {
        cluster: Mutex::new(cluster),
        store,
        ha,
        timing,
        authority: pki::Authority::load(&paths)?,
        token,
        ca_pem,
        wake: tokio::sync::Notify::new(),
        url,
        started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        sessions: dashboard::Sessions::default(),
    });
    let election = master
        .ha
        .clone()
        .map(|(etcd, el)| tokio::spawn(ha::run(master.clone(), etcd, el)));
    // One connection per agent: the soft open-files limit goes up to the hard one.
    let fds = crate::agent::server::connection_cap(usize::MAX);
    tracing::debug!(fds, "connections allowed");
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(listen, "master listening (HTTPS only)");
    let placer = tokio::spawn(placement_loop(master.clone(), timing));
    let app = routes::router(master.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let shutdown = crate::daemon::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    // Plain HTTP, a wrong CA on the client's side, a scanner: nothing to serve.
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| berth_cluster::tls::fingerprint(c));
            // The peer goes into each request's extensions: `Router::layer` per connection
            // would rebuild every route, kilobytes for each of thousands of connections.
            let peer = routes::Peer(peer);
            let svc = TowerToHyperService::new(tower::ServiceExt::map_request(
                app,
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer.clone());
                    req
                },
            ));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(120))
                .serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    placer.abort();
    if let Some(e) = election {
        e.abort();
    }
    if let Some((etcd, election)) = &master.ha {
        ha::resign(etcd, election).await;
    }
    tracing::info!("master stopped");
    Ok(())
}

/// Places pending instances when woken (a job, a node, a move) and checks liveness on a
/// clock a hundredth of the node timeout (at most 250 ms: a lost node is seen within a
/// quarter second of its timeout).
async fn placement_loop(m: Arc<Master>, timing: Timing) {
    let tick =
        (timing.node_timeout / 100).clamp(Duration::from_millis(50), Duration::from_millis(250));
    let mut trimmed = std::time::Instant::now();
    loop {
        let clock = tokio::select! {
            () = m.wake.notified() => false,
            () = tokio::time::sleep(tick) => true,
        };
        let m2 = m.clone();
        let done = tokio::task::spawn_blocking(move || -> Result<(), String> {
            if m2.ha.as_ref().is_some_and(|(_, e)| !e.leading()) {
                return Ok(());
            }
            let mut c = m2.cluster.lock().map_err(|_| "poisoned lock".to_string())?;
            let Some(c) = c.as_mut() else {
                return Ok(());
            };
            c.check_liveness().map_err(|e| e.message)?;
            if c.needs_placement(clock) {
                c.place().map_err(|e| e.message)?;
            }
            Ok(())
        })
        .await;
        if trimmed.elapsed() > TRIM_EVERY {
            trimmed = std::time::Instant::now();
            let _ = tokio::task::spawn_blocking(trim_heap).await;
        }
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "placement"),
            Err(e) => tracing::error!(error = %e, "placement task"),
        }
    }
}

/// How often the master hands freed heap pages back to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Thousands of connections come and go (TLS buffers, request bodies) and leave free pages
/// scattered through glibc's heaps, which it keeps: `malloc_trim` returns every whole free
/// page, which is what the master's RSS is measured by.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}
