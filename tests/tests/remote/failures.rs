//! What must not lose a build: a worker killed mid-build, the workers' broker connections cut,
//! the scheduler restarted, the broker restarted (a private node, never the shared one).

use std::process::Command;
use std::time::Duration;

use kiln_tests::cluster::{Cluster, ClusterOptions, Db};
use kiln_tests::command::run_stdout;
use kiln_tests::rabbitmq::PrivateNode;
use nix::sys::signal::Signal;

use super::{BUILD_TIMEOUT, busybox_definition, cluster, registry, siftool_list};

/// A build that prints `started`, takes a few seconds, then prints `finished`.
fn slow_definition(registry: &kiln_tests::registry::TestRegistry, seconds: u32) -> String {
    busybox_definition(
        registry,
        &format!(
            "    echo started\n    sleep {seconds}\n    echo finished > /opt-done\n    echo finished"
        ),
    )
}

/// Submits a slow build and waits until its `%post` printed `started`; the viewer stays open.
async fn start_slow_build(
    cluster: &Cluster,
    registry: &kiln_tests::registry::TestRegistry,
    seconds: u32,
) -> (String, kiln_tests::cluster::LogStream) {
    let id = cluster.submit_ok(&slow_definition(registry, seconds)).await;
    let mut log = cluster.open_log(&id).await;
    assert!(
        log.read_until("started", BUILD_TIMEOUT).await,
        "{}",
        cluster.worker_logs()
    );
    (id, log)
}

/// Waits for the build to end and checks it succeeded; its status.
async fn assert_succeeds(cluster: &Cluster, id: &str) -> serde_json::Value {
    let status = cluster.wait_complete(id, BUILD_TIMEOUT).await;
    assert_eq!(
        status["state"],
        "succeeded",
        "{status}\n{}",
        cluster.worker_logs()
    );
    status
}

/// Checks that the workers still take work: a quick build succeeds.
async fn assert_workers_serve(cluster: &Cluster, registry: &kiln_tests::registry::TestRegistry) {
    let next = cluster
        .submit_ok(&busybox_definition(registry, "    echo again"))
        .await;
    assert_succeeds(cluster, &next).await;
}

/// The viewer opened at the start sees the build's last line, then close 1000.
async fn assert_viewer_saw_the_end(log: kiln_tests::cluster::LogStream) {
    let seen = log.read_to_close(Duration::from_secs(30)).await;
    assert_eq!(seen.close_code, Some(1000), "{}", seen.text);
    assert!(seen.text.contains("finished"), "{}", seen.text);
}

