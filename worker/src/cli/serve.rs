//! `kiln-worker serve`: the command line of the AMQP consumer (`kiln_worker::consumer`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kiln_proto::amqp::Topology;
use kiln_worker::consumer::{HealthReport, ServeConfig, serve};
use kiln_worker::image::SquashfsOptions;
use kiln_worker::sandbox::{Sandbox, SandboxConfig};
use tokio_util::sync::CancellationToken;

use super::build::{default_arch, parse_codec};

/// Options of `kiln-worker serve`; each has a `KILN_*` environment twin.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// AMQP broker URL (the virtual host percent-encoded, `%2f` for `/`).
    #[arg(
        long,
        env = "KILN_AMQP",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp: String,
    /// Where this worker reaches the scheduler; the paths of job URLs are resolved against it.
    #[arg(long, env = "KILN_SCHEDULER", default_value = "http://127.0.0.1:8080")]
    scheduler: String,
    /// Builds run at once.
    #[arg(long, env = "KILN_CONCURRENCY", default_value_t = 1)]
    concurrency: u16,
    /// Architecture this worker builds for, as a Go name.
    #[arg(long, env = "KILN_ARCH", default_value = default_arch())]
    arch: String,
    /// Prefix of every exchange and queue name; must match the scheduler's.
    #[arg(long, env = "KILN_AMQP_PREFIX", default_value = "")]
    amqp_prefix: String,
    /// Id in events and heartbeats. Default: HOST-PID.
    #[arg(long, env = "KILN_WORKER_ID")]
    worker_id: Option<String>,
    /// Scratch space for builds.
    #[arg(
        long,
        env = "KILN_WORK_DIR",
        default_value = "/var/tmp/kiln-worker/builds"
    )]
    work_dir: PathBuf,
    /// Layer cache directory, shared by the builds of this worker.
    #[arg(
        long,
        env = "KILN_CACHE_DIR",
        default_value = "/var/tmp/kiln-worker/cache"
    )]
    cache_dir: PathBuf,
    /// A registry spoken to over plain HTTP, HOST:PORT; repeatable.
    #[arg(
        long = "insecure-registry",
        env = "KILN_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    insecure_registries: Vec<String>,
    /// Run `%post` and `%test` without network (a loopback-only network namespace).
    #[arg(long, env = "KILN_NO_NETWORK")]
    no_network: bool,
    /// SquashFS compressor of the images: gzip, xz, lz4 or zstd.
    #[arg(long, env = "KILN_COMP", default_value = "gzip")]
    comp: String,
    /// Largest build context accepted, bytes.
    #[arg(long, env = "KILN_MAX_CONTEXT_BYTES", default_value_t = 1 << 30)]
    max_context_bytes: u64,
    /// Seconds between heartbeats.
    #[arg(long, env = "KILN_HEARTBEAT_INTERVAL", default_value_t = 10)]
    heartbeat_interval: u64,
    /// Where each heartbeat writes the report `kiln-worker health` judges. Default:
    /// `health.json` in the work directory.
    #[arg(long, env = "KILN_HEALTH_FILE")]
    health_file: Option<PathBuf>,
    /// Seconds running builds get to finish after SIGTERM before they are given back.
    #[arg(long, env = "KILN_DRAIN_GRACE", default_value_t = 600)]
    drain_grace: u64,
    /// Seconds a job's delivery stays unacked before the worker renews it through its held
    /// queue; below the broker's consumer_timeout (RabbitMQ's default is 1800).
    #[arg(long, env = "KILN_LEASE_RENEWAL", default_value_t = 900)]
    lease_renewal: u64,
}

/// `health.json` in the work directory, which the worker can always write (build directories
/// there are named `<build id>.<attempt>`).
fn default_health_file(work_dir: &Path) -> PathBuf {
    work_dir.join("health.json")
}

/// Options of `kiln-worker health`, an exec probe for a running `kiln-worker serve`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The report `serve` writes (its `--health-file`).
    #[arg(long, env = "KILN_HEALTH_FILE")]
    health_file: Option<PathBuf>,
    /// `serve`'s work directory, to find the default report in it.
    #[arg(
        long,
        env = "KILN_WORK_DIR",
        default_value = "/var/tmp/kiln-worker/builds"
    )]
    work_dir: PathBuf,
    /// Oldest report that counts as alive, seconds (a few heartbeat intervals).
    #[arg(long, default_value_t = 60)]
    max_age: u64,
    /// Also require a broker connection and no drain (a readiness probe).
    #[arg(long)]
    ready: bool,
}

/// `kiln-worker health`: prints one line and exits 0 when the worker is alive (or ready with
/// `--ready`), 1 when it is not or no report can be read.
pub fn run_health(args: &HealthArgs) -> i32 {
    let path = args
        .health_file
        .clone()
        .unwrap_or_else(|| default_health_file(&args.work_dir));
    let report = match HealthReport::read(&path) {
        Ok(report) => report,
        Err(error) => {
            println!(
                "no health report at {}: {error} (is kiln-worker serve running?)",
                path.display()
            );
            return 1;
        }
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    match report.judge(now_ms, args.max_age.saturating_mul(1000), args.ready) {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(line) => {
            println!("{line}");
            1
        }
    }
}

/// Runs `kiln-worker serve` until SIGTERM or Ctrl-C (drain) and a second one (give back now).
pub fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "kiln-worker".into());
    let config = ServeConfig {
        amqp_url: args.amqp,
        scheduler_url: args.scheduler,
        topology: Topology::with_prefix(args.amqp_prefix),
        arch: args.arch,
        concurrency: args.concurrency.max(1),
        worker_id: args
            .worker_id
            .unwrap_or_else(|| format!("{host}-{}", std::process::id())),
        health_file: args
            .health_file
            .unwrap_or_else(|| default_health_file(&args.work_dir)),
        work_dir: args.work_dir,
        cache_dir: args.cache_dir,
        insecure_registries: args.insecure_registries,
        squashfs: SquashfsOptions {
            codec: parse_codec(&args.comp).map_err(|e| anyhow::anyhow!(e.one_line()))?,
            ..SquashfsOptions::default()
        },
        max_context_bytes: args.max_context_bytes,
        heartbeat_interval: Duration::from_secs(args.heartbeat_interval.max(1)),
        drain_grace: Duration::from_secs(args.drain_grace),
        lease_renewal: Duration::from_secs(args.lease_renewal.max(1)),
    };
    let sandbox = Sandbox::new(SandboxConfig {
        is_network_enabled: !args.no_network,
        ..SandboxConfig::default()
    })
    .context("failed to set up the sandbox")?;
    let runtime = tokio::runtime::Runtime::new().context("failed to start the runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        serve(config, sandbox, shutdown)
            .await
            .context("kiln-worker serve failed")
    })
}

/// First signal: drain. Second: exit at once (the broker redelivers what was running).
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        return;
    };
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let next = async |terminate: &mut tokio::signal::unix::Signal,
                      interrupt: &mut Option<tokio::signal::unix::Signal>| {
        match interrupt {
            Some(interrupt) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            None => {
                terminate.recv().await;
            }
        }
    };
    next(&mut terminate, &mut interrupt).await;
    tracing::info!("draining: finishing running builds (send the signal again to stop at once)");
    shutdown.cancel();
    next(&mut terminate, &mut interrupt).await;
    tracing::warn!("second signal: stopping without drain");
    std::process::exit(130);
}
