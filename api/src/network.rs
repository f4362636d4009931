//! Where a task's network is: its mode (`none`, `host`, or a CNI network) and the ports it
//! publishes, with the parsers the CLI and the API share.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::task::{bad, TaskError};

/// Network mode of a container or pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum NetworkMode {
    /// A new network namespace with only `lo` (up).
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// A new network namespace attached to this CNI network. `bridge` and `default` name
    /// the agent's default network until the agent resolves them.
    Cni(String),
}

impl NetworkMode {
    /// Attached to a CNI network.
    pub fn cni(&self) -> Option<&str> {
        match self {
            Self::Cni(n) => Some(n),
            _ => None,
        }
    }
}

impl FromStr for NetworkMode {
    type Err = TaskError;
    fn from_str(s: &str) -> Result<Self, TaskError> {
        match s {
            "none" => Ok(Self::None),
            "host" => Ok(Self::Host),
            // CNI's network name grammar.
            n if n.starts_with(|c: char| c.is_ascii_alphanumeric())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) =>
            {
                Ok(Self::Cni(n.to_string()))
            }
            other => Err(bad(
                "--network",
                other,
                "expected none, host, bridge or a CNI network name",
            )),
        }
    }
}

impl TryFrom<String> for NetworkMode {
    type Error = TaskError;
    fn try_from(s: String) -> Result<Self, TaskError> {
        s.parse()
    }
}

impl From<NetworkMode> for String {
    fn from(m: NetworkMode) -> String {
        m.to_string()
    }
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Host => f.write_str("host"),
            Self::Cni(n) => f.write_str(n),
        }
    }
}

/// A published port (`-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]`), set up by the
/// network's `portmap` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublishedPort {
    /// Host address; empty: every address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
    /// Port on the host.
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

impl FromStr for PublishedPort {
    type Err = TaskError;
    fn from_str(s: &str) -> Result<Self, TaskError> {
        let fail = |why: &str| bad("--publish", s, why);
        let (spec, protocol) = match s.rsplit_once('/') {
            Some((spec, proto)) => (spec, proto.to_ascii_lowercase()),
            None => (s, "tcp".to_string()),
        };
        if !["tcp", "udp", "sctp"].contains(&protocol.as_str()) {
            return Err(fail("the protocol must be tcp, udp or sctp"));
        }
        let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
        let port = |p: &str| -> Result<u16, TaskError> {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| fail("ports are numbers from 1 to 65535"))
        };
        let (host_ip, host, container) = match parts.as_slice() {
            [c, h] => (String::new(), *h, *c),
            [c, h, ip] => {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                ip.parse::<std::net::IpAddr>()
                    .map_err(|_| fail("the host address is not an IP address"))?;
                (ip.to_string(), *h, *c)
            }
            _ => return Err(fail(
                "expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp] (a host port is required)",
            )),
        };
        Ok(Self {
            host_ip,
            host_port: port(host)?,
            container_port: port(container)?,
            protocol,
        })
    }
}

impl std::fmt::Display for PublishedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = if self.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &self.host_ip
        };
        write!(
            f,
            "{ip}:{}->{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}

/// A network as `network ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    /// Name.
    pub name: String,
    /// `cniVersion`.
    pub cni_version: String,
    /// Plugin types, in chain order.
    pub plugins: Vec<String>,
    /// The file it is defined in.
    pub file: std::path::PathBuf,
    /// The agent's default network.
    pub default: bool,
    /// A file that could not be read instead (then the rest is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a container or pod is on a CNI network, as `ps` and `inspect` show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttachmentView {
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
    pub ports: Vec<PublishedPort>,
    /// DNS servers the plugins handed back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// DNS search domains the plugins handed back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
}
