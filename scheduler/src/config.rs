//! The scheduler's configuration: one struct per subcommand, parsed once in `main` from flags,
//! each mirrored by a `KILN_*` environment variable. Nothing below `main` reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// `kiln-scheduler`: the remote build API, its log relay and its state.
#[derive(Debug, Parser)]
#[command(name = "kiln-scheduler", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API and relay build events.
    // Boxed: the serve configuration is far larger than the admin one.
    Serve(Box<ServeConfig>),
    /// Manage users and tokens.
    Admin(AdminConfig),
    /// Start and stop worker containers through the Docker Engine API as the queue demands.
    Autoscale(AutoscaleConfig),
}

/// Where the state lives; shared by `serve` and `admin`.
#[derive(Debug, Clone, Args)]
pub struct StateConfig {
    /// Data directory: the SQLite database (unless `--database` names another), build contexts
    /// and build results.
    #[arg(long, env = "KILN_DATA")]
    pub data: PathBuf,
    /// Database URL: `sqlite://PATH` or `postgres://USER@HOST/DB`. Default: `kiln.db` in the
    /// data directory.
    #[arg(long, env = "KILN_DATABASE")]
    pub database: Option<String>,
}

impl StateConfig {
    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data.join("kiln.db").display()))
    }
}

/// `kiln-scheduler serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "KILN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The state.
    #[command(flatten)]
    pub state: StateConfig,
    /// AMQP broker URL (the virtual host percent-encoded, `%2f` for `/`).
    #[arg(
        long,
        env = "KILN_AMQP",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp: String,
    /// Base URL clients reach this service at, without trailing slash; it goes into the
    /// discovery document, `libraryURL` and the upload locations. Default: `http://` + the
    /// listening address.
    #[arg(long, env = "KILN_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Limits and timings.
    #[command(flatten)]
    pub limits: Limits,
    /// The library's storage and policies.
    #[command(flatten)]
    pub library: LibraryConfig,
}

/// How `GET /v1/imagefile` delivers a file (library-api.md §6.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DownloadMode {
    /// `200` with the file as the body: every client generation takes it.
    #[default]
    Stream,
    /// `303` to an expiring capability URL that answers `Range` with `206`, for clients that
    /// download in concurrent parts. With an S3 object store it is a presigned URL of the
    /// bucket, so the bytes skip the scheduler: clients must reach the bucket, and
    /// SingularityCE 3.10 / Apptainer 1.1, which send their token to any host, are refused
    /// by S3 (a presigned URL and an `Authorization` header together).
    Redirect,
}

/// The library: where image files live and the rules around them.
#[derive(Debug, Clone, Args)]
pub struct LibraryConfig {
    /// Object store URL for image files (`s3://BUCKET[/PREFIX]`, …). Default: the directory
    /// `objects` in the data directory.
    #[arg(long = "object-store", env = "KILN_OBJECT_STORE")]
    pub object_store: Option<String>,
    /// Options of the object store, `KEY=VALUE`, comma-separated (`aws_endpoint=http://…`,
    /// `aws_allow_http=true`, `aws_access_key_id=…`, `aws_region=…`).
    #[arg(
        long = "object-store-option",
        env = "KILN_OBJECT_STORE_OPTIONS",
        value_delimiter = ',',
        value_parser = parse_key_value
    )]
    pub object_store_options: Vec<(String, String)>,
    /// Bytes of images one user may store in the library; 0 means unlimited. A user's own
    /// quota (`admin user quota`) overrides it.
    #[arg(
        long = "library-quota",
        env = "KILN_LIBRARY_QUOTA",
        default_value_t = 0
    )]
    pub quota_bytes: u64,
    /// Entity that one- and two-component refs (`alpine`, `coll/alpine`) belong to.
    #[arg(
        long = "default-entity",
        env = "KILN_DEFAULT_ENTITY",
        default_value = "library"
    )]
    pub default_entity: String,
    /// How downloads are answered.
    #[arg(
        long = "library-download",
        env = "KILN_LIBRARY_DOWNLOAD",
        value_enum,
        default_value_t
    )]
    pub download: DownloadMode,
    /// Bytes per part of a multipart upload (at least 5 MiB, as S3 wants).
    #[arg(long = "library-part-size", env = "KILN_LIBRARY_PART_SIZE", default_value_t = 64 * 1024 * 1024)]
    pub part_size_bytes: u64,
    /// Seconds an upload or ranged-download URL stays valid.
    #[arg(
        long = "library-url-ttl",
        env = "KILN_LIBRARY_URL_TTL",
        default_value_t = 3600
    )]
    pub url_ttl_seconds: u64,
    /// Seconds before the ephemeral image of a remote build without a library ref is deleted.
    #[arg(
        long = "ephemeral-ttl",
        env = "KILN_EPHEMERAL_TTL",
        default_value_t = 86_400
    )]
    pub ephemeral_ttl_seconds: u64,
}

