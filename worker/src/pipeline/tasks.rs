//! The build steps that run as root of the build's user namespace, through
//! [`Sandbox::run_task`]: squashing the built tree, `%files from <stage>`, unpacking a SIF
//! base image, removing stage trees, and everything after `%post` that touches
//! `/.singularity.d` (its metadata written, then read back for `inspect-metadata.json`).
//!
//! Why: `%post` runs as root of a user namespace and may leave files the worker, outside it,
//! can neither read nor remove: `/etc/shadow` 0600 or a home directory 0700 given to another
//! user (`useradd -m`) are owned by a subordinate id, not by the worker. As root of a namespace
//! with the same id map, the worker's own code reads every one of them, sees the owners
//! `%post` gave (no mapping back needed), can give copies the same owners, and can remove
//! them. The worker passes its [`run`] to `sandbox::helper_main`; each task's input and output
//! are JSON, and bulk data (layer records) travels in a file of the build's work directory.

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use kiln_definitions::Definition;

use super::confined::Confined;
use super::error::{BuildError, io};
use super::files::{copy_entry, glob};
use super::layer::TreeRecords;
use super::plan::{App, POST_SCRIPT};
use super::records_overlay::apply_records;
use super::stage_meta::{MetaInput, inspect_metadata, write_metadata};
use crate::image::tree::{Meta, Node, NodeId, NodeKind};
use crate::image::{
    Codec, IdMap, ImageError, SquashfsOptions, Tree, apply_layer, read_dir_tree, write_squashfs,
};
use crate::metadata::InspectMetadata;
use crate::sandbox::{Sandbox, SandboxError};

/// Task name: write the SquashFS image of a built tree.
const SQUASH: &str = "squash";
/// Task name: `%files from <stage>`.
const COPY_FROM_STAGE: &str = "copy-from-stage";
/// Task name: remove a tree.
const REMOVE: &str = "remove";
/// Task name: unpack a SquashFS image.
const UNSQUASH: &str = "unsquash";
/// Task name: clean up after `%post` and write the stage's metadata.
const FINISH_STAGE: &str = "finish-stage";
/// Task name: read the image's metadata back.
const INSPECT: &str = "inspect";

/// Why a task failed, as it crosses the process boundary.
#[derive(Debug, Serialize, Deserialize)]
struct TaskFailure {
    /// One line.
    message: String,
    /// Whether the build's content is at fault rather than the worker.
    is_user_fault: bool,
}

impl TaskFailure {
    fn infrastructure(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            is_user_fault: false,
        }
    }
}

/// The [`crate::sandbox::TaskHandler`] of the worker binary: runs task `name` on its JSON
/// `input`. Called in the helper process, as root of the build's user namespace.
pub fn run(name: &str, input: &str) -> Result<String, String> {
    let result = match name {
        SQUASH => parse(input).and_then(|i| squash_here(&i)).and_then(to_json),
        COPY_FROM_STAGE => parse(input).and_then(|i| copy_here(&i)).and_then(to_json),
        REMOVE => parse(input).and_then(|i| remove_here(&i)).and_then(to_json),
        UNSQUASH => parse(input)
            .and_then(|i| unsquash_here(&i))
            .and_then(to_json),
        FINISH_STAGE => parse(input)
            .and_then(|i| finish_stage_here(&i))
            .and_then(to_json),
        INSPECT => parse(input)
            .and_then(|i| inspect_here(&i))
            .and_then(to_json),
        other => Err(TaskFailure::infrastructure(format!(
            "unknown task {other:?}"
        ))),
    };
    result.map_err(|failure| serde_json::to_string(&failure).unwrap_or_default())
}

fn parse<T: for<'de> Deserialize<'de>>(input: &str) -> Result<T, TaskFailure> {
    serde_json::from_str(input).map_err(|e| TaskFailure::infrastructure(e.to_string()))
}

fn to_json<T: Serialize>(output: T) -> Result<String, TaskFailure> {
    serde_json::to_string(&output).map_err(|e| TaskFailure::infrastructure(e.to_string()))
}

