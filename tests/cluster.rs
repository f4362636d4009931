//! `berth master` and agents that join it: real processes, real TLS on loopback, real pods.
//! Root only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::cluster::{assigned_pods, Master};
use common::{pod_json, poll_until, wait_for, write_spec, Root};

const FAST: [&str; 4] = ["--node-timeout", "3s", "--heartbeat-floor", "200ms"];

fn job_file(root: &Root, name: &str, yaml: &str) -> String {
    write_spec(root, &format!("job-{name}"), yaml)
}

fn instances(m: &Master, job: &str) -> Vec<serde_json::Value> {
    m.json(&["ps", job]).as_array().cloned().unwrap_or_default()
}

fn all_running(m: &Master, job: &str, count: usize) -> bool {
    let list = instances(m, job);
    list.len() == count && list.iter().all(|i| i["state"] == "running")
}

#[test]
fn a_job_spreads_over_three_agents_converges_and_leaves_local_pods_alone() {
    let mut m = Master::start(&FAST);
    let a = m.agent("n1", &["--node-label", "zone=a"]);
    let b = m.agent("n2", &["--node-label", "zone=a"]);
    let c = m.agent("n3", &["--node-label", "zone=b"]);
    // A pod started on the node itself: never the master's business.
    let local = write_spec(
        &a,
        "local",
        "name: local\ncontainers: [{name: c, image: busybox, command: [sleep, '1000']}]\n",
    );
    a.ok(&["pod", "run", &local]);

    let job = job_file(
        &a,
        "web",
        "name: web\ncount: 6\nstrategy: spread\ncontainers:\n  - name: c\n    image: busybox\n    \
         command: [sleep, '1000']\n    resources: {requests: {cpu: 10m, memory: 8Mi}}\n\
         terminationGracePeriodSeconds: 1\n",
    );
    assert_eq!(m.ok(&["run", &job]).trim(), "web");
    wait_for("6 instances running", || all_running(&m, "web", 6));
    for (root, name) in [(&a, "n1"), (&b, "n2"), (&c, "n3")] {
        let pods = assigned_pods(root);
        assert_eq!(pods.len(), 2, "{name}: {pods:?}");
        assert!(pods.iter().all(|p| p.starts_with("web-")), "{pods:?}");
    }
    let nodes = m.json(&["nodes"]);
    for n in nodes.as_array().unwrap() {
        assert_eq!(n["instances"], 2, "{n}");
        assert_eq!(n["state"], "ready");
        assert_eq!(n["assigned"]["millicpu"], 20);
        assert!(
            n["registration"]["allocatable"]["millicpu"]
                .as_u64()
                .unwrap()
                > 0
        );
        assert!(n["usage"].is_object(), "heartbeats carry usage: {n}");
    }
    let table = m.ok(&["ps", "web"]);
    assert_eq!(
        table.lines().filter(|l| l.contains("running")).count(),
        6,
        "{table}"
    );

    // Level-triggered: a pod removed by hand on its node comes back.
    let gone = assigned_pods(&b)[0].clone();
    b.ok(&["pod", "rm", "-f", &gone]);
    wait_for("the removed pod to come back", || {
        assigned_pods(&b).contains(&gone) && pod_json(&b, &gone)["phase"] == "running"
    });

    // Constraints: zone=b has one node.
    let zoned = job_file(
        &a,
        "zoned",
        "name: zoned\ncount: 2\nconstraints: {zone: b}\nterminationGracePeriodSeconds: 1\n\
         containers: [{name: c, image: busybox, command: [sleep, '1000']}]\n",
    );
    m.ok(&["run", &zoned]);
    wait_for("zoned running", || all_running(&m, "zoned", 2));
    assert!(instances(&m, "zoned").iter().all(|i| i["node"] == "n3"));

    m.ok(&["rm", "web"]);
    m.ok(&["rm", "zoned"]);
    assert!(
        poll_until(|| [&a, &b, &c].iter().all(|r| assigned_pods(r).is_empty())),
        "the job's pods did not stop: {:?}\n{}\n{}",
        [&a, &b, &c].map(assigned_pods),
        m.log(),
        a.agent_log()
    );
    assert_eq!(pod_json(&a, "local")["phase"], "running");
    let events = m.ok(&["events"]);
    for what in [
        "node registered n1",
        "job submitted web",
        "instance placed web.0.1",
        "job removed web",
    ] {
        assert!(events.contains(what), "{what} missing from:\n{events}");
    }
    m.clear(&[&a, &b, &c]);
}

