//! `kiln-worker build` and `kiln-worker run`: the build pipeline from the command line, the
//! same code the queue consumer calls, and a runner that proves an image works without
//! singularity.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use kiln_definitions::{BuildArgs, parse_build_arg};
use kiln_proto::amqp::{BuildState, Failed};
use kiln_worker::events::{
    BuildReporter, EventSink, HumanSink, JsonLinesSink, ReporterLimits, system_clock,
};
use kiln_worker::image::{Codec, SquashfsOptions};
use kiln_worker::pipeline::{BuildEnv, BuildError, BuildOptions, build, tasks};
use kiln_worker::sandbox::{BuildUser, OutputLine, Sandbox, SandboxCommand, SandboxConfig, Stream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Options of `kiln-worker build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgsCli {
    /// Architecture to build for, as a Go name.
    #[arg(long, default_value = default_arch())]
    arch: String,
    /// Build argument KEY=VALUE for `{{ KEY }}` placeholders; repeatable.
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// The uploaded build context, a tar(.gz) of the files `%files` names.
    #[arg(long, requires = "working_dir")]
    context_tar: Option<PathBuf>,
    /// The client's working directory, against which relative `%files` sources resolve.
    #[arg(long, requires = "context_tar")]
    working_dir: Option<PathBuf>,
    /// Library API base URL for `Bootstrap: library` without a `Library:` header.
    #[arg(long)]
    library: Option<String>,
    /// Bearer token sent to the `--library` URL (and no other), to pull private images.
    #[arg(
        long,
        env = "KILN_LIBRARY_TOKEN",
        requires = "library",
        hide_env_values = true
    )]
    library_token: Option<String>,
    /// A registry spoken to over plain HTTP, HOST:PORT; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    /// Do not run `%test`.
    #[arg(long)]
    notest: bool,
    /// Print the structured build events as JSON lines on stdout.
    #[arg(long)]
    json_events: bool,
    /// SquashFS compressor: gzip, xz, lz4 or zstd.
    #[arg(long, default_value = "gzip")]
    comp: String,
    /// Compression level; default the codec's.
    #[arg(long)]
    level: Option<u32>,
    /// Scratch directory for this build's trees; default a fresh one under $TMPDIR.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Layer cache directory.
    #[arg(long, default_value = "/var/tmp/kiln-worker-cache")]
    cache_dir: PathBuf,
    /// The SIF image to write.
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// The definition file.
    definition: PathBuf,
}

/// The Go name of this machine's architecture.
pub const fn default_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "aarch64") {
        "arm64"
    } else if cfg!(target_arch = "powerpc64") {
        "ppc64le"
    } else if cfg!(target_arch = "s390x") {
        "s390x"
    } else {
        "unknown"
    }
}

/// Options of `kiln-worker run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The SIF image.
    image: PathBuf,
    /// Arguments for the runscript.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// When started as root, becomes the build user for good, so that every file of the build is
/// the sandbox root's and one code path serves both deployments.
pub fn drop_root(user_name: &str) -> anyhow::Result<()> {
    if !nix::unistd::getuid().is_root() {
        return Ok(());
    }
    let user = BuildUser::from_name(user_name)
        .context("failed to look up the build user")?
        .with_context(|| {
            format!(
                "running as root needs the build user {user_name:?} (tests/setup/build-user.sh)"
            )
        })?;
    let gid = nix::unistd::Gid::from_raw(user.gid);
    let uid = nix::unistd::Uid::from_raw(user.uid);
    nix::unistd::setgroups(&[]).context("setgroups")?;
    nix::unistd::setresgid(gid, gid, gid).context("setresgid")?;
    nix::unistd::setresuid(uid, uid, uid).context("setresuid")?;
    Ok(())
}

fn sandbox() -> anyhow::Result<Sandbox> {
    Sandbox::new(SandboxConfig::default()).context("failed to set up the sandbox")
}

/// Runs `kiln-worker build`; returns the process exit code.
pub fn run_build(args: BuildArgsCli) -> anyhow::Result<i32> {
    let sink: Arc<dyn EventSink> = if args.json_events {
        Arc::new(JsonLinesSink::new(std::io::stdout()))
    } else {
        Arc::new(HumanSink::new())
    };
    let reporter = BuildReporter::new(
        sink,
        hostname(),
        None,
        1,
        system_clock(),
        ReporterLimits::default(),
    );
    match build_inner(&args, &reporter) {
        Ok(()) => Ok(0),
        Err(error) => {
            let (section, exit_code, timed_out) = error.script_failure();
            reporter.failed(Failed {
                reason: error.one_line(),
                fault: error.fault(),
                section,
                exit_code,
                timed_out,
            });
            Ok(1)
        }
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "kiln-worker".into())
}

fn build_inner(args: &BuildArgsCli, reporter: &BuildReporter) -> Result<(), BuildError> {
    let setup = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| BuildError::Io { what, path, source }
    };
    let text = std::fs::read(&args.definition).map_err(|source| {
        // The definition is the user's input: a missing file is theirs to fix.
        BuildError::Definition(format!(
            "cannot read {}: {source}",
            args.definition.display()
        ))
    })?;
    let text = String::from_utf8(text).map_err(|_| {
        BuildError::Definition(format!("{} is not UTF-8 text", args.definition.display()))
    })?;
    let mut build_args = BuildArgs::new();
    for spec in &args.build_args {
        let (key, value) = parse_build_arg(spec)
            .map_err(|e| BuildError::Definition(format!("--build-arg: {e}")))?;
        build_args.insert(key, value);
    }
    let codec = parse_codec(&args.comp)?;
    let temp = match &args.work_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("kiln-build-")
                .tempdir()
                .map_err(setup("create", Path::new("$TMPDIR")))?,
        ),
    };
    let work_dir = match (&args.work_dir, &temp) {
        (Some(dir), _) => {
            std::fs::create_dir_all(dir).map_err(setup("create", dir))?;
            dir.clone()
        }
        (None, Some(t)) => t.path().to_owned(),
        (None, None) => unreachable!("a temporary directory exists when --work-dir is absent"),
    };
    let options = BuildOptions {
        arch: args.arch.clone(),
        build_args,
        context_tar: args.context_tar.clone(),
        working_dir: args.working_dir.clone().unwrap_or_else(|| "/".into()),
        library_url: args.library.clone(),
        library_credential: args
            .library
            .clone()
            .zip(args.library_token.clone())
            .map(|(url, token)| kiln_proto::amqp::LibraryCredential { url, token }),
        insecure_registries: args.insecure_registries.clone(),
        notest: args.notest,
        work_dir,
        cache_dir: args.cache_dir.clone(),
        output: args.output.clone(),
        squashfs: SquashfsOptions {
            codec,
            level: args.level,
            ..SquashfsOptions::default()
        },
        builder_version: format!("kiln-{}", env!("CARGO_PKG_VERSION")),
    };
    let sandbox = Sandbox::new(SandboxConfig::default()).map_err(BuildError::Sandbox)?;
    let runtime = tokio::runtime::Runtime::new().map_err(setup("start", Path::new("runtime")))?;
    reporter.state(BuildState::Started);
    let finished = runtime.block_on(async {
        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        let watcher = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_signal.cancel();
            }
        });
        let env = BuildEnv {
            sandbox: &sandbox,
            reporter,
            cancel: &cancel,
        };
        let result = build(&text, &options, &env).await;
        watcher.abort();
        result
    })?;
    let mut finished = finished;
    finished.library_ref = args.output.display().to_string();
    reporter.finished(finished);
    Ok(())
}

