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

mod health;
mod job;
mod publisher;
mod stats;
mod transfer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kiln_proto::amqp::declare::{connect, declare_queue, declare_topology};
use kiln_proto::amqp::{Control, EventMessage, Job, Topology, WorkerHeartbeat};
use lapin::Acker;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use health::HealthReport;
pub use job::{Settle, Stop, StopHandle, Worker};
pub use publisher::{EventPublisher, EventQueue, event_queue};
pub use transfer::{SchedulerClient, TransferError};

use crate::image::SquashfsOptions;
use crate::sandbox::Sandbox;

/// How often running jobs are checked for a due lease renewal.
const RENEWAL_CHECK: Duration = Duration::from_millis(500);

/// How long a held copy waits for this worker to take it back before it goes back to the job
/// queue for any worker: the delay before a build of a dead worker starts again elsewhere.
const HELD_COPY_TTL: Duration = Duration::from_secs(30);

/// Header of a held copy: the attempt number the job had.
const ATTEMPT_HEADER: &str = "x-kiln-attempt";

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
    /// Where each heartbeat also writes a [`HealthReport`] for exec probes.
    pub health_file: PathBuf,
    /// How long running builds may take to finish after the first shutdown signal.
    pub drain_grace: Duration,
    /// How long a job's delivery stays unacked before the worker renews it through its held
    /// queue; must be below the broker's `consumer_timeout` (RabbitMQ's default: 30 min).
    pub lease_renewal: Duration,
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

/// Whether the job consumer's connection is up; a change is reported at once rather than at
/// the next heartbeat, so a readiness probe sees a connected worker without waiting.
#[derive(Debug, Default)]
struct ConnectionState {
    is_up: AtomicBool,
    changed: tokio::sync::Notify,
}

