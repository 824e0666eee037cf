//! Runs a [`Plan`]: each stage bootstrapped, its sections run in SingularityCE's order
//! (`deffile.md` §8.1), the last stage squashed into SquashFS and wrapped in a SIF
//! (`sif-squashfs.md` §2).
//!
//! Ownership, rootless: the worker runs as the build user, the sandbox's root. Everything the
//! worker writes from outside (bootstrap files, `%files`, `/.singularity.d`) is owned by it, so
//! `%post` sees it as root's; what `%post` gives to other users lands on the subordinate ids of
//! the full map. Steps that must read, own or remove what `%post` made (squashing, `%files
//! from <stage>`, removing the stage trees) run as root of a user namespace with the same map
//! ([`super::tasks`]), so they see the ids `%post` saw and every file is open to them. A worker
//! started as root drops to the build user first (`kiln-worker build --build-user`), so there
//! is one code path.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use kiln_definitions::BuildArgs;
use kiln_proto::amqp::{BuildState, Finished, LibraryCredential, LogStream};
use kiln_proto::sif::{Arch, CreateOptions, write_singularity_image};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::confined::{Confined, make_root};
use super::error::{BuildError, io};
use super::files::{context_pattern, copy_entry, glob};
use super::layer::TreeRecords;
use super::plan::{Agent, POST_SCRIPT, Plan, StagePlan, plan};
use super::stage_meta::{MetaInput, write_apps};
use super::tasks::BUILD_LABELS;
use crate::events::BuildReporter;
use crate::image::SquashfsOptions;
use crate::metadata::{RootfsEntry, base_environment};
use crate::sandbox::{OutputLine, Sandbox, SandboxCommand, SandboxError, Stream};

/// The environment `%post` and `%test` start from (SingularityCE's `--cleanenv`).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Largest build context accepted, unpacked, in bytes.
const MAX_CONTEXT_BYTES: u64 = 8 << 30;

/// What a build is asked to do besides the definition.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Go architecture name of the image (`amd64`).
    pub arch: String,
    /// `--build-arg` values.
    pub build_args: BuildArgs,
    /// The uploaded build context (a tar.gz of the client's `%files` sources).
    pub context_tar: Option<PathBuf>,
    /// The client's working directory, against which relative `%files` sources resolve.
    pub working_dir: PathBuf,
    /// The build's library URL, for `Bootstrap: library` without `Library:`.
    pub library_url: Option<String>,
    /// A token for one library, so `Bootstrap: library` can read the owner's private images.
    pub library_credential: Option<LibraryCredential>,
    /// Registries spoken to over plain HTTP (`HOST:PORT`).
    pub insecure_registries: Vec<String>,
    /// Skip `%test`.
    pub notest: bool,
    /// Scratch space for this build (rootfs trees, the SquashFS); must exist, emptied by the
    /// caller.
    pub work_dir: PathBuf,
    /// Where the layer cache lives.
    pub cache_dir: PathBuf,
    /// The SIF to write.
    pub output: PathBuf,
    /// SquashFS settings.
    pub squashfs: SquashfsOptions,
    /// Version recorded in the labels.
    pub builder_version: String,
}

/// Everything a running build talks to.
pub struct BuildEnv<'a> {
    /// Runs `%post` and `%test`.
    pub sandbox: &'a Sandbox,
    /// Where events go.
    pub reporter: &'a BuildReporter,
    /// Cancels the build.
    pub cancel: &'a CancellationToken,
}

/// A finished stage: its rootfs on disk.
struct BuiltStage {
    rootfs: PathBuf,
    /// What the agent left besides the tree.
    base: Base,
}

/// What a bootstrap agent leaves besides the rootfs.
#[derive(Default)]
struct Base {
    /// `oci-config.json` of a docker base image.
    oci_config: Option<Vec<u8>>,
    /// Owners, modes, devices and xattrs the rootless layer application could only record.
    records: Option<TreeRecords>,
    /// Layer blobs of a docker base that were not applied to disk: the streaming path.
    stream_layers: Option<Vec<PathBuf>>,
}

/// Builds the definition `text` into `options.output`. The stage trees under
/// `options.work_dir` are removed before it returns, whatever the outcome.
///
/// # Errors
/// A [`BuildError`]; its [`fault`](BuildError::fault) says whose.
pub async fn build(
    text: &str,
    options: &BuildOptions,
    env: &BuildEnv<'_>,
) -> Result<Finished, BuildError> {
    let result = build_stages(text, options, env).await;
    remove_stage_trees(options, env).await;
    result
}

