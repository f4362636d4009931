//! `berth run` and `berth create`: options → task spec → create (pulling a missing image)
//! → attach and start (foreground) or start (detached).

use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use berth_api::task::{self, NetworkMode, Resources, TaskSpec, Tmpfs, Volume};

use crate::api::Created;
use crate::cli_containers::RunArgs;
use crate::client::{ApiFailure, Client};

fn env_entry(kv: &str) -> Option<String> {
    if kv.contains('=') {
        Some(kv.to_string())
    } else {
        // `-e KEY`: the value of this shell, or nothing (as Docker).
        std::env::var(kv).ok().map(|v| format!("{kv}={v}"))
    }
}

/// The task spec for the options (parse errors name the option).
pub fn task_spec(args: &RunArgs) -> Result<TaskSpec> {
    let mut env = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--env-file {}", file.display()))?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            env.extend(env_entry(line));
        }
    }
    env.extend(args.env.iter().filter_map(|e| env_entry(e)));
    let mut no_new_privileges = false;
    let mut seccomp_unconfined = false;
    for opt in &args.security_opt {
        match opt.as_str() {
            "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true" => {
                no_new_privileges = true
            }
            "seccomp=unconfined" | "seccomp:unconfined" => seccomp_unconfined = true,
            other => bail!("invalid --security-opt {other:?}: expected no-new-privileges or seccomp=unconfined"),
        }
    }
    let resources = Resources {
        cpus: args.cpus.as_deref().map(task::parse_cpus).transpose()?,
        cpu_shares: args.cpu_shares,
        memory: args
            .memory
            .as_deref()
            .map(|m| task::parse_bytes("--memory", m))
            .transpose()?,
        memory_reservation: args
            .memory_reservation
            .as_deref()
            .map(|m| task::parse_bytes("--memory-reservation", m))
            .transpose()?,
        memory_high: None,
        pids_limit: args.pids_limit,
        cpuset_cpus: args.cpuset_cpus.clone(),
    };
    let spec = TaskSpec {
        image: args.image.clone(),
        name: args.name.clone(),
        command: args.command.clone(),
        entrypoint: args.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        }),
        env,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        hostname: args.hostname.clone(),
        volumes: args
            .volumes
            .iter()
            .map(|v| Volume::from_str(v))
            .collect::<Result<_, _>>()?,
        tmpfs: args
            .tmpfs
            .iter()
            .map(|t| Tmpfs::from_str(t))
            .collect::<Result<_, _>>()?,
        read_only: args.read_only,
        resources,
        cap_add: args
            .cap_add
            .iter()
            .map(|c| task::parse_capability("--cap-add", c))
            .collect::<Result<_, _>>()?,
        cap_drop: args
            .cap_drop
            .iter()
            .map(|c| task::parse_capability("--cap-drop", c))
            .collect::<Result<_, _>>()?,
        no_new_privileges,
        seccomp_unconfined,
        network: NetworkMode::from_str(&args.network)?,
        publish: args
            .publish
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, _>>()?,
        tty: args.tty,
        stdin: args.interactive,
        auto_remove: args.rm,
        annotations: Default::default(),
        health: health_check(args)?,
        no_healthcheck: args.no_healthcheck,
        restart: task::RestartPolicy::from_str(&args.restart)?,
        pod: None,
        revocable: args.revocable,
        userns: args
            .userns
            .as_deref()
            .map(berth_api::userns::UsernsMode::parse)
            .transpose()?,
        storage_size: storage_size(&args.storage_opt)?,
    };
    spec.validate()?;
    Ok(spec)
}

/// Creates the container, pulling its image as `--pull` says (by default when the agent
/// answers that it does not have it; the agent makes concurrent pulls of one image one).
pub async fn create(client: &Client, args: &RunArgs) -> Result<Created> {
    use crate::cli::PullPolicy;
    let spec = task_spec(args)?;
    let pull = || async {
        let req = super::pull::request(&args.image, &args.registry, None)?;
        super::pull::pull(client, &req, false).await
    };
    if args.pull == PullPolicy::Always {
        pull().await?;
    }
    match client.post::<_, Created>("/v1/containers", &spec).await {
        Ok(c) => Ok(c),
        Err(e) => {
            let missing = e
                .downcast_ref::<ApiFailure>()
                .is_some_and(|f| f.code == crate::api::ErrorCode::NoSuchImage);
            if !missing || args.pull != PullPolicy::Missing {
                return Err(e);
            }
            eprintln!("Unable to find image '{}' locally", args.image);
            pull().await?;
            client.post("/v1/containers", &spec).await
        }
    }
}

