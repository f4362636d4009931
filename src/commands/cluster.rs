//! `berth master …` (starts or initialises the master) and `berth cluster …` (the admin's
//! client of the cluster API).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use berth_api::cluster::{
    AdminConfig, ClusterEvent, ClusterNodeView, ClusterStatus, InstanceView, JobRequest, JobView,
};
use berth_cluster::Client;

use crate::cli::Cli;
use crate::cli_cluster::{ClusterArgs, ClusterCommand, EtcdArgs, MasterArgs, MasterCommand};
use crate::format::table;

/// The master's data root: `--root` when given, else `/var/lib/berth-master`.
fn master_root(cli: &Cli) -> PathBuf {
    if cli.defaulted.1 {
        PathBuf::from("/var/lib/berth-master")
    } else {
        cli.root.clone()
    }
}

fn duration(flag: &str, text: &str) -> Result<Duration> {
    berth_api::health::parse_duration(text)
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} {text:?}: not a duration like 500ms, 10s or 2m"))
}

/// `berth master [init]`.
pub async fn master(cli: &Cli, args: &MasterArgs) -> Result<()> {
    let root = master_root(cli);
    match &args.command {
        Some(MasterCommand::Init(init)) => {
            let etcd = etcd_options(&init.etcd)?;
            return crate::master::init(&root, &init.listen, &init.san, etcd.as_ref()).await;
        }
        Some(MasterCommand::Migrate(mig)) => {
            let Some(etcd) = etcd_options(&mig.etcd)? else {
                anyhow::bail!("migrate needs --etcd-endpoints");
            };
            let way = if mig.to == "etcd" {
                crate::master::MigrateDirection::ToEtcd
            } else {
                crate::master::MigrateDirection::FromEtcd
            };
            let n = crate::master::migrate(&root, &etcd, way, &mig.listen).await?;
            println!("copied {n} records to {}", mig.to);
            return Ok(());
        }
        None => {}
    }
    let listen = match &args.listen {
        Some(l) => l.clone(),
        None => {
            let admin = load_admin(&root.join("admin.json"))?;
            let first = admin.master.split(',').next().unwrap_or_default();
            first.trim_start_matches("https://").to_string()
        }
    };
    let timing = crate::master::Timing {
        node_timeout: duration("--node-timeout", &args.node_timeout)?,
        heartbeat_floor: duration("--heartbeat-floor", &args.heartbeat_floor)?,
        heartbeats_per_second: args.heartbeat_rate,
    };
    let o = crate::master::ServeOptions {
        listen,
        timing,
        etcd: etcd_options(&args.etcd)?,
        name: args.name.clone(),
        advertise: args.advertise.clone(),
        lease_ttl: duration("--lease-ttl", &args.lease_ttl)?,
    };
    crate::master::serve(&root, o).await
}

fn etcd_options(a: &EtcdArgs) -> Result<Option<crate::master::EtcdOptions>> {
    if a.etcd_endpoints.is_empty() {
        return Ok(None);
    }
    for e in &a.etcd_endpoints {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            anyhow::bail!("--etcd-endpoints {e:?}: want http://HOST:PORT or https://HOST:PORT");
        }
    }
    let user = match &a.etcd_user {
        Some(u) => {
            let (n, p) = u
                .split_once(':')
                .context("--etcd-user: want NAME:PASSWORD")?;
            Some((n.to_string(), p.to_string()))
        }
        None => None,
    };
    Ok(Some(crate::master::EtcdOptions {
        endpoints: a.etcd_endpoints.clone(),
        prefix: a.etcd_prefix.trim_end_matches('/').to_string(),
        ca: a.etcd_ca.clone(),
        cert: a.etcd_cert.clone(),
        key: a.etcd_key.clone(),
        user,
        max_txn_ops: a.etcd_max_txn_ops.max(1),
    }))
}

