//! Build events: what a worker reports while it runs a build, and its heartbeats.
//!
//! A log line is born on a sandboxed child's pipe in the worker, becomes an [`Event::Log`] here,
//! crosses the broker on the events exchange, and is persisted and fanned out to viewers by the
//! scheduler. `kiln-worker build --json-events` prints the same events as JSON lines.

use serde::{Deserialize, Serialize};

use super::{MessageError, PROTOCOL_VERSION, Versioned, decode};

/// One event with its envelope: who sent it, about which build, in what order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The worker that sent the event.
    pub worker_id: String,
    /// The build the event is about; `None` for worker heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// Position of the event in its build's stream, from 0. A redelivered job starts again at 0
    /// with a new `attempt`.
    pub seq: u64,
    /// Delivery attempt of the job this event belongs to, from 1.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// When the worker produced the event, in milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// What happened.
    pub event: Event,
}

fn first_attempt() -> u32 {
    1
}

/// What happened during a build, or on a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The build moved to a new state; the latest one replaces the earlier ones.
    State(BuildState),
    /// One line of output, from a build step or from the worker itself.
    Log(LogLine),
    /// Bytes moved by a long step (pulling layers, compressing, uploading).
    Progress(Progress),
    /// The build succeeded and its image is stored.
    Finished(Finished),
    /// The build failed.
    Failed(Failed),
    /// The build stopped because it was cancelled.
    Cancelled,
    /// The worker is alive; sent periodically whether or not it runs builds.
    Heartbeat(WorkerHeartbeat),
}

/// Where a build is. Ordered: queued → started → fetching → running(section) → packing →
/// uploading → finished | failed | cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "section", rename_all = "snake_case")]
pub enum BuildState {
    /// Waiting in the queue.
    Queued,
    /// A worker took the job.
    Started,
    /// Pulling the base image and the build context.
    Fetching,
    /// Running a section of the definition (`post`, `files`, `test`, ...) of a stage.
    Running(String),
    /// Assembling SquashFS and SIF.
    Packing,
    /// Uploading the image to the library.
    Uploading,
    /// Done, the image is stored.
    Finished,
    /// Ended with an error.
    Failed,
    /// Ended by a cancel request.
    Cancelled,
}

impl BuildState {
    /// True once the build can change no more.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Finished | Self::Failed | Self::Cancelled)
    }
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// The standard output of a build step.
    Stdout,
    /// The standard error of a build step.
    Stderr,
    /// The worker's own messages (`INFO: ...`, `FATAL: ...`).
    System,
}

/// One line of build output, without its line terminator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The stream the line was read from.
    pub stream: LogStream,
    /// The text, lossily converted to UTF-8 and cut at the worker's maximum line length.
    pub text: String,
}

/// How far a long step has come. Updates of the same `step` replace each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The step, for example `pull sha256:…`, `squashfs`, `upload`.
    pub step: String,
    /// Bytes done so far.
    pub done_bytes: u64,
    /// Bytes in all, when known.
    #[serde(default)]
    pub total_bytes: Option<u64>,
}

/// The result of a successful build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// Size of the SIF in bytes.
    pub image_size: u64,
    /// `sha256.<hex>` of the SIF bytes.
    pub image_checksum: String,
    /// Where the image is in the library, `entity/collection/container:tag`.
    pub library_ref: String,
}

/// Whose fault a failure is: it decides between failing the build and requeuing the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The definition or its inputs are wrong: the build fails, retrying cannot help.
    User,
    /// The worker or a service failed: the job may succeed elsewhere.
    Infrastructure,
}

/// Why a build failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    /// One line for people, the first error (later ones are its echoes).
    pub reason: String,
    /// Whose fault it is.
    pub fault: Fault,
    /// The section whose script failed, when a script failed.
    #[serde(default)]
    pub section: Option<String>,
    /// The exit code of that script.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// True when the build ran out of time.
    #[serde(default)]
    pub timed_out: bool,
}

/// A worker's periodic report of itself, for the fleet view and lost-worker detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerHeartbeat {
    /// Host name of the machine or pod.
    pub host: String,
    /// Go architecture name the worker builds for.
    pub arch: String,
    /// The worker's version (`CARGO_PKG_VERSION`).
    pub worker_version: String,
    /// How many builds it runs at once.
    pub concurrency: u32,
    /// Ids of the builds it runs now.
    pub builds: Vec<String>,
    /// True once it stopped taking jobs and only finishes what it runs.
    #[serde(default)]
    pub is_draining: bool,
    /// What the worker did since it started; counters only grow (a restart starts again at
    /// zero, which Prometheus reads as a counter reset). Absent from older workers.
    #[serde(default, skip_serializing_if = "WorkerStats::is_zero")]
    pub stats: WorkerStats,
}

