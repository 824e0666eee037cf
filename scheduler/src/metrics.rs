//! The scheduler's Prometheus metrics, served at `GET /metrics` (`api/health.rs`).
//!
//! The registry belongs to [`crate::api::AppState`]; nothing registers in the crate's global
//! default registry, so two schedulers in one test process keep their own counts.
//!
//! Two kinds of series:
//! - **Read at each scrape** from the broker and the store: queue depth per architecture,
//!   builds per state, workers per status. They describe the whole deployment, so every
//!   scheduler sharing one PostgreSQL database and one broker reports the same values (take
//!   `max`, not `sum`, across replicas).
//! - **Counted as things happen** in this process: events and log lines the relay handled, the
//!   queue wait and run time of the builds it saw start and end, HTTP latency per route. Across
//!   replicas these add up.
//!
//! Queue depth is the messages the broker holds *ready* (a passive declare, which cannot see
//! unacked deliveries) plus the builds the store has *running*: a worker acks its job only
//! once the result is stored, so every running build is one unacked delivery. That sum is what
//! an autoscaler must look at; ready messages alone drop to zero while every worker is busy
//! (anchors.md §4.5, the KEDA pitfall).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::api::AppState;
use crate::fleet::{WorkerStatus, worker_status};
use crate::store::{BuildRow, BuildState};

/// How long one scrape waits for the broker before it reports `kiln_broker_up 0`.
const BROKER_TIMEOUT: Duration = Duration::from_secs(3);

/// Seconds a job waits in the queue: from a second to a day (the default queue TTL).
const QUEUE_WAIT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

