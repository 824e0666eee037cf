//! Remote builds end to end: the scheduler, two `kiln-worker serve` processes, RabbitMQ (a
//! private vhost, or a private node for the broker restart), the fixture registry, and a client
//! that speaks like the stock `singularity build --remote` (kiln_tests::cluster). siftool judges
//! the images.

mod failures;
mod quickstart;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_tests::cluster::{Cluster, ClusterOptions, Db, write_public};
use kiln_tests::fixtures::Fixture;
use kiln_tests::registry::TestRegistry;
use serde_json::Value;

pub(crate) const BUILD_TIMEOUT: Duration = Duration::from_secs(240);

pub(crate) fn registry() -> TestRegistry {
    TestRegistry::plain().expect("no registry with the fixtures")
}

pub(crate) async fn cluster(db: Db, registry: &TestRegistry) -> Cluster {
    Cluster::start(ClusterOptions {
        db,
        insecure_registries: vec![registry.addr().to_owned()],
        ..ClusterOptions::default()
    })
    .await
}

/// A busybox definition whose `%post` runs `post`.
pub(crate) fn busybox_definition(registry: &TestRegistry, post: &str) -> String {
    format!(
        "Bootstrap: docker\nFrom: {}\n\n%post\n{post}\n",
        registry.reference(Fixture::Busybox)
    )
}

