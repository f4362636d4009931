//! `berth`: the node agent's binary: the agent daemon (`berth agent`), its CLI clients, and
//! the per-container supervisor (`berth shim`, single-threaded, no async runtime).

mod agent;
mod api;
mod cli;
mod cli_cluster;
mod cli_containers;
mod cli_pods;
mod client;
mod commands;
mod config;
mod daemon;
mod format;
mod master;
mod node_options;
mod progress;
mod shim;

use std::process::ExitCode;

fn main() -> ExitCode {
    // The supervisor (`berth shim …`, started by the agent) must stay single-threaded — it
    // forks through libcontainer — and small: it skips clap and the async runtime.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "shim") {
        init_tracing(None);
        return shim::run(&argv[2..]);
    }
    let matches = <cli::Cli as clap::CommandFactory>::command().get_matches();
    let mut cli = match <cli::Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let defaulted = |id: &str| {
        matches!(
            matches.value_source(id),
            None | Some(clap::parser::ValueSource::DefaultValue)
        )
    };
    cli.defaulted = (defaulted("socket"), defaulted("root"));
    // `berth cluster` takes `--config` on its command line only: `BERTH_CONFIG` names the
    // agent's config file, not an admin credential.
    cli.config_defaulted =
        matches.value_source("config") != Some(clap::parser::ValueSource::CommandLine);
    // The agent's config file may set both (a flag or the environment wins).
    let config = matches!(cli.command, cli::Command::Agent(_))
        .then(|| config::Config::load(&cli.config).ok())
        .flatten()
        .unwrap_or_default();
    let format = cli.log_format.clone().or(config.log_format.clone());
    if let Some(format) = format.filter(|_| std::env::var_os("BERTH_LOG_FORMAT").is_none()) {
        // Before any thread exists: supervisors inherit it.
        std::env::set_var("BERTH_LOG_FORMAT", format);
    }
    let level = cli
        .log_level
        .clone()
        .or_else(|| std::env::var("BERTH_LOG").ok().or(config.log_level.clone()));
    init_tracing(level.as_deref());
    if !matches!(
        cli.command,
        cli::Command::Agent(_) | cli::Command::Master(_)
    ) {
        // A client command whose reader went away (`berth ps | head -1`) ends quietly as
        // other Unix tools do, not with a panic on a broken pipe (Rust ignores SIGPIPE).
        // SAFETY: restores the default disposition before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if matches!(cli.command, cli::Command::Agent(_)) {
        agent::notify::take_socket_from_env();
    }
    if matches!(
        cli.command,
        cli::Command::Agent(_) | cli::Command::Master(_)
    ) {
        // Two malloc arenas instead of eight per core: the daemon's threads (workers and
        // the blocking pool) each kept freed memory in an arena of their own, which made
        // most of an idle agent's RSS (and of a master's with thousands of agents).
        // Set before any thread exists.
        // SAFETY: mallopt only tunes glibc's allocator; no allocation is in flight here
        // on another thread (none has been started).
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
    let default_code: u8 = match cli.command {
        cli::Command::Run(_) | cli::Command::Create(_) | cli::Command::Exec(_) => 125,
        _ => 1,
    };
    // The agent serves many clients on two workers; a CLI command is one client, and a
    // single-threaded runtime starts faster (no worker threads: `berth ps` under load).
    let runtime = if matches!(
        cli.command,
        cli::Command::Agent(_) | cli::Command::Master(_)
    ) {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2).enable_all();
        if matches!(cli.command, cli::Command::Master(_)) {
            // The master's blocking work all takes one lock: a few threads serve it as
            // well as tokio's default of 512, which thousands of heartbeats would spawn.
            builder.max_blocking_threads(4);
        }
        builder.build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // Do not wait for a stdin reader blocked in the blocking pool.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: error: {}", chain(&e));
            let code = e
                .downcast_ref::<client::ApiFailure>()
                .and_then(|f| f.exit_code)
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(default_code);
            ExitCode::from(code)
        }
    }
}

fn init_tracing(level: Option<&str>) {
    let filter = level
        .map(String::from)
        .or_else(|| std::env::var("BERTH_LOG").ok())
        .unwrap_or_else(|| "warn".into());
    // libcgroups warns about every v1 controller the host lacks, on every call.
    let filter = format!("{filter},libcgroups=error");
    // `Targets` (level per target) rather than EnvFilter: no regex engine, which keeps every
    // container's supervisor small.
    let targets: tracing_subscriber::filter::Targets = filter.parse().unwrap_or_else(|_| {
        tracing_subscriber::filter::Targets::new().with_default(tracing::Level::WARN)
    });
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // `BERTH_LOG_FORMAT=json` (or `--log-format json`): one JSON object per line for log
    // collectors; the agent hands the choice to its supervisors through the environment.
    let json = std::env::var("BERTH_LOG_FORMAT").is_ok_and(|f| f == "json");
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(targets);
    let _ = if json {
        registry.with(layer.json().flatten_event(true)).try_init()
    } else {
        registry
            .with(layer.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .try_init()
    };
}

/// The error and its causes joined by ": ", skipping a cause whose text the message
/// already holds (library errors often embed their source's text in their own).
pub fn chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
