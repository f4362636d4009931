//! Berth's wire types: what the agent's HTTP/JSON API (`/v1`, docs/api.md) accepts and
//! answers, shared by the agent, the CLI and (later) the central allocator.
//!
//! Requests (`TaskSpec`, `PodSpec` and the query types) are what a client sends; views
//! (`ContainerView`, `PodView`, `ImageView`, …) are what the agent answers. Views are built
//! by the agent from its on-disk records, which stay private to it: a change of the disk
//! format is not an API change. Every type here is plain data with its parsers and checks,
//! so this crate stays light (no runtime, no image store).
//!
//! Compatibility within `/v1`: fields may be added (clients ignore the ones they do not
//! know, and every new field has a default); none is removed or changes meaning.

/// The attach stream's frames (`shim.sock`, and the agent's attach endpoints byte for byte).
pub mod attach;
/// The cluster API of `berth master`: joining, registration, heartbeats with the usage
/// report and the desired set, jobs, instances, nodes, events, `admin.json`.
pub mod cluster;
/// Containers: the view `ps`/`state`/`inspect` show, its exit, and the verbs' queries.
pub mod container;
/// Error answers: a machine-readable code beside a human message.
pub mod error;
/// Lifecycle events (`GET /v1/events`, and each line of the agent's events journal).
pub mod event;
/// Health checks: probe kinds, timing, the healthy/unhealthy state a container shows.
pub mod health;
/// Images: pull/import/remove requests, the progress stream, the image view.
pub mod image;
/// The container log record format (CRI) that `logs` streams.
pub mod logs;
/// Network modes (`none`, `host`, CNI networks), published ports, and the views of
/// networks and attachments.
pub mod network;
/// The node's resource model (`GET /v1/node`): capacity, reserve, allocatable, per-tier
/// allocation and use, the revocable estimate, pressure, reclaim state.
pub mod node;
/// Pod specs (JSON/YAML, kubelet field names) checked field by field, QoS classes, the pod
/// view.
pub mod pod;
/// Resource usage of a container's cgroup (`stats`).
pub mod stats;
/// The task spec (Docker's options) with parsers and validation.
pub mod task;
/// User namespaces per task: `--userns`/`hostUsers` and the id range a task was given.
pub mod userns;

pub use container::{ContainerView, ExitView, Status};
pub use error::{ErrorBody, ErrorCode};
pub use event::Event;
pub use image::ImageView;
pub use node::NodeView;
pub use pod::PodView;
