//! Error answers: `{"code": ..., "message": ..., "exit_code": N, "about": ...}`.

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
    /// Admission refused: the request does not fit what the node has left (allocatable
    /// for guaranteed and burstable work, the revocable estimate for revocable work) (409).
    InsufficientResources,
    /// The command does not exist in the container (Docker's exit code 127).
    CommandNotFound,
    /// The command exists but cannot be executed (Docker's exit code 126).
    CommandNotExecutable,
    /// The request body is over the size limit (413).
    PayloadTooLarge,
    /// The agent is at a limit (connections) or shutting down; retry later (503).
    Unavailable,
    /// No credential, or a wrong one (cluster API: no client certificate, a bad join
    /// token) (401).
    Unauthorized,
    /// The credential does not allow this request (a node writing jobs or reporting for
    /// another node) (403).
    Forbidden,
    /// The node ran out of disk space (507).
    NoSpace,
    /// The agent failed (500).
    Internal,
    /// A code this client does not know.
    #[default]
    #[serde(other)]
    Unknown,
}
