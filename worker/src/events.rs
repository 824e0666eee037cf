//! Build events as they leave a build: the pipeline and the sandbox report through a
//! [`BuildReporter`], which numbers the events, caps the log and hands each
//! [`EventMessage`] to an [`EventSink`]: JSON lines for `--json-events`, readable lines and
//! progress bars for people, and (issue #6) the AMQP publisher that carries them to the scheduler.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln_proto::amqp::{
    BuildState, Event, EventMessage, Failed, Finished, LogLine, LogStream, Progress,
};

/// Where events go. Implementations must not block for long: the build waits on them.
pub trait EventSink: Send + Sync {
    /// Delivers one event.
    fn send(&self, message: &EventMessage);
}

/// Milliseconds since the Unix epoch; a parameter so tests can fix time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

/// Limits on what one build may send.
#[derive(Debug, Clone)]
pub struct ReporterLimits {
    /// Log bytes (line text) sent before the log is clipped; default 16 MiB.
    pub max_log_bytes: u64,
    /// Lines kept after clipping and sent when the build ends; default 100.
    pub tail_lines: usize,
    /// Minimum time between two progress events of the same step; default 250 ms.
    pub progress_interval: Duration,
}

impl Default for ReporterLimits {
    fn default() -> Self {
        Self {
            max_log_bytes: 16 << 20,
            tail_lines: 100,
            progress_interval: Duration::from_millis(250),
        }
    }
}

/// Reports the events of one build (or, without a build id, of the worker itself).
pub struct BuildReporter {
    // Constant for the build.
    sink: Arc<dyn EventSink>,
    worker_id: String,
    build_id: Option<String>,
    attempt: u32,
    clock: Clock,
    limits: ReporterLimits,
    // Changes with every event.
    state: Mutex<ReporterState>,
}

#[derive(Default)]
struct ReporterState {
    seq: u64,
    log_bytes: u64,
    is_clipped: bool,
    tail: VecDeque<LogLine>,
    last_progress: HashMap<String, Instant>,
}

impl BuildReporter {
    /// A reporter for `build_id`'s delivery `attempt` (from 1).
    pub fn new(
        sink: Arc<dyn EventSink>,
        worker_id: impl Into<String>,
        build_id: Option<String>,
        attempt: u32,
        clock: Clock,
        limits: ReporterLimits,
    ) -> Self {
        Self {
            sink,
            worker_id: worker_id.into(),
            build_id,
            attempt,
            clock,
            limits,
            state: Mutex::new(ReporterState::default()),
        }
    }

