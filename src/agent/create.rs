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
use super::node::{Action, Container, Node};
use crate::api::Created;

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

/// Creates a container that needs no network of its own (a pod's, `none`, `host`).
pub async fn create(node: &mut Node, task: TaskSpec) -> Result<Created, ApiError> {
    create_with(node, task, None).await
}

/// Creates a container; `attached` is the id and network status of one whose network
/// namespace was made and attached first. The caller releases that network on failure.
pub async fn create_with(
    node: &mut Node,
    mut task: TaskSpec,
    attached: Option<(String, berth_runtime::state::NetworkStatus)>,
) -> Result<Created, ApiError> {
    let began = std::time::Instant::now();
    task.validate()
        .map_err(|e| ApiError::bad_request(e.to_string()).with_exit_code(125))?;
    let settings = node.settings.clone();
    let image = super::images::find(&settings.store, &task.image)
        .map_err(|e| e.with_exit_code(125))?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::no_such_image(&task.image).with_exit_code(125))?;
    let (id, attached) = match attached {
        Some((id, status)) => (id, Some(status)),
        None => (new_id()?, None),
    };
    let name = match &task.name {
        Some(n) => {
            if node.containers.values().any(|c| &c.record.name == n) {
                return Err(ApiError::name_in_use("container", n).with_exit_code(125));
            }
            n.clone()
        }
        None => format!("berth-{}", &id[..12]),
    };
    let dir = ContainerDir(node.container_dir(&id));
    let cgroup_path = match &task.pod {
        Some(member) => member.cgroup_parent.join(&id),
        None => settings
            .qos_cgroup(berth_runtime::pod::QosClass::of_task(&task.resources))
            .join(&id),
    };
    let snapshots: Vec<_> = image.snapshots().cloned().collect();
    // Bottom layer first (`rootfs::prepare` orders them for overlayfs itself).
    let lowers: Vec<PathBuf> = snapshots
        .iter()
        .map(|d| settings.store.snapshot_path(d))
        .collect();
    let config_bytes = settings
        .store
        .read_blob(&image.config)
        .map_err(ApiError::internal)?;
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
        .map_err(|e| ApiError::internal(format!("image config of {}: {e}", image.reference)))?;
    if task.health.is_none() && !task.no_healthcheck {
        // Docker's HEALTHCHECK is an extension oci-spec's config type does not carry.
        task.health = serde_json::from_slice::<serde_json::Value>(&config_bytes)
            .ok()
            .and_then(|v| berth_runtime::health::from_image_config(&v));
    }
    let mut record = ContainerRecord {
        version: STATE_VERSION,
        id: id.clone(),
        name: name.clone(),
        task: task.clone(),
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
        network: None,
    };
    // A pod's members share its network; a lone container on a CNI network was attached
    // to a namespace of its own before (`create_networked.rs`).
    let mut netns = None;
    if let Some(member) = &task.pod {
        record.network = node
            .pods
            .get(&member.pod_id)
            .and_then(|p| p.record.network.clone());
    } else if let Some(status) = attached {
        record.network = Some(status);
        netns = Some(super::network::netns_dir(&settings, &id).join("net"));
    } else if task.network.cni().is_some() {
        return Err(ApiError::internal(
            "a container on a CNI network is created once its network is attached",
        ));
    }

    // Filesystem work off the async threads; undone as a whole on failure. It reads files
    // of the image, which the image-file helper bounds; the deadline here covers the rest
    // (a mount or a disk that hangs): past it the create fails, and the work is undone
    // whenever it ends.
    let prepared = {
        let (dir_in, settings_in, record_in, config) = (
            dir.clone(),
            settings.clone(),
            record.clone(),
            config.clone(),
        );
        let cgroup = cgroup_path.clone();
        let mut work = tokio::task::spawn_blocking(move || {
            let r = prepare(
                &dir_in,
                &settings_in,
                record_in,
                &config,
                &lowers,
                &snapshots,
                netns,
            );
            if r.is_err() {
                rollback(&dir_in, &settings_in.store, &cgroup);
            }
            r
        });
        match tokio::time::timeout(CREATE_TIMEOUT, &mut work).await {
            Ok(joined) => joined.map_err(ApiError::internal)?,
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
        }
    };
    record = prepared?;
    tracing::debug!(elapsed = ?began.elapsed(), "rootfs and spec ready");

    let ready = spawn_supervisor(node, &record, &dir).await;
    let (pid, shim) = match ready {
        Ok(r) => r,
        Err(e) => {
            let (dir2, settings2, cg) = (dir.clone(), settings.clone(), record.cgroup_path.clone());
            let _ =
                tokio::task::spawn_blocking(move || rollback(&dir2, &settings2.store, &cg)).await;
            return Err(e);
        }
    };
    tracing::debug!(elapsed = ?began.elapsed(), "supervisor reported");
    record.init = berth_runtime::state::ProcessId::of(pid);
    record.shim = shim;
    write_json(&dir.record(), &record).map_err(ApiError::internal)?;
    let image_ref = record.image.clone();
    let pod_name = record.task.pod.as_ref().map(|m| m.pod_name.clone());
    let (exit, _) = watch::channel(None);
    let health = record
        .task
        .health
        .as_ref()
        .map(|_| berth_runtime::health::HealthState::default());
    node.containers.insert(
        id.clone(),
        Container {
            record,
            dir,
            exit,
            health,
            restart_pending: false,
            backoff_step: 0,
        },
    );
    tracing::info!(id, name, pid, "container created");
    let mut ev = crate::agent::events::Event::new("container", "created", &id, &name)
        .with("image", image_ref);
    if let Some(p) = pod_name {
        ev = ev.with("pod", p);
    }
    node.emit(ev);
    Ok(Created { id, name, pid })
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
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir.path())
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.path().display())))?;
    for sub in [dir.logs(), dir.execs(), dir.etc()] {
        std::fs::create_dir_all(&sub).map_err(ApiError::internal)?;
    }
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
    record.rootfs = berth_runtime::rootfs::prepare(&dirs, lowers, settings.rootfs_copy)
        .map_err(ApiError::internal)?;
    let hostname = berth_runtime::spec::hostname(&record.task, &record.id);
    let etc = write_etc(dir, &record.task, &hostname, record.network.as_ref())?;
    let inputs = berth_runtime::spec::SpecInputs {
        id: &record.id,
        image: config,
        rootfs: &dirs.rootfs,
        cgroup_path: record.cgroup_path.clone(),
        etc_files: etc,
        netns,
    };
    let spec = berth_runtime::spec::build(&record.task, &inputs).map_err(|e| {
        let code = match e {
            berth_runtime::spec::SpecError::CommandNotFound { .. } => 127,
            _ => 125,
        };
        ApiError::start_failed(e.to_string(), code)
    })?;
    let bytes = serde_json::to_vec_pretty(&spec).map_err(ApiError::internal)?;
    berth_images::store::fsutil::write_atomic(&dir.path().join("config.json"), &bytes, 0o600)
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
    let _ = berth_runtime::cgroups::remove(cgroup);
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