impl Default for LibraryConfig {
    fn default() -> Self {
        Self {
            object_store: None,
            object_store_options: Vec::new(),
            quota_bytes: 0,
            default_entity: "library".into(),
            download: DownloadMode::Stream,
            part_size_bytes: 64 * 1024 * 1024,
            url_ttl_seconds: 3600,
            ephemeral_ttl_seconds: 86_400,
        }
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

/// The deployment's limits and timings.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Go architecture names workers build for; submissions for others are refused.
    #[arg(
        long = "arch",
        env = "KILN_ARCHES",
        value_delimiter = ',',
        default_value = "amd64"
    )]
    pub arches: Vec<String>,
    /// Prefix of every exchange and queue name (keeps deployments sharing a broker apart).
    #[arg(long, env = "KILN_AMQP_PREFIX", default_value = "")]
    pub amqp_prefix: String,
    /// Deliveries of one job before it is dead-lettered and its build marked failed.
    #[arg(long, env = "KILN_DELIVERY_LIMIT", default_value_t = 3)]
    pub delivery_limit: i64,
    /// Wall-time limit of one build, seconds (a user's own setting overrides it).
    #[arg(long, env = "KILN_BUILD_TIMEOUT", default_value_t = 3600)]
    pub build_timeout_seconds: u64,
    /// How long a job may wait in the queue before its build expires, seconds.
    #[arg(long, env = "KILN_QUEUE_TTL", default_value_t = 86_400)]
    pub queue_ttl_seconds: u64,
    /// Builds one user may have queued or running at once (a user's own setting overrides it).
    #[arg(long, env = "KILN_MAX_CONCURRENT_BUILDS", default_value_t = 4)]
    pub max_concurrent_builds: u64,
    /// Bytes of log kept per build; later output is dropped after a truncation line.
    #[arg(long, env = "KILN_MAX_LOG_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_log_bytes: u64,
    /// Largest build context archive accepted, bytes.
    #[arg(long, env = "KILN_MAX_CONTEXT_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_context_bytes: u64,
    /// Largest total size of the files in a build context once unpacked, bytes.
    #[arg(long, env = "KILN_MAX_CONTEXT_UNPACKED_BYTES", default_value_t = 8 * 1024 * 1024 * 1024)]
    pub max_context_unpacked_bytes: u64,
    /// Largest build result (SIF) a worker may upload, bytes.
    #[arg(long, env = "KILN_MAX_IMAGE_BYTES", default_value_t = 64 * 1024 * 1024 * 1024)]
    pub max_image_bytes: u64,
    /// Unused build contexts are deleted after this many seconds.
    #[arg(long, env = "KILN_CONTEXT_TTL", default_value_t = 86_400)]
    pub context_ttl_seconds: u64,
    /// How often the sweeper looks for expired builds, timeouts and stale contexts, seconds.
    #[arg(long, env = "KILN_SWEEP_INTERVAL", default_value_t = 30)]
    pub sweep_interval_seconds: u64,
    /// Seconds of drain on the first SIGTERM before open connections are cut.
    #[arg(long, env = "KILN_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace_seconds: u64,
    /// How often workers send heartbeats, seconds (the workers' own setting; keep them equal).
    #[arg(long, env = "KILN_WORKER_HEARTBEAT", default_value_t = 10)]
    pub worker_heartbeat_seconds: u64,
    /// Heartbeats a worker may miss before the fleet view marks it lost.
    #[arg(long, env = "KILN_WORKER_LOST_AFTER_HEARTBEATS", default_value_t = 3)]
    pub worker_lost_heartbeats: u64,
    /// Workers lost for this many seconds are dropped from the fleet view.
    #[arg(long, env = "KILN_WORKER_FORGET", default_value_t = 86_400)]
    pub worker_forget_seconds: u64,
    /// A reverse proxy (CIDR, e.g. 10.0.0.0/8) whose `X-Forwarded-For` names the client, so
    /// the sign-in throttle counts clients, not the proxy; repeat or comma-separate.
    #[arg(
        long = "trusted-proxy",
        env = "KILN_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Limits {
    /// The queue TTL as a duration.
    pub fn queue_ttl(&self) -> Duration {
        Duration::from_secs(self.queue_ttl_seconds)
    }

    /// How long after its last heartbeat a worker counts as lost, ms.
    pub fn worker_lost_after_ms(&self) -> i64 {
        let seconds = self
            .worker_heartbeat_seconds
            .saturating_mul(self.worker_lost_heartbeats.max(1));
        i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            arches: vec!["amd64".into()],
            amqp_prefix: String::new(),
            delivery_limit: 3,
            build_timeout_seconds: 3600,
            queue_ttl_seconds: 86_400,
            max_concurrent_builds: 4,
            max_log_bytes: 16 * 1024 * 1024,
            max_context_bytes: 1024 * 1024 * 1024,
            max_context_unpacked_bytes: 8 * 1024 * 1024 * 1024,
            max_image_bytes: 64 * 1024 * 1024 * 1024,
            context_ttl_seconds: 86_400,
            sweep_interval_seconds: 30,
            shutdown_grace_seconds: 10,
            worker_heartbeat_seconds: 10,
            worker_lost_heartbeats: 3,
            worker_forget_seconds: 86_400,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `kiln-scheduler admin`.
#[derive(Debug, Clone, Args)]
pub struct AdminConfig {
    /// The state.
    #[command(flatten)]
    pub state: StateConfig,
    /// What to change.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// Admin subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `admin user ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Add a user.
    Add {
        /// Login name (lowercase letters, digits, `-`, `_`, `.`; the library entity).
        name: String,
        /// May see and cancel every build.
        #[arg(long)]
        admin: bool,
        /// This user's build timeout, seconds (default: the deployment's).
        #[arg(long)]
        build_timeout: Option<u64>,
        /// This user's concurrent build limit (default: the deployment's).
        #[arg(long)]
        max_concurrent_builds: Option<u64>,
    },
    /// Set a user's password for the web builder's sign-in, read from the first line of
    /// standard input (so it stays out of the process list and the shell history).
    Passwd {
        /// Login name.
        name: String,
        /// The password; `main` reads it from standard input, never from the command line.
        #[arg(skip)]
        password: String,
    },
    /// Set a user's library storage quota: bytes, `unlimited`, or `default` (the deployment's
    /// `--library-quota`).
    Quota {
        /// Login name.
        name: String,
        /// Bytes (at least 1), `unlimited` or `default`.
        quota: QuotaSetting,
    },
    /// Change a user's limits (an omitted limit goes back to the deployment's default).
    Set {
        /// Login name.
        name: String,
        /// Build timeout, seconds.
        #[arg(long)]
        build_timeout: Option<u64>,
        /// Concurrent build limit.
        #[arg(long)]
        max_concurrent_builds: Option<u64>,
    },
}

/// A user's library quota as `admin user quota` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaSetting {
    /// This many bytes (at least 1).
    Bytes(u64),
    /// No limit, whatever the deployment's default.
    Unlimited,
    /// The deployment's `--library-quota`.
    Default,
}

