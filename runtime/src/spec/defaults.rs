//! Docker's defaults for a container: capabilities, masked and read-only `/proc` paths, the
//! standard mounts and the device cgroup rules.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, Mount};

use super::SpecError;

/// Docker's default capability set (moby `oci/caps/defaults.go`), `CAP_*` names.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths hidden from the container (a read of them gives nothing).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths mounted read-only over the writable `/proc`.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest))
        .set_typ(Some(typ.to_string()))
        .set_source(Some(PathBuf::from(source)))
        .set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

/// `/proc`, `/dev`, `/dev/pts`, `/dev/shm`, `/dev/mqueue`, `/sys` (read-only) as Docker mounts
/// them.
pub fn standard_mounts() -> Vec<Mount> {
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    ]
}

/// A bind mount of a host file or directory.
pub fn bind(source: PathBuf, dest: PathBuf, read_only: bool) -> Mount {
    let mut m = Mount::default();
    let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
    if read_only {
        options.push("ro".to_string());
    }
    m.set_destination(dest)
        .set_typ(Some("bind".to_string()))
        .set_source(Some(source))
        .set_options(Some(options));
    m
}

/// A tmpfs with Docker's `--tmpfs` defaults (`noexec,nosuid,nodev`) plus the user's options.
pub fn tmpfs(dest: PathBuf, extra: &[String]) -> Mount {
    let mut options: Vec<String> = ["noexec", "nosuid", "nodev"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for o in extra {
        // A user option replaces its negation among the defaults (`exec` beats `noexec`).
        options.retain(|d| d.strip_prefix("no") != Some(o.as_str()));
        options.push(o.clone());
    }
    let mut m = Mount::default();
    m.set_destination(dest)
        .set_typ(Some("tmpfs".to_string()))
        .set_source(Some(PathBuf::from("tmpfs")))
        .set_options(Some(options));
    m
}

fn device_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, SpecError> {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access(access.to_string());
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().map_err(SpecError::build)
}

/// Device cgroup: deny everything, then allow what Docker allows (the standard character
/// devices, ptys, tun, and `mknod` of any device node).
pub fn device_rules() -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    use LinuxDeviceType::{A, B, C};
    Ok(vec![
        device_rule(false, A, None, None, "rwm")?,
        device_rule(true, C, None, None, "m")?,
        device_rule(true, B, None, None, "m")?,
        device_rule(true, C, Some(1), Some(3), "rwm")?, // null
        device_rule(true, C, Some(1), Some(5), "rwm")?, // zero
        device_rule(true, C, Some(1), Some(7), "rwm")?, // full
        device_rule(true, C, Some(1), Some(8), "rwm")?, // random
        device_rule(true, C, Some(1), Some(9), "rwm")?, // urandom
        device_rule(true, C, Some(5), Some(0), "rwm")?, // tty
        device_rule(true, C, Some(5), Some(1), "rwm")?, // console
        device_rule(true, C, Some(5), Some(2), "rwm")?, // ptmx
        device_rule(true, C, Some(136), None, "rwm")?,  // pts/*
        device_rule(true, C, Some(10), Some(200), "rwm")?, // net/tun
    ])
}
