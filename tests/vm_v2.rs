//! The cgroup v2 lane: this machine is hybrid v1, production hosts are mostly pure v2. The
//! built `berth` and `berth-monitor` boot with Debian's kernel under qemu (cgroup2 as the
//! only hierarchy, `integration/vm/v2.sh`) and run `integration/vm/v2-checks.sh`: the agent
//! in a cgroup of its own as systemd leaves it (it moves into a leaf to delegate), limits
//! read back, the OOM reason, stats, the pods' QoS tiers, and every reclaim step on the v2
//! files. A second boot puts the data root on a loop ext4 with project quotas
//! (`integration/vm/disk-checks.sh`): disk budgets enforced by the kernel (EDQUOT) and user
//! namespaces there. Fails loudly when qemu or the kernel cannot be had (never skipped).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::path::Path;

/// Boots the lane with `checks` (default: v2-checks.sh) and `env`; its stdout and a report.
fn boot(checks: Option<&str>, env: &[(&str, &str)]) -> (String, String) {
    common::require_root();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_berth")).parent().unwrap();
    assert!(
        bin_dir.join("berth-monitor").is_file(),
        "berth-monitor is not built beside berth"
    );
    let layout = common::fixtures().join("busybox-oci");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(repo.join("integration/vm/v2.sh"))
        .arg(bin_dir)
        .arg(&layout)
        .envs(env.iter().copied());
    if let Some(c) = checks {
        cmd.arg(repo.join("integration/vm").join(c));
    }
    let out = cmd
        .output()
        .expect("running integration/vm/v2.sh (needs qemu-system-x86: scripts/setup.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = format!("--- vm stdout\n{stdout}\n--- vm stderr\n{stderr}");
    assert!(out.status.success(), "the VM lane failed to run\n{report}");
    (stdout, report)
}

/// Every check printed "ok", none "FAIL", and the script ended with 0.
fn expect_checks(stdout: &str, report: &str, checks: &[&str]) {
    for check in checks {
        assert!(
            stdout.lines().any(|l| l.starts_with(check)),
            "missing {check:?}\n{report}"
        );
    }
    assert!(!stdout.contains("FAIL"), "{report}");
    assert!(stdout.contains("=== checks ended rc=0"), "{report}");
    println!("{stdout}");
}

#[test]
fn disk_budgets_are_the_kernels_on_ext4_with_project_quotas() {
    let (stdout, report) = boot(Some("disk-checks.sh"), &[("BERTH_VM_EXT4_MB", "128")]);
    let checks = [
        "ok ext4 with project quotas",
        "ok check reports quotas",
        "ok node says project-quota",
        "ok EDQUOT past the budget",
        "ok neighbour measured",
        "ok neighbour unaffected",
        "ok agent and store keep working",
        "ok pod emptyDir budget",
        "ok userns on v2",
    ];
    expect_checks(&stdout, &report, &checks);
}

#[test]
fn limits_oom_tiers_and_every_reclaim_step_on_pure_cgroup_v2() {
    let (stdout, report) = boot(None, &[]);
    let checks = [
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
    ];
    expect_checks(&stdout, &report, &checks);
}
