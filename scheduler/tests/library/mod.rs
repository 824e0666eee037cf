//! The library API against a third-party client: Apptainer's container-library-client from
//! Debian (`golang-github-apptainer-container-library-client-dev`, the client of Apptainer
//! 1.0), built offline from `client/main.go` and run as a black box against a real scheduler.
//! It pushes, searches, pulls by tag and by `sha256.` ref for two architectures, and downloads
//! remote build results the way `singularity build --remote` does; the test judges the hashes
//! and the errors it prints.
//!
//! Also: a 2 GiB image uploaded and downloaded through a separate `kiln-scheduler` process,
//! whose peak RSS (`VmHWM`) must stay far below the image size.

use std::path::{Path, PathBuf};
use std::process::Command;

use futures::StreamExt;
use kiln_proto::amqp::{BuildState, Event, Finished};
use kiln_scheduler::clock::SystemClock;
use kiln_scheduler::config::{AdminCommand, AdminConfig, TokenCommand, UserCommand};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Db, Scheduler, wait_some};

on_both_backends!(the_go_library_client_pushes_searches_and_pulls);

/// The Go client, built into `dir` (the Go build cache under the target directory makes
/// later builds quick).
async fn build_client(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/library/client");
    let output = dir.join("library-client");
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache");
    // tokio's Command: the test's runtime also runs the server, which must not stall.
    let status = tokio::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&output)
        .arg(".")
        .current_dir(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", &cache)
        .env("GOFLAGS", "")
        .status()
        .await
        .expect("run go (tests/run.sh installs golang-go)");
    assert!(status.success(), "go build of the library client failed");
    output
}

/// What one run of the client said.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "client failed: {}", self.stderr);
        self.stdout.trim()
    }
}

async fn client(binary: &Path, base: &str, token: Option<&str>, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(binary)
        .arg(base)
        .arg(token.unwrap_or("-"))
        .args(args)
        .output()
        .await
        .expect("run the library client");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256.{}", hex::encode(Sha256::digest(bytes)))
}

/// `len` bytes that differ with `seed` (not a real SIF: the library stores any file).
fn image_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut bytes = b"SIF_MAGIC".to_vec();
    bytes.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    bytes
}