/// Upper bounds, in seconds, of the buckets of [`StepTimes`]: from a tenth of a second (an
/// upload over a LAN) to four hours (a long `%post`).
pub const STEP_SECONDS_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

/// A worker's counters, carried in its heartbeats: the worker holds no HTTP server, so the
/// scheduler exports them per worker on its own `/metrics` (`kiln_worker_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerStats {
    /// Builds that ended `finished`.
    pub builds_finished: u64,
    /// Builds that ended `failed`.
    pub builds_failed: u64,
    /// Builds that ended `cancelled`.
    pub builds_cancelled: u64,
    /// Bytes pulled: base image layers, library images, build contexts.
    pub bytes_pulled: u64,
    /// Bytes of images uploaded.
    pub bytes_pushed: u64,
    /// Log lines published.
    pub log_lines: u64,
    /// How long the steps of builds took, by step: `fetch`, `run`, `squash`, `upload`.
    pub step_seconds: std::collections::BTreeMap<String, StepTimes>,
}

impl WorkerStats {
    /// True before the worker did anything.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// A histogram of one step's durations over [`STEP_SECONDS_BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepTimes {
    /// Observations.
    pub count: u64,
    /// Their sum, in milliseconds.
    pub sum_ms: u64,
    /// Observations at most each bound of [`STEP_SECONDS_BUCKETS`], cumulative as Prometheus
    /// counts them; the `+Inf` bucket is `count`.
    pub cumulative: Vec<u64>,
}

impl StepTimes {
    /// Records one duration.
    pub fn observe(&mut self, millis: u64) {
        self.cumulative.resize(STEP_SECONDS_BUCKETS.len(), 0);
        self.count += 1;
        self.sum_ms = self.sum_ms.saturating_add(millis);
        let seconds = millis as f64 / 1000.0;
        for (bound, count) in STEP_SECONDS_BUCKETS.iter().zip(&mut self.cumulative) {
            if seconds <= *bound {
                *count += 1;
            }
        }
    }
}

impl Versioned for EventMessage {
    fn version(&self) -> u32 {
        self.version
    }
}

impl EventMessage {
    /// An event of the current protocol version.
    pub fn new(
        worker_id: impl Into<String>,
        build_id: Option<String>,
        seq: u64,
        time_unix_ms: u64,
        event: Event,
    ) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            worker_id: worker_id.into(),
            build_id,
            seq,
            attempt: 1,
            time_unix_ms,
            event,
        }
    }

    /// The routing key on the events exchange: `build.<id>.<kind>` or `worker.<id>.heartbeat`.
    pub fn routing_key(&self) -> String {
        match &self.build_id {
            Some(build_id) => format!("build.{build_id}.{}", self.event.kind()),
            None => format!("worker.{}.{}", self.worker_id, self.event.kind()),
        }
    }

    /// True for events that must not be lost: they end a build.
    pub fn is_final(&self) -> bool {
        matches!(
            self.event,
            Event::Finished(_) | Event::Failed(_) | Event::Cancelled
        )
    }

    /// Serializes the event for publishing (one JSON object, no trailing newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an event always serializes")
    }

    /// Reads an event from a delivery body.
    ///
    /// # Errors
    /// [`MessageError`] when the bytes are not an event or come from a newer protocol.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MessageError> {
        decode(bytes)
    }
}

impl Event {
    /// The event's kind as it appears in the JSON `kind` field and in routing keys.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::State(_) => "state",
            Self::Log(_) => "log",
            Self::Progress(_) => "progress",
            Self::Finished(_) => "finished",
            Self::Failed(_) => "failed",
            Self::Cancelled => "cancelled",
            Self::Heartbeat(_) => "heartbeat",
        }
    }
}

impl From<BuildState> for Event {
    fn from(state: BuildState) -> Self {
        Self::State(state)
    }
}

impl From<LogLine> for Event {
    fn from(line: LogLine) -> Self {
        Self::Log(line)
    }
}

impl From<Progress> for Event {
    fn from(progress: Progress) -> Self {
        Self::Progress(progress)
    }
}

impl From<Finished> for Event {
    fn from(finished: Finished) -> Self {
        Self::Finished(finished)
    }
}

impl From<Failed> for Event {
    fn from(failed: Failed) -> Self {
        Self::Failed(failed)
    }
}

impl From<WorkerHeartbeat> for Event {
    fn from(heartbeat: WorkerHeartbeat) -> Self {
        Self::Heartbeat(heartbeat)
    }
}