    fn emit(&self, state: &mut ReporterState, event: Event) {
        let mut message = EventMessage::new(
            self.worker_id.clone(),
            self.build_id.clone(),
            state.seq,
            (self.clock)(),
            event,
        );
        message.attempt = self.attempt;
        state.seq += 1;
        self.sink.send(&message);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReporterState> {
        // A panic while holding the lock leaves only counters behind: keep reporting.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The build moved to `state`.
    pub fn state(&self, state: BuildState) {
        let mut guard = self.lock();
        self.emit(&mut guard, Event::State(state));
    }

    /// One line of output. Once the build's log passed its byte cap, one line says so and later
    /// lines are kept only in a tail that is sent when the build ends.
    pub fn log(&self, stream: LogStream, text: impl Into<String>) {
        let line = LogLine {
            stream,
            text: text.into(),
        };
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.is_clipped {
            if state.tail.len() == self.limits.tail_lines {
                state.tail.pop_front();
            }
            if self.limits.tail_lines > 0 {
                state.tail.push_back(line);
            }
            return;
        }
        state.log_bytes += line.text.len() as u64;
        if state.log_bytes > self.limits.max_log_bytes {
            state.is_clipped = true;
            let notice = LogLine {
                stream: LogStream::System,
                text: format!(
                    "log clipped at {} bytes; the last {} lines follow when the build ends",
                    self.limits.max_log_bytes, self.limits.tail_lines
                ),
            };
            self.emit(state, notice.into());
            state.tail.push_back(line);
            return;
        }
        self.emit(state, line.into());
    }

    /// A message of the worker's own, shown as `INFO:` to people.
    pub fn info(&self, text: impl Into<String>) {
        self.log(LogStream::System, text);
    }

    /// Bytes done by a long step. Updates of a step closer than the progress interval are
    /// dropped, except the one that completes it.
    pub fn progress(&self, step: &str, done_bytes: u64, total_bytes: Option<u64>) {
        let mut guard = self.lock();
        let now = Instant::now();
        let is_complete = total_bytes == Some(done_bytes);
        if let Some(last) = guard.last_progress.get(step)
            && !is_complete
            && now.duration_since(*last) < self.limits.progress_interval
        {
            return;
        }
        guard.last_progress.insert(step.to_owned(), now);
        let progress = Progress {
            step: step.to_owned(),
            done_bytes,
            total_bytes,
        };
        self.emit(&mut guard, progress.into());
    }

    fn end(&self, event: Event) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let tail: Vec<LogLine> = state.tail.drain(..).collect();
        for line in tail {
            self.emit(state, line.into());
        }
        self.emit(state, event);
    }

    /// The build succeeded; flushes a clipped log's tail first.
    pub fn finished(&self, finished: Finished) {
        self.end(finished.into());
    }

    /// The build failed; flushes a clipped log's tail first.
    pub fn failed(&self, failed: Failed) {
        self.end(failed.into());
    }

    /// The build was cancelled; flushes a clipped log's tail first.
    pub fn cancelled(&self) {
        self.end(Event::Cancelled);
    }
}

/// Writes each event as one JSON line (`kiln-worker build --json-events`).
pub struct JsonLinesSink<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> JsonLinesSink<W> {
    /// Events go to `out`, flushed after each line so a reader sees them at once.
    pub fn new(out: W) -> Self {
        Self {
            out: Mutex::new(out),
        }
    }
}

impl<W: Write + Send> EventSink for JsonLinesSink<W> {
    fn send(&self, message: &EventMessage) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut line = message.to_bytes();
        line.push(b'\n');
        // A closed stdout must not fail the build; the events are also in the result.
        let _ = out.write_all(&line).and_then(|()| out.flush());
    }
}

/// Shows events to people: output lines as they are, the worker's own lines as `INFO:`/`FATAL:`,
/// and a progress bar per long step.
pub struct HumanSink {
    bars: MultiProgress,
    active: Mutex<HashMap<String, ProgressBar>>,
}

impl Default for HumanSink {
    fn default() -> Self {
        Self::new()
    }
}

impl HumanSink {
    /// Draws on stderr; output lines go to stdout or stderr as they came.
    pub fn new() -> Self {
        Self {
            bars: MultiProgress::new(),
            active: Mutex::new(HashMap::new()),
        }
    }

    fn println(&self, to_stderr: bool, text: &str) {
        // Printing through the MultiProgress keeps the bars below the text.
        if to_stderr || self.bars.is_hidden() {
            let _ = self.bars.suspend(|| {
                if to_stderr {
                    writeln!(std::io::stderr(), "{text}")
                } else {
                    writeln!(std::io::stdout(), "{text}")
                }
            });
        } else {
            let _ = self.bars.println(text);
        }
    }

    fn progress(&self, progress: &Progress) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let bar = active.entry(progress.step.clone()).or_insert_with(|| {
            let bar = self
                .bars
                .add(ProgressBar::new(progress.total_bytes.unwrap_or(0)));
            let template = if progress.total_bytes.is_some() {
                "{msg:30} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}"
            } else {
                "{msg:30} {spinner} {binary_bytes} {binary_bytes_per_sec}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(progress.step.clone());
            bar
        });
        if let Some(total) = progress.total_bytes {
            bar.set_length(total);
        }
        bar.set_position(progress.done_bytes);
        if progress.total_bytes == Some(progress.done_bytes) {
            bar.finish();
            active.remove(&progress.step);
        }
    }
}

impl EventSink for HumanSink {
    fn send(&self, message: &EventMessage) {
        match &message.event {
            Event::Log(line) => match line.stream {
                LogStream::Stdout => self.println(false, &line.text),
                LogStream::Stderr => self.println(true, &line.text),
                LogStream::System => self.println(true, &format!("INFO:    {}", line.text)),
            },
            Event::Progress(progress) => self.progress(progress),
            Event::State(BuildState::Running(section)) => {
                self.println(true, &format!("INFO:    Running {section} scriptlet"));
            }
            Event::State(_) | Event::Heartbeat(_) => {}
            Event::Finished(finished) => self.println(
                true,
                &format!(
                    "INFO:    Build complete: {} ({} bytes, {})",
                    finished.library_ref, finished.image_size, finished.image_checksum
                ),
            ),
            Event::Failed(failed) => self.println(true, &format!("FATAL:   {}", failed.reason)),
            Event::Cancelled => self.println(true, "FATAL:   build cancelled"),
        }
    }
}

