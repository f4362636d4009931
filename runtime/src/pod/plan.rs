//! The checks of a pod spec, each error naming its field, and the plan they produce:
//! tasks with Docker-level options, the QoS class, summed requests and pod-wide limits.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{
    bad, parse_cpu, parse_memory, PodContainer, PodSpec, PodSpecError, ProbeSpec, QosClass,
    Quantity, ResourceRequirements,
};
use crate::health::{HealthCheck, Probe};
use crate::task::{NetworkMode, PublishedPort, Resources, TaskSpec, Volume};

/// The checked spec turned into tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct PodPlan {
    /// QoS class.
    pub qos: QosClass,
    /// Init containers, in order (names, tasks without pod membership yet).
    pub init: Vec<(String, TaskSpec)>,
    /// App containers.
    pub containers: Vec<(String, TaskSpec)>,
    /// Summed requests: millicpus and bytes.
    pub requests: (u64, u64),
    /// Pod-wide limits when every app container has one: CPUs and bytes.
    pub limits: (Option<f64>, Option<i64>),
    /// The pod's network (`bridge`/`default`: the agent's default network).
    pub network: NetworkMode,
    /// Host ports to publish (from the containers' `hostPort`s).
    pub ports: Vec<PublishedPort>,
    /// The budget of its `emptyDir` volumes when every app container has an
    /// `ephemeral-storage` limit: their sum (the kubelet's pod-level limit).
    pub disk_limit: Option<i64>,
}

fn check_dns_name(field: &str, name: &str) -> Result<(), PodSpecError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("{name:?} must be lowercase letters, digits and '-' (at most 63)"),
        ))
    }
}

/// Requests and limits of one container, defaulted as the kubelet does (a limit without a
/// request requests the limit).
struct Sized {
    cpu_request: Option<u64>,
    cpu_limit: Option<u64>,
    mem_request: Option<i64>,
    mem_limit: Option<i64>,
    disk_limit: Option<i64>,
}

fn sizes(field: &str, r: &ResourceRequirements) -> Result<Sized, PodSpecError> {
    let cpu = |q: &Option<Quantity>, f: &str| {
        q.as_ref()
            .map(|q| parse_cpu(&format!("{field}.{f}.cpu"), q))
            .transpose()
    };
    let mem = |q: &Option<Quantity>, f: &str| {
        q.as_ref()
            .map(|q| parse_memory(&format!("{field}.{f}.memory"), q))
            .transpose()
    };
    let cpu_limit = cpu(&r.limits.cpu, "limits")?;
    let mem_limit = mem(&r.limits.memory, "limits")?;
    let cpu_request = cpu(&r.requests.cpu, "requests")?.or(cpu_limit);
    let mem_request = mem(&r.requests.memory, "requests")?.or(mem_limit);
    if let (Some(req), Some(lim)) = (cpu_request, cpu_limit) {
        if req > lim {
            return Err(bad(
                format!("{field}.requests.cpu"),
                "must not exceed limits.cpu",
            ));
        }
    }
    if let (Some(req), Some(lim)) = (mem_request, mem_limit) {
        if req > lim {
            return Err(bad(
                format!("{field}.requests.memory"),
                "must not exceed limits.memory",
            ));
        }
    }
    let disk_limit = r
        .limits
        .ephemeral_storage
        .as_ref()
        .map(|q| parse_memory(&format!("{field}.limits.ephemeral-storage"), q))
        .transpose()?;
    if disk_limit.is_some_and(|b| b <= 0) {
        return Err(bad(
            format!("{field}.limits.ephemeral-storage"),
            "must be above 0",
        ));
    }
    Ok(Sized {
        cpu_request,
        cpu_limit,
        mem_request,
        mem_limit,
        disk_limit,
    })
}

