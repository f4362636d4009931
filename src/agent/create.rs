//! Create: image → rootfs → spec → supervisor, or nothing at all (every step is undone when
//! a later one fails).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use berth_runtime::rootfs::{RootfsDirs, RootfsKind};
use berth_runtime::state::{write_json, ContainerDir, ContainerRecord, STATE_VERSION};
use berth_runtime::supervisor::Ready;
use berth_runtime::task::{NetworkMode, TaskSpec};
use oci_spec::image::ImageConfiguration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

use super::error::ApiError;
use super::node::{Action, Container, Creating, Node};
use super::Settings;
use crate::api::Created;
use std::sync::Arc;
use tokio::sync::mpsc;

/// How long a supervisor may take to create a container.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// A new random 64-hex-digit id.
pub fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(ApiError::internal)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates a container: `attached` is the id and network status of one whose network
/// namespace was made and attached first (the caller releases that network on failure).
/// Checks and the reservation of its id and name happen here, on the owner; the image,
/// rootfs, spec and the supervisor's start-up in a task; `then` gets the answer on the
/// owner. `rm -f` meanwhile cancels it (`remove.rs`).
pub fn create(
    node: &mut Node,
    task: TaskSpec,
    attached: Option<(String, berth_runtime::state::NetworkStatus)>,
    then: impl FnOnce(&mut Node, Result<Created, ApiError>) + Send + 'static,
) {
    let draft = match draft(node, task, attached) {
        Ok(d) => d,
        Err(e) => {
            then(node, Err(e));
            return;
        }
    };
    let (cancel, cancelled) = tokio::sync::oneshot::channel();
    let id = draft.id.clone();
    node.creating.insert(
        id.clone(),
        Creating {
            name: draft.name.clone(),
            pod: draft.task.pod.as_ref().map(|m| m.pod_id.clone()),
            cancel: Some(cancel),
            removers: Vec::new(),
        },
    );
    let (settings, tx) = (node.settings.clone(), node.tx.clone());
    node.spawn(
        "creating a container",
        make(settings, tx, draft, cancelled),
        move |node, made| finish(node, &id, made, then),
    );
}

/// What the owner decided before the work starts.
#[derive(Debug)]
struct Draft {
    id: String,
    name: String,
    task: TaskSpec,
    cgroup_path: PathBuf,
    network: Option<berth_runtime::state::NetworkStatus>,
    netns: Option<PathBuf>,
    dir: ContainerDir,
    idmap: Option<berth_runtime::userns::IdMap>,
    disk_project: Option<u32>,
}

/// The owner's part: validation, the name (unique among containers and creates in flight),
/// the id, the cgroup and the network.
fn draft(
    node: &mut Node,
    task: TaskSpec,
    attached: Option<(String, berth_runtime::state::NetworkStatus)>,
) -> Result<Draft, ApiError> {
    task.validate()
        .map_err(|e| ApiError::bad_request(e.to_string()).with_exit_code(125))?;
    let settings = node.settings.clone();
    let (id, attached) = match attached {
        Some((id, status)) => (id, Some(status)),
        None => (new_id()?, None),
    };
    let name = match &task.name {
        Some(n) => {
            let taken = node.containers.values().any(|c| &c.record().name == n)
                || node.creating.values().any(|c| &c.name == n);
            if taken {
                return Err(ApiError::name_in_use("container", n).with_exit_code(125));
            }
            n.clone()
        }
        None => format!("berth-{}", &id[..12]),
    };
    let cgroup_path = match &task.pod {
        Some(member) => member.cgroup_parent.join(&id),
        None => settings
            .qos_cgroup(berth_runtime::pod::QosClass::of_spec(&task))
            .join(&id),
    };
    // A pod's members share its network; a lone container on a CNI network was attached
    // to a namespace of its own before (`create_networked.rs`).
    let (network, netns) = if let Some(member) = &task.pod {
        let net = node
            .pods
            .get(&member.pod_id)
            .and_then(|p| p.record().network.clone());
        (net, None)
    } else if let Some(status) = attached {
        (
            Some(status),
            Some(super::network::netns_dir(&settings, &id).join("net")),
        )
    } else if task.network.cni().is_some() {
        return Err(ApiError::internal(
            "a container on a CNI network is created once its network is attached",
        ));
    } else {
        (None, None)
    };
    // Last, so nothing after it can fail: a pod member's range is the pod's; a lone
    // container on a CNI network was given its range when its namespace was made.
    let idmap = match &task.pod {
        Some(member) => member.idmap,
        None => match task.userns.unwrap_or(settings.userns_default) {
            berth_runtime::userns::UsernsMode::Host => None,
            berth_runtime::userns::UsernsMode::Auto => Some(super::idmap::allocate(node, &id)?),
        },
    };
    let disk_project = settings.quotas.is_some().then(|| node.disk.allocate(&id));
    Ok(Draft {
        idmap,
        disk_project,
        dir: ContainerDir(node.container_dir(&id)),
        id,
        name,
        task,
        cgroup_path,
        network,
        netns,
    })
}

