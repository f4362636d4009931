//! API errors: a machine-readable code, an HTTP status and a Docker-like exit code next to a
//! lowercase message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::{ErrorBody, ErrorCode};

/// An action failed; the API turns this into `{"code", "message", "exit_code"}` with
/// `status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What kind of error, for programs.
    pub code: ErrorCode,
    /// What went wrong.
    pub message: String,
    /// Exit code for `berth run`/`exec` (125 daemon error, 126, 127).
    pub exit_code: Option<i32>,
    /// The id, name, image reference or path the error is about.
    pub about: Option<String>,
}

impl ApiError {
    /// An error of kind `code` with the status that goes with it.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let status = match code {
            ErrorCode::InvalidRequest
            | ErrorCode::Ambiguous
            | ErrorCode::CommandNotFound
            | ErrorCode::CommandNotExecutable => StatusCode::BAD_REQUEST,
            ErrorCode::NoSuchImage
            | ErrorCode::NoSuchContainer
            | ErrorCode::NoSuchPod
            | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::NameInUse | ErrorCode::Conflict | ErrorCode::InsufficientResources => {
                StatusCode::CONFLICT
            }
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::Internal | ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            code,
            message: message.into(),
            exit_code: None,
            about: None,
        }
    }
    /// 404 about something with no code of its own.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }
    /// 409 with code `insufficient_resources`: admission refused.
    pub fn insufficient(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InsufficientResources, message)
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    /// 500 from any error (its chain joined).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Internal, e.to_string())
    }
    /// The image `name` is not in the store.
    pub fn no_such_image(name: &str) -> Self {
        Self::new(ErrorCode::NoSuchImage, format!("no such image: {name}")).about(name)
    }
    /// No container is `key`.
    pub fn no_such_container(key: &str) -> Self {
        Self::new(
            ErrorCode::NoSuchContainer,
            format!("no such container: {key}"),
        )
        .about(key)
    }
    /// No pod is `key`.
    pub fn no_such_pod(key: &str) -> Self {
        Self::new(ErrorCode::NoSuchPod, format!("no such pod: {key}")).about(key)
    }
    /// The name `name` of a `kind` is taken.
    pub fn name_in_use(kind: &str, name: &str) -> Self {
        Self::new(
            ErrorCode::NameInUse,
            format!("the {kind} name {name:?} is already in use"),
        )
        .about(name)
    }
    /// With an exit code for the CLI.
    pub fn with_exit_code(mut self, code: i32) -> Self {
        self.exit_code = Some(code);
        self
    }
    /// A process could not be started; Docker's exit code `exit_code` (127: no such
    /// command, 126: not executable, 125: anything else) chooses the code.
    pub fn start_failed(message: impl Into<String>, exit_code: i32) -> Self {
        let code = match exit_code {
            127 => ErrorCode::CommandNotFound,
            126 => ErrorCode::CommandNotExecutable,
            _ => ErrorCode::InvalidRequest,
        };
        Self::new(code, message).with_exit_code(exit_code)
    }
    /// Names what the error is about.
    pub fn about(mut self, subject: &str) -> Self {
        self.about = Some(subject.to_string());
        self
    }
    /// About a field of a pod spec: `invalid pod spec: FIELD: MESSAGE`.
    pub fn in_field(mut self, field: &str) -> Self {
        self.message = format!("invalid pod spec: {field}: {}", self.message);
        self
    }
    /// It is a "no such …" error (of any kind).
    pub fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: self.message,
            exit_code: self.exit_code,
            about: self.about,
        };
        (self.status, axum::Json(body)).into_response()
    }
}
