//! The cost of the cluster protocol's JSON: a heartbeat of a node with 10 pods and an
//! answer carrying a desired set of 10 pods, each encoded and decoded, in µs per message
//! and bytes. Set against the master's whole cost per heartbeat (TLS, HTTP, state; from
//! `integration/bench/cluster.sh`), it bounds what a binary encoding could save.
//!
//!   cargo bench -p berth-api --bench wire [-- ITERATIONS]

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use berth_api::cluster::{
    parse_job, Amount, Assignment, Heartbeat, HeartbeatReply, PodReport, ReportedState, UsageReport,
};

fn main() {
    let iterations: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let amount = Amount {
        millicpu: 1500,
        memory: 3 << 30,
    };
    let heartbeat = Heartbeat {
        generation: 123_456,
        usage: UsageReport {
            allocated: amount,
            allocated_revocable: amount,
            used: amount,
            revocable_free: amount,
            pressure: Some((1.25, 0.5)),
        },
        pods: (0..10)
            .map(|i| PodReport {
                instance: format!("web-{i}-1"),
                state: ReportedState::Running,
                message: None,
            })
            .collect(),
        wait_ms: Some(10_000),
    };
    let (job, _) = parse_job(
        "name: web\ncount: 10\ncontainers:\n  - {name: c, image: 127.0.0.1:5000/busybox, command: [sleep, '1000'], resources: {requests: {cpu: 100m, memory: 64Mi}}}\n",
    )
    .expect("a job");
    let reply = HeartbeatReply {
        generation: 123_457,
        desired: Some(
            (0..10)
                .map(|i| Assignment {
                    instance: format!("web-{i}-1"),
                    pod: job.pod.clone(),
                })
                .collect(),
        ),
        heartbeat_ms: 10_000,
    };
    println!("message | bytes | encode µs | decode µs");
    measure("heartbeat, 10 pods", &heartbeat, iterations);
    measure("answer, desired set of 10 pods", &reply, iterations);
}

fn measure<T: serde::Serialize + serde::de::DeserializeOwned>(
    label: &str,
    value: &T,
    iterations: u32,
) {
    let bytes = serde_json::to_vec(value).expect("encode");
    let t = Instant::now();
    for _ in 0..iterations {
        black_box(serde_json::to_vec(black_box(value)).expect("encode"));
    }
    let encode = t.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);
    let t = Instant::now();
    for _ in 0..iterations {
        black_box(serde_json::from_slice::<T>(black_box(&bytes)).expect("decode"));
    }
    let decode = t.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);
    println!("{label} | {} | {encode:.2} | {decode:.2}", bytes.len());
}
