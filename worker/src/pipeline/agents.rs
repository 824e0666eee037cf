//! Bootstrap agents other than `scratch`: `docker`, `library` and `oras`.
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
use super::docker::{Platform, PullOptions, apply_layers, docker_reference, pull};
use super::error::{BuildError, io};
use super::layer::{ApplyOptions, LayerApplier, OwnershipMode, TreeRecords};
use super::progress::Progress;
use crate::events::BuildReporter;
use crate::metadata::{base_environment, docker_env_script, oci_runscript, to_go_json_indented};

/// Layer cache size before eviction, bytes.
const CACHE_BYTES: u64 = 20 << 30;

/// What a docker bootstrap leaves for the later steps.
pub struct DockerBase {
    /// The config blob, stored as `oci-config.json`.
    pub config_json: Vec<u8>,
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

fn pull_error(error: super::docker::PullError) -> BuildError {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    BuildError::Bootstrap {
        message,
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
    let platform =
        Platform::from_arch(&options.arch).map_err(|e| BuildError::Refused(e.to_string()))?;
    let mut pull_options = PullOptions::new(platform);
    pull_options.insecure_registries = options.insecure_registries.clone();
    let cache =
        LayerCache::open(&CacheOptions::new(&options.cache_dir, CACHE_BYTES)).map_err(|e| {
            BuildError::Io {
                what: "open the layer cache",
                path: options.cache_dir.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
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
        config_json: image.config_json.clone(),
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

/// `Bootstrap: library`: not available until Kiln has a Library API server to test against.
pub async fn library(
    from: &str,
    url: Option<&str>,
    _root: &Confined,
    _options: &BuildOptions,
    _env: &BuildEnv<'_>,
) -> Result<(), BuildError> {
    Err(BuildError::Bootstrap {
        message: format!(
            "Bootstrap: library ({from} from {}): this worker has no library client yet \
             (issue #8); push the base image to a registry and use `Bootstrap: docker`",
            url.unwrap_or("the build's library")
        ),
        is_user_fault: true,
    })
}

/// `Bootstrap: oras`: not available yet.
pub async fn oras(
    from: &str,
    _root: &Confined,
    _options: &BuildOptions,
    _env: &BuildEnv<'_>,
) -> Result<(), BuildError> {
    Err(BuildError::Bootstrap {
        message: format!(
            "Bootstrap: oras ({from}): this worker cannot pull SIF artifacts yet; \
             use `Bootstrap: docker`"
        ),
        is_user_fault: true,
    })
}