impl QuotaSetting {
    /// The stored form: `None` for the default, `Some(0)` for unlimited.
    pub fn stored(self) -> Option<u64> {
        match self {
            Self::Bytes(bytes) => Some(bytes),
            Self::Unlimited => Some(0),
            Self::Default => None,
        }
    }
}

impl std::str::FromStr for QuotaSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "unlimited" => Ok(Self::Unlimited),
            "default" => Ok(Self::Default),
            // 0 would read as unlimited on the wire (the client prints "out of unlimited
            // quota" for `quotaTotal: 0`), so it is refused rather than guessed at.
            _ => match text.parse::<u64>() {
                Ok(0) => Err("a quota of 0 bytes is not allowed: give at least 1 byte, \
                     `unlimited` or `default`"
                    .into()),
                Ok(bytes) => Ok(Self::Bytes(bytes)),
                Err(_) => Err(format!(
                    "invalid quota {text:?}: expected a number of bytes, `unlimited` or `default`"
                )),
            },
        }
    }
}

/// `admin token ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Create a token for a user and print it (only the token, once; it is stored hashed).
    Create {
        /// Login name.
        name: String,
    },
}

/// `kiln-scheduler autoscale`: keeps between `min` and `max` worker containers, as many as the
/// queue of one architecture needs (see `autoscale/`).
#[derive(Debug, Clone, Args)]
pub struct AutoscaleConfig {
    /// The Docker Engine API: `unix:///run/docker.sock`, `unix:///run/podman/podman.sock`,
    /// `tcp://HOST:PORT` or `http://HOST:PORT`.
    #[arg(long, env = "KILN_DOCKER")]
    pub docker: String,
    /// The worker image (deploy/container/worker.Containerfile), present on the engine.
    #[arg(long, env = "KILN_WORKER_IMAGE")]
    pub image: String,
    /// Fewest worker containers kept running, even with an empty queue.
    #[arg(long, env = "KILN_AUTOSCALE_MIN", default_value_t = 0)]
    pub min: u32,
    /// Most worker containers ever running.
    #[arg(long, env = "KILN_AUTOSCALE_MAX", default_value_t = 4)]
    pub max: u32,
    /// The scheduler whose queue and fleet view are watched (base URL, plain HTTP).
    #[arg(long, env = "KILN_SCHEDULER", default_value = "http://127.0.0.1:8080")]
    pub scheduler: String,
    /// An admin token of that scheduler (`kiln-scheduler admin token create`).
    #[arg(long, env = "KILN_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The architecture whose queue the workers serve.
    #[arg(long, env = "KILN_ARCH", default_value = "amd64")]
    pub arch: String,
    /// Builds one worker runs at once (its `KILN_CONCURRENCY`).
    #[arg(long, default_value_t = 1)]
    pub concurrency: u32,
    /// Seconds between two looks at the queue.
    #[arg(long, env = "KILN_AUTOSCALE_INTERVAL", default_value_t = 5)]
    pub interval_seconds: u64,
    /// Seconds a worker must have been idle before it is stopped.
    #[arg(long, env = "KILN_AUTOSCALE_IDLE", default_value_t = 60)]
    pub idle_seconds: u64,
    /// Seconds a new container has to send its first heartbeat before it counts as broken and
    /// is removed.
    #[arg(long, default_value_t = 120)]
    pub start_timeout_seconds: u64,
    /// Seconds a stopping worker gets after SIGTERM (its drain) before it is killed; keep it
    /// above the workers' `KILN_DRAIN_GRACE`.
    #[arg(long, default_value_t = 660)]
    pub stop_timeout_seconds: u64,
    /// Label value that marks this autoscaler's containers (`kiln.autoscale.group`); two
    /// autoscalers on one engine need different groups.
    #[arg(long, default_value = "kiln-worker")]
    pub group: String,
    /// `KEY=VALUE` for the workers' environment (`KILN_AMQP`, `KILN_SCHEDULER`, ...); repeat.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// The containers' network (`host`, `bridge`, a network name); default: the engine's.
    #[arg(long)]
    pub network: Option<String>,
    /// A security option for the containers (`unmask=ALL`, `seccomp=...`); repeat.
    #[arg(long = "security-opt")]
    pub security_opts: Vec<String>,
    /// A capability added to the containers' bounding set; repeat. Rootless builds in a
    /// container need `SYS_ADMIN` there for the setuid `newuidmap` (the worker itself runs as
    /// the unprivileged build user) and `--security-opt unmask=ALL` to mount a build's /proc.
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
}
