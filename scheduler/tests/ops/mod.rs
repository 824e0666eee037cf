//! Operators' endpoints end to end: `/metrics` moves with real builds relayed from RabbitMQ,
//! heartbeats fill `/v1/admin/workers` on both backends, and `/readyz` follows a broker that
//! stops and comes back (a private RabbitMQ node: the shared one is never stopped).

use std::time::Duration;

use kiln_proto::amqp::{
    BuildState, Event, EventMessage, Finished, LogLine, LogStream, WorkerHeartbeat,
};
use kiln_scheduler::clock::SystemClock;
use kiln_scheduler::config::{
    AdminCommand, AdminConfig, Limits, ServeConfig, StateConfig, TokenCommand, UserCommand,
};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use serde_json::Value;

use super::{DEFINITION, Db, Scheduler, spawn_server, wait_for, wait_some};

/// The value of one series in Prometheus text, or `None` when absent.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

impl Scheduler {
    async fn scrape(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("scrape");
        assert_eq!(response.status().as_u16(), 200);
        response.text().await.unwrap()
    }

    /// A token of a new admin user `root`, made with the admin command as an operator would.
    async fn admin_token(&self) -> String {
        kiln_scheduler::admin(
            AdminConfig {
                state: self.config.state.clone(),
                command: AdminCommand::User(UserCommand::Add {
                    name: "root".into(),
                    admin: true,
                    build_timeout: None,
                    max_concurrent_builds: None,
                }),
            },
            &SystemClock,
        )
        .await
        .unwrap();
        kiln_scheduler::admin(
            AdminConfig {
                state: self.config.state.clone(),
                command: AdminCommand::Token(TokenCommand::Create {
                    name: "root".into(),
                }),
            },
            &SystemClock,
        )
        .await
        .unwrap()
    }