/// `siftool list` of the image bytes, written to a scratch file; panics when siftool rejects it.
pub(crate) fn siftool_list(scratch: &Path, image: &[u8]) -> String {
    let path = scratch.join("downloaded.sif");
    std::fs::write(&path, image).unwrap();
    let output = Command::new("siftool")
        .arg("list")
        .arg(&path)
        .output()
        .expect("run siftool (package siftool)");
    assert!(
        output.status.success(),
        "siftool rejected the image: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn stock_client_sequence(db: Db) {
    let registry = registry();
    let cluster = cluster(db, &registry).await;
    let project = cluster.scratch().join("home/alice/proj");
    std::fs::create_dir_all(&project).unwrap();
    write_public(&project.join("data.txt"), b"context file content\n");
    let definition = format!(
        "Bootstrap: docker\nFrom: {}\n\n%files\n    data.txt /opt/data.txt\n\n%post\n    \
         echo \"post says: $(cat /opt/data.txt)\"\n    echo built > /opt/marker\n\n\
         %runscript\n    cat /opt/marker\n",
        registry.reference(Fixture::Busybox)
    );
    let submitted = cluster
        .submit(&definition, Some((&project, &["data.txt"])), "")
        .await;
    let (status, body) = (submitted.status, submitted.body);
    assert_eq!(status, 201, "{body}");
    let info = &body["data"];
    let id = info["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 24);
    let library_ref = info["libraryRef"].as_str().unwrap().to_owned();

    // Step 6: the log stream, until close 1000.
    let seen = cluster
        .open_log(&id)
        .await
        .read_to_close(BUILD_TIMEOUT)
        .await;
    assert_eq!(
        seen.close_code,
        Some(1000),
        "log:\n{}\n{}",
        seen.text,
        cluster.worker_logs()
    );
    assert!(
        seen.text.contains("post says: context file content"),
        "log:\n{}\nstatus: {}\n{}",
        seen.text,
        cluster.status(&id).await,
        cluster.worker_logs()
    );

    // Step 7: one status call, complete with a size.
    let status = cluster.status(&id).await;
    assert_eq!(status["isComplete"], Value::Bool(true), "{status}");
    assert_eq!(status["state"], "succeeded", "{status}");
    let size = status["imageSize"].as_u64().expect("imageSize");
    assert!(size > 0);

    // Step 8: the context is deleted after success.
    let digest = submitted.context_digest.expect("a context was uploaded");
    let deleted = cluster
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/build-context/{digest}"),
        )
        .send()
        .await
        .unwrap();
    let deleted_status = deleted.status();
    assert!(
        deleted_status.is_success(),
        "{deleted_status} {}",
        deleted.text().await.unwrap_or_default()
    );

    // Steps 9–11: the download, judged by siftool and by its checksum.
    let image = cluster.download(&library_ref).await;
    assert_eq!(image.len() as u64, size);
    assert_eq!(
        status["imageChecksum"].as_str(),
        Some(format!("sha256.{}", sha256_hex(&image)).as_str())
    );
    let listing = siftool_list(cluster.scratch(), &image);
    assert!(listing.contains("FS"), "{listing}");
    assert!(listing.contains("Squashfs"), "{listing}");

    // A viewer that comes after the end gets the whole log, then 1000.
    let late = cluster
        .open_log(&id)
        .await
        .read_to_close(Duration::from_secs(10))
        .await;
    assert_eq!(late.close_code, Some(1000));
    assert_eq!(late.text, seen.text);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stock_client_sequence_builds_with_files_and_post_sqlite() {
    stock_client_sequence(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stock_client_sequence_builds_with_files_and_post_postgres() {
    stock_client_sequence(Db::Postgres).await;
}

/// Processes of the build user running `needle`, from /proc (the sandbox's children show up
/// there under their host pids).
pub(crate) fn processes_running(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_during_post_stops_the_build_within_two_seconds() {
    let registry = registry();
    let cluster = cluster(Db::Sqlite, &registry).await;
    let marker = "sleep 6011";
    let definition = busybox_definition(&registry, &format!("    echo started\n    {marker}"));
    let id = cluster.submit_ok(&definition).await;
    let mut log = cluster.open_log(&id).await;
    assert!(
        log.read_until("started", BUILD_TIMEOUT).await,
        "{}",
        cluster.worker_logs()
    );
    assert!(!processes_running(marker).is_empty(), "the %post runs");
    let cancelled_at = Instant::now();
    let response = cluster
        .request(reqwest::Method::PUT, &format!("/v1/build/{id}/_cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    while !processes_running(marker).is_empty() {
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(2),
            "the %post still runs 2 s after the cancel\n{}",
            cluster.worker_logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped_after = cancelled_at.elapsed();
    let status = cluster.wait_complete(&id, Duration::from_secs(10)).await;
    assert_eq!(status["state"], "cancelled", "{status}");
    let seen = log.read_to_close(Duration::from_secs(10)).await;
    assert_eq!(seen.close_code, Some(1000));
    eprintln!("the sandbox was gone {stopped_after:?} after the cancel request");
    // The worker settles the job and takes the next one.
    let next = cluster
        .submit_ok(&busybox_definition(&registry, "    echo next"))
        .await;
    let status = cluster.wait_complete(&next, BUILD_TIMEOUT).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    cluster.stop().await;
}

/// A definition on the library image `from` whose `%post` prints the base's `/base-marker`.
fn derived_definition(from: &str) -> String {
    format!(
        "Bootstrap: library\nFrom: {from}\n\n%post\n    echo \"base says: $(cat /base-marker)\"\n"
    )
}

/// Builds [`derived_definition`] of `from` as the cluster's user and asserts it succeeds with
/// `expected` in its log; returns the final status.
async fn build_on_library_base(cluster: &Cluster, from: &str, expected: &str) -> Value {
    let id = cluster.submit_ok(&derived_definition(from)).await;
    let seen = cluster
        .open_log(&id)
        .await
        .read_to_close(BUILD_TIMEOUT)
        .await;
    let status = cluster.status(&id).await;
    assert_eq!(
        status["state"],
        "succeeded",
        "{status}\n{}\n{}",
        seen.text,
        cluster.worker_logs()
    );
    assert!(seen.text.contains(expected), "{}", seen.text);
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_library_result_is_the_base_of_the_next_build() {
    let registry = registry();
    let cluster = cluster(Db::Sqlite, &registry).await;
    let base = busybox_definition(
        &registry,
        "    echo 'made in the base build' > /base-marker",
    );
    let submitted = cluster
        .submit(&base, None, "library://alice/builds/base:v1")
        .await;
    assert_eq!(submitted.status, 201, "{}", submitted.body);
    let first = submitted.body["data"]["id"].as_str().unwrap().to_owned();
    let status = cluster.wait_complete(&first, BUILD_TIMEOUT).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    // No `Library:` header: the worker pulls from this service's own library.
    let status = build_on_library_base(
        &cluster,
        "alice/builds/base:v1",
        "base says: made in the base build",
    )
    .await;
    let image = cluster
        .download(status["libraryRef"].as_str().unwrap())
        .await;
    siftool_list(cluster.scratch(), &image);
    cluster.stop().await;
}

/// A remote build's ephemeral result is private (`alice/remote-builds/rb-<id>`): the owner's
/// next build can start from it, since the worker reads with the build's own credential, and
/// another user's build cannot, and is told the image does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_result_is_a_base_for_its_owner_only() {
    let registry = registry();
    let cluster = cluster(Db::Sqlite, &registry).await;
    let base = busybox_definition(&registry, "    echo 'private base' > /base-marker");
    let first = cluster.submit_ok(&base).await;
    let status = cluster.wait_complete(&first, BUILD_TIMEOUT).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    let private_ref = status["libraryRef"].as_str().unwrap().to_owned();
    assert!(private_ref.contains("/remote-builds/"), "{private_ref}");
    let path = private_ref.trim_start_matches("library://");
    let anonymous = reqwest::get(format!("{}/v1/images/{path}?arch=amd64", cluster.base))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 404, "the result must be private");

    build_on_library_base(&cluster, path, "base says: private base").await;

    let bob = cluster.add_user("bob", false).await;
    let stolen = bob.submit_ok(&derived_definition(path)).await;
    let status = bob.wait_complete(&stolen, BUILD_TIMEOUT).await;
    assert_eq!(status["state"], "failed", "{status}");
    let reason = status["failureReason"].as_str().unwrap_or_default();
    assert!(reason.contains("does not exist in the library"), "{status}");
    cluster.stop().await;
}

/// The value of the first series of `/metrics` named `name` whose labels contain every one of
/// `labels` (`key="value"`).
fn series_value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(series, _)| {
            series.split('{').next() == Some(name) && labels.iter().all(|l| series.contains(l))
        })
        .and_then(|(_, value)| value.parse().ok())
}

/// A worker's own counters (builds by outcome, bytes pulled and pushed, log lines, step times)
/// travel in its heartbeats and show on the scheduler's `/metrics`, labelled by worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_counters_show_on_the_schedulers_metrics() {
    let registry = registry();
    let cluster = cluster(Db::Sqlite, &registry).await;
    let scrape = || async {
        reqwest::get(format!("{}/metrics", cluster.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;
    let finished = |text: &str| {
        series_value(
            text,
            "kiln_worker_builds_total",
            &["outcome=\"finished\"", "worker=\"w"],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(finished(&before), 0.0, "{before}");

    let id = cluster
        .submit_ok(&busybox_definition(&registry, "    echo counted line"))
        .await;
    let status = cluster.wait_complete(&id, BUILD_TIMEOUT).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    let image_size = status["imageSize"].as_f64().unwrap();

    // The counters arrive with the next heartbeat (every second here).
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let text = scrape().await;
        if finished(&text) >= 1.0 || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(finished(&after), 1.0, "{after}");
    let worker = after
        .lines()
        .find(|l| l.starts_with("kiln_worker_builds_total") && l.contains("finished"))
        .and_then(|l| l.split("worker=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let of_worker = format!("worker=\"{worker}\"");
    let value = |name: &str, extra: &[&str]| {
        let mut labels = vec![of_worker.as_str()];
        labels.extend_from_slice(extra);
        series_value(&after, name, &labels).unwrap_or(0.0)
    };
    assert!(
        value("kiln_worker_pulled_bytes_total", &[]) > 0.0,
        "the busybox layers were pulled: {after}"
    );
    assert_eq!(
        value("kiln_worker_pushed_bytes_total", &[]),
        image_size,
        "{after}"
    );
    assert!(value("kiln_worker_log_lines_total", &[]) >= 1.0, "{after}");
    for step in ["fetch", "run", "squash", "upload"] {
        let label = format!("step=\"{step}\"");
        assert_eq!(
            value("kiln_worker_step_seconds_count", &[label.as_str()]),
            1.0,
            "{step}: {after}"
        );
    }
    cluster.stop().await;
}

/// `kiln-worker health` of a cluster worker: exit code and its one line.
fn worker_health(cluster: &Cluster, worker: &str, extra: &[&str]) -> (i32, String) {
    let work_dir = cluster.scratch().join(format!("worker-{worker}/builds"));
    let out = Command::new(kiln_tests::cluster::worker_exe())
        .arg("health")
        .arg("--work-dir")
        .arg(&work_dir)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

/// The exec probe: a serving worker is alive and ready; a frozen one (SIGSTOP, its heartbeat
/// loop stuck) stops being alive once its report is older than `--max-age`, and is alive again
/// when it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_health_probe_follows_a_worker_that_freezes_and_recovers() {
    let registry = registry();
    let cluster = cluster(Db::Sqlite, &registry).await;
    let worker = cluster.workers[0].id.clone();
    // The report is rewritten when the broker connection comes up, a moment after the
    // worker logs that it consumes.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, line) = worker_health(&cluster, &worker, &["--ready"]);
        if code == 0 {
            assert!(line.contains("is ready"), "{line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{line}\n{}",
            cluster.worker_logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cluster.workers[0].signal(nix::sys::signal::Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (code, line) = worker_health(&cluster, &worker, &["--max-age", "2"]);
    cluster.workers[0].signal(nix::sys::signal::Signal::SIGCONT);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("heartbeat loop is stuck"), "{line}");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, line) = worker_health(&cluster, &worker, &["--max-age", "2"]);
        if code == 0 {
            assert!(line.contains("is alive"), "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "never alive again: {line}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let missing = Command::new(kiln_tests::cluster::worker_exe())
        .args(["health", "--health-file", "/nonexistent/health.json"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stdout).contains("no health report"));
    cluster.stop().await;
}