/// Index of the worker whose log says it started `build_id`.
fn worker_running(cluster: &Cluster, build_id: &str) -> Option<usize> {
    cluster.workers.iter().position(|w| {
        w.log_text()
            .lines()
            .any(|l| l.contains("job started") && l.contains(build_id))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_worker_s_build_is_redelivered_and_succeeds_once() {
    let registry = registry();
    let mut cluster = cluster(Db::Sqlite, &registry).await;
    let (id, log) = start_slow_build(&cluster, &registry, 3).await;
    let victim = worker_running(&cluster, &id).expect("a worker runs the build");
    cluster.workers[victim].signal(Signal::SIGKILL);
    cluster.workers[victim].wait_exit(Duration::from_secs(5));
    let status = assert_succeeds(&cluster, &id).await;
    let survivor = 1 - victim;
    assert_eq!(worker_running(&cluster, &id), Some(victim));
    assert!(
        cluster.workers[survivor]
            .log_text()
            .lines()
            .any(|l| l.contains("job started") && l.contains(&id) && l.contains("attempt=2")),
        "the other worker ran attempt 2:\n{}",
        cluster.worker_logs()
    );
    // The viewer that watched attempt 1 sees the build through to its end.
    assert_viewer_saw_the_end(log).await;
    let image = cluster
        .download(status["libraryRef"].as_str().unwrap())
        .await;
    assert_eq!(image.len() as u64, status["imageSize"].as_u64().unwrap());
    siftool_list(cluster.scratch(), &image);
    // Exactly one image: the library container of the result holds one.
    let container = status["libraryRef"]
        .as_str()
        .unwrap()
        .trim_start_matches("library://")
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = cluster
        .request(reqwest::Method::GET, &format!("/v1/containers/{container}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let images = body["data"]["images"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(images.len(), 1, "{body}");
    cluster.stop().await;
}

/// `rabbitmqctl close_connection` for every connection of the vhost named like `prefix`.
fn close_connections(vhost_url: &str, prefix: &str) -> usize {
    let vhost = vhost_url.rsplit('/').next().unwrap();
    let listing = run_stdout(Command::new("rabbitmqctl").args([
        "-q",
        "list_connections",
        "--no-table-headers",
        "pid",
        "vhost",
        "client_properties",
    ]))
    .unwrap();
    let mut closed = 0;
    for line in listing.lines() {
        let mut fields = line.split('\t');
        let (Some(pid), Some(line_vhost)) = (fields.next(), fields.next()) else {
            continue;
        };
        if line_vhost != vhost || !line.contains(prefix) {
            continue;
        }
        let _ = run_stdout(Command::new("rabbitmqctl").args([
            "-q",
            "close_connection",
            pid,
            "kiln test: cutting the worker's connection",
        ]));
        closed += 1;
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutting_the_workers_broker_connections_loses_nothing() {
    let registry = registry();
    let cluster = cluster(Db::Sqlite, &registry).await;
    let (id, log) = start_slow_build(&cluster, &registry, 2).await;
    let closed = close_connections(&cluster.amqp_url, "kiln-worker");
    assert!(closed >= 2, "closed {closed} worker connections");
    assert_succeeds(&cluster, &id).await;
    assert_viewer_saw_the_end(log).await;
    // The workers are back: another build runs.
    assert_workers_serve(&cluster, &registry).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduler_restart_mid_build_loses_nothing() {
    let registry = registry();
    let mut cluster = cluster(Db::Sqlite, &registry).await;
    // The viewer's connection ends with the scheduler; a new one replays below.
    let (id, _log) = start_slow_build(&cluster, &registry, 3).await;
    cluster.stop_scheduler().await;
    // The build goes on without the scheduler; its events wait in the broker.
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.restart_scheduler().await;
    let status = assert_succeeds(&cluster, &id).await;
    let seen = cluster
        .open_log(&id)
        .await
        .read_to_close(Duration::from_secs(10))
        .await;
    assert_eq!(seen.close_code, Some(1000));
    for line in ["started", "finished"] {
        assert!(seen.text.contains(line), "{line} missing:\n{}", seen.text);
    }
    let image = cluster
        .download(status["libraryRef"].as_str().unwrap())
        .await;
    siftool_list(cluster.scratch(), &image);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_restart_loses_nothing() {
    let registry = registry();
    let node = PrivateNode::start(&[], "[].\n").expect("a private RabbitMQ node");
    let cluster = Cluster::start(ClusterOptions {
        amqp_url: Some(node.amqp_url()),
        insecure_registries: vec![registry.addr().to_owned()],
        ..ClusterOptions::default()
    })
    .await;
    let (id, log) = start_slow_build(&cluster, &registry, 3).await;
    node.stop().expect("stop the private node");
    tokio::time::sleep(Duration::from_secs(2)).await;
    node.start_again().expect("start the private node again");
    assert_succeeds(&cluster, &id).await;
    assert_viewer_saw_the_end(log).await;
    assert_workers_serve(&cluster, &registry).await;
    cluster.stop().await;
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn builds_outlive_the_broker_s_consumer_timeout() {
    let registry = registry();
    // The broker takes back a delivery unacked for 3 s, checking every 0.5 s; RabbitMQ's default
    // is 30 min, checked every minute. Workers renew their jobs' leases after 1 s.
    let node = PrivateNode::start(
        &["consumer_timeout = 3000"],
        "[{rabbit, [{channel_tick_interval, 500}]}].\n",
    )
    .expect("a private RabbitMQ node");
    let cluster = Cluster::start(ClusterOptions {
        amqp_url: Some(node.amqp_url()),
        insecure_registries: vec![registry.addr().to_owned()],
        worker_args: vec!["--lease-renewal".into(), "1".into()],
        ..ClusterOptions::default()
    })
    .await;
    let (id, log) = start_slow_build(&cluster, &registry, 9).await;
    assert_succeeds(&cluster, &id).await;
    assert_viewer_saw_the_end(log).await;
    let logs = cluster.worker_logs();
    let starts = logs
        .lines()
        .filter(|l| l.contains("job started") && l.contains(&id))
        .count();
    assert_eq!(starts, 1, "the build ran once, never redelivered:\n{logs}");
    assert!(
        logs.contains("renewed the job's lease"),
        "the lease was renewed:\n{logs}"
    );
    assert!(
        !logs.contains("consumer_timeout"),
        "no delivery timed out:\n{logs}"
    );
    assert_workers_serve(&cluster, &registry).await;
    cluster.stop().await;
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_draining_worker_finishes_its_build_and_exits() {
    let registry = registry();
    let mut cluster = cluster(Db::Sqlite, &registry).await;
    let (id, log) = start_slow_build(&cluster, &registry, 3).await;
    let draining = worker_running(&cluster, &id).expect("a worker runs the build");
    cluster.workers[draining].signal(Signal::SIGTERM);
    let exit = cluster.workers[draining].wait_exit(BUILD_TIMEOUT);
    assert!(
        exit.is_some_and(|status| status.success()),
        "the worker exits cleanly once its build is done: {exit:?}\n{}",
        cluster.worker_logs()
    );
    assert_succeeds(&cluster, &id).await;
    assert_viewer_saw_the_end(log).await;
    let starts = cluster
        .worker_logs()
        .lines()
        .filter(|l| l.contains("job started") && l.contains(&id))
        .count();
    assert_eq!(starts, 1, "built exactly once:\n{}", cluster.worker_logs());
    // The other worker still serves.
    assert_workers_serve(&cluster, &registry).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_past_its_time_limit_ends_timed_out_and_leaves_nothing() {
    let registry = registry();
    let cluster = Cluster::start(ClusterOptions {
        insecure_registries: vec![registry.addr().to_owned()],
        limits: kiln_scheduler::config::Limits {
            build_timeout_seconds: 4,
            ..kiln_scheduler::config::Limits::default()
        },
        ..ClusterOptions::default()
    })
    .await;
    let marker = "sleep 6023";
    let id = cluster
        .submit_ok(&busybox_definition(
            &registry,
            &format!("    echo started\n    {marker}"),
        ))
        .await;
    let status = cluster.wait_complete(&id, BUILD_TIMEOUT).await;
    assert_eq!(status["state"], "timed_out", "{status}");
    assert!(
        status["failureReason"]
            .as_str()
            .is_some_and(|reason| reason.contains("time limit of 4 s")),
        "{status}"
    );
    assert!(
        super::processes_running(marker).is_empty(),
        "the %post was killed"
    );
    assert_workers_serve(&cluster, &registry).await;
    cluster.stop().await;
}
