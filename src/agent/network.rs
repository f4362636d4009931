//! Networking of pods and containers through CNI (the `berth-cni` crate): resolving a
//! network mode, making a lone container's network namespace, ADD/CHECK/DEL, published
//! ports, and the `/etc/hosts` and `/etc/resolv.conf` a network implies.
//!
//! A pod's network namespace is its sandbox's (`pods/<id>/ns/net`); the pod id is the CNI
//! container id. A container on a CNI network outside a pod gets a namespace of its own,
//! `<root>/netns/<id>/net` (a bind mount made by `berth shim sandbox --net-only`), attached
//! before its supervisor starts, so the process sees its interface from its first
//! instruction; it stays attached across restarts and is detached on removal.
//!
//! Plugin calls block (they run binaries, up to the timeout each): callers run them on
//! tokio's blocking pool. Every attachment is cached by the cni crate before its ADD runs;
//! at start the agent deletes cached attachments whose pod or container no longer exists
//! (an agent killed in the middle of a create), so nothing leaks across a crash.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use berth_cni::cache::CacheEntry;
use berth_runtime::state::NetworkStatus;
use berth_runtime::task::{NetworkMode, PublishedPort};

use super::error::ApiError;
use super::node::Node;
use super::Settings;

/// Where networks and plugins are.
#[derive(Debug, Clone)]
pub struct NetworkSettings {
    /// Plugin dirs, cache dir and plugin timeout.
    pub cni: berth_cni::Cni,
    /// `.conflist` dir.
    pub conf_dir: PathBuf,
    /// What `bridge`, `default` and pods without a `network` mean: a CNI network name or
    /// `none`.
    pub default_network: String,
}

/// The mode with `bridge`/`default` replaced by the agent's default network.
pub fn resolve(settings: &Settings, mode: &NetworkMode) -> NetworkMode {
    match mode {
        NetworkMode::Cni(n) if n == "bridge" || n == "default" => settings
            .network
            .default_network
            .parse()
            .unwrap_or(NetworkMode::None),
        other => other.clone(),
    }
}

/// `<root>/netns/<id>`: the dir holding a lone container's network namespace file.
pub fn netns_dir(settings: &Settings, id: &str) -> PathBuf {
    settings.root.join("netns").join(id)
}

/// Makes the network namespace of a container outside a pod; returns its file.
pub async fn make_netns(
    settings: &Settings,
    id: &str,
    idmap: Option<&berth_runtime::userns::IdMap>,
) -> Result<PathBuf, ApiError> {
    let dir = netns_dir(settings, id);
    let mut cmd = tokio::process::Command::new(&settings.exe);
    cmd.arg("shim")
        .arg("sandbox")
        .arg("--dir")
        .arg(&dir)
        .arg("--net-only");
    if let Some(map) = idmap {
        cmd.arg("--userns").arg(userns_arg(map));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(false);
    let (mut child, ready) = super::create::start_and_read_ready(cmd, None).await?;
    let _ = child.wait().await;
    if let Some(e) = ready.error {
        let _ = berth_runtime::sandbox::release(&dir);
        return Err(ApiError::internal(e));
    }
    Ok(dir.join("net"))
}

/// `UID:GID:SIZE` for `berth shim sandbox --userns`.
pub fn userns_arg(map: &berth_runtime::userns::IdMap) -> String {
    format!("{}:{}:{}", map.uid, map.gid, map.size)
}

/// What to attach.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    /// Pod or container id (`CNI_CONTAINERID`).
    pub id: String,
    /// Pod or container name (`K8S_POD_NAME` in `CNI_ARGS`).
    pub name: String,
    /// CNI network name.
    pub network: String,
    /// Network namespace file.
    pub netns: PathBuf,
    /// Published ports.
    pub ports: Vec<PublishedPort>,
}

/// ADD (blocking). A failed ADD has been undone by the cni crate.
pub fn attach(settings: &Settings, req: &AttachRequest) -> Result<NetworkStatus, ApiError> {
    let n = &settings.network;
    let fail = |e: berth_cni::CniError| {
        ApiError::bad_request(format!("network {}: {e}", req.network)).with_exit_code(125)
    };
    let net = berth_cni::config::load_dir(&n.conf_dir)
        .get(&req.network, &n.conf_dir)
        .map_err(fail)?;
    let attachment = berth_cni::Attachment {
        container_id: req.id.clone(),
        netns: req.netns.clone(),
        ifname: "eth0".into(),
        // What the kubelet passes; plugins that do not know a key ignore it.
        args: format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=berth;K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
            req.name, req.id
        ),
        port_mappings: req
            .ports
            .iter()
            .map(|p| berth_cni::PortMapping {
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: p.protocol.clone(),
                host_ip: p.host_ip.clone(),
            })
            .collect(),
    };
    let began = std::time::Instant::now();
    let raw = n.cni.add(&net, &attachment);
    observe(settings, "add", began, raw.is_ok());
    let raw = raw.map_err(fail)?;
    tracing::debug!(id = req.id, network = req.network, elapsed = ?began.elapsed(), "cni ADD");
    let result = berth_cni::CniResult::from_value(&raw).unwrap_or_default();
    let inside = result
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_some() && i.name == attachment.ifname);
    Ok(NetworkStatus {
        network: req.network.clone(),
        interface: attachment.ifname,
        ips: result.addresses(),
        gateway: result.ips.first().and_then(|ip| ip.gateway.clone()),
        mac: inside.map(|i| i.mac.clone()).filter(|m| !m.is_empty()),
        ports: req.ports.clone(),
        dns: result.dns.nameservers.clone(),
        dns_search: result.dns.search.clone(),
    })
}

