//! Service discovery (build-api.md §2.2) and `GET /version` (§4.6): one host serves the builder,
//! the library and the token check, so every discovery entry points at the public URL.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_proto::http::{ServiceDocument, VersionInfo};

use super::AppState;
use super::error::data;

/// The library API version announced on `/version`; the library client only logs a lower one.
const LIBRARY_API_VERSION: &str = "2.0.0";

/// `GET /assets/config/config.prod.json`: plain JSON (not enveloped), no auth.
pub async fn service_document(State(state): State<AppState>) -> Response {
    Json(ServiceDocument::single_host(&state.public_url)).into_response()
}

/// `GET /version`: `{"data":{"version":…,"apiVersion":…}}`, no auth.
pub async fn version() -> Response {
    data(
        StatusCode::OK,
        VersionInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            api_version: Some(LIBRARY_API_VERSION.to_owned()),
        },
    )
}