/// Removes the `stage-N` trees of `options.work_dir`, as root of the build's user namespace:
/// `%post` may have left directories the worker alone cannot empty. Failures are logged.
async fn remove_stage_trees(options: &BuildOptions, env: &BuildEnv<'_>) {
    let Ok(entries) = fs::read_dir(&options.work_dir) else {
        return;
    };
    // Cleaning up runs after a cancellation too.
    let cancel = CancellationToken::new();
    for entry in entries.flatten() {
        if !entry.file_name().as_encoded_bytes().starts_with(b"stage-") {
            continue;
        }
        if let Err(error) = super::tasks::remove_tree(env.sandbox, &cancel, &entry.path()).await {
            tracing::warn!(error = %error.one_line(), "failed to remove a stage tree");
        }
    }
}

async fn build_stages(
    text: &str,
    options: &BuildOptions,
    env: &BuildEnv<'_>,
) -> Result<Finished, BuildError> {
    let plan = plan(text, &options.build_args)?;
    for warning in &plan.warnings {
        env.reporter
            .log(LogStream::System, format!("WARNING: {warning}"));
    }
    let arch = Arch::from_go_arch(&options.arch)
        .ok_or_else(|| BuildError::Refused(format!("unknown architecture {:?}", options.arch)))?;
    let context = match &options.context_tar {
        Some(tar) => {
            env.reporter.state(BuildState::Fetching);
            let dir = options.work_dir.join("context");
            extract_context(tar, &dir)?;
            Some(dir)
        }
        None => None,
    };
    let mut built: Vec<BuiltStage> = Vec::with_capacity(plan.stages.len());
    for stage in &plan.stages {
        let stage_built = run_stage(&plan, stage, &built, context.as_deref(), options, env).await?;
        built.push(stage_built);
    }
    let last = built
        .last()
        .ok_or_else(|| BuildError::Refused("no stage".into()))?;
    let image_stage = plan
        .stages
        .last()
        .ok_or_else(|| BuildError::Refused("no stage".into()))?;
    env.reporter.state(BuildState::Packing);
    let inspect = super::tasks::inspect(
        env.sandbox,
        env.cancel,
        &last.rootfs,
        image_stage.number,
        &image_stage.apps,
    )
    .await?;
    let squashfs = options.work_dir.join("rootfs.squashfs");
    let summary = super::tasks::squash(
        env.sandbox,
        env.cancel,
        &last.rootfs,
        last.base.records.as_ref(),
        last.base.stream_layers.as_deref(),
        &squashfs,
        &options.squashfs,
    )
    .await?;
    env.reporter.info(format!(
        "SquashFS: {} inodes, {} bytes ({} duplicate files)",
        summary.inodes, summary.file_size, summary.duplicates
    ));
    let mut json: Vec<(&str, Vec<u8>)> = vec![("inspect-metadata.json", inspect.to_bytes())];
    if let Some(config) = &last.base.oci_config {
        json.push(("oci-config.json", config.clone()));
    }
    write_sif(&options.output, &plan.deffile, &json, arch, &squashfs)?;
    let _ = fs::remove_file(&squashfs);
    let (image_size, image_checksum) = checksum(&options.output)?;
    Ok(Finished {
        image_size,
        image_checksum,
        library_ref: String::new(),
    })
}

