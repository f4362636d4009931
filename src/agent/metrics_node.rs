//! The node's resource model as Prometheus gauges: the figures of `GET /v1/node` (CPU in
//! cores, memory in bytes), PSI, and the reclaim controller's state and steps.

use std::fmt::Write;

use crate::api::node::{NodeView, ResourceView, TierFigures};

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Appends the node's families to a scrape.
pub fn render(out: &mut String, n: &NodeView) {
    // CPU figures are millicores in the API: cores here, as Prometheus' base unit.
    let resources: [(&str, &ResourceView, f64); 2] =
        [("cpu", &n.cpu, 1000.0), ("memory", &n.memory, 1.0)];
    type Pick = fn(&ResourceView) -> f64;
    let plain: [(&str, &str, Pick); 7] = [
        ("capacity", "What the node offers.", |r| r.capacity),
        ("system_reserved", "Kept for the system.", |r| {
            r.system_reserved
        }),
        ("allocatable", "Capacity minus the system reserve.", |r| {
            r.allocatable
        }),
        ("used", "Measured use of the node, smoothed.", |r| r.used),
        (
            "system_used",
            "Use outside every task, at least the reserve.",
            |r| r.system,
        ),
        (
            "revocable",
            "The revocable estimate: capacity × threshold − reservations − system.",
            |r| r.revocable,
        ),
        (
            "revocable_free",
            "The revocable estimate minus what revocable work was admitted with.",
            |r| r.revocable_free,
        ),
    ];
    // A node gauge family's header; its name.
    let node_family = |out: &mut String, suffix: &str, help: &str| {
        let name = format!("berth_node_{suffix}");
        family(
            out,
            &name,
            "gauge",
            &format!("{help} CPU in cores, memory in bytes."),
        );
        name
    };
    for (suffix, help, pick) in plain {
        let name = node_family(out, suffix, help);
        for (res, r, scale) in &resources {
            let _ = writeln!(out, "{name}{{resource=\"{res}\"}} {}", pick(r) / scale);
        }
    }
    type Tiers = fn(&ResourceView) -> TierFigures;
    let tiered: [(&str, &str, Tiers); 2] = [
        (
            "allocated",
            "Requests of admitted work per QoS tier.",
            |r| r.allocated,
        ),
        (
            "used_by_tier",
            "Measured use per QoS tier, last sample.",
            |r| r.used_by_tier,
        ),
    ];
    for (suffix, help, pick) in tiered {
        let name = node_family(out, suffix, help);
        for (res, r, scale) in &resources {
            let t = pick(r);
            for (tier, v) in [
                ("guaranteed", t.guaranteed),
                ("burstable", t.burstable),
                ("besteffort", t.besteffort),
                ("revocable", t.revocable),
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{resource=\"{res}\",tier=\"{tier}\"}} {}",
                    v / scale
                );
            }
        }
    }
    if let Some(p) = &n.pressure {
        family(
            out,
            "berth_node_pressure_avg10_percent",
            "gauge",
            "PSI: share of the last 10 s some or all tasks stalled on the resource.",
        );
        for (res, v) in [("cpu", p.cpu), ("memory", p.memory), ("io", p.io)] {
            for (kind, x) in [("some", v.some_avg10), ("full", v.full_avg10)] {
                let _ = writeln!(
                    out,
                    "berth_node_pressure_avg10_percent{{resource=\"{res}\",kind=\"{kind}\"}} {x}"
                );
            }
        }
    }
    if !n.pressure_by_tier.is_empty() {
        family(
            out,
            "berth_tier_pressure_avg10_percent",
            "gauge",
            "cgroup v2 PSI of each QoS tier: share of the last 10 s its tasks stalled.",
        );
        for (tier, p) in &n.pressure_by_tier {
            for (res, v) in [("cpu", p.cpu), ("memory", p.memory), ("io", p.io)] {
                for (kind, x) in [("some", v.some_avg10), ("full", v.full_avg10)] {
                    let _ = writeln!(
                        out,
                        "berth_tier_pressure_avg10_percent{{tier=\"{tier}\",resource=\"{res}\",kind=\"{kind}\"}} {x}"
                    );
                }
            }
        }
    }
    family(
        out,
        "berth_node_estimator_warmed_up",
        "gauge",
        "1 once the usage estimator has run for its warm-up.",
    );
    let _ = writeln!(
        out,
        "berth_node_estimator_warmed_up {}",
        u8::from(n.warmed_up)
    );
    let r = &n.reclaim;
    family(
        out,
        "berth_reclaim_state",
        "gauge",
        "1 for the reclaim step in force on the revocable tier.",
    );
    for state in ["none", "throttle", "memory-high", "freeze"] {
        let _ = writeln!(
            out,
            "berth_reclaim_state{{state=\"{state}\"}} {}",
            u8::from(r.state == state)
        );
    }
    family(
        out,
        "berth_reclaim_cpu_cap_cores",
        "gauge",
        "The revocable tier's CPU cap while throttled (0 when not).",
    );
    let _ = writeln!(
        out,
        "berth_reclaim_cpu_cap_cores {}",
        r.cpu_cap.unwrap_or(0.0) / 1000.0
    );
    family(
        out,
        "berth_reclaim_memory_high_bytes",
        "gauge",
        "The revocable tier's memory push-back at memory-high and above (0 when not).",
    );
    let _ = writeln!(
        out,
        "berth_reclaim_memory_high_bytes {}",
        r.memory_high.unwrap_or(0.0)
    );
    family(
        out,
        "berth_reclaim_steps_total",
        "counter",
        "Reclaim steps taken since the agent started.",
    );
    for step in ["throttle", "memory-high", "freeze", "revoke"] {
        let n = r.steps.get(step).copied().unwrap_or(0);
        let _ = writeln!(out, "berth_reclaim_steps_total{{step=\"{step}\"}} {n}");
    }
    family(
        out,
        "berth_revoked_total",
        "counter",
        "Revocable tasks revoked since the agent started.",
    );
    let _ = writeln!(out, "berth_revoked_total {}", r.revoked);
}
