//! The spec of a task in a user namespace of its own: the `user` namespace first (made with
//! the task's mapping, or joined by path), and `/sys` bound from the host where the task
//! does not own its network namespace.

use std::path::Path;

use oci_spec::runtime::{
    LinuxBuilder, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    Mount,
};

use super::{defaults, SpecError};
use crate::userns::IdMap;

/// Puts the `user` namespace first in `namespaces` (the others are then made or joined as
/// its members) and the mapping into `linux`.
pub(super) fn join_or_make(
    linux: LinuxBuilder,
    namespaces: &mut Vec<LinuxNamespace>,
    map: &IdMap,
    path: Option<&Path>,
) -> Result<LinuxBuilder, SpecError> {
    let mut b = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::User);
    if let Some(path) = path {
        b = b.path(path.to_path_buf());
    }
    namespaces.insert(0, b.build().map_err(SpecError::build)?);
    let line = |host: u32| {
        LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(host)
            .size(map.size)
            .build()
            .map_err(SpecError::build)
    };
    Ok(linux
        .uid_mappings(vec![line(map.uid)?])
        .gid_mappings(vec![line(map.gid)?]))
}

/// sysfs may be mounted only by the owner of the network namespace, the host's user
/// namespace with `--network host`: the host's /sys is bound read-only instead (runc and
/// podman do the same).
pub(super) fn bind_host_sys(mounts: &mut [Mount]) {
    for m in mounts.iter_mut() {
        if m.destination() == Path::new("/sys") {
            let mut bound = defaults::bind("/sys".into(), "/sys".into(), true);
            bound.set_options(Some(
                ["rbind", "rprivate", "ro", "nosuid", "noexec", "nodev"]
                    .map(String::from)
                    .to_vec(),
            ));
            *m = bound;
        }
    }
}
