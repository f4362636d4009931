//! The cgroup v2 lane: this machine is hybrid v1, production hosts are mostly pure v2. The
//! built `berth` and `berth-monitor` boot with Debian's kernel under qemu (cgroup2 as the
//! only hierarchy, `integration/vm/v2.sh`) and run `integration/vm/v2-checks.sh`: the agent
//! in a cgroup of its own as systemd leaves it (it moves into a leaf to delegate), limits
//! read back, the OOM reason, stats, the pods' QoS tiers, and every reclaim step on the v2
//! files. Fails loudly when qemu or the kernel cannot be had (never skipped).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::path::Path;

#[test]
fn limits_oom_tiers_and_every_reclaim_step_on_pure_cgroup_v2() {
    common::require_root();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_berth")).parent().unwrap();
    assert!(
        bin_dir.join("berth-monitor").is_file(),
        "berth-monitor is not built beside berth"
    );
    let layout = common::fixtures().join("busybox-oci");
    let out = std::process::Command::new("bash")
        .arg(repo.join("integration/vm/v2.sh"))
        .arg(bin_dir)
        .arg(&layout)
        .output()
        .expect("running integration/vm/v2.sh (needs qemu-system-x86: scripts/setup.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = format!("--- vm stdout\n{stdout}\n--- vm stderr\n{stderr}");
    assert!(out.status.success(), "the VM lane failed to run\n{report}");
    for check in [
        "ok pure cgroup2",
        "ok delegated leaf",
        "ok limits",
        "ok tier pressure",
        "ok stats",
        "ok oom-killed",
        "ok qos tiers",
        "ok no throttle alone",
        "ok throttle",
        "ok throttle undone",
        "ok memory-high",
        "ok freeze",
        "ok revoke",
        "ok guaranteed untouched",
        "ok memory steps undone",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(check)),
            "missing {check:?}\n{report}"
        );
    }
    assert!(!stdout.contains("FAIL"), "{report}");
    assert!(stdout.contains("=== checks ended rc=0"), "{report}");
    println!("{stdout}");
}
