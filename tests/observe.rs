//! What an operator watches: health checks (command, HTTP, TCP; liveness restarts), the
//! events journal across restarts, `events --stats`, the Prometheus endpoint, image GC by
//! watermarks, the TOML config and `agent --check`. Root only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{events_json, import, run_detached, wait_for, Root};

fn health(root: &Root, id: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&root.ok(&["inspect", id])).unwrap();
    v["health"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn command_health_checks_go_healthy_then_unhealthy_with_events() {
    let root = Root::new();
    import(&root);
    let id = run_detached(
        &root,
        &[
            "--health-cmd",
            "test -f /tmp/ok",
            "--health-interval",
            "100ms",
            "--health-retries",
            "2",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    assert_eq!(health(&root, &id), "starting");
    wait_for("unhealthy", || health(&root, &id) == "unhealthy");
    root.ok(&["exec", &id, "touch", "/tmp/ok"]);
    wait_for("healthy", || health(&root, &id) == "healthy");
    assert!(root.ok(&["ps"]).contains("running (healthy)"));
    root.ok(&["exec", &id, "rm", "/tmp/ok"]);
    wait_for("unhealthy again", || health(&root, &id) == "unhealthy");
    let changes: Vec<String> = events_json(&root, "event=health_status")
        .iter()
        .map(|e| e["attributes"]["health"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(changes, ["unhealthy", "healthy", "unhealthy"]);
    // A plain container is only reported, not killed (as Docker).
    assert_eq!(common::state(&root, &id)["status"], "running");
    // Checks leave no exec files behind: the two `berth exec` runs keep theirs (3 files
    // each), dozens of checks have run, at most one is in flight.
    let execs = root.path().join("containers").join(&id).join("exec");
    std::thread::sleep(Duration::from_millis(500));
    let files: Vec<_> = std::fs::read_dir(&execs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(files.len() <= 6 + 4, "{files:?}");
}

#[test]
fn http_and_tcp_probes_and_a_failing_liveness_probe_restarts_the_container() {
    let root = Root::with_agent_args(&["--restart-backoff", "100ms"]);
    import(&root);
    let spec = root.path().join("live.yaml");
    std::fs::write(
        &spec,
        r#"
name: live
containers:
  - name: web
    image: busybox
    command: [sh, -c, "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"]
    livenessProbe: {httpGet: {path: /index.html, port: 8080}, periodSeconds: 0.1, failureThreshold: 2, initialDelaySeconds: 2}
  - name: tcp
    image: busybox
    command: [sleep, "1000"]
    livenessProbe: {tcpSocket: {port: 8080}, periodSeconds: 0.1, initialDelaySeconds: 2}
  - name: broken
    image: busybox
    command: [sleep, "1000"]
    livenessProbe: {httpGet: {path: /, port: 9999}, periodSeconds: 0.1, failureThreshold: 2}
"#,
    )
    .unwrap();
    root.ok(&["pod", "run", spec.to_str().unwrap()]);
    let slot = |name: &str| -> serde_json::Value {
        let p: serde_json::Value =
            serde_json::from_str(&root.ok(&["pod", "inspect", "live"])).unwrap();
        p["members"][name].clone()
    };
    wait_for("the broken one restarted twice", || {
        slot("broken")["restart_count"].as_u64().unwrap_or(0) >= 2
    });
    let web = slot("web")["id"].as_str().unwrap().to_string();
    let tcp = slot("tcp")["id"].as_str().unwrap().to_string();
    wait_for("web healthy", || health(&root, &web) == "healthy");
    wait_for("tcp healthy", || health(&root, &tcp) == "healthy");
    assert_eq!(slot("web")["restart_count"], 0);
    let killed = events_json(&root, "event=killed");
    assert!(
        killed.iter().all(|e| e["name"] == "live_broken"),
        "{killed:?}"
    );
    assert!(killed.len() >= 2);
    let last = slot("broken")["last_exit"].clone();
    assert_eq!(last["exit_code"], 137, "{last}");
    root.ok(&["pod", "rm", "-f", "live"]);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_string()
}

/// Sample lines parsed as (name, labels, value); every line must parse.
fn parse_samples(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n.to_string(), rest.trim_end_matches('}').to_string()),
                None => (series.to_string(), String::new()),
            };
            (
                name,
                labels,
                value.parse::<f64>().unwrap_or_else(|_| panic!("{l}")),
            )
        })
        .collect()
}

#[test]
fn metrics_are_scraped_and_parse() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let root = Root::with_agent_args(&["--metrics-addr", &addr]);
    import(&root);
    let spec = root.path().join("m.yaml");
    std::fs::write(
        &spec,
        "name: m\ncontainers: [{name: burn, image: busybox, command: [sh, -c, 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 1000'], resources: {limits: {memory: 64Mi}}}]\n",
    )
    .unwrap();
    root.ok(&["pod", "run", spec.to_str().unwrap()]);
    let id = run_detached(&root, &["--name", "solo", "busybox", "sleep", "1000"]);
    // Polled, not slept: scraped until the burner has used CPU and a usage sample is in.
    let mut text = String::new();
    common::wait_for("a scrape with CPU used and the node sampled", || {
        text = scrape(port);
        let s = parse_samples(&text);
        let has = |name: &str, label: &str, min: f64| {
            s.iter()
                .any(|(n, l, v)| n == name && l.contains(label) && *v > min)
        };
        has(
            "berth_container_cpu_usage_seconds_total",
            "name=\"m_burn\"",
            0.0,
        ) && has("berth_node_used_by_tier", "tier=\"burstable\"", 0.0)
    });
    let samples = parse_samples(&text);
    let get = |name: &str, label: &str| -> Option<f64> {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.contains(label))
            .map(|s| s.2)
    };
    assert!(get("berth_container_cpu_usage_seconds_total", "name=\"m_burn\"").unwrap() > 0.0);
    assert!(
        get(
            "berth_container_memory_usage_bytes",
            &format!("id=\"{id}\"")
        )
        .unwrap()
            > 0.0
    );
    assert!(get("berth_container_pids", "pod=\"m\"").unwrap() >= 1.0);
    assert_eq!(
        get("berth_container_restarts_total", "pod=\"m\""),
        Some(0.0)
    );
    assert!(
        get(
            "berth_pod_memory_usage_bytes",
            "pod=\"m\",qos=\"burstable\""
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(get("berth_pod_oom_kills_total", "pod=\"m\""), Some(0.0));
    assert_eq!(get("berth_containers", "status=\"running\""), Some(2.0));
    assert_eq!(get("berth_pods", "phase=\"running\""), Some(1.0));
    assert!(get("berth_image_store_bytes", "").unwrap() > 1e6);
    assert!(get("berth_agent_resident_memory_bytes", "").unwrap() > 1e6);
    let created = get(
        "berth_api_request_duration_seconds_count",
        "route=\"/v1/containers\"",
    )
    .unwrap();
    assert!(created >= 1.0, "{text}");
    assert!(text.contains("# TYPE berth_api_request_duration_seconds histogram"));
    // The node's resource model, as `berth node` has it.
    let node: serde_json::Value = serde_json::from_str(&root.ok(&["node", "--json"])).unwrap();
    let cores = node["cpu"]["capacity"].as_f64().unwrap() / 1000.0;
    assert_eq!(get("berth_node_capacity", "resource=\"cpu\""), Some(cores));
    assert!(get("berth_node_allocatable", "resource=\"memory\"").unwrap() > 1e6);
    assert_eq!(
        get(
            "berth_node_allocated",
            "resource=\"memory\",tier=\"burstable\""
        ),
        node["memory"]["allocated"]["burstable"].as_f64()
    );
    assert!(get("berth_node_revocable", "resource=\"cpu\"").is_some());
    assert_eq!(get("berth_reclaim_state", "state=\"none\""), Some(1.0));
    assert_eq!(
        get("berth_reclaim_steps_total", "step=\"revoke\""),
        Some(0.0)
    );
    assert_eq!(get("berth_revoked_total", ""), Some(0.0));
    root.ok(&["pod", "rm", "-f", "m"]);
}

#[test]
fn events_survive_an_agent_restart_and_filter() {
    let mut root = Root::new();
    import(&root);
    let (code, _, _) = common::run_code(
        &root,
        &["run", "--name", "three", "busybox", "sh", "-c", "exit 3"],
    );
    assert_eq!(code, 3);
    root.stop_agent(libc::SIGKILL);
    root.start_agent(&[]);
    let evs = events_json(&root, "container=three");
    let actions: Vec<&str> = evs.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["created", "started", "exited"], "{evs:?}");
    assert_eq!(evs[2]["attributes"]["exitCode"], "3");
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // --since in the future: nothing; --since 1h: all of them; bad filter: refused.
    assert!(root
        .ok(&["events", "--since", "2999-01-01T00:00:00Z", "--until", "0s"])
        .is_empty());
    assert!(!root
        .ok(&["events", "--since", "1h", "--until", "0s"])
        .is_empty());
    assert!(root
        .fails(&["events", "--until", "0s", "--filter", "colour=red"])
        .contains("invalid filter key"));
    // Following: a new event arrives on an open stream (`--since` now: no older ones).
    let mut follow = root
        .cmd(&["events", "--since", "0s", "--filter", "event=started"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let id = run_detached(&root, &["busybox", "sleep", "1000"]);
    let line = lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        line.contains("container started") && line.contains(&id[..12]),
        "{line}"
    );
    // SAFETY: kill(2) on the pid of the `events` client this test spawned.
    unsafe {
        libc::kill(follow.id() as i32, libc::SIGKILL);
    }
    let _ = follow.wait();
    // --stats prints usage lines like `runc events --stats`.
    let mut stats = root
        .cmd(&["events", &id, "--stats", "--interval", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = stats.stdout.take().unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut first).unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["type"], "stats");
    assert!(v["data"]["memory_usage"].as_u64().unwrap() > 0);
    // SAFETY: as above, our own child.
    unsafe {
        libc::kill(stats.id() as i32, libc::SIGKILL);
    }
    let _ = stats.wait();
}

#[test]
fn image_gc_removes_unused_images_above_the_high_watermark() {
    let root = Root::with_agent_args(&[
        "--image-gc-high-percent",
        "0",
        "--image-gc-low-percent",
        "0",
    ]);
    import(&root);
    let _id = run_detached(&root, &["busybox", "sleep", "1000"]);
    wait_for("the unused image to go", || {
        root.images_json()
            .iter()
            .all(|i| !i["reference"].as_str().unwrap_or_default().contains("app"))
    });
    let refs: Vec<String> = root
        .images_json()
        .iter()
        .map(|i| i["reference"].as_str().unwrap().to_string())
        .collect();
    assert!(
        refs.iter().any(|r| r.contains("busybox")),
        "in use, kept: {refs:?}"
    );
    // The event follows the removal (sent from the GC task to the owner).
    wait_for("the image GC event", || {
        events_json(&root, "type=image")
            .iter()
            .any(|e| e["action"] == "deleted" && e["attributes"]["reason"] == "disk-pressure")
    });
}

#[test]
fn the_agent_reads_its_toml_config_and_checks_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\nmetrics_addr = \"127.0.0.1:{port}\"\nlog_max_files = 2\nlog_format = \"json\"\n"
        ),
    )
    .unwrap();
    let root = Root::with_agent_args(&["--config", config.to_str().unwrap()]);
    assert!(scrape(port).contains("berth_containers"));
    // Structured logs: every line of the agent's log is a JSON object.
    let log = root.agent_log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "agent listening" && l["level"] == "INFO"),
        "{log}"
    );
    drop(root);
    std::fs::write(&config, "version = 1\nno_such_key = 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--config", config.to_str().unwrap(), "--root"])
        .arg(dir.path().join("r"))
        .args(["--socket"])
        .arg(dir.path().join("s.sock"))
        .arg("agent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["agent", "--check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in [
        "cgroup version",
        "overlayfs",
        "namespace",
        "CNI plugin",
        "own cgroup",
        "user namespaces",
        "idmapped layers",
        "disk budgets",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
}

#[test]
fn the_images_healthcheck_is_used_unless_turned_off() {
    let root = Root::new();
    import(&root);
    // The app fixture's config: HEALTHCHECK CMD-SHELL "test -f /tmp/healthy", 300 ms, 1 retry.
    let id = run_detached(&root, &["app", "sleep 1000"]);
    wait_for("unhealthy", || health(&root, &id) == "unhealthy");
    root.ok(&["exec", &id, "touch", "/tmp/healthy"]);
    wait_for("healthy", || health(&root, &id) == "healthy");
    let plain = run_detached(&root, &["--no-healthcheck", "app", "sleep 1000"]);
    let v: serde_json::Value = serde_json::from_str(&root.ok(&["inspect", &plain])).unwrap();
    assert!(
        v["health"].is_null() && v["spec"]["health"].is_null(),
        "{v}"
    );
}

#[test]
fn a_check_over_its_timeout_fails_and_is_killed() {
    let root = Root::new();
    import(&root);
    let id = run_detached(
        &root,
        &[
            "--health-cmd",
            "sleep 30",
            "--health-timeout",
            "200ms",
            "--health-interval",
            "100ms",
            "--health-retries",
            "1",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    wait_for("unhealthy", || health(&root, &id) == "unhealthy");
    let v: serde_json::Value = serde_json::from_str(&root.ok(&["inspect", &id])).unwrap();
    assert!(
        v["health"]["last_output"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{v}"
    );
    std::thread::sleep(Duration::from_millis(1000));
    // Timed-out checks do not pile up: at most the one in flight is left.
    let top = root.ok(&["top", &id]);
    assert!(top.matches("sleep 30").count() <= 1, "{top}");
    let execs = root.path().join("containers").join(&id).join("exec");
    let files = std::fs::read_dir(&execs).unwrap().count();
    assert!(files <= 4, "{files} files in exec/");
}
