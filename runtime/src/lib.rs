//! Berth runtime: turns an image and a task spec into a running, limited container.
//!
//! The agent builds the spec and the rootfs and keeps the records; the supervisor (the
//! `berth` binary re-executed, single-threaded) is the only caller of libcontainer.

/// Cgroup paths below the agent's own cgroup, usage statistics, OOM counts, kill and
/// removal — through youki's libcgroups, on cgroup v1 and v2.
pub mod cgroups;
/// The usage estimator behind oversubscription: per task reservations (Borg) and the
/// node's slack (Koordinator), from periodic usage samples.
pub mod estimate;
/// Health checks: probe kinds, timing, the healthy/unhealthy state machine (wire types of
/// `berth_api`).
pub use berth_api::health;
/// The one reader of files an image controls: inside the root, regular files only, capped,
/// never waiting on a FIFO or opening a device.
pub mod image_file;
/// Container logs in the CRI format with size rotation, tail and follow.
pub mod logs;
/// Network modes (`none`, `host`, CNI networks) and published ports (`berth_api`).
pub use berth_api::network;
/// Pod specs (`berth_api::pod`) and the plan a spec turns into.
pub mod pod;
/// Disk budgets per task: project quotas where the file system keeps them, else measured
/// use (`du`-like walks).
pub mod quota;
/// Graded reclaim of the revocable tier: throttle, memory-high, freeze, revoke — a pure
/// state machine fed the same samples as the estimator, undone with hysteresis.
pub mod reclaim;
/// The overlayfs rootfs over layer snapshots (copy fallback), mount and unmount.
pub mod rootfs;
/// The once-a-second usage sample: per cgroup CPU time and working set, node-wide CPU,
/// memory available and PSI (read by hand: a few small files per container).
pub mod sample;
/// A pod's sandbox: network, IPC and UTS namespaces held open by bind mounts, the pod init.
pub mod sandbox;
/// A sandbox whose namespaces belong to a user namespace of the task's own.
pub mod sandbox_userns;
/// The OCI runtime spec from the image config and the task, on Docker's defaults.
pub mod spec;
/// On-disk records of a container (`container.json`, `exit.json`), pid identity.
pub mod state;
/// The per-container supervisor: libcontainer create/start/exec, I/O relay, exit record.
pub mod supervisor;
/// The knobs of a parent cgroup reclaim turns (CPU cap, memory push-back, freeze) and
/// the CPU set an agent keeps, written by hand on v1 and v2.
pub mod tier;
/// User namespaces on the host side: a namespace with a task's id mapping, idmapped bind
/// mounts of layers, the owner shift of a copied rootfs, the host probe.
pub mod userns;
/// The task spec (Docker's options) with parsers and validation (`berth_api::task`).
pub use berth_api::task;
