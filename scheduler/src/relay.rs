//! The log relay: consumes worker events and dead-lettered jobs, persists them, and wakes the
//! log viewers of the builds they touched.
//!
//! Data flow: `worker/src/events.rs` publishes an `EventMessage` on the events exchange → the
//! scheduler's events queue → here → the store (`store/logs.rs`, `store/builds.rs`) → a wake-up
//! on [`AppState::changes`] → `api/ws.rs` reads the store and sends frames.
//!
//! Delivery is at least once: a delivery is acked only after what it says is in the database.
//! Log lines are batched: every delivery already waiting is taken (up to [`FLUSH_BYTES`]), the
//! lines are written as one append per build, and then every delivery up to the last one is
//! acked at once (`multiple`); a quiet stream is written at once, a busy one in batches. Any other event first flushes the batch, so a build's final state
//! is always written after all of its log. Echoes of a redelivered job are dropped by their
//! `(attempt, seq)`; events for a build that is already final (cancelled, expired) make the relay
//! tell the worker to stop. Heartbeats replace their worker's row (`store/workers.rs`) for the
//! fleet view; every event is counted for `/metrics`.
//!
//! The relay owns its AMQP connection and reconnects with backoff; unacked deliveries return to
//! the queue when a connection drops, so a broker or scheduler restart loses no event that
//! counts (final events are published persistent with confirms by workers).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kiln_proto::amqp::declare::{connect, declare_topology};
use kiln_proto::amqp::{
    Control, Event, EventMessage, Job, STEP_SECONDS_BUCKETS, Topology, WorkerHeartbeat, WorkerStats,
};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::finish::{expired_reason, finish_build, finish_build_fatally};
use crate::secrets::is_build_id;
use crate::store::{FinalState, LogAppend, StoreError};

/// Longest time a log line waits in the batch, and so the delay a live viewer sees.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// Batched log bytes that force a flush.
pub const FLUSH_BYTES: usize = 256 * 1024;

/// Unacked deliveries the broker may hand the relay at once (the batch can hold that many).
const PREFETCH: u16 = 1000;

/// Characters kept of each text field of a heartbeat (worker id, host, arch, version).
const MAX_HEARTBEAT_FIELD: usize = 256;

/// The steps a worker times (`worker/src/consumer/stats.rs`).
const WORKER_STEPS: &[&str] = &["fetch", "run", "squash", "upload"];

/// Build ids kept from one heartbeat.
const MAX_HEARTBEAT_BUILDS: usize = 256;

/// Why one relay session ended.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The broker connection or a channel failed.
    #[error("amqp operation failed")]
    Amqp(#[from] lapin::Error),
    /// A consumer ended (the broker cancelled it or the connection closed).
    #[error("the {0} consumer ended")]
    ConsumerEnded(&'static str),
    /// Writing to the database failed; the unacked deliveries will come again.
    #[error("failed to persist events")]
    Store(#[from] StoreError),
}

/// Runs the relay until `shutdown`, reconnecting after failures with backoff (0.5 s to 30 s).
pub async fn run(state: AppState, amqp_url: String, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut session = Session::new(&state);
        match session.run(&amqp_url, &shutdown).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), retry_in = ?backoff, "relay disconnected");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// `error: cause: cause...`, for one log field.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// One connection's worth of relaying; its caches die with it, so after a reconnect every
/// cursor is read from the database again.
struct Session<'a> {
    state: &'a AppState,
    /// Log text waiting to be written, per build, in arrival order of the builds.
    batch: Vec<(String, String)>,
    batch_bytes: usize,
    /// Last delivery tag on the events channel that the batch covers.
    last_tag: Option<u64>,
    /// `(attempt, seq)` of the last accepted event per build; `None` for unknown builds.
    cursors: HashMap<String, Option<(i64, i64)>>,
    /// Builds whose cursor moved since the last flush.
    dirty: HashSet<String>,
    /// Builds the relay already asked to cancel in this session.
    cancelled: HashSet<String>,
}