fn probe(field: &str, p: &ProbeSpec) -> Result<HealthCheck, PodSpecError> {
    let probes = [
        p.exec.as_ref().map(|e| Probe::Exec {
            command: e.command.clone(),
        }),
        p.http_get.as_ref().map(|h| Probe::Http {
            port: h.port,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
        }),
        p.tcp_socket.as_ref().map(|t| Probe::Tcp { port: t.port }),
    ];
    let mut set = probes.into_iter().flatten();
    let (Some(probe), None) = (set.next(), set.next()) else {
        return Err(bad(field, "needs exactly one of exec, httpGet, tcpSocket"));
    };
    match &probe {
        Probe::Exec { command } if command.is_empty() => {
            return Err(bad(format!("{field}.exec.command"), "must not be empty"))
        }
        Probe::Http { path, .. } if !path.starts_with('/') => {
            return Err(bad(format!("{field}.httpGet.path"), "must start with /"))
        }
        _ => {}
    }
    let secs = |v: Option<f64>, default: f64, f: &str| -> Result<u64, PodSpecError> {
        let s = v.unwrap_or(default);
        if !s.is_finite() || s <= 0.0 || s > 86400.0 {
            return Err(bad(format!("{field}.{f}"), "must be between 0 and 86400"));
        }
        Ok((s * 1000.0) as u64)
    };
    if !(0.0..=86400.0).contains(&p.initial_delay_seconds) {
        return Err(bad(
            format!("{field}.initialDelaySeconds"),
            "must be between 0 and 86400",
        ));
    }
    Ok(HealthCheck {
        probe,
        interval_ms: secs(p.period_seconds, 10.0, "periodSeconds")?,
        timeout_ms: secs(p.timeout_seconds, 1.0, "timeoutSeconds")?,
        retries: p.failure_threshold.unwrap_or(3).max(1),
        start_period_ms: (p.initial_delay_seconds * 1000.0) as u64,
    })
}