/// Off the owner: image, rootfs, spec, supervisor. Undone as a whole on failure; `cancelled`
/// (an `rm -f`) stops the wait for the supervisor.
async fn make(
    settings: Arc<Settings>,
    tx: mpsc::Sender<Action>,
    draft: Draft,
    mut cancelled: tokio::sync::oneshot::Receiver<()>,
) -> Result<ContainerRecord, ApiError> {
    let began = std::time::Instant::now();
    let Draft {
        id,
        name,
        mut task,
        cgroup_path,
        network,
        netns,
        dir,
        idmap,
        disk_project,
    } = draft;
    let store = settings.store.clone();
    let image_name = task.image.clone();
    let (image, config_bytes) = tokio::task::spawn_blocking(move || {
        let image = super::images::find(&store, &image_name)
            .map_err(|e| e.with_exit_code(125))?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::no_such_image(&image_name).with_exit_code(125))?;
        let bytes = store.read_blob(&image.config).map_err(ApiError::internal)?;
        Ok::<_, ApiError>((image, bytes))
    })
    .await
    .map_err(ApiError::internal)??;
    let snapshots: Vec<_> = image.snapshots().cloned().collect();
    // Bottom layer first (`rootfs::prepare` orders them for overlayfs itself).
    let lowers: Vec<PathBuf> = snapshots
        .iter()
        .map(|d| settings.store.snapshot_path(d))
        .collect();
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
        .map_err(|e| ApiError::internal(format!("image config of {}: {e}", image.reference)))?;
    if task.health.is_none() && !task.no_healthcheck {
        // Docker's HEALTHCHECK is an extension oci-spec's config type does not carry.
        task.health = serde_json::from_slice::<serde_json::Value>(&config_bytes)
            .ok()
            .and_then(|v| berth_runtime::health::from_image_config(&v));
    }
    let record = ContainerRecord {
        version: STATE_VERSION,
        id: id.clone(),
        name,
        task,
        image: image.reference.clone(),
        image_id: image.config.to_string(),
        created: berth_runtime::state::now(),
        cgroup_path: cgroup_path.clone(),
        rootfs: RootfsKind::Overlay,
        shim: None,
        init: None,
        started: None,
        exposed_ports: config
            .config()
            .as_ref()
            .and_then(|c| c.exposed_ports().clone())
            .unwrap_or_default(),
        restart_count: 0,
        stopped_by_operator: false,
        revoked: false,
        network,
        idmap,
        disk_project,
        evicted: None,
    };

    // It reads files of the image, which the image-file helper bounds; the deadline here
    // covers the rest (a mount or a disk that hangs): past it the create fails, and the
    // work is undone whenever it ends.
    let mut work = {
        let (dir, settings) = (dir.clone(), settings.clone());
        let cgroup = cgroup_path.clone();
        tokio::task::spawn_blocking(move || {
            let r = prepare(&dir, &settings, record, &config, &lowers, &snapshots, netns);
            if r.is_err() {
                rollback(&dir, &settings.store, &cgroup);
            }
            r
        })
    };
    let record = match tokio::time::timeout(CREATE_TIMEOUT, &mut work).await {
        Ok(joined) => joined.map_err(ApiError::internal)??,
        Err(_) => {
            let (dir, settings) = (dir.clone(), settings.clone());
            tokio::spawn(async move {
                if let Ok(Ok(_)) = work.await {
                    let _ = tokio::task::spawn_blocking(move || {
                        rollback(&dir, &settings.store, &cgroup_path)
                    })
                    .await;
                }
            });
            return Err(ApiError::internal(format!(
                "preparing the rootfs and spec took longer than {} s; undone when it ends",
                CREATE_TIMEOUT.as_secs()
            ))
            .with_exit_code(125));
        }
    };
    tracing::debug!(elapsed = ?began.elapsed(), "rootfs and spec ready");

    let undo = |settings: &Arc<Settings>, dir: &ContainerDir, cgroup: &Path| {
        let (dir, settings, cg) = (dir.clone(), settings.clone(), cgroup.to_path_buf());
        tokio::task::spawn_blocking(move || {
            // A supervisor stopped half-way may have left the init in the cgroup.
            let _ = berth_runtime::cgroups::kill_all(&cg);
            rollback(&dir, &settings.store, &cg)
        })
    };
    let ready = spawn_supervisor(&settings, tx, &record, &dir, Some(&mut cancelled)).await;
    let (pid, shim) = match ready {
        Ok(r) => r,
        Err(e) => {
            let _ = undo(&settings, &dir, &record.cgroup_path).await;
            return Err(e);
        }
    };
    tracing::debug!(elapsed = ?began.elapsed(), "supervisor reported");
    with_supervisor(record, &dir, pid, shim).await
}