/// Seconds a build runs: from a few seconds to four hours.
const RUN_TIME_BUCKETS: &[f64] = &[
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

/// HTTP methods that get their own label value; anything else is `other`, so a client cannot
/// grow the series without bound.
const KNOWN_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// The scheduler's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    // Read from the broker and the store at each scrape.
    queue_ready: IntGaugeVec,
    queue_consumers: IntGaugeVec,
    queue_depth: IntGaugeVec,
    builds: IntGaugeVec,
    workers: IntGaugeVec,
    workers_draining: IntGauge,
    broker_up: IntGauge,
    // Counted as things happen.
    queue_wait: Histogram,
    run_time: HistogramVec,
    events: IntCounterVec,
    log_lines: IntCounter,
    log_bytes: IntCounter,
    http: HistogramVec,
    // One scrape at a time: a scrape resets the gauges before it fills them again.
    scrape: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every series registered (counters at zero).
    pub fn new() -> Self {
        let registry = Registry::new();
        let queue_ready = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "kiln_queue_ready_jobs",
                    "Jobs waiting on the broker for a worker, per architecture (ready messages).",
                ),
                &["arch"],
            ),
        );
        let queue_consumers = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "kiln_queue_consumers",
                    "Workers consuming the job queue of each architecture.",
                ),
                &["arch"],
            ),
        );
        let queue_depth = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "kiln_queue_depth",
                    "Jobs waiting plus jobs running (ready + unacked), per architecture: scale \
                     on this.",
                ),
                &["arch"],
            ),
        );
        let builds = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "kiln_builds",
                    "Builds in the state database, per state and architecture.",
                ),
                &["state", "arch"],
            ),
        );
        let workers = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "kiln_workers",
                    "Workers by status from their heartbeats: busy, idle, or lost (heartbeats \
                     stopped).",
                ),
                &["status"],
            ),
        );
        let workers_draining = register(
            &registry,
            IntGauge::new(
                "kiln_workers_draining",
                "Live workers that stopped taking jobs and finish what they run.",
            ),
        );
        let broker_up = register(
            &registry,
            IntGauge::new(
                "kiln_broker_up",
                "1 when the broker answered this scrape, else 0 (queue series are then stale).",
            ),
        );
        let queue_wait = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "kiln_build_queue_wait_seconds",
                    "Time from submission to a worker's first report, per build.",
                )
                .buckets(QUEUE_WAIT_BUCKETS.to_vec()),
            ),
        );
        let run_time = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "kiln_build_run_seconds",
                    "Time from a worker's first report to the end of the build, per final state.",
                )
                .buckets(RUN_TIME_BUCKETS.to_vec()),
                &["state"],
            ),
        );
        let events = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "kiln_relay_events_total",
                    "Worker events the relay received, per kind (including dropped echoes).",
                ),
                &["kind"],
            ),
        );
        let log_lines = register(
            &registry,
            IntCounter::new(
                "kiln_log_lines_relayed_total",
                "Build log lines the relay stored for viewers.",
            ),
        );
        let log_bytes = register(
            &registry,
            IntCounter::new(
                "kiln_log_bytes_relayed_total",
                "Bytes of build log the relay stored for viewers.",
            ),
        );
        let http = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "kiln_http_request_duration_seconds",
                    "HTTP request latency per route pattern (WebSockets: until the upgrade).",
                ),
                &["method", "route", "status"],
            ),
        );
        Self {
            registry,
            queue_ready,
            queue_consumers,
            queue_depth,
            builds,
            workers,
            workers_draining,
            broker_up,
            queue_wait,
            run_time,
            events,
            log_lines,
            log_bytes,
            http,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// Counts one event the relay received.
    pub fn count_event(&self, kind: &str) {
        self.events.with_label_values(&[kind]).inc();
    }

    /// Counts log text the relay stored: `lines` lines, `bytes` bytes.
    pub fn count_log(&self, lines: u64, bytes: u64) {
        self.log_lines.inc_by(lines);
        self.log_bytes.inc_by(bytes);
    }

    /// Records how long a build waited between submission and its first start.
    pub fn observe_queue_wait(&self, wait_ms: i64) {
        self.queue_wait.observe(seconds(wait_ms));
    }

    /// Records how long a build ran before it reached `state`.
    pub fn observe_run_time(&self, state: BuildState, run_ms: i64) {
        self.run_time
            .with_label_values(&[state.as_str()])
            .observe(seconds(run_ms));
    }

    /// Records the run time of a build that just became final, when it had started.
    pub fn observe_finished(&self, build: &BuildRow) {
        if let (Some(start_ms), Some(complete_ms)) = (build.start_ms, build.complete_ms) {
            self.observe_run_time(build.state, complete_ms - start_ms);
        }
    }

    /// Refreshes the series read from the broker and the store, then encodes every series in
    /// the text exposition format.
    ///
    /// # Errors
    /// The store failed; a broker failure only sets `kiln_broker_up 0`.
    pub async fn render(&self, state: &AppState) -> Result<String, crate::store::StoreError> {
        let _one_scrape = self.scrape.lock().await;
        self.refresh(state).await?;
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("the text encoder writes to memory");
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    async fn refresh(&self, state: &AppState) -> Result<(), crate::store::StoreError> {
        let arches = &state.limits.arches;
        let counts = state.store.build_counts().await?;
        let workers = state.store.workers().await?;

        self.builds.reset();
        for arch in arches {
            for build_state in BuildState::ALL {
                self.builds
                    .with_label_values(&[build_state.as_str(), arch])
                    .set(0);
            }
        }
        for count in &counts {
            self.builds
                .with_label_values(&[count.state.as_str(), &count.arch])
                .set(gauge_value(count.count));
        }

        let now_ms = state.clock.now_ms();
        let lost_after_ms = state.limits.worker_lost_after_ms();
        let (mut busy, mut idle, mut lost, mut draining) = (0, 0, 0, 0);
        for worker in &workers {
            let status = worker_status(worker, now_ms, lost_after_ms);
            match status {
                WorkerStatus::Busy => busy += 1,
                WorkerStatus::Idle => idle += 1,
                WorkerStatus::Lost => lost += 1,
            }
            if worker.heartbeat.is_draining && status != WorkerStatus::Lost {
                draining += 1;
            }
        }
        self.workers.with_label_values(&["busy"]).set(busy);
        self.workers.with_label_values(&["idle"]).set(idle);
        self.workers.with_label_values(&["lost"]).set(lost);
        self.workers_draining.set(draining);

        let mut broker_up = true;
        for arch in arches {
            let running = counts
                .iter()
                .filter(|c| c.state == BuildState::Running && &c.arch == arch)
                .map(|c| c.count)
                .sum::<u64>();
            let stats =
                tokio::time::timeout(BROKER_TIMEOUT, state.broker.job_queue_stats(arch)).await;
            match stats {
                Ok(Ok(stats)) => {
                    self.queue_ready
                        .with_label_values(&[arch])
                        .set(i64::from(stats.ready));
                    self.queue_consumers
                        .with_label_values(&[arch])
                        .set(i64::from(stats.consumers));
                    self.queue_depth
                        .with_label_values(&[arch])
                        .set(gauge_value(u64::from(stats.ready) + running));
                }
                Ok(Err(error)) => {
                    tracing::debug!(arch, error = %error, "queue stats unavailable");
                    broker_up = false;
                }
                Err(_elapsed) => broker_up = false,
            }
            if !broker_up {
                break;
            }
        }
        self.broker_up.set(i64::from(broker_up));
        Ok(())
    }
}

/// Registers `metric` and hands it back. Names, help texts and labels are constants of this
/// module, so a failure is a programming error, caught by the unit test below.
fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("valid metric name, help and labels");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

/// Middleware: observes the latency of every request under its route pattern
/// (`/v1/build/{id}`, never the concrete path, so ids do not become series).
pub async fn track_http(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str();
    let method = KNOWN_METHODS
        .iter()
        .find(|known| **known == method)
        .copied()
        .unwrap_or("other");
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .http
        .with_label_values(&[method, route.as_str(), response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

fn seconds(ms: i64) -> f64 {
    // Clocks of different schedulers may disagree a little; never observe a negative time.
    #[allow(clippy::cast_precision_loss)]
    let seconds = ms.max(0) as f64 / 1000.0;
    seconds
}

fn gauge_value(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_registers_once() {
        let metrics = Metrics::new();
        metrics.count_event("log");
        metrics.count_log(2, 10);
        metrics.observe_queue_wait(1500);
        metrics.observe_run_time(BuildState::Succeeded, -5);
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&metrics.registry.gather(), &mut text)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("kiln_relay_events_total{kind=\"log\"} 1"),
            "{text}"
        );
        assert!(text.contains("kiln_log_lines_relayed_total 2"), "{text}");
        assert!(
            text.contains("kiln_build_queue_wait_seconds_sum 1.5"),
            "{text}"
        );
        assert!(
            text.contains("kiln_build_run_seconds_sum{state=\"succeeded\"} 0"),
            "a negative time counts as zero: {text}"
        );
        // A second registry is independent of the first (no global state).
        let mut other = Vec::new();
        TextEncoder::new()
            .encode(&Metrics::new().registry.gather(), &mut other)
            .unwrap();
        let other = String::from_utf8(other).unwrap();
        assert!(other.contains("kiln_log_lines_relayed_total 0"), "{other}");
    }
}
