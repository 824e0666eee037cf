//! Publishing to the workers: jobs onto the per-arch quorum queues, cancel requests onto the
//! control exchange.
//!
//! Every publish waits for the broker's confirm and is `mandatory`, so a job is either on a
//! queue (replicated, for quorum queues) or the submission fails; an unroutable job comes back
//! instead of vanishing (STYLE §4.6). Jobs are persistent and carry the queue TTL as their
//! expiration: a job nobody took in time is dead-lettered with reason `expired`, and the relay
//! marks its build expired.
//!
//! The connection is made on first use and again after any failure, with backoff, within a
//! deadline short enough for the client's 30 s submit timeout (build-api.md §1.3). The
//! topology is declared on every (re)connect; declaring is idempotent as long as the
//! arguments agree, and both sides take them from `kiln_proto::amqp::Topology`.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use kiln_proto::amqp::declare::{connect, declare_topology};
use kiln_proto::amqp::{Control, Job, Topology};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::Mutex;

/// How long one publish may keep retrying before the caller hears of the failure.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Connecting, declaring or publishing failed at the AMQP level.
    #[error("amqp operation failed")]
    Amqp(#[from] lapin::Error),
    /// The broker refused the message (`basic.nack`).
    #[error("the broker did not accept the message")]
    Nacked,
    /// No queue is bound for the routing key.
    #[error("no queue takes messages with routing key {0:?}")]
    Unroutable(String),
    /// The deadline passed while retrying; the last failure is the source.
    #[error("gave up publishing after {0:?}")]
    GaveUp(Duration, #[source] Box<QueueError>),
}

/// Publishes what the scheduler sends to workers. A trait so router tests can record messages
/// without a broker; the real one is [`AmqpBroker`].
pub trait Broker: Send + Sync + fmt::Debug {
    /// Publishes `job` to the queue of its arch, persistent, expiring after `ttl`; resolves once
    /// the broker confirmed it.
    fn publish_job<'a>(
        &'a self,
        job: &'a Job,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), QueueError>>;

    /// Publishes a control message to every worker; resolves once the broker confirmed it.
    fn publish_control<'a>(&'a self, control: &'a Control)
    -> BoxFuture<'a, Result<(), QueueError>>;

    /// What the broker says about the job queue of `arch` (a passive declare, which counts
    /// ready messages only, never unacked deliveries).
    fn job_queue_stats<'a>(
        &'a self,
        arch: &'a str,
    ) -> BoxFuture<'a, Result<QueueStats, QueueError>>;

    /// Resolves once the broker answered (connecting first when needed): `/readyz`.
    fn check(&self) -> BoxFuture<'_, Result<(), QueueError>>;
}

/// One queue as a passive declare reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages ready for delivery.
    pub ready: u32,
    /// Consumers attached.
    pub consumers: u32,
}

/// The AMQP publisher.
pub struct AmqpBroker {
    // Constant fields.
    url: String,
    topology: Topology,
    arches: Vec<String>,
    // Mutable: the current connection and its confirm-mode channel, made on demand.
    link: Mutex<Option<(Connection, Channel)>>,
}

impl fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("topology", &self.topology)
            .field("arches", &self.arches)
            .finish_non_exhaustive()
    }
}

/// A message to publish.
struct Outgoing {
    exchange: String,
    routing_key: String,
    body: Vec<u8>,
    properties: BasicProperties,
    mandatory: bool,
}

impl AmqpBroker {
    /// A publisher for the broker at `url` (not connected yet) that declares the job queues of
    /// `arches`.
    pub fn new(url: impl Into<String>, topology: Topology, arches: Vec<String>) -> Self {
        Self {
            url: url.into(),
            topology,
            arches,
            link: Mutex::new(None),
        }
    }

    /// Connects now and declares the topology, so a misconfigured broker shows at start-up.
    ///
    /// # Errors
    /// [`QueueError::Amqp`].
    pub async fn connect(&self) -> Result<(), QueueError> {
        let mut link = self.link.lock().await;
        if link.is_none() {
            *link = Some(open_channel(&self.url, &self.topology, &self.arches).await?);
        }
        Ok(())
    }

    /// Closes the connection, if any.
    pub async fn close(&self) {
        if let Some((connection, _)) = self.link.lock().await.take() {
            let _ = connection.close(200, "scheduler stopping".into()).await;
        }
    }