/// The record with its new init and supervisor, written (in the blocking pool).
pub async fn with_supervisor(
    mut record: ContainerRecord,
    dir: &ContainerDir,
    pid: i32,
    shim: Option<berth_runtime::state::ProcessId>,
) -> Result<ContainerRecord, ApiError> {
    record.init = berth_runtime::state::ProcessId::of(pid);
    record.shim = shim;
    let (dir, written) = (dir.clone(), record.clone());
    tokio::task::spawn_blocking(move || write_json(&dir.record(), &written))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(record)
}

/// The answer to a create cancelled by `rm -f`.
fn cancelled_error() -> ApiError {
    ApiError::conflict("the container was removed while being created").with_exit_code(125)
}

/// The work reported: record the container (or undo it, when `rm -f` came meanwhile).
fn finish(
    node: &mut Node,
    id: &str,
    made: Result<ContainerRecord, ApiError>,
    then: impl FnOnce(&mut Node, Result<Created, ApiError>) + Send + 'static,
) {
    let removers = node
        .creating
        .remove(id)
        .map(|c| c.removers)
        .unwrap_or_default();
    let record = match made {
        Ok(record) if !removers.is_empty() => {
            // Made before the cancel was seen: kill and undo it, then answer everyone.
            let dir = ContainerDir(node.container_dir(id));
            let store = node.settings.store.clone();
            node.spawn_blocking(
                "undoing a cancelled create",
                move || {
                    let _ = berth_runtime::cgroups::kill_all(&record.cgroup_path);
                    if let Some(shim) = record.shim.filter(|s| s.is_alive()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(shim.pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    rollback(&dir, &store, &record.cgroup_path);
                    Ok(())
                },
                move |node, result| {
                    for r in removers {
                        r.call(node, result.clone());
                    }
                    then(node, Err(cancelled_error()));
                },
            );
            return;
        }
        Ok(record) => record,
        Err(e) => {
            node.idmaps.release(id);
            node.disk.release(id);
            for r in removers {
                r.call(node, Ok(()));
            }
            then(node, Err(e));
            return;
        }
    };
    let created = Created {
        id: id.to_string(),
        name: record.name.clone(),
        pid: record.init.map(|p| p.pid).unwrap_or(0),
    };
    let mut ev = crate::agent::events::Event::new("container", "created", id, &record.name)
        .with("image", &record.image);
    if let Some(m) = &record.task.pod {
        ev = ev.with("pod", &m.pod_name);
    }
    let dir = ContainerDir(node.container_dir(id));
    node.containers.insert(
        id.to_string(),
        Container::new(record, dir, watch::channel(None).0),
    );
    tracing::info!(id, name = %created.name, pid = created.pid, "container created");
    node.emit(ev);
    then(node, Ok(created));
}

/// Dir, lease, rootfs, /etc files, spec, first record.
fn prepare(
    dir: &ContainerDir,
    settings: &super::Settings,
    mut record: ContainerRecord,
    config: &ImageConfiguration,
    lowers: &[PathBuf],
    snapshots: &[berth_images::digest::Digest],
    netns: Option<PathBuf>,
) -> Result<ContainerRecord, ApiError> {
    super::task_dir::make(settings, dir, &record)?;
    // A client's create (not a pod's member) is pending until answered; see
    // `ContainerDir::create_pending`. Made durable with the first record's directory sync.
    if record.task.pod.is_none() {
        std::fs::write(dir.create_pending(), b"").map_err(|e| {
            ApiError::internal(format!("writing {}: {e}", dir.create_pending().display()))
        })?;
    }
    settings
        .store
        .put_lease(&lease_name(&record.id), snapshots)
        .map_err(ApiError::internal)?;
    let dirs = RootfsDirs::under(dir.path());
    record.rootfs =
        berth_runtime::rootfs::prepare(&dirs, lowers, settings.rootfs_copy, record.idmap.as_ref())
            .map_err(ApiError::internal)?;
    let etc = super::task_dir::write_etc(dir, &record)?;
    let userns = super::task_dir::userns_to_join(&record, netns.as_deref());
    let inputs = berth_runtime::spec::SpecInputs {
        id: &record.id,
        image: config,
        rootfs: &dirs.rootfs,
        cgroup_path: record.cgroup_path.clone(),
        etc_files: etc,
        netns,
        idmap: record.idmap,
        userns,
    };
    let spec = berth_runtime::spec::build(&record.task, &inputs).map_err(|e| {
        let code = match e {
            berth_runtime::spec::SpecError::CommandNotFound { .. } => 127,
            _ => 125,
        };
        ApiError::start_failed(e.to_string(), code)
    })?;
    let bytes = serde_json::to_vec_pretty(&spec).map_err(ApiError::internal)?;
    berth_fsutil::atomic::write_atomic(&dir.path().join("config.json"), &bytes, 0o600)
        .map_err(ApiError::internal)?;
    write_json(&dir.record(), &record).map_err(ApiError::internal)?;
    Ok(record)
}

/// The lease that keeps a container's layers from GC.
pub fn lease_name(id: &str) -> String {
    format!("container-{id}")
}

/// Undoes [`prepare`] (and whatever a failed supervisor left).
pub fn rollback(dir: &ContainerDir, store: &berth_images::store::Store, cgroup: &Path) {
    let dirs = RootfsDirs::under(dir.path());
    if let Err(e) = berth_runtime::rootfs::unmount(&dirs) {
        tracing::error!(error = %e, "rollback: unmount failed; leaving the dir");
        return;
    }
    // Processes killed a moment ago may still be leaving it: a few tries.
    for attempt in 0.. {
        match berth_runtime::cgroups::remove(cgroup) {
            Ok(()) if !berth_runtime::cgroups::exists(cgroup) => break,
            Ok(()) if attempt < 20 => {}
            Err(_) if attempt < 20 => {}
            result => {
                tracing::error!(cgroup = %cgroup.display(), ?result, "rollback: removing the cgroup");
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = store.remove_lease(&lease_name(&id_of(dir)));
    let _ = std::fs::remove_dir_all(dir.path());
}

/// The container id a state dir is named after.
fn id_of(dir: &ContainerDir) -> String {
    dir.path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Starts `berth-monitor init` and waits for its start-up line; a task then waits for the
/// supervisor's end and reports it to the owner through `tx`.
pub async fn spawn_supervisor(
    s: &Settings,
    tx: mpsc::Sender<Action>,
    record: &ContainerRecord,
    dir: &ContainerDir,
    cancelled: Option<&mut tokio::sync::oneshot::Receiver<()>>,
) -> Result<(i32, Option<berth_runtime::state::ProcessId>), ApiError> {
    let log = std::fs::File::create(dir.path().join("shim.log")).map_err(ApiError::internal)?;
    let mut cmd = tokio::process::Command::new(&s.monitor);
    cmd.arg("init")
        .arg("--berth")
        .arg(&s.exe)
        .arg("--id")
        .arg(&record.id)
        .arg("--dir")
        .arg(dir.path())
        .arg("--cgroup")
        .arg(&record.cgroup_path)
        .arg("--log-max-bytes")
        .arg(s.rotation.max_bytes.to_string())
        .arg("--log-max-files")
        .arg(s.rotation.max_files.to_string());
    if record.task.tty {
        cmd.arg("--tty");
    }
    if record.task.stdin {
        cmd.arg("--stdin");
    }
    // A pod's sandbox brought its loopback up already.
    if record.task.network == NetworkMode::None && record.task.pod.is_none() {
        cmd.arg("--network-none");
    }
    cmd.env("BERTH_LOG", &s.log_level)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(false);
    let (mut child, ready) = start_and_read_ready(cmd, cancelled).await?;
    if let Some(error) = ready.error {
        let _ = child.wait().await;
        let log = std::fs::read_to_string(dir.path().join("shim.log")).unwrap_or_default();
        let tail = &log[log.len().saturating_sub(4096)..];
        tracing::warn!(id = %record.id, shim_log = %tail, "container creation failed");
        return Err(ApiError::start_failed(
            error,
            ready.exit_code.unwrap_or(125),
        ));
    }
    // The record must name the supervisor before anyone can look at the container.
    let shim_pid = child.id().map(|p| p as i32).unwrap_or(0);
    let mut with_shim = record.clone();
    with_shim.shim = berth_runtime::state::ProcessId::of(shim_pid);
    write_json(&dir.record(), &with_shim).map_err(ApiError::internal)?;
    let id = record.id.clone();
    tokio::spawn(async move {
        let _ = child.wait().await;
        let _ = tx.send(Action::ShimExited(id)).await;
    });
    Ok((ready.pid, with_shim.shim))
}

/// Spawns a supervisor and reads its one-line start-up report. A supervisor that stalls
/// past the deadline, or whose wait is `cancelled`, is killed and reaped.
pub async fn start_and_read_ready(
    mut cmd: tokio::process::Command,
    cancelled: Option<&mut tokio::sync::oneshot::Receiver<()>>,
) -> Result<(tokio::process::Child, Ready), ApiError> {
    let mut child = cmd
        .spawn()
        .map_err(|e| ApiError::internal(format!("starting the supervisor: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| ApiError::internal("supervisor without stdout"))?;
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(stdout);
    let cancel = async move {
        match cancelled {
            // A sender dropped without firing is no cancel.
            Some(rx) => {
                if rx.await.is_err() {
                    std::future::pending::<()>().await
                }
            }
            None => std::future::pending().await,
        }
    };
    let read = tokio::select! {
        r = tokio::time::timeout(CREATE_TIMEOUT, reader.read_line(&mut line)) => Some(r),
        () = cancel => None,
    };
    let failed = match read {
        Some(Ok(Ok(n))) if n > 0 => None,
        Some(_) => Some(ApiError::internal(
            "the supervisor ended or stalled before reporting; see shim.log",
        )),
        None => Some(cancelled_error()),
    };
    if let Some(e) = failed {
        // Its whole process group (it is a session leader once started): a supervisor
        // stopped half-way through a create leaves libcontainer's helpers orphaned.
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Err(e);
    }
    let ready: Ready = serde_json::from_str(line.trim())
        .map_err(|e| ApiError::internal(format!("supervisor report {line:?}: {e}")))?;
    Ok((child, ready))
}
