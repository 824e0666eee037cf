//! `kiln-worker serve`: the AMQP consumer. It takes jobs from its architecture's quorum queue,
//! runs each through the build pipeline (`job.rs`), and settles the delivery only when the
//! outcome is recorded: acked after the image is uploaded and the final event confirmed, given
//! back (nack with requeue) when the worker cannot finish it. A worker that dies holds no job:
//! the broker redelivers what it had.
//!
//! Data flow: broker → [`Session`] (one connection: the job consumer with prefetch = concurrency,
//! and an exclusive queue on the control exchange for cancels) → `job::run` per delivery →
//! events through `publisher.rs` (its own connection) → the scheduler's relay.
//!
//! Failures of the connection end the session: the builds it holds are abandoned (their
//! deliveries return to the queue when the connection closes), and a new session starts with
//! backoff. The first shutdown signal drains: no new jobs, running ones get
//! [`ServeConfig::drain_grace`] to finish, the rest are given back.

mod job;
mod publisher;
mod transfer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kiln_proto::amqp::declare::{connect, declare_topology};
use kiln_proto::amqp::{Control, EventMessage, Job, Topology, WorkerHeartbeat};
use lapin::Acker;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use job::{Settle, Stop, StopHandle, Worker};
pub use publisher::{EventPublisher, EventQueue, event_queue};
pub use transfer::{SchedulerClient, TransferError};

use crate::image::SquashfsOptions;
use crate::sandbox::Sandbox;