impl<'a> Session<'a> {
    fn new(state: &'a AppState) -> Self {
        Self {
            state,
            batch: Vec::new(),
            batch_bytes: 0,
            last_tag: None,
            cursors: HashMap::new(),
            dirty: HashSet::new(),
            cancelled: HashSet::new(),
        }
    }

    async fn run(&mut self, url: &str, shutdown: &CancellationToken) -> Result<(), RelayError> {
        let connection = connect(url, "kiln-scheduler relay").await?;
        let result = self.consume(&connection, shutdown).await;
        let _ = connection.close(200, "relay stopping".into()).await;
        result
    }

    async fn consume(
        &mut self,
        connection: &Connection,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let state = self.state;
        let topology: &Topology = &state.topology;
        let events_channel = connection.create_channel().await?;
        declare_topology(&events_channel, topology, &state.limits.arches).await?;
        events_channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        let mut events = events_channel
            .basic_consume(
                topology.events_queue().name.as_str().into(),
                "kiln-scheduler-relay".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let dead_channel = connection.create_channel().await?;
        dead_channel
            .basic_qos(16, BasicQosOptions::default())
            .await?;
        let mut dead_jobs = dead_channel
            .basic_consume(
                topology.dead_jobs_queue().name.as_str().into(),
                "kiln-scheduler-dead-jobs".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!("relay consuming events");
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.flush(&events_channel).await?;
                    return Ok(());
                }
                delivery = events.next() => {
                    let delivery = delivery.ok_or(RelayError::ConsumerEnded("events"))??;
                    self.on_event(&events_channel, delivery).await?;
                    // Take what else is already here, then write: one batch under load, no
                    // waiting for the tick when the stream is quiet (live viewers see a line as
                    // soon as it is stored).
                    while let Some(next) = events.next().now_or_never() {
                        let delivery = next.ok_or(RelayError::ConsumerEnded("events"))??;
                        self.on_event(&events_channel, delivery).await?;
                    }
                    self.flush(&events_channel).await?;
                }
                delivery = dead_jobs.next() => {
                    let delivery = delivery.ok_or(RelayError::ConsumerEnded("dead jobs"))??;
                    self.on_dead_job(&delivery).await?;
                    delivery.ack(BasicAckOptions::default()).await?;
                }
                _ = tick.tick(), if self.last_tag.is_some() => {
                    self.flush(&events_channel).await?;
                }
            }
        }
    }

    /// Handles one event delivery; acks happen in [`Self::flush`].
    async fn on_event(&mut self, channel: &Channel, delivery: Delivery) -> Result<(), RelayError> {
        self.last_tag = Some(delivery.delivery_tag);
        let message = match EventMessage::from_bytes(&delivery.data) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "dropping an unreadable event");
                return Ok(());
            }
        };
        self.state.metrics.count_event(message.event.kind());
        if let Event::Heartbeat(heartbeat) = &message.event {
            self.record_heartbeat(&message.worker_id, heartbeat).await?;
            return Ok(());
        }
        let Some(build_id) = message.build_id.clone().filter(|id| is_build_id(id)) else {
            tracing::debug!(worker_id = %message.worker_id, "dropping an event without a build id");
            return Ok(());
        };
        if !self.accept(&build_id, &message).await? {
            return Ok(());
        }
        match &message.event {
            Event::Log(line) => {
                let mut text = line.text.clone();
                text.push('\n');
                self.batch_bytes += text.len();
                match self.batch.iter_mut().find(|(id, _)| *id == build_id) {
                    Some((_, pending)) => pending.push_str(&text),
                    None => self.batch.push((build_id, text)),
                }
                if self.batch_bytes >= FLUSH_BYTES {
                    self.flush(channel).await?;
                }
            }
            Event::Progress(_) | Event::Heartbeat(_) => {}
            Event::State(build_state) => {
                self.flush(channel).await?;
                let phase = phase_name(build_state);
                let now_ms = self.state.clock.now_ms();
                let before = self.state.store.build(&build_id).await?;
                let running = self
                    .state
                    .store
                    .mark_running(&build_id, &message.worker_id, &phase, now_ms)
                    .await?;
                if running {
                    if let Some(row) = before.filter(|row| row.start_ms.is_none()) {
                        self.state
                            .metrics
                            .observe_queue_wait(now_ms - row.submit_ms);
                    }
                    self.state.notify(&build_id);
                } else {
                    self.cancel_worker(&build_id).await;
                }
            }
            Event::Finished(finished) => {
                self.flush(channel).await?;
                let row = self.state.store.build(&build_id).await?;
                let uploaded = row.as_ref().and_then(|row| row.result_size);
                let outcome = match uploaded {
                    // The stored SIF is what clients download: it must be what the worker built.
                    Some(size) if size != finished.image_size => FinalState::Failed(format!(
                        "the image the worker uploaded has {size} bytes, it reported {}",
                        finished.image_size
                    )),
                    _ => FinalState::Succeeded {
                        image_size: finished.image_size,
                        image_checksum: finished.image_checksum.clone(),
                    },
                };
                // The result becomes a library image before the build reads as succeeded, so a
                // client that sees success can download it.
                let outcome = match (&outcome, row.as_ref().filter(|r| !r.state.is_final())) {
                    (FinalState::Succeeded { .. }, Some(row)) => {
                        match crate::library::publish_build_result(self.state, row).await {
                            Ok(()) => outcome,
                            // Over the owner's library quota: the user's to fix, say so.
                            Err(crate::api::ApiError::InsufficientStorage(reason)) => {
                                FinalState::Failed(reason)
                            }
                            Err(error) => {
                                tracing::error!(build_id = %build_id, error = %error, "could not publish the build result");
                                FinalState::Failed(
                                    "the image could not be stored in the library".into(),
                                )
                            }
                        }
                    }
                    _ => outcome,
                };
                self.finish(&build_id, outcome, None).await?;
            }
            Event::Failed(failed) => {
                self.flush(channel).await?;
                let outcome = if failed.timed_out {
                    FinalState::TimedOut(failed.reason.clone())
                } else {
                    FinalState::Failed(failed.reason.clone())
                };
                self.finish(&build_id, outcome, None).await?;
            }
            Event::Cancelled => {
                self.flush(channel).await?;
                let note = "[kiln] the worker stopped the build\n";
                self.finish(&build_id, FinalState::Cancelled, Some(note))
                    .await?;
            }
        }
        Ok(())
    }

    /// True when `message` is news for its build: newer than the last accepted event, for a
    /// build the store knows.
    async fn accept(&mut self, build_id: &str, message: &EventMessage) -> Result<bool, RelayError> {
        let cursor = match self.cursors.get(build_id) {
            Some(cursor) => *cursor,
            None => {
                let cursor = self.state.store.event_cursor(build_id).await?;
                self.cursors.insert(build_id.to_owned(), cursor);
                cursor
            }
        };
        let Some(last) = cursor else {
            tracing::debug!(build_id, "dropping an event for an unknown build");
            return Ok(false);
        };
        let position = (
            i64::from(message.attempt),
            i64::try_from(message.seq).unwrap_or(i64::MAX),
        );
        if position <= last {
            tracing::debug!(build_id, ?position, ?last, "dropping a repeated event");
            return Ok(false);
        }
        self.cursors.insert(build_id.to_owned(), Some(position));
        self.dirty.insert(build_id.to_owned());
        Ok(true)
    }

    /// Writes the batched log lines and moved cursors, wakes the viewers, then acks every
    /// delivery so far.
    async fn flush(&mut self, channel: &Channel) -> Result<(), RelayError> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        for (build_id, text) in batch {
            let stored = self
                .state
                .store
                .append_log(&build_id, &text, self.state.limits.max_log_bytes)
                .await?;
            if stored != LogAppend::Refused {
                let lines = text.bytes().filter(|b| *b == b'\n').count();
                self.state
                    .metrics
                    .count_log(lines as u64, text.len() as u64);
            }
            match stored {
                LogAppend::Stored | LogAppend::Truncated => self.state.notify(&build_id),
                LogAppend::Refused => self.cancel_worker(&build_id).await,
            }
        }
        for build_id in std::mem::take(&mut self.dirty) {
            if let Some(Some((attempt, seq))) = self.cursors.get(&build_id) {
                self.state
                    .store
                    .set_event_cursor(&build_id, *attempt, *seq)
                    .await?;
            }
        }
        if let Some(tag) = self.last_tag.take() {
            channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await?;
        }
        Ok(())
    }

    /// Ends a build with `outcome` (after `note`, if any) and wakes its viewers.
    async fn finish(
        &mut self,
        build_id: &str,
        outcome: FinalState,
        note: Option<&str>,
    ) -> Result<(), RelayError> {
        let now_ms = self.state.clock.now_ms();
        let changed = match note {
            Some(note) => finish_build(&self.state.store, build_id, &outcome, note, now_ms).await?,
            None => {
                self.state
                    .store
                    .finish_build(build_id, &outcome, now_ms)
                    .await?
            }
        };
        if changed {
            tracing::info!(build_id, state = %outcome.state(), "build finished");
            if let Some(row) = self.state.store.build(build_id).await? {
                self.state.metrics.observe_finished(&row);
            }
        }
        self.state.notify(build_id);
        Ok(())
    }

    /// Stores a worker's heartbeat for the fleet view. Fields are bounded: a heartbeat comes
    /// from a worker, which runs hostile builds.
    async fn record_heartbeat(
        &mut self,
        worker_id: &str,
        heartbeat: &WorkerHeartbeat,
    ) -> Result<(), RelayError> {
        let clip = |text: &str| text.chars().take(MAX_HEARTBEAT_FIELD).collect::<String>();
        let heartbeat = WorkerHeartbeat {
            host: clip(&heartbeat.host),
            arch: clip(&heartbeat.arch),
            worker_version: clip(&heartbeat.worker_version),
            concurrency: heartbeat.concurrency,
            builds: heartbeat
                .builds
                .iter()
                .filter(|id| is_build_id(id))
                .take(MAX_HEARTBEAT_BUILDS)
                .cloned()
                .collect(),
            is_draining: heartbeat.is_draining,
            stats: bounded_stats(&heartbeat.stats),
        };
        let now_ms = self.state.clock.now_ms();
        self.state
            .store
            .record_heartbeat(&clip(worker_id), &heartbeat, now_ms)
            .await?;
        Ok(())
    }

    /// A worker reports on a build that is final here: tell it to stop (once per session).
    async fn cancel_worker(&mut self, build_id: &str) {
        if !self.cancelled.insert(build_id.to_owned()) {
            return;
        }
        let final_here =
            matches!(self.state.store.build(build_id).await, Ok(Some(row)) if row.state.is_final());
        if !final_here {
            return;
        }
        tracing::info!(
            build_id,
            "asking the worker to stop a build that is already final"
        );
        if let Err(error) = self
            .state
            .broker
            .publish_control(&Control::cancel(build_id))
            .await
        {
            tracing::warn!(build_id, error = %error_chain(&error), "could not publish cancel");
        }
    }

    /// A job left its queue without a result: past the delivery limit (its workers kept dying),
    /// or past the queue TTL. Its build fails or expires, with the reason in its log.
    async fn on_dead_job(&mut self, delivery: &Delivery) -> Result<(), RelayError> {
        let job = match Job::from_bytes(&delivery.data) {
            Ok(job) => job,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "dropping an unreadable dead job");
                return Ok(());
            }
        };
        let reason = death_reason(delivery.properties.headers().as_ref());
        let limits = &self.state.limits;
        let outcome = match reason.as_deref() {
            Some("expired") => FinalState::Expired(expired_reason(limits.queue_ttl_seconds)),
            Some("delivery_limit") => FinalState::Failed(format!(
                "the build was started {} times without finishing; its workers stopped \
                 responding (the build may exhaust a worker's memory or disk)",
                limits.delivery_limit
            )),
            other => FinalState::Failed(format!(
                "the job was refused by the workers ({})",
                other.unwrap_or("no reason given")
            )),
        };
        let now_ms = self.state.clock.now_ms();
        let build_id = &job.build_id;
        if finish_build_fatally(&self.state.store, build_id, &outcome, now_ms).await? {
            tracing::info!(build_id, state = %outcome.state(), "dead-lettered job ended its build");
        }
        self.state.notify(build_id);
        Ok(())
    }
}

