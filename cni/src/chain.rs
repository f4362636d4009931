//! ADD, CHECK and DEL of a network's whole plugin chain, as the spec's "network
//! configuration lists" section runs them: ADD in order, each plugin getting the previous
//! result as `prevResult`; DEL in reverse order with the cached result (0.4.0+); CHECK in
//! order with the cached result (0.4.0+, unless `disableCheck`).
//!
//! An ADD that fails part-way is undone by a DEL of the whole chain before the error is
//! returned, so a failed attachment leaves no veth, lease or firewall rule behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cache::{self, CacheEntry};
use crate::config::NetworkConfigList;
use crate::plugin::{self, Call, Operation};
use crate::CniError;

/// Where plugins and the cache are, and how long a plugin may run.
#[derive(Debug, Clone)]
pub struct Cni {
    /// Plugin search path (`CNI_PATH`).
    pub plugin_dirs: Vec<PathBuf>,
    /// The attachment cache (see [`crate::cache`]).
    pub cache_dir: PathBuf,
    /// Longest one plugin call may run.
    pub timeout: Duration,
}

/// A published port, in the `portMappings` capability's shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port on the host.
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Host address to listen on; empty: all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// One container (or pod) attached to one network.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// `CNI_CONTAINERID`: the pod or container id.
    pub container_id: String,
    /// The network namespace file.
    pub netns: PathBuf,
    /// Interface inside, e.g. `eth0`.
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
    /// Published ports (given to plugins with the `portMappings` capability).
    pub port_mappings: Vec<PortMapping>,
}

impl Cni {
    fn call<'a>(&'a self, op: Operation, entry: &'a CacheEntry) -> Call<'a> {
        Call {
            op,
            container_id: &entry.container_id,
            netns: &entry.netns,
            ifname: &entry.if_name,
            args: &entry.cni_args,
            plugin_dirs: &self.plugin_dirs,
            timeout: self.timeout,
        }
    }

    /// Attaches: returns the chain's result (raw JSON, see [`crate::CniResult`]). On error
    /// the chain has been deleted again and the cache entry removed.
    pub fn add(&self, net: &NetworkConfigList, att: &Attachment) -> Result<Value, CniError> {
        let mut capability_args = Map::new();
        if !att.port_mappings.is_empty() {
            capability_args.insert(
                "portMappings".into(),
                serde_json::to_value(&att.port_mappings).unwrap_or(Value::Null),
            );
        }
        let mut entry = CacheEntry {
            kind: cache::KIND.into(),
            version: cache::VERSION,
            container_id: att.container_id.clone(),
            network_name: net.name.clone(),
            if_name: att.ifname.clone(),
            netns: att.netns.display().to_string(),
            cni_args: att.args.clone(),
            config: net.to_json(),
            capability_args,
            result: None,
        };
        // Cached before any plugin runs: whatever happens next can be deleted.
        cache::write(&self.cache_dir, &entry)?;
        let mut prev: Option<Value> = None;
        for i in 0..net.plugins.len() {
            let conf = plugin_config(net, i, prev.as_ref(), &entry.capability_args);
            match plugin::run(
                net.plugin_type(i),
                &self.call(Operation::Add, &entry),
                &conf,
            ) {
                Ok(Some(result)) => prev = Some(result),
                Ok(None) => {}
                Err(e) => {
                    entry.result = prev;
                    if let Err(del) = self.del(&entry) {
                        tracing::error!(error = %del, "undoing a failed cni ADD");
                    }
                    return Err(e);
                }
            }
        }
        let result = prev.unwrap_or_else(
            || serde_json::json!({ "cniVersion": net.cni_version, "interfaces": [], "ips": [] }),
        );
        entry.result = Some(result.clone());
        cache::write(&self.cache_dir, &entry)?;
        Ok(result)
    }

