//! The actions the API (and the owner's own tasks) send the node owner: one variant per
//! request or report, each with the reply channel its caller waits on.

use berth_runtime::state::NetworkStatus;
use tokio::sync::{mpsc, oneshot};

use super::error::ApiError;
use super::node::Handle;
use crate::api::{ContainerView, Created, ExecRequest, ImportQuery, ProgressLine, PullRequest};

/// Reply channel of an action.
pub type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// Everything the API can ask of the node.
#[derive(Debug)]
pub enum Action {
    /// Work the owner spawned is done: the rest of it, applied on the owner
    /// ([`super::node::Node::spawn`]). The name says what for the log.
    Continue(&'static str, super::node::Then),
    /// Answered once everything before it in the inbox (recovery's work first) is applied.
    Ready(Reply<()>),
    /// Pull an image; progress goes to `lines`.
    Pull(PullRequest, mpsc::Sender<ProgressLine>),
    /// A pull in flight ended (`images::pull_ended`).
    PullEnded(String),
    /// Import an archive or layout.
    Import(ImportQuery, mpsc::Sender<ProgressLine>),
    /// Image list.
    ListImages(Option<String>, Reply<Vec<crate::api::ImageView>>),
    /// Image inspect.
    InspectImage(String, Reply<serde_json::Value>),
    /// Image removal.
    RemoveImage(
        crate::api::RemoveImageRequest,
        Reply<crate::api::RemoveImageResponse>,
    ),
    /// Image GC.
    Prune(Reply<crate::api::PruneView>),
    /// Flattened rootfs copy.
    Rootfs(crate::api::RootfsRequest, Reply<()>),
    /// Create a container (its init waits for start).
    Create(Box<berth_runtime::task::TaskSpec>, Reply<Created>),
    /// Start a created container.
    Start(String, Reply<i32>),
    /// A connection to the container's supervisor for an attach client; with `start`,
    /// START is sent on it and the start recorded before the client hears back.
    Attach {
        /// Container.
        id: String,
        /// Start it (a created container).
        start: bool,
        /// The connection.
        reply: Reply<tokio::net::UnixStream>,
    },
    /// Look a container up (id, name or unique prefix).
    Resolve(String, Reply<Handle>),
    /// Stream a container's logs (`logs.rs`): the chunks' receiver.
    Logs(
        String,
        crate::api::LogsQuery,
        Reply<mpsc::Receiver<Vec<u8>>>,
    ),
    /// All containers.
    List(Reply<Vec<ContainerView>>),
    /// Send a signal to the init (or, with `all`, to every process of the cgroup).
    Kill {
        /// Container.
        id: String,
        /// Signal.
        signal: nix::sys::signal::Signal,
        /// Whole cgroup.
        all: bool,
        /// Reply.
        reply: Reply<()>,
    },
    /// SIGTERM, then after the grace period SIGKILL to the whole cgroup; answered once
    /// the container has exited.
    Stop(String, std::time::Duration, Reply<()>),
    /// Remove a stopped container (`force`: kill it first).
    Remove(String, bool, Reply<()>),
    /// Start an exec supervisor.
    Exec(String, Box<ExecRequest>, Reply<String>),
    /// A supervisor ended (or was found dead).
    ShimExited(String),
    /// Periodic check of supervisors the agent did not start itself.
    Tick,
    /// Time for a usage sample (`[revocable] sample_interval`, default 1 s).
    Sample,
    /// Start a pod.
    CreatePod(Box<berth_runtime::pod::PodSpec>, Reply<crate::api::PodView>),
    /// All pods.
    ListPods(Reply<Vec<crate::api::PodView>>),
    /// One pod (name, id or prefix).
    InspectPod(String, Reply<crate::api::PodView>),
    /// Stop a pod's containers (TERM, KILL after the timeout).
    StopPod(String, std::time::Duration, Reply<()>),
    /// Remove a pod (`force`: running too).
    RemovePod(String, bool, Reply<()>),
    /// A pod's sandbox task finished (`pod/sandbox.rs`).
    SandboxReady {
        /// Pod id.
        pod: String,
        /// What it made.
        made: super::pod::sandbox::SandboxMade,
        /// Why it stopped short.
        error: Option<ApiError>,
    },
    /// The network of a removed container is released (`remove.rs`).
    NetworkReleased(String),
    /// A pod's release task finished (`pod/teardown.rs`).
    PodReleased {
        /// Pod id.
        id: String,
        /// Its state dir is gone.
        released: bool,
        /// Everything went without an error.
        clean: bool,
        /// What follows.
        after: super::pod::teardown::After,
    },
    /// The network of a container being created is attached (or failed).
    NetworkReady {
        /// The new container's id.
        id: String,
        /// Its task.
        task: Box<berth_runtime::task::TaskSpec>,
        /// The attachment.
        result: Result<NetworkStatus, ApiError>,
        /// The `create` caller.
        reply: Reply<Created>,
    },
    /// The member loop follows another master, or lost or regained it.
    Member(crate::api::node::MemberView),
    /// The node's resource model (`GET /v1/node`).
    Node(Reply<crate::api::node::NodeView>),
    /// The CNI networks of the config dir.
    ListNetworks(Reply<Vec<super::network::NetworkInfo>>),
    /// CNI CHECK of a pod's or container's network (name, id or prefix of either).
    CheckNetwork(String, Reply<Vec<String>>),
    /// Tear down a pod found half-started.
    AbandonPod(String),
    /// Hand a recovered running pod's ended containers to its restart policy.
    ResumePod(String),
    /// A restart back-off ended (`backoff.rs`): restart unless the operator stopped or
    /// removed it meanwhile.
    Restart(super::backoff::Restart),
    /// The result of one health check.
    HealthResult {
        /// Container.
        id: String,
        /// Passed.
        ok: bool,
        /// Output or error.
        output: String,
    },
    /// Image GC by watermarks finished.
    GcDone,
    /// The numbers of one metrics scrape.
    Metrics(Reply<super::metrics::Snapshot>),
    /// Record an event from a task the owner spawned.
    Emit(super::events::Event),
    /// The journal so far and a live receiver (subscribed first: no event falls between).
    Events(
        Reply<(
            Vec<super::events::Event>,
            tokio::sync::broadcast::Receiver<super::events::Event>,
        )>,
    ),
}
