//! The HTTP API, one module per area of the spec: `discovery` (build-api.md §2, §4.6), `auth`
//! (§3), `build` (§4.1–4.3), `ws` (§4.4), `build_context` (§4.5) and `imagefile` (the worker's
//! result upload); for operators, `health` (probes, metrics) and `admin` (fleet view). The
//! library API (library-api.md) is `crate::library`, merged in here.
//! [`router`] builds the whole service from an [`AppState`]; tests call it with
//! `tower::ServiceExt::oneshot`.

mod admin;
mod auth;
mod build;
mod build_context;
mod discovery;
mod error;
mod health;
mod imagefile;
mod ws;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post, put};
use kiln_proto::amqp::Topology;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::{LibraryConfig, Limits};
use crate::metrics::{Metrics, track_http};
use crate::objects::Objects;
use crate::queue::Broker;
use crate::store::Store;
use crate::web::throttle::SignInThrottle;

pub use auth::{AuthUser, authenticate, authenticate_reader};
pub use build::visible_build;
pub use build_context::remove_context_files;
pub use error::{ApiError, AppJson, data};
pub use ws::stream_log;

/// Largest JSON body accepted, bytes: a definition of the parser's maximum size (1 MiB),
/// base64-encoded, plus the other fields.
pub const MAX_JSON_BODY_BYTES: usize = 2 * 1024 * 1024;

/// What every handler shares; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Publishes jobs and control messages.
    pub broker: Arc<dyn Broker>,
    /// The deployment's limits.
    pub limits: Arc<Limits>,
    /// The AMQP names in use.
    pub topology: Arc<Topology>,
    /// Base URL clients reach this service at, without trailing slash.
    pub public_url: Arc<str>,
    /// The data directory (contexts live below it).
    pub data_dir: Arc<PathBuf>,
    /// Where library images and build results are stored.
    pub objects: Objects,
    /// The library's storage settings and policies.
    pub library: Arc<LibraryConfig>,
    /// Tells the time.
    pub clock: Arc<dyn Clock>,
    /// Build ids whose log or state changed; log viewers wake on it.
    pub changes: broadcast::Sender<String>,
    /// Cancelled on shutdown: WebSockets close with 1001.
    pub shutdown: CancellationToken,
    /// Tracks WebSocket tasks, so shutdown waits for them.
    pub tracker: TaskTracker,
    /// The Prometheus registry and its series (`GET /metrics`).
    pub metrics: Arc<Metrics>,
    /// Failed sign-ins on the web form, which slow the next ones.
    pub sign_ins: Arc<SignInThrottle>,
}

impl AppState {
    /// Where build contexts of `user_id` are kept.
    pub fn contexts_dir(&self, user_id: i64) -> PathBuf {
        self.data_dir.join("contexts").join(user_id.to_string())
    }

    /// Tells log viewers of build `id` to look again. Nobody listening is fine.
    pub fn notify(&self, id: &str) {
        let _ = self.changes.send(id.to_owned());
    }
}

/// The whole HTTP service.
pub fn router(state: AppState) -> Router {
    let uploads = Router::new()
        .route(
            "/v1/build-context-upload/{token}",
            put(build_context::upload),
        )
        .route(
            "/v1/build-result/{id}/{token}",
            put(imagefile::upload_result),
        )
        .merge(crate::library::file_routes())
        // Uploads stream to storage and count against their own limits.
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route(
            "/assets/config/config.prod.json",
            get(discovery::service_document),
        )
        .route("/version", get(discovery::version))
        .route("/v1/token-status", get(auth::token_status))
        .route("/v1/rbac/users/current", get(auth::current_user))
        .route("/v1/build", post(build::submit))
        .route("/v1/build/{id}", get(build::status))
        .route("/v1/build/{id}/_cancel", put(build::cancel))
        .route("/v1/build-ws/{id}", get(ws::build_log))
        .route("/v1/build-context", post(build_context::announce))
        .route("/v1/build-context/{digest}", delete(build_context::remove))
        .route(
            "/v1/build-context-archive/{id}/{token}",
            get(build_context::download),
        )
        .route("/v1/oci-redirect", get(imagefile::oci_redirect))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/admin/workers", get(admin::workers))
        .route("/v1/admin/queues", get(admin::queues))
        .merge(crate::library::routes())
        .merge(crate::web::router())
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
        .merge(uploads)
        .fallback(error::not_found)
        .layer(middleware::map_response(error::log_internal_errors))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            track_http,
        ))
        .with_state(state)
}

#[cfg(test)]
pub(crate) mod tests;
