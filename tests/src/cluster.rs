//! A whole Kiln on one machine for end-to-end tests: the scheduler in this process (so a test
//! can restart it on the same state), `kiln-worker serve` as separate processes (so a test can
//! `kill -9` one), a private RabbitMQ vhost, a SQLite file or a PostgreSQL database made for the
//! test, and a client that speaks to it the way the stock `singularity build --remote` does
//! (build-api.md §10).
//!
//! The worker binary is `KILN_WORKER_EXE`, else `kiln-worker` next to the test binary's
//! `deps/` folder: `cargo test --workspace` builds it; a lone `cargo test -p kiln-tests` needs
//! `cargo build -p kiln-worker` first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::StreamExt;
use kiln_scheduler::clock::SystemClock;
use kiln_scheduler::config::{
    AdminCommand, AdminConfig, LibraryConfig, Limits, ServeConfig, StateConfig, TokenCommand,
    UserCommand,
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

use crate::rabbitmq::TestVhost;
use crate::unique_name;

/// The user every cluster test submits as.
pub const USER: &str = "alice";
/// The sandbox user the workers become (tests/setup/build-user.sh).
pub const BUILD_USER: &str = "kiln-build";

/// Which state backend the scheduler uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file in the data directory (the default deployment).
    Sqlite,
    /// A database on the PostgreSQL at `KILN_TEST_POSTGRES` (default
    /// `postgres://postgres@127.0.0.1:5432/test`), made for the test and dropped after it.
    Postgres,
}

/// What a cluster starts with.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// State backend.
    pub db: Db,
    /// Worker processes to start.
    pub workers: usize,
    /// Builds each worker runs at once.
    pub concurrency: u16,
    /// The scheduler's limits (the AMQP prefix is ignored: the vhost is private).
    pub limits: Limits,
    /// Broker URL; default a fresh vhost on the shared broker.
    pub amqp_url: Option<String>,
    /// Registries the workers reach over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Seconds a worker drains for after SIGTERM.
    pub drain_grace_seconds: u64,
    /// More `kiln-worker serve` arguments.
    pub worker_args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            db: Db::Sqlite,
            workers: 2,
            concurrency: 1,
            limits: Limits::default(),
            amqp_url: None,
            insecure_registries: Vec::new(),
            drain_grace_seconds: 30,
            worker_args: Vec::new(),
        }
    }
}

/// A PostgreSQL database that exists for one test.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    async fn create() -> (Self, String) {
        use sqlx::Connection as _;
        let admin_url = std::env::var("KILN_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = unique_name("kiln_cluster")
            .expect("random name")
            .replace('-', "_");
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let url = format!("{}/{name}", admin_url.rsplit_once('/').expect("URL").0);
        (Self { admin_url, name }, url)
    }

    async fn drop_database(&self) {
        use sqlx::Connection as _;
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut admin)
            .await;
        }
    }
}

/// A `kiln-worker serve` process; killed when dropped.
pub struct WorkerProcess {
    /// Its `--worker-id`.
    pub id: String,
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the worker logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the worker.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
    }

    /// Waits up to `timeout` for the worker to exit; its exit status, if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `kiln-worker` binary the cluster runs.
pub fn worker_exe() -> PathBuf {
    if let Some(exe) = std::env::var_os("KILN_WORKER_EXE") {
        return exe.into();
    }
    let test_exe = std::env::current_exe().expect("the test binary's path");
    let target_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let exe = target_dir.join("kiln-worker");
    assert!(
        exe.exists(),
        "{} is missing: run `cargo build -p kiln-worker` or set KILN_WORKER_EXE",
        exe.display()
    );
    exe
}

/// A running Kiln; it derefs to a [`Client`] for `alice`.
pub struct Cluster {
    /// `alice`'s client.
    pub client: Client,
    /// The broker URL (with the vhost).
    pub amqp_url: String,
    /// The workers, in start order.
    pub workers: Vec<WorkerProcess>,
    options: ClusterOptions,
    config: ServeConfig,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
    dir: tempfile::TempDir,
    next_worker: usize,
    pg: Option<PgDatabase>,
    // Dropped last: the vhost outlives every connection into it.
    _vhost: Option<TestVhost>,
}

