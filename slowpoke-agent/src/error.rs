//! The one error type of the agent library; each variant maps to one HTTP status.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::api::ErrorBody;

/// What went wrong, phrased for the user: every message says what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgentError {
    /// Invalid input (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// The request names only processes the agent never stops, e.g. pid 1 or the agent itself
    /// (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// No such service (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with the current state, e.g. another agent holds the lock (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// A needed facility is missing, e.g. the kernel programs did not load (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected system error (HTTP 500).
    #[error("{0}")]
    Internal(String),
}

impl AgentError {
    pub fn status(&self) -> StatusCode {
        match self {
            AgentError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AgentError::Forbidden(_) => StatusCode::FORBIDDEN,
            AgentError::NotFound(_) => StatusCode::NOT_FOUND,
            AgentError::Conflict(_) => StatusCode::CONFLICT,
            AgentError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AgentError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<crate::kernel::KernelError> for AgentError {
    fn from(e: crate::kernel::KernelError) -> Self {
        AgentError::Internal(format!("kernel programs: {e}"))
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let status = self.status();
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}
