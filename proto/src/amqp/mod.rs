//! The one small protocol between the scheduler and the workers, carried by RabbitMQ.
//!
//! Contract (who sends, who receives, what is guaranteed):
//! - **Jobs** ([`Job`]) go from the scheduler to the workers through one quorum queue per
//!   architecture ([`Topology::job_queue`]). Delivery is *at least once*: a worker acks a job only
//!   after the result is stored and its final event is confirmed by the broker, so a worker that
//!   dies leaves the job to be redelivered. Receivers must tolerate duplicates (the build id makes
//!   every effect idempotent).
//! - **Events** ([`EventMessage`]) go from the workers to the scheduler through a topic exchange,
//!   routed by [`EventMessage::routing_key`]. Log lines and progress are best effort; `finished`,
//!   `failed` and `cancelled` are published persistent with confirms. Events of one build carry a
//!   sequence number so the scheduler can drop echoes of a redelivered job.
//! - **Control** ([`Control`]) goes from the scheduler to every worker (cancel a build).
//!
//! Every message carries [`PROTOCOL_VERSION`]; a receiver refuses a newer major version rather
//! than misreading it, and ignores fields it does not know. One serialized sample per released
//! version is checked in under `proto/tests/samples/` and must keep parsing.

mod control;
#[cfg(feature = "lapin")]
pub mod declare;
mod event;
mod job;
mod topology;

pub use control::Control;
pub use event::{
    BuildState, Event, EventMessage, Failed, Fault, Finished, LogLine, LogStream, Progress,
    STEP_SECONDS_BUCKETS, StepTimes, WorkerHeartbeat, WorkerStats,
};
pub use job::{BuildContextRef, Job, LibraryCredential};
pub use topology::{Argument, ExchangeKind, ExchangeSpec, QueueSpec, Topology};

/// Version of the messages in this module. Bumped on any change a receiver of the previous
/// version would misread; adding an optional field is not such a change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The bytes are not a message of this protocol.
    #[error("malformed message")]
    Malformed(#[source] serde_json::Error),
    /// The sender speaks a newer protocol than this receiver.
    #[error("message has protocol version {found}, this receiver speaks {PROTOCOL_VERSION}")]
    UnsupportedVersion {
        /// The version the message carries.
        found: u32,
    },
}

/// Decodes a message and checks its protocol version.
fn decode<T: serde::de::DeserializeOwned + Versioned>(bytes: &[u8]) -> Result<T, MessageError> {
    let message: T = serde_json::from_slice(bytes).map_err(MessageError::Malformed)?;
    if message.version() > PROTOCOL_VERSION {
        return Err(MessageError::UnsupportedVersion {
            found: message.version(),
        });
    }
    Ok(message)
}

/// Messages that carry a protocol version.
trait Versioned {
    fn version(&self) -> u32;
}
