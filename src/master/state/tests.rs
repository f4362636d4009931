#![allow(clippy::unwrap_used)]
use super::*;
use berth_api::cluster::{PodReport, Strategy};

fn cluster(dir: &std::path::Path, timeout: Duration) -> Cluster {
    let store: Arc<dyn Store> =
        Arc::new(super::super::store::Embedded::open(&dir.join("s.redb")).unwrap());
    let timing = Timing {
        node_timeout: timeout,
        heartbeat_floor: Duration::from_millis(100),
        heartbeats_per_second: 1000.0,
    };
    Cluster::load(store, timing, Duration::ZERO).unwrap()
}

fn node(name: &str) -> Registration {
    Registration {
        node_name: name.into(),
        allocatable: Amount {
            millicpu: 2000,
            memory: 1 << 30,
        },
        ..Default::default()
    }
}

fn job(count: u32) -> JobSpec {
    let (mut spec, _) = berth_api::cluster::parse_job(
        "name: j\ncontainers: [{name: c, image: busybox, resources: {requests: {cpu: 100m}}}]\n",
    )
    .unwrap();
    spec.count = count;
    spec.strategy = Strategy::Spread;
    spec
}

fn report(c: &mut Cluster, node: &str, instance: &str, state: ReportedState) -> HeartbeatReply {
    let hb = Heartbeat {
        generation: 0,
        usage: UsageReport::default(),
        pods: vec![PodReport {
            instance: instance.into(),
            state,
            message: Some("why".into()),
        }],
        wait_ms: None,
    };
    c.heartbeat(node, hb).unwrap()
}

#[test]
fn revoked_and_refused_instances_move_lost_nodes_lose_theirs_and_restarts_keep_placements() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path(), Duration::from_secs(60));
    c.register(node("a")).unwrap();
    c.register(node("b")).unwrap();
    c.submit(job(2), Some("burstable".into())).unwrap();
    assert_eq!(c.place().unwrap(), 2);
    let on_a = c.desired("a");
    assert_eq!(on_a.len(), 1);
    assert_eq!(on_a[0].pod.labels[INSTANCE_LABEL], on_a[0].instance);
    let first = on_a[0].instance.clone();

    // Revoked on a: a new incarnation, placed again (a and b each hold one: spread).
    let before = c.nodes.get("a").unwrap().generation;
    report(&mut c, "a", &first, ReportedState::Revoked);
    assert!(c.nodes.get("a").unwrap().generation > before);
    assert!(c.desired("a").is_empty());
    c.place().unwrap();
    let again: Vec<String> = c
        .instances(None)
        .iter()
        .map(|i| i.instance.clone())
        .collect();
    assert!(
        again.contains(&"j.0.2".to_string()) || again.contains(&"j.1.2".to_string()),
        "{again:?}"
    );
    // A stale report of the old incarnation changes nothing.
    let reply = report(&mut c, "a", &first, ReportedState::Failed);
    assert!(reply.desired.is_some());

    // Refused on its node: never placed there again.
    let (node_of, uid) = c
        .instances(None)
        .into_iter()
        .find(|i| i.incarnation == 2)
        .map(|i| (i.node.unwrap(), i.instance))
        .unwrap();
    report(&mut c, &node_of, &uid, ReportedState::Refused);
    c.place().unwrap();
    let moved = c
        .instances(None)
        .into_iter()
        .find(|i| i.incarnation == 3)
        .unwrap();
    assert_ne!(moved.node.as_deref(), Some(node_of.as_str()));

    // Placements survive a restart of the master.
    let placed: Vec<(String, Option<String>)> = c
        .instances(None)
        .into_iter()
        .map(|i| (i.instance, i.node))
        .collect();
    drop(c);
    let mut c = cluster(dir.path(), Duration::from_millis(1));
    let again: Vec<(String, Option<String>)> = c
        .instances(None)
        .into_iter()
        .map(|i| (i.instance, i.node))
        .collect();
    assert_eq!(placed, again);

    // Silent past the timeout: both nodes lost, nothing placed on them.
    std::thread::sleep(Duration::from_millis(5));
    c.check_liveness().unwrap();
    assert!(c.nodes().iter().all(|n| n.state == NodeState::Lost));
    c.place().unwrap();
    assert!(c.instances(None).iter().all(|i| i.node.is_none()));
    assert!(c.events(0).iter().any(|e| e.action == "lost"));

    // Removing the job empties every desired set.
    c.remove("j").unwrap();
    assert!(c.desired("a").is_empty() && c.desired("b").is_empty());
    assert!(c.instances(None).is_empty());
}
