//! The operators' API, admin token only: `GET /v1/admin/workers` (the fleet view) and
//! `GET /v1/admin/queues` (the job queues). Bodies are `kiln_proto::http::{WorkerInfo,
//! QueueInfo}` in the json-resp envelope.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use kiln_proto::http::QueueInfo;

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, data};
use crate::fleet::worker_info;
use crate::store::{BuildState, User};

fn require_admin(user: &User) -> Result<(), ApiError> {
    if user.is_admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden("this needs an admin token".into()))
    }
}

/// `GET /v1/admin/workers`: every worker that sent a heartbeat within the forget limit, most
/// recently seen first, each marked busy, idle or lost.
pub async fn workers(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Response, ApiError> {
    require_admin(&user)?;
    let now_ms = state.clock.now_ms();
    let lost_after_ms = state.limits.worker_lost_after_ms();
    let workers: Vec<_> = state
        .store
        .workers()
        .await?
        .iter()
        .map(|worker| worker_info(worker, now_ms, lost_after_ms))
        .collect();
    Ok(data(StatusCode::OK, workers))
}

/// `GET /v1/admin/queues`: per architecture, the jobs the broker holds ready, its consumers,
/// and the builds queued and running; 503 when the broker does not answer.
pub async fn queues(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Response, ApiError> {
    require_admin(&user)?;
    let counts = state.store.build_counts().await?;
    let count = |arch: &str, wanted: BuildState| {
        counts
            .iter()
            .filter(|c| c.arch == arch && c.state == wanted)
            .map(|c| c.count)
            .sum::<u64>()
    };
    let mut queues = Vec::with_capacity(state.limits.arches.len());
    for arch in state.limits.arches.iter() {
        let stats =
            state
                .broker
                .job_queue_stats(arch)
                .await
                .map_err(|error| ApiError::Unavailable {
                    message: "the broker does not answer",
                    cause: Box::new(error),
                })?;
        queues.push(QueueInfo {
            arch: arch.clone(),
            ready: u64::from(stats.ready),
            consumers: u64::from(stats.consumers),
            queued: count(arch, BuildState::Queued),
            running: count(arch, BuildState::Running),
        });
    }
    Ok(data(StatusCode::OK, queues))
}
