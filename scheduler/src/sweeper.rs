//! Periodic housekeeping: ends builds that ran out of time, backs up the broker's queue TTL,
//! collects build contexts nobody used for the context TTL, forgets workers whose
//! heartbeats stopped long ago, and expires ephemeral library images and dead upload URLs.
//!
//! Workers enforce a job's timeout themselves and the broker expires jobs that waited too long;
//! the sweeper is the backstop for a worker that died silently, or a job that vanished, so that
//! no build stays `running` or `queued` forever. It allows [`GRACE_MS`] beyond each limit so the
//! worker's and the broker's own reports win when they come.

use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::api::remove_context_files;
use crate::finish::{expired_reason, finish_build_fatally};
use crate::store::{FinalState, StoreError};

/// Slack beyond a timeout or TTL before the sweeper acts, ms.
pub const GRACE_MS: i64 = 60_000;

/// Sweeps every `sweep_interval_seconds` until `shutdown`.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let period = std::time::Duration::from_secs(state.limits.sweep_interval_seconds.max(1));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(error) = sweep(&state).await {
                    tracing::warn!(error = %error, "sweep failed");
                }
            }
        }
    }
}

/// One pass over the store. Returns how many builds it ended.
///
/// # Errors
/// The first failed query.
pub async fn sweep(state: &AppState) -> Result<usize, StoreError> {
    let now_ms = state.clock.now_ms();
    let mut ended = 0;
    let ttl_ms = millis(state.limits.queue_ttl_seconds);
    for build in state
        .store
        .queued_before(now_ms - ttl_ms - GRACE_MS)
        .await?
    {
        let outcome = FinalState::Expired(expired_reason(state.limits.queue_ttl_seconds));
        if end(state, &build.id, &outcome, now_ms).await? {
            ended += 1;
        }
    }
    for build in state.store.running_builds().await? {
        let started = build.start_ms.unwrap_or(build.submit_ms);
        if started + millis(build.timeout_seconds) + GRACE_MS >= now_ms {
            continue;
        }
        let reason = format!(
            "the build ran longer than its {} s limit",
            build.timeout_seconds
        );
        if end(state, &build.id, &FinalState::TimedOut(reason), now_ms).await? {
            ended += 1;
            let cancel = kiln_proto::amqp::Control::cancel(&build.id);
            if let Err(error) = state.broker.publish_control(&cancel).await {
                tracing::warn!(build_id = %build.id, error = %error, "could not publish cancel");
            }
        }
    }
    let context_ttl_ms = millis(state.limits.context_ttl_seconds);
    for context in state.store.stale_contexts(now_ms - context_ttl_ms).await? {
        if let Err(error) = remove_context_files(state, context.user_id, &context.digest).await {
            tracing::warn!(digest = %context.digest, error = %error, "could not delete build context");
            continue;
        }
        state
            .store
            .delete_context(context.user_id, &context.digest)
            .await?;
        tracing::info!(user_id = context.user_id, digest = %context.digest, "build context collected");
    }
    let forget_ms = millis(state.limits.worker_forget_seconds);
    let forgotten = state.store.forget_workers(now_ms - forget_ms).await?;
    if forgotten > 0 {
        tracing::info!(
            forgotten,
            "workers without heartbeats dropped from the fleet view"
        );
    }
    crate::library::sweep_library(state).await?;
    Ok(ended)
}

/// Ends one build with `outcome` and wakes its viewers; true when it was still active.
async fn end(
    state: &AppState,
    id: &str,
    outcome: &FinalState,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let changed = finish_build_fatally(&state.store, id, outcome, now_ms).await?;
    if changed {
        if let Some(row) = state.store.build(id).await? {
            state.metrics.observe_finished(&row);
        }
        state.notify(id);
        tracing::info!(build_id = %id, state = %outcome.state(), "sweeper ended a build");
    }
    Ok(changed)
}

fn millis(seconds: u64) -> i64 {
    i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX / 2)
}
