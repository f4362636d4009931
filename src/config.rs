//! The agent's configuration file (`/etc/berth/config.toml`, `--config`, `BERTH_CONFIG`):
//! every `berth agent` flag has a key of the same name (dashes as underscores); a flag given
//! on the command line wins over the file, the file over the default. A file ending in
//! `.json` is read as JSON (the format of earlier releases).
//!
//! ```toml
//! version = 1
//! socket = "/run/berth/berth.sock"
//! root = "/var/lib/berth"
//! cgroup_root = "/berth"                 # default: berth below the agent's own cgroup
//! log_level = "info"
//! log_format = "text"                   # or "json": one object per line
//! log_max_size = "10m"                   # per container log file
//! log_max_files = 3
//! rootfs_copy = false
//! restart_backoff = "10s"                # first pod restart back-off, doubling to 5 min
//! system_reserved_cpu = "500m"           # kept from pods' admission
//! system_reserved_memory = "512Mi"
//! metrics_addr = "127.0.0.1:9323"        # Prometheus endpoint; off unless set
//! image_gc_high_percent = 85             # disk use that starts image GC
//! image_gc_low_percent = 80              # ... and where it stops
//! eviction_memory_available = "100Mi"    # below it, pods that are not guaranteed go
//! events_max_size = "1m"                 # events journal, per file (two kept)
//! cni_conf_dir = "/etc/cni/net.d"        # CNI network configurations
//! cni_plugin_dir = "/opt/cni/bin:/usr/lib/cni"
//! cni_timeout = "30s"                    # per plugin call
//! default_network = "berth"              # pods' and `run --network bridge`'s; or "none"
//! bridge_name = "berth0"                 # of the default network, when Berth installs it
//! bridge_subnet = "10.77.0.0/16"         # ditto; default: a free 10.x.0.0/16
//! insecure_registries = ["registry.lan:5000"]   # plain HTTP (loopback always is)
//! max_layer_bytes = 34359738368          # decompression-bomb limit per layer
//! max_connections = 1024                 # open API connections; more are answered 503
//! api_idle_timeout = "10s"               # to send request headers; idle keep-alive
//! max_pod_containers = 64                # init + app containers of one pod
//! capacity_cpu = "2"                     # what the node offers; default: the machine's
//! capacity_memory = "8g"                 # (declared: only Berth's tasks count against it)
//! reserved_cpus = "0"                    # CPUs kept out of every container
//! userns_pool = "1073741824:67108864"    # host ids for --userns auto (START:COUNT); default:
//!                                        # berth's /etc/subuid and /etc/subgid entries
//! userns_default = "host"                # or "auto": every task in a user namespace
//! disk_check_interval = "10s"            # disk use per task measured this often (no quotas)
//!
//! [revocable]                            # the usage estimator and graded reclaim
//! warmup = "5m"                          # no slack before; each task holds its request
//! window = 300                           # seconds of samples a task's percentile uses
//! percentile = 95                        # of a task's usage, for its reservation
//! margin_percent = 10                    # added to it
//! decay_half_life = "5m"                 # a reservation falls toward it this slowly
//! cpu_threshold_percent = 60             # slack = capacity × this − reservations − system
//! memory_threshold_percent = 65
//! cpu_suppress_percent = 65              # revocable CPU capped to capacity × this − use
//! memory_pressure_percent = 70           # memory reclaim starts above capacity × this
//! memory_psi_full = 10                   # ... or node memory PSI full avg10 above (0: off)
//! hysteresis_percent = 5                 # calm = below a threshold by this
//! step_after = "2s"                      # pressure held this long → the next step
//! recover_after = "5s"                   # calm held this long → one step undone
//! min_cpu = "10m"                        # the least CPU a throttled tier keeps
//! sample_interval = "500ms"              # usage sampled (and reclaim decided) this often
//! ```
//! A missing file means defaults; an unreadable or malformed one is an error.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub root: Option<PathBuf>,
    #[serde(default)]
    pub cgroup_root: Option<PathBuf>,
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub log_format: Option<String>,
    #[serde(default)]
    pub log_max_size: Option<String>,
    #[serde(default)]
    pub log_max_files: Option<u32>,
    #[serde(default)]
    pub rootfs_copy: Option<bool>,
    #[serde(default)]
    pub restart_backoff: Option<String>,
    #[serde(default)]
    pub system_reserved_cpu: Option<String>,
    #[serde(default)]
    pub system_reserved_memory: Option<String>,
    #[serde(default)]
    pub metrics_addr: Option<String>,
    #[serde(default)]
    pub image_gc_high_percent: Option<u8>,
    #[serde(default)]
    pub image_gc_low_percent: Option<u8>,
    #[serde(default)]
    pub eviction_memory_available: Option<String>,
    #[serde(default)]
    pub events_max_size: Option<String>,
    #[serde(default)]
    pub cni_conf_dir: Option<PathBuf>,
    #[serde(default)]
    pub cni_plugin_dir: Option<String>,
    #[serde(default)]
    pub cni_timeout: Option<String>,
    #[serde(default)]
    pub default_network: Option<String>,
    #[serde(default)]
    pub bridge_name: Option<String>,
    #[serde(default)]
    pub bridge_subnet: Option<String>,
    #[serde(default)]
    pub insecure_registries: BTreeSet<String>,
    #[serde(default)]
    pub max_layer_bytes: Option<u64>,
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub api_idle_timeout: Option<String>,
    #[serde(default)]
    pub max_pod_containers: Option<usize>,
    #[serde(default)]
    pub capacity_cpu: Option<String>,
    #[serde(default)]
    pub capacity_memory: Option<String>,
    #[serde(default)]
    pub reserved_cpus: Option<String>,
    #[serde(default)]
    pub userns_pool: Option<String>,
    #[serde(default)]
    pub userns_default: Option<String>,
    #[serde(default)]
    pub disk_check_interval: Option<String>,
    #[serde(default)]
    pub revocable: RevocableConfig,
}

