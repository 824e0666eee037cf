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
    #[serde(rename = "objectStore")]
    object_store: &'static str,
}

/// Why the scheduler is not ready (the cause goes to the log, the client hears which service).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotReady(String);

/// The outcome of one check within [`CHECK_TIMEOUT`]: `None` when the service answered.
fn failure<E>(
    service: &'static str,
    outcome: Result<Result<(), E>, tokio::time::error::Elapsed>,
    describe: impl FnOnce(&E) -> String,
) -> Option<(&'static str, String)> {
    match outcome {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some((service, describe(&error))),
        Err(_) => Some((service, format!("no answer within {CHECK_TIMEOUT:?}"))),
    }
}

/// `GET /readyz`: 200 when the database, the broker and the object store answer within 3 s
/// each; 503 naming what does not, and 503 once shutdown began (so load balancers stop
/// sending).
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::Unavailable {
            message: "the scheduler is shutting down",
            cause: Box::new(NotReady("shutdown began".into())),
        });
    }
    let (database, broker, objects) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()),
        tokio::time::timeout(CHECK_TIMEOUT, state.broker.check()),
        tokio::time::timeout(CHECK_TIMEOUT, state.objects.check()),
    );
    let failures: Vec<(&str, String)> = [
        failure("the database", database, ToString::to_string),
        failure("the broker", broker, |e| error_chain(e)),
        failure("the object store", objects, |e| error_chain(e)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if failures.is_empty() {
        return Ok(data(
            StatusCode::OK,
            Readiness {
                database: "ok",
                broker: "ok",
                object_store: "ok",
            },
        ));
    }
    let services: Vec<&str> = failures.iter().map(|(service, _)| *service).collect();
    let cause: Vec<String> = failures
        .iter()
        .map(|(service, why)| format!("{service}: {why}"))
        .collect();
    Err(ApiError::Unavailable {
        message: not_ready_message(&services),
        cause: Box::new(NotReady(cause.join("; "))),
    })
}

/// `not ready: the database and the broker do not answer`, for the services named.
fn not_ready_message(services: &[&str]) -> &'static str {
    match services {
        ["the database"] => "not ready: the database does not answer",
        ["the broker"] => "not ready: the broker does not answer",
        ["the object store"] => "not ready: the object store does not answer",
        ["the database", "the broker"] => "not ready: the database and the broker do not answer",
        _ => "not ready: several services do not answer",
    }
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