/// The SquashFS codec named `name`.
///
/// # Errors
/// [`BuildError::Refused`] for an unknown name.
pub fn parse_codec(name: &str) -> Result<Codec, BuildError> {
    match name {
        "gzip" => Ok(Codec::Gzip),
        "xz" => Ok(Codec::Xz),
        "lz4" => Ok(Codec::Lz4),
        "zstd" => Ok(Codec::Zstd),
        other => Err(BuildError::Refused(format!(
            "unknown compressor {other:?} (expected gzip, xz, lz4 or zstd)"
        ))),
    }
}

/// Runs `kiln-worker run`: unpacks the image's SquashFS into a temporary directory and runs
/// its runscript there in the sandbox, read-only; returns the runscript's exit code.
pub fn run_image(args: RunArgs) -> anyhow::Result<i32> {
    let temp = tempfile::Builder::new()
        .prefix("kiln-run-")
        .tempdir()
        .context("failed to create a temporary directory")?;
    let squashfs = temp.path().join("rootfs.squashfs");
    let working_dir;
    {
        let file = std::fs::File::open(&args.image)
            .with_context(|| format!("failed to open {}", args.image.display()))?;
        let mut reader = kiln_proto::sif::SifReader::new(file)
            .with_context(|| format!("{} is not a SIF image", args.image.display()))?;
        working_dir = image_working_dir(&mut reader);
        let Some(id) = reader.primary_partition().map(|d| d.id) else {
            bail!("{} has no primary system partition", args.image.display());
        };
        let mut out = std::fs::File::create(&squashfs).context("failed to create a temp file")?;
        reader
            .copy_object(id, &mut out)
            .context("failed to read the system partition")?;
    }
    let rootfs = temp.path().join("rootfs");
    kiln_worker::pipeline::confined::make_root(&rootfs)
        .context("failed to create the rootfs directory")?;
    let runtime = tokio::runtime::Runtime::new().context("failed to start the runtime")?;
    let sandbox = sandbox()?;
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        // As root of the sandbox's user namespace, so the files keep the image's owners.
        tasks::unsquash(&sandbox, &cancel, &squashfs, &rootfs)
            .await
            .map_err(|e| anyhow::anyhow!(e.one_line()))?;
        let _ = std::fs::remove_file(&squashfs);
        let code = run_unpacked(&sandbox, &rootfs, working_dir, &args.args).await;
        // Files of other owners: only root of the namespace can remove them.
        if let Err(error) = tasks::remove_tree(&sandbox, &cancel, &rootfs).await {
            tracing::warn!(error = %error.one_line(), "failed to remove the unpacked image");
        }
        code
    })
}