/// `curl` with the cluster CA and, when given, a client certificate; (HTTP status, body).
fn curl(
    m: &Master,
    dir: &std::path::Path,
    cert: Option<(&str, &str)>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        "--cacert",
    ])
    .arg(dir.join("ca.pem"))
    .args(["-H", "content-type: application/json", "--data", body]);
    if let Some((c, k)) = cert {
        cmd.args(["--cert", c, "--key", k]);
    }
    let out = cmd
        .arg(format!("{}{path}", m.join.url))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn joining_and_the_api_refuse_what_they_must() {
    let mut m = Master::start(&FAST);
    let a = m.agent("n1", &[]);

    // A wrong token, a wrong CA pin: the agent serves on, the node never registers.
    let mut args = m.agent_args("bad-token");
    args[3] = "0123456789abcdef0123456789abcdef".into();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let bad_token = Root::with_agent_args(&refs);
    let mut args = m.agent_args("bad-ca");
    args[5] = format!("sha256:{}", "0".repeat(64));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let bad_ca = Root::with_agent_args(&refs);
    wait_for("the token refusal", || {
        bad_token.agent_log().contains("wrong join token")
    });
    wait_for("the CA refusal", || {
        bad_ca.agent_log().contains("not the pinned --ca-cert-hash")
    });
    assert!(m.node_state("bad-token").is_none() && m.node_state("bad-ca").is_none());
    assert!(!bad_token.path().join("cluster/member.json").exists());

    // No token (and no credential yet): the agent refuses to start, and says why.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--root")
        .arg(dir.path())
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .args(["--config", "/nonexistent", "agent", "--master", &m.join.url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs --join-token and --ca-cert-hash"),
        "{err}"
    );
    assert!(!dir.path().join("s.sock").exists());

    // Plain HTTP gets no HTTP answer.
    let mut s = std::net::TcpStream::connect(&m.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /v1/cluster/nodes HTTP/1.1\r\nHost: m\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "{answer:?}"
    );

    // A node's certificate: its own reports only, no jobs, no other node.
    let cred: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.path().join("cluster/member.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (file, key) in [
        ("ca.pem", "ca_pem"),
        ("node.pem", "cert_pem"),
        ("node.key", "key_pem"),
    ] {
        std::fs::write(dir.path().join(file), cred[key].as_str().unwrap()).unwrap();
    }
    let node_cert = (
        dir.path().join("node.pem").display().to_string(),
        dir.path().join("node.key").display().to_string(),
    );
    let cert = Some((node_cert.0.as_str(), node_cert.1.as_str()));
    let job =
        r#"{"job":{"pod":{"name":"x","containers":[{"name":"c","image":"busybox"}]},"count":1}}"#;
    let (code, body) = curl(&m, dir.path(), cert, "POST", "/v1/cluster/jobs", job);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("forbidden"), "{body}");
    let (code, body) = curl(
        &m,
        dir.path(),
        cert,
        "POST",
        "/v1/cluster/nodes/n2/heartbeat",
        r#"{"generation":0,"usage":{"allocated":{"millicpu":0,"memory":0}},"pods":[]}"#,
    );
    assert_eq!(code, 403, "{body}");
    let (code, _) = curl(
        &m,
        dir.path(),
        cert,
        "POST",
        "/v1/cluster/nodes/n1/heartbeat",
        r#"{"generation":0,"usage":{"allocated":{"millicpu":0,"memory":0}},"pods":[]}"#,
    );
    assert_eq!(code, 200);
    let (code, body) = curl(&m, dir.path(), None, "GET", "/v1/cluster/nodes", "");
    assert_eq!(code, 401, "{body}");

    // Jobs: a bad field is named; a job that fits nowhere waits with each node's reason.
    let bad = job_file(
        &a,
        "bad",
        "name: bad\ncontainers: [{name: c, image: busybox, bogus: 1}]\n",
    );
    let err = m.fails(&["run", &bad]);
    assert!(
        err.contains("containers[0]") && err.contains("bogus"),
        "{err}"
    );
    let bad = job_file(
        &a,
        "bad2",
        "name: bad2\ncount: 0\ncontainers: [{name: c, image: busybox}]\n",
    );
    assert!(m.fails(&["run", &bad]).contains("count"));
    let bad = job_file(
        &a,
        "bad3",
        "name: bad3\nqos: guaranteed\ncontainers: [{name: c, image: busybox}]\n",
    );
    assert!(m
        .fails(&["run", &bad])
        .contains("besteffort, not guaranteed"));
    let big = job_file(
        &a,
        "big",
        "name: big\ncontainers: [{name: c, image: busybox, resources: {requests: {cpu: '64'}}}]\n",
    );
    m.ok(&["run", &big]);
    assert!(
        poll_until(|| {
            instances(&m, "big").first().is_some_and(|i| {
                i["state"] == "pending"
                    && i["message"]
                        .as_str()
                        .is_some_and(|s| s.contains("n1: needs 64000m CPU"))
            })
        }),
        "{:?}",
        instances(&m, "big")
    );
    let nowhere = job_file(
        &a,
        "nowhere",
        "name: nowhere\nconstraints: {zone: mars}\ncontainers: [{name: c, image: busybox}]\n",
    );
    m.ok(&["run", &nowhere]);
    wait_for("the constraint reason", || {
        instances(&m, "nowhere").first().is_some_and(|i| {
            i["message"]
                .as_str()
                .is_some_and(|s| s.contains("n1: lacks label zone=mars"))
        })
    });
    assert!(m.fails(&["run", &big]).contains("in use"));
    m.clear(&[&a]);
}

