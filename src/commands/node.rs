//! `berth node`: the node's resource model as a table, or the API's JSON with `--json`.

use anyhow::Result;

use crate::api::node::{NodePressure, NodeView, ResourceView};
use crate::client::Client;
use crate::format;

/// Prints `GET /v1/node`.
pub async fn show(client: &Client, args: &crate::cli_pods::NodeArgs) -> Result<()> {
    let node: NodeView = client.get("/v1/node").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&node)?);
        return Ok(());
    }
    print!("{}", render(&node));
    Ok(())
}

fn cpu(m: f64) -> String {
    format!("{:.0}m", m.max(0.0) + 0.0)
}

fn mem(b: f64) -> String {
    format!("{:.0}Mi", (b.max(0.0) / 1048576.0).round() + 0.0)
}

/// The table `berth node` prints.
pub fn render(n: &NodeView) -> String {
    let mut out = format!(
        "Node {} (kernel {}, cgroup {}, CPUs {}{})\n\n",
        n.hostname,
        n.kernel,
        n.cgroup_version,
        n.cpuset,
        n.reserved_cpus
            .as_deref()
            .map(|r| format!(", reserved {r}"))
            .unwrap_or_default()
    );
    let row = |name: &str, pick: &dyn Fn(&ResourceView) -> f64| {
        vec![name.to_string(), cpu(pick(&n.cpu)), mem(pick(&n.memory))]
    };
    let rows = vec![
        vec!["".into(), "CPU".into(), "MEMORY".into()],
        row("capacity", &|r| r.capacity),
        row("system reserved", &|r| r.system_reserved),
        row("allocatable", &|r| r.allocatable),
        row("allocated guaranteed", &|r| r.allocated.guaranteed),
        row("allocated burstable", &|r| r.allocated.burstable),
        row("allocated besteffort", &|r| r.allocated.besteffort),
        row("allocated revocable", &|r| r.allocated.revocable),
        row("used (smoothed)", &|r| r.used),
        row("used by promised work", &|r| {
            r.used_by_tier.guaranteed + r.used_by_tier.burstable + r.used_by_tier.besteffort
        }),
        row("used by revocable work", &|r| r.used_by_tier.revocable),
        row("system", &|r| r.system),
        row("reserved (estimator)", &|r| r.reserved),
        row("revocable estimate", &|r| r.revocable),
        row("revocable free", &|r| r.revocable_free),
    ];
    out.push_str(&format::table(&rows));
    out.push('\n');
    let psi = |p: &NodePressure| {
        format!(
            "cpu {:.2}/{:.2}  memory {:.2}/{:.2}  io {:.2}/{:.2}",
            p.cpu.some_avg10,
            p.cpu.full_avg10,
            p.memory.some_avg10,
            p.memory.full_avg10,
            p.io.some_avg10,
            p.io.full_avg10
        )
    };
    match &n.pressure {
        Some(p) => out.push_str(&format!("Pressure (avg10 some/full %): {}\n", psi(p))),
        None => out.push_str("Pressure: the kernel has no PSI\n"),
    }
    for (tier, p) in &n.pressure_by_tier {
        out.push_str(&format!("  {tier}: {}\n", psi(p)));
    }
    let warm = if n.warmed_up {
        "warmed up".to_string()
    } else {
        format!("warming up, {:.0}s left", n.warmup_left_secs)
    };
    out.push_str(&format!("Estimator: {warm}, {} samples\n", n.samples));
    if let Some(c) = &n.cluster {
        out.push_str(&format!(
            "Cluster: node {} follows {} ({}; masters {})\n",
            c.node_name,
            c.master,
            if c.connected {
                "connected"
            } else {
                "not answering"
            },
            c.masters.join(",")
        ));
    }
    out.push_str(&format!(
        "User namespaces: {} of {} ranges held (pool from uid {}; default --userns {})\n",
        n.userns.held, n.userns.ranges, n.userns.first_uid, n.userns.default
    ));
    let d = &n.disk;
    out.push_str(&format!(
        "Disk per task: {} every {}s{}\n",
        d.enforcement,
        d.interval_secs,
        d.quota_unavailable
            .as_ref()
            .map(|why| format!(" (no project quotas: {why})"))
            .unwrap_or_default()
    ));
    for t in &d.tasks {
        let limit = t
            .limit
            .map(|l| format!(" / {}", crate::format::size(l)))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {} {} {}: {}{limit}\n",
            t.kind,
            t.name,
            &t.id[..12.min(t.id.len())],
            crate::format::size(t.used)
        ));
    }
    let r = &n.reclaim;
    let mut knobs = Vec::new();
    if let Some(c) = r.cpu_cap {
        knobs.push(format!("cpu cap {}", cpu(c)));
    }
    if let Some(m) = r.memory_high {
        knobs.push(format!("memory high {}", mem(m)));
    }
    if r.frozen {
        knobs.push("frozen".into());
    }
    let steps: Vec<String> = r.steps.iter().map(|(k, v)| format!("{k} {v}")).collect();
    out.push_str(&format!(
        "Reclaim: {}{}; steps taken: {}; revoked: {}\n",
        r.state,
        if knobs.is_empty() {
            String::new()
        } else {
            format!(" ({})", knobs.join(", "))
        },
        if steps.is_empty() {
            "none".into()
        } else {
            steps.join(", ")
        },
        r.revoked
    ));
    let t = &n.tasks;
    out.push_str(&format!(
        "Tasks running: guaranteed {}, burstable {}, besteffort {}, revocable {}\n",
        t.guaranteed, t.burstable, t.besteffort, t.revocable
    ));
    out
}