    /// Detaches, from the cached arguments alone: every plugin in reverse order (a missing
    /// plugin binary is skipped: it cannot undo anything), then the entry is removed. On an
    /// error the entry stays, so the DEL can be tried again.
    pub fn del(&self, entry: &CacheEntry) -> Result<(), CniError> {
        let net = entry.network(&self.cache_dir)?;
        let prev = entry
            .result
            .as_ref()
            .filter(|_| net.version_at_least("0.4.0"));
        let mut first_error = None;
        // A namespace that is gone is passed as none at all, which every reference plugin
        // takes as "release what is outside" (a leftover non-namespace file would make
        // them fail instead).
        let netns_gone = !crate::workarounds::is_namespace(Path::new(&entry.netns));
        let mut call_entry = entry.clone();
        if netns_gone {
            call_entry.netns.clear();
        }
        for i in (0..net.plugins.len()).rev() {
            let conf = plugin_config(&net, i, prev, &entry.capability_args);
            match plugin::run(
                net.plugin_type(i),
                &self.call(Operation::Del, &call_entry),
                &conf,
            ) {
                Ok(_) if is_masquerading_bridge(&net, i) => {
                    match crate::workarounds::remove_leftover_masquerade(
                        &net.name,
                        &entry.container_id,
                    ) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(rules = n, "removed masquerade rules bridge left"),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                Ok(_) => {}
                Err(e @ CniError::PluginNotFound { .. }) => {
                    tracing::warn!(error = %e, "cni DEL: skipping a plugin that is not installed");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cni DEL");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => cache::remove(&self.cache_dir, entry),
        }
    }

    /// Deletes every attachment of `container_id` found in the cache.
    pub fn del_all(&self, container_id: &str) -> Result<(), CniError> {
        let mut result = Ok(());
        for entry in cache::of(&self.cache_dir, container_id) {
            if let Err(e) = self.del(&entry) {
                result = Err(e);
            }
        }
        result
    }

    /// Checks an attachment. Networks below 0.4.0 (no CHECK) and `disableCheck` ones pass.
    pub fn check(&self, entry: &CacheEntry) -> Result<(), CniError> {
        let net = entry.network(&self.cache_dir)?;
        if !net.version_at_least("0.4.0") || net.disable_check {
            return Ok(());
        }
        let Some(result) = entry.result.as_ref() else {
            return Err(CniError::Failed {
                plugin: net.plugin_type(0).to_string(),
                command: "CHECK",
                reason: "the ADD never finished".into(),
            });
        };
        let has_ipv6 = crate::CniResult::from_value(result)
            .map(|r| r.ips.iter().any(|ip| ip.address.contains(':')))
            .unwrap_or(true);
        for i in 0..net.plugins.len() {
            let conf = plugin_config(&net, i, Some(result), &entry.capability_args);
            match plugin::run(
                net.plugin_type(i),
                &self.call(Operation::Check, entry),
                &conf,
            ) {
                Ok(_) => {}
                Err(e) if !has_ipv6 && crate::workarounds::is_portmap_ipv6_check_bug(&e) => {
                    tracing::debug!(error = %e, "portmap CHECK looked for IPv6 rules of an IPv4-only attachment (plugins#819); ignored");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn is_masquerading_bridge(net: &NetworkConfigList, i: usize) -> bool {
    net.plugin_type(i) == "bridge"
        && net.plugins[i].get("ipMasq").and_then(Value::as_bool) == Some(true)
}

/// The configuration plugin `i` gets on stdin: its own object plus the list's `name` and
/// `cniVersion`, `prevResult`, and `runtimeConfig` for the capabilities it declares.
pub fn plugin_config(
    net: &NetworkConfigList,
    i: usize,
    prev: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Vec<u8> {
    let mut conf = net.plugins.get(i).cloned().unwrap_or_default();
    conf.insert("name".into(), net.name.clone().into());
    conf.insert("cniVersion".into(), net.cni_version.clone().into());
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.clone());
    }
    let declared: Vec<String> = conf
        .get("capabilities")
        .and_then(Value::as_object)
        .map(|c| {
            c.iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut runtime = Map::new();
    for cap in declared {
        if let Some(v) = capability_args.get(&cap) {
            runtime.insert(cap, v.clone());
        }
    }
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A plugin that logs `COMMAND stdin` lines and answers ADD with a result naming itself.
    fn recorder(dir: &Path, name: &str, fail_add: bool) {
        let log = dir.join("calls.log");
        let fail = if fail_add {
            r#"[ "$CNI_COMMAND" = ADD ] && { echo '{"code":100,"msg":"refused"}'; exit 1; }"#
        } else {
            ""
        };
        let body = format!(
            "#!/bin/sh\nread -r conf\necho \"{name} $CNI_COMMAND $conf\" >> {log}\n{fail}\n\
             [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.9.0.{n}/24\"}}],\"by\":\"{name}\"}}'\nexit 0\n",
            log = log.display(),
            n = name.len()
        );
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn setup(plugins: &[(&str, bool)], types: &str) -> (tempfile::TempDir, Cni, NetworkConfigList) {
        let dir = tempfile::tempdir().unwrap();
        for (p, fail) in plugins {
            recorder(dir.path(), p, *fail);
        }
        let cni = Cni {
            plugin_dirs: vec![dir.path().to_path_buf()],
            cache_dir: dir.path().join("cache"),
            timeout: Duration::from_secs(10),
        };
        let text = format!(r#"{{"cniVersion":"1.0.0","name":"t","plugins":[{types}]}}"#);
        let net = crate::config::parse(text.as_bytes(), Path::new("/t.conflist")).unwrap();
        (dir, cni, net)
    }

    fn att() -> Attachment {
        Attachment {
            container_id: "abc".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            args: "IgnoreUnknown=1".into(),
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
        }
    }

    fn calls(dir: &Path) -> Vec<(String, String, Value)> {
        std::fs::read_to_string(dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut it = l.splitn(3, ' ');
                let (p, c, j) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
                (
                    p.to_string(),
                    c.to_string(),
                    serde_json::from_str(j).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn add_chains_prev_results_and_del_repeats_from_the_cache() {
        let (dir, cni, net) = setup(
            &[("one", false), ("two", false)],
            r#"{"type":"one"},{"type":"two","capabilities":{"portMappings":true}}"#,
        );
        let result = cni.add(&net, &att()).unwrap();
        assert_eq!(result["by"], "two");
        let c = calls(dir.path());
        assert_eq!((c[0].0.as_str(), c[0].1.as_str()), ("one", "ADD"));
        assert_eq!(c[0].2["name"], "t");
        assert_eq!(c[0].2["cniVersion"], "1.0.0");
        assert!(c[0].2.get("prevResult").is_none() && c[0].2.get("runtimeConfig").is_none());
        assert_eq!(c[1].2["prevResult"]["by"], "one");
        assert_eq!(c[1].2["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);

        let entries = cache::of(&cni.cache_dir, "abc");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].result.as_ref().unwrap()["by"], "two");
        cni.check(&entries[0]).unwrap();
        cni.del(&entries[0]).unwrap();
        let c = calls(dir.path());
        let order: Vec<_> = c[2..].iter().map(|x| format!("{} {}", x.0, x.1)).collect();
        assert_eq!(order, ["one CHECK", "two CHECK", "two DEL", "one DEL"]);
        assert_eq!(c[4].2["prevResult"]["by"], "two");
        assert!(cache::of(&cni.cache_dir, "abc").is_empty());
    }

    #[test]
    fn a_failed_add_is_deleted_and_leaves_no_cache() {
        let (dir, cni, net) = setup(
            &[("one", false), ("bad", true)],
            r#"{"type":"one"},{"type":"bad"},{"type":"never"}"#,
        );
        let e = cni.add(&net, &att()).unwrap_err().to_string();
        assert_eq!(e, "plugin bad ADD: refused (CNI error 100)");
        let order: Vec<_> = calls(dir.path())
            .iter()
            .map(|x| format!("{} {}", x.0, x.1))
            .collect();
        // `never` is not installed: its DEL is skipped, the others still run.
        assert_eq!(order, ["one ADD", "bad ADD", "bad DEL", "one DEL"]);
        assert!(cache::list(&cni.cache_dir).is_empty());
    }

    #[test]
    fn an_add_cut_short_is_deleted_from_its_cache_entry() {
        let (dir, cni, net) = setup(&[("one", false)], r#"{"type":"one"}"#);
        // As an agent killed mid-ADD leaves it: the entry without a result.
        let entry = CacheEntry {
            kind: cache::KIND.into(),
            version: cache::VERSION,
            container_id: "dead".into(),
            network_name: "t".into(),
            if_name: "eth0".into(),
            netns: "/gone".into(),
            cni_args: String::new(),
            config: net.to_json(),
            capability_args: Map::new(),
            result: None,
        };
        cache::write(&cni.cache_dir, &entry).unwrap();
        cni.del_all("dead").unwrap();
        assert_eq!(calls(dir.path())[0].1, "DEL");
        assert!(cache::list(&cni.cache_dir).is_empty());
    }
}
