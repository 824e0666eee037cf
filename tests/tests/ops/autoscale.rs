//! `kiln-scheduler autoscale` against Podman's Docker-compatible API (`podman system service`,
//! runc runtime; environment.md): six builds queued with min 0 / max 3 start three worker
//! containers from the image `deploy/container/worker.Containerfile` builds here; the builds
//! succeed; the idle containers are stopped and removed afterwards, and no container is asked to
//! stop while the fleet view shows its worker busy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_proto::http::WorkerStatus;
use kiln_scheduler::autoscale::Autoscaler;
use kiln_scheduler::config::{AutoscaleConfig, Limits};
use kiln_tests::cluster::{Cluster, ClusterOptions, worker_exe};
use kiln_tests::registry::TestRegistry;
use serde_json::Value;

/// `podman` with the runtime that works on these hosts (crun fails on hybrid cgroups).
fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(["--runtime", "runc"]);
    command
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .expect("podman runs (apt-get install podman runc)");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_path_buf()
}

/// The worker image, built by podman from deploy/'s Containerfile over the debootstrap base
/// (tests/setup/debootstrap.sh), with the `kiln-worker` this test run built.
fn build_worker_image(scratch: &Path) -> String {
    let minbase = Path::new("/var/cache/kiln-tests/debian-minbase");
    if !minbase.is_dir() {
        run(&mut Command::new(
            repo_root().join("tests/setup/debootstrap.sh"),
        ));
    }
    let base = "localhost/kiln-test-base:bookworm";
    let has_base = podman()
        .args(["image", "exists", base])
        .status()
        .is_ok_and(|s| s.success());
    if !has_base {
        // An image from a plain tar: podman's builder refuses OCI layouts without history.
        let tar = scratch.join("minbase.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(minbase)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        run(podman().arg("import").arg("-q").arg(&tar).arg(base));
        std::fs::remove_file(&tar).unwrap();
    }
    let context = scratch.join("image");
    std::fs::create_dir_all(&context).unwrap();
    run(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(worker_exe())
        .arg(context.join("kiln-worker")));
    let tag = format!(
        "localhost/kiln-worker:{}",
        kiln_tests::unique_name("test").unwrap()
    );
    run(podman()
        .args(["build", "-q", "--network", "host", "--build-arg"])
        .arg(format!("BASE={base}"))
        .arg("-f")
        .arg(repo_root().join("deploy/container/worker.Containerfile"))
        .args(["-t", &tag])
        .arg(&context));
    tag
}

/// `podman system service` on a socket of the test's own; stopped with its containers and
/// image when dropped.
struct PodmanService {
    child: Child,
    socket: PathBuf,
    group: String,
    image: String,
}

impl PodmanService {
    fn start(dir: &Path, group: &str, image: &str) -> Self {
        let socket = dir.join("podman.sock");
        let child = podman()
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start podman system service");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "podman's socket did not appear");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            socket,
            group: group.to_owned(),
            image: image.to_owned(),
        }
    }

    fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Names of the group's containers and whether each runs, from podman's own CLI.
    fn containers(&self) -> Vec<(String, bool)> {
        let names = |running: bool| {
            let mut command = podman();
            command
                .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
                .arg(format!("label=kiln.autoscale.group={}", self.group));
            if running {
                command.args(["--filter", "status=running"]);
            }
            run(&mut command)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let running = names(true);
        names(false)
            .into_iter()
            .map(|name| {
                let is_running = running.contains(&name);
                (name, is_running)
            })
            .collect()
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        for (name, _) in self.containers() {
            let _ = podman().args(["rm", "-f", "-t", "0", &name]).output();
        }
        let _ = podman().args(["rmi", "-f", &self.image]).output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn autoscaler_starts_workers_for_six_builds_and_stops_only_idle_ones() {
    let scratch = tempfile::tempdir().unwrap();
    let image = build_worker_image(scratch.path());
    let group = kiln_tests::unique_name("kiln-as").unwrap();
    let service = PodmanService::start(scratch.path(), &group, &image);
    let registry = TestRegistry::plain().expect("the test registry");
    let cluster = Cluster::start(ClusterOptions {
        workers: 0,
        limits: Limits {
            max_concurrent_builds: 6,
            ..Limits::default()
        },
        ..ClusterOptions::default()
    })
    .await;
    let token = cluster.admin_token().await;
    let mut autoscaler = Autoscaler::new(AutoscaleConfig {
        docker: service.url(),
        image: image.clone(),
        min: 0,
        max: 3,
        scheduler: cluster.client.base.clone(),
        token: token.clone(),
        arch: "amd64".into(),
        concurrency: 1,
        interval_seconds: 1,
        idle_seconds: 3,
        start_timeout_seconds: 120,
        stop_timeout_seconds: 60,
        group: group.clone(),
        env: vec![
            format!("KILN_AMQP={}", cluster.amqp_url),
            format!("KILN_SCHEDULER={}", cluster.client.base),
            format!("KILN_INSECURE_REGISTRIES={}", registry.addr()),
            "KILN_HEARTBEAT_INTERVAL=1".into(),
            "KILN_DRAIN_GRACE=30".into(),
        ],
        // The scheduler and the broker listen on the host's loopback.
        network: Some("host".into()),
        security_opts: vec!["unmask=ALL".into()],
        cap_add: vec!["SYS_ADMIN".into()],
    })
    .await
    .expect("connect to podman's API");

    let definition = format!(
        "Bootstrap: docker\nFrom: {}/busybox:latest\n\n%post\n    echo building on $(hostname)\n    sleep 4\n",
        registry.addr()
    );
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(cluster.submit_ok(&definition).await);
    }

    let http = reqwest::Client::new();
    let fleet = || async {
        let body: Value = http
            .get(format!("{}/v1/admin/workers", cluster.client.base))
            .bearer_auth(&token)
            .send()
            .await
            .expect("fleet view")
            .json()
            .await
            .expect("fleet JSON");
        body["data"].as_array().cloned().unwrap_or_default()
    };

    let started_at = Instant::now();
    let mut most_running = 0;
    let mut started = Vec::new();
    let mut terminated = Vec::new();
    let mut builds_done = None;
    loop {
        // What the fleet view says right before the autoscaler looks: a container it asks to
        // stop in this look must not have been busy here.
        let workers = fleet().await;
        let report = autoscaler.tick().await.expect("an autoscaler look");
        for name in &report.terminated {
            let worker = workers
                .iter()
                .find(|w| w["id"] == name.as_str())
                .unwrap_or_else(|| panic!("{name} was stopped without a heartbeat"));
            assert_eq!(
                worker["status"],
                serde_json::to_value(WorkerStatus::Idle).unwrap(),
                "{name} was asked to stop while not idle: {worker}"
            );
        }
        started.extend(report.started);
        terminated.extend(report.terminated);
        let containers = service.containers();
        let running = containers.iter().filter(|(_, running)| *running).count();
        most_running = most_running.max(running);
        assert!(running <= 3, "more than max containers: {containers:?}");

        if builds_done.is_none() {
            let mut complete = 0;
            for id in &ids {
                if cluster.status(id).await["isComplete"] == true {
                    complete += 1;
                }
            }
            if complete == ids.len() {
                builds_done = Some(started_at.elapsed());
            }
        }
        if builds_done.is_some() && containers.is_empty() {
            break;
        }
        assert!(
            started_at.elapsed() < Duration::from_secs(300),
            "not done after 300 s: builds done {builds_done:?}, containers {containers:?}, \
             started {started:?}, terminated {terminated:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    for id in &ids {
        let status = cluster.status(id).await;
        assert_eq!(status["state"], "succeeded", "build {id}: {status}");
        assert!(status["imageSize"].as_u64().unwrap_or(0) > 0, "{status}");
    }
    assert_eq!(
        most_running, 3,
        "six waiting builds bring up max containers"
    );
    assert_eq!(
        started.len(),
        3,
        "no container beyond max was started: {started:?}"
    );
    let mut stopped = terminated.clone();
    stopped.sort();
    started.sort();
    assert_eq!(
        stopped, started,
        "every container was stopped once, when idle"
    );
    eprintln!(
        "autoscale: 6 builds done in {:.1} s with {} containers; all stopped after {:.1} s",
        builds_done.unwrap().as_secs_f64(),
        started.len(),
        started_at.elapsed().as_secs_f64()
    );
    cluster.stop().await;
    drop(service);
}