async fn run_stage(
    plan: &Plan,
    stage: &StagePlan,
    built: &[BuiltStage],
    context: Option<&Path>,
    options: &BuildOptions,
    env: &BuildEnv<'_>,
) -> Result<BuiltStage, BuildError> {
    let n = stage.number;
    let label = if stage.name.is_empty() {
        format!("stage {n}")
    } else {
        format!("stage {n} ({})", stage.name)
    };
    let reporter = env.reporter;
    let stage_dir = options.work_dir.join(format!("stage-{n}"));
    fs::create_dir_all(&stage_dir).map_err(io("create", &stage_dir))?;
    let rootfs = stage_dir.join("rootfs");
    make_root(&rootfs).map_err(io("create", &rootfs))?;
    reporter.state(BuildState::Fetching);
    // The image stage of a one-stage build that changes nothing but metadata streams its
    // layers straight into SquashFS; later stages may read an earlier one's tree.
    let is_streamed = plan.stages.len() == 1
        && matches!(stage.agent, Agent::Docker { .. })
        && !stage.changes_rootfs(options.notest);
    let base = bootstrap(stage, &rootfs, options, env, !is_streamed).await?;
    let root = Confined::open(&rootfs).map_err(io("open", &rootfs))?;

    if !stage.apps.is_empty() {
        reporter.info(format!("{label}: adding SCIF apps"));
        write_apps(&root, &stage.apps)?;
        for app in &stage.apps {
            for line in app.files.lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                let mut words = line.split_whitespace();
                let Some(source) = words.next() else { continue };
                let dest = words.next().unwrap_or(source);
                let dest = format!("/scif/apps/{}/{}", app.name, dest.trim_start_matches('/'));
                copy_from_context(&root, context, &options.working_dir, source, &dest, n)?;
            }
        }
    }
    // %files from stages, then from the context (steps 4 and 6).
    for files in stage.files.iter().filter(|f| f.from_stage.is_some()) {
        let Some(from) = files.from_stage else {
            continue;
        };
        reporter.state(BuildState::Running("files".into()));
        let source_root = built.get(from).ok_or_else(|| BuildError::Files {
            stage: n,
            message: format!("stage {} is not built yet", from + 1),
        })?;
        let entries: Vec<(String, String)> =
            named_entries(&files.entries, reporter).cloned().collect();
        // As root of the build's user namespace: the source stage's `%post` may have left
        // files the worker cannot read, and the copies keep their owners.
        let copied = super::tasks::copy_from_stage(
            env.sandbox,
            env.cancel,
            (&source_root.rootfs, from + 1),
            &rootfs,
            &entries,
            n,
        )
        .await?;
        for copy in copied {
            reporter.info(format!(
                "copied {} from stage {} to {}",
                copy.source,
                from + 1,
                copy.target
            ));
        }
    }
    for files in stage.files.iter().filter(|f| f.from_stage.is_none()) {
        reporter.state(BuildState::Running("files".into()));
        for (source, dest) in named_entries(&files.entries, reporter) {
            copy_from_context(&root, context, &options.working_dir, source, dest, n)?;
        }
    }

    if let Some((argv, body)) = &stage.post {
        reporter.state(BuildState::Running("post".into()));
        root.write(Path::new(POST_SCRIPT), 0o755, body.as_bytes())
            .map_err(io("write", Path::new(POST_SCRIPT)))?;
        let _ = root.remove_file(Path::new(BUILD_LABELS));
        let mut full = vec!["/.singularity.d/actions/exec".to_owned()];
        full.extend(argv.iter().cloned());
        let command = SandboxCommand {
            rootfs: rootfs.clone(),
            argv: full,
            env: script_env(true),
            cwd: "/".into(),
            is_read_only: false,
        };
        run_script(env, &command, "post", n).await?;
    }

    let meta = MetaInput {
        deffile: plan.deffile.clone(),
        arch: options.arch.clone(),
        builder_version: options.builder_version.clone(),
        post_labels: None,
        build_time: OffsetDateTime::now_utc().unix_timestamp(),
    };
    let warnings = super::tasks::finish_stage(
        env.sandbox,
        env.cancel,
        &rootfs,
        n,
        &stage.definition,
        meta,
        stage.post.is_some(),
    )
    .await?;
    for warning in warnings {
        reporter.log(LogStream::System, format!("WARNING: {warning}"));
    }

    let test = &stage.definition.image_data.image_scripts.test.script;
    if !options.notest && !test.is_empty() {
        reporter.state(BuildState::Running("test".into()));
        let command = SandboxCommand {
            rootfs: rootfs.clone(),
            argv: vec!["/.singularity.d/actions/test".into()],
            env: script_env(false),
            cwd: "/".into(),
            is_read_only: true,
        };
        run_script(env, &command, "test", n).await?;
    }
    Ok(BuiltStage { rootfs, base })
}

fn files_error(stage: usize, source: &str, error: &std::io::Error) -> BuildError {
    BuildError::Files {
        stage,
        message: format!("{source}: {error}"),
    }
}

