//! User namespaces per task: the mode a task asks for (`--userns`, a pod's `hostUsers`) and
//! the range of host ids the agent gave it.

use serde::{Deserialize, Serialize};

/// `--userns`: whether a container gets a user namespace of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsernsMode {
    /// The host's user namespace: root inside is root outside (Docker's default).
    Host,
    /// A user namespace of its own on a range of 65,536 host ids from the agent's pool
    /// (podman's `--userns=auto`, the kubelet's `hostUsers: false`).
    Auto,
}

impl UsernsMode {
    /// Parses `host` or `auto` (the flag's values).
    pub fn parse(s: &str) -> Result<Self, crate::task::TaskError> {
        match s {
            "host" | "" => Ok(Self::Host),
            "auto" => Ok(Self::Auto),
            _ => Err(crate::task::bad("--userns", s, "expected host or auto")),
        }
    }
}

/// Ids in one task's range (the kernel's maximum a mapping line needs for a full 16-bit
/// id space, what the kubelet and podman give each pod).
pub const RANGE_SIZE: u32 = 65_536;

/// A task's id mapping: container ids `0..size` are host ids `uid..uid+size` (and `gid…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// First host uid (container uid 0).
    pub uid: u32,
    /// First host gid (container gid 0).
    pub gid: u32,
    /// Ids in the range.
    pub size: u32,
}

impl IdMap {
    /// The host uid of container uid `id` (None outside the range).
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        (id < self.size).then(|| self.uid + id)
    }

    /// The host gid of container gid `id`.
    pub fn host_gid(&self, id: u32) -> Option<u32> {
        (id < self.size).then(|| self.gid + id)
    }

    /// `/proc/PID/uid_map`'s line.
    pub fn uid_line(&self) -> String {
        format!("0 {} {}\n", self.uid, self.size)
    }

    /// `/proc/PID/gid_map`'s line.
    pub fn gid_line(&self) -> String {
        format!("0 {} {}\n", self.gid, self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_ids_inside_the_range_only() {
        let m = IdMap {
            uid: 100_000,
            gid: 200_000,
            size: RANGE_SIZE,
        };
        assert_eq!(m.host_uid(0), Some(100_000));
        assert_eq!(m.host_gid(1000), Some(201_000));
        assert_eq!(m.host_uid(RANGE_SIZE), None);
        assert_eq!(m.uid_line(), "0 100000 65536\n");
        assert!(UsernsMode::parse("keep-id").is_err());
        assert_eq!(UsernsMode::parse("auto").unwrap(), UsernsMode::Auto);
    }
}
