//! Probes and metrics for operators: `GET /healthz` (the process serves), `GET /readyz` (the
//! services it needs answer, so a load balancer may send traffic) and `GET /metrics`
//! (Prometheus text format, see `metrics.rs`). None needs a token: they carry no user data,
//! and probes and scrapers hold none; keep them off the public ingress if queue figures are
//! private (README, Operations).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::error::{ApiError, data};
use crate::relay::error_chain;

/// How long `/readyz` waits for each service.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /healthz`: 200 while the process serves requests.
pub async fn healthz() -> Response {
    data(StatusCode::OK, serde_json::json!({ "status": "alive" }))
}

/// What `/readyz` found.
#[derive(Debug, Serialize)]
struct Readiness {
    database: &'static str,
    broker: &'static str,
}

/// Why the scheduler is not ready (the cause goes to the log, the client hears which service).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotReady(String);

/// `GET /readyz`: 200 when the database and the broker answer within 3 s each; 503 naming
/// what does not, and 503 once shutdown began (so load balancers stop sending).
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::Unavailable {
            message: "the scheduler is shutting down",
            cause: Box::new(NotReady("shutdown began".into())),
        });
    }
    let (database, broker) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()),
        tokio::time::timeout(CHECK_TIMEOUT, state.broker.check()),
    );
    let database = match database {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(format!("database: {error}")),
        Err(_) => Some(format!("database: no answer within {CHECK_TIMEOUT:?}")),
    };
    let broker = match broker {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(format!("broker: {}", error_chain(&error))),
        Err(_) => Some(format!("broker: no answer within {CHECK_TIMEOUT:?}")),
    };
    let message = match (&database, &broker) {
        (None, None) => {
            return Ok(data(
                StatusCode::OK,
                Readiness {
                    database: "ok",
                    broker: "ok",
                },
            ));
        }
        (Some(_), None) => "not ready: the database does not answer",
        (None, Some(_)) => "not ready: the broker does not answer",
        (Some(_), Some(_)) => "not ready: the database and the broker do not answer",
    };
    let cause = [database, broker].into_iter().flatten().collect::<Vec<_>>();
    Err(ApiError::Unavailable {
        message,
        cause: Box::new(NotReady(cause.join("; "))),
    })
}

/// `GET /metrics`: every series in the Prometheus text exposition format 0.0.4.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.metrics.render(&state).await?;
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response())
}
