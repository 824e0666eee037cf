//! How pipeline steps report what they do: log lines for the build log and byte counts for
//! progress bars. The events module turns these into `proto` events; tests collect them.

use super::digest::Digest;

/// Receives a step's log lines and transfer progress. Calls come from async tasks and from
/// blocking threads, so implementations must be cheap and must not block.
pub trait Progress: Send + Sync {
    /// One line for the build log, without a trailing newline.
    fn log(&self, line: &str);

    /// `done` of `total` bytes of blob `digest` are in (`total` from the manifest).
    fn blob_bytes(&self, digest: &Digest, done: u64, total: u64);
}

/// A [`Progress`] that drops everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn log(&self, _line: &str) {}

    fn blob_bytes(&self, _digest: &Digest, _done: u64, _total: u64) {}
}