impl ConnectionState {
    fn set(&self, is_up: bool) {
        self.is_up.store(is_up, Ordering::SeqCst);
        self.changed.notify_one();
    }
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
    let connection = Arc::new(ConnectionState::default());
    let heartbeats = tokio::spawn(heartbeat(
        config.clone(),
        events,
        Arc::clone(&running),
        Arc::clone(&is_draining),
        Arc::clone(&connection),
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
            connection: &connection,
            jobs: JoinSet::new(),
            slots: HashMap::new(),
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

/// Where a running job's delivery came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The architecture's job queue: it counts against the job consumer's prefetch.
    Jobs,
    /// This worker's held queue (see [`Topology::held_queue`]).
    Held,
}

/// A running job's delivery, which a lease renewal replaces.
struct Slot {
    handle: StopHandle,
    acker: Acker,
    source: Source,
    delivered_at: tokio::time::Instant,
    /// A copy is in the held queue, not yet back: the old delivery is already acked.
    is_renewing: bool,
    job_bytes: Vec<u8>,
    attempt: u32,
}

/// One broker connection's worth of consuming.
struct Session<'a> {
    config: &'a ServeConfig,
    worker: &'a Arc<Worker>,
    running: &'a Running,
    is_draining: &'a AtomicBool,
    /// Whether this session's connection is up, for the health report.
    connection: &'a ConnectionState,
    /// The jobs of this session; each ends with its build id, handle and what to do with it.
    jobs: JoinSet<(String, StopHandle, Settle)>,
    /// The delivery each job of this session currently holds.
    slots: HashMap<String, Slot>,
}

/// The channels and consumers of a session.
struct Links {
    /// Job consumer (job queue) and lease renewals (publishing, with confirms).
    channel: lapin::Channel,
    /// The job consumer, absent while every build slot is taken by held jobs or when draining.
    jobs: Option<(String, lapin::Consumer)>,
    /// Consumers started so far, for unique tags.
    generation: u32,
    /// Prefetch of the current job consumer.
    prefetch: u16,
    held_queue: String,
}

impl Session<'_> {
    async fn run(&mut self, shutdown: &CancellationToken) -> Result<(), SessionError> {
        let connection = connect(&self.config.amqp_url, "kiln-worker jobs").await?;
        self.connection.set(true);
        let result = self.consume(&connection, shutdown).await;
        self.connection.set(false);
        if result.is_err() {
            // The deliveries are gone with the connection: stop their builds, send nothing final.
            self.abandon_all();
        }
        while let Some(joined) = self.jobs.join_next().await {
            if let Ok((build_id, handle, settle)) = joined {
                self.settle(&build_id, &handle, settle).await;
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

    /// Jobs whose delivery came from the held queue (or is on its way there).
    fn held_count(&self) -> u16 {
        let held = self
            .slots
            .values()
            .filter(|slot| slot.source == Source::Held || slot.is_renewing)
            .count();
        u16::try_from(held).unwrap_or(u16::MAX)
    }

    /// Makes the job consumer's prefetch the free build slots: held jobs do not count against
    /// a consumer's prefetch, so without this a worker would take more jobs than it can run.
    async fn refresh_job_consumer(
        &self,
        links: &mut Links,
        is_draining: bool,
    ) -> Result<(), SessionError> {
        let wanted = if is_draining {
            0
        } else {
            self.config.concurrency.saturating_sub(self.held_count())
        };
        if links.jobs.is_some() && wanted == links.prefetch {
            return Ok(());
        }
        if let Some((tag, _)) = links.jobs.take() {
            links
                .channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await?;
        }
        links.prefetch = wanted;
        if wanted == 0 {
            return Ok(());
        }
        links
            .channel
            .basic_qos(wanted, BasicQosOptions::default())
            .await?;
        links.generation += 1;
        let tag = format!("kiln-worker-{}-{}", self.config.worker_id, links.generation);
        let consumer = links
            .channel
            .basic_consume(
                self.config
                    .topology
                    .job_queue(&self.config.arch)
                    .name
                    .as_str()
                    .into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        links.jobs = Some((tag, consumer));
        Ok(())
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
        let held = topology.held_queue(&config.worker_id, &config.arch);
        declare_queue(&channel, &held).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let mut links = Links {
            channel,
            jobs: None,
            generation: 0,
            prefetch: 0,
            held_queue: held.name.clone(),
        };
        self.refresh_job_consumer(&mut links, false).await?;
        // Held jobs come on their own channel: its prefetch is the whole concurrency.
        let held_channel = connection.create_channel().await?;
        held_channel
            .basic_qos(config.concurrency, BasicQosOptions::default())
            .await?;
        let mut held_deliveries = held_channel
            .basic_consume(
                held.name.as_str().into(),
                format!("kiln-worker-{}-held", config.worker_id)
                    .as_str()
                    .into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut controls = control_consumer(connection, topology).await?;
        tracing::info!(queue = %topology.job_queue(&config.arch).name, "consuming jobs");
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        let mut renewals = tokio::time::interval(RENEWAL_CHECK);
        loop {
            if drain_deadline.is_some() && self.jobs.is_empty() {
                return Ok(());
            }
            tokio::select! {
                () = shutdown.cancelled(), if drain_deadline.is_none() => {
                    tracing::info!(grace = ?config.drain_grace, running = self.jobs.len(),
                        "draining: taking no new jobs");
                    self.is_draining.store(true, Ordering::SeqCst);
                    held_channel
                        .basic_cancel(
                            format!("kiln-worker-{}-held", config.worker_id).as_str().into(),
                            BasicCancelOptions::default(),
                        )
                        .await?;
                    self.refresh_job_consumer(&mut links, true).await?;
                    drain_deadline = Some(tokio::time::Instant::now() + config.drain_grace);
                }
                () = sleep_until(drain_deadline) => {
                    tracing::warn!(running = self.jobs.len(),
                        "drain grace over: giving the remaining jobs back");
                    self.abandon_all();
                    drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
                }
                delivery = next_delivery(&mut links.jobs) => {
                    let delivery = delivery.ok_or(SessionError::ConsumerEnded("job"))??;
                    self.start(delivery, Source::Jobs).await;
                }
                delivery = held_deliveries.next(), if drain_deadline.is_none() => {
                    let delivery = delivery.ok_or(SessionError::ConsumerEnded("held job"))??;
                    self.on_held(delivery, &mut links).await?;
                }
                control = controls.next() => {
                    let control = control.ok_or(SessionError::ConsumerEnded("control"))??;
                    self.on_control(&control.data);
                }
                _ = renewals.tick() => {
                    self.renew_leases(&mut links, drain_deadline.is_some()).await?;
                }
                Some(joined) = self.jobs.join_next() => {
                    if let Ok((build_id, handle, settle)) = joined {
                        self.settle(&build_id, &handle, settle).await;
                        self.refresh_job_consumer(&mut links, drain_deadline.is_some()).await?;
                    }
                }
            }
        }
    }

    /// Acks or gives back the job's current delivery and forgets the job.
    async fn settle(&mut self, build_id: &str, handle: &StopHandle, settle: Settle) {
        {
            let mut running = lock(self.running);
            if running
                .get(build_id)
                .is_some_and(|current| current.is_same(handle))
            {
                running.remove(build_id);
            }
        }
        let Some(slot) = self
            .slots
            .remove(build_id)
            .filter(|slot| slot.handle.is_same(handle))
        else {
            return;
        };
        if slot.is_renewing {
            // The old delivery is acked and the copy not back: it will come and be dropped.
            return;
        }
        settle_delivery(&slot.acker, build_id, settle).await;
    }

    /// Moves every job held close to the broker's delivery timeout into the held queue.
    async fn renew_leases(
        &mut self,
        links: &mut Links,
        is_draining: bool,
    ) -> Result<(), SessionError> {
        let due: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, slot)| {
                !slot.is_renewing && slot.delivered_at.elapsed() >= self.config.lease_renewal
            })
            .map(|(id, _)| id.clone())
            .collect();
        for build_id in due {
            let Some(slot) = self.slots.get_mut(&build_id) else {
                continue;
            };
            let mut headers = FieldTable::default();
            headers.insert(
                ATTEMPT_HEADER.into(),
                AMQPValue::LongLongInt(i64::from(slot.attempt)),
            );
            let properties = lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(build_id.as_str().into())
                .with_headers(headers)
                .with_expiration(HELD_COPY_TTL.as_millis().to_string().into());
            let confirmation = links
                .channel
                .basic_publish(
                    "".into(),
                    links.held_queue.as_str().into(),
                    lapin::options::BasicPublishOptions::default(),
                    &slot.job_bytes,
                    properties,
                )
                .await?
                .await?;
            if let lapin::Confirmation::Nack(_) = confirmation {
                tracing::warn!(%build_id, "the broker refused the held copy; trying again");
                continue;
            }
            slot.is_renewing = true;
            let acker = slot.acker.clone();
            // Stop taking jobs into the slot this ack frees before it is freed.
            self.refresh_job_consumer(links, is_draining).await?;
            acker.ack(BasicAckOptions::default()).await?;
            tracing::info!(%build_id, "renewed the job's lease through the held queue");
        }
        Ok(())
    }

    /// A job from the held queue: the copy of a running job coming back, or a job left there by
    /// an earlier process with this worker id.
    async fn on_held(
        &mut self,
        delivery: lapin::message::Delivery,
        links: &mut Links,
    ) -> Result<(), SessionError> {
        let build_id = Job::from_bytes(&delivery.data)
            .map(|job| job.build_id)
            .unwrap_or_default();
        match self.slots.get_mut(&build_id) {
            Some(slot) if slot.is_renewing => {
                slot.acker = delivery.acker;
                slot.source = Source::Held;
                slot.delivered_at = tokio::time::Instant::now();
                slot.is_renewing = false;
            }
            Some(_) => {
                // A second copy of a job that runs under another delivery.
                delivery.acker.ack(BasicAckOptions::default()).await?;
            }
            None => {
                self.start(delivery, Source::Held).await;
                self.refresh_job_consumer(links, false).await?;
            }
        }
        Ok(())
    }

    /// Starts the job in `delivery`, or refuses it when it is unreadable.
    async fn start(&mut self, delivery: lapin::message::Delivery, source: Source) {
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
        self.slots.insert(
            job.build_id.clone(),
            Slot {
                handle: handle.clone(),
                acker: delivery.acker,
                source,
                delivered_at: tokio::time::Instant::now(),
                is_renewing: false,
                job_bytes: delivery.data,
                attempt,
            },
        );
        let worker = Arc::clone(self.worker);
        self.jobs.spawn(async move {
            let build_id = job.build_id.clone();
            let settle = job::run(worker, job, attempt, handle.clone()).await;
            (build_id, handle, settle)
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

/// An exclusive queue of this connection on the control exchange (every worker hears every
/// cancel and acts on those of its own builds).
async fn control_consumer(
    connection: &lapin::Connection,
    topology: &Topology,
) -> Result<lapin::Consumer, SessionError> {
    let channel = connection.create_channel().await?;
    let queue = channel
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
    channel
        .queue_bind(
            queue.name().clone(),
            topology.control_exchange().name.as_str().into(),
            Topology::control_binding_key().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "kiln-worker-control".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(consumer)
}

/// The next delivery of the job consumer; pending while there is none.
async fn next_delivery(
    jobs: &mut Option<(String, lapin::Consumer)>,
) -> Option<Result<lapin::message::Delivery, lapin::Error>> {
    match jobs {
        Some((_, consumer)) => consumer.next().await,
        None => std::future::pending().await,
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
/// `x-delivery-count`; a job that went through a held queue carries the attempt it had then
/// in [`ATTEMPT_HEADER`]. Only growth matters: the scheduler drops events of older attempts.
fn delivery_attempt(headers: Option<&FieldTable>) -> u32 {
    let number = |name: &str| {
        headers
            .and_then(|headers| headers.inner().get(name))
            .and_then(header_number)
            .unwrap_or(0)
    };
    number("x-delivery-count")
        .saturating_add(number(ATTEMPT_HEADER))
        .saturating_add(1)
}

fn header_number(value: &AMQPValue) -> Option<u32> {
    match value {
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(u32::from(*n)),
        _ => None,
    }
}

/// Publishes a heartbeat every interval: who this worker is and what it runs; and writes the
/// same as a [`HealthReport`] for exec probes.
async fn heartbeat(
    config: ServeConfig,
    events: EventQueue,
    running: Running,
    is_draining: Arc<AtomicBool>,
    connection: Arc<ConnectionState>,
) {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let mut tick = tokio::time::interval(config.heartbeat_interval);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = connection.changed.notified() => {}
        }
        let mut builds: Vec<String> = lock(&running).keys().cloned().collect();
        builds.sort();
        let beat = WorkerHeartbeat {
            host: host.clone(),
            arch: config.arch.clone(),
            worker_version: env!("CARGO_PKG_VERSION").into(),
            concurrency: u32::from(config.concurrency),
            builds,
            is_draining: is_draining.load(Ordering::SeqCst),
            stats: events.stats().snapshot(),
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let report = HealthReport {
            worker_id: config.worker_id.clone(),
            time_unix_ms: now_ms,
            is_connected: connection.is_up.load(Ordering::SeqCst),
            is_draining: beat.is_draining,
            builds: beat.builds.len(),
        };
        let path = config.health_file.clone();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || report.write(&path)).await {
            tracing::warn!(error = %error, file = %config.health_file.display(),
                "failed to write the health report");
        }
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
