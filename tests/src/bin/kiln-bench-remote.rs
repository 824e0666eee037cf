//! Benchmark of the remote build service: N trivial builds (busybox + one `%post` echo, default
//! 200) through a scheduler and two `kiln-worker serve` processes, a few in flight at once.
//! Prints submit→start latency p50/p99 (the client's submit to the worker's `started` event),
//! builds per second, and log-line latency p99 (the worker's timestamp on a `%post` line to its
//! arrival at a WebSocket viewer). The worker timestamps come from a tap queue on the events
//! exchange, so nothing in the measured path is changed for the benchmark. Never pass/fail.
//!
//!   usage: kiln-bench-remote [BUILDS] [IN_FLIGHT]    (run by tests/bench/remote-builds.sh)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use kiln_proto::amqp::{BuildState, Event, EventMessage};
use kiln_scheduler::config::Limits;
use kiln_tests::cluster::{Cluster, ClusterOptions, Db};
use kiln_tests::fixtures::Fixture;
use kiln_tests::registry::TestRegistry;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// What the tap saw of one build: when the worker started it, and when it printed each line.
#[derive(Default)]
struct Tapped {
    started_ms: Option<u64>,
    lines: HashMap<String, u64>,
}

type Tap = Arc<Mutex<HashMap<String, Tapped>>>;

async fn start_tap(amqp_url: &str) -> Tap {
    let tap: Tap = Arc::default();
    let connection = kiln_proto::amqp::declare::connect(amqp_url, "kiln-bench tap")
        .await
        .expect("connect the tap");
    let channel = connection.create_channel().await.expect("channel");
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("tap queue");
    channel
        .queue_bind(
            queue.name().clone(),
            "kiln.events".into(),
            "build.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the tap");
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "kiln-bench-tap".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume the tap");
    let sink = Arc::clone(&tap);
    tokio::spawn(async move {
        let _connection = connection;
        while let Some(Ok(delivery)) = consumer.next().await {
            let Ok(message) = EventMessage::from_bytes(&delivery.data) else {
                continue;
            };
            let Some(build_id) = message.build_id.clone() else {
                continue;
            };
            let mut tap = sink.lock().unwrap();
            let entry = tap.entry(build_id).or_default();
            match message.event {
                Event::State(BuildState::Started) => {
                    entry.started_ms.get_or_insert(message.time_unix_ms);
                }
                Event::Log(line) => {
                    entry.lines.insert(line.text, message.time_unix_ms);
                }
                _ => {}
            }
        }
    });
    tap
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

struct Sample {
    start_ms: Option<f64>,
    log_ms: Option<f64>,
}

async fn one_build(cluster: &Cluster, registry: &TestRegistry, tap: &Tap, n: usize) -> Sample {
    let marker = format!("bench-line-{n}");
    let definition = format!(
        "Bootstrap: docker\nFrom: {}\n\n%post\n    echo {marker}\n",
        registry.reference(Fixture::Busybox)
    );
    let submitted_ms = now_ms();
    let id = cluster.submit_ok(&definition).await;
    let mut log = cluster.open_log(&id).await;
    let connected_ms = now_ms();
    let seen_ok = log.read_until(&marker, Duration::from_secs(120)).await;
    let arrived_ms = now_ms();
    let status = cluster.wait_complete(&id, Duration::from_secs(120)).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    drop(log);
    let tapped = tap.lock().unwrap();
    let entry = tapped.get(&id);
    let start_ms = entry
        .and_then(|e| e.started_ms)
        .map(|t| t as f64 - submitted_ms);
    // A line printed before the viewer connected came as a replay: not a live latency.
    let log_ms = entry
        .and_then(|e| e.lines.get(&marker))
        .filter(|&&t| seen_ok && t as f64 >= connected_ms)
        .map(|&t| arrived_ms - t as f64);
    Sample { start_ms, log_ms }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let builds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let in_flight: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let registry = TestRegistry::plain().expect("a registry with the fixtures");
    let cluster = Cluster::start(ClusterOptions {
        db: Db::Sqlite,
        workers: 2,
        insecure_registries: vec![registry.addr().to_owned()],
        limits: Limits {
            max_concurrent_builds: 10_000,
            ..Limits::default()
        },
        ..ClusterOptions::default()
    })
    .await;
    let tap = start_tap(&cluster.amqp_url).await;
    // Warm the layer caches of both workers before measuring.
    for n in 0..4 {
        one_build(&cluster, &registry, &tap, 1_000_000 + n).await;
    }
    eprintln!("running {builds} builds, {in_flight} in flight, through 2 workers");
    let started = Instant::now();
    let samples: Vec<Sample> = futures::stream::iter(0..builds)
        .map(|n| one_build(&cluster, &registry, &tap, n))
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let wall = started.elapsed().as_secs_f64();
    let mut start: Vec<f64> = samples.iter().filter_map(|s| s.start_ms).collect();
    let mut log: Vec<f64> = samples.iter().filter_map(|s| s.log_ms).collect();
    start.sort_by(f64::total_cmp);
    log.sort_by(f64::total_cmp);
    println!("builds:                 {builds} ({in_flight} in flight, 2 workers, SQLite)");
    println!(
        "builds per second:      {:.2} ({wall:.1} s wall)",
        builds as f64 / wall
    );
    println!(
        "submit→start latency:   p50 {:.1} ms, p99 {:.1} ms (goal p50 < 20, p99 < 100; {} samples)",
        percentile(&start, 50.0),
        percentile(&start, 99.0),
        start.len()
    );
    println!(
        "log line → viewer:      p50 {:.1} ms, p99 {:.1} ms (goal p99 < 100; {} live samples)",
        percentile(&log, 50.0),
        percentile(&log, 99.0),
        log.len()
    );
    cluster.stop().await;
}
