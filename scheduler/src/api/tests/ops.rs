//! Router tests of the operators' endpoints: probes, metrics, the fleet view.

use kiln_proto::amqp::WorkerHeartbeat;

use super::*;

/// A token of a new admin user.
async fn admin_token(harness: &Harness) -> String {
    harness
        .state
        .store
        .add_user("root", true, UserLimits::default(), 0)
        .await
        .unwrap();
    let token = new_api_token();
    harness
        .state
        .store
        .add_token("root", &token_hash(&token), 0)
        .await
        .unwrap();
    format!("Bearer {token}")
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

#[tokio::test]
async fn healthz_and_readyz_follow_the_broker_the_object_store_and_shutdown() {
    let mut harness = harness(Limits::default()).await;
    let alive = harness
        .call(Method::GET, "/healthz", None, Body::empty())
        .await;
    assert_eq!(alive.status, StatusCode::OK);
    let ready = harness
        .call(Method::GET, "/readyz", None, Body::empty())
        .await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(ready.body["data"]["broker"], "ok");

    harness.broker.fail.store(true, Ordering::SeqCst);
    let down = harness
        .call(Method::GET, "/readyz", None, Body::empty())
        .await;
    assert_error(&down, StatusCode::SERVICE_UNAVAILABLE, "broker");
    let alive = harness
        .call(Method::GET, "/healthz", None, Body::empty())
        .await;
    assert_eq!(alive.status, StatusCode::OK, "liveness ignores the broker");

    harness.broker.fail.store(false, Ordering::SeqCst);
    let back = harness
        .call(Method::GET, "/readyz", None, Body::empty())
        .await;
    assert_eq!(back.status, StatusCode::OK);
    assert_eq!(back.body["data"]["objectStore"], "ok");

    // An S3 endpoint where nothing listens.
    let unreachable = [
        ("aws_endpoint", "http://127.0.0.1:9"),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "kiln"),
        ("aws_secret_access_key", "kiln"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let working = std::mem::replace(
        &mut harness.state.objects,
        crate::objects::Objects::open(Some("s3://kiln-gone"), &unreachable, harness.dir.path())
            .unwrap(),
    );
    let down = harness
        .call(Method::GET, "/readyz", None, Body::empty())
        .await;
    assert_error(&down, StatusCode::SERVICE_UNAVAILABLE, "object store");
    harness.state.objects = working;

    harness.state.shutdown.cancel();
    let leaving = harness
        .call(Method::GET, "/readyz", None, Body::empty())
        .await;
    assert_error(&leaving, StatusCode::SERVICE_UNAVAILABLE, "shutting down");
}

#[tokio::test]
async fn metrics_count_builds_queue_depth_and_requests_by_route() {
    let harness = harness(Limits::default()).await;
    let scrape = || async {
        let answer = harness
            .call(Method::GET, "/metrics", None, Body::empty())
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        let kind = answer.headers["content-type"].to_str().unwrap().to_owned();
        assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
        String::from_utf8(answer.bytes).unwrap()
    };
    let before = scrape().await;
    assert_eq!(
        metric(&before, "kiln_builds{arch=\"amd64\",state=\"queued\"}"),
        0.0
    );
    assert_eq!(metric(&before, "kiln_queue_depth{arch=\"amd64\"}"), 0.0);
    assert_eq!(metric(&before, "kiln_broker_up"), 1.0);

    let first = harness.submit_id().await;
    harness.submit_id().await;
    harness
        .state
        .store
        .mark_running(&first, "w1", "started", 1)
        .await
        .unwrap();
    harness
        .call(
            Method::GET,
            &format!("/v1/build/{first}"),
            Some(&harness.bearer()),
            Body::empty(),
        )
        .await;
    let after = scrape().await;
    assert_eq!(
        metric(&after, "kiln_builds{arch=\"amd64\",state=\"queued\"}"),
        1.0
    );
    assert_eq!(
        metric(&after, "kiln_builds{arch=\"amd64\",state=\"running\"}"),
        1.0
    );
    // The recording broker holds both jobs as ready; the running build adds its unacked one.
    assert_eq!(metric(&after, "kiln_queue_ready_jobs{arch=\"amd64\"}"), 2.0);
    assert_eq!(metric(&after, "kiln_queue_depth{arch=\"amd64\"}"), 3.0);
    let route = |text: &str, method: &str, route: &str, status: &str| {
        metric(
            text,
            &format!(
                "kiln_http_request_duration_seconds_count{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(route(&after, "POST", "/v1/build", "201"), 2.0);
    assert_eq!(route(&after, "GET", "/v1/build/{id}", "200"), 1.0);
    assert_eq!(
        route(&after, "GET", "/metrics", "200"),
        1.0,
        "the first scrape"
    );

    harness
        .call(Method::GET, "/no/such/path", None, Body::empty())
        .await;
    harness.broker.fail.store(true, Ordering::SeqCst);
    let broken = scrape().await;
    assert_eq!(metric(&broken, "kiln_broker_up"), 0.0);
    assert_eq!(route(&broken, "GET", "unmatched", "404"), 1.0);
}

#[tokio::test]
async fn the_fleet_view_is_for_admins_and_marks_lost_workers() {
    let harness = harness(Limits::default()).await;
    let admin = admin_token(&harness).await;
    let forbidden = harness
        .call(
            Method::GET,
            "/v1/admin/workers",
            Some(&harness.bearer()),
            Body::empty(),
        )
        .await;
    assert_error(&forbidden, StatusCode::FORBIDDEN, "admin");
    let anonymous = harness
        .call(Method::GET, "/v1/admin/workers", None, Body::empty())
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    let now = harness.state.clock.now_ms();
    let heartbeat = |id: &str, builds: Vec<String>| WorkerHeartbeat {
        host: format!("{id}-host"),
        arch: "amd64".into(),
        worker_version: "0.1.0".into(),
        concurrency: 1,
        builds,
        is_draining: false,
        stats: Default::default(),
    };
    let store = &harness.state.store;
    store
        .record_heartbeat("old", &heartbeat("old", vec![]), now)
        .await
        .unwrap();
    // 30 s is the default limit (3 heartbeats of 10 s).
    harness.clock.advance(31_000);
    let now = harness.state.clock.now_ms();
    store
        .record_heartbeat(
            "busy",
            &heartbeat("busy", vec!["0123456789abcdef01234567".into()]),
            now,
        )
        .await
        .unwrap();
    store
        .record_heartbeat("idle", &heartbeat("idle", vec![]), now)
        .await
        .unwrap();

    let answer = harness
        .call(
            Method::GET,
            "/v1/admin/workers",
            Some(&admin),
            Body::empty(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let workers = answer.body["data"].as_array().unwrap();
    let status: Vec<(&str, &str)> = workers
        .iter()
        .map(|w| (w["id"].as_str().unwrap(), w["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        status,
        [("busy", "busy"), ("idle", "idle"), ("old", "lost")]
    );
    assert_eq!(workers[0]["host"], "busy-host");
    assert_eq!(workers[0]["builds"][0], "0123456789abcdef01234567");
    assert_eq!(workers[2]["secondsSinceSeen"], 31);

    let text = String::from_utf8(
        harness
            .call(Method::GET, "/metrics", None, Body::empty())
            .await
            .bytes,
    )
    .unwrap();
    assert_eq!(metric(&text, "kiln_workers{status=\"busy\"}"), 1.0);
    assert_eq!(metric(&text, "kiln_workers{status=\"idle\"}"), 1.0);
    assert_eq!(metric(&text, "kiln_workers{status=\"lost\"}"), 1.0);

    harness.submit_id().await;
    let queues = harness
        .call(Method::GET, "/v1/admin/queues", Some(&admin), Body::empty())
        .await;
    assert_eq!(queues.status, StatusCode::OK, "{}", queues.body);
    assert_eq!(
        queues.body["data"],
        json!([{"arch": "amd64", "ready": 1, "consumers": 0, "queued": 1, "running": 0}])
    );
}
