//! Declaring the [`Topology`] on a broker with lapin; both the scheduler and the workers call
//! this on every (re)connect, so whichever starts first creates everything and the other's
//! declarations are no-ops. Declaring is idempotent only while the arguments agree, which is
//! why they come from one place.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties};

use super::{Argument, ExchangeKind, QueueSpec, Topology};

/// Opens a connection named `name` (shown by `rabbitmqctl list_connections`).
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name(LongString::from(name)),
    )
    .await
}

/// Declares every exchange, the job queues of `arches`, the dead-jobs queue and the
/// scheduler's events queue, with their bindings.
///
/// # Errors
/// The broker refused a declaration (for example a queue that exists with other arguments).
pub async fn declare_topology(
    channel: &Channel,
    topology: &Topology,
    arches: &[String],
) -> Result<(), lapin::Error> {
    for exchange in topology.exchanges() {
        let kind = match exchange.kind {
            ExchangeKind::Direct => lapin::ExchangeKind::Direct,
            ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
            ExchangeKind::Topic => lapin::ExchangeKind::Topic,
        };
        channel
            .exchange_declare(
                exchange.name.as_str().into(),
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
    }
    let mut queues: Vec<_> = arches.iter().map(|arch| topology.job_queue(arch)).collect();
    queues.push(topology.dead_jobs_queue());
    queues.push(topology.events_queue());
    for queue in &queues {
        declare_queue(channel, queue).await?;
    }
    Ok(())
}

/// Declares one durable queue with its arguments and bindings.
///
/// # Errors
/// The broker refused the declaration.
pub async fn declare_queue(channel: &Channel, queue: &QueueSpec) -> Result<(), lapin::Error> {
    let mut arguments = FieldTable::default();
    for (key, value) in &queue.arguments {
        let value = match value {
            Argument::Str(text) => AMQPValue::LongString(text.as_str().into()),
            Argument::Int(number) => AMQPValue::LongLongInt(*number),
        };
        arguments.insert(key.as_str().into(), value);
    }
    channel
        .queue_declare(
            queue.name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    for (exchange, routing_key) in &queue.bindings {
        channel
            .queue_bind(
                queue.name.as_str().into(),
                exchange.as_str().into(),
                routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}