#[test]
fn a_lost_agents_pods_move_and_its_stale_copies_stop_when_it_returns() {
    let mut m = Master::start(&["--node-timeout", "2s", "--heartbeat-floor", "200ms"]);
    let mut a = m.agent("n1", &[]);
    let b = m.agent("n2", &[]);
    let job = job_file(
        &a,
        "svc",
        "name: svc\ncount: 2\nstrategy: spread\nterminationGracePeriodSeconds: 1\ncontainers: [{name: c, image: busybox, command: [sleep, '1000']}]\n",
    );
    m.ok(&["run", &job]);
    wait_for("svc running", || all_running(&m, "svc", 2));
    let on_a = assigned_pods(&a);
    assert_eq!(on_a.len(), 1);

    // kill -9: its pods run on unsupervised by the agent, the master moves them.
    a.stop_agent(libc::SIGKILL);
    wait_for("n1 lost", || m.node_state("n1").as_deref() == Some("lost"));
    wait_for("both on n2", || {
        let list = instances(&m, "svc");
        list.len() == 2
            && list
                .iter()
                .all(|i| i["node"] == "n2" && i["state"] == "running")
    });
    assert_eq!(assigned_pods(&b).len(), 2);
    let moved: Vec<_> = instances(&m, "svc")
        .into_iter()
        .filter(|i| i["incarnation"] == 2)
        .collect();
    assert_eq!(moved.len(), 1, "one instance was placed again");

    // Back: its stale copy is stopped (the generation moved on), nothing runs twice.
    let args = m.agent_args("n1");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    a.start_agent(&refs);
    wait_for("n1 ready", || {
        m.node_state("n1").as_deref() == Some("ready")
    });
    wait_for("the stale copy to stop", || assigned_pods(&a).is_empty());
    assert_eq!(assigned_pods(&b).len(), 2);
    let events = m.ok(&["events"]);
    assert!(events.contains("node lost n1"), "{events}");
    assert!(events.contains("node returned n1"), "{events}");

    // Drain: n2's pods move to n1, nothing new lands on n2.
    m.ok(&["drain", "n2"]);
    wait_for("drained to n1", || {
        let list = instances(&m, "svc");
        list.iter()
            .all(|i| i["node"] == "n1" && i["state"] == "running")
    });
    wait_for("n2 empty", || assigned_pods(&b).is_empty());
    assert_eq!(m.node_state("n2").as_deref(), Some("draining"));
    m.clear(&[&a, &b]);
}