/// Forwards SIGINT/SIGTERM/SIGHUP to the container, as `docker run` does.
fn proxy_signals(client: Client, id: String) {
    use tokio::signal::unix::{signal, SignalKind};
    for (kind, name) in [
        (SignalKind::interrupt(), "INT"),
        (SignalKind::terminate(), "TERM"),
        (SignalKind::hangup(), "HUP"),
    ] {
        let (client, id) = (client.clone(), id.clone());
        tokio::spawn(async move {
            let Ok(mut s) = signal(kind) else {
                return;
            };
            while s.recv().await.is_some() {
                let _ = client
                    .post_empty(&format!("/v1/containers/{id}/kill?signal={name}"))
                    .await;
            }
        });
    }
}

pub async fn run(client: &Client, args: RunArgs, start: bool) -> Result<ExitCode> {
    let created = create(client, &args).await?;
    let id = created.id.clone();
    if !start {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    if args.detach {
        client
            .post_empty(&format!("/v1/containers/{id}/start"))
            .await?;
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let conn = client
        .upgrade(&format!("/v1/containers/{id}/attach?start=true"))
        .await?;
    // With a local terminal in raw mode, ^C is a byte for the container; otherwise signals
    // to this process are forwarded to it, as `docker run` does.
    let raw = args.tty && args.interactive;
    if !raw {
        proxy_signals(client.clone(), id.clone());
    }
    let exit = super::attach::relay(conn, args.interactive, args.tty).await?;
    let exit = match exit {
        Some(e) => e,
        None => {
            client
                .post(&format!("/v1/containers/{id}/wait"), &())
                .await?
        }
    };
    if let Some(error) = &exit.error {
        eprintln!("berth: error: {error}");
    }
    if args.rm {
        // The agent removes it too; this makes removal done by the time we return.
        let _ = client
            .delete(&format!("/v1/containers/{id}?force=true"))
            .await;
    }
    Ok(exit_code(exit.exit_code))
}

/// A process exit code as this process's own.
pub fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}

/// `--health-*`: Docker's command check, plus Berth's HTTP and TCP checks.
fn health_check(args: &RunArgs) -> Result<Option<berth_api::health::HealthCheck>> {
    use berth_api::health::{parse_duration, HealthCheck, Probe};
    let probe = if let Some(cmd) = &args.health_cmd {
        Probe::Exec {
            command: vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
        }
    } else if let Some(http) = &args.health_http {
        let (port, path) = match http.split_once('/') {
            Some((p, rest)) => (p, format!("/{rest}")),
            None => (http.as_str(), "/".to_string()),
        };
        Probe::Http {
            port: port
                .parse()
                .map_err(|_| anyhow::anyhow!("invalid --health-http {http:?}: want PORT[/path]"))?,
            path,
        }
    } else if let Some(port) = args.health_tcp {
        Probe::Tcp { port }
    } else {
        return Ok(None);
    };
    let ms = |flag: &str, text: &str| -> Result<u64> {
        parse_duration(text)
            .map(|d| d.as_millis() as u64)
            .ok_or_else(|| anyhow::anyhow!("invalid {flag} {text:?}: want a duration like 5s"))
    };
    let interval_ms = ms("--health-interval", &args.health_interval)?;
    let timeout_ms = ms("--health-timeout", &args.health_timeout)?;
    if interval_ms == 0 || timeout_ms == 0 {
        anyhow::bail!("--health-interval and --health-timeout must be positive");
    }
    Ok(Some(HealthCheck {
        probe,
        interval_ms,
        timeout_ms,
        retries: args.health_retries.max(1),
        start_period_ms: ms("--health-start-period", &args.health_start_period)?,
    }))
}

/// `--storage-opt size=1G` (Docker's syntax; `size` is the one option).
fn storage_size(opts: &[String]) -> Result<Option<i64>> {
    let mut size = None;
    for opt in opts {
        match opt.split_once('=') {
            Some(("size", v)) => size = Some(task::parse_bytes("--storage-opt size", v)?),
            _ => bail!("invalid --storage-opt {opt:?}: expected size=SIZE (e.g. size=1G)"),
        }
    }
    Ok(size)
}
