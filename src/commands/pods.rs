//! `berth pod run|ls|inspect|stop|rm` and `berth events`.

use anyhow::{Context, Result};
use berth_api::stats::Usage;

use super::query;
use crate::api::PodView;
use crate::cli_pods::{EventsArgs, PodCommand};
use crate::client::Client;
use crate::format;

pub async fn pod(client: &Client, cmd: PodCommand) -> Result<()> {
    match cmd {
        PodCommand::Run(a) => {
            let text = if a.spec.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the spec from stdin")?
            } else {
                std::fs::read_to_string(&a.spec)
                    .with_context(|| format!("reading {}", a.spec.display()))?
            };
            let spec = berth_api::pod::parse(&text)?;
            let info = run_pod(client, &spec, a.pull).await?;
            println!("{}", info.id);
        }
        PodCommand::Ls(a) => {
            let pods: Vec<PodView> = client.get("/v1/pods").await?;
            if a.format == "json" {
                println!("{}", serde_json::to_string_pretty(&pods)?);
            } else if a.quiet {
                for p in &pods {
                    println!("{}", &p.id[..12]);
                }
            } else {
                print!("{}", format::table(&pod_rows(&pods)));
            }
        }
        PodCommand::Inspect(a) => {
            let info: PodView = client.get(&format!("/v1/pods/{}", a.pod)).await?;
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        PodCommand::Stop(a) => {
            for p in &a.pods {
                client
                    .post_empty(&format!("/v1/pods/{p}/stop?timeout={}", a.time))
                    .await?;
                println!("{p}");
            }
        }
        PodCommand::Rm(a) => {
            for p in &a.pods {
                client
                    .delete(&format!("/v1/pods/{p}?force={}", a.force))
                    .await?;
                println!("{p}");
            }
        }
    }
    Ok(())
}

/// Pulls the images the agent does not have, as `berth run` does.
/// Creates the pod, pulling its images as `pull` says: with `missing`, each image the
/// agent names as missing is pulled and the pod asked for again.
async fn run_pod(
    client: &Client,
    spec: &berth_api::pod::PodSpec,
    pull: crate::cli::PullPolicy,
) -> Result<PodView> {
    use crate::cli::PullPolicy;
    let images: std::collections::BTreeSet<&str> = spec
        .init_containers
        .iter()
        .chain(&spec.containers)
        .map(|c| c.image.as_str())
        .collect();
    let fetch = |image: String| async move {
        let req = super::pull::request(&image, &crate::cli::RegistryArgs::none(), None)?;
        super::pull::pull(client, &req, false).await
    };
    if pull == PullPolicy::Always {
        for image in &images {
            fetch(image.to_string()).await?;
        }
    }
    let mut pulled = std::collections::BTreeSet::new();
    loop {
        let err = match client.post::<_, PodView>("/v1/pods", spec).await {
            Ok(info) => return Ok(info),
            Err(e) => e,
        };
        let missing = err
            .downcast_ref::<crate::client::ApiFailure>()
            .filter(|f| f.code == crate::api::ErrorCode::NoSuchImage)
            .and_then(|f| f.about.clone())
            .filter(|image| images.contains(image.as_str()) && !pulled.contains(image));
        match missing {
            Some(image) if pull == PullPolicy::Missing => {
                eprintln!("Unable to find image '{image}' locally");
                fetch(image.clone()).await?;
                pulled.insert(image);
            }
            _ => return Err(err),
        }
    }
}

