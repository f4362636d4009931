//! The result a chain's ADD returns: 1.0.0 and 0.4.0/0.3.x results share a shape (0.3.x
//! adds a `version` per IP, ignored here). Kept as the raw JSON too: the next plugin gets it
//! verbatim as `prevResult`, and DEL/CHECK get the cached one.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An interface the chain made or used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address.
    #[serde(default)]
    pub mac: String,
    /// The netns path when inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address given to an interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR, e.g. `10.77.0.2/16`.
    pub address: String,
    /// Gateway address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// DNS settings a plugin handed back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A chain's ADD result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    /// Version of the result.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Interfaces.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// DNS.
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// Reads the typed view of a raw result (unknown fields ignored).
    pub fn from_value(v: &Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(v.clone())
    }

    /// The addresses without their prefix length, container interfaces first.
    pub fn addresses(&self) -> Vec<String> {
        let in_sandbox = |ip: &IpConfig| {
            ip.interface
                .and_then(|i| self.interfaces.get(i))
                .is_some_and(|i| i.sandbox.is_some())
        };
        let mut ips: Vec<&IpConfig> = self.ips.iter().collect();
        ips.sort_by_key(|ip| !in_sandbox(ip));
        ips.iter()
            .map(|ip| ip.address.split('/').next().unwrap_or("").to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_1_0_and_0_4_results() {
        let v1: Value = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"b0","mac":"aa"},{"name":"eth0","mac":"bb","sandbox":"/n"}],
               "ips":[{"interface":1,"address":"10.1.0.2/24","gateway":"10.1.0.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#,
        )
        .unwrap();
        let r = CniResult::from_value(&v1).unwrap();
        assert_eq!(r.addresses(), ["10.1.0.2"]);
        assert_eq!(r.ips[0].gateway.as_deref(), Some("10.1.0.1"));
        let v04: Value = serde_json::from_str(
            r#"{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.2.0.9/16"},{"version":"6","address":"fd00::9/64","interface":0}],
               "interfaces":[{"name":"eth0","sandbox":"/n"}],"dns":{"nameservers":["10.2.0.1"],"search":["svc"]}}"#,
        )
        .unwrap();
        let r = CniResult::from_value(&v04).unwrap();
        assert_eq!(r.addresses(), ["fd00::9", "10.2.0.9"]);
        assert_eq!(r.dns.nameservers, ["10.2.0.1"]);
        assert_eq!(r.dns.search, ["svc"]);
    }
}