/// Copies one `%files` (or `%appfiles`) entry from the build context.
fn copy_from_context(
    root: &Confined,
    context: Option<&Path>,
    working_dir: &Path,
    source: &str,
    dest: &str,
    stage: usize,
) -> Result<(), BuildError> {
    let Some(context) = context else {
        return Err(BuildError::Files {
            stage,
            message: format!(
                "{source}: the build has no context; the client uploads the files %files names"
            ),
        });
    };
    let pattern = context_pattern(source, working_dir).ok_or_else(|| BuildError::Files {
        stage,
        message: format!("{source} climbs above /"),
    })?;
    let ctx = Confined::open(context).map_err(io("open", context))?;
    let matches = glob(&ctx, &pattern).map_err(|e| files_error(stage, source, &e))?;
    if matches.is_empty() {
        return Err(BuildError::Files {
            stage,
            message: format!("no file of the build context matches {source}"),
        });
    }
    for found in matches {
        // The default destination is the source as written: relative to the working directory
        // for a relative source.
        let target = if !dest.is_empty() {
            dest.to_owned()
        } else if source.starts_with('/') {
            format!("/{}", found.display())
        } else {
            let wd = working_dir.strip_prefix("/").unwrap_or(working_dir);
            format!("/{}", found.strip_prefix(wd).unwrap_or(&found).display())
        };
        copy_entry(&ctx, &found, root, &target, true, false)
            .map_err(|e| files_error(stage, source, &e))?;
    }
    Ok(())
}

/// The environment `%post` (`is_post`) and `%test` start from; the action script then sources
/// the image's `/.singularity.d/env` (`deffile.md` §8.3).
fn script_env(is_post: bool) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ("LANG".into(), "C".into()),
        ("HOME".into(), "/root".into()),
        ("TERM".into(), "xterm".into()),
    ];
    if is_post {
        env.push((
            "SINGULARITY_ENVIRONMENT".into(),
            "/.singularity.d/env/91-environment.sh".into(),
        ));
        env.push(("SINGULARITY_LABELS".into(), BUILD_LABELS.into()));
        env.push(("SINGULARITY_ROOTFS".into(), "/".into()));
    }
    env
}

/// Runs a script in the sandbox, forwarding its lines to the build log.
async fn run_script(
    env: &BuildEnv<'_>,
    command: &SandboxCommand,
    section: &str,
    stage: usize,
) -> Result<(), BuildError> {
    let (sender, mut receiver) = mpsc::channel::<OutputLine>(256);
    let reporter = env.reporter;
    let forward = async {
        while let Some(line) = receiver.recv().await {
            let stream = match line.stream {
                Stream::Stdout => LogStream::Stdout,
                Stream::Stderr => LogStream::Stderr,
            };
            reporter.log(stream, line.text);
        }
    };
    let (result, ()) = tokio::join!(env.sandbox.run(command, sender, env.cancel), forward);
    let report = result.map_err(|source| match source {
        SandboxError::Setup { .. } | SandboxError::RelativeCommand(_) => BuildError::ScriptStart {
            section: section.to_owned(),
            stage,
            source,
        },
        other => BuildError::Sandbox(other),
    })?;
    for warning in &report.warnings {
        reporter.log(LogStream::System, format!("WARNING: sandbox: {warning}"));
    }
    match report.outcome {
        outcome if outcome.is_success() => Ok(()),
        crate::sandbox::Outcome::Cancelled => Err(BuildError::Cancelled),
        outcome => Err(BuildError::Script {
            section: section.to_owned(),
            stage,
            outcome,
        }),
    }
}

/// Step 2: the agent fills `rootfs` and lays down the base `/.singularity.d`. A docker base's
/// layers are only pulled, not applied, when `apply` is false (the streaming path).
async fn bootstrap(
    stage: &StagePlan,
    rootfs: &Path,
    options: &BuildOptions,
    env: &BuildEnv<'_>,
    apply: bool,
) -> Result<Base, BuildError> {
    let root = Confined::open(rootfs).map_err(io("open", rootfs))?;
    let base = |root: &Confined| {
        root.apply_entries(&base_environment())
            .map_err(io("write the base environment into", rootfs))
    };
    match &stage.agent {
        Agent::Scratch => {
            env.reporter
                .info(format!("stage {}: bootstrap scratch", stage.number));
            base(&root)?;
            root.apply_entries(&[RootfsEntry {
                path: "/.singularity.d/runscript".into(),
                kind: crate::metadata::EntryKind::File {
                    mode: 0o755,
                    content: b"#!/bin/sh\n".to_vec(),
                },
            }])
            .map_err(io("write the runscript into", rootfs))?;
            Ok(Base::default())
        }
        Agent::Docker { from } => {
            env.reporter
                .info(format!("stage {}: bootstrap docker {from}", stage.number));
            let header = stage.definition.header.clone().unwrap_or_default();
            let docker = super::agents::docker(from, &header, &root, options, env, apply).await?;
            Ok(Base {
                oci_config: Some(docker.oci_config),
                records: Some(docker.records),
                stream_layers: (!apply).then_some(docker.layers),
            })
        }
        Agent::Library { from, library_url } => {
            env.reporter
                .info(format!("stage {}: bootstrap library {from}", stage.number));
            let url = library_url.clone().or_else(|| options.library_url.clone());
            base(&root)?;
            let header = stage.definition.header.clone().unwrap_or_default();
            let oci_config =
                super::agents::library(from, url.as_deref(), &header, &root, options, env).await?;
            Ok(Base {
                oci_config,
                ..Base::default()
            })
        }
        Agent::Oras { from } => {
            env.reporter
                .info(format!("stage {}: bootstrap oras {from}", stage.number));
            base(&root)?;
            let header = stage.definition.header.clone().unwrap_or_default();
            let oci_config = super::agents::oras(from, &header, &root, options, env).await?;
            Ok(Base {
                oci_config,
                ..Base::default()
            })
        }
    }
}

