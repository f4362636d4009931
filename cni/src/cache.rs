//! What an ADD was given, kept so DEL and CHECK get the same arguments later, whatever
//! happened in between (agent restart or crash, the `.conflist` edited or deleted). Like
//! libcni's `/var/lib/cni/results`, but written before the ADD starts (with no result yet),
//! so an agent killed during an ADD can still undo the part that ran.
//!
//! One file per attachment: `<cache dir>/<network>-<container id>-<ifname>.json`, written
//! atomically (temp, fsync, rename, fsync dir), mode 0600:
//!
//! ```json
//! { "kind": "cniCacheV1", "version": 1,
//!   "containerId": "…", "networkName": "berth", "ifName": "eth0",
//!   "netns": "/var/lib/berth/pods/<id>/ns/net", "cniArgs": "IgnoreUnknown=1;…",
//!   "config": { the whole network configuration list },
//!   "capabilityArgs": { "portMappings": [ … ] },
//!   "result": { the chain's ADD result } | null }
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::NetworkConfigList;
use crate::CniError;

/// `kind` of a cache file.
pub const KIND: &str = "cniCacheV1";
/// `version` of the layout above.
pub const VERSION: u32 = 1;

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    /// Always [`KIND`].
    pub kind: String,
    /// Layout version.
    pub version: u32,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// The network's name.
    pub network_name: String,
    /// `CNI_IFNAME`.
    pub if_name: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// `CNI_ARGS`.
    pub cni_args: String,
    /// The network configuration list, as it was at ADD.
    pub config: Value,
    /// Runtime arguments given to plugins that declare the capability.
    #[serde(default)]
    pub capability_args: Map<String, Value>,
    /// The ADD result; `null` while the ADD runs (or if it never finished).
    #[serde(default)]
    pub result: Option<Value>,
}

impl CacheEntry {
    /// The file this entry lives in.
    pub fn path(&self, dir: &Path) -> PathBuf {
        path(dir, &self.network_name, &self.container_id, &self.if_name)
    }

    /// The cached network configuration.
    pub fn network(&self, dir: &Path) -> Result<NetworkConfigList, CniError> {
        let bytes = serde_json::to_vec(&self.config).map_err(|e| CniError::Config {
            path: self.path(dir),
            reason: e.to_string(),
        })?;
        crate::config::parse(&bytes, &self.path(dir))
    }
}

/// `<dir>/<network>-<id>-<ifname>.json`.
pub fn path(dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    dir.join(format!("{network}-{container_id}-{ifname}.json"))
}

/// Writes an entry atomically.
pub fn write(dir: &Path, entry: &CacheEntry) -> Result<(), CniError> {
    std::fs::create_dir_all(dir).map_err(CniError::io("creating", dir))?;
    let path = entry.path(dir);
    let bytes = serde_json::to_vec_pretty(entry).map_err(|e| CniError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    berth_fsutil::atomic::write_atomic(&path, &bytes, 0o600).map_err(|e| CniError::Io {
        what: "writing",
        path,
        source: std::io::Error::other(e.to_string()),
    })
}

/// Removes an entry (gone already is fine).
pub fn remove(dir: &Path, entry: &CacheEntry) -> Result<(), CniError> {
    let path = entry.path(dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CniError::io("removing", &path)(e)),
    }
}

/// Every readable entry in `dir`; unreadable files are logged and skipped.
pub fn list(dir: &Path) -> Vec<CacheEntry> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<CacheEntry>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(e) if e.kind == KIND && e.version <= VERSION => found.push(e),
            Ok(e) => {
                tracing::error!(file = %path.display(), kind = e.kind, version = e.version, "cni cache entry of an unknown kind; skipped")
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "unreadable cni cache entry; skipped")
            }
        }
    }
    found.sort_by(|a, b| a.network_name.cmp(&b.network_name));
    found
}

/// The entries of one container (or pod).
pub fn of(dir: &Path, container_id: &str) -> Vec<CacheEntry> {
    list(dir)
        .into_iter()
        .filter(|e| e.container_id == container_id)
        .collect()
}
