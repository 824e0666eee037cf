//! Router tests through `tower::ServiceExt::oneshot`, with a SQLite store in a temp dir and a
//! broker that records what would be published (the e2e suite in `tests/` uses the real one).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::ws::Message;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use futures::future::BoxFuture;
use kiln_proto::amqp::{Control, Job, Topology};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tar::EntryType;
use tempfile::TempDir;
use tower::ServiceExt;

use super::*;
use crate::clock::ManualClock;
use crate::context_archive::tests::archive;
use crate::queue::QueueError;
use crate::secrets::{new_api_token, token_hash};
use crate::store::{BuildState, FinalState, User, UserLimits};
use crate::upload::sha256_digest;

/// Records jobs and control messages; fails every publish while `fail` is set.
#[derive(Debug, Default)]
pub(crate) struct RecordingBroker {
    pub jobs: Mutex<Vec<Job>>,
    pub controls: Mutex<Vec<Control>>,
    pub fail: AtomicBool,
}

impl Broker for RecordingBroker {
    fn publish_job<'a>(
        &'a self,
        job: &'a Job,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            if self.fail.load(Ordering::SeqCst) {
                return Err(QueueError::Nacked);
            }
            self.jobs.lock().unwrap().push(job.clone());
            Ok(())
        })
    }

    fn publish_control<'a>(
        &'a self,
        control: &'a Control,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            self.controls.lock().unwrap().push(control.clone());
            Ok(())
        })
    }

    /// Every recorded job counts as ready; fails while `fail` is set.
    fn job_queue_stats<'a>(
        &'a self,
        _arch: &'a str,
    ) -> BoxFuture<'a, Result<crate::queue::QueueStats, QueueError>> {
        Box::pin(async move {
            if self.fail.load(Ordering::SeqCst) {
                return Err(QueueError::Nacked);
            }
            let ready = u32::try_from(self.jobs.lock().unwrap().len()).unwrap();
            Ok(crate::queue::QueueStats {
                ready,
                consumers: 0,
            })
        })
    }

    /// Fails while `fail` is set.
    fn check(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            if self.fail.load(Ordering::SeqCst) {
                return Err(QueueError::Nacked);
            }
            Ok(())
        })
    }
}

pub(crate) struct Harness {
    pub state: AppState,
    pub broker: Arc<RecordingBroker>,
    pub clock: Arc<ManualClock>,
    pub token: String,
    pub user: User,
    pub dir: TempDir,
}

pub(crate) async fn harness(limits: Limits) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::tests::sqlite_store(dir.path()).await;
    let user = store
        .add_user("alice", false, UserLimits::default(), 0)
        .await
        .unwrap();
    let token = new_api_token();
    store
        .add_token("alice", &token_hash(&token), 0)
        .await
        .unwrap();
    let broker = Arc::new(RecordingBroker::default());
    let clock = Arc::new(ManualClock::new(1_764_254_820_000));
    let state = AppState {
        store,
        broker: broker.clone(),
        limits: Arc::new(limits),
        topology: Arc::new(Topology::with_prefix("test.")),
        public_url: "http://kiln.test".into(),
        data_dir: Arc::new(dir.path().join("data")),
        objects: crate::objects::Objects::open(None, &[], &dir.path().join("data")).unwrap(),
        library: Arc::new(crate::config::LibraryConfig::default()),
        clock: clock.clone(),
        changes: tokio::sync::broadcast::channel(16).0,
        shutdown: tokio_util::sync::CancellationToken::new(),
        tracker: tokio_util::task::TaskTracker::new(),
        metrics: Arc::new(crate::metrics::Metrics::new()),
        sign_ins: Arc::default(),
    };
    Harness {
        state,
        broker,
        clock,
        token,
        user,
        dir,
    }
}

/// One answer: status, headers, body as JSON (`Null` when empty or not JSON).
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub bytes: Vec<u8>,
}

