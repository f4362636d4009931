//! The runc-style debugging verbs: ps/list, state, inspect, logs, kill, stop, rm, exec, top,
//! stats, wait, start.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use berth_api::stats::Usage;
use berth_api::{ExitView, Status};
use hyper::Method;

use super::query;
use crate::api::{ContainerView, ExecCreated, ExecRequest, Top};
use crate::cli_containers::{ExecArgs, KillArgs, LogsArgs, PsArgs, RmArgs, StatsArgs, StopArgs};
use crate::client::Client;
use crate::format;

fn status_text(s: Status) -> &'static str {
    match s {
        Status::Created => "created",
        Status::Running => "running",
        Status::Stopped => "stopped",
    }
}

pub async fn ps(client: &Client, args: PsArgs) -> Result<()> {
    let all: Vec<ContainerView> = client.get("/v1/containers").await?;
    if args.format == "json" {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let short = |id: &str| {
        if args.no_trunc {
            id.to_string()
        } else {
            id[..12.min(id.len())].to_string()
        }
    };
    if args.quiet {
        for c in &all {
            println!("{}", short(&c.id));
        }
        return Ok(());
    }
    let mut rows = vec![[
        "ID", "NAME", "POD", "PID", "STATUS", "IP", "PORTS", "IMAGE", "CREATED",
    ]
    .map(String::from)
    .to_vec()];
    for c in &all {
        let mut status = match (&c.exit, c.status) {
            (Some(e), Status::Stopped) if c.restarting => format!("restarting ({})", e.exit_code),
            (Some(e), Status::Stopped) => format!("stopped ({})", e.exit_code),
            (_, s) => status_text(s).to_string(),
        };
        if let (Some(h), Status::Running) = (&c.health, c.status) {
            status = format!("{status} ({})", h.status);
        }
        if c.spec.revocable {
            status = match c.reclaim.as_deref() {
                Some("frozen") => "frozen (revocable)".to_string(),
                Some(step) => format!("{status} (revocable, {step})"),
                None => format!("{status} (revocable)"),
            };
        }
        rows.push(vec![
            short(&c.id),
            c.name.clone(),
            c.spec
                .pod
                .as_ref()
                .map_or("-".into(), |m| m.pod_name.clone()),
            c.pid.map_or("0".into(), |p| p.to_string()),
            status,
            super::pods::ip_of(c.network.as_ref()),
            super::pods::ports_of(c.network.as_ref()),
            c.image.clone(),
            format::age(Some(&c.created)),
        ]);
    }
    print!("{}", format::table(&rows));
    Ok(())
}

async fn info(client: &Client, id: &str) -> Result<ContainerView> {
    client.get(&format!("/v1/containers/{id}")).await
}

/// `runc state` JSON, plus the exit when stopped.
pub async fn state(client: &Client, id: &str) -> Result<()> {
    let c = info(client, id).await?;
    let mut annotations = c.spec.annotations.clone();
    annotations.insert("org.opencontainers.image.ref.name".into(), c.image.clone());
    let mut out = serde_json::json!({
        "ociVersion": "1.0.2",
        "id": c.id,
        "name": c.name,
        // A frozen revocable task reads `frozen` (runc says `paused` for its own freeze).
        "status": if c.reclaim.as_deref() == Some("frozen") { "frozen" } else { status_text(c.status) },
        "pid": c.pid.unwrap_or(0),
        "bundle": c.bundle,
        "rootfs": format!("{}/rootfs", c.bundle),
        "created": c.created,
        "annotations": annotations,
    });
    if let Some(q) = c.qos {
        out["qos"] = q.to_string().into();
    }
    if c.spec.revocable {
        out["revocable"] = true.into();
        out["reclaim"] = c.reclaim.clone().unwrap_or_else(|| "none".into()).into();
    }
    if let Some(e) = &c.exit {
        out["exitCode"] = e.exit_code.into();
        out["reason"] = e.reason.clone().into();
        out["OOMKilled"] = e.oom_killed.into();
        out["finished"] = e.finished.clone().into();
        if let Some(sig) = e.signal {
            out["signal"] = sig.into();
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub async fn inspect(client: &Client, id: &str) -> Result<()> {
    let c = info(client, id).await?;
    let mut v = serde_json::to_value(&c)?;
    v["OOMKilled"] = c.exit.as_ref().is_some_and(|e| e.oom_killed).into();
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

pub async fn logs(client: &Client, args: LogsArgs) -> Result<()> {
    let mut q = Vec::new();
    if args.follow {
        q.push(("follow", "true".to_string()));
    }
    if let Some(t) = args.tail {
        q.push(("tail", t.to_string()));
    }
    let mut lines = client
        .stream(
            Method::GET,
            &format!("/v1/containers/{}/logs?{}", args.id, query(&q)),
            None,
        )
        .await?;
    while let Some(line) = lines.line().await? {
        let Some(rec) = berth_api::logs::parse_record(&line) else {
            continue;
        };
        let mut text = Vec::new();
        if args.timestamps {
            text.extend_from_slice(rec.time.as_bytes());
            text.push(b' ');
        }
        text.extend_from_slice(&rec.content);
        if !rec.partial {
            text.push(b'\n');
        }
        match rec.stream {
            berth_api::logs::Stream::Stdout => {
                let mut o = std::io::stdout().lock();
                o.write_all(&text)?;
                o.flush()?;
            }
            berth_api::logs::Stream::Stderr => std::io::stderr().lock().write_all(&text)?,
        }
    }
    Ok(())
}

pub async fn kill(client: &Client, args: KillArgs) -> Result<()> {
    client
        .post_empty(&format!(
            "/v1/containers/{}/kill?{}",
            args.id,
            query(&[("signal", args.signal)])
        ))
        .await
}

pub async fn stop(client: &Client, args: StopArgs) -> Result<()> {
    for id in &args.ids {
        client
            .post_empty(&format!("/v1/containers/{id}/stop?timeout={}", args.time))
            .await?;
        println!("{id}");
    }
    Ok(())
}

pub async fn rm(client: &Client, args: RmArgs) -> Result<()> {
    for id in &args.ids {
        client
            .delete(&format!("/v1/containers/{id}?force={}", args.force))
            .await?;
        println!("{id}");
    }
    Ok(())
}

pub async fn exec(client: &Client, args: ExecArgs) -> Result<ExitCode> {
    let req = ExecRequest {
        command: args.command.clone(),
        env: args.env.clone(),
        tty: args.tty,
        stdin: args.interactive,
        user: args.user.clone(),
        workdir: args.workdir.clone(),
    };
    let created: ExecCreated = client
        .post(&format!("/v1/containers/{}/exec", args.id), &req)
        .await?;
    let conn = client
        .upgrade(&format!(
            "/v1/containers/{}/exec/{}/attach",
            args.id, created.exec_id
        ))
        .await?;
    let exit = super::attach::relay(conn, args.interactive, args.tty).await?;
    match exit {
        Some(e) => {
            if let Some(error) = &e.error {
                eprintln!("berth: error: {error}");
            }
            Ok(super::run::exit_code(e.exit_code))
        }
        None => anyhow::bail!("the exec supervisor went away without an exit status"),
    }
}

pub async fn top(client: &Client, id: &str) -> Result<()> {
    let top: Top = client.get(&format!("/v1/containers/{id}/top")).await?;
    let mut rows = vec![top.titles];
    rows.extend(top.processes);
    print!("{}", format::table(&rows));
    Ok(())
}

fn print_usage(u: &Usage, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(u)?);
        return Ok(());
    }
    let limit = if u.memory_limit >= (1u64 << 62) {
        "unlimited".to_string()
    } else {
        format::size(u.memory_limit)
    };
    let rows = vec![
        [
            "CPU TIME",
            "THROTTLED",
            "MEM USAGE / LIMIT",
            "CACHE",
            "PIDS",
            "OOM KILLS",
        ]
        .map(String::from)
        .to_vec(),
        vec![
            format!("{:.3}s", u.cpu_usage_ns as f64 / 1e9),
            format!(
                "{}/{} periods, {:.3}s",
                u.cpu_throttled_periods,
                u.cpu_periods,
                u.cpu_throttled_ns as f64 / 1e9
            ),
            format!("{} / {limit}", format::size(u.memory_usage)),
            format::size(u.memory_cache),
            if u.pids_limit > 0 {
                format!("{} / {}", u.pids_current, u.pids_limit)
            } else {
                u.pids_current.to_string()
            },
            u.oom_kills.to_string(),
        ],
    ];
    print!("{}", format::table(&rows));
    if let Some(d) = &u.disk {
        let limit = d
            .limit
            .map(|l| format!(" / {}", format::size(l)))
            .unwrap_or_default();
        println!("DISK {}{limit} ({})", format::size(d.used), d.enforcement);
    }
    Ok(())
}

pub async fn stats(client: &Client, args: StatsArgs) -> Result<()> {
    loop {
        let u: Usage = client
            .get(&format!("/v1/containers/{}/stats", args.id))
            .await?;
        print_usage(&u, args.json)?;
        match args.interval {
            Some(s) => tokio::time::sleep(std::time::Duration::from_secs(s.max(1))).await,
            None => return Ok(()),
        }
    }
}

pub async fn wait(client: &Client, id: &str) -> Result<ExitCode> {
    let exit: ExitView = client
        .post(&format!("/v1/containers/{id}/wait"), &())
        .await?;
    println!("{}", exit.exit_code);
    Ok(ExitCode::SUCCESS)
}

pub async fn start(client: &Client, id: &str) -> Result<()> {
    client
        .post_empty(&format!("/v1/containers/{id}/start"))
        .await?;
    println!("{id}");
    Ok(())
}