/// Runs a task and decodes its output; a task's own failure becomes `failed(message, is_user)`.
async fn call<I: Serialize, O: for<'de> Deserialize<'de>>(
    sandbox: &Sandbox,
    cancel: &CancellationToken,
    name: &str,
    input: &I,
    failed: impl FnOnce(String, bool) -> BuildError,
) -> Result<O, BuildError> {
    let input = serde_json::to_string(input).map_err(|e| BuildError::Io {
        what: "encode the input of",
        path: PathBuf::from(name),
        source: std::io::Error::other(e),
    })?;
    match sandbox.run_task(name, &input, cancel).await {
        Ok(output) => serde_json::from_str(&output).map_err(|e| BuildError::Io {
            what: "decode the output of",
            path: PathBuf::from(name),
            source: std::io::Error::other(e),
        }),
        Err(_) if cancel.is_cancelled() => Err(BuildError::Cancelled),
        Err(SandboxError::Task { message, .. }) => {
            let failure: TaskFailure = serde_json::from_str(&message)
                .unwrap_or_else(|_| TaskFailure::infrastructure(message));
            Err(failed(failure.message, failure.is_user_fault))
        }
        Err(other) => Err(BuildError::Sandbox(other)),
    }
}

// Squash.

/// Input of the squash task.
#[derive(Debug, Serialize, Deserialize)]
struct SquashInput {
    /// The built tree.
    rootfs: PathBuf,
    /// The SquashFS file to write.
    out: PathBuf,
    /// A file holding the [`TreeRecords`] of a rootless layer application, if any.
    records: Option<PathBuf>,
    /// Layer blobs streamed into the image under the tree (the streaming path).
    stream_layers: Option<Vec<PathBuf>>,
    /// [`SquashfsOptions`], field by field.
    codec: String,
    level: Option<u32>,
    block_size: u32,
    threads: usize,
    dedup: bool,
    dedup_memory_bytes: u64,
    mkfs_time: u32,
}

/// What a squash wrote.
#[derive(Debug, Serialize, Deserialize)]
pub struct SquashSummary {
    /// Inodes in the image.
    pub inodes: u32,
    /// Bytes of the image file.
    pub file_size: u64,
    /// Files stored once for several names.
    pub duplicates: u64,
}