/// Checks every field and builds the plan. `volume_dir` names the host dir of an `emptyDir`.
pub fn plan(spec: &PodSpec, volume_dir: &dyn Fn(&str) -> PathBuf) -> Result<PodPlan, PodSpecError> {
    check_dns_name("name", &spec.name)?;
    if let Some(h) = &spec.hostname {
        check_dns_name("hostname", h)?;
    }
    if spec.containers.is_empty() {
        return Err(bad("containers", "a pod needs at least one container"));
    }
    let mut volumes = BTreeSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let field = format!("volumes[{i}]");
        check_dns_name(&format!("{field}.name"), &v.name)?;
        if !volumes.insert(v.name.as_str()) {
            return Err(bad(
                format!("{field}.name"),
                format!("duplicate volume {:?}", v.name),
            ));
        }
        match (&v.empty_dir, &v.host_path) {
            (Some(e), None) => {
                if let Some(m) = e.medium.as_deref().filter(|m| !m.is_empty()) {
                    if m != "Memory" {
                        return Err(bad(
                            format!("{field}.emptyDir.medium"),
                            format!("{m:?}: want Memory or nothing"),
                        ));
                    }
                }
                if let Some(q) = &e.size_limit {
                    parse_memory(&format!("{field}.emptyDir.sizeLimit"), q)?;
                }
            }
            (None, Some(h)) => {
                if !h.path.is_absolute() || !h.path.exists() {
                    return Err(bad(
                        format!("{field}.hostPath.path"),
                        format!("{} must be an existing absolute path", h.path.display()),
                    ));
                }
            }
            _ => return Err(bad(field, "needs exactly one of emptyDir and hostPath")),
        }
    }

    let network = match (&spec.network, spec.host_network) {
        (Some(_), true) => {
            return Err(bad("network", "conflicts with hostNetwork: true"));
        }
        (_, true) => NetworkMode::Host,
        (None, false) => NetworkMode::Cni("default".into()),
        (Some(n), false) => n
            .parse()
            .map_err(|e: crate::task::TaskError| bad("network", e.reason))?,
    };
    let mut ports: Vec<PublishedPort> = Vec::new();
    let mut names = BTreeSet::new();
    let mut sized = Vec::new();
    let mut build =
        |list: &[PodContainer], kind: &str| -> Result<Vec<(String, TaskSpec)>, PodSpecError> {
            let mut out = Vec::new();
            for (i, c) in list.iter().enumerate() {
                let field = format!("{kind}[{i}]");
                check_dns_name(&format!("{field}.name"), &c.name)?;
                if !names.insert(c.name.clone()) {
                    return Err(bad(
                        format!("{field}.name"),
                        format!("duplicate container name {:?}", c.name),
                    ));
                }
                if c.image.trim().is_empty() {
                    return Err(bad(format!("{field}.image"), "missing image"));
                }
                let s = sizes(&format!("{field}.resources"), &c.resources)?;
                for (j, p) in c.ports.iter().enumerate() {
                    let pfield = format!("{field}.ports[{j}]");
                    if p.container_port == 0 {
                        return Err(bad(format!("{pfield}.containerPort"), "must be 1 to 65535"));
                    }
                    let protocol = p.protocol.as_deref().unwrap_or("TCP");
                    if !["TCP", "UDP", "SCTP"].contains(&protocol) {
                        return Err(bad(
                            format!("{pfield}.protocol"),
                            format!("{protocol:?}: want TCP, UDP or SCTP"),
                        ));
                    }
                    let Some(host_port) = p.host_port else {
                        continue;
                    };
                    if host_port == 0 {
                        return Err(bad(format!("{pfield}.hostPort"), "must be 1 to 65535"));
                    }
                    let host_ip = p.host_ip.clone().unwrap_or_default();
                    if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
                        return Err(bad(format!("{pfield}.hostIP"), "not an IP address"));
                    }
                    if network.cni().is_none() {
                        return Err(bad(
                            format!("{pfield}.hostPort"),
                            format!("needs a CNI network, not {network}"),
                        ));
                    }
                    let port = PublishedPort {
                        host_ip,
                        host_port,
                        container_port: p.container_port,
                        protocol: protocol.to_ascii_lowercase(),
                    };
                    if ports.iter().any(|q: &PublishedPort| {
                        q.host_port == port.host_port && q.protocol == port.protocol
                    }) {
                        return Err(bad(
                            format!("{pfield}.hostPort"),
                            format!("{host_port}/{} is published twice", port.protocol),
                        ));
                    }
                    ports.push(port);
                }
                let mut task = TaskSpec {
                    image: c.image.clone(),
                    name: Some(format!("{}_{}", spec.name, c.name)),
                    entrypoint: (!c.command.is_empty()).then(|| c.command.clone()),
                    command: c.args.clone(),
                    env: c
                        .env
                        .iter()
                        .map(|e| format!("{}={}", e.name, e.value))
                        .collect(),
                    workdir: c.working_dir.clone(),
                    user: c.user.clone(),
                    // Members join the sandbox's network namespace, or the host's.
                    network: if network == NetworkMode::Host {
                        NetworkMode::Host
                    } else {
                        NetworkMode::None
                    },
                    ..TaskSpec::default()
                };
                task.resources = Resources {
                    cpus: s.cpu_limit.map(|m| m as f64 / 1000.0),
                    // Requests are weights, as the kubelet sets them: 1024 shares per CPU.
                    cpu_shares: Some(s.cpu_request.map_or(2, |m| (m * 1024 / 1000).max(2))),
                    memory: s.mem_limit,
                    memory_reservation: s.mem_request.filter(|_| s.mem_limit.is_some()),
                    cpuset_cpus: spec.cpuset_cpus.clone(),
                    ..Resources::default()
                };
                task.revocable = spec.revocable;
                task.storage_size = s.disk_limit;
                for (j, m) in c.volume_mounts.iter().enumerate() {
                    let mfield = format!("{field}.volumeMounts[{j}]");
                    let Some(v) = spec.volumes.iter().find(|v| v.name == m.name) else {
                        return Err(bad(
                            format!("{mfield}.name"),
                            format!("volume {:?} is not declared in volumes", m.name),
                        ));
                    };
                    if !m.mount_path.is_absolute() {
                        return Err(bad(format!("{mfield}.mountPath"), "must be absolute"));
                    }
                    match (&v.empty_dir, &v.host_path) {
                        // A Memory emptyDir is one tmpfs the sandbox mounts at the volume's
                        // dir, so every container of the pod shares it like any emptyDir.
                        (Some(_), _) => task.volumes.push(Volume {
                            source: volume_dir(&v.name),
                            target: m.mount_path.clone(),
                            read_only: m.read_only,
                        }),
                        (None, Some(h)) => task.volumes.push(Volume {
                            source: h.path.clone(),
                            target: m.mount_path.clone(),
                            read_only: m.read_only,
                        }),
                        (None, None) => {}
                    }
                }
                if let Some(p) = &c.liveness_probe {
                    task.health = Some(probe(&format!("{field}.livenessProbe"), p)?);
                }
                // emptyDir sources exist only once the sandbox is made; the rest is checked now.
                let mut check = task.clone();
                check.volumes.retain(|v| v.source.exists());
                check
                    .validate()
                    .map_err(|e| bad(field.clone(), e.to_string()))?;
                sized.push((kind == "containers", s));
                out.push((c.name.clone(), task));
            }
            Ok(out)
        };
    if let Some(c) = &spec.cpuset_cpus {
        crate::task::parse_cpuset("cpusetCpus", c).map_err(|e| bad("cpusetCpus", e.reason))?;
    }
    let init = build(&spec.init_containers, "initContainers")?;
    let containers = build(&spec.containers, "containers")?;

    let all_guaranteed = sized.iter().all(|(_, s)| {
        s.cpu_limit.is_some()
            && s.mem_limit.is_some()
            && s.cpu_request == s.cpu_limit
            && s.mem_request == s.mem_limit
    });
    let none = sized.iter().all(|(_, s)| {
        s.cpu_limit.is_none()
            && s.mem_limit.is_none()
            && s.cpu_request.is_none()
            && s.mem_request.is_none()
    });
    let qos = if spec.revocable {
        QosClass::Revocable
    } else if all_guaranteed {
        QosClass::Guaranteed
    } else if none {
        QosClass::BestEffort
    } else {
        QosClass::Burstable
    };
    // The pod needs the larger of its app containers' sum and its biggest init container.
    let total = |pick: &dyn Fn(&Sized) -> u64| -> u64 {
        let apps: u64 = sized.iter().filter(|(a, _)| *a).map(|(_, s)| pick(s)).sum();
        let init = sized
            .iter()
            .filter(|(a, _)| !*a)
            .map(|(_, s)| pick(s))
            .max();
        apps.max(init.unwrap_or(0))
    };
    let requests = (
        total(&|s| s.cpu_request.unwrap_or(0)),
        total(&|s| s.mem_request.unwrap_or(0) as u64),
    );
    let apps: Vec<&Sized> = sized.iter().filter(|(a, _)| *a).map(|(_, s)| s).collect();
    let limits = (
        apps.iter()
            .map(|s| s.cpu_limit)
            .sum::<Option<u64>>()
            .map(|m| m.max(total(&|s| s.cpu_limit.unwrap_or(0))) as f64 / 1000.0),
        apps.iter()
            .map(|s| s.mem_limit)
            .sum::<Option<i64>>()
            .map(|b| b.max(total(&|s| s.mem_limit.unwrap_or(0) as u64) as i64)),
    );
    let disk_limit = apps.iter().map(|s| s.disk_limit).sum::<Option<i64>>();
    Ok(PodPlan {
        disk_limit,
        network,
        ports,
        qos,
        init,
        containers,
        requests,
        limits,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pod::parse;

    fn plan_of(yaml: &str) -> Result<PodPlan, PodSpecError> {
        plan(&parse(yaml)?, &|n| {
            PathBuf::from(format!("/pods/x/volumes/{n}"))
        })
    }

    #[test]
    fn quantities() {
        let q = |s: &str| Quantity::Text(s.into());
        assert_eq!(parse_cpu("f", &q("250m")).unwrap(), 250);
        assert_eq!(parse_cpu("f", &Quantity::Number(1.5)).unwrap(), 1500);
        assert!(parse_cpu("f", &q("1.5x")).is_err());
        assert!(parse_cpu("f", &q("-1")).is_err());
        assert_eq!(parse_memory("f", &q("64Mi")).unwrap(), 64 << 20);
        assert_eq!(parse_memory("f", &q("1G")).unwrap(), 1_000_000_000);
        assert_eq!(parse_memory("f", &q("129e6")).unwrap(), 129_000_000);
        assert!(parse_memory("f", &q("12Q")).is_err());
    }

    #[test]
    fn qos_classes() {
        let g = plan_of(
            "name: a\ncontainers:\n- {name: c, image: busybox, resources: {limits: {cpu: 1, memory: 64Mi}}}\n",
        )
        .unwrap();
        assert_eq!(g.qos, QosClass::Guaranteed);
        assert_eq!(g.requests, (1000, 64 << 20));
        assert_eq!(g.limits, (Some(1.0), Some(64 << 20)));
        let b = plan_of(
            "name: a\ncontainers:\n- {name: c, image: busybox, resources: {requests: {cpu: 100m}}}\n- {name: d, image: busybox}\n",
        )
        .unwrap();
        assert_eq!(b.qos, QosClass::Burstable);
        assert_eq!(b.limits, (None, None));
        assert_eq!(b.containers[0].1.resources.cpu_shares, Some(102));
        let e = plan_of("name: a\ncontainers:\n- {name: c, image: busybox}\n").unwrap();
        assert_eq!(e.qos, QosClass::BestEffort);
        assert_eq!(e.containers[0].1.resources.cpu_shares, Some(2));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("name: a\ncontainers:\n- {name: c, image: b}\n- {name: c, image: b}\n", "containers[1].name"),
            ("name: a\ncontainers:\n- {name: c, image: ''}\n", "containers[0].image"),
            ("name: a\ncontainers:\n- {name: c, image: b, resources: {limits: {cpu: 1.5x}}}\n", "containers[0].resources.limits.cpu"),
            ("name: a\ncontainers:\n- {name: c, image: b, volumeMounts: [{name: v, mountPath: /v}]}\n", "containers[0].volumeMounts[0].name"),
            ("name: A\ncontainers:\n- {name: c, image: b}\n", "name"),
            ("name: a\ncontainers: []\n", "containers"),
            ("name: a\ncontainers:\n- {name: c, image: b, livenessProbe: {periodSeconds: 1}}\n", "containers[0].livenessProbe"),
            ("name: a\nbogus: 1\ncontainers: []\n", "spec"),
            ("name: a\nhostNetwork: true\nnetwork: n\ncontainers:\n- {name: c, image: b}\n", "network"),
            ("name: a\nnetwork: 'a b'\ncontainers:\n- {name: c, image: b}\n", "network"),
            ("name: a\nnetwork: none\ncontainers:\n- {name: c, image: b, ports: [{containerPort: 1, hostPort: 2}]}\n", "containers[0].ports[0].hostPort"),
            ("name: a\ncontainers:\n- {name: c, image: b, ports: [{containerPort: 0}]}\n", "containers[0].ports[0].containerPort"),
            ("name: a\ncontainers:\n- {name: c, image: b, ports: [{containerPort: 1, protocol: ICMP}]}\n", "containers[0].ports[0].protocol"),
            ("name: a\ncontainers:\n- {name: c, image: b, ports: [{containerPort: 1, hostPort: 2, hostIP: x}]}\n", "containers[0].ports[0].hostIP"),
            ("name: a\ncontainers:\n- {name: c, image: b, ports: [{containerPort: 1, hostPort: 2}]}\n- {name: d, image: b, ports: [{containerPort: 3, hostPort: 2}]}\n", "containers[1].ports[0].hostPort"),
        ];
        for (yaml, field) in cases {
            let e = plan_of(yaml).unwrap_err();
            assert_eq!(e.field, field, "{yaml}: {e}");
        }
    }

    #[test]
    fn networks_and_published_ports() {
        let p = plan_of("name: a\ncontainers:\n- {name: c, image: b, ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 53, hostPort: 53, protocol: UDP}, {containerPort: 9}]}\n").unwrap();
        assert_eq!(p.network, NetworkMode::Cni("default".into()));
        let ports: Vec<String> = p.ports.iter().map(|p| p.to_string()).collect();
        assert_eq!(ports, ["0.0.0.0:8080->80/tcp", "0.0.0.0:53->53/udp"]);
        // Members join the sandbox's namespace (None here), or the host's.
        assert_eq!(p.containers[0].1.network, NetworkMode::None);
        let h =
            plan_of("name: a\nhostNetwork: true\ncontainers:\n- {name: c, image: b}\n").unwrap();
        assert_eq!(h.network, NetworkMode::Host);
        assert_eq!(h.containers[0].1.network, NetworkMode::Host);
        let n = plan_of("name: a\nnetwork: none\ncontainers:\n- {name: c, image: b}\n").unwrap();
        assert_eq!(n.network, NetworkMode::None);
        let m = plan_of("name: a\nnetwork: mynet\ncontainers:\n- {name: c, image: b}\n").unwrap();
        assert_eq!(m.network, NetworkMode::Cni("mynet".into()));
    }

    #[test]
    fn json_and_volumes() {
        let p = plan_of(
            r#"{"name":"a","volumes":[{"name":"s","emptyDir":{}},{"name":"m","emptyDir":{"medium":"Memory","sizeLimit":"1Mi"}}],
               "containers":[{"name":"c","image":"b","command":["sh"],"args":["-c","x"],
               "volumeMounts":[{"name":"s","mountPath":"/s"},{"name":"m","mountPath":"/m","readOnly":true}]}]}"#,
        )
        .unwrap();
        let t = &p.containers[0].1;
        assert_eq!(t.entrypoint, Some(vec!["sh".to_string()]));
        assert_eq!(t.command, vec!["-c", "x"]);
        assert_eq!(t.volumes[0].source, PathBuf::from("/pods/x/volumes/s"));
        assert_eq!(t.volumes[1].source, PathBuf::from("/pods/x/volumes/m"));
        assert!(t.volumes[1].read_only && t.tmpfs.is_empty());
        assert_eq!(t.name.as_deref(), Some("a_c"));
    }
}