impl Harness {
    pub(crate) async fn call(
        &self,
        method: Method,
        uri: &str,
        auth: Option<&str>,
        body: Body,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request = request.header("content-type", "application/json");
        let response = router(self.state.clone())
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            bytes,
        }
    }

    pub(crate) fn bearer(&self) -> String {
        format!("BEARER {}", self.token)
    }

    async fn submit(&self, body: Value) -> Answer {
        self.call(
            Method::POST,
            "/v1/build",
            Some(&self.bearer()),
            Body::from(body.to_string()),
        )
        .await
    }

    /// Submits [`DEFINITION`] and returns the new build's id.
    async fn submit_id(&self) -> String {
        let answer = self.submit(submission(DEFINITION)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.body["data"]["id"].as_str().unwrap().to_owned()
    }

    /// Asserts nothing was recorded, queued or written.
    async fn assert_nothing_left(&self) {
        assert_eq!(self.state.store.count_builds().await.unwrap(), 0);
        assert_eq!(self.state.store.count_contexts().await.unwrap(), 0);
        assert!(self.broker.jobs.lock().unwrap().is_empty());
        let files: Vec<_> = walk(&self.state.data_dir);
        assert!(files.is_empty(), "files left behind: {files:?}");
    }
}

pub(crate) fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// Asserts a json-resp error envelope with this status and a message containing `needle`.
pub(crate) fn assert_error(answer: &Answer, status: StatusCode, needle: &str) {
    assert_eq!(answer.status, status, "body: {}", answer.body);
    assert_eq!(
        answer.body["error"]["code"],
        status.as_u16(),
        "{}",
        answer.body
    );
    let message = answer.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "message {message:?} lacks {needle:?}"
    );
    assert!(answer.body.get("data").is_none());
}

const DEFINITION: &str = "Bootstrap: docker\nFrom: alpine:3.19\n\n%post\n    echo hi\n";

fn submission(definition: &str) -> Value {
    json!({
        "definitionRaw": STANDARD.encode(definition),
        "libraryRef": "",
        "libraryURL": "https://library.example",
        "builderRequirements": {"arch": "amd64"},
        "workingDir": "/home/alice/proj",
    })
}

#[tokio::test]
async fn discovery_version_and_unknown_paths() {
    let h = harness(Limits::default()).await;
    let answer = h
        .call(
            Method::GET,
            "/assets/config/config.prod.json",
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    for key in ["libraryAPI", "builderAPI", "keystoreAPI", "tokenAPI"] {
        assert_eq!(answer.body[key]["uri"], "http://kiln.test", "{key}");
    }
    let answer = h.call(Method::GET, "/version", None, Body::empty()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["data"]["apiVersion"], "2.0.0");
    assert!(answer.body["data"]["version"].is_string());
    let answer = h
        .call(Method::GET, "/v1/nothing", None, Body::empty())
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "no such endpoint");
    let answer = h
        .call(
            Method::GET,
            "/v1/oci-redirect?namespace=a/b",
            None,
            Body::empty(),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "no OCI registry");
}