/// `[revocable]`: the estimator's and the reclaim controller's constants (module doc).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocableConfig {
    #[serde(default)]
    pub warmup: Option<String>,
    #[serde(default)]
    pub window: Option<usize>,
    #[serde(default)]
    pub percentile: Option<f64>,
    #[serde(default)]
    pub margin_percent: Option<f64>,
    #[serde(default)]
    pub decay_half_life: Option<String>,
    #[serde(default)]
    pub cpu_threshold_percent: Option<f64>,
    #[serde(default)]
    pub memory_threshold_percent: Option<f64>,
    #[serde(default)]
    pub cpu_suppress_percent: Option<f64>,
    #[serde(default)]
    pub memory_pressure_percent: Option<f64>,
    #[serde(default)]
    pub memory_psi_full: Option<f64>,
    #[serde(default)]
    pub hysteresis_percent: Option<f64>,
    #[serde(default)]
    pub step_after: Option<String>,
    #[serde(default)]
    pub recover_after: Option<String>,
    #[serde(default)]
    pub min_cpu: Option<String>,
    #[serde(default)]
    pub sample_interval: Option<String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading config {}", path.display())),
        };
        let config: Self = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing config {}", path.display()))?
        } else {
            let text = String::from_utf8(bytes)
                .with_context(|| format!("config {} is not UTF-8", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?
        };
        if let Some(v) = config.version.filter(|v| *v != 1) {
            bail!(
                "config {} has version {v}; this berth reads version 1",
                path.display()
            );
        }
        Ok(config)
    }
}

/// Parses a size of a flag or config key `field`: Berth's one grammar
/// (`berth_runtime::task::parse_bytes`: plain bytes or a k/m/g/t suffix in powers of 1024,
/// as Docker's `--memory`, optionally followed by `b`; `Mi`-style spellings mean the same).
pub fn parse_size(field: &'static str, text: &str) -> Result<u64> {
    let n = berth_runtime::task::parse_bytes(field, text)?;
    u64::try_from(n).with_context(|| format!("{field}: size {text:?} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("s", "512").ok(), Some(512));
        assert_eq!(parse_size("s", "4k").ok(), Some(4096));
        assert_eq!(parse_size("s", "1G").ok(), Some(1 << 30));
        assert_eq!(parse_size("s", "2mb").ok(), Some(2 << 20));
        // The same grammar for every key: "10m" is 10 MiB, also as a memory reserve.
        assert_eq!(parse_size("s", "10m").ok(), Some(10 << 20));
        assert_eq!(parse_size("s", "512Mi").ok(), Some(512 << 20));
        assert!(parse_size("s", "12x").is_err());
        assert!(parse_size("s", "-1").is_err());
        assert!(parse_size("s", "99999999999t").is_err());
    }

    #[test]
    fn the_shipped_example_config_reads() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/config.toml"));
        let c = Config::load(path).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(c.revocable.warmup.as_deref(), Some("5m"));
        assert_eq!(c.revocable.memory_pressure_percent, Some(70.0));
    }

    #[test]
    fn toml_and_json() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let t = dir.path().join("config.toml");
        std::fs::write(
            &t,
            "version = 1\nlog_max_files = 5\nmetrics_addr = \"127.0.0.1:1\"\nsystem_reserved_cpu = \"500m\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let c = Config::load(&t).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.log_max_files, Some(5));
        assert_eq!(c.metrics_addr.as_deref(), Some("127.0.0.1:1"));
        std::fs::write(&t, "bogus = 1\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(Config::load(&t).is_err());
        let j = dir.path().join("config.json");
        std::fs::write(&j, r#"{"version": 1, "rootfs_copy": true}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Config::load(&j).ok().and_then(|c| c.rootfs_copy),
            Some(true)
        );
        assert!(Config::load(&dir.path().join("none.toml")).is_ok());
    }
}
