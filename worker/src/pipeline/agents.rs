//! Bootstrap agents other than `scratch`: `docker`, `library` and `oras`. The SIF agents
//! (`library`, `oras`) unpack the image's SquashFS partition as root of the build's user
//! namespace, so its owners survive.
//!
//! `docker` pulls through [`super::docker`] and applies the layers in record mode: the worker
//! is not root, so owners, modes the worker could not keep, device nodes and xattrs are
//! recorded and put back when the tree is squashed ([`super::records_overlay`]). Then the base
//! `/.singularity.d` is written over the layers and the image config converted
//! (`deffile.md` §9.1): `Env` → `10-docker2singularity.sh`, `Entrypoint`/`Cmd` → runscript,
//! `Labels` → `labels.json`.

use std::path::Path;

use kiln_proto::amqp::LogStream;

use super::build::{BuildEnv, BuildOptions};
use super::cache::{CacheOptions, LayerCache};
use super::confined::Confined;
use super::digest::Digest;
use super::docker::{Platform, PullOptions, apply_layers, docker_reference, pull, pull_sif};
use super::error::{BuildError, io};
use super::layer::{ApplyOptions, LayerApplier, OwnershipMode, TreeRecords};
use super::progress::Progress;
use crate::events::BuildReporter;
use crate::metadata::{base_environment, docker_env_script, oci_runscript, to_go_json_indented};

/// Layer cache size before eviction, bytes.
const CACHE_BYTES: u64 = 20 << 30;

/// What a docker bootstrap leaves for the later steps.
pub struct DockerBase {
    /// The `oci-config.json` SIF object.
    pub oci_config: Vec<u8>,
    /// What layer application could only record.
    pub records: TreeRecords,
    /// The layer blobs in order (kept in the cache), for the streaming path.
    pub layers: Vec<std::path::PathBuf>,
}

/// Pull progress into build events.
struct ReporterProgress<'a>(&'a BuildReporter);

impl Progress for ReporterProgress<'_> {
    fn log(&self, line: &str) {
        self.0.log(LogStream::System, line);
    }

    fn blob_bytes(&self, digest: &Digest, done: u64, total: u64) {
        self.0
            .progress(&format!("pull {digest}"), done, Some(total));
    }
}

/// `error` and its causes on one line, `a: b: c`.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn pull_error(error: super::docker::PullError) -> BuildError {
    BuildError::Bootstrap {
        message: chain(&error),
        is_user_fault: error.is_user_fault(),
    }
}

/// `Bootstrap: docker`: pulls `from` and applies it onto `root`, then writes the base
/// environment and the image config's metadata.
pub async fn docker(
    from: &str,
    header: &std::collections::BTreeMap<String, String>,
    root: &Confined,
    options: &BuildOptions,
    env: &BuildEnv<'_>,
    apply: bool,
) -> Result<DockerBase, BuildError> {
    let reference = docker_reference(
        from,
        header.get("registry").map(String::as_str),
        header.get("namespace").map(String::as_str),
    )
    .map_err(pull_error)?;
    let pull_options = pull_options(options)?;
    let cache = open_cache(options)?;
    let progress = ReporterProgress(env.reporter);
    let image = tokio::select! {
        image = pull(&reference, &pull_options, &cache, &progress) => image.map_err(pull_error)?,
        () = env.cancel.cancelled() => return Err(BuildError::Cancelled),
    };
    let records = if apply {
        // Blocking file work on this runtime thread; the build has nothing else to do meanwhile.
        tokio::task::block_in_place(|| {
            let mut applier =
                LayerApplier::open(root.path(), ApplyOptions::new(OwnershipMode::Record))
                    .map_err(|e| pull_error(super::docker::PullError::Rootfs(e)))?;
            apply_layers(&image, &mut applier, &progress).map_err(pull_error)?;
            Ok::<_, BuildError>(applier.into_records())
        })?
    } else {
        TreeRecords::default()
    };
    write_docker_metadata(root, &image.config)?;
    Ok(DockerBase {
        oci_config: image.oci_config.clone(),
        records,
        layers: image
            .layers
            .iter()
            .map(|l| l.blob.path().to_owned())
            .collect(),
    })
}

