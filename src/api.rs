//! Request and response bodies of the agent's HTTP/JSON API (docs/api.md), shared by the
//! agent and the CLI client.

use berth_images::store::metadata::ImageRecord;
use berth_runtime::state::{ContainerRecord, ExitRecord, Status};
use serde::{Deserialize, Serialize};

/// An error answer: `{"code": ..., "message": ..., "exit_code": N}`. Clients act on `code`
/// (never on the message's text); `exit_code` is the code `berth run` should exit with
/// (Docker's 125/126/127) when the error is about starting a process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What kind of error, for programs.
    #[serde(default)]
    pub code: ErrorCode,
    /// Human-readable, lowercase.
    pub message: String,
    /// Exit code for the CLI.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The id, name, image reference or path the error is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about: Option<String>,
}

/// The machine-readable kind of an API error. New codes may appear: clients treat one they
/// do not know as `unknown` and fall back on the HTTP status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or a value is out of range (400).
    InvalidRequest,
    /// The image is not in the store: pull it (404).
    NoSuchImage,
    /// No container has that id, name or prefix (404).
    NoSuchContainer,
    /// No pod has that id, name or prefix (404).
    NoSuchPod,
    /// Something else named in the request does not exist (404).
    NotFound,
    /// An id prefix matches more than one object (400).
    Ambiguous,
    /// A name is taken already (409).
    NameInUse,
    /// The object is not in a state that allows the request (409).
    Conflict,
    /// The command does not exist in the container (Docker's exit code 127).
    CommandNotFound,
    /// The command exists but cannot be executed (Docker's exit code 126).
    CommandNotExecutable,
    /// The request body is over the size limit (413).
    PayloadTooLarge,
    /// The agent is at a limit (connections) or shutting down; retry later (503).
    Unavailable,
    /// The node ran out of disk space (507).
    NoSpace,
    /// The agent failed (500).
    Internal,
    /// A code this client does not know.
    #[default]
    #[serde(other)]
    Unknown,
}

/// `POST /v1/images/pull`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PullRequest {
    /// Image reference.
    pub reference: String,
    /// `os/arch[/variant]`.
    #[serde(default)]
    pub platform: Option<String>,
    /// Registries spoken to over plain HTTP.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// `USER:PASSWORD`.
    #[serde(default)]
    pub creds: Option<String>,
    /// Docker config file with `auths`.
    #[serde(default)]
    pub authfile: Option<std::path::PathBuf>,
    /// Unpack limit per layer, bytes.
    #[serde(default)]
    pub max_layer_bytes: Option<u64>,
}

/// `POST /v1/images/import` (query string). The archive is the request body, or `path`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImportQuery {
    /// A path the agent reads (directory or archive); absent = the body is the archive.
    #[serde(default)]
    pub path: Option<String>,
    /// Name to give the image.
    #[serde(default)]
    pub tag: Option<String>,
    /// Platform to pick from an index.
    #[serde(default)]
    pub platform: Option<String>,
    /// Unpack limit per layer, bytes.
    #[serde(default)]
    pub max_layer_bytes: Option<u64>,
}

/// One line of the NDJSON stream of a pull or import.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressLine {
    /// A progress event.
    Progress(berth_images::progress::Event),
    /// An image was stored (the last line of a pull; one per image of an import).
    Image(Box<ImageRecord>),
    /// The operation failed (last line).
    Error(String),
}

/// `POST /v1/images/remove`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveImageRequest {
    /// Reference or id prefix.
    pub name: String,
    /// Remove an id that several references share.
    #[serde(default)]
    pub force: bool,
}

/// Answer of an image removal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoveImageResponse {
    /// References removed.
    pub untagged: Vec<String>,
    /// Blobs deleted because nothing else used them.
    pub deleted: Vec<String>,
}

/// `POST /v1/images/rootfs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsRequest {
    /// Image.
    pub image: String,
    /// Existing empty directory.
    pub dest: std::path::PathBuf,
}

/// Answer of `POST /v1/containers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Created {
    /// Full id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Pid of the created (waiting) init.
    pub pid: i32,
}

/// A container as `ps`, `state` and `inspect` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Lifecycle state.
    pub status: Status,
    /// Init pid while it runs.
    pub pid: Option<i32>,
    /// The state dir (the OCI bundle).
    pub bundle: String,
    /// The agent's record.
    pub record: ContainerRecord,
    /// How it ended.
    pub exit: Option<ExitRecord>,
    /// Health check state, when it has a check.
    #[serde(default)]
    pub health: Option<berth_runtime::health::HealthState>,
    /// Stopped, and its restart policy will start it again.
    #[serde(default)]
    pub restarting: bool,
}

/// A pod as `pod ls` and `pod inspect` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodInfo {
    /// The agent's record.
    pub record: crate::agent::pod::PodRecord,
    /// Its current containers.
    pub containers: Vec<ContainerInfo>,
}

/// `POST /v1/containers/{id}/exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Command and arguments.
    pub command: Vec<String>,
    /// Extra `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Terminal.
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open.
    #[serde(default)]
    pub stdin: bool,
    /// `uid[:gid]` or name.
    #[serde(default)]
    pub user: Option<String>,
    /// Working directory.
    #[serde(default)]
    pub workdir: Option<String>,
}

/// Answer of an exec creation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecCreated {
    /// Exec id (attach with `POST /v1/containers/{id}/exec/{exec_id}/attach`).
    pub exec_id: String,
}

/// `GET /v1/containers/{id}/top`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Top {
    /// Column names.
    pub titles: Vec<String>,
    /// One row per process.
    pub processes: Vec<Vec<String>>,
}

/// `GET /v1/containers/{id}/logs` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogsQuery {
    /// Keep streaming until the container stops.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N records.
    #[serde(default)]
    pub tail: Option<usize>,
}

/// `kill` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KillQuery {
    /// Signal name or number; default SIGTERM... as `runc kill` (SIGTERM).
    #[serde(default)]
    pub signal: Option<String>,
}

/// `stop` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StopQuery {
    /// Seconds between SIGTERM and SIGKILL (default 10).
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// `DELETE /v1/containers/{id}` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoveQuery {
    /// Kill it first if it runs.
    #[serde(default)]
    pub force: bool,
}

/// Parses `TERM`, `SIGTERM`, `sigkill`, `9`.
pub fn parse_signal(text: &str) -> Option<nix::sys::signal::Signal> {
    use std::str::FromStr;
    if let Ok(n) = text.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok();
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name).ok()
}
