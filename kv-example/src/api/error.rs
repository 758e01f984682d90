//! Errors as etcd's gateway writes them: `{"error", "code", "message"}`
//! with a gRPC code and the HTTP status grpc-gateway maps it to.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::KvError;

/// gRPC codes used by the API.
pub mod code {
    /// The request is malformed or breaks a rule.
    pub const INVALID_ARGUMENT: u32 = 3;
    /// The deadline passed.
    pub const DEADLINE_EXCEEDED: u32 = 4;
    /// Something named does not exist.
    pub const NOT_FOUND: u32 = 5;
    /// Too many requests: back off.
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    /// The state does not allow the request.
    pub const FAILED_PRECONDITION: u32 = 9;
    /// A revision out of range (compacted, future).
    pub const OUT_OF_RANGE: u32 = 11;
    /// Not implemented.
    pub const UNIMPLEMENTED: u32 = 12;
    /// An internal error.
    pub const INTERNAL: u32 = 13;
    /// The service cannot answer now (no leader, stopped, timeout).
    pub const UNAVAILABLE: u32 = 14;
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The gRPC code.
    pub code: u32,
    /// The message (etcd's text where etcd has one).
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    code: u32,
}

impl ApiError {
    /// An error with grpc-gateway's status for `code`.
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            status: status_of(code),
            code,
            message: message.into(),
        }
    }

    /// InvalidArgument.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_ARGUMENT, message)
    }

    /// etcd's empty-key error.
    pub fn empty_key() -> Self {
        Self::invalid("etcdserver: key is not provided")
    }

    /// etcd's answer for a lease id that names no lease.
    pub fn lease_not_found() -> Self {
        Self::new(code::NOT_FOUND, "etcdserver: requested lease not found")
    }

    /// A body that is not the JSON the route takes.
    pub fn bad_json(detail: impl std::fmt::Display) -> Self {
        Self::invalid(format!("malformed request: {detail}"))
    }

    /// A body over `--max-request-bytes`.
    pub fn too_large(size: usize, max: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: code::INVALID_ARGUMENT,
            message: format!("etcdserver: request is too large ({size} bytes, limit {max})"),
        }
    }

    /// No leader within the deadline.
    pub fn no_leader() -> Self {
        Self::new(code::UNAVAILABLE, "etcdserver: no leader")
    }

    /// The request's deadline passed with the outcome unknown.
    pub fn timeout() -> Self {
        Self::new(code::UNAVAILABLE, "etcdserver: request timed out")
    }

    /// The node is stopping or stopped.
    pub fn stopped(reason: impl std::fmt::Display) -> Self {
        Self::new(
            code::UNAVAILABLE,
            format!("etcdserver: server stopped ({reason})"),
        )
    }

    /// The apply loop is behind: back off.
    pub fn too_many_requests() -> Self {
        Self::new(code::RESOURCE_EXHAUSTED, "etcdserver: too many requests")
    }

    /// The body to send.
    pub fn body(&self) -> String {
        serde_json::to_string(&ErrorBody {
            error: &self.message,
            code: self.code,
            message: &self.message,
        })
        .unwrap_or_default()
    }
}

impl From<KvError> for ApiError {
    fn from(error: KvError) -> Self {
        let code = match error {
            KvError::Compacted | KvError::FutureRevision => code::OUT_OF_RANGE,
            _ => code::INVALID_ARGUMENT,
        };
        Self::new(code, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response()
    }
}

/// grpc-gateway's mapping of gRPC codes to HTTP statuses.
pub fn status_of(code: u32) -> StatusCode {
    match code {
        0 => StatusCode::OK,
        1 => StatusCode::REQUEST_TIMEOUT,
        3 | 9 | 11 => StatusCode::BAD_REQUEST,
        4 => StatusCode::GATEWAY_TIMEOUT,
        5 => StatusCode::NOT_FOUND,
        6 | 10 => StatusCode::CONFLICT,
        7 => StatusCode::FORBIDDEN,
        8 => StatusCode::TOO_MANY_REQUESTS,
        12 => StatusCode::NOT_IMPLEMENTED,
        14 => StatusCode::SERVICE_UNAVAILABLE,
        16 => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