#[cfg(test)]
mod tests {
    use kiln_proto::amqp::Fault;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<EventMessage>>);

    impl EventSink for Recorder {
        fn send(&self, message: &EventMessage) {
            self.0.lock().unwrap().push(message.clone());
        }
    }

    fn reporter(limits: ReporterLimits) -> (Arc<Recorder>, BuildReporter) {
        let recorder = Arc::new(Recorder::default());
        let reporter = BuildReporter::new(
            recorder.clone(),
            "w1",
            Some("5fe5b3609d4b6974c4fa0c99".into()),
            2,
            Arc::new(|| 42),
            limits,
        );
        (recorder, reporter)
    }

    fn texts(events: &[EventMessage]) -> Vec<String> {
        events
            .iter()
            .filter_map(|m| match &m.event {
                Event::Log(line) => Some(line.text.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn events_are_numbered_and_stamped() {
        let (recorder, reporter) = reporter(ReporterLimits::default());
        reporter.state(BuildState::Started);
        reporter.log(LogStream::Stdout, "hello");
        reporter.finished(Finished {
            image_size: 1,
            image_checksum: "sha256.00".into(),
            library_ref: "a/b/c:latest".into(),
        });
        let events = recorder.0.lock().unwrap();
        let seqs: Vec<u64> = events.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [0, 1, 2]);
        assert!(
            events
                .iter()
                .all(|m| m.attempt == 2 && m.time_unix_ms == 42)
        );
        assert!(events[2].is_final());
    }

    #[test]
    fn log_is_clipped_with_a_notice_and_its_tail_sent_at_the_end() {
        let (recorder, reporter) = reporter(ReporterLimits {
            max_log_bytes: 10,
            tail_lines: 2,
            progress_interval: Duration::ZERO,
        });
        for line in ["aaaa", "bbbb", "cccc", "dddd", "eeee", "ffff"] {
            reporter.log(LogStream::Stdout, line);
        }
        assert_eq!(texts(&recorder.0.lock().unwrap()).len(), 3);
        reporter.failed(Failed {
            reason: "boom".into(),
            fault: Fault::User,
            section: Some("post".into()),
            exit_code: Some(1),
            timed_out: false,
        });
        let events = recorder.0.lock().unwrap();
        let texts = texts(&events);
        assert_eq!(texts[..2], ["aaaa", "bbbb"]);
        assert!(texts[2].starts_with("log clipped at 10 bytes"));
        assert_eq!(texts[3..], ["eeee", "ffff"]);
        assert!(matches!(events.last().unwrap().event, Event::Failed(_)));
    }

    #[test]
    fn progress_of_a_step_is_throttled_but_completion_always_sent() {
        let (recorder, reporter) = reporter(ReporterLimits {
            progress_interval: Duration::from_secs(3600),
            ..ReporterLimits::default()
        });
        reporter.progress("pull", 1, Some(10));
        reporter.progress("pull", 5, Some(10));
        reporter.progress("squashfs", 1, None);
        reporter.progress("pull", 10, Some(10));
        let done: Vec<(String, u64)> = recorder
            .0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| match &m.event {
                Event::Progress(p) => Some((p.step.clone(), p.done_bytes)),
                _ => None,
            })
            .collect();
        assert_eq!(
            done,
            [
                ("pull".into(), 1),
                ("squashfs".into(), 1),
                ("pull".into(), 10)
            ]
        );
    }

    #[test]
    fn json_lines_sink_writes_parseable_lines() {
        let sink = Arc::new(JsonLinesSink::new(Vec::new()));
        let reporter = BuildReporter::new(
            sink.clone(),
            "w1",
            None,
            1,
            system_clock(),
            ReporterLimits::default(),
        );
        reporter.info("worker up");
        reporter.state(BuildState::Running("post".into()));
        let out = sink.out.lock().unwrap().clone();
        let lines: Vec<EventMessage> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| EventMessage::from_bytes(l.as_bytes()).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1].event,
            Event::State(BuildState::Running("post".into()))
        );
    }
}