    /// Publishes a heartbeat of worker `worker_id` as a worker would.
    async fn heartbeat(&self, worker_id: &str, builds: Vec<String>) {
        let message = EventMessage::new(
            worker_id,
            None,
            0,
            0,
            Event::Heartbeat(WorkerHeartbeat {
                host: format!("{worker_id}.pod"),
                arch: "amd64".into(),
                worker_version: "0.1.0".into(),
                concurrency: 1,
                builds,
                is_draining: false,
                stats: Default::default(),
            }),
        );
        self.channel
            .basic_publish(
                self.topology.events_exchange().name.as_str().into(),
                message.routing_key().as_str().into(),
                BasicPublishOptions::default(),
                &message.to_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
    }

    async fn workers(&self, token: &str) -> Vec<Value> {
        let response = self
            .client
            .get(format!("{}/v1/admin/workers", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = response.json().await.unwrap();
        body["data"].as_array().unwrap().clone()
    }
}

pub(super) async fn metrics_move_with_relayed_builds_and_heartbeats_fill_the_fleet_view(db: Db) {
    let scheduler = Scheduler::start(db, Limits::default()).await;
    let admin = scheduler.admin_token().await;
    let before = scheduler.scrape().await;
    let series = |text: &str, name: &str| metric(text, name).unwrap_or(0.0);
    assert_eq!(metric(&before, "kiln_broker_up"), Some(1.0));
    assert_eq!(
        metric(&before, "kiln_queue_ready_jobs{arch=\"amd64\"}"),
        Some(0.0)
    );
    assert_eq!(series(&before, "kiln_log_lines_relayed_total"), 0.0);
    assert_eq!(series(&before, "kiln_build_queue_wait_seconds_count"), 0.0);

    let (code, body) = scheduler.submit(DEFINITION).await;
    assert_eq!(code, 201, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    // The job is on the real queue: the passive declare sees it.
    let queued = scheduler.scrape().await;
    assert_eq!(
        metric(&queued, "kiln_queue_ready_jobs{arch=\"amd64\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&queued, "kiln_queue_depth{arch=\"amd64\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&queued, "kiln_builds{arch=\"amd64\",state=\"queued\"}"),
        Some(1.0)
    );

    let (job, _) = scheduler.take_job().await;
    scheduler
        .publish(&id, 1, 0, Event::State(BuildState::Started))
        .await;
    scheduler.heartbeat("w1", vec![id.clone()]).await;
    scheduler.heartbeat("w2", vec![]).await;
    for (seq, text) in [(1, "one"), (2, "two"), (3, "three")] {
        let line = LogLine {
            stream: LogStream::Stdout,
            text: text.into(),
        };
        scheduler.publish(&id, 1, seq, Event::Log(line)).await;
    }
    let workers = wait_some("both heartbeats in the fleet view", || async {
        let workers = scheduler.workers(&admin).await;
        (workers.len() == 2).then_some(workers)
    })
    .await;
    let w1 = workers.iter().find(|w| w["id"] == "w1").unwrap();
    assert_eq!(w1["status"], "busy");
    assert_eq!(w1["host"], "w1.pod");
    assert_eq!(w1["builds"][0], id.as_str());
    let w2 = workers.iter().find(|w| w["id"] == "w2").unwrap();
    assert_eq!(w2["status"], "idle");
    let running = scheduler.scrape().await;
    assert_eq!(
        metric(&running, "kiln_builds{arch=\"amd64\",state=\"running\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&running, "kiln_queue_ready_jobs{arch=\"amd64\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&running, "kiln_queue_depth{arch=\"amd64\"}"),
        Some(1.0),
        "a running build still counts: its job is unacked"
    );
    assert_eq!(metric(&running, "kiln_workers{status=\"busy\"}"), Some(1.0));
    assert_eq!(metric(&running, "kiln_workers{status=\"idle\"}"), Some(1.0));

    scheduler
        .publish(
            &id,
            1,
            4,
            Event::Finished(Finished {
                image_size: 4096,
                image_checksum: format!("sha256.{}", "ab".repeat(32)),
                library_ref: job.library_ref.clone(),
            }),
        )
        .await;
    scheduler.wait_complete(&id).await;
    let after = scheduler.scrape().await;
    assert_eq!(series(&after, "kiln_log_lines_relayed_total"), 3.0);
    assert_eq!(series(&after, "kiln_build_queue_wait_seconds_count"), 1.0);
    assert_eq!(
        series(&after, "kiln_build_run_seconds_count{state=\"succeeded\"}"),
        1.0
    );
    assert_eq!(series(&after, "kiln_relay_events_total{kind=\"log\"}"), 3.0);
    assert_eq!(
        series(&after, "kiln_relay_events_total{kind=\"heartbeat\"}"),
        2.0
    );
    assert_eq!(
        metric(&after, "kiln_builds{arch=\"amd64\",state=\"succeeded\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&after, "kiln_queue_depth{arch=\"amd64\"}"),
        Some(0.0)
    );
    assert!(
        series(
            &after,
            "kiln_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/build\",status=\"201\"}"
        ) >= 1.0,
        "{after}"
    );
    scheduler.stop().await;
}

pub(super) async fn readyz_follows_a_broker_that_stops_and_comes_back() {
    let broker =
        kiln_tests::rabbitmq::PrivateNode::start(&[], "[].").expect("a private RabbitMQ node");
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        state: StateConfig {
            data: dir.path().join("data"),
            database: None,
        },
        amqp: broker.amqp_url(),
        public_url: None,
        limits: Limits::default(),
        library: kiln_scheduler::config::LibraryConfig::default(),
    };
    let (base, shutdown, server) = spawn_server(config).await;
    let client = reqwest::Client::new();
    let probe = |path: &'static str| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let response = client.get(url).send().await.expect("the scheduler answers");
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    wait_for("readyz to answer 200", || async {
        probe("/readyz").await.0 == 200
    })
    .await;

    broker.stop().expect("stop the private node");
    let body = wait_some("readyz to answer 503", || async {
        let (code, body) = probe("/readyz").await;
        (code == 503).then_some(body)
    })
    .await;
    assert!(body.contains("the broker does not answer"), "{body}");
    assert_eq!(
        probe("/healthz").await.0,
        200,
        "alive while the broker is away"
    );
    let (_, text) = probe("/metrics").await;
    assert_eq!(metric(&text, "kiln_broker_up"), Some(0.0), "{text}");

    broker.start_again().expect("start the private node again");
    wait_for("readyz to recover", || async {
        probe("/readyz").await.0 == 200
    })
    .await;
    let (_, text) = probe("/metrics").await;
    assert_eq!(metric(&text, "kiln_broker_up"), Some(1.0), "{text}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the scheduler stops within 30 s")
        .unwrap();
    drop(broker);
}
