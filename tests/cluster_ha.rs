//! Several `berth master`s on a 3-member etcd of the test's own: leader election and
//! failover (kill -9, SIGSTOP), the fencing of a paused leader, etcd member and quorum loss,
//! `master migrate` both ways, and the dashboard in headless Chromium. Real processes,
//! real TLS, real pods. Root only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use common::cluster::{assigned_pods, Master};
use common::etcd::Etcd;
use common::{pod_json, poll_until, wait_for, write_spec, Root};

const FAST: [&str; 6] = [
    "--node-timeout",
    "4s",
    "--heartbeat-floor",
    "200ms",
    "--lease-ttl",
    "3s",
];

/// A master on `etcd` named `name`.
fn ha_master(etcd: &Etcd, name: &str) -> Master {
    let e = etcd.endpoints();
    let mut args: Vec<&str> = FAST.to_vec();
    args.extend(["--etcd-endpoints", &e, "--name", name]);
    Master::start_with(&["--etcd-endpoints", &e], &args)
}

/// An agent that knows every master.
fn agent(masters: &[&Master], name: &str) -> Root {
    let urls: Vec<String> = masters.iter().map(|m| m.url()).collect();
    let mut args = masters[0].agent_args(name);
    args[1] = urls.join(",");
    args.extend(["--restart-backoff".into(), "100ms".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let root = Root::with_agent_args(&refs);
    common::import(&root);
    assert!(
        poll_until(|| masters[0].node_state(name).as_deref() == Some("ready")),
        "{name} did not register: {}",
        root.agent_log()
    );
    root
}

fn status(m: &Master) -> serde_json::Value {
    m.json(&["status"])
}

fn leader(m: &Master) -> Option<String> {
    let out = m.cluster(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["leader"]["name"].as_str().map(String::from)
}

fn instances(m: &Master, job: &str) -> Vec<serde_json::Value> {
    m.json(&["ps", job]).as_array().cloned().unwrap_or_default()
}

fn all_running(m: &Master, job: &str, count: usize) -> bool {
    let out = m.cluster(&["ps", job, "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list.len() == count && list.iter().all(|i| i["state"] == "running")
}

fn job(root: &Root, name: &str, count: u32) -> String {
    write_spec(
        root,
        &format!("job-{name}"),
        &format!(
            "name: {name}\ncount: {count}\ncontainers: [{{name: c, image: busybox, command: [sleep, '600'], resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}}}]\n"
        ),
    )
}

/// Pod ids of every assigned pod on `agents` (sorted).
fn pod_ids(agents: &[&Root]) -> Vec<String> {
    let mut ids: Vec<String> = agents
        .iter()
        .flat_map(|a| {
            assigned_pods(a)
                .into_iter()
                .map(|p| {
                    pod_json(a, &p)["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    ids.sort();
    ids
}

/// The master an agent follows, as `berth node` shows it.
fn follows(a: &Root) -> Option<(String, bool)> {
    let out = a.run(&["node", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((
        v["cluster"]["master"].as_str()?.to_string(),
        v["cluster"]["connected"].as_bool()?,
    ))
}

#[test]
fn a_killed_or_paused_leader_is_replaced_and_no_pod_is_lost_or_doubled() {
    let etcd = Etcd::start(3);
    let mut m1 = ha_master(&etcd, "m1");
    let m2 = ha_master(&etcd, "m2");
    assert_eq!(leader(&m1).as_deref(), Some("m1"));
    let s = status(&m2);
    assert_eq!(s["store"]["kind"], "etcd");
    assert_eq!(s["masters"].as_array().map(Vec::len), Some(2), "{s}");
    assert!(s["leader_since"].is_string(), "{s}");
    let agents: Vec<Root> = (1..=3)
        .map(|i| agent(&[&m1, &m2], &format!("n{i}")))
        .collect();
    let a: Vec<&Root> = agents.iter().collect();
    m1.ok(&["run", &job(&agents[0], "web", 3)]);
    wait_for("web running", || all_running(&m1, "web", 3));
    let before = pod_ids(&a);
    assert_eq!(before.len(), 3);

    // kill -9 the leader: m2 leads within the lease, the agents follow it.
    m1.stop(libc::SIGKILL);
    wait_for("m2 leads", || leader(&m2).as_deref() == Some("m2"));
    for ag in &agents {
        wait_for("the agent follows m2", || {
            follows(ag) == Some((m2.url(), true))
        });
    }
    assert!(all_running(&m2, "web", 3));
    assert!(instances(&m2, "web").iter().all(|i| i["incarnation"] == 1));
    assert_eq!(pod_ids(&a), before, "a pod was lost or started twice");

    // The old leader comes back as a follower.
    m1.run();
    assert_eq!(leader(&m1).as_deref(), Some("m2"));

    // SIGSTOP the leader: m1 takes over; a job placed now stays as placed when m2 wakes.
    m2.signal(libc::SIGSTOP);
    wait_for("m1 leads", || leader(&m1).as_deref() == Some("m1"));
    m1.ok(&["run", &job(&agents[0], "late", 2)]);
    wait_for("late running", || all_running(&m1, "late", 2));
    let placed: Vec<serde_json::Value> = instances(&m1, "late");
    m2.signal(libc::SIGCONT);
    wait_for("m2 steps down", || {
        m2.log().contains("no longer the leader")
    });
    assert_eq!(leader(&m2).as_deref(), Some("m1"));
    assert_eq!(instances(&m1, "late"), placed);
    assert_eq!(pod_ids(&a).len(), 5);
    m1.clear(&a);
}

#[test]
fn losing_one_etcd_member_changes_nothing_and_losing_quorum_refuses_writes_only() {
    let mut etcd = Etcd::start(3);
    let mut m = ha_master(&etcd, "m1");
    let a = agent(&[&m], "n1");
    m.ok(&["run", &job(&a, "one", 1)]);
    wait_for("one running", || all_running(&m, "one", 1));

    etcd.kill(2);
    m.ok(&["run", &job(&a, "two", 1)]);
    wait_for("two running with a member down", || {
        all_running(&m, "two", 1)
    });

    let ids = pod_ids(&[&a]);
    etcd.kill(1);
    // No quorum: writes are refused with a clear error (the leader steps down when its
    // lease cannot be kept; before that a commit fails as unavailable).
    wait_for("writes refused", || {
        let out = m.cluster(&["run", &job(&a, "three", 1)]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        !out.status.success() && (err.contains("unavailable") || err.contains("no master leads"))
    });
    // The agent keeps its pods running, untouched.
    for _ in 0..20 {
        assert_eq!(pod_ids(&[&a]), ids);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(assigned_pods(&a)
        .iter()
        .all(|p| pod_json(&a, p)["phase"] == "running"));

    etcd.run(1);
    etcd.run(2);
    etcd.wait_writable();
    wait_for("a leader again", || leader(&m).as_deref() == Some("m1"));
    // A commit that timed out while the quorum was lost may have been applied when it came
    // back (etcd's rule): `three` is then there, placed and running, exactly once.
    let mut last = String::new();
    let accepted = poll_until(|| {
        let out = m.cluster(&["run", &job(&a, "four", 1)]);
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success()
    });
    assert!(accepted, "writes not accepted again: {last}\n{}", m.log());
    wait_for("four running", || all_running(&m, "four", 1));
    let three = m.cluster(&["ps", "three", "--json"]);
    let three: Vec<serde_json::Value> = serde_json::from_slice(&three.stdout).unwrap_or_default();
    if !three.is_empty() {
        wait_for("three running", || all_running(&m, "three", 1));
    }
    assert_eq!(pod_ids(&[&a]).len(), 3 + three.len());
    m.clear(&[&a]);
}

/// After a migration: the master serves from `store`, the agent reports to it, and jobs,
/// instances and the agent's pods are what they were.
fn same_cluster_on(m: &Master, store: &str, jobs: &serde_json::Value, a: &Root, ids: &[String]) {
    assert_eq!(status(m)["store"]["kind"], store);
    wait_for("n1 heard by the migrated master", || {
        m.json(&["nodes"])[0]["last_heartbeat_ms"]
            .as_u64()
            .is_some()
    });
    assert!(all_running(m, "kept", 2));
    assert_eq!(&m.json(&["ls"]), jobs);
    assert_eq!(pod_ids(&[a]), ids);
}

#[test]
fn migrate_copies_a_cluster_into_etcd_and_back_without_touching_its_pods() {
    let etcd = Etcd::start(3);
    let e = etcd.endpoints();
    let mut m = Master::start(&FAST[..4]);
    let a = m.agent("n1", &[]);
    m.ok(&["run", &job(&a, "kept", 2)]);
    wait_for("kept running", || all_running(&m, "kept", 2));
    let ids = pod_ids(&[&a]);
    let jobs = m.json(&["ls"]);

    // Embedded → etcd: the same root, address and identity; agents notice nothing.
    m.stop(libc::SIGTERM);
    let listen = m.listen.clone();
    let migrate = |root: &std::path::Path, to: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("--root")
            .arg(root)
            .args(["master", "migrate", "--to", to, "--etcd-endpoints", &e])
            .args(["--listen", &listen])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "migrate --to {to}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(migrate(m.path(), "etcd").contains("copied"));
    // A second copy into the same etcd is refused: a copy never merges.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--root")
        .arg(m.path())
        .args(["master", "migrate", "--to", "etcd", "--etcd-endpoints", &e])
        .output()
        .unwrap();
    assert!(!again.status.success());
    m.set_args(&[&FAST[..], &["--etcd-endpoints", &e, "--name", "m1"]].concat());
    m.run();
    same_cluster_on(&m, "etcd", &jobs, &a, &ids);

    // etcd → a fresh embedded root.
    m.stop(libc::SIGTERM);
    let back = tempfile::tempdir().unwrap();
    assert!(migrate(back.path(), "embedded").contains("copied"));
    m.move_root(back);
    m.set_args(&FAST[..4]);
    m.run();
    same_cluster_on(&m, "embedded", &jobs, &a, &ids);
    m.clear(&[&a]);
}

#[test]
fn the_dashboard_shows_every_node_and_pod_in_headless_chromium() {
    let etcd = Etcd::start(3);
    let m = ha_master(&etcd, "m1");
    let agents: Vec<Root> = (1..=2).map(|i| agent(&[&m], &format!("d{i}"))).collect();
    let mut m = m;
    m.ok(&["run", &job(&agents[0], "shown", 3)]);
    wait_for("shown running", || all_running(&m, "shown", 3));
    let link = m.ok(&["dashboard"]).trim().to_string();
    assert!(link.contains("/dashboard?session="), "{link}");
    // Without the session the page is refused.
    let bare = link.split('?').next().unwrap().to_string();
    let shot = m.path().join("dashboard.png");
    let chromium = |extra: &[&str], url: &str| {
        std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--ignore-certificate-errors",
            ])
            .arg(format!(
                "--user-data-dir={}",
                m.path().join("chromium").display()
            ))
            .args(["--virtual-time-budget=3000", "--window-size=1400,1000"])
            .args(extra)
            .arg(url)
            .output()
            .expect("chromium (Debian chromium; scripts/setup.sh installs it)")
    };
    let refused = chromium(&["--dump-dom"], &bare);
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("data-node"));
    let out = chromium(&["--dump-dom"], &link);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    for n in ["d1", "d2"] {
        assert!(
            dom.contains(&format!("data-node=\"{n}\"")),
            "{n} missing: {dom}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for i in instances(&m, "shown") {
        let uid = i["instance"].as_str().unwrap();
        assert!(
            dom.contains(&format!("data-pod=\"{uid}\"")),
            "{uid} missing: {dom}"
        );
    }
    assert!(dom.contains("data-job=\"shown\""));
    assert!(dom.contains("class=\"event\""));
    let out = chromium(&[&format!("--screenshot={}", shot.display())], &link);
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Ok(dir) = std::env::var("BERTH_SCREENSHOT_DIR") {
        let _ = std::fs::copy(&shot, std::path::Path::new(&dir).join("dashboard.png"));
    }
    // A lost node is highlighted.
    let mut agents = agents;
    agents[1].stop_agent(libc::SIGKILL);
    wait_for("d2 lost", || m.node_state("d2").as_deref() == Some("lost"));
    let dom = chromium(&["--dump-dom"], &link);
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        dom.contains("class=\"node lost\" data-node=\"d2\""),
        "{dom}"
    );
    let a: Vec<&Root> = agents.iter().collect();
    m.clear(&a);
}