/// The worker's state as stored in `builds.phase`: `started`, `running:post`, `packing`, ...
fn phase_name(state: &kiln_proto::amqp::BuildState) -> String {
    use kiln_proto::amqp::BuildState as S;
    match state {
        S::Queued => "queued".into(),
        S::Started => "started".into(),
        S::Fetching => "fetching".into(),
        S::Running(section) => format!("running:{section}"),
        S::Packing => "packing".into(),
        S::Uploading => "uploading".into(),
        S::Finished => "finished".into(),
        S::Failed => "failed".into(),
        S::Cancelled => "cancelled".into(),
    }
}

/// Why RabbitMQ dead-lettered a message: `x-first-death-reason`, or the reason of the first
/// `x-death` entry (`expired`, `delivery_limit`, `rejected`, `maxlen`).
fn death_reason(headers: Option<&FieldTable>) -> Option<String> {
    let headers = headers?.inner();
    let text = |value: &AMQPValue| match value {
        AMQPValue::LongString(text) => Some(text.to_string()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    };
    if let Some(reason) = headers.get("x-first-death-reason").and_then(text) {
        return Some(reason);
    }
    let AMQPValue::FieldArray(deaths) = headers.get("x-death")? else {
        return None;
    };
    deaths.as_slice().iter().find_map(|death| match death {
        AMQPValue::FieldTable(table) => table.inner().get("reason").and_then(text),
        _ => None,
    })
}

/// A heartbeat's counters with only the steps a worker times, and histograms of the right
/// shape, so a worker cannot grow the metrics' series.
fn bounded_stats(stats: &WorkerStats) -> WorkerStats {
    let step_seconds = stats
        .step_seconds
        .iter()
        .filter(|(step, times)| {
            WORKER_STEPS.contains(&step.as_str())
                && times.cumulative.len() == STEP_SECONDS_BUCKETS.len()
        })
        .map(|(step, times)| (step.clone(), times.clone()))
        .collect();
    WorkerStats {
        step_seconds,
        ..stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn death_reasons_from_either_header() {
        let mut headers = FieldTable::default();
        assert_eq!(death_reason(Some(&headers)), None);
        let mut death = FieldTable::default();
        death.insert("reason".into(), AMQPValue::LongString("expired".into()));
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
        );
        assert_eq!(death_reason(Some(&headers)).as_deref(), Some("expired"));
        headers.insert(
            "x-first-death-reason".into(),
            AMQPValue::LongString("delivery_limit".into()),
        );
        assert_eq!(
            death_reason(Some(&headers)).as_deref(),
            Some("delivery_limit")
        );
        assert_eq!(death_reason(None), None);
    }

    #[test]
    fn phases() {
        use kiln_proto::amqp::BuildState as S;
        assert_eq!(phase_name(&S::Running("post".into())), "running:post");
        assert_eq!(phase_name(&S::Started), "started");
    }
}