fn load_admin(path: &Path) -> Result<AdminConfig> {
    let text = std::fs::read(path).with_context(|| {
        format!(
            "reading the admin credential {} (made by `berth master init`; --config or BERTH_CLUSTER names another)",
            path.display()
        )
    })?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

fn admin_client(cli: &Cli) -> Result<Client> {
    let path = if cli.config_defaulted {
        std::env::var_os("BERTH_CLUSTER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/berth-master/admin.json"))
    } else {
        cli.config.clone()
    };
    let admin = load_admin(&path)?;
    let tls =
        berth_cluster::tls::client_config(&admin.ca_pem, Some((&admin.cert_pem, &admin.key_pem)))?;
    Ok(Client::new(&admin.master, tls, Duration::from_secs(30))?)
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn millis(m: u64) -> String {
    format!("{m}m")
}

/// `berth cluster …`.
pub async fn cluster(cli: &Cli, args: &ClusterArgs) -> Result<()> {
    let client = admin_client(cli)?;
    match &args.command {
        ClusterCommand::Run(a) => {
            let text = if a.file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&a.file)
                    .with_context(|| format!("reading {}", a.file.display()))?
            };
            let (job, qos) = berth_api::cluster::parse_job(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
            let view: JobView = client
                .post("/v1/cluster/jobs", &JobRequest { job, qos })
                .await?;
            if a.json {
                print_json(&view)?;
            } else {
                println!("{}", view.name);
            }
        }
        ClusterCommand::Ls(a) => {
            let jobs: Vec<JobView> = client.get("/v1/cluster/jobs").await?;
            if a.json {
                return print_json(&jobs);
            }
            let mut rows = vec![["JOB", "COUNT", "QOS", "STRATEGY", "STATES", "CREATED"]
                .map(String::from)
                .to_vec()];
            for j in jobs {
                let states: Vec<String> =
                    j.states.iter().map(|(k, v)| format!("{k}={v}")).collect();
                rows.push(vec![
                    j.name,
                    j.count.to_string(),
                    j.qos,
                    format!("{:?}", j.strategy).to_lowercase(),
                    states.join(","),
                    crate::format::age(Some(&j.created)),
                ]);
            }
            print!("{}", table(&rows));
        }
        ClusterCommand::Ps(a) => {
            let path = match &a.job {
                Some(j) => format!("/v1/cluster/instances?job={j}"),
                None => "/v1/cluster/instances".to_string(),
            };
            let list: Vec<InstanceView> = client.get(&path).await?;
            if a.json {
                return print_json(&list);
            }
            let mut rows = vec![["INSTANCE", "NODE", "STATE", "MESSAGE"]
                .map(String::from)
                .to_vec()];
            for i in list {
                rows.push(vec![
                    i.instance,
                    i.node.unwrap_or_else(|| "-".into()),
                    format!("{:?}", i.state).to_lowercase(),
                    i.message.unwrap_or_default(),
                ]);
            }
            print!("{}", table(&rows));
        }
        ClusterCommand::Nodes(a) => {
            let nodes: Vec<ClusterNodeView> = client.get("/v1/cluster/nodes").await?;
            if a.json {
                return print_json(&nodes);
            }
            let mut rows = vec![[
                "NODE",
                "STATE",
                "HEARTBEAT",
                "CPU ALLOC",
                "CPU ASSIGNED",
                "MEM ALLOC",
                "MEM ASSIGNED",
                "REVOCABLE FREE",
                "PODS",
                "LABELS",
            ]
            .map(String::from)
            .to_vec()];
            for n in nodes {
                let r = &n.registration;
                let labels: Vec<String> =
                    r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let free = n
                    .usage
                    .as_ref()
                    .map(|u| u.revocable_free)
                    .unwrap_or_default();
                rows.push(vec![
                    r.node_name.clone(),
                    format!("{:?}", n.state).to_lowercase(),
                    n.last_heartbeat_ms
                        .map(|m| format!("{:.1}s ago", m as f64 / 1000.0))
                        .unwrap_or_else(|| "-".into()),
                    millis(r.allocatable.millicpu),
                    millis(n.assigned.millicpu),
                    crate::format::size(r.allocatable.memory),
                    crate::format::size(n.assigned.memory),
                    format!(
                        "{} {}",
                        millis(free.millicpu),
                        crate::format::size(free.memory)
                    ),
                    n.instances.to_string(),
                    labels.join(","),
                ]);
            }
            print!("{}", table(&rows));
        }
        ClusterCommand::Rm(a) => {
            let v: serde_json::Value = client
                .delete(&format!("/v1/cluster/jobs/{}", a.name))
                .await?;
            if a.json {
                print_json(&v)?;
            } else {
                println!("{}", a.name);
            }
        }
        ClusterCommand::Drain(a) => {
            let v: serde_json::Value = client
                .post(
                    &format!("/v1/cluster/nodes/{}/drain", a.name),
                    &serde_json::json!({}),
                )
                .await?;
            if a.json {
                print_json(&v)?;
            } else {
                println!("{}: {} instances moved", a.name, v["moved"]);
            }
        }
        ClusterCommand::Events(a) => {
            let evs: Vec<ClusterEvent> = client
                .get(&format!("/v1/cluster/events?since={}", a.since))
                .await?;
            if a.json {
                return print_json(&evs);
            }
            for e in evs {
                println!(
                    "{} {} {} {} {}",
                    e.time, e.kind, e.action, e.subject, e.message
                );
            }
        }
        ClusterCommand::Status(a) => {
            let s: ClusterStatus = client.get("/v1/cluster/status").await?;
            if a.json {
                return print_json(&s);
            }
            let mut rows = vec![["MASTER", "URL", "ROLE", "SINCE"]
                .map(String::from)
                .to_vec()];
            for m in &s.masters {
                let (role, since) = if m.leader {
                    ("leader", s.leader_since.clone().unwrap_or_default())
                } else {
                    ("follower", m.since.clone())
                };
                rows.push(vec![m.name.clone(), m.url.clone(), role.into(), since]);
            }
            print!("{}", table(&rows));
            if s.leader.is_none() {
                println!("no master leads now");
            }
            let st = &s.store;
            println!(
                "store: {} {} {}revision {}",
                st.kind,
                st.endpoints.join(","),
                if st.prefix.is_empty() {
                    String::new()
                } else {
                    format!("prefix {} ", st.prefix)
                },
                st.revision.map_or("unknown".to_string(), |r| r.to_string())
            );
            if let Some(e) = &st.error {
                println!("store error: {e}");
            }
        }
        ClusterCommand::Dashboard => {
            let r: serde_json::Value = client
                .post("/v1/cluster/dashboard/session", &serde_json::json!({}))
                .await?;
            println!("{}", r["url"].as_str().unwrap_or_default());
        }
    }
    Ok(())
}