/// How a worker serves; built by the command line.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Broker URL.
    pub amqp_url: String,
    /// Where this worker reaches the scheduler; job URLs are resolved against it.
    pub scheduler_url: String,
    /// Queue names (their prefix); must match the scheduler's.
    pub topology: Topology,
    /// Go architecture this worker builds for: it consumes that queue.
    pub arch: String,
    /// Builds run at once (the prefetch count).
    pub concurrency: u16,
    /// Id in events and heartbeats.
    pub worker_id: String,
    /// Scratch space for builds.
    pub work_dir: PathBuf,
    /// Layer cache.
    pub cache_dir: PathBuf,
    /// Registries spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// SquashFS settings.
    pub squashfs: SquashfsOptions,
    /// Largest build context accepted, bytes.
    pub max_context_bytes: u64,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// How long running builds may take to finish after the first shutdown signal.
    pub drain_grace: Duration,
}

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The scheduler URL is unusable.
    #[error("bad scheduler URL")]
    Scheduler(#[from] TransferError),
    /// The scratch directory could not be made.
    #[error("failed to create the work directory {0}")]
    WorkDir(PathBuf, #[source] std::io::Error),
}

/// Why one session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("amqp operation failed")]
    Amqp(#[from] lapin::Error),
    #[error("the broker ended the {0} consumer")]
    ConsumerEnded(&'static str),
}

/// The jobs running on this worker, by build id.
type Running = Arc<Mutex<HashMap<String, StopHandle>>>;

fn lock(running: &Running) -> std::sync::MutexGuard<'_, HashMap<String, StopHandle>> {
    running.lock().unwrap_or_else(|e| e.into_inner())
}

/// The error and its causes on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Serves jobs until `shutdown` (then drains) or until a second `force` (then gives back
/// everything at once).
///
/// # Errors
/// [`ServeError`] for a configuration that cannot work; broker trouble is retried forever.
pub async fn serve(
    config: ServeConfig,
    sandbox: Sandbox,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&config.work_dir)
        .map_err(|e| ServeError::WorkDir(config.work_dir.clone(), e))?;
    let scheduler = SchedulerClient::new(&config.scheduler_url)?;
    let (events, publisher) = event_queue(&config.amqp_url, config.topology.clone(), &config.arch);
    let publisher_stop = CancellationToken::new();
    let publisher = tokio::spawn(publisher.run(publisher_stop.clone()));
    let worker = Arc::new(Worker {
        sandbox: Arc::new(sandbox),
        scheduler,
        events: events.clone(),
        worker_id: config.worker_id.clone(),
        work_dir: config.work_dir.clone(),
        cache_dir: config.cache_dir.clone(),
        insecure_registries: config.insecure_registries.clone(),
        squashfs: config.squashfs.clone(),
        max_context_bytes: config.max_context_bytes,
    });
    let running: Running = Arc::default();
    let is_draining = Arc::new(AtomicBool::new(false));
    let heartbeats = tokio::spawn(heartbeat(
        config.clone(),
        events,
        Arc::clone(&running),
        Arc::clone(&is_draining),
    ));
    tracing::info!(worker_id = %config.worker_id, arch = %config.arch,
        concurrency = config.concurrency, "worker serving");
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut session = Session {
            config: &config,
            worker: &worker,
            running: &running,
            is_draining: &is_draining,
            jobs: JoinSet::new(),
        };
        match session.run(&shutdown).await {
            Ok(()) => break,
            Err(error) => {
                let text = error_chain(&error);
                if text.contains("PRECONDITION_FAILED") && text.contains("timed out") {
                    tracing::error!(error = %text,
                        "the broker took a job back because it was not acked within its \
                         consumer_timeout: raise consumer_timeout above the longest build \
                         (deploy/rabbitmq/kiln.conf)");
                } else {
                    tracing::warn!(error = %text, retry_in = ?backoff, "job consumer disconnected");
                }
            }
        }
        if is_draining.load(Ordering::SeqCst) {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    heartbeats.abort();
    drop(worker);
    // Let queued events (the last final ones) reach the broker, but not forever.
    let flushed = tokio::time::timeout(Duration::from_secs(10), publisher).await;
    if flushed.is_err() {
        publisher_stop.cancel();
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// One broker connection's worth of consuming.
struct Session<'a> {
    config: &'a ServeConfig,
    worker: &'a Arc<Worker>,
    running: &'a Running,
    is_draining: &'a AtomicBool,
    /// The jobs of this session: each ends with its delivery's acker and what to do with it.
    jobs: JoinSet<(Acker, String, Settle)>,
}

impl Session<'_> {
    async fn run(&mut self, shutdown: &CancellationToken) -> Result<(), SessionError> {
        let connection = connect(&self.config.amqp_url, "kiln-worker jobs").await?;
        let result = self.consume(&connection, shutdown).await;
        if result.is_err() {
            // The deliveries are gone with the connection: stop their builds, send nothing final.
            self.abandon_all();
        }
        while let Some(joined) = self.jobs.join_next().await {
            if let Ok((acker, build_id, settle)) = joined {
                settle_delivery(&acker, &build_id, settle).await;
            }
        }
        let _ = connection.close(200, "worker stopping".into()).await;
        result
    }

    fn abandon_all(&self) {
        for handle in lock(self.running).values() {
            handle.stop(Stop::Abandoned);
        }
    }

    async fn consume(
        &mut self,
        connection: &lapin::Connection,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        let config = self.config;
        let topology = &config.topology;
        let channel = connection.create_channel().await?;
        declare_topology(&channel, topology, std::slice::from_ref(&config.arch)).await?;
        channel
            .basic_qos(config.concurrency, BasicQosOptions::default())
            .await?;
        let consumer_tag = format!("kiln-worker-{}", config.worker_id);
        let mut deliveries = channel
            .basic_consume(
                topology.job_queue(&config.arch).name.as_str().into(),
                consumer_tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let control_channel = connection.create_channel().await?;
        let control_queue = control_channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        control_channel
            .queue_bind(
                control_queue.name().clone(),
                topology.control_exchange().name.as_str().into(),
                Topology::control_binding_key().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut controls = control_channel
            .basic_consume(
                control_queue.name().clone(),
                "kiln-worker-control".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue = %topology.job_queue(&config.arch).name, "consuming jobs");
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            if drain_deadline.is_some() && self.jobs.is_empty() {
                return Ok(());
            }
            tokio::select! {
                () = shutdown.cancelled(), if drain_deadline.is_none() => {
                    tracing::info!(grace = ?config.drain_grace, running = self.jobs.len(),
                        "draining: taking no new jobs");
                    self.is_draining.store(true, Ordering::SeqCst);
                    channel
                        .basic_cancel(consumer_tag.as_str().into(), BasicCancelOptions::default())
                        .await?;
                    drain_deadline = Some(tokio::time::Instant::now() + config.drain_grace);
                }
                () = sleep_until(drain_deadline) => {
                    tracing::warn!(running = self.jobs.len(),
                        "drain grace over: giving the remaining jobs back");
                    self.abandon_all();
                    drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
                }
                delivery = deliveries.next(), if drain_deadline.is_none() => {
                    let delivery = delivery.ok_or(SessionError::ConsumerEnded("job"))??;
                    self.start(delivery).await;
                }
                control = controls.next() => {
                    let control = control.ok_or(SessionError::ConsumerEnded("control"))??;
                    self.on_control(&control.data);
                }
                Some(joined) = self.jobs.join_next() => {
                    if let Ok((acker, build_id, settle)) = joined {
                        settle_delivery(&acker, &build_id, settle).await;
                    }
                }
            }
        }
    }

    /// Starts the job in `delivery`, or refuses it when it is unreadable.
    async fn start(&mut self, delivery: lapin::message::Delivery) {
        let job = match Job::from_bytes(&delivery.data) {
            Ok(job) if job.arch == self.config.arch => job,
            Ok(job) => {
                tracing::error!(build_id = %job.build_id, arch = %job.arch,
                    "a job for another architecture reached this queue; refusing it");
                let _ = delivery.acker.reject(Default::default()).await;
                return;
            }
            Err(error) => {
                // Dead-lettered with reason `rejected`: the scheduler fails the build, if any.
                tracing::error!(error = %error_chain(&error), "refusing an unreadable job");
                let _ = delivery.acker.reject(Default::default()).await;
                return;
            }
        };
        let attempt = delivery_attempt(delivery.properties.headers().as_ref());
        let handle = StopHandle::default();
        let previous = lock(self.running).insert(job.build_id.clone(), handle.clone());
        if let Some(previous) = previous {
            // The broker gave back a job this worker still runs under a lost delivery.
            previous.stop(Stop::Abandoned);
        }
        tracing::info!(build_id = %job.build_id, attempt, "job started");
        let worker = Arc::clone(self.worker);
        let running = Arc::clone(self.running);
        let acker = delivery.acker;
        self.jobs.spawn(async move {
            let build_id = job.build_id.clone();
            let settle = job::run(worker, job, attempt, handle.clone()).await;
            let mut running = lock(&running);
            if running
                .get(&build_id)
                .is_some_and(|current| current.is_same(&handle))
            {
                running.remove(&build_id);
            }
            drop(running);
            (acker, build_id, settle)
        });
    }

    fn on_control(&self, data: &[u8]) {
        match Control::from_bytes(data) {
            Ok(Control::Cancel { build_id, .. }) => {
                if let Some(handle) = lock(self.running).get(&build_id) {
                    tracing::info!(%build_id, "cancelling on request");
                    handle.stop(Stop::Cancelled);
                }
            }
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "ignoring an unreadable control message");
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn settle_delivery(acker: &Acker, build_id: &str, settle: Settle) {
    let result = match settle {
        Settle::Ack => acker.ack(BasicAckOptions::default()).await,
        Settle::Requeue => {
            acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
        }
    };
    match result {
        Ok(true) => tracing::info!(build_id, ?settle, "job settled"),
        Ok(false) => tracing::warn!(
            build_id,
            ?settle,
            "the delivery went with its channel; the broker will redeliver the job"
        ),
        // The connection is gone: the broker gives the job to the next worker.
        Err(error) => tracing::warn!(build_id, ?settle, error = %error_chain(&error),
            "could not settle the job; the broker will redeliver it"),
    }
}

/// The delivery's attempt number, from 1: quorum queues count earlier deliveries in
/// `x-delivery-count`.
fn delivery_attempt(headers: Option<&FieldTable>) -> u32 {
    let count = headers
        .and_then(|headers| headers.inner().get("x-delivery-count"))
        .and_then(|value| match value {
            AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongUInt(n) => Some(*n),
            AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
            AMQPValue::ShortShortUInt(n) => Some(u32::from(*n)),
            _ => None,
        })
        .unwrap_or(0);
    count.saturating_add(1)
}

/// Publishes a heartbeat every interval: who this worker is and what it runs.
async fn heartbeat(
    config: ServeConfig,
    events: EventQueue,
    running: Running,
    is_draining: Arc<AtomicBool>,
) {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let mut tick = tokio::time::interval(config.heartbeat_interval);
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        let mut builds: Vec<String> = lock(&running).keys().cloned().collect();
        builds.sort();
        let beat = WorkerHeartbeat {
            host: host.clone(),
            arch: config.arch.clone(),
            worker_version: env!("CARGO_PKG_VERSION").into(),
            concurrency: u32::from(config.concurrency),
            builds,
            is_draining: is_draining.load(Ordering::SeqCst),
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        events.send(EventMessage::new(
            config.worker_id.clone(),
            None,
            seq,
            now_ms,
            beat.into(),
        ));
        seq += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_count_from_one() {
        assert_eq!(delivery_attempt(None), 1);
        let mut headers = FieldTable::default();
        headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(2));
        assert_eq!(delivery_attempt(Some(&headers)), 3);
    }
}