/// DEL of every attachment of `id` (blocking), from the cache alone.
pub fn detach(settings: &Settings, id: &str) -> Result<(), ApiError> {
    let began = std::time::Instant::now();
    let result = settings.network.cni.del_all(id);
    observe(settings, "del", began, result.is_ok());
    result.map_err(|e| ApiError::internal(format!("detaching {id} from its network: {e}")))
}

/// One CNI operation for the metrics endpoint.
fn observe(settings: &Settings, op: &str, began: std::time::Instant, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    settings.cni_latency.observe(
        &format!("op=\"{op}\",result=\"{result}\""),
        began.elapsed().as_secs_f64(),
    );
}

/// DEL, then the lone container's namespace (blocking). Errors are logged: a removal goes
/// on, and a DEL left undone is retried at the next agent start.
pub fn release_container(settings: &Settings, id: &str) {
    if let Err(e) = detach(settings, id) {
        tracing::error!(error = %e.message, "cni DEL failed; retried at the next agent start");
    }
    if let Err(e) = berth_runtime::sandbox::release(&netns_dir(settings, id)) {
        tracing::error!(error = %e, "releasing a container's network namespace");
    }
}

/// CHECK of every attachment of `id` (blocking); the networks checked.
pub fn check(settings: &Settings, id: &str) -> Result<Vec<String>, ApiError> {
    let entries = berth_cni::cache::of(&settings.network.cni.cache_dir, id);
    if entries.is_empty() {
        return Err(ApiError::not_found(format!("{id} is on no CNI network")));
    }
    let mut checked = Vec::new();
    for entry in entries {
        let began = std::time::Instant::now();
        let result = settings.network.cni.check(&entry);
        observe(settings, "check", began, result.is_ok());
        result.map_err(|e| ApiError::conflict(format!("network {}: {e}", entry.network_name)))?;
        checked.push(entry.network_name);
    }
    Ok(checked)
}

/// Answers `reply` with the CHECK of `key`'s network, off the owner task. A pod
/// container's network is its pod's.
pub fn check_async(node: &Node, key: &str, reply: super::node::Reply<Vec<String>>) {
    let id = match node.resolve(key) {
        Ok(c) => Ok(c
            .record()
            .task
            .pod
            .as_ref()
            .map_or(c.record().id.clone(), |m| m.pod_id.clone())),
        Err(_) => super::pod::resolve(node, key),
    };
    let settings = node.settings.clone();
    tokio::spawn(async move {
        let result = match id {
            Ok(id) => tokio::task::spawn_blocking(move || check(&settings, &id))
                .await
                .unwrap_or_else(|e| Err(ApiError::internal(e))),
            Err(e) => Err(e),
        };
        let _ = reply.send(result);
    });
}

pub use berth_api::network::NetworkView as NetworkInfo;

/// Every network of the config dir, unreadable files included (blocking).
pub fn list(settings: &Settings) -> Vec<NetworkInfo> {
    let loaded = berth_cni::config::load_dir(&settings.network.conf_dir);
    let mut out: Vec<NetworkInfo> = loaded
        .networks
        .iter()
        .map(|n| NetworkInfo {
            name: n.name.clone(),
            cni_version: n.cni_version.clone(),
            plugins: (0..n.plugins.len())
                .map(|i| n.plugin_type(i).to_string())
                .collect(),
            file: n.source.clone(),
            default: n.name == settings.network.default_network,
            error: None,
        })
        .collect();
    for e in loaded.errors {
        let file = match &e {
            berth_cni::CniError::Config { path, .. } | berth_cni::CniError::Io { path, .. } => {
                path.clone()
            }
            _ => PathBuf::new(),
        };
        out.push(NetworkInfo {
            name: String::new(),
            cni_version: String::new(),
            plugins: Vec::new(),
            file,
            default: false,
            error: Some(e.to_string()),
        });
    }
    out
}

