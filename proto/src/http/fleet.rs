//! The operators' view of the fleet: `GET /v1/admin/workers` and `GET /v1/admin/queues`
//! (admin token). The web UI and `kiln-scheduler autoscale` read them.

use serde::{Deserialize, Serialize};

/// What the scheduler makes of a worker's heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    /// Its last heartbeat listed builds it runs.
    Busy,
    /// Its last heartbeat listed no build.
    Idle,
    /// No heartbeat for longer than the deployment's lost-worker limit: it died, hangs, or was
    /// cut off from the broker. Its builds are redelivered once the broker notices.
    Lost,
}

/// One worker, as its latest heartbeat described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerInfo {
    /// The worker's id.
    pub id: String,
    /// Host name of its machine, pod or container.
    pub host: String,
    /// Go architecture name it builds for.
    pub arch: String,
    /// Its version.
    pub version: String,
    /// Builds it runs at once.
    pub concurrency: u32,
    /// Ids of the builds it runs now.
    pub builds: Vec<String>,
    /// True once it stopped taking jobs and only finishes what it runs.
    pub is_draining: bool,
    /// Busy, idle or lost.
    pub status: WorkerStatus,
    /// When its first heartbeat arrived (RFC 3339, UTC).
    pub first_seen: String,
    /// When its latest heartbeat arrived (RFC 3339, UTC).
    pub last_seen: String,
    /// Seconds since its latest heartbeat arrived.
    pub seconds_since_seen: u64,
    /// What it did since it started, as its latest heartbeat counted.
    #[serde(default)]
    pub stats: crate::amqp::WorkerStats,
}

/// The job queue of one architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueInfo {
    /// Go architecture name.
    pub arch: String,
    /// Jobs the broker holds ready for a worker.
    pub ready: u64,
    /// Workers consuming the queue.
    pub consumers: u64,
    /// Builds recorded as queued (ready jobs, plus jobs a worker took but has not started).
    pub queued: u64,
    /// Builds running (their jobs are unacked deliveries).
    pub running: u64,
}