/// The base environment and the image config's metadata, over whatever the layers left.
pub fn write_docker_metadata(
    root: &Confined,
    config: &super::docker::ImageConfig,
) -> Result<(), BuildError> {
    root.apply_entries(&base_environment())
        .map_err(io("write the base environment into", root.path()))?;
    let d = Path::new("/.singularity.d");
    let runscript = oci_runscript(
        config.entrypoint.as_deref().unwrap_or_default(),
        config.cmd.as_deref().unwrap_or_default(),
    );
    root.write(&d.join("runscript"), 0o755, runscript.as_bytes())
        .map_err(io("write", &d.join("runscript")))?;
    root.write(
        &d.join("env/10-docker2singularity.sh"),
        0o755,
        docker_env_script(&config.env).as_bytes(),
    )
    .map_err(io("write", &d.join("env/10-docker2singularity.sh")))?;
    if !config.labels.is_empty() {
        root.write(
            &d.join("labels.json"),
            0o644,
            &to_go_json_indented(&config.labels, "\t"),
        )
        .map_err(io("write", &d.join("labels.json")))?;
    }
    Ok(())
}

/// Largest SIF a `library` bootstrap downloads, bytes.
const MAX_LIBRARY_SIF_BYTES: u64 = 64 << 30;

/// `Bootstrap: library`: looks `from` up in the library API at `url` (the `Library:` header,
/// else the build's library URL; a host in the reference wins, over https) for the build's
/// architecture, downloads the image file, checks it against the image's `hash`, and unpacks it
/// onto `root` like [`oras`] (`library-api.md` §6.2, `deffile.md` §9.2). Returns the SIF's
/// `oci-config.json` object, if any. Requests carry the build's library credential when it is
/// for this library (so the owner's private images can be a base), and are anonymous otherwise.
pub async fn library(
    from: &str,
    url: Option<&str>,
    header: &std::collections::BTreeMap<String, String>,
    root: &Confined,
    options: &BuildOptions,
    env: &BuildEnv<'_>,
) -> Result<Option<Vec<u8>>, BuildError> {
    refuse_fingerprints(header)?;
    let reference =
        super::library::LibraryRef::parse(from).map_err(|message| BuildError::Bootstrap {
            message,
            is_user_fault: true,
        })?;
    let base = match (&reference.host, url) {
        (Some(host), _) => format!("https://{host}"),
        (None, Some(url)) => url.to_owned(),
        (None, None) => {
            return Err(BuildError::Refused(format!(
                "Bootstrap: library ({from}): no library URL: set the Library: header or the \
                 build's library"
            )));
        }
    };
    let cache = open_cache(options)?;
    let client = super::library::LibraryClient::new(&base)
        .map_err(library_error)?
        .with_credential(options.library_credential.as_ref());
    let fetched = async {
        let image = client
            .image(&reference, &options.arch)
            .await
            .map_err(library_error)?;
        env.reporter.info(format!(
            "library image {} ({} bytes, {})",
            reference, image.size, image.hash
        ));
        client
            .download(
                &reference,
                &options.arch,
                &image,
                MAX_LIBRARY_SIF_BYTES,
                &cache,
            )
            .await
            .map_err(library_error)
    };
    let blob = tokio::select! {
        blob = fetched => blob?,
        () = env.cancel.cancelled() => return Err(BuildError::Cancelled),
    };
    unpack_sif(blob.path(), &reference.to_string(), root, env).await
}

fn library_error(error: super::library::LibraryError) -> BuildError {
    BuildError::Bootstrap {
        is_user_fault: error.is_user_fault(),
        message: chain(&error),
    }
}

/// `Bootstrap: oras`: pulls the SIF stored as an OCI artifact at `from`
/// (`registry/namespace/image:tag`, `oras://` optional) and unpacks its root filesystem onto
/// `root`, whose base `/.singularity.d` the caller wrote first, so the image's own files win
/// (`deffile.md` §9.2). Returns the SIF's `oci-config.json` object, if it has one.
pub async fn oras(
    from: &str,
    header: &std::collections::BTreeMap<String, String>,
    root: &Confined,
    options: &BuildOptions,
    env: &BuildEnv<'_>,
) -> Result<Option<Vec<u8>>, BuildError> {
    refuse_fingerprints(header)?;
    let from = from.trim();
    let from = from
        .strip_prefix("oras:")
        .unwrap_or(from)
        .trim_start_matches("//");
    let reference = docker_reference(from, None, None).map_err(pull_error)?;
    let pull_options = pull_options(options)?;
    let cache = open_cache(options)?;
    let progress = ReporterProgress(env.reporter);
    let sif = tokio::select! {
        sif = pull_sif(&reference, &pull_options, &cache, &progress) => sif.map_err(pull_error)?,
        () = env.cancel.cancelled() => return Err(BuildError::Cancelled),
    };
    unpack_sif(sif.blob.path(), &sif.reference, root, env).await
}