async fn add_user(scheduler: &Scheduler, name: &str) -> String {
    let state = scheduler.config.state.clone();
    kiln_scheduler::admin(
        AdminConfig {
            state: state.clone(),
            command: AdminCommand::User(UserCommand::Add {
                name: name.into(),
                admin: false,
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
            state,
            command: AdminCommand::Token(TokenCommand::Create { name: name.into() }),
        },
        &SystemClock,
    )
    .await
    .unwrap()
}

/// Runs a remote build that succeeds; returns the build id.
async fn remote_build(
    scheduler: &Scheduler,
    library_ref: &str,
    sif: &[u8],
    uploads: usize,
) -> String {
    let (id, info) = worker_builds(scheduler, library_ref, sif, uploads).await;
    assert!(info.get("imageSize").is_some(), "{info}");
    id
}

/// Runs a remote build as a worker would: takes the job, uploads `sif` to its result URL
/// (`uploads` times, as a redelivered job would), reports it finished; returns the build id
/// and its final status.
async fn worker_builds(
    scheduler: &Scheduler,
    library_ref: &str,
    sif: &[u8],
    uploads: usize,
) -> (String, Value) {
    use base64::Engine;
    let body = json!({
        "definitionRaw": base64::engine::general_purpose::STANDARD
            .encode("Bootstrap: docker\nFrom: alpine:3.19\n"),
        "libraryRef": library_ref,
        "builderRequirements": {"arch": "amd64"},
    });
    let (code, answer) = scheduler
        .request(reqwest::Method::POST, "/v1/build", Some(body))
        .await;
    assert_eq!(code, 201, "{answer}");
    let id = answer["data"]["id"].as_str().unwrap().to_owned();
    let (job, _) = scheduler.take_job().await;
    assert_eq!(job.build_id, id);
    scheduler
        .publish(&id, 1, 0, Event::State(BuildState::Started))
        .await;
    let url = job.result_url.clone().expect("a result URL");
    for _ in 0..uploads {
        let response = scheduler
            .client
            .put(&url)
            .body(sif.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }
    scheduler
        .publish(
            &id,
            1,
            1,
            Event::Finished(Finished {
                image_size: sif.len() as u64,
                image_checksum: sha256_of(sif),
                library_ref: job.library_ref.clone(),
            }),
        )
        .await;
    let info = scheduler.wait_complete(&id).await;
    (id, info)
}

async fn set_quota(scheduler: &Scheduler, name: &str, quota: &str) {
    let said = kiln_scheduler::admin(
        AdminConfig {
            state: scheduler.config.state.clone(),
            command: AdminCommand::User(UserCommand::Quota {
                name: name.into(),
                quota: quota.parse().unwrap(),
            }),
        },
        &SystemClock,
    )
    .await
    .unwrap();
    assert!(said.starts_with("set the library quota"), "{said}");
}

async fn the_go_library_client_pushes_searches_and_pulls(db: Db) {
    let scheduler = Scheduler::start(db, kiln_scheduler::config::Limits::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let go = build_client(dir.path()).await;
    let base = scheduler.base.clone();
    let alice = scheduler.token.clone();
    let bob = add_user(&scheduler, "bob").await;
    let run = async |token: Option<&str>, args: &[&str]| client(&go, &base, token, args).await;

    let amd = image_bytes(2 * 1024 * 1024, 1);
    // Over 64 MiB: the client uploads it in parts (§6.1 multipart).
    let arm = image_bytes(65 * 1024 * 1024 + 123, 2);
    let amd_file = dir.path().join("amd64.sif");
    let arm_file = dir.path().join("arm64.sif");
    std::fs::write(&amd_file, &amd).unwrap();
    std::fs::write(&arm_file, &arm).unwrap();
    let (amd_file, arm_file) = (amd_file.to_str().unwrap(), arm_file.to_str().unwrap());

    let pushed = run(
        Some(&alice),
        &["push", amd_file, "alice/builds/hello", "amd64", "v1,latest"],
    )
    .await;
    assert_eq!(
        pushed.ok(),
        format!("pushed library/alice/builds/hello {} 0", amd.len())
    );
    let pushed = run(
        Some(&alice),
        &["push", arm_file, "alice/builds/hello", "arm64", "v1"],
    )
    .await;
    assert_eq!(
        pushed.ok(),
        format!(
            "pushed library/alice/builds/hello {} 0",
            amd.len() + arm.len()
        )
    );
    // Pushing the same file again skips the upload and only tags.
    run(
        Some(&alice),
        &["push", amd_file, "alice/builds/hello", "amd64", "v2"],
    )
    .await
    .ok();

    let found = run(None, &["search", "hello", "amd64"]).await;
    assert_eq!(
        found.ok(),
        format!("alice/builds/hello:latest,v1,v2 {}", sha256_of(&amd))
    );
    let found = run(None, &["search", "HELL", "arm64"]).await;
    assert_eq!(
        found.ok(),
        format!("alice/builds/hello:v1 {}", sha256_of(&arm))
    );

    // Without an arch, search also finds entities, collections and containers, which the
    // Go client decodes.
    let found = run(None, &["search", "hello", "-"]).await;
    let mut lines: Vec<&str> = found.ok().lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            format!("alice/builds/hello:latest,v1,v2 {}", sha256_of(&amd)),
            format!("alice/builds/hello:v1 {}", sha256_of(&arm)),
            "container alice/builds/hello".to_owned(),
        ]
    );
    let found = run(Some(&bob), &["search", "builds", "-"]).await;
    let lines: Vec<&str> = found.ok().lines().collect();
    assert!(
        lines.contains(&"collection alice/builds"),
        "{}",
        found.stdout
    );
    let found = run(Some(&bob), &["search", "alice", "-"]).await;
    let lines: Vec<&str> = found.ok().lines().collect();
    assert!(lines.contains(&"entity alice"), "{}", found.stdout);

    let got = run(None, &["get", "arm64", "alice/builds/hello:v1"]).await;
    assert_eq!(got.ok(), format!("{} {} arm64", sha256_of(&arm), arm.len()));
    let out = dir.path().join("out.sif");
    let out = out.to_str().unwrap();
    for (arch, file) in [("amd64", &amd), ("arm64", &arm)] {
        let hash = sha256_of(file);
        for command in ["pull", "pull-stream"] {
            let pulled = run(None, &[command, arch, "alice/builds/hello", "v1", out]).await;
            assert_eq!(pulled.ok(), hash, "{command} {arch}");
            let by_hash = run(
                Some(&alice),
                &[command, arch, "alice/builds/hello", &hash, out],
            )
            .await;
            assert_eq!(by_hash.ok(), hash, "{command} {arch} by hash");
        }
    }

    let bad = run(
        Some("kiln_not_a_token"),
        &["push", amd_file, "alice/builds/other", "amd64", "v1"],
    )
    .await;
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("401"), "{}", bad.stderr);
    let bad = run(
        Some("kiln_not_a_token"),
        &["get", "amd64", "alice/builds/hello:v1"],
    )
    .await;
    assert!(bad.stderr.contains("401"), "{}", bad.stderr);
    let missing = run(None, &["get", "amd64", "alice/builds/nothing:v1"]).await;
    assert_eq!(missing.code, 2, "ErrNotFound: {}", missing.stderr);
    let missing = run(None, &["pull", "amd64", "alice/builds/hello", "v9", out]).await;
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    let foreign = run(
        Some(&bob),
        &["push", amd_file, "alice/builds/bobs", "amd64", "v1"],
    )
    .await;
    assert!(foreign.stderr.contains("403"), "{}", foreign.stderr);

    // A user's own quota: over it, push fails with the figures; unlimited and bytes print
    // as the CLI reads them (`quotaTotal` 0 is "unlimited").
    set_quota(&scheduler, "bob", "1000").await;
    let refused = run(
        Some(&bob),
        &["push", amd_file, "bob/own/img", "amd64", "v1"],
    )
    .await;
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .contains("library storage quota exceeded: 0 of 1000 bytes used")
            && refused.stderr.contains("507"),
        "{}",
        refused.stderr
    );
    set_quota(&scheduler, "bob", "unlimited").await;
    let pushed = run(
        Some(&bob),
        &["push", amd_file, "bob/own/img", "amd64", "v1"],
    )
    .await;
    assert_eq!(
        pushed.ok(),
        format!("pushed library/bob/own/img {} 0", amd.len())
    );
    set_quota(&scheduler, "bob", "5000000").await;
    let second = image_bytes(2 * 1024 * 1024, 7);
    let second_file = dir.path().join("second.sif");
    std::fs::write(&second_file, &second).unwrap();
    let pushed = run(
        Some(&bob),
        &[
            "push",
            second_file.to_str().unwrap(),
            "bob/own/img",
            "amd64",
            "v2",
        ],
    )
    .await;
    assert_eq!(
        pushed.ok(),
        format!(
            "pushed library/bob/own/img {} 5000000",
            amd.len() + second.len()
        )
    );

    // A remote build over its owner's quota fails, saying why, and leaves no image.
    set_quota(&scheduler, "alice", "1000").await;
    let (_, info) = worker_builds(
        &scheduler,
        "library://alice/builds/toobig:v1",
        &image_bytes(5000, 8),
        1,
    )
    .await;
    assert_eq!(info["state"], "failed", "{info}");
    let reason = info["failureReason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("the image (5009 bytes) does not fit in the library"),
        "{info}"
    );
    let missing = run(Some(&alice), &["get", "amd64", "alice/builds/toobig:v1"]).await;
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    set_quota(&scheduler, "alice", "default").await;

    // A remote build without a library ref: private, downloadable by its owner as
    // `build --remote` does (no GET /v1/images first), by nobody else.
    let result = image_bytes(300_000, 3);
    let id = remote_build(&scheduler, "", &result, 2).await;
    let container = format!("alice/remote-builds/rb-{id}");
    let pulled = run(Some(&alice), &["pull", "amd64", &container, "latest", out]).await;
    assert_eq!(pulled.ok(), sha256_of(&result));
    for token in [Some(bob.as_str()), None] {
        let hidden = run(token, &["pull", "amd64", &container, "latest", out]).await;
        assert!(hidden.stderr.contains("not found"), "{}", hidden.stderr);
        let hidden = run(token, &["get", "amd64", &format!("{container}:latest")]).await;
        assert_eq!(hidden.code, 2, "{}", hidden.stderr);
    }
    let (_, listed) = scheduler
        .request(
            reqwest::Method::GET,
            &format!("/v1/containers/{container}"),
            None,
        )
        .await;
    assert_eq!(
        listed["data"]["images"].as_array().map(Vec::len),
        Some(1),
        "two uploads of one build make one image: {listed}"
    );

    // A remote build into a library ref: public, found and pulled anonymously.
    let built = image_bytes(200_000, 4);
    remote_build(&scheduler, "library://alice/builds/built:v1", &built, 1).await;
    let found = run(None, &["search", "built", "amd64"]).await;
    assert_eq!(
        found.ok(),
        format!("alice/builds/built:v1 {}", sha256_of(&built))
    );
    let pulled = run(None, &["pull", "amd64", "alice/builds/built", "v1", out]).await;
    assert_eq!(pulled.ok(), sha256_of(&built));

    // Delete frees the image (and its bytes).
    run(Some(&alice), &["delete", "alice/builds/hello:v1", "arm64"])
        .await
        .ok();
    let gone = run(None, &["get", "arm64", "alice/builds/hello:v1"]).await;
    assert_eq!(gone.code, 2, "{}", gone.stderr);
    let (_, entity) = scheduler
        .request(reqwest::Method::GET, "/v1/entities/alice", None)
        .await;
    assert_eq!(entity["data"]["name"], "alice", "{entity}");
    scheduler.stop().await;
}