    async fn publish(&self, message: Outgoing) -> Result<(), QueueError> {
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let error = match self.publish_once(&message).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            // Drop the link; the next attempt reconnects and declares the topology again.
            if let Some((connection, _)) = self.link.lock().await.take() {
                let _ = connection.close(200, "reconnecting".into()).await;
            }
            if started.elapsed() + backoff > PUBLISH_DEADLINE {
                return Err(QueueError::GaveUp(PUBLISH_DEADLINE, Box::new(error)));
            }
            tracing::warn!(error = %error, exchange = %message.exchange, "publish failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// A fresh channel on the current connection, reconnecting once when the connection is
    /// gone; for probes whose failures must not close the publishing channel.
    async fn probe_channel(&self) -> Result<Channel, QueueError> {
        let mut link = self.link.lock().await;
        let mut reconnected = false;
        loop {
            if link.is_none() {
                *link = Some(open_channel(&self.url, &self.topology, &self.arches).await?);
                reconnected = true;
            }
            let Some((connection, _)) = link.as_ref() else {
                unreachable!("the link was just made");
            };
            match connection.create_channel().await {
                Ok(channel) => return Ok(channel),
                Err(error) if reconnected => return Err(error.into()),
                Err(_) => {
                    // The connection died since it was made (broker restart): make a new one.
                    if let Some((connection, _)) = link.take() {
                        let _ = connection.close(200, "reconnecting".into()).await;
                    }
                }
            }
        }
    }

    async fn publish_once(&self, message: &Outgoing) -> Result<(), QueueError> {
        let mut link = self.link.lock().await;
        if link.is_none() {
            *link = Some(open_channel(&self.url, &self.topology, &self.arches).await?);
        }
        let Some((_, channel)) = link.as_ref() else {
            unreachable!("the link was just made");
        };
        let confirm = channel
            .basic_publish(
                message.exchange.as_str().into(),
                ShortString::try_new(message.routing_key.clone())
                    .map_err(|_| QueueError::Unroutable(message.routing_key.clone()))?,
                BasicPublishOptions {
                    mandatory: message.mandatory,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                message.properties.clone(),
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_returned)) => {
                Err(QueueError::Unroutable(message.routing_key.clone()))
            }
            Confirmation::Nack(_) => Err(QueueError::Nacked),
        }
    }
}

impl Broker for AmqpBroker {
    fn publish_job<'a>(
        &'a self,
        job: &'a Job,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(job.build_id.as_str().into())
                .with_expiration(ttl.as_millis().to_string().into());
            self.publish(Outgoing {
                exchange: self.topology.jobs_exchange().name,
                routing_key: Topology::job_routing_key(&job.arch),
                body: job.to_bytes(),
                properties,
                mandatory: true,
            })
            .await
        })
    }

    fn publish_control<'a>(
        &'a self,
        control: &'a Control,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            self.publish(Outgoing {
                exchange: self.topology.control_exchange().name,
                routing_key: control.routing_key(),
                body: control.to_bytes(),
                properties: BasicProperties::default().with_content_type("application/json".into()),
                // No worker may be listening (none runs the build any more): that is fine.
                mandatory: false,
            })
            .await
        })
    }

    fn job_queue_stats<'a>(
        &'a self,
        arch: &'a str,
    ) -> BoxFuture<'a, Result<QueueStats, QueueError>> {
        Box::pin(async move {
            let channel = self.probe_channel().await?;
            let declared = channel
                .queue_declare(
                    self.topology.job_queue(arch).name.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            // A failed passive declare closes the channel itself; a good one is closed here.
            let queue = declared?;
            let _ = channel.close(200, "probe done".into()).await;
            Ok(QueueStats {
                ready: queue.message_count(),
                consumers: queue.consumer_count(),
            })
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let channel = self.probe_channel().await?;
            let _ = channel.close(200, "probe done".into()).await;
            Ok(())
        })
    }
}

/// Connects to `url`, declares the topology (with the job queues of `arches`) and opens a
/// channel in confirm mode.
async fn open_channel(
    url: &str,
    topology: &Topology,
    arches: &[String],
) -> Result<(Connection, Channel), lapin::Error> {
    let connection = connect(url, "kiln-scheduler publisher").await?;
    let channel = connection.create_channel().await?;
    declare_topology(&channel, topology, arches).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}
