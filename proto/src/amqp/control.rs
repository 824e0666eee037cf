//! Control messages from the scheduler to every worker.

use serde::{Deserialize, Serialize};

use super::{MessageError, PROTOCOL_VERSION, Versioned, decode};

/// A request to a worker. Every worker receives every control message and acts on those about
/// builds it runs; the others it ignores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Control {
    /// Stop the build now: kill its sandbox, report [`super::Event::Cancelled`], ack the job.
    Cancel {
        /// [`PROTOCOL_VERSION`] of the sender.
        version: u32,
        /// The build to stop.
        build_id: String,
    },
}

impl Versioned for Control {
    fn version(&self) -> u32 {
        match self {
            Self::Cancel { version, .. } => *version,
        }
    }
}

impl Control {
    /// A cancel request of the current protocol version.
    pub fn cancel(build_id: impl Into<String>) -> Self {
        Self::Cancel {
            version: PROTOCOL_VERSION,
            build_id: build_id.into(),
        }
    }

    /// The routing key on the control exchange: `cancel.<build id>`.
    pub fn routing_key(&self) -> String {
        match self {
            Self::Cancel { build_id, .. } => format!("cancel.{build_id}"),
        }
    }

    /// Serializes the message for publishing.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a control message always serializes")
    }

    /// Reads a control message from a delivery body.
    ///
    /// # Errors
    /// [`MessageError`] when the bytes are not a control message or come from a newer protocol.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MessageError> {
        decode(bytes)
    }
}
