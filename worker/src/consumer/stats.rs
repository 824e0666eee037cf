//! The worker's counters ([`WorkerStats`]), read off the events its builds publish and carried
//! in its heartbeats; the scheduler exports them per worker as `kiln_worker_*` (the worker
//! holds no HTTP server, STYLE.md §1). Reading them off the event stream keeps the pipeline
//! free of metrics code: a step's duration is the time between the events that start and end
//! it, on the worker's clock, and bytes are what progress events report.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kiln_proto::amqp::{BuildState, Event, EventMessage, WorkerStats};

/// The counters of one worker, shared by its builds and its heartbeat task.
#[derive(Debug, Clone, Default)]
pub struct StatsRecorder {
    stats: Arc<Mutex<WorkerStats>>,
}

impl StatsRecorder {
    /// The counters as they are now.
    pub fn snapshot(&self) -> WorkerStats {
        lock(&self.stats).clone()
    }

    /// A tracker for one build's events.
    pub fn build(&self) -> BuildStats {
        BuildStats {
            stats: Arc::clone(&self.stats),
            progress: Mutex::default(),
        }
    }
}

/// Follows one build's events into the worker's counters.
#[derive(Debug)]
pub struct BuildStats {
    stats: Arc<Mutex<WorkerStats>>,
    progress: Mutex<BuildProgress>,
}

#[derive(Debug, Default)]
struct BuildProgress {
    /// The timed step in progress and when it started (ms).
    step: Option<(&'static str, u64)>,
    /// Bytes reported so far by each progress step.
    bytes: HashMap<String, u64>,
}

/// The timed step a state belongs to: every `%post`, `%files` or `%test` section counts as
/// `run`, so consecutive sections make one observation.
fn step_of(state: &BuildState) -> Option<&'static str> {
    match state {
        BuildState::Fetching => Some("fetch"),
        BuildState::Running(_) => Some("run"),
        BuildState::Packing => Some("squash"),
        BuildState::Uploading => Some("upload"),
        _ => None,
    }
}

impl BuildStats {
    /// Counts `message`, an event of this build.
    pub fn record(&self, message: &EventMessage) {
        let now = message.time_unix_ms;
        let mut progress = lock(&self.progress);
        let mut stats = lock(&self.stats);
        let close_step = |progress: &mut BuildProgress, stats: &mut WorkerStats| {
            if let Some((step, start)) = progress.step.take() {
                stats
                    .step_seconds
                    .entry(step.to_owned())
                    .or_default()
                    .observe(now.saturating_sub(start));
            }
        };
        match &message.event {
            Event::State(state) => {
                let next = step_of(state);
                if progress.step.map(|(step, _)| step) != next {
                    close_step(&mut progress, &mut stats);
                    progress.step = next.map(|step| (step, now));
                }
            }
            Event::Log(_) => stats.log_lines += 1,
            Event::Progress(report) => {
                let seen = progress.bytes.entry(report.step.clone()).or_default();
                let delta = report.done_bytes.saturating_sub(*seen);
                *seen = (*seen).max(report.done_bytes);
                if report.step == "upload" {
                    stats.bytes_pushed += delta;
                } else if report.step == "context" || report.step.starts_with("pull ") {
                    stats.bytes_pulled += delta;
                }
            }
            Event::Finished(_) => {
                close_step(&mut progress, &mut stats);
                stats.builds_finished += 1;
            }
            Event::Failed(_) => {
                close_step(&mut progress, &mut stats);
                stats.builds_failed += 1;
            }
            Event::Cancelled => {
                close_step(&mut progress, &mut stats);
                stats.builds_cancelled += 1;
            }
            Event::Heartbeat(_) => {}
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use kiln_proto::amqp::{Failed, Fault, Finished, LogLine, LogStream, Progress};

    use super::*;

    fn at(ms: u64, event: Event) -> EventMessage {
        EventMessage::new("w", Some("b".into()), 0, ms, event)
    }

    fn progress(step: &str, done: u64) -> Event {
        Event::Progress(Progress {
            step: step.into(),
            done_bytes: done,
            total_bytes: None,
        })
    }

    #[test]
    fn steps_bytes_lines_and_outcomes_are_counted() {
        let recorder = StatsRecorder::default();
        let build = recorder.build();
        for message in [
            at(1_000, BuildState::Started.into()),
            at(1_000, BuildState::Fetching.into()),
            at(1_100, progress("pull sha256:a", 400)),
            at(1_200, progress("pull sha256:a", 1_000)),
            at(1_300, progress("context", 50)),
            at(3_000, BuildState::Running("post".into()).into()),
            at(
                3_100,
                Event::Log(LogLine {
                    stream: LogStream::Stdout,
                    text: "x".into(),
                }),
            ),
            at(4_000, BuildState::Running("test".into()).into()),
            at(13_000, BuildState::Packing.into()),
            at(14_500, BuildState::Uploading.into()),
            at(14_600, progress("upload", 700)),
            at(14_700, progress("upload", 2_000)),
            at(
                15_000,
                Event::Finished(Finished {
                    image_size: 2_000,
                    image_checksum: "sha256.0".into(),
                    library_ref: String::new(),
                }),
            ),
        ] {
            build.record(&message);
        }
        let failed = recorder.build();
        failed.record(&at(0, BuildState::Fetching.into()));
        failed.record(&at(
            200,
            Event::Failed(Failed {
                reason: "no image".into(),
                fault: Fault::User,
                section: None,
                exit_code: None,
                timed_out: false,
            }),
        ));
        let stats = recorder.snapshot();
        assert_eq!(
            (
                stats.builds_finished,
                stats.builds_failed,
                stats.builds_cancelled
            ),
            (1, 1, 0)
        );
        assert_eq!((stats.bytes_pulled, stats.bytes_pushed), (1_050, 2_000));
        assert_eq!(stats.log_lines, 1);
        let step = |name: &str| stats.step_seconds[name].clone();
        assert_eq!((step("fetch").count, step("fetch").sum_ms), (2, 2_200));
        // Two sections, one run of 10 s.
        assert_eq!((step("run").count, step("run").sum_ms), (1, 10_000));
        assert_eq!((step("squash").count, step("squash").sum_ms), (1, 1_500));
        assert_eq!((step("upload").count, step("upload").sum_ms), (1, 500));
        // 10 s is in the buckets from 10 s up, not below.
        let run = step("run");
        assert_eq!(run.cumulative[4], 0, "{run:?}");
        assert_eq!(run.cumulative[5], 1, "{run:?}");
    }
}
