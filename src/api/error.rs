//! API errors: a status, a stable `code` and a human `message`, as in S2.
//!
//! Two S2 errors have their own bodies: 412 (an append's condition failed)
//! and 416 (a read started past the tail).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::engine::error::EngineError;
use crate::wire::json::{ErrorInfo, Position};

#[derive(Debug)]
pub enum ApiError {
    /// The common shape: `{"code", "message"}`.
    Coded {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    SeqNumMismatch(u64),
    FencingTokenMismatch(String),
    BeyondTail(Position),
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::Coded {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_header(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_header", message)
    }

    pub fn bad_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_query", message)
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_json", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not support that method",
        )
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Coded { status, .. } => *status,
            ApiError::SeqNumMismatch(_) | ApiError::FencingTokenMismatch(_) => {
                StatusCode::PRECONDITION_FAILED
            }
            ApiError::BeyondTail(_) => StatusCode::RANGE_NOT_SATISFIABLE,
        }
    }

    /// The JSON body, also used as the data of SSE `error` events.
    pub fn body(&self) -> serde_json::Value {
        match self {
            ApiError::Coded { code, message, .. } => json!(ErrorInfo {
                code: code.to_string(),
                message: message.clone(),
            }),
            ApiError::SeqNumMismatch(seq) => json!({ "seq_num_mismatch": seq }),
            ApiError::FencingTokenMismatch(token) => json!({ "fencing_token_mismatch": token }),
            ApiError::BeyondTail(tail) => json!({ "tail": tail }),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        let message = err.to_string();
        match err {
            EngineError::BasinNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "basin_not_found", message)
            }
            EngineError::StreamNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "stream_not_found", message)
            }
            EngineError::CollectionNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "collection_not_found", message)
            }
            EngineError::RecordNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "record_not_found", message)
            }
            EngineError::CursorExpired(_) => {
                ApiError::new(StatusCode::GONE, "cursor_expired", message)
            }
            EngineError::VersionMismatch { .. } => {
                ApiError::new(StatusCode::PRECONDITION_FAILED, "version_mismatch", message)
            }
            EngineError::ConsumerNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "consumer_not_found", message)
            }
            EngineError::SinkNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "sink_not_found", message)
            }
            EngineError::SinkConflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "sink_conflict", message)
            }
            EngineError::SourceNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "source_not_found", message)
            }
            EngineError::SourceConflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "source_conflict", message)
            }
            EngineError::ConsumerConflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "consumer_conflict", message)
            }
            EngineError::ConsumerSourceGone(_) => {
                ApiError::new(StatusCode::GONE, "source_deleted", message)
            }
            EngineError::AckExpired { .. } => {
                ApiError::new(StatusCode::CONFLICT, "ack_expired", message)
            }
            EngineError::AccessTokenNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "access_token_not_found", message)
            }
            EngineError::BasinExists(_)
            | EngineError::StreamExists(_)
            | EngineError::AccessTokenExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "resource_already_exists", message)
            }
            EngineError::Invalid(_) | EngineError::BadAckId { .. } => ApiError::invalid(message),
            EngineError::SeqNumMismatch(seq) => ApiError::SeqNumMismatch(seq),
            EngineError::FencingTokenMismatch(token) => ApiError::FencingTokenMismatch(token),
            EngineError::BeyondTail(tail) => ApiError::BeyondTail(tail.into()),
            EngineError::StreamDeleted(_) => {
                ApiError::new(StatusCode::GONE, "stream_deleted", message)
            }
            EngineError::AppendRefused(refusal) => {
                use crate::engine::streams::types::AppendRefusal as R;
                let code = match refusal {
                    R::Closed { .. } | R::AlreadyClosed { .. } => "stream_closed",
                    R::Duplicate { .. } => "duplicate_append",
                    R::StaleEpoch { .. } => "stale_producer_epoch",
                    R::NewEpochNotAtZero | R::SeqGap { .. } => "producer_seq_gap",
                    R::WriterSeqRegression { .. } => "writer_seq_regression",
                };
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            EngineError::SessionAborted => {
                ApiError::new(StatusCode::CONFLICT, "session_aborted", message)
            }
            EngineError::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            EngineError::Storage(crate::storage::StorageError::Full(why)) => {
                tracing::error!(error = %why, "the disk is full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "insufficient_storage",
                    "the disk is full: this write was not made durable, and writes are refused \
                     until space is freed (they resume by themselves); reads still work",
                )
            }
            // The write was never tried: it is safe to send again.
            EngineError::Storage(
                crate::storage::StorageError::Poisoned | crate::storage::StorageError::Reopening,
            ) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
            EngineError::Storage(_) => {
                tracing::error!(error = %message, "storage error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", message)
            }
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_query(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_path", rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match &self {
            ApiError::Coded { code, .. } => code,
            ApiError::SeqNumMismatch(_) => "seq_num_mismatch",
            ApiError::FencingTokenMismatch(_) => "fencing_token_mismatch",
            ApiError::BeyondTail(_) => "beyond_tail",
        };
        let mut response = (self.status(), Json(self.body())).into_response();
        // Counted by the metrics layer (`api/observe.rs`).
        response.extensions_mut().insert(ErrorCode(code));
        if matches!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        if response.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"rill\""),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The `code` of an error answer, on its response, for the metrics.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub &'static str);
