//! How pipeline steps report what they do: log lines for the build log and byte counts for
//! progress bars. [`BuildReporter`] implements it to turn them into build events; tests collect
//! them.

use super::digest::Digest;
use crate::events::BuildReporter;

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

/// Pipeline lines become the worker's own (`INFO:`) log lines of the build; blob transfers
/// become progress steps named `pull <digest>`, throttled by the reporter.
impl Progress for BuildReporter {
    fn log(&self, line: &str) {
        self.info(line);
    }

    fn blob_bytes(&self, digest: &Digest, done: u64, total: u64) {
        self.progress(&format!("pull {digest}"), done, Some(total));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use kiln_proto::amqp::{Event, EventMessage, LogStream};

    use super::*;
    use crate::events::{EventSink, ReporterLimits};

    #[derive(Default)]
    struct Sink(Mutex<Vec<EventMessage>>);

    impl EventSink for Sink {
        fn send(&self, message: &EventMessage) {
            self.0.lock().unwrap().push(message.clone());
        }
    }

    #[test]
    fn build_reporter_carries_lines_and_blob_progress() {
        let sink = Arc::new(Sink::default());
        let reporter = BuildReporter::new(
            sink.clone(),
            "w1",
            Some("b1".into()),
            1,
            Arc::new(|| 7),
            ReporterLimits::default(),
        );
        let progress: &dyn Progress = &reporter;
        let digest = Digest::sha256_of(b"layer");
        progress.log("pulling x");
        progress.blob_bytes(&digest, 5, 5);
        let events = sink.0.lock().unwrap();
        match &events[0].event {
            Event::Log(line) => {
                assert_eq!(
                    (line.stream, line.text.as_str()),
                    (LogStream::System, "pulling x")
                );
            }
            other => panic!("expected a log line, got {other:?}"),
        }
        match &events[1].event {
            Event::Progress(p) => {
                assert_eq!(p.step, format!("pull {digest}"));
                assert_eq!((p.done_bytes, p.total_bytes), (5, Some(5)));
            }
            other => panic!("expected progress, got {other:?}"),
        }
    }
}