/// A `Fingerprints:` header asks for signatures this builder cannot check: refused rather than
/// ignored. Without it SingularityCE only warns, and so does Kiln.
fn refuse_fingerprints(
    header: &std::collections::BTreeMap<String, String>,
) -> Result<(), BuildError> {
    if header
        .get("fingerprints")
        .is_some_and(|f| !f.trim().is_empty())
    {
        return Err(BuildError::Refused(
            "Fingerprints: this builder cannot verify SIF signatures; remove the header to \
             build from the unverified image"
                .into(),
        ));
    }
    Ok(())
}

/// Registry pull settings of the build: its architecture and plain-HTTP registries.
fn pull_options(options: &BuildOptions) -> Result<PullOptions, BuildError> {
    let platform =
        Platform::from_arch(&options.arch).map_err(|e| BuildError::Refused(e.to_string()))?;
    let mut pull_options = PullOptions::new(platform);
    pull_options.insecure_registries = options.insecure_registries.clone();
    Ok(pull_options)
}

fn open_cache(options: &BuildOptions) -> Result<LayerCache, BuildError> {
    LayerCache::open(&CacheOptions::new(&options.cache_dir, CACHE_BYTES)).map_err(|e| {
        BuildError::Io {
            what: "open the layer cache",
            path: options.cache_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        }
    })
}

/// Unpacks the primary partition of the SIF at `sif` (named `name` in messages) onto `root`, as
/// root of the build's user namespace so that owners survive. Returns its `oci-config.json`.
async fn unpack_sif(
    sif: &Path,
    name: &str,
    root: &Confined,
    env: &BuildEnv<'_>,
) -> Result<Option<Vec<u8>>, BuildError> {
    env.reporter.log(
        LogStream::System,
        "WARNING: Bootstrap image could not be verified, but build will continue.",
    );
    let bad = |message: String| BuildError::Bootstrap {
        message: format!("{name}: {message}"),
        is_user_fault: true,
    };
    let stage_dir = root.path().parent().unwrap_or(root.path());
    let squashfs = stage_dir.join("base.squashfs");
    let oci_config = tokio::task::block_in_place(|| -> Result<_, BuildError> {
        use kiln_proto::sif::{DataType, FsType, ObjectMetadata, SifReader};
        let file = std::fs::File::open(sif).map_err(io("open", sif))?;
        let mut reader = SifReader::new(file).map_err(|e| bad(format!("not a SIF image ({e})")))?;
        let Some(partition) = reader.primary_partition().cloned() else {
            return Err(bad("the SIF has no primary system partition".into()));
        };
        if let ObjectMetadata::Partition { fs_type, .. } = partition.metadata()
            && fs_type != FsType::SQUASHFS
        {
            return Err(bad(format!(
                "the system partition is {fs_type}, not SquashFS"
            )));
        }
        let mut out = std::fs::File::create(&squashfs).map_err(io("create", &squashfs))?;
        reader
            .copy_object(partition.id, &mut out)
            .map_err(|e| bad(format!("failed to read the system partition ({e})")))?;
        let config = reader
            .object_by_name(DataType::GENERIC_JSON, b"oci-config.json")
            .map(|d| d.id);
        Ok(match config {
            Some(id) => Some(
                reader
                    .read_object(id, 1 << 20)
                    .map_err(|e| bad(format!("failed to read oci-config.json ({e})")))?,
            ),
            None => None,
        })
    })?;
    let result = super::tasks::unsquash(env.sandbox, env.cancel, &squashfs, root.path()).await;
    let _ = std::fs::remove_file(&squashfs);
    result?;
    Ok(oci_config)
}