/// `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` for the container, as Docker writes them.
fn write_etc(
    dir: &ContainerDir,
    task: &TaskSpec,
    hostname: &str,
    network: Option<&berth_runtime::state::NetworkStatus>,
) -> Result<[PathBuf; 3], ApiError> {
    let etc = dir.etc();
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let (hosts, resolv) = match task.network {
        NetworkMode::Host => (
            std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
            host_resolv,
        ),
        _ => (
            super::network::etc_hosts(hostname, network),
            super::network::resolv_conf(network, &host_resolv),
        ),
    };
    let files = [
        (etc.join("hosts"), hosts),
        (etc.join("hostname"), format!("{hostname}\n")),
        (etc.join("resolv.conf"), resolv),
    ];
    for (path, text) in &files {
        std::fs::write(path, text)
            .map_err(|e| ApiError::internal(format!("writing {}: {e}", path.display())))?;
    }
    let [(a, _), (b, _), (c, _)] = files;
    Ok([a, b, c])
}

/// Starts `berth shim init` and waits for its start-up line.
pub async fn spawn_supervisor(
    node: &Node,
    record: &ContainerRecord,
    dir: &ContainerDir,
) -> Result<(i32, Option<berth_runtime::state::ProcessId>), ApiError> {
    let s = &node.settings;
    let log = std::fs::File::create(dir.path().join("shim.log")).map_err(ApiError::internal)?;
    let mut cmd = tokio::process::Command::new(&s.exe);
    cmd.arg("shim")
        .arg("init")
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
    let (mut child, ready) = start_and_read_ready(cmd).await?;
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
    let tx = node.tx.clone();
    let id = record.id.clone();
    tokio::spawn(async move {
        let _ = child.wait().await;
        let _ = tx.send(Action::ShimExited(id)).await;
    });
    Ok((ready.pid, with_shim.shim))
}

/// Spawns a supervisor and reads its one-line start-up report.
pub async fn start_and_read_ready(
    mut cmd: tokio::process::Command,
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
    let read = tokio::time::timeout(CREATE_TIMEOUT, reader.read_line(&mut line)).await;
    match read {
        Ok(Ok(n)) if n > 0 => {}
        _ => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(ApiError::internal(
                "the supervisor ended or stalled before reporting; see shim.log",
            ));
        }
    }
    let ready: Ready = serde_json::from_str(line.trim())
        .map_err(|e| ApiError::internal(format!("supervisor report {line:?}: {e}")))?;
    Ok((child, ready))
}