#[test]
fn with_the_master_down_pods_run_and_restart_and_a_restarted_master_loses_nothing() {
    let mut m = Master::start(&FAST);
    let a = m.agent("n1", &["--restart-backoff", "100ms"]);
    let job = job_file(
        &a,
        "crash",
        "name: crash\ncount: 2\ncontainers: [{name: c, image: busybox, command: [sh, -c, 'sleep 0.3; exit 3']}]\n",
    );
    m.ok(&["run", &job]);
    wait_for("crash assigned", || assigned_pods(&a).len() == 2);
    let ids: Vec<String> = assigned_pods(&a)
        .iter()
        .map(|p| pod_json(&a, p)["id"].as_str().unwrap().to_string())
        .collect();
    m.stop(libc::SIGKILL);
    // The agent's restart policy keeps acting without the master.
    let restarts = |a: &Root| -> u64 {
        assigned_pods(a)
            .iter()
            .map(|p| {
                pod_json(a, p)["members"]["c"]["restart_count"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0)
    };
    let before = restarts(&a);
    wait_for("restarts with the master down", || {
        restarts(&a) >= before + 2
    });
    assert_eq!(assigned_pods(&a).len(), 2);

    m.run();
    wait_for("n1 heard again", || {
        m.json(&["nodes"])[0]["last_heartbeat_ms"]
            .as_u64()
            .is_some()
    });
    let list = instances(&m, "crash");
    assert_eq!(list.len(), 2);
    assert!(
        list.iter()
            .all(|i| i["node"] == "n1" && i["incarnation"] == 1),
        "{list:?}"
    );
    // The same pods: none recreated, none doubled.
    assert!(poll_until(|| {
        let now: Vec<String> = assigned_pods(&a)
            .iter()
            .filter_map(|p| pod_json(&a, p)["id"].as_str().map(String::from))
            .collect();
        now == ids
    }));
    m.clear(&[&a]);
}

#[test]
fn a_revocable_job_lands_only_where_the_estimate_allows() {
    let mut m = Master::start(&FAST);
    // n1 offers its slack at once (no warm-up): 60% of 2 CPUs; n2 still warms up: none.
    let a = m.agent(
        "n1",
        &[
            "--capacity-cpu",
            "2",
            "--capacity-memory",
            "1g",
            "--revocable-warmup",
            "0s",
        ],
    );
    let b = m.agent("n2", &["--capacity-cpu", "2", "--capacity-memory", "1g"]);
    let job = job_file(
        &a,
        "batch",
        "name: batch\ncount: 3\nqos: revocable\nterminationGracePeriodSeconds: 1\ncontainers:\n  - name: c\n    \
         image: busybox\n    command: [sleep, '1000']\n    resources: {requests: {cpu: 500m, memory: 16Mi}}\n",
    );
    wait_for("n1's estimate reported", || {
        m.json(&["nodes"]).as_array().unwrap().iter().any(|n| {
            n["registration"]["node_name"] == "n1"
                && n["usage"]["revocable_free"]["millicpu"]
                    .as_u64()
                    .unwrap_or(0)
                    >= 1000
        })
    });
    let view: serde_json::Value = serde_json::from_str(&m.ok(&["run", "--json", &job])).unwrap();
    assert_eq!(view["qos"], "revocable");
    wait_for("two running on n1, one pending", || {
        let list = instances(&m, "batch");
        let running: Vec<_> = list.iter().filter(|i| i["state"] == "running").collect();
        running.len() == 2
            && running.iter().all(|i| i["node"] == "n1")
            && list.iter().any(|i| {
                i["state"] == "pending"
                    && i["message"].as_str().is_some_and(|s| {
                        s.contains("n2: needs 500m CPU, 0m CPU revocable free")
                            && s.contains("n1: needs 500m CPU")
                    })
            })
    });
    assert!(assigned_pods(&b).is_empty());
    for p in assigned_pods(&a) {
        assert_eq!(pod_json(&a, &p)["qos"], "revocable");
    }
    m.clear(&[&a, &b]);
}
