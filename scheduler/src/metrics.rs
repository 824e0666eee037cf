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

use kiln_proto::amqp::{STEP_SECONDS_BUCKETS, StepTimes, WorkerStats};
use prometheus::proto::{Bucket, Counter, LabelPair, Metric, MetricFamily, MetricType};

use crate::api::AppState;
use crate::fleet::{WorkerStatus, worker_status};
use crate::store::{BuildRow, BuildState, WorkerRow};

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
        let live_workers = self.refresh(state).await?;
        let mut families = self.registry.gather();
        families.extend(worker_families(&live_workers));
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut text)
            .expect("the text encoder writes to memory");
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// Sets the series read at each scrape; returns the workers not lost, whose own counters
    /// are exported as they last reported them.
    async fn refresh(&self, state: &AppState) -> Result<Vec<WorkerRow>, crate::store::StoreError> {
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
        let mut live = Vec::with_capacity(workers.len());
        for worker in workers {
            let status = worker_status(&worker, now_ms, lost_after_ms);
            match status {
                WorkerStatus::Busy => busy += 1,
                WorkerStatus::Idle => idle += 1,
                WorkerStatus::Lost => lost += 1,
            }
            if status != WorkerStatus::Lost {
                draining += i64::from(worker.heartbeat.is_draining);
                live.push(worker);
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
        Ok(live)
    }
}

/// The `kiln_worker_*` families: each live worker's counters from its latest heartbeat
/// ([`kiln_proto::amqp::WorkerStats`]), labelled with its id and architecture. Built at each
/// scrape rather than registered, because their values are set, not counted, here.
fn worker_families(workers: &[WorkerRow]) -> Vec<MetricFamily> {
    let family = |name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>| {
        let mut family = MetricFamily::default();
        family.set_name(name.to_owned());
        family.set_help(help.to_owned());
        family.set_field_type(kind);
        family.set_metric(metrics);
        family
    };
    let labels = |worker: &WorkerRow, extra: &[(&str, &str)]| {
        let mut pairs = vec![
            label_pair("arch", &worker.heartbeat.arch),
            label_pair("worker", &worker.worker_id),
        ];
        pairs.extend(extra.iter().map(|(name, value)| label_pair(name, value)));
        pairs
    };
    let counters = |value: fn(&WorkerStats) -> u64| -> Vec<Metric> {
        workers
            .iter()
            .map(|worker| counter_metric(labels(worker, &[]), value(&worker.heartbeat.stats)))
            .collect()
    };
    let builds = workers
        .iter()
        .flat_map(|worker| {
            let stats = &worker.heartbeat.stats;
            [
                ("finished", stats.builds_finished),
                ("failed", stats.builds_failed),
                ("cancelled", stats.builds_cancelled),
            ]
            .map(|(outcome, count)| counter_metric(labels(worker, &[("outcome", outcome)]), count))
        })
        .collect();
    let steps = workers
        .iter()
        .flat_map(|worker| {
            worker
                .heartbeat
                .stats
                .step_seconds
                .iter()
                .map(|(step, times)| histogram_metric(labels(worker, &[("step", step)]), times))
        })
        .collect();
    let families = vec![
        family(
            "kiln_worker_builds_total",
            "Builds a worker ended, by outcome, since it started.",
            MetricType::COUNTER,
            builds,
        ),
        family(
            "kiln_worker_pulled_bytes_total",
            "Bytes a worker pulled: base image layers, library images, build contexts.",
            MetricType::COUNTER,
            counters(|s| s.bytes_pulled),
        ),
        family(
            "kiln_worker_pushed_bytes_total",
            "Bytes of images a worker uploaded.",
            MetricType::COUNTER,
            counters(|s| s.bytes_pushed),
        ),
        family(
            "kiln_worker_log_lines_total",
            "Log lines a worker published.",
            MetricType::COUNTER,
            counters(|s| s.log_lines),
        ),
        family(
            "kiln_worker_step_seconds",
            "How long build steps took on a worker: fetch, run (the sections), squash, upload.",
            MetricType::HISTOGRAM,
            steps,
        ),
    ];
    families
        .into_iter()
        .filter(|family| !family.get_metric().is_empty())
        .collect()
}

fn label_pair(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

fn counter_metric(labels: Vec<LabelPair>, value: u64) -> Metric {
    let mut counter = Counter::default();
    #[allow(clippy::cast_precision_loss)]
    counter.set_value(value as f64);
    let mut metric = Metric::default();
    metric.set_label(labels);
    metric.set_counter(counter);
    metric
}

fn histogram_metric(labels: Vec<LabelPair>, times: &StepTimes) -> Metric {
    let buckets = STEP_SECONDS_BUCKETS
        .iter()
        .zip(&times.cumulative)
        .map(|(bound, count)| {
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(*bound);
            bucket.set_cumulative_count(*count);
            bucket
        })
        .collect();
    let mut histogram = prometheus::proto::Histogram::default();
    histogram.set_sample_count(times.count);
    #[allow(clippy::cast_precision_loss)]
    histogram.set_sample_sum(times.sum_ms as f64 / 1000.0);
    histogram.set_bucket(buckets);
    let mut metric = Metric::default();
    metric.set_label(labels);
    metric.set_histogram(histogram);
    metric
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

    #[test]
    fn worker_counters_render_as_prometheus_series() {
        let mut stats = WorkerStats {
            builds_finished: 3,
            builds_failed: 1,
            bytes_pulled: 2_048,
            ..WorkerStats::default()
        };
        let squash = stats.step_seconds.entry("squash".into()).or_default();
        squash.observe(700);
        squash.observe(3_000);
        let worker = WorkerRow {
            worker_id: "w1".into(),
            heartbeat: kiln_proto::amqp::WorkerHeartbeat {
                host: "h".into(),
                arch: "amd64".into(),
                worker_version: "0".into(),
                concurrency: 1,
                builds: Vec::new(),
                is_draining: false,
                stats,
            },
            first_seen_ms: 0,
            last_seen_ms: 0,
        };
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&worker_families(&[worker]), &mut text)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        for line in [
            "# TYPE kiln_worker_builds_total counter",
            "kiln_worker_builds_total{arch=\"amd64\",worker=\"w1\",outcome=\"finished\"} 3",
            "kiln_worker_builds_total{arch=\"amd64\",worker=\"w1\",outcome=\"failed\"} 1",
            "kiln_worker_pulled_bytes_total{arch=\"amd64\",worker=\"w1\"} 2048",
            "# TYPE kiln_worker_step_seconds histogram",
            "kiln_worker_step_seconds_bucket{arch=\"amd64\",worker=\"w1\",step=\"squash\",le=\"0.5\"} 0",
            "kiln_worker_step_seconds_bucket{arch=\"amd64\",worker=\"w1\",step=\"squash\",le=\"1\"} 1",
            "kiln_worker_step_seconds_bucket{arch=\"amd64\",worker=\"w1\",step=\"squash\",le=\"5\"} 2",
            "kiln_worker_step_seconds_bucket{arch=\"amd64\",worker=\"w1\",step=\"squash\",le=\"+Inf\"} 2",
            "kiln_worker_step_seconds_sum{arch=\"amd64\",worker=\"w1\",step=\"squash\"} 3.7",
            "kiln_worker_step_seconds_count{arch=\"amd64\",worker=\"w1\",step=\"squash\"} 2",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
        assert!(worker_families(&[]).is_empty());
    }
}