/// Peak resident memory of process `pid`, KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// 2 GiB of deterministic bytes in 1 MiB chunks, generated as they are sent.
const BIG_BYTES: u64 = 2 * 1024 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;

fn big_chunk(index: u64) -> bytes::Bytes {
    let mut chunk = vec![0u8; CHUNK];
    for (i, byte) in chunk.iter_mut().enumerate().step_by(4096) {
        *byte = (index as u8) ^ (i as u8);
    }
    chunk[..8].copy_from_slice(&index.to_le_bytes());
    bytes::Bytes::from(chunk)
}

fn big_stream() -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::iter(0..BIG_BYTES / CHUNK as u64).map(|i| Ok(big_chunk(i)))
}

/// A separate `kiln-scheduler serve` process (so its memory is its own) on a free port.
struct ServerProcess {
    child: std::process::Child,
    base: String,
    token: String,
}

impl ServerProcess {
    fn start(data: &Path) -> Self {
        let binary = env!("CARGO_BIN_EXE_kiln-scheduler");
        let data_arg = data.to_str().unwrap();
        let admin = |args: &[&str]| {
            let output = Command::new(binary)
                .args(["admin", "--data", data_arg])
                .args(args)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        };
        admin(&["user", "add", "alice"]);
        let token = admin(&["token", "create", "alice"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .args(["serve", "--data", data_arg, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            // No broker: the library needs none, and the relay only retries in the background.
            .args(["--amqp", "amqp://guest:guest@127.0.0.1:1/%2f"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            token,
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn two_gib_upload_and_download_stream_with_flat_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"));
    let http = reqwest::Client::new();
    let auth = format!("Bearer {}", server.token);
    wait_some("the scheduler to answer", || async {
        http.get(format!("{}/version", server.base))
            .send()
            .await
            .ok()
    })
    .await;
    let mut hasher = Sha256::new();
    let mut chunks = std::pin::pin!(big_stream());
    while let Some(chunk) = chunks.next().await {
        hasher.update(chunk.unwrap());
    }
    let hash = format!("sha256.{}", hex::encode(hasher.finalize()));
    let post = |path: &str, body: Value| {
        http.post(format!("{}{path}", server.base))
            .header("Authorization", &auth)
            .body(body.to_string())
            .send()
    };
    let data = |response: reqwest::Response| async move {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{body}");
        body["data"].clone()
    };
    let entity = data(
        post("/v1/entities", json!({"name": "alice"}))
            .await
            .unwrap(),
    )
    .await;
    let collection = data(
        post(
            "/v1/collections",
            json!({"name": "big", "entity": entity["id"]}),
        )
        .await
        .unwrap(),
    )
    .await;
    let container = data(
        post(
            "/v1/containers",
            json!({"name": "img", "collection": collection["id"]}),
        )
        .await
        .unwrap(),
    )
    .await;
    let image = data(
        post(
            "/v1/images",
            json!({"hash": hash, "container": container["id"]}),
        )
        .await
        .unwrap(),
    )
    .await;
    let id = image["id"].as_str().unwrap();
    let start = data(
        post(
            &format!("/v2/imagefile/{id}"),
            json!({"filesize": BIG_BYTES}),
        )
        .await
        .unwrap(),
    )
    .await;
    let upload_url = start["uploadURL"].as_str().unwrap();
    let began = std::time::Instant::now();
    let put = http
        .put(upload_url)
        .header("Content-Length", BIG_BYTES)
        .body(reqwest::Body::wrap_stream(big_stream()))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200, "{}", put.text().await.unwrap());
    let upload_seconds = began.elapsed().as_secs_f64();
    let after_upload_kib = peak_rss_kib(server.child.id());

    let began = std::time::Instant::now();
    let response = http
        .get(format!("{}/v1/imagefile/alice/big/img:{hash}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut stream = response.bytes_stream();
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        received += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let download_seconds = began.elapsed().as_secs_f64();
    assert_eq!(received, BIG_BYTES);
    assert_eq!(format!("sha256.{}", hex::encode(hasher.finalize())), hash);
    let peak_kib = peak_rss_kib(server.child.id());
    let mib = |bytes: f64| bytes / 1024.0 / 1024.0;
    println!(
        "2 GiB through kiln-scheduler: upload {:.0} MiB/s, download {:.0} MiB/s, \
         peak RSS {} MiB after the upload, {} MiB after the download",
        mib(BIG_BYTES as f64) / upload_seconds,
        mib(BIG_BYTES as f64) / download_seconds,
        after_upload_kib / 1024,
        peak_kib / 1024
    );
    // Flat: a buffer-everything server would need more than the image itself.
    assert!(
        peak_kib < 256 * 1024,
        "peak RSS {peak_kib} KiB for a 2 GiB image is not flat"
    );
}

/// A moto S3 server (PyPI `moto[server]`) on a free 127.0.0.1 port with one bucket; killed on
/// drop. `KILN_TEST_MOTO_SERVER` names its `moto_server`; else one is installed into a venv
/// under the target directory on first use.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

fn moto_server() -> PathBuf {
    if let Ok(path) = std::env::var("KILN_TEST_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("moto-venv");
    let binary = venv.join("bin/moto_server");
    if !binary.exists() {
        let created = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 -m venv");
        assert!(created.success(), "could not create {}", venv.display());
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "moto[server]"])
            .status()
            .expect("pip install moto[server]");
        assert!(installed.success(), "pip install moto[server] failed");
    }
    binary
}

impl S3Server {
    async fn start(bucket: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        // moto accepts unsigned requests: create the bucket with a plain PUT.
        wait_some("moto to create the bucket", || async {
            let response = http
                .put(format!("{}/{bucket}", server.endpoint))
                .send()
                .await
                .ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        server
    }

    fn options(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint", self.endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", "test"),
            ("aws_secret_access_key", "test"),
            ("aws_region", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The same client flow with the images in an S3 bucket (moto), multipart uploads included,
/// and downloads answered with 303 to the ranged capability URL (the client then fetches
/// 1 MiB ranges concurrently and must get exactly them back).
#[tokio::test]
async fn the_go_client_works_with_images_in_s3() {
    let s3 = S3Server::start("kiln-images").await;
    let library = kiln_scheduler::config::LibraryConfig {
        object_store: Some("s3://kiln-images/library".into()),
        object_store_options: s3.options(),
        download: kiln_scheduler::config::DownloadMode::Redirect,
        ..kiln_scheduler::config::LibraryConfig::default()
    };
    let scheduler = Scheduler::start_with(
        Db::Sqlite,
        kiln_scheduler::config::Limits::default(),
        library,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let go = build_client(dir.path()).await;
    let run =
        async |args: &[&str]| client(&go, &scheduler.base, Some(&scheduler.token), args).await;
    let small = image_bytes(3 * 1024 * 1024, 5);
    let large = image_bytes(70 * 1024 * 1024, 6);
    let out = dir.path().join("out.sif");
    let out = out.to_str().unwrap();
    for (name, file) in [("small", &small), ("large", &large)] {
        let path = dir.path().join(format!("{name}.sif"));
        std::fs::write(&path, file).unwrap();
        let container = format!("alice/s3/{name}");
        run(&["push", path.to_str().unwrap(), &container, "amd64", "v1"])
            .await
            .ok();
        let pulled = run(&["pull", "amd64", &container, "v1", out]).await;
        assert_eq!(pulled.ok(), sha256_of(file), "{name}");
    }
    // The 303 points into the bucket: a presigned URL that serves ranges without a token.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = http
        .get(format!(
            "{}/v1/imagefile/alice/s3/small:v1?arch=amd64",
            scheduler.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status().as_u16(), 303);
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{}/kiln-images/library/images/", s3.endpoint))
            && location.contains("X-Amz-Signature="),
        "{location}"
    );
    let ranged = http
        .get(&location)
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status().as_u16(), 206);
    assert_eq!(
        ranged.headers()["content-range"].to_str().unwrap(),
        format!("bytes 1000-1999/{}", small.len())
    );
    assert_eq!(ranged.bytes().await.unwrap(), small[1000..2000]);

    // The objects are in the bucket, under the prefix.
    let listing = reqwest::get(format!(
        "{}/kiln-images?list-type=2&prefix=library/",
        s3.endpoint
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert_eq!(
        listing.matches("<Key>library/images/").count(),
        2,
        "{listing}"
    );
    assert!(
        !listing.contains("library/uploads/"),
        "parts are gone: {listing}"
    );
    run(&["delete", "alice/s3/large:v1", "amd64"]).await.ok();
    let listing = reqwest::get(format!(
        "{}/kiln-images?list-type=2&prefix=library/",
        s3.endpoint
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert_eq!(
        listing.matches("<Key>library/images/").count(),
        1,
        "{listing}"
    );
    scheduler.stop().await;
}

/// The multipart upload API driven by hand against S3 (moto), with 5 MiB parts: parts go
/// straight into one S3 multipart upload; in order, completion needs no read; out of order it
/// reads the joined file once; a wrong file is refused either way and leaves no object and no
/// pending S3 upload behind.
#[tokio::test]
async fn multipart_parts_go_straight_into_s3() {
    let s3 = S3Server::start("kiln-parts").await;
    let library = kiln_scheduler::config::LibraryConfig {
        object_store: Some("s3://kiln-parts/lib".into()),
        object_store_options: s3.options(),
        part_size_bytes: 5 * 1024 * 1024,
        ..kiln_scheduler::config::LibraryConfig::default()
    };
    let scheduler = Scheduler::start_with(
        Db::Sqlite,
        kiln_scheduler::config::Limits::default(),
        library,
    )
    .await;
    let call = async |method: reqwest::Method, path: String, body: Value| {
        let (code, answer) = scheduler.request(method, &path, Some(body)).await;
        assert_eq!(code, 200, "{path}: {answer}");
        answer["data"].clone()
    };
    let entity = call(
        reqwest::Method::POST,
        "/v1/entities".into(),
        json!({"name": "alice"}),
    )
    .await;
    let collection = call(
        reqwest::Method::POST,
        "/v1/collections".into(),
        json!({"name": "parts", "entity": entity["id"]}),
    )
    .await;
    let file = image_bytes(11 * 1024 * 1024 + 5, 9);
    let chunks: Vec<&[u8]> = file.chunks(5 * 1024 * 1024).collect();
    let listing = async |query: &str| {
        reqwest::get(format!("{}/kiln-parts?{query}", s3.endpoint))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let forged: Vec<u8> = file.iter().map(|b| b ^ 1).collect();
    let forged_chunks: Vec<&[u8]> = forged.chunks(5 * 1024 * 1024).collect();
    // Container, bytes sent for each part, order of the parts, status of the completion.
    type Case<'a> = (&'a str, &'a [&'a [u8]], [usize; 3], u16);
    let cases: [Case; 4] = [
        ("inorder", &chunks, [1, 2, 3], 200),
        ("shuffled", &chunks, [2, 3, 1], 200),
        ("forged", &forged_chunks, [1, 2, 3], 422),
        ("forgedshuffled", &forged_chunks, [3, 1, 2], 422),
    ];
    for (name, parts, order, expected) in cases {
        let container = call(
            reqwest::Method::POST,
            "/v1/containers".into(),
            json!({"name": name, "collection": collection["id"]}),
        )
        .await;
        let image = call(
            reqwest::Method::POST,
            "/v1/images".into(),
            json!({"hash": sha256_of(&file), "container": container["id"]}),
        )
        .await;
        let id = image["id"].as_str().unwrap();
        let started = call(
            reqwest::Method::POST,
            format!("/v2/imagefile/{id}/_multipart"),
            json!({"filesize": file.len()}),
        )
        .await;
        assert_eq!(started["totalParts"], 3, "{started}");
        let upload_id = started["uploadID"].as_str().unwrap().to_owned();
        let mut completed = Vec::new();
        for number in order {
            let part = parts[number - 1];
            let url = call(
                reqwest::Method::PUT,
                format!("/v2/imagefile/{id}/_multipart"),
                json!({"partSize": part.len(), "uploadID": upload_id, "partNumber": number}),
            )
            .await;
            let put = scheduler
                .client
                .put(url["presignedURL"].as_str().unwrap())
                .body(part.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(put.status().as_u16(), 200, "{name} part {number}");
            let etag = put.headers()["etag"].to_str().unwrap().to_owned();
            assert_eq!(etag, format!("\"{}\"", hex::encode(Sha256::digest(part))));
            completed.push(json!({"partNumber": number, "token": etag}));
        }
        // Nothing is visible before completion.
        assert!(
            !listing("list-type=2&prefix=lib/").await.contains(id),
            "{name}"
        );
        let (code, done) = scheduler
            .request(
                reqwest::Method::PUT,
                &format!("/v2/imagefile/{id}/_multipart_complete"),
                Some(json!({"uploadID": upload_id, "completedParts": completed})),
            )
            .await;
        assert_eq!(code, expected, "{name}: {done}");
        let objects = listing("list-type=2&prefix=lib/").await;
        let pending = listing("uploads").await;
        assert!(!pending.contains("<UploadId>"), "{name}: {pending}");
        assert!(!objects.contains("lib/uploads/"), "{name}: {objects}");
        if expected == 200 {
            assert!(
                objects.contains(&format!("<Key>lib/images/{id}</Key>")),
                "{name}"
            );
            let pulled = scheduler
                .client
                .get(format!(
                    "{}/v1/imagefile/alice/parts/{name}:{}",
                    scheduler.base,
                    sha256_of(&file)
                ))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert!(pulled == file, "{name}");
        } else {
            assert!(
                done["error"]["message"].as_str().unwrap().contains("hash"),
                "{done}"
            );
            assert!(!objects.contains(id), "{name}: {objects}");
        }
    }
    scheduler.stop().await;
}