/// `berth network ls|check`.
pub async fn network(client: &Client, cmd: crate::cli_pods::NetworkCommand) -> Result<()> {
    use berth_api::network::NetworkView as NetworkInfo;
    match cmd {
        crate::cli_pods::NetworkCommand::Ls(a) => {
            let list: Vec<NetworkInfo> = client.get("/v1/networks").await?;
            if a.format == "json" {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            let mut rows = vec![["NAME", "VERSION", "PLUGINS", "FILE"]
                .map(String::from)
                .to_vec()];
            for n in list.iter().filter(|n| !a.quiet || n.error.is_none()) {
                if a.quiet {
                    println!("{}", n.name);
                    continue;
                }
                let name = match (&n.error, n.default) {
                    (Some(_), _) => "(unreadable)".to_string(),
                    (None, true) => format!("{} (default)", n.name),
                    (None, false) => n.name.clone(),
                };
                rows.push(vec![
                    name,
                    n.cni_version.clone(),
                    n.error.clone().unwrap_or_else(|| n.plugins.join(",")),
                    n.file.display().to_string(),
                ]);
            }
            if !a.quiet {
                print!("{}", format::table(&rows));
            }
        }
        crate::cli_pods::NetworkCommand::Check(a) => {
            let checked: Vec<String> = client
                .post(&format!("/v1/networks/check/{}", a.pod), &())
                .await?;
            println!("{}: ok ({})", a.pod, checked.join(", "));
        }
    }
    Ok(())
}

/// The first IP of a network status, or `-`.
pub fn ip_of(n: Option<&berth_api::network::AttachmentView>) -> String {
    n.and_then(|n| n.ips.first().cloned())
        .unwrap_or_else(|| "-".into())
}

/// Published ports as Docker lists them, or `-`.
pub fn ports_of(n: Option<&berth_api::network::AttachmentView>) -> String {
    let ports: Vec<String> = n
        .map(|n| n.ports.iter().map(|p| p.to_string()).collect())
        .unwrap_or_default();
    if ports.is_empty() {
        "-".into()
    } else {
        ports.join(",")
    }
}

fn pod_rows(pods: &[PodView]) -> Vec<Vec<String>> {
    let mut rows = vec![[
        "POD ID", "NAME", "STATUS", "QOS", "READY", "RESTARTS", "IP", "PORTS", "CREATED",
    ]
    .map(String::from)
    .to_vec()];
    for p in pods {
        let apps: Vec<_> = p.members.values().filter(|s| !s.init).collect();
        let running = p
            .containers
            .iter()
            .filter(|c| {
                c.status == berth_api::Status::Running
                    && c.spec.pod.as_ref().is_some_and(|m| !m.init)
            })
            .count();
        let restarts: u32 = p.members.values().map(|s| s.restart_count).sum();
        rows.push(vec![
            p.id[..12].to_string(),
            p.name.clone(),
            p.phase.to_string(),
            // A revocable pod's reclaim state while a step is in force.
            match p.containers.iter().find_map(|c| c.reclaim.as_deref()) {
                Some(step) => format!("{} ({step})", p.qos),
                None => p.qos.to_string(),
            },
            format!("{running}/{}", apps.len()),
            restarts.to_string(),
            ip_of(p.network.as_ref()),
            ports_of(p.network.as_ref()),
            format::age(Some(&p.created)),
        ]);
    }
    rows
}

/// A time argument: RFC 3339, Unix seconds, or a duration ago.
fn time_arg(flag: &str, text: &str) -> Result<String> {
    if chrono::DateTime::parse_from_rfc3339(text).is_ok() {
        return Ok(text.to_string());
    }
    if let Ok(secs) = text.parse::<i64>() {
        let t = chrono::DateTime::from_timestamp(secs, 0)
            .with_context(|| format!("{flag} {text:?} is out of range"))?;
        return Ok(t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    }
    let ago = berth_api::health::parse_duration(text).with_context(|| {
        format!(
            "invalid {flag} {text:?}: want an RFC 3339 time, Unix seconds or a duration like 10m"
        )
    })?;
    let t = chrono::Utc::now() - chrono::Duration::from_std(ago)?;
    Ok(t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
}

pub async fn events(client: &Client, a: EventsArgs) -> Result<()> {
    if a.stats {
        let id = a.id.as_deref().context("--stats needs a container id")?;
        loop {
            let u: Usage = client.get(&format!("/v1/containers/{id}/stats")).await?;
            let line = serde_json::json!({"type": "stats", "id": id, "data": u});
            println!("{line}");
            tokio::time::sleep(std::time::Duration::from_secs(a.interval.max(1))).await;
        }
    }
    let mut filters = a.filters.clone();
    if let Some(id) = &a.id {
        filters.push(format!("container={id}"));
    }
    let mut q = vec![("filters", filters.join(","))];
    if let Some(s) = &a.since {
        q.push(("since", time_arg("--since", s)?));
    }
    match &a.until {
        Some(u) => q.push(("until", time_arg("--until", u)?)),
        None => q.push(("follow", "true".into())),
    }
    let mut lines = client
        .stream(
            hyper::Method::GET,
            &format!("/v1/events?{}", query(&q)),
            None,
        )
        .await?;
    while let Some(line) = lines.line().await? {
        if a.json {
            println!("{}", String::from_utf8_lossy(&line).trim_end());
            continue;
        }
        let e: berth_api::Event = serde_json::from_slice(&line)?;
        let attrs: Vec<String> = std::iter::once(format!("name={}", e.name))
            .chain(e.attributes.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        println!(
            "{} {} {} {} ({})",
            e.time,
            e.kind,
            e.action,
            &e.id[..12.min(e.id.len())],
            attrs.join(", ")
        );
    }
    Ok(())
}
