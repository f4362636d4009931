//! `berth agent`: the agent's options from flags, the config file and defaults (in that
//! order), then the agent itself. The only command that is not a client of the API.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cli::Cli;

pub async fn agent(cli: &Cli, args: &crate::cli_containers::AgentArgs) -> Result<()> {
    if args.check {
        let ok = crate::agent::check::print_report(&cli.root);
        if !ok {
            anyhow::bail!("the host lacks something berth needs (see above)");
        }
        return Ok(());
    }
    let config = crate::config::Config::load(&cli.config)?;
    if let Some(f) = config.log_format.as_deref() {
        if f != "text" && f != "json" {
            anyhow::bail!("invalid log_format {f:?} in the config: want text or json");
        }
    }
    // Flag, then config file, then default.
    let pick = |flag: &Option<String>, file: &Option<String>, default: &str| -> String {
        flag.clone()
            .or_else(|| file.clone())
            .unwrap_or_else(|| default.to_string())
    };
    // A positive duration: flag, then config file, then default.
    let duration = |key: &str, flag: &Option<String>, file: &Option<String>, default: &str| {
        let text = pick(flag, file, default);
        berth_runtime::health::parse_duration(&text)
            .filter(|d| !d.is_zero())
            .with_context(|| format!("invalid {key} {text:?}: want {default}, 500ms"))
    };
    let log_max_size = pick(&args.log_max_size, &config.log_max_size, "10m");
    let max_bytes = crate::config::parse_size("log_max_size", &log_max_size)?;
    let restart_backoff = duration(
        "restart_backoff",
        &args.restart_backoff,
        &config.restart_backoff,
        "10s",
    )?;
    let cpu_text = pick(&args.system_reserved_cpu, &config.system_reserved_cpu, "0m");
    // Berth's size grammar (as `log_max_size`); "0" turns a reserve or threshold off.
    let bytes = |field: &'static str, text: String| -> Result<u64> {
        if text.trim() == "0" {
            return Ok(0);
        }
        crate::config::parse_size(field, &text)
    };
    let reserved_millicpu = if cpu_text.trim_end_matches('m').trim() == "0" {
        0
    } else {
        let q = berth_runtime::pod::Quantity::Text(cpu_text);
        berth_runtime::pod::parse_cpu("system_reserved_cpu", &q)?
    };
    let reserved_memory = bytes(
        "system_reserved_memory",
        pick(
            &args.system_reserved_memory,
            &config.system_reserved_memory,
            "0",
        ),
    )?;
    let eviction_memory_available = bytes(
        "eviction_memory_available",
        pick(
            &args.eviction_memory_available,
            &config.eviction_memory_available,
            "100m",
        ),
    )?;
    let events_text = pick(&args.events_max_size, &config.events_max_size, "1m");
    let events_max_bytes = crate::config::parse_size("events_max_size", &events_text)?;
    let gc_high = args
        .image_gc_high_percent
        .or(config.image_gc_high_percent)
        .unwrap_or(85);
    let gc_low = args
        .image_gc_low_percent
        .or(config.image_gc_low_percent)
        .unwrap_or(80);
    if gc_low > gc_high || gc_high > 100 {
        anyhow::bail!("image GC watermarks: want low <= high <= 100, got {gc_low} and {gc_high}");
    }
    let metrics_addr = args
        .metrics_addr
        .clone()
        .or_else(|| config.metrics_addr.clone())
        .map(|a| {
            a.parse::<std::net::SocketAddr>()
                .with_context(|| format!("metrics_addr {a:?}"))
        })
        .transpose()?;
    let cni_timeout = duration("cni_timeout", &args.cni_timeout, &config.cni_timeout, "30s")?;
    let default_network = pick(&args.default_network, &config.default_network, "berth");
    if default_network != "none" {
        berth_cni::config::check_name(&default_network)
            .map_err(|e| anyhow::anyhow!("invalid default_network {default_network:?}: {e}"))?;
    }
    let network = crate::agent::network::NetworkSettings {
        cni: berth_cni::Cni {
            plugin_dirs: berth_cni::plugin::split_path(&pick(
                &args.cni_plugin_dir,
                &config.cni_plugin_dir,
                "/opt/cni/bin:/usr/lib/cni",
            )),
            cache_dir: PathBuf::new(),
            timeout: cni_timeout,
        },
        conf_dir: args
            .cni_conf_dir
            .clone()
            .or_else(|| config.cni_conf_dir.clone())
            .unwrap_or_else(|| PathBuf::from("/etc/cni/net.d")),
        default_network,
    };
    let bridge_name = pick(&args.bridge_name, &config.bridge_name, "berth0");
    if bridge_name.is_empty() || bridge_name.len() > 15 || bridge_name.contains(['/', ' ']) {
        anyhow::bail!("invalid bridge_name {bridge_name:?}: a device name of 1 to 15 characters");
    }
    let bridge_subnet = args
        .bridge_subnet
        .clone()
        .or_else(|| config.bridge_subnet.clone());
    let idle_timeout = duration(
        "api_idle_timeout",
        &args.api_idle_timeout,
        &config.api_idle_timeout,
        "10s",
    )?;
    let max_connections = args
        .max_connections
        .or(config.max_connections)
        .unwrap_or(1024);
    let max_pod_containers = args
        .max_pod_containers
        .or(config.max_pod_containers)
        .unwrap_or(64);
    if max_connections == 0 || max_pod_containers == 0 {
        anyhow::bail!("max_connections and max_pod_containers must be at least 1");
    }
    let node = crate::node_options::resolve(args, &config)?;
    let membership = crate::agent::member::Membership::from_args(args)?;
    let socket = match (&config.socket, cli.defaulted.0) {
        (Some(s), true) => s.clone(),
        _ => cli.socket.clone(),
    };
    let root = match (&config.root, cli.defaulted.1) {
        (Some(r), true) => r.clone(),
        _ => cli.root.clone(),
    };
    // Before anything is made on the host: a member that cannot join says so at once.
    if let Some(m) = &membership {
        m.check(&root)?;
    }
    let opts = crate::agent::AgentOptions {
        socket,
        root,
        cgroup_root: args
            .cgroup_root
            .clone()
            .or_else(|| config.cgroup_root.clone()),
        rotation: berth_runtime::logs::Rotation {
            max_bytes,
            max_files: args
                .log_max_files
                .or(config.log_max_files)
                .unwrap_or(3)
                .max(1),
        },
        rootfs_copy: args.rootfs_copy || config.rootfs_copy.unwrap_or(false),
        log_level: cli
            .log_level
            .clone()
            .or_else(|| std::env::var("BERTH_LOG").ok())
            .or_else(|| config.log_level.clone())
            .unwrap_or_else(|| "warn".into()),
        restart_backoff,
        reserved_millicpu,
        reserved_memory,
        events_max_bytes,
        metrics_addr,
        image_gc: (gc_high, gc_low),
        eviction_memory_available,
        network,
        bridge: (bridge_name, bridge_subnet),
        api_limits: crate::agent::server::Limits {
            max_connections,
            idle_timeout,
        },
        max_pod_containers,
        node,
        membership,
        config,
    };
    crate::agent::run(opts).await
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
