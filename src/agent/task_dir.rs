//! A container's dir as the create prepares it: made (0700), opened to its user
//! namespace's root (`root:<its gid>` 0710, `idmap::gate`), made a disk project before
//! anything is in it (so all below inherits it), its subdirs; and the files Berth writes
//! for it (`/etc/hosts`, `hostname`, `resolv.conf`), owned by its root when it has a range.

use std::path::{Path, PathBuf};

use berth_runtime::state::{ContainerDir, ContainerRecord};
use berth_runtime::task::{NetworkMode, TaskSpec};

use super::error::ApiError;
use super::Settings;

/// Makes the dir of `record`'s container.
pub fn make(
    settings: &Settings,
    dir: &ContainerDir,
    record: &ContainerRecord,
) -> Result<(), ApiError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir.path())
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.path().display())))?;
    if let Some(map) = &record.idmap {
        super::idmap::gate(dir.path(), map)
            .map_err(|e| ApiError::internal(format!("opening {}: {e}", dir.path().display())))?;
    }
    if let (Some(quotas), Some(project)) = (&settings.quotas, record.disk_project) {
        let limit = record.task.storage_size.unwrap_or(0).max(0) as u64;
        quotas
            .assign(dir.path(), project)
            .and_then(|()| quotas.set_limit(project, limit))
            .map_err(ApiError::internal)?;
    }
    for sub in [dir.logs(), dir.execs(), dir.etc()] {
        std::fs::create_dir_all(&sub).map_err(ApiError::internal)?;
    }
    Ok(())
}

/// Writes its `/etc` files; with a range they belong to its root, as Docker's
/// userns-remap does.
pub fn write_etc(dir: &ContainerDir, record: &ContainerRecord) -> Result<[PathBuf; 3], ApiError> {
    let hostname = berth_runtime::spec::hostname(&record.task, &record.id);
    let etc = write_files(dir, &record.task, &hostname, record.network.as_ref())?;
    if let Some(map) = &record.idmap {
        for file in &etc {
            berth_runtime::userns::chown_to_root(file, map).map_err(ApiError::internal)?;
        }
    }
    Ok(etc)
}

/// The user namespace its other namespaces belong to: the pod's, or the one its network
/// namespace was made in (`netns`); `None` with a range: libcontainer makes it.
pub fn userns_to_join(record: &ContainerRecord, netns: Option<&Path>) -> Option<PathBuf> {
    record.idmap?;
    match &record.task.pod {
        Some(member) => Some(member.namespaces.join("user")),
        None => netns.and_then(|n| Some(n.parent()?.join("user"))),
    }
}

/// `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` for the container, as Docker writes them.
fn write_files(
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