/// Runs the runscript of the image unpacked at `rootfs`; returns its exit code.
async fn run_unpacked(
    sandbox: &Sandbox,
    rootfs: &Path,
    working_dir: Option<String>,
    args: &[String],
) -> anyhow::Result<i32> {
    {
        // A docker image's WorkingDir, as `singularity run --oci` starts there; this runner has
        // no host directory to start in, so `/` otherwise.
        let cwd = working_dir
            .filter(|dir| {
                kiln_worker::pipeline::confined::Confined::open(rootfs)
                    .is_ok_and(|root| root.is_dir(Path::new(dir)))
            })
            .unwrap_or_else(|| "/".into());
        let mut argv = vec!["/.singularity.d/actions/run".to_owned()];
        argv.extend(args.iter().cloned());
        let command = SandboxCommand {
            rootfs: rootfs.to_owned(),
            argv,
            env: vec![
                (
                    "PATH".into(),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ),
                ("LANG".into(), "C".into()),
                ("HOME".into(), "/root".into()),
            ],
            cwd: cwd.into(),
            is_read_only: true,
        };
        let (sender, mut receiver) = mpsc::channel::<OutputLine>(256);
        let printer = async {
            use std::io::Write;
            while let Some(line) = receiver.recv().await {
                match line.stream {
                    Stream::Stdout => {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "{}", line.text).and_then(|()| out.flush());
                    }
                    Stream::Stderr => eprintln!("{}", line.text),
                }
            }
        };
        let cancel = CancellationToken::new();
        let (report, ()) = tokio::join!(sandbox.run(&command, sender, &cancel), printer);
        let report = report.context("the sandbox failed")?;
        Ok(match report.outcome {
            kiln_worker::sandbox::Outcome::Exited(code) => code,
            kiln_worker::sandbox::Outcome::Signaled(signal) => 128 + signal,
            other => bail!("{other}"),
        })
    }
}

/// The `WorkingDir` of the image's `oci-config.json` object, if it has one (docker bases).
fn image_working_dir(reader: &mut kiln_proto::sif::SifReader<std::fs::File>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct RunConfig {
        #[serde(rename = "WorkingDir", default)]
        working_dir: String,
    }
    let id = reader
        .object_by_name(kiln_proto::sif::DataType::GENERIC_JSON, b"oci-config.json")?
        .id;
    let bytes = reader.read_object(id, 1 << 20).ok()?;
    let config: RunConfig = serde_json::from_slice(&bytes).ok()?;
    config
        .working_dir
        .starts_with('/')
        .then_some(config.working_dir)
}
