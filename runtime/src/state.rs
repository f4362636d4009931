//! On-disk state of one container, in `containers/<id>/` below the data root:
//!
//! ```text
//! container.json   ContainerRecord, written by the agent (version 1)
//! exit.json        ExitRecord, written by the monitor when the init exits (version 1)
//! config.json      the OCI runtime spec (the bundle is this directory)
//! rootfs/          overlay mount point (or the copied rootfs)
//! fs/upper fs/work overlay upper and work dirs
//! etc/             hosts, hostname, resolv.conf bound into the container
//! logs/            container.log[.N] (CRI format, see `logs`)
//! shim.sock        the supervisor's attach/control socket
//! shim.log         the supervisor's own diagnostics
//! lc/              libcontainer's state (state.json, notify socket)
//! exec/<id>.json   ExitRecord of each finished exec
//! ```
//!
//! Every file is written atomically (temp, fsync, rename, fsync dir). A record with another
//! `version` is refused, not guessed at.

use std::path::{Path, PathBuf};

use berth_fsutil::atomic::write_atomic;
use serde::{Deserialize, Serialize};

use crate::rootfs::RootfsKind;
use crate::task::TaskSpec;

/// Version of [`ContainerRecord`] and [`ExitRecord`] files.
pub const STATE_VERSION: u32 = berth_monitor::exit::EXIT_VERSION;

/// Reading or writing a state file failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// I/O.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Unparseable or from another version.
    #[error("{path}: corrupt state file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A process identified beyond its pid: pid numbers are reused, start times are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    /// Host pid.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
}

impl ProcessId {
    /// Identifies a live process; `None` if it does not exist.
    pub fn of(pid: i32) -> Option<Self> {
        Some(ProcessId {
            pid,
            start_time: start_time(pid)?,
        })
    }

    /// True while this very process exists and is not a zombie.
    pub fn is_alive(&self) -> bool {
        match stat(self.pid) {
            Some((state, start)) => start == self.start_time && state != 'Z' && state != 'X',
            None => false,
        }
    }
}

fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// `/proc/PID/stat` start time of a process.
pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|(_, s)| s)
}

pub use berth_api::container::Status;

/// What the agent records about a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// File version.
    pub version: u32,
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The request.
    pub task: TaskSpec,
    /// Canonical image reference.
    pub image: String,
    /// Image config digest (the image id).
    pub image_id: String,
    /// RFC 3339.
    pub created: String,
    /// Absolute cgroup path.
    pub cgroup_path: PathBuf,
    /// How the rootfs was made.
    pub rootfs: RootfsKind,
    /// The supervisor.
    pub shim: Option<ProcessId>,
    /// The container's init once created.
    pub init: Option<ProcessId>,
    /// RFC 3339, when started.
    #[serde(default)]
    pub started: Option<String>,
    /// The image's `ExposedPorts` (`8080/tcp`), recorded for port publishing.
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    /// Times its restart policy started it again.
    #[serde(default)]
    pub restart_count: u32,
    /// The operator stopped or killed it: its restart policy holds off.
    #[serde(default)]
    pub stopped_by_operator: bool,
    /// Revocable work the agent took back (killed) under pressure: its exit reads
    /// `revoked`, and its restart policy does not bring it back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
    /// The CNI attachment of a container on a network of its own (pods keep theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStatus>,
    /// Its id range when it runs in a user namespace of its own (a pod member's is the
    /// pod's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idmap: Option<crate::userns::IdMap>,
    /// Its dir's project id where the data root keeps project quotas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_project: Option<u32>,
    /// Why the agent took it back (`disk-limit`): its exit reads that, and its restart
    /// policy does not bring it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted: Option<String>,
}

impl ContainerRecord {
    /// How long the run that ended with `exit` lasted (zero when unknown).
    pub fn ran_for(&self, exit: &ExitRecord) -> std::time::Duration {
        self.started
            .as_deref()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .zip(chrono::DateTime::parse_from_rfc3339(&exit.finished).ok())
            .and_then(|(a, b)| (b - a).to_std().ok())
            .unwrap_or_default()
    }
}

pub use berth_monitor::exit::{now, ExitRecord};

/// Paths of one container's state dir.
#[derive(Debug, Clone)]
pub struct ContainerDir(pub PathBuf);

impl ContainerDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// `create.pending`: present from the first record of a client's create until the agent
    /// answers it. A container found with it after an agent crash was never reported to
    /// its client (who saw an error), so recovery removes it. It is cleared just before the
    /// answer is sent, so an agent killed between the two keeps a container whose client
    /// saw the connection drop: the safe side of the ambiguity of any create whose server
    /// dies mid-reply (a client told an id always finds its container).
    pub fn create_pending(&self) -> PathBuf {
        self.0.join("create.pending")
    }
    /// `container.json`.
    pub fn record(&self) -> PathBuf {
        self.0.join("container.json")
    }
    /// `exit.json`.
    pub fn exit(&self) -> PathBuf {
        self.0.join("exit.json")
    }
    /// `logs/`.
    pub fn logs(&self) -> PathBuf {
        self.0.join("logs")
    }
    /// `shim.sock`.
    pub fn socket(&self) -> PathBuf {
        self.0.join("shim.sock")
    }
    /// `lc/` (libcontainer's root).
    pub fn libcontainer(&self) -> PathBuf {
        self.0.join("lc")
    }
    /// `exec/`.
    pub fn execs(&self) -> PathBuf {
        self.0.join("exec")
    }
    /// `etc/`.
    pub fn etc(&self) -> PathBuf {
        self.0.join("etc")
    }
}

/// Writes any versioned record atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &bytes, 0o600).map_err(|e| StateError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[derive(Deserialize)]
struct Versioned {
    version: u32,
}

/// Where a container or pod is on a CNI network: what `ps` and inspect show, and what
/// its `/etc/hosts` names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// The CNI network.
    pub network: String,
    /// Interface inside (`eth0`).
    pub interface: String,
    /// Addresses (no prefix length), the container's interface first.
    pub ips: Vec<String>,
    /// Gateway of the first address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// MAC address of the interface inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Published ports, `0.0.0.0:8080->80/tcp`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::task::PublishedPort>,
    /// DNS servers the plugins handed back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// DNS search domains the plugins handed back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
}

impl NetworkStatus {
    /// The API view.
    pub fn view(&self) -> berth_api::network::AttachmentView {
        berth_api::network::AttachmentView {
            network: self.network.clone(),
            interface: self.interface.clone(),
            ips: self.ips.clone(),
            gateway: self.gateway.clone(),
            mac: self.mac.clone(),
            ports: self.ports.clone(),
            dns: self.dns.clone(),
            dns_search: self.dns_search.clone(),
        }
    }
}

/// Reads a versioned record; `Ok(None)` if the file does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StateError::Io {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let v: Versioned = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if v.version != STATE_VERSION {
        return Err(corrupt(format!("unsupported version {}", v.version)));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn own_process_is_alive_and_versions_are_checked() {
        let me = ProcessId::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        let reused = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reused.is_alive());

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exit.json");
        let rec = ExitRecord::failed(127, "not-found", "x".into());
        write_json(&p, &rec).unwrap();
        assert_eq!(read_json::<ExitRecord>(&p).unwrap().unwrap(), rec);
        std::fs::write(&p, br#"{"version": 9}"#).unwrap();
        assert!(read_json::<ExitRecord>(&p).is_err());
        std::fs::write(&p, b"{half").unwrap();
        assert!(read_json::<ExitRecord>(&p).is_err());
        assert!(read_json::<ExitRecord>(&dir.path().join("none"))
            .unwrap()
            .is_none());
    }
}