#[tokio::test]
async fn tokens_are_checked_with_any_scheme_case() {
    let h = harness(Limits::default()).await;
    let status = |auth: Option<String>| {
        let h = &h;
        async move {
            h.call(
                Method::GET,
                "/v1/token-status",
                auth.as_deref(),
                Body::empty(),
            )
            .await
        }
    };
    assert_error(
        &status(None).await,
        StatusCode::UNAUTHORIZED,
        "missing token",
    );
    assert_error(
        &status(Some("Bearer nope".into())).await,
        StatusCode::UNAUTHORIZED,
        "invalid token",
    );
    assert_error(
        &status(Some(format!("Basic {}", h.token))).await,
        StatusCode::UNAUTHORIZED,
        "malformed",
    );
    for scheme in ["BEARER", "Bearer", "bearer"] {
        let answer = status(Some(format!("{scheme} {}", h.token))).await;
        assert_eq!(answer.status, StatusCode::OK, "{scheme}");
        assert!(answer.body["data"].is_object());
    }
    let answer = h
        .call(
            Method::GET,
            "/v1/rbac/users/current",
            Some(&format!("Bearer {}", h.token)),
            Body::empty(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["username"], "alice", "plain JSON, no envelope");
}

#[tokio::test]
async fn bad_submissions_get_a_4xx_envelope_and_leave_nothing() {
    let h = harness(Limits::default()).await;
    let raw = |body: &str| {
        let h = &h;
        let body = body.to_owned();
        async move {
            h.call(
                Method::POST,
                "/v1/build",
                Some(&h.bearer()),
                Body::from(body),
            )
            .await
        }
    };
    assert_error(&raw("{not json").await, StatusCode::BAD_REQUEST, "");
    assert_error(
        &raw("{}").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "definitionRaw",
    );
    let mut body = submission(DEFINITION);
    body["definitionRaw"] = json!("***not base64***");
    assert_error(
        &h.submit(body).await,
        StatusCode::BAD_REQUEST,
        "not valid base64",
    );
    let mut body = submission(DEFINITION);
    body["definitionRaw"] = json!(STANDARD.encode([0xff, 0xfe, 0x00]));
    assert_error(
        &h.submit(body).await,
        StatusCode::BAD_REQUEST,
        "not valid UTF-8",
    );
    assert_error(
        &h.submit(submission("%post\n    echo no header\n")).await,
        StatusCode::BAD_REQUEST,
        "definition:1:",
    );
    let mut body = submission(DEFINITION);
    body["builderRequirements"] = json!({"arch": "s390x"});
    assert_error(
        &h.submit(body).await,
        StatusCode::BAD_REQUEST,
        "unsupported architecture \"s390x\"",
    );
    let mut body = submission(DEFINITION);
    body["libraryRef"] = json!("library://host.example/a/b/c");
    assert_error(
        &h.submit(body).await,
        StatusCode::BAD_REQUEST,
        "invalid library ref",
    );
    let mut body = submission(DEFINITION);
    body["libraryRef"] = json!("library://bob/default/img:1");
    assert_error(&h.submit(body).await, StatusCode::FORBIDDEN, "own entity");
    let mut body = submission(DEFINITION);
    body["contextDigest"] = json!(format!("sha256.{}", "0".repeat(64)));
    assert_error(
        &h.submit(body).await,
        StatusCode::BAD_REQUEST,
        "was not uploaded",
    );
    // Larger than any definition can be: refused before it is read into memory.
    let huge = format!(
        "{{\"definitionRaw\":\"{}\"}}",
        "A".repeat(MAX_JSON_BODY_BYTES + 1)
    );
    assert_error(&raw(&huge).await, StatusCode::PAYLOAD_TOO_LARGE, "");
    // Wrong token: 401 before anything else.
    let answer = h
        .call(
            Method::POST,
            "/v1/build",
            Some("BEARER wrong"),
            Body::from(submission(DEFINITION).to_string()),
        )
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid token");
    // The broker does not confirm: 503 and the row is gone again.
    h.broker.fail.store(true, Ordering::SeqCst);
    assert_error(
        &h.submit(submission(DEFINITION)).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "build queue is unavailable",
    );
    h.assert_nothing_left().await;
}

#[tokio::test]
async fn a_submission_is_recorded_queued_and_visible_to_its_owner_only() {
    let h = harness(Limits {
        max_concurrent_builds: 1,
        ..Limits::default()
    })
    .await;
    let answer = h.submit(submission(DEFINITION)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let info = &answer.body["data"];
    let id = info["id"].as_str().unwrap().to_owned();
    assert!(crate::secrets::is_build_id(&id));
    assert_eq!(info["isComplete"], false);
    assert_eq!(
        info["libraryRef"],
        format!("library://alice/remote-builds/rb-{id}:latest")
    );
    assert_eq!(info["libraryURL"], "http://kiln.test");
    assert_eq!(info["submitTime"], "2025-11-27T14:47:00Z");
    assert!(info.get("imageSize").is_none());

    let jobs = h.broker.jobs.lock().unwrap().clone();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.build_id, id);
    assert_eq!(job.owner, "alice");
    assert_eq!(job.definition, DEFINITION);
    assert_eq!(job.arch, "amd64");
    assert_eq!(
        job.library_ref,
        format!("alice/remote-builds/rb-{id}:latest")
    );
    assert_eq!(job.library_url.as_deref(), Some("https://library.example"));
    assert_eq!(job.working_dir.as_deref(), Some("/home/alice/proj"));
    assert_eq!(job.timeout_seconds, 3600);
    assert!(job.context.is_none());
    assert!(
        job.result_url
            .as_deref()
            .unwrap()
            .starts_with(&format!("http://kiln.test/v1/build-result/{id}/"))
    );

    let status = h
        .call(
            Method::GET,
            &format!("/v1/build/{id}"),
            Some(&h.bearer()),
            Body::empty(),
        )
        .await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.body["data"]["id"], id.as_str());

    // Over the concurrency limit of 1.
    assert_error(
        &h.submit(submission(DEFINITION)).await,
        StatusCode::TOO_MANY_REQUESTS,
        "builds queued or running",
    );

    // Unknown, malformed and other people's ids are all "not found".
    for path in [
        "/v1/build/000000000000000000000000".to_owned(),
        "/v1/build/..%2F..%2Fetc".to_owned(),
    ] {
        let answer = h
            .call(Method::GET, &path, Some(&h.bearer()), Body::empty())
            .await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not found");
    }
    h.state
        .store
        .add_user("bob", false, UserLimits::default(), 0)
        .await
        .unwrap();
    let bob = new_api_token();
    h.state
        .store
        .add_token("bob", &token_hash(&bob), 0)
        .await
        .unwrap();
    let answer = h
        .call(
            Method::GET,
            &format!("/v1/build/{id}"),
            Some(&format!("Bearer {bob}")),
            Body::empty(),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not found");
    let answer = h
        .call(
            Method::PUT,
            &format!("/v1/build/{id}/_cancel"),
            Some(&format!("Bearer {bob}")),
            Body::empty(),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not found");
}

#[tokio::test]
async fn a_users_own_limits_override_the_deployments() {
    let h = harness(Limits::default()).await;
    let limits = UserLimits {
        build_timeout_seconds: Some(60),
        max_concurrent_builds: Some(1),
    };
    h.state
        .store
        .set_user_limits("alice", limits)
        .await
        .unwrap();
    h.submit_id().await;
    assert_eq!(h.broker.jobs.lock().unwrap()[0].timeout_seconds, 60);
    assert_error(
        &h.submit(submission(DEFINITION)).await,
        StatusCode::TOO_MANY_REQUESTS,
        "1 builds queued or running",
    );
}

#[tokio::test]
async fn cancel_answers_204_ends_the_build_and_tells_the_workers() {
    let h = harness(Limits::default()).await;
    let id = h.submit_id().await;
    let path = format!("/v1/build/{id}/_cancel");
    let answer = h
        .call(Method::PUT, &path, Some(&h.bearer()), Body::empty())
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.bytes.is_empty());
    let row = h.state.store.build(&id).await.unwrap().unwrap();
    assert_eq!(row.state, BuildState::Cancelled);
    assert_eq!(
        *h.broker.controls.lock().unwrap(),
        vec![Control::cancel(&id)]
    );
    let log: String = h
        .state
        .store
        .log_since(&id, 0)
        .await
        .unwrap()
        .iter()
        .map(|c| c.text.clone())
        .collect();
    assert_eq!(log, "[kiln] build cancelled by alice\n");
    // Again: still 204, nothing new published.
    let answer = h
        .call(Method::PUT, &path, Some(&h.bearer()), Body::empty())
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(h.broker.controls.lock().unwrap().len(), 1);
    let status = h
        .call(
            Method::GET,
            &format!("/v1/build/{id}"),
            Some(&h.bearer()),
            Body::empty(),
        )
        .await;
    assert_eq!(status.body["data"]["isComplete"], true);
    assert!(status.body["data"].get("imageSize").is_none());
}

fn digest_of(bytes: &[u8]) -> String {
    sha256_digest(Sha256::digest(bytes))
}

#[tokio::test]
async fn build_contexts_are_verified_deduplicated_and_handed_to_the_worker() {
    let h = harness(Limits {
        max_context_bytes: 1 << 20,
        ..Limits::default()
    })
    .await;
    let good = archive(&[
        ("home/", EntryType::Directory, b""),
        ("home/alice/proj/a.txt", EntryType::Regular, b"hello"),
    ]);
    let digest = digest_of(&good);
    let announce = |size: usize, digest: &str| {
        let h = &h;
        let body = json!({"size": size, "digest": digest}).to_string();
        async move {
            h.call(
                Method::POST,
                "/v1/build-context",
                Some(&h.bearer()),
                Body::from(body),
            )
            .await
        }
    };
    let upload = |location: &str, bytes: Vec<u8>| {
        let h = &h;
        let path = location.trim_start_matches("http://kiln.test").to_owned();
        async move { h.call(Method::PUT, &path, None, Body::from(bytes)).await }
    };
    let location = |answer: &Answer| answer.headers["location"].to_str().unwrap().to_owned();

    // Refusals before any upload.
    assert_error(
        &announce(10, "sha256:abc").await,
        StatusCode::BAD_REQUEST,
        "invalid build context digest",
    );
    assert_error(
        &announce(2 << 20, &digest).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "limit",
    );

    // Wrong digest, wrong size, too many bytes, hostile content: refused, nothing kept.
    let other = digest_of(b"other");
    let answer = announce(good.len(), &other).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_error(
        &upload(&location(&answer), good.clone()).await,
        StatusCode::BAD_REQUEST,
        "digest",
    );
    let answer = announce(good.len() + 1, &digest).await;
    assert_error(
        &upload(&location(&answer), good.clone()).await,
        StatusCode::BAD_REQUEST,
        "announced",
    );
    let answer = announce(good.len() - 1, &digest).await;
    assert_error(
        &upload(&location(&answer), good.clone()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "announced",
    );
    let evil = archive(&[("../../etc/cron.d/x", EntryType::Regular, b"boom")]);
    let answer = announce(evil.len(), &digest_of(&evil)).await;
    assert_error(
        &upload(&location(&answer), evil).await,
        StatusCode::BAD_REQUEST,
        "escapes",
    );
    h.assert_nothing_left().await;

    // The real thing; the URL works once.
    let answer = announce(good.len(), &digest).await;
    let url = location(&answer);
    assert!(url.starts_with("http://kiln.test/v1/build-context-upload/"));
    let stored = upload(&url, good.clone()).await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.body);
    assert_eq!(stored.body["data"]["digest"], digest.as_str());
    assert_error(
        &upload(&url, good.clone()).await,
        StatusCode::NOT_FOUND,
        "used already",
    );
    // Announced again: already here, so no Location.
    let again = announce(good.len(), &digest).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert!(again.headers.get("location").is_none());

    // A build with it: the worker gets a capability URL that serves the archive.
    let mut body = submission("Bootstrap: docker\nFrom: alpine\n%files\n    a.txt /a.txt\n");
    body["contextDigest"] = json!(digest);
    let answer = h.submit(body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let job = h.broker.jobs.lock().unwrap()[0].clone();
    let context = job.context.unwrap();
    assert_eq!(
        (context.digest.as_str(), context.size),
        (digest.as_str(), good.len() as u64)
    );
    let path = context.url.trim_start_matches("http://kiln.test");
    let fetched = h.call(Method::GET, path, None, Body::empty()).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.bytes, good);
    let forged = format!(
        "/v1/build-context-archive/{}/{}",
        job.build_id,
        "0".repeat(64)
    );
    assert_error(
        &h.call(Method::GET, &forged, None, Body::empty()).await,
        StatusCode::NOT_FOUND,
        "",
    );

    // In use: cannot be deleted; after the build ends it can, and the file goes.
    let delete_path = format!("/v1/build-context/{digest}");
    let answer = h
        .call(
            Method::DELETE,
            &delete_path,
            Some(&h.bearer()),
            Body::empty(),
        )
        .await;
    assert_error(&answer, StatusCode::CONFLICT, "used by");
    h.call(
        Method::PUT,
        &format!("/v1/build/{}/_cancel", job.build_id),
        Some(&h.bearer()),
        Body::empty(),
    )
    .await;
    let answer = h
        .call(
            Method::DELETE,
            &delete_path,
            Some(&h.bearer()),
            Body::empty(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(h.state.store.count_contexts().await.unwrap(), 0);
    assert!(walk(&h.state.data_dir.join("contexts")).is_empty());
    let answer = h
        .call(
            Method::DELETE,
            &delete_path,
            Some(&h.bearer()),
            Body::empty(),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not found");
}

#[tokio::test]
async fn unused_build_contexts_are_collected_after_their_ttl() {
    let h = harness(Limits {
        context_ttl_seconds: 100,
        ..Limits::default()
    })
    .await;
    let bytes = archive(&[("a.txt", EntryType::Regular, b"a")]);
    let body = json!({"size": bytes.len(), "digest": digest_of(&bytes)}).to_string();
    let answer = h
        .call(
            Method::POST,
            "/v1/build-context",
            Some(&h.bearer()),
            Body::from(body),
        )
        .await;
    let location = answer.headers["location"].to_str().unwrap();
    let path = location.trim_start_matches("http://kiln.test").to_owned();
    let stored = h.call(Method::PUT, &path, None, Body::from(bytes)).await;
    assert_eq!(stored.status, StatusCode::CREATED);
    assert_eq!(walk(&h.state.data_dir).len(), 1);
    crate::sweeper::sweep(&h.state).await.unwrap();
    assert_eq!(
        h.state.store.count_contexts().await.unwrap(),
        1,
        "still fresh"
    );
    h.clock.advance(100_001);
    crate::sweeper::sweep(&h.state).await.unwrap();
    h.assert_nothing_left().await;
}

#[tokio::test]
async fn the_log_replays_then_closes_1000_only_once_final() {
    let h = harness(Limits::default()).await;
    let id = h.submit_id().await;
    h.state
        .store
        .append_log(&id, "one\ntwo\n", 1 << 20)
        .await
        .unwrap();
    let (sink, mut frames) = futures::channel::mpsc::unbounded::<Message>();
    let state = h.state.clone();
    let viewer = {
        let id = id.clone();
        tokio::spawn(async move { stream_log(sink, &state, &id).await })
    };
    assert_eq!(next_text(&mut frames).await, "one\ntwo\n");
    h.state
        .store
        .append_log(&id, "three\n", 1 << 20)
        .await
        .unwrap();
    h.state.notify(&id);
    assert_eq!(next_text(&mut frames).await, "three\n");
    h.state
        .store
        .finish_build(&id, &FinalState::Failed("boom".into()), 5)
        .await
        .unwrap();
    h.state.notify(&id);
    match frames.next().await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, 1000),
        other => panic!("expected close 1000, got {other:?}"),
    }
    viewer.await.unwrap().unwrap();

    // A late viewer gets the whole log at once, then 1000.
    let (sink, frames) = futures::channel::mpsc::unbounded::<Message>();
    stream_log(sink, &h.state, &id).await.unwrap();
    let frames: Vec<Message> = frames.collect().await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0], Message::Text("one\ntwo\nthree\n".into()));
    assert!(matches!(&frames[1], Message::Close(Some(f)) if f.code == 1000));
}

