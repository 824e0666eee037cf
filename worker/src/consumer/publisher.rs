//! Where a build's events cross the broker: every [`BuildReporter`](crate::events::BuildReporter)
//! of a serving worker hands its events to a [`BuildSink`], which queues them for the one
//! [`EventPublisher`] task of the worker. The task publishes them in order on the events
//! exchange over its own connection, reconnecting with backoff and retrying the message at hand,
//! so a broker restart delays events but does not drop them while the worker lives.
//!
//! Log lines and progress are published transient without waiting for the broker (they are
//! many and a lost one costs a line); final events (`finished`, `failed`, `cancelled`) are
//! persistent and awaited: the job is acked only after its final event is confirmed.

use std::sync::Mutex;
use std::time::Duration;

use kiln_proto::amqp::declare::{connect, declare_topology};
use kiln_proto::amqp::{EventMessage, Topology};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::stats::{BuildStats, StatsRecorder};
use crate::events::EventSink;

/// Why publishing one event failed; the publisher reconnects and tries again.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("amqp operation failed")]
    Amqp(#[from] lapin::Error),
    #[error("the broker did not accept the event")]
    Nacked,
}

/// One event waiting to be published.
struct Outgoing {
    message: EventMessage,
    /// Told whether the broker confirmed the message; only for final events.
    confirmed: Option<oneshot::Sender<()>>,
}

/// The sending side: cheap to clone, one per worker.
#[derive(Clone)]
pub struct EventQueue {
    sender: mpsc::UnboundedSender<Outgoing>,
    stats: StatsRecorder,
}

impl EventQueue {
    /// A sink for one build; its final event can be awaited with the returned receiver.
    pub fn build_sink(&self) -> (BuildSink, oneshot::Receiver<()>) {
        let (confirmed, receiver) = oneshot::channel();
        let sink = BuildSink {
            queue: self.clone(),
            final_confirmed: Mutex::new(Some(confirmed)),
            stats: self.stats.build(),
        };
        (sink, receiver)
    }

    /// The counters of every build queued here, for the heartbeats.
    pub fn stats(&self) -> &StatsRecorder {
        &self.stats
    }

    /// Queues a message that nobody waits for (heartbeats).
    pub fn send(&self, message: EventMessage) {
        let _ = self.sender.send(Outgoing {
            message,
            confirmed: None,
        });
    }
}

/// The [`EventSink`] of one build on a serving worker.
pub struct BuildSink {
    queue: EventQueue,
    /// Handed to the first final event of the build.
    final_confirmed: Mutex<Option<oneshot::Sender<()>>>,
    /// Counts the build's events into the worker's counters.
    stats: BuildStats,
}

impl EventSink for BuildSink {
    fn send(&self, message: &EventMessage) {
        self.stats.record(message);
        let confirmed = if message.is_final() {
            self.final_confirmed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
        } else {
            None
        };
        let _ = self.queue.sender.send(Outgoing {
            message: message.clone(),
            confirmed,
        });
    }
}

/// The publishing task's end of the queue.
pub struct EventPublisher {
    url: String,
    topology: Topology,
    arch: String,
    receiver: mpsc::UnboundedReceiver<Outgoing>,
}

/// A new queue and the publisher that drains it; run the publisher with [`EventPublisher::run`].
pub fn event_queue(url: &str, topology: Topology, arch: &str) -> (EventQueue, EventPublisher) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (
        EventQueue {
            sender,
            stats: StatsRecorder::default(),
        },
        EventPublisher {
            url: url.to_owned(),
            topology,
            arch: arch.to_owned(),
            receiver,
        },
    )
}

impl EventPublisher {
    /// Publishes until every [`EventQueue`] is dropped; `stop` gives up on a message the
    /// broker does not take (at shutdown, when nobody can wait any longer).
    pub async fn run(mut self, stop: CancellationToken) {
        let mut link: Option<(Connection, Channel)> = None;
        let mut backoff = Duration::from_millis(100);
        while let Some(outgoing) = self.receiver.recv().await {
            loop {
                match self.publish(&mut link, &outgoing.message).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        if let Some(confirmed) = outgoing.confirmed {
                            let _ = confirmed.send(());
                        }
                        break;
                    }
                    Err(error) => {
                        if let Some((connection, _)) = link.take() {
                            let _ = connection.close(200, "reconnecting".into()).await;
                        }
                        tracing::warn!(error = %crate::consumer::error_chain(&error),
                            retry_in = ?backoff, "publishing an event failed");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = stop.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        if let Some((connection, _)) = link {
            let _ = connection.close(200, "worker stopping".into()).await;
        }
    }

    async fn publish(
        &self,
        link: &mut Option<(Connection, Channel)>,
        message: &EventMessage,
    ) -> Result<(), PublishError> {
        if link.is_none() {
            let connection = connect(&self.url, "kiln-worker events").await?;
            let channel = connection.create_channel().await?;
            declare_topology(&channel, &self.topology, std::slice::from_ref(&self.arch)).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            *link = Some((connection, channel));
        }
        let Some((_, channel)) = link.as_ref() else {
            unreachable!("the link was just made");
        };
        let is_final = message.is_final();
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(if is_final { 2 } else { 1 });
        let confirm = channel
            .basic_publish(
                self.topology.events_exchange().name.as_str().into(),
                message.routing_key().as_str().into(),
                BasicPublishOptions::default(),
                &message.to_bytes(),
                properties,
            )
            .await?;
        if is_final && let Confirmation::Nack(_) = confirm.await? {
            return Err(PublishError::Nacked);
        }
        Ok(())
    }
}