/// Writes the SquashFS image of `rootfs` into `out`, in the build's user namespace: the tree
/// as `%post` left it, with what a rootless layer application could only record (`records`)
/// put back, or, on the streaming path, the layer blobs `stream_layers` with the tree on top.
///
/// # Errors
/// A [`BuildError::Image`]-like failure ([`BuildError::Squash`]) naming the file, or a sandbox
/// failure.
pub async fn squash(
    sandbox: &Sandbox,
    cancel: &CancellationToken,
    rootfs: &Path,
    records: Option<&TreeRecords>,
    stream_layers: Option<&[PathBuf]>,
    out: &Path,
    options: &SquashfsOptions,
) -> Result<SquashSummary, BuildError> {
    let records_file = match records {
        Some(records) if !records.is_empty() => {
            let path = out.with_extension("records.json");
            let file = File::create(&path).map_err(io("create", &path))?;
            serde_json::to_writer(std::io::BufWriter::new(file), records).map_err(|e| {
                BuildError::Io {
                    what: "write",
                    path: path.clone(),
                    source: std::io::Error::other(e),
                }
            })?;
            Some(path)
        }
        _ => None,
    };
    let input = SquashInput {
        rootfs: rootfs.to_owned(),
        out: out.to_owned(),
        records: records_file.clone(),
        stream_layers: stream_layers.map(<[PathBuf]>::to_vec),
        codec: options.codec.to_string(),
        level: options.level,
        block_size: options.block_size,
        threads: options.threads,
        dedup: options.dedup,
        dedup_memory_bytes: options.dedup_memory_bytes,
        mkfs_time: options.mkfs_time,
    };
    let result = call(sandbox, cancel, SQUASH, &input, |message, is_user_fault| {
        BuildError::Squash {
            message,
            is_user_fault,
        }
    })
    .await;
    if let Some(path) = records_file {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn image_failure(error: &ImageError) -> TaskFailure {
    TaskFailure {
        message: super::agents::chain(error),
        is_user_fault: error.is_content_fault(),
    }
}

fn squash_here(input: &SquashInput) -> Result<SquashSummary, TaskFailure> {
    let codec: Codec = input
        .codec
        .parse()
        .map_err(|e: ImageError| image_failure(&e))?;
    let options = SquashfsOptions {
        codec,
        level: input.level,
        block_size: input.block_size,
        threads: input.threads,
        dedup: input.dedup,
        dedup_memory_bytes: input.dedup_memory_bytes,
        mkfs_time: input.mkfs_time,
    };
    // Inside the namespace the files show the ids `%post` saw: no map.
    let identity = IdMap::default();
    let disk = read_dir_tree(&input.rootfs, &identity, &identity).map_err(|e| image_failure(&e))?;
    let tree = match &input.stream_layers {
        Some(layers) => {
            let mut tree = Tree::new(Meta::implicit_dir());
            for layer in layers {
                apply_layer(&mut tree, layer).map_err(|e| image_failure(&e))?;
            }
            merge_overlay(&mut tree, Tree::ROOT, &disk, Tree::ROOT)
                .map_err(|e| image_failure(&e))?;
            tree
        }
        None => {
            let mut tree = disk;
            if let Some(path) = &input.records {
                let file = File::open(path)
                    .map_err(|e| TaskFailure::infrastructure(format!("{}: {e}", path.display())))?;
                let records: TreeRecords = serde_json::from_reader(std::io::BufReader::new(file))
                    .map_err(|e| {
                    TaskFailure::infrastructure(format!("{}: {e}", path.display()))
                })?;
                apply_records(&mut tree, &records).map_err(|e| image_failure(&e))?;
            }
            tree
        }
    };
    let file = File::create(&input.out)
        .map_err(|e| TaskFailure::infrastructure(format!("{}: {e}", input.out.display())))?;
    let summary = write_squashfs(&tree, &file, &options).map_err(|e| image_failure(&e))?;
    Ok(SquashSummary {
        inodes: summary.inodes,
        file_size: summary.file_size,
        duplicates: summary.duplicates,
    })
}

/// Lays directory `from_dir` of `overlay` over directory `into_dir` of `tree`, with the base
/// layout's rules: existing directories are kept (with their metadata) and merged, files
/// replace, a symlink replaces only a symlink or nothing.
fn merge_overlay(
    tree: &mut Tree,
    into_dir: NodeId,
    overlay: &Tree,
    from_dir: NodeId,
) -> Result<(), ImageError> {
    let Some(entries) = overlay.entries(from_dir) else {
        return Ok(());
    };
    for (name, &child) in entries {
        let existing = tree.entries(into_dir).and_then(|e| e.get(name).copied());
        let node = &overlay.nodes[child];
        match (existing, &node.kind) {
            (Some(id), NodeKind::Dir(_)) if tree.nodes[id].is_dir() => {
                merge_overlay(tree, id, overlay, child)?;
            }
            (Some(id), NodeKind::Dir(_) | NodeKind::Symlink(_))
                if !matches!(tree.nodes[id].kind, NodeKind::Symlink(_)) => {}
            _ => {
                let id = copy_subtree(tree, overlay, child)?;
                tree.link(into_dir, name.clone(), id)?;
            }
        }
    }
    Ok(())
}

/// Copies node `id` of `from` and everything below it into `tree`; returns the new id.
fn copy_subtree(tree: &mut Tree, from: &Tree, id: NodeId) -> Result<NodeId, ImageError> {
    let node = &from.nodes[id];
    match &node.kind {
        NodeKind::Dir(entries) => {
            let dir = tree.add(Node {
                meta: node.meta.clone(),
                kind: NodeKind::Dir(Default::default()),
            });
            for (name, &child) in entries {
                let copied = copy_subtree(tree, from, child)?;
                tree.link(dir, name.clone(), copied)?;
            }
            Ok(dir)
        }
        _ => Ok(tree.add(node.clone())),
    }
}

// %files from <stage>.

/// Input of the copy task.
#[derive(Debug, Serialize, Deserialize)]
struct CopyInput {
    /// The source stage's rootfs.
    from_root: PathBuf,
    /// The stage being built.
    to_root: PathBuf,
    /// 1-based number of the source stage, for messages.
    from_stage: usize,
    /// `(source glob, destination)` pairs, sources absolute in the source stage; an empty
    /// destination is the source's path.
    entries: Vec<(String, String)>,
}

/// One copy made, for the build log.
#[derive(Debug, Serialize, Deserialize)]
pub struct Copied {
    /// The matched path in the source stage.
    pub source: String,
    /// Where it went.
    pub target: String,
}

/// Copies `%files from <stage>` entries from `from_root` (stage number `from_stage`) into
/// `to_root` (of stage `stage`) as root of the build's user namespace, keeping owners and modes
/// (SingularityCE copies with a tar that preserves ownership, `deffile.md` §8.4). Returns the
/// copies made.
///
/// # Errors
/// [`BuildError::Files`] for a source that matches nothing or cannot be copied.
pub async fn copy_from_stage(
    sandbox: &Sandbox,
    cancel: &CancellationToken,
    (from_root, from_stage): (&Path, usize),
    to_root: &Path,
    entries: &[(String, String)],
    stage: usize,
) -> Result<Vec<Copied>, BuildError> {
    let input = CopyInput {
        from_root: from_root.to_owned(),
        to_root: to_root.to_owned(),
        from_stage,
        entries: entries.to_vec(),
    };
    call(sandbox, cancel, COPY_FROM_STAGE, &input, |message, _| {
        BuildError::Files { stage, message }
    })
    .await
}

fn copy_here(input: &CopyInput) -> Result<Vec<Copied>, TaskFailure> {
    let user = |message: String| TaskFailure {
        message,
        is_user_fault: true,
    };
    let src = Confined::open(&input.from_root)
        .map_err(|e| TaskFailure::infrastructure(format!("{}: {e}", input.from_root.display())))?;
    let dst = Confined::open(&input.to_root)
        .map_err(|e| TaskFailure::infrastructure(format!("{}: {e}", input.to_root.display())))?;
    let mut copied = Vec::new();
    for (source, dest) in &input.entries {
        let pattern = PathBuf::from(source.trim_start_matches('/'));
        let matches = glob(&src, &pattern).map_err(|e| user(format!("{source}: {e}")))?;
        if matches.is_empty() {
            return Err(user(format!(
                "no file of stage {} matches {source}",
                input.from_stage
            )));
        }
        for found in matches {
            let target = if dest.is_empty() {
                format!("/{}", found.display())
            } else {
                dest.clone()
            };
            copy_entry(&src, &found, &dst, &target, false, true)
                .map_err(|e| user(format!("{source}: {e}")))?;
            copied.push(Copied {
                source: String::from_utf8_lossy(found.as_os_str().as_bytes()).into_owned(),
                target,
            });
        }
    }
    Ok(copied)
}

// Removal.

/// Input of the remove task.
#[derive(Debug, Serialize, Deserialize)]
struct RemoveInput {
    /// The tree to remove.
    path: PathBuf,
}

/// Removes the tree at `path`, whatever modes and owners `%post` gave its files (the worker
/// alone may be unable to enter a directory 0700 of another user, or to delete from it).
///
/// # Errors
/// A sandbox failure or the removal's I/O error.
pub async fn remove_tree(
    sandbox: &Sandbox,
    cancel: &CancellationToken,
    path: &Path,
) -> Result<(), BuildError> {
    let input = RemoveInput {
        path: path.to_owned(),
    };
    let path = path.to_owned();
    call(sandbox, cancel, REMOVE, &input, move |message, _| {
        BuildError::Io {
            what: "remove",
            path,
            source: std::io::Error::other(message),
        }
    })
    .await
}

fn remove_here(input: &RemoveInput) -> Result<(), TaskFailure> {
    match std::fs::remove_dir_all(&input.path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TaskFailure::infrastructure(format!(
            "{}: {e}",
            input.path.display()
        ))),
    }
}

// Unpacking a SquashFS image.

/// Input of the unsquash task.
#[derive(Debug, Serialize, Deserialize)]
struct UnsquashInput {
    /// The image.
    squashfs: PathBuf,
    /// The directory to unpack over (existing files are replaced).
    dest: PathBuf,
}

/// Unpacks the SquashFS image `squashfs` over the directory `dest` as root of the build's user
/// namespace ([`super::squashfs_unpack`]): files keep the owners the image gives them, as when
/// SingularityCE unpacks a SIF base. Device nodes, which no user namespace may create, are
/// skipped.
///
/// # Errors
/// [`BuildError::Bootstrap`] (the image's fault unless the worker's disk failed) when unpacking fails.
pub async fn unsquash(
    sandbox: &Sandbox,
    cancel: &CancellationToken,
    squashfs: &Path,
    dest: &Path,
) -> Result<(), BuildError> {
    let input = UnsquashInput {
        squashfs: squashfs.to_owned(),
        dest: dest.to_owned(),
    };
    call(
        sandbox,
        cancel,
        UNSQUASH,
        &input,
        |message, is_user_fault| BuildError::Bootstrap {
            message,
            is_user_fault,
        },
    )
    .await
}

fn unsquash_here(input: &UnsquashInput) -> Result<(), TaskFailure> {
    super::squashfs_unpack::unpack_squashfs(&input.squashfs, &input.dest, true)
        .map(drop)
        .map_err(|error| TaskFailure {
            message: format!(
                "the SquashFS image {} could not be unpacked: {}",
                input.squashfs.display(),
                super::agents::chain(&error)
            ),
            is_user_fault: error.is_image_fault(),
        })
}

// Metadata.

/// Where `%post` may leave `NAME VALUE` label lines (`$SINGULARITY_LABELS`, `deffile.md` §8.3).
pub const BUILD_LABELS: &str = "/.build.labels";

/// Input of the finish-stage task.
#[derive(Debug, Serialize, Deserialize)]
struct FinishStageInput {
    /// The stage's tree.
    rootfs: PathBuf,
    /// 1-based stage number, for messages.
    stage: usize,
    /// The stage's templated definition.
    definition: Definition,
    /// The rest of what the metadata needs; `post_labels` is filled here.
    meta: MetaInput,
    /// Whether `%post` ran, leaving its script and maybe labels behind.
    ran_post: bool,
}

/// After `%post`: removes its script, takes the labels it wrote, and writes the stage's
/// `/.singularity.d` metadata (`deffile.md` §8.6); returns the labels' warnings. Runs as root
/// of the build's user namespace, because `%post` may have given `/`, `/.singularity.d` or
/// its files to another user or made them private, as SingularityCE, running as real root,
/// would not notice.
///
/// # Errors
/// [`BuildError::Metadata`]: the rootfs's fault unless the worker's disk failed.
pub async fn finish_stage(
    sandbox: &Sandbox,
    cancel: &CancellationToken,
    rootfs: &Path,
    stage: usize,
    definition: &Definition,
    meta: MetaInput,
    ran_post: bool,
) -> Result<Vec<String>, BuildError> {
    let input = FinishStageInput {
        rootfs: rootfs.to_owned(),
        stage,
        definition: definition.clone(),
        meta,
        ran_post,
    };
    call(sandbox, cancel, FINISH_STAGE, &input, metadata_error(stage)).await
}

fn metadata_error(stage: usize) -> impl FnOnce(String, bool) -> BuildError {
    move |message, is_user_fault| BuildError::Metadata {
        stage,
        message,
        is_user_fault,
    }
}

/// A failure of a metadata step: the rootfs is at fault unless the disk is.
fn metadata_failure(error: &BuildError) -> TaskFailure {
    let is_disk = matches!(
        error,
        BuildError::Io { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
    );
    TaskFailure {
        message: super::agents::chain(error),
        is_user_fault: !is_disk,
    }
}

fn finish_stage_here(input: &FinishStageInput) -> Result<Vec<String>, TaskFailure> {
    let root = Confined::open(&input.rootfs)
        .map_err(|e| TaskFailure::infrastructure(format!("{}: {e}", input.rootfs.display())))?;
    let mut meta = input.meta.clone();
    if input.ran_post {
        let step = |what: &'static str, path: &'static str| {
            move |source| metadata_failure(&io(what, Path::new(path))(source))
        };
        root.remove_file(Path::new(POST_SCRIPT))
            .map_err(step("remove", POST_SCRIPT))?;
        meta.post_labels = root
            .read(Path::new(BUILD_LABELS))
            .map_err(step("read", BUILD_LABELS))?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let _ = root.remove_file(Path::new(BUILD_LABELS));
    }
    write_metadata(&root, &input.definition, &meta).map_err(|e| metadata_failure(&e))
}

/// Input of the inspect task.
#[derive(Debug, Serialize, Deserialize)]
struct InspectInput {
    /// The image's tree.
    rootfs: PathBuf,
    /// Its SCIF apps.
    apps: Vec<App>,
}

/// `inspect-metadata.json` of the finished tree, read as root of the build's user namespace
/// (the files may be private to another user, see [`finish_stage`]).
///
/// # Errors
/// [`BuildError::Metadata`] when a metadata file cannot be read.
pub async fn inspect(
    sandbox: &Sandbox,
    cancel: &CancellationToken,
    rootfs: &Path,
    stage: usize,
    apps: &[App],
) -> Result<InspectMetadata, BuildError> {
    let input = InspectInput {
        rootfs: rootfs.to_owned(),
        apps: apps.to_vec(),
    };
    call(sandbox, cancel, INSPECT, &input, metadata_error(stage)).await
}

fn inspect_here(input: &InspectInput) -> Result<InspectMetadata, TaskFailure> {
    let root = Confined::open(&input.rootfs)
        .map_err(|e| TaskFailure::infrastructure(format!("{}: {e}", input.rootfs.display())))?;
    inspect_metadata(&root, &input.apps).map_err(|e| metadata_failure(&e))
}
