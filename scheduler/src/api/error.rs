//! The one place HTTP failures become responses: every error is a json-resp envelope
//! (`{"error":{"code":N,"message":"..."}}`) with the same status code, because stock clients
//! print `error.message` and old ones read only the envelope (build-api.md §9).
//!
//! Causes of 5xx answers stay on the server: the response carries them in an extension, and the
//! [`log_internal_errors`] middleware logs them, so `IntoResponse` has no side effects.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_proto::http::Response as Envelope;
use serde::Serialize;

use crate::store::StoreError;

/// Why a request failed, and how the client hears of it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or names something invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// No token, or a token that is not valid (401).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Authenticated but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// Unknown or not visible to this user (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// A body larger than allowed (413).
    #[error("{0}")]
    TooLarge(String),
    /// The owner's storage quota would be exceeded (507); the message has the figures.
    #[error("{0}")]
    InsufficientStorage(String),
    /// A limit on concurrent work (429).
    #[error("{0}")]
    TooManyRequests(String),
    /// A body axum could not read (its status and message).
    #[error("{message}")]
    Rejected {
        /// The status axum chose (400, 413, 415, 422).
        status: StatusCode,
        /// axum's explanation.
        message: String,
    },
    /// A service behind the scheduler is unreachable (503); the cause is logged.
    #[error("{message}")]
    Unavailable {
        /// For the client.
        message: &'static str,
        /// For the log.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A failure of the scheduler itself (500); the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Self::Rejected { status, .. } => *status,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A 500 from any error.
    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::internal(error)
    }
}

impl From<std::io::Error> for ApiError {
    fn from(error: std::io::Error) -> Self {
        Self::internal(error)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::Rejected {
            status: rejection.status(),
            message: rejection.body_text(),
        }
    }
}

/// The cause of a 5xx answer, for [`log_internal_errors`].
#[derive(Debug, Clone)]
pub struct InternalCause(pub Arc<String>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            Json(Envelope::error(status.as_u16(), self.to_string())),
        )
            .into_response();
        if status.is_server_error() {
            let mut chain = self.to_string();
            let mut source = std::error::Error::source(&self);
            while let Some(cause) = source {
                chain.push_str(": ");
                chain.push_str(&cause.to_string());
                source = cause.source();
            }
            response
                .extensions_mut()
                .insert(InternalCause(Arc::new(chain)));
        }
        response
    }
}

/// Middleware: logs the cause of every 5xx answer.
pub async fn log_internal_errors(response: Response) -> Response {
    if let Some(InternalCause(cause)) = response.extensions().get::<InternalCause>() {
        tracing::error!(status = response.status().as_u16(), cause = %cause, "request failed");
    }
    response
}

/// `axum::Json` whose rejections are json-resp envelopes, not axum's plain text (STYLE 2.1).
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(Self(value))
    }
}

/// A json-resp success: `{"data": ...}` with `status`.
pub fn data<T: Serialize>(status: StatusCode, value: T) -> Response {
    (status, Json(Envelope::data(value))).into_response()
}

/// The answer for every path the API does not have.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}