/// A random v4 UUID, as `singularity build` gives each image.
fn random_uuid() -> Result<[u8; 16], BuildError> {
    let mut id = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut id))
        .map_err(io("read", Path::new("/dev/urandom")))?;
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    Ok(id)
}

/// Writes the SIF: deffile, JSON objects, the SquashFS as primary partition.
pub fn write_sif(
    output: &Path,
    deffile: &str,
    json: &[(&str, Vec<u8>)],
    arch: Arch,
    squashfs: &Path,
) -> Result<(), BuildError> {
    let mut objects: Vec<(&str, &[u8])> = json.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    objects.sort_by_key(|(n, _)| *n);
    let partition = File::open(squashfs).map_err(io("open", squashfs))?;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(output)
        .map_err(io("create", output))?;
    let options = CreateOptions {
        id: random_uuid()?,
        time: OffsetDateTime::now_utc().unix_timestamp(),
        ..CreateOptions::default()
    };
    let result = write_singularity_image(
        BufWriter::new(file),
        options,
        deffile.as_bytes(),
        &objects,
        arch,
        partition,
    )
    .map_err(|source| BuildError::Sif {
        path: output.to_owned(),
        source,
    })
    .and_then(|mut w| w.flush().map_err(io("write", output)));
    if result.is_err() {
        let _ = fs::remove_file(output);
    }
    result
}

/// Size and `sha256.<hex>` of a file.
fn checksum(path: &Path) -> Result<(u64, String), BuildError> {
    let mut file = File::open(path).map_err(io("read", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, format!("sha256.{}", hex::encode(hasher.finalize()))))
}

/// Unpacks the uploaded build context (tar, optionally gzip) into `dir`: directories and
/// regular files only, every path inside `dir`, at most [`MAX_CONTEXT_BYTES`].
pub fn extract_context(tar_path: &Path, dir: &Path) -> Result<(), BuildError> {
    let err = |source| BuildError::Context {
        path: tar_path.to_owned(),
        source,
    };
    make_root(dir).map_err(io("create", dir))?;
    let mut file = File::open(tar_path).map_err(err)?;
    let mut magic = [0u8; 2];
    let is_gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    drop(file);
    let file = File::open(tar_path).map_err(err)?;
    let reader: Box<dyn Read> = if is_gzip {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);
    let mut total = 0u64;
    for entry in archive.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(err(std::io::Error::other(format!(
                "{} is neither a file nor a directory",
                String::from_utf8_lossy(&entry.path_bytes())
            ))));
        }
        total = total.saturating_add(entry.size());
        if total > MAX_CONTEXT_BYTES {
            return Err(err(std::io::Error::other(format!(
                "it unpacks to more than {MAX_CONTEXT_BYTES} bytes"
            ))));
        }
        // `unpack_in` refuses `..` and strips a leading `/`.
        if !entry.unpack_in(dir).map_err(err)? {
            return Err(err(std::io::Error::other(format!(
                "{} climbs out of the context",
                String::from_utf8_lossy(&entry.path_bytes())
            ))));
        }
    }
    Ok(())
}

/// The `%files` pairs that name a source; SingularityCE skips a nameless one with a warning.
fn named_entries<'a>(
    entries: &'a [(String, String)],
    reporter: &'a BuildReporter,
) -> impl Iterator<Item = &'a (String, String)> + 'a {
    entries.iter().filter(move |(source, _)| {
        if source.is_empty() {
            reporter.log(
                LogStream::System,
                "WARNING: Attempt to copy file with no name, skipping.",
            );
        }
        !source.is_empty()
    })
}