/// Refuses host ports another pod or container of this node already publishes.
pub fn check_ports_free(node: &Node, ports: &[PublishedPort]) -> Result<(), ApiError> {
    // Attached containers, containers being attached, and every pod's hostPorts (from
    // its spec: a pod being set up has no attachment yet; a stopped one keeps its own).
    let mut taken: HashSet<(u16, String)> = node
        .containers
        .values()
        .filter_map(|c| c.record().network.as_ref())
        .flat_map(|s| s.ports.iter())
        .chain(node.pending_ports.values().flatten())
        .map(|p| (p.host_port, p.protocol.clone()))
        .collect();
    for pod in node.pods.values() {
        for c in &pod.record().spec.containers {
            for p in c.ports.iter().filter(|p| p.host_port.is_some()) {
                let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                taken.insert((p.host_port.unwrap_or_default(), proto));
            }
        }
    }
    for p in ports {
        if taken.contains(&(p.host_port, p.protocol.clone())) {
            return Err(ApiError::conflict(format!(
                "host port {}/{} is already published by another container or pod",
                p.host_port, p.protocol
            ))
            .with_exit_code(125));
        }
    }
    Ok(())
}

/// What the agent found at start that nothing owns any more: cached attachments and
/// container network namespaces. Listed before the owner runs, so nothing created after
/// start can be mistaken for an orphan.
#[derive(Debug, Default)]
pub struct Orphans {
    entries: Vec<CacheEntry>,
    netns: Vec<PathBuf>,
}

/// Lists the orphans of a recovered node.
pub fn orphans(node: &Node) -> Orphans {
    let known = |id: &str| node.containers.contains_key(id) || node.pods.contains_key(id);
    let settings = &node.settings;
    let entries = berth_cni::cache::list(&settings.network.cni.cache_dir)
        .into_iter()
        .filter(|e| !known(&e.container_id))
        .collect();
    let netns = std::fs::read_dir(settings.root.join("netns"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !known(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    Orphans { entries, netns }
}

/// Deletes the orphans (blocking).
pub fn sweep(settings: &Settings, orphans: Orphans) {
    for entry in orphans.entries {
        tracing::warn!(
            id = entry.container_id,
            network = entry.network_name,
            "deleting the network attachment of a pod or container that is gone"
        );
        if let Err(e) = settings.network.cni.del(&entry) {
            tracing::error!(error = %e, "cni DEL of an orphan");
        }
    }
    for dir in orphans.netns {
        if let Err(e) = berth_runtime::sandbox::release(&dir) {
            tracing::error!(error = %e, "releasing an orphaned network namespace");
        }
    }
}

/// Writes Berth's default network into the config dir when no network there has its name
/// (the first start on a host), with host-local's leases below the data root.
pub fn install_default(
    settings: &NetworkSettings,
    root: &Path,
    bridge: &str,
    subnet: Option<String>,
) -> Result<(), berth_cni::CniError> {
    if settings.default_network != "berth" {
        return Ok(());
    }
    let loaded = berth_cni::config::load_dir(&settings.conf_dir);
    let d = berth_cni::default_network::DefaultNetwork {
        name: settings.default_network.clone(),
        bridge: bridge.to_string(),
        subnet,
        ipam_dir: root.join("cni").join("ipam"),
    };
    if let Some(path) =
        berth_cni::default_network::install(&settings.conf_dir, &d, &loaded.networks)?
    {
        tracing::info!(file = %path.display(), "installed the default network");
    }
    Ok(())
}

/// `/etc/hosts` of a container in its own network namespace.
pub fn etc_hosts(hostname: &str, status: Option<&NetworkStatus>) -> String {
    let own = status
        .and_then(|s| s.ips.first())
        .map_or("127.0.1.1", String::as_str);
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}\t{hostname}\n")
}

/// `/etc/resolv.conf`: what the network's plugins handed back, else the host's without
/// loopback resolvers (unreachable from another network namespace).
pub fn resolv_conf(status: Option<&NetworkStatus>, host: &str) -> String {
    if let Some(s) = status.filter(|s| !s.dns.is_empty()) {
        let mut out: String = s.dns.iter().map(|n| format!("nameserver {n}\n")).collect();
        if !s.dns_search.is_empty() {
            out.push_str(&format!("search {}\n", s.dns_search.join(" ")));
        }
        return out;
    }
    host.lines()
        .filter(|l| !(l.starts_with("nameserver") && (l.contains(" 127.") || l.contains(" ::1"))))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_resolv_follow_the_network() {
        let s = NetworkStatus {
            ips: vec!["10.77.0.5".into()],
            dns: vec!["10.77.0.1".into()],
            dns_search: vec!["svc.local".into()],
            ..NetworkStatus::default()
        };
        assert!(etc_hosts("web", Some(&s)).ends_with("10.77.0.5\tweb\n"));
        assert!(etc_hosts("web", None).ends_with("127.0.1.1\tweb\n"));
        assert_eq!(
            resolv_conf(Some(&s), "nameserver 1.1.1.1\n"),
            "nameserver 10.77.0.1\nsearch svc.local\n"
        );
        assert_eq!(
            resolv_conf(
                None,
                "nameserver 127.0.0.53\nnameserver 9.9.9.9\nsearch x\n"
            ),
            "nameserver 9.9.9.9\nsearch x\n"
        );
    }
}