#[tokio::test]
async fn shutdown_closes_viewers_with_1001() {
    let h = harness(Limits::default()).await;
    let id = h.submit_id().await;
    let (sink, frames) = futures::channel::mpsc::unbounded::<Message>();
    let state = h.state.clone();
    let viewer = tokio::spawn(async move { stream_log(sink, &state, &id).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.state.shutdown.cancel();
    viewer.await.unwrap().unwrap();
    let frames: Vec<Message> = frames.collect().await;
    assert!(
        matches!(frames.last(), Some(Message::Close(Some(f))) if f.code == 1001),
        "{frames:?}"
    );
}

async fn next_text(frames: &mut futures::channel::mpsc::UnboundedReceiver<Message>) -> String {
    let frame = tokio::time::timeout(Duration::from_secs(10), frames.next())
        .await
        .expect("no frame within 10 s");
    match frame {
        Some(Message::Text(text)) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test]
async fn the_sweeper_expires_queued_builds_and_times_out_running_ones() {
    let h = harness(Limits {
        queue_ttl_seconds: 100,
        build_timeout_seconds: 50,
        ..Limits::default()
    })
    .await;
    let queued = h.submit_id().await;
    let running = h.submit_id().await;
    h.state
        .store
        .mark_running(&running, "w1", "started", h.clock.now_ms())
        .await
        .unwrap();
    assert_eq!(crate::sweeper::sweep(&h.state).await.unwrap(), 0);
    h.clock.advance(50_000 + crate::sweeper::GRACE_MS + 1);
    assert_eq!(crate::sweeper::sweep(&h.state).await.unwrap(), 1);
    let row = h.state.store.build(&running).await.unwrap().unwrap();
    assert_eq!(row.state, BuildState::TimedOut);
    assert_eq!(
        *h.broker.controls.lock().unwrap(),
        vec![Control::cancel(&running)]
    );
    h.clock.advance(50_000);
    assert_eq!(crate::sweeper::sweep(&h.state).await.unwrap(), 1);
    let row = h.state.store.build(&queued).await.unwrap().unwrap();
    assert_eq!(row.state, BuildState::Expired);
    let log = h.state.store.log_since(&queued, 0).await.unwrap();
    assert!(
        log[0]
            .text
            .starts_with("FATAL: the build waited more than 100 s")
    );
}

#[tokio::test]
async fn results_upload_once_and_download_by_ref() {
    let h = harness(Limits::default()).await;
    let id = h.submit_id().await;
    let job = h.broker.jobs.lock().unwrap()[0].clone();
    let result_path = job
        .result_url
        .unwrap()
        .trim_start_matches("http://kiln.test")
        .to_owned();
    let sif = b"SIF_MAGIC pretend image".to_vec();
    let forged = format!("/v1/build-result/{id}/{}", "0".repeat(64));
    assert_error(
        &h.call(Method::PUT, &forged, None, Body::from(sif.clone()))
            .await,
        StatusCode::NOT_FOUND,
        "",
    );
    let answer = h
        .call(Method::PUT, &result_path, None, Body::from(sif.clone()))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["data"]["digest"], digest_of(&sif).as_str());
    let image = format!("/v1/imagefile/alice/remote-builds/rb-{id}:latest?arch=amd64");
    // Not downloadable before the build succeeded.
    assert_error(
        &h.call(Method::GET, &image, Some(&h.bearer()), Body::empty())
            .await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    // A redelivered job uploads again: the same build, the same file, still one image.
    let again = h
        .call(Method::PUT, &result_path, None, Body::from(sif.clone()))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    let row = h.state.store.build(&id).await.unwrap().unwrap();
    crate::library::publish_build_result(&h.state, &row)
        .await
        .unwrap();
    crate::library::publish_build_result(&h.state, &row)
        .await
        .unwrap();
    let outcome = FinalState::Succeeded {
        image_size: sif.len() as u64,
        image_checksum: digest_of(&sif),
    };
    h.state.store.finish_build(&id, &outcome, 9).await.unwrap();
    let answer = h
        .call(Method::GET, &image, Some(&h.bearer()), Body::empty())
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.bytes, sif);
    assert_eq!(
        answer.headers["content-length"],
        sif.len().to_string().as_str()
    );
    let container = format!("/v1/containers/alice/remote-builds/rb-{id}");
    let listed = h
        .call(Method::GET, &container, Some(&h.bearer()), Body::empty())
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.body["data"]["images"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["data"]["private"], true);
    // Ephemeral results are private: anonymous callers do not see them.
    assert_error(
        &h.call(Method::GET, &image, None, Body::empty()).await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    let status = h
        .call(
            Method::GET,
            &format!("/v1/build/{id}"),
            Some(&h.bearer()),
            Body::empty(),
        )
        .await;
    assert_eq!(status.body["data"]["imageSize"], sif.len());
    assert_eq!(status.body["data"]["isComplete"], true);
    // The upload URL is dead once the build is final.
    assert_error(
        &h.call(Method::PUT, &result_path, None, Body::from(sif))
            .await,
        StatusCode::NOT_FOUND,
        "",
    );
    let _ = &h.user;
    let _ = &h.dir;
}

mod ops;