impl Cluster {
    /// Starts the scheduler (with user `alice` and a token) and `options.workers` workers, and
    /// waits until every worker consumes.
    pub async fn start(options: ClusterOptions) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("kiln-cluster-")
            .tempdir()
            .expect("temp dir");
        make_reachable_for_build_user(dir.path());
        let (vhost, amqp_url) = match &options.amqp_url {
            Some(url) => (None, url.clone()),
            None => {
                let vhost = TestVhost::create().expect("a RabbitMQ vhost for the test");
                let url = vhost.amqp_url();
                (Some(vhost), url)
            }
        };
        let (pg, database) = match options.db {
            Db::Sqlite => (None, None),
            Db::Postgres => {
                let (pg, url) = PgDatabase::create().await;
                (Some(pg), Some(url))
            }
        };
        let state = StateConfig {
            data: dir.path().join("data"),
            database,
        };
        let admin = |command| AdminConfig {
            state: state.clone(),
            command,
        };
        kiln_scheduler::admin(
            admin(AdminCommand::User(UserCommand::Add {
                name: USER.into(),
                admin: false,
                build_timeout: None,
                max_concurrent_builds: None,
            })),
            &SystemClock,
        )
        .await
        .expect("add the test user");
        let token = kiln_scheduler::admin(
            admin(AdminCommand::Token(TokenCommand::Create {
                name: USER.into(),
            })),
            &SystemClock,
        )
        .await
        .expect("create a token");
        let port = crate::net::free_port().expect("a free port");
        let config = ServeConfig {
            listen: format!("127.0.0.1:{port}").parse().expect("address"),
            state,
            amqp: amqp_url.clone(),
            public_url: None,
            limits: Limits {
                amqp_prefix: String::new(),
                ..options.limits.clone()
            },
            library: LibraryConfig::default(),
        };
        let mut cluster = Cluster {
            client: Client::new(format!("http://127.0.0.1:{port}"), token),
            amqp_url,
            workers: Vec::new(),
            options,
            config,
            shutdown: CancellationToken::new(),
            server: None,
            dir,
            next_worker: 0,
            pg,
            _vhost: vhost,
        };
        cluster.start_scheduler().await;
        for _ in 0..cluster.options.workers {
            cluster.add_worker();
        }
        cluster
    }

    async fn start_scheduler(&mut self) {
        let shutdown = CancellationToken::new();
        let config = self.config.clone();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            if let Err(error) = kiln_scheduler::run(config, stop).await {
                eprintln!("scheduler stopped: {error:#}");
            }
        });
        self.shutdown = shutdown;
        self.server = Some(server);
        let base = self.client.base.clone();
        let http = reqwest::Client::new();
        wait_for("the scheduler to answer", Duration::from_secs(30), || {
            let url = format!("{base}/version");
            let http = http.clone();
            async move { http.get(url).send().await.is_ok() }
        })
        .await;
    }

    /// Stops the scheduler (drain) and starts it again on the same state, port and broker.
    pub async fn restart_scheduler(&mut self) {
        self.stop_scheduler().await;
        self.start_scheduler().await;
    }

    /// A token of a new admin user `root` (for `/v1/admin/...`), made by the admin command.
    pub async fn admin_token(&self) -> String {
        self.add_user("root", true).await.token
    }

    /// A client of a new user `name` with a token, made by the admin commands.
    pub async fn add_user(&self, name: &str, admin: bool) -> Client {
        let run = |command| {
            kiln_scheduler::admin(
                AdminConfig {
                    state: self.config.state.clone(),
                    command,
                },
                &SystemClock,
            )
        };
        run(AdminCommand::User(UserCommand::Add {
            name: name.into(),
            admin,
            build_timeout: None,
            max_concurrent_builds: None,
        }))
        .await
        .expect("add a user");
        let token = run(AdminCommand::Token(TokenCommand::Create {
            name: name.into(),
        }))
        .await
        .expect("create a token");
        Client::new(self.client.base.clone(), token)
    }

    /// Stops the scheduler and waits for it to end.
    pub async fn stop_scheduler(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Starts one more worker; returns its index in [`Cluster::workers`].
    pub fn add_worker(&mut self) -> usize {
        let number = self.next_worker;
        self.next_worker += 1;
        let id = format!("w{number}");
        let root = self.dir.path().join(format!("worker-{id}"));
        for sub in ["builds", "cache"] {
            std::fs::create_dir_all(root.join(sub)).expect("worker dirs");
            make_reachable_for_build_user(&root.join(sub));
        }
        let log = self.dir.path().join(format!("worker-{id}.log"));
        let log_file = std::fs::File::create(&log).expect("worker log");
        let mut command = Command::new(worker_exe());
        command
            .arg("serve")
            .args(["--amqp", &self.amqp_url])
            .args(["--scheduler", &self.client.base])
            .args(["--concurrency", &self.options.concurrency.to_string()])
            .args(["--arch", "amd64"])
            .args(["--worker-id", &id])
            .arg("--work-dir")
            .arg(root.join("builds"))
            .arg("--cache-dir")
            .arg(root.join("cache"))
            .args(["--heartbeat-interval", "1"])
            .args([
                "--drain-grace",
                &self.options.drain_grace_seconds.to_string(),
            ])
            .args(["--build-user", BUILD_USER])
            .env("KILN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file);
        for registry in &self.options.insecure_registries {
            command.args(["--insecure-registry", registry]);
        }
        command.args(&self.options.worker_args);
        let child = command.spawn().expect("start kiln-worker serve");
        let worker = WorkerProcess { id, child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !worker.log_text().contains("consuming jobs") {
            assert!(
                Instant::now() < deadline,
                "worker {} did not start consuming:\n{}",
                worker.id,
                worker.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.workers.push(worker);
        self.workers.len() - 1
    }

    /// Waits until the build is complete; returns its status (panics with the workers' logs
    /// after `timeout`).
    pub async fn wait_complete(&self, id: &str, timeout: Duration) -> Value {
        match self.client.wait_complete_within(id, timeout).await {
            Some(status) => status,
            None => panic!(
                "build {id} not complete after {timeout:?}: {}\n{}",
                self.status(id).await,
                self.worker_logs()
            ),
        }
    }

    /// Every worker's log, for failure messages.
    pub fn worker_logs(&self) -> String {
        self.workers
            .iter()
            .map(|w| format!("--- worker {} ---\n{}", w.id, w.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The scheduler's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.config.state.data.clone()
    }

    /// A scratch directory of the test, readable by the build user.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Stops everything; drops the PostgreSQL database.
    pub async fn stop(mut self) {
        self.workers.clear();
        self.stop_scheduler().await;
        if let Some(pg) = self.pg.take() {
            pg.drop_database().await;
        }
    }
}

impl std::ops::Deref for Cluster {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Speaks to a scheduler the way the stock client does, as one user.
#[derive(Debug, Clone)]
pub struct Client {
    /// `http://127.0.0.1:<port>` of the scheduler.
    pub base: String,
    /// The user's API token.
    pub token: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the scheduler at `base` with `token`.
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Client {
        Client {
            base: base.into(),
            token: token.into(),
            http: reqwest::Client::new(),
        }
    }

    /// An authorized request to the scheduler.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", format!("BEARER {}", self.token))
            .header("User-Agent", "Singularity/4.1.0 (Linux x86_64) Go/1.21")
    }

    /// Submits `definition` the way `singularity build --remote` does (steps 3–5 of
    /// build-api.md §10): when `files` is given, uploads the build context (paths relative to
    /// the client's `working_dir`) first.
    pub async fn submit(
        &self,
        definition: &str,
        context: Option<(&Path, &[&str])>,
        library_ref: &str,
    ) -> Submitted {
        let mut context_digest = None;
        let mut body = json!({
            "definitionRaw": base64::engine::general_purpose::STANDARD.encode(definition),
            "libraryRef": library_ref,
            "libraryURL": "",
            "callbackURL": "",
            "builderRequirements": {"arch": "amd64"},
        });
        if let Some((working_dir, files)) = context {
            let archive = client_context_archive(working_dir, files);
            let digest = format!("sha256.{}", hex::encode(sha2_digest(&archive)));
            let announced = self
                .request(reqwest::Method::POST, "/v1/build-context")
                .json(&json!({"size": archive.len(), "digest": digest}))
                .send()
                .await
                .expect("POST /v1/build-context");
            assert!(
                announced.status().is_success(),
                "build-context: {}",
                announced.status()
            );
            if let Some(location) = announced.headers().get("Location") {
                let location = reqwest::Url::parse(&self.base)
                    .unwrap()
                    .join(location.to_str().unwrap())
                    .unwrap();
                // The stock client sends no Authorization here: the URL authorizes itself.
                let uploaded = self
                    .http
                    .put(location)
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Length", archive.len())
                    .body(archive)
                    .send()
                    .await
                    .expect("PUT the build context");
                assert!(
                    uploaded.status().is_success(),
                    "upload: {}",
                    uploaded.status()
                );
            }
            body["contextDigest"] = json!(digest);
            body["workingDir"] = json!(working_dir.display().to_string());
            context_digest = Some(digest);
        }
        let response = self
            .request(reqwest::Method::POST, "/v1/build")
            .json(&body)
            .send()
            .await
            .expect("POST /v1/build");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Submitted {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            context_digest,
        }
    }

    /// Submits a definition without a context and returns the build id (panics otherwise).
    pub async fn submit_ok(&self, definition: &str) -> String {
        let Submitted { status, body, .. } = self.submit(definition, None, "").await;
        assert!(status == 201 || status == 200, "submit: {status} {body}");
        body["data"]["id"].as_str().expect("build id").to_owned()
    }

    /// `GET /v1/build/{id}`'s `data`.
    pub async fn status(&self, id: &str) -> Value {
        let response = self
            .request(reqwest::Method::GET, &format!("/v1/build/{id}"))
            .send()
            .await
            .expect("GET /v1/build");
        let body: Value = response.json().await.expect("status JSON");
        body["data"].clone()
    }

    /// Waits until the build is complete; its status, or `None` after `timeout`.
    pub async fn wait_complete_within(&self, id: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id).await;
            if status["isComplete"] == json!(true) {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the build is complete; returns its status (panics after `timeout`).
    pub async fn wait_complete(&self, id: &str, timeout: Duration) -> Value {
        match self.wait_complete_within(id, timeout).await {
            Some(status) => status,
            None => panic!("build {id} not complete after {timeout:?}"),
        }
    }

    /// The build's state as the scheduler's store has it (`succeeded`, `cancelled`, ...), from
    /// the JSON status (`state` field added by Kiln) or derived.
    pub async fn state(&self, id: &str) -> String {
        self.status(id).await["state"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Opens the log WebSocket like the stock client (BEARER header, no subprotocol).
    pub async fn open_log(&self, id: &str) -> LogStream {
        let url = format!("{}/v1/build-ws/{id}", self.base.replacen("http", "ws", 1));
        let mut request = url.into_client_request().expect("ws request");
        request.headers_mut().insert(
            "Authorization",
            format!("BEARER {}", self.token).parse().unwrap(),
        );
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket handshake");
        LogStream { socket }
    }

    /// Downloads the result like the stock client (build-api.md §5.1, steps 9–11).
    pub async fn download(&self, library_ref: &str) -> Vec<u8> {
        let path = library_ref.trim_start_matches("library://");
        let redirect = self
            .request(
                reqwest::Method::GET,
                &format!("/v1/oci-redirect?accessTypes=pull&mapped=1&namespace={path}"),
            )
            .send()
            .await
            .expect("oci-redirect");
        assert_ne!(redirect.status().as_u16(), 200, "no OCI redirect expected");
        let version: Value = self
            .request(reqwest::Method::GET, "/version")
            .send()
            .await
            .expect("version")
            .json()
            .await
            .expect("version JSON");
        assert!(version["data"]["version"].is_string(), "{version}");
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("/v1/imagefile/{path}?arch=amd64"),
            )
            .send()
            .await
            .expect("imagefile");
        assert_eq!(response.status().as_u16(), 200, "download {path}");
        response.bytes().await.expect("image bytes").to_vec()
    }
}

/// The answer to a submission.
#[derive(Debug)]
pub struct Submitted {
    /// HTTP status of `POST /v1/build`.
    pub status: u16,
    /// Its body.
    pub body: Value,
    /// The digest of the build context uploaded first, if any (the archive holds the
    /// directories' times, so it cannot be made again later with the same digest).
    pub context_digest: Option<String>,
}

/// A build's log as a WebSocket viewer sees it.
pub struct LogStream {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// What a viewer saw until the server closed.
#[derive(Debug)]
pub struct LogSeen {
    /// Every text frame, concatenated.
    pub text: String,
    /// The close code, if a close frame came.
    pub close_code: Option<u16>,
    /// When each line arrived, with its text.
    pub lines: Vec<(Instant, String)>,
}

impl LogStream {
    /// Reads until the close frame (or `timeout`).
    pub async fn read_to_close(mut self, timeout: Duration) -> LogSeen {
        let mut seen = LogSeen {
            text: String::new(),
            close_code: None,
            lines: Vec::new(),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next()).await;
            match next {
                Ok(Some(Ok(WsMessage::Text(text)))) => {
                    let now = Instant::now();
                    for line in text.lines() {
                        seen.lines.push((now, line.to_owned()));
                    }
                    seen.text.push_str(&text);
                }
                Ok(Some(Ok(WsMessage::Close(frame)))) => {
                    seen.close_code = frame.map(|f| u16::from(f.code));
                    return seen;
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) | Err(_) => return seen,
            }
        }
    }

    /// Reads until a line containing `needle` arrives; false on close or `timeout`.
    pub async fn read_until(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut text = String::new();
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Ok(Some(Ok(WsMessage::Text(frame)))) => {
                    text.push_str(&frame);
                    if text.contains(needle) {
                        return true;
                    }
                }
                Ok(Some(Ok(WsMessage::Close(_)))) | Ok(Some(Err(_)) | None) | Err(_) => {
                    return false;
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// The build context archive the stock client makes for `files` (build-api.md §4.5): gzip(tar)
/// of each path made absolute against `working_dir`, names rootless, parent directories first.
pub fn client_context_archive(working_dir: &Path, files: &[&str]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(true);
    let mut seen = std::collections::BTreeSet::new();
    for file in files {
        let absolute = working_dir.join(file);
        let mut parent = PathBuf::from("/");
        let relative = absolute.strip_prefix("/").expect("absolute path");
        let components: Vec<_> = relative.components().collect();
        for component in &components[..components.len().saturating_sub(1)] {
            parent.push(component);
            let name = parent.strip_prefix("/").unwrap().to_path_buf();
            if seen.insert(name.clone()) {
                tar.append_dir(&name, &parent).expect("tar a directory");
            }
        }
        if seen.insert(relative.to_path_buf()) {
            if absolute.is_dir() {
                tar.append_dir_all(relative, &absolute).expect("tar a tree");
            } else {
                tar.append_path_with_name(&absolute, relative)
                    .expect("tar a file");
            }
        }
    }
    let gz = tar.into_inner().expect("finish tar");
    gz.finish().expect("finish gzip")
}

fn sha2_digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Lets the build user (the workers run as it) reach `dir`: its own and its parents' search
/// bit, and ownership when the test runs as root.
pub fn make_reachable_for_build_user(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::getuid().is_root() {
        return;
    }
    let user = nix::unistd::User::from_name(BUILD_USER)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no user {BUILD_USER}: run tests/setup/build-user.sh"));
    let _ = std::os::unix::fs::chown(dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()));
    let mut current = Some(dir);
    while let Some(path) = current {
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 {
                let _ =
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o711));
            }
        }
        current = path.parent();
    }
}

/// Polls `condition` every 50 ms until it holds; panics after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `text` to `path` readable by everyone (the build user reads contexts the test made).
pub fn write_public(path: &Path, text: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let mut file = std::fs::File::create(path).expect("create");
    file.write_all(text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}
