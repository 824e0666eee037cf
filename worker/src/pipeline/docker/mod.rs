//! The `docker` bootstrap agent: pull an image from an OCI registry (distribution spec v2) into
//! the layer cache, then apply its layers onto the build's rootfs.
//!
//! Registry traffic goes through `oci-client`, which does the `/v2/` ping, the anonymous or
//! Basic-credentialed bearer-token exchange (or plain Basic auth), manifest negotiation for the
//! Docker and OCI media types, and blob streaming with digest verification. Around it this
//! module adds what a build farm needs and the client leaves to its caller (deffile spec 9.1):
//!
//! - reference construction from `From:` plus the `Registry:` and `Namespace:` header keys;
//! - the platform choice in an image index (`--arch`), with an error listing what exists;
//! - retries with backoff on transient failures (connection errors, timeouts, 5xx, 429);
//! - bounds on config and layer sizes before bytes are accepted, and layers streamed to the
//!   cache on disk, never held in memory; descriptor `urls` are dropped, so a hostile manifest
//!   cannot send the worker to fetch arbitrary addresses;
//! - plain HTTP only for loopback registries and those configured as insecure.
//!
//! The client reads a whole manifest into memory without a size limit; registries are
//! reached only for the image a build names, and manifests are small, so this is accepted.

mod config;
mod platform;

use std::error::Error as _;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError as OciDigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

pub use config::ImageConfig;
pub use platform::{Platform, PlatformError};

use super::cache::{BlobLease, BlobWriter, CacheError, LayerCache};
use super::digest::{Digest, DigestError, Hasher};
use super::layer::{ApplyOptions, LayerApplier, LayerError, TreeRecords};
use super::progress::Progress;

/// Layer media types a rootfs can be built from (Docker v2 schema 2 and OCI, compressed or
/// not, distributable or not).
const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// Config media types of container images.
const CONFIG_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Downloads are handed to the disk in pieces of this size (bytes).
const WRITE_CHUNK: usize = 1 << 20;

/// Registry credentials for HTTP Basic auth or the token exchange.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// How often and how patiently transient registry failures are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries per request, the first included. Default 4.
    pub attempts: u32,
    /// Wait before the first retry; doubled after each. Default 500 ms.
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            first_delay: Duration::from_millis(500),
        }
    }
}

/// Everything a pull needs besides the reference.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to pick from an image index, and to check the config against.
    pub platform: Platform,
    /// Credentials, or `None` for anonymous access.
    pub credentials: Option<Credentials>,
    /// Registries (`host[:port]`, as in the reference) reached over plain HTTP. Loopback
    /// registries always are, as in SingularityCE.
    pub insecure_registries: Vec<String>,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Largest accepted image config (bytes). Default 8 MiB.
    pub max_config_bytes: u64,
    /// Largest accepted layer blob, compressed (bytes). Default 16 GiB.
    pub max_layer_bytes: u64,
    /// Layers downloaded at once. Default 3.
    pub concurrent_downloads: usize,
    /// TCP connect timeout. Default 30 s.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response. Default 60 s.
    pub read_timeout: Duration,
}

impl PullOptions {
    /// Defaults for `platform`.
    pub fn new(platform: Platform) -> Self {
        Self {
            platform,
            credentials: None,
            insecure_registries: Vec::new(),
            retry: RetryPolicy::default(),
            max_config_bytes: 8 << 20,
            max_layer_bytes: 16 << 30,
            concurrent_downloads: 3,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Ways a docker bootstrap fails. User faults (bad reference, missing image, no such platform,
/// refused credentials, bad content) and infrastructure faults (registry unreachable after
/// retries, cache I/O) are separate variants; see [`PullError::is_user_fault`].
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// `From:` (with `Registry:`/`Namespace:`) is not a valid image reference.
    #[error("invalid docker reference {reference:?}")]
    InvalidReference {
        /// The reference as assembled.
        reference: String,
        /// Cause.
        #[source]
        source: oci_client::ParseError,
    },
    /// The registry client could not be set up (TLS roots, proxy settings).
    #[error("failed to set up the registry client")]
    Client(#[source] OciDistributionError),
    /// The registry has no such repository or tag.
    #[error("image {reference} not found in its registry")]
    NotFound {
        /// The reference.
        reference: String,
        /// The registry's answer.
        #[source]
        source: OciDistributionError,
    },
    /// The registry refused the credentials, or wants some and none were given.
    #[error("registry refused access to {reference}: check the credentials")]
    Unauthorized {
        /// The reference.
        reference: String,
        /// The registry's answer.
        #[source]
        source: OciDistributionError,
    },
    /// Fetching the manifest failed (after retries, when transient).
    #[error("failed to fetch the manifest of {reference} (after {attempts} attempts)")]
    Manifest {
        /// The reference.
        reference: String,
        /// Tries made.
        attempts: u32,
        /// The last failure.
        #[source]
        source: OciDistributionError,
    },
    /// The image index has no entry for the requested platform.
    #[error("image {reference} has no {wanted} variant (it has: {available})")]
    NoMatchingPlatform {
        /// The reference.
        reference: String,
        /// The requested platform.
        wanted: String,
        /// Platforms the index lists, comma-separated.
        available: String,
    },
    /// The image config declares another platform than requested (SingularityCE's wording).
    #[error("image ({found}) does not satisfy required platform ({wanted})")]
    PlatformMismatch {
        /// What the config declares.
        found: String,
        /// The requested platform.
        wanted: String,
    },
    /// An index entry pointed at another index.
    #[error("image {reference}: index entry {digest} is not an image manifest")]
    NestedIndex {
        /// The reference.
        reference: String,
        /// The entry's digest.
        digest: String,
    },
    /// The config blob is not a container image config.
    #[error("{reference} is not a container image (config media type {media_type})")]
    NotAnImage {
        /// The reference.
        reference: String,
        /// The config's media type.
        media_type: String,
    },
    /// An `oras` reference names something else than a SIF artifact.
    #[error(
        "{reference} is not a SIF stored as an OCI artifact (expected config {SIF_CONFIG_MEDIA_TYPE} \
         and a {SIF_LAYER_MEDIA_TYPE} layer, found {found})"
    )]
    NotASif {
        /// The reference.
        reference: String,
        /// The media types found.
        found: String,
    },
    /// The manifest lists no layers (SingularityCE's wording).
    #[error("no extractable OCI/Docker tar layers found in {reference}")]
    NoLayers {
        /// The reference.
        reference: String,
    },
    /// A layer has a media type that is not a tar changeset.
    #[error("layer {digest} has unsupported media type {media_type}")]
    UnsupportedLayer {
        /// The layer's digest.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// A descriptor carries a malformed digest.
    #[error("manifest of {reference} has a malformed digest")]
    BadDigest {
        /// The reference.
        reference: String,
        /// Cause.
        #[source]
        source: DigestError,
    },
    /// A descriptor announces a negative size or one above the configured bound.
    #[error("blob {digest} announces {size} bytes, over the bound of {limit}")]
    BlobTooLarge {
        /// The blob's digest.
        digest: Digest,
        /// The announced size.
        size: i64,
        /// The bound.
        limit: u64,
    },
    /// The registry sent bytes that do not hash to the blob's digest.
    #[error("blob {digest} from the registry does not match its digest")]
    DigestMismatch {
        /// The blob's digest.
        digest: Digest,
    },
    /// Downloading a blob failed (after retries, when transient).
    #[error("failed to download blob {digest} (after {attempts} attempts)")]
    Blob {
        /// The blob's digest.
        digest: Digest,
        /// Tries made.
        attempts: u32,
        /// The last failure.
        #[source]
        source: FetchError,
    },
    /// The config blob is not valid JSON of the expected shape.
    #[error("invalid image config {digest}")]
    Config {
        /// The config's digest.
        digest: Digest,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The layer cache failed.
    #[error("layer cache failed for blob {digest}")]
    Cache {
        /// The blob's digest.
        digest: Digest,
        /// Cause.
        #[source]
        source: CacheError,
    },
    /// The rootfs could not be opened for layer application.
    #[error("failed to prepare the rootfs")]
    Rootfs(#[source] LayerError),
    /// Opening a cached layer failed.
    #[error("failed to open cached layer {digest}")]
    ReadLayer {
        /// The layer's digest.
        digest: Digest,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Applying a layer failed.
    #[error("failed to apply layer {digest}")]
    Apply {
        /// The layer's digest.
        digest: Digest,
        /// Cause.
        #[source]
        source: LayerError,
    },
    /// The blocking layer-application task panicked or was cancelled.
    #[error("layer application task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
}

impl PullError {
    /// Whether the build's input is at fault (fail the build) rather than the infrastructure
    /// (requeue the job).
    pub fn is_user_fault(&self) -> bool {
        match self {
            Self::Client(_)
            | Self::Cache { .. }
            | Self::Rootfs(_)
            | Self::ReadLayer { .. }
            | Self::Task(_) => false,
            Self::Manifest { source, .. } => !is_transient(source),
            Self::Blob { source, .. } => !source.is_transient(),
            Self::Apply { source, .. } => {
                !matches!(source, LayerError::Fs { .. } | LayerError::Write { .. })
            }
            _ => true,
        }
    }
}

/// Shorthand for results of this module.
pub type Result<T> = std::result::Result<T, PullError>;

/// Why one attempt at a blob download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The registry request failed.
    #[error("registry request failed")]
    Registry(#[source] OciDistributionError),
    /// The response body broke off.
    #[error("download interrupted")]
    Stream(#[source] io::Error),
    /// The bytes could not be stored.
    #[error("failed to store the download")]
    Cache(#[source] CacheError),
    /// The bytes do not hash to the digest.
    #[error("content does not match its digest")]
    Digest,
    /// More bytes came than the descriptor announced.
    #[error("registry sent more bytes than announced")]
    Oversized,
    /// Writing the download to the cache's temp file failed.
    #[error("failed to write the download to the cache")]
    Write(#[source] io::Error),
}

impl FetchError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Registry(e) => is_transient(e),
            Self::Stream(_) => true,
            Self::Cache(_) | Self::Digest | Self::Oversized | Self::Write(_) => false,
        }
    }
}

/// Builds the reference of a `docker` bootstrap: `From:`, prefixed by `Namespace:` and then
/// `Registry:` when given (deffile spec 9.1), normalised as Docker does (`docker.io`,
/// `library/`, `latest`).
///
/// # Errors
/// [`PullError::InvalidReference`] when the result does not parse.
pub fn docker_reference(
    from: &str,
    registry: Option<&str>,
    namespace: Option<&str>,
) -> Result<Reference> {
    let mut reference = from.trim().trim_start_matches("docker://").to_owned();
    if let Some(ns) = namespace.map(str::trim).filter(|s| !s.is_empty()) {
        reference = format!("{}/{reference}", ns.trim_end_matches('/'));
    }
    if let Some(reg) = registry.map(str::trim).filter(|s| !s.is_empty()) {
        reference = format!("{}/{reference}", reg.trim_end_matches('/'));
    }
    reference
        .parse()
        .map_err(|source| PullError::InvalidReference { reference, source })
}

/// One layer, verified and held in the cache.
#[derive(Debug)]
pub struct PulledLayer {
    /// The manifest's media type for it.
    pub media_type: String,
    /// The cached blob (kept from eviction while this lives).
    pub blob: BlobLease,
}

/// A pulled image: what the later steps (metadata, image writer) need.
#[derive(Debug)]
pub struct PulledImage {
    /// The reference pulled, normalised.
    pub reference: String,
    /// Digest of the image manifest used.
    pub manifest_digest: String,
    /// Digest of the index the manifest was chosen from, if the reference named an index.
    pub index_digest: Option<String>,
    /// Digest of the config blob.
    pub config_digest: Digest,
    /// The config blob as served (for the `oci-config.json` SIF object).
    pub config_json: Vec<u8>,
    /// The config fields the build uses.
    pub config: ImageConfig,
    /// The `oci-config.json` SIF object: the config's `config` object as SingularityCE
    /// re-encodes it ([`config::oci_config_object`]).
    pub oci_config: Vec<u8>,
    /// Layers in application order.
    pub layers: Vec<PulledLayer>,
}

/// A finished docker bootstrap: the image and what layer application could not put on disk.
#[derive(Debug)]
pub struct Bootstrap {
    /// The image.
    pub image: PulledImage,
    /// Device nodes, xattrs, and (in record mode) owners and modes.
    pub records: TreeRecords,
}

/// Pulls `reference` and applies its layers onto `rootfs` (an existing directory).
///
/// # Errors
/// Any [`PullError`]; on error the rootfs may be partly written and should be discarded.
pub async fn bootstrap(
    reference: &Reference,
    options: &PullOptions,
    cache: &LayerCache,
    rootfs: PathBuf,
    apply: ApplyOptions,
    progress: Arc<dyn Progress>,
) -> Result<Bootstrap> {
    let image = pull(reference, options, cache, progress.as_ref()).await?;
    tokio::task::spawn_blocking(move || {
        let mut applier = LayerApplier::open(&rootfs, apply).map_err(PullError::Rootfs)?;
        apply_layers(&image, &mut applier, progress.as_ref())?;
        Ok(Bootstrap {
            image,
            records: applier.into_records(),
        })
    })
    .await
    .map_err(PullError::Task)?
}

/// Applies a pulled image's layers in order. Blocking: call it from a blocking thread, or from
/// the sandbox's helper process inside the user namespace.
///
/// # Errors
/// [`PullError::ReadLayer`] or [`PullError::Apply`], naming the layer.
pub fn apply_layers(
    image: &PulledImage,
    applier: &mut LayerApplier,
    progress: &dyn Progress,
) -> Result<()> {
    for (i, layer) in image.layers.iter().enumerate() {
        let digest = layer.blob.digest().clone();
        let file = layer.blob.open().map_err(|source| PullError::ReadLayer {
            digest: digest.clone(),
            source,
        })?;
        let stats = applier
            .apply_blob(file)
            .map_err(|source| PullError::Apply {
                digest: digest.clone(),
                source,
            })?;
        progress.log(&format!(
            "applied layer {}/{} {digest}: {} entries, {} bytes",
            i + 1,
            image.layers.len(),
            stats.entries,
            stats.bytes
        ));
        if stats.contained > 0 {
            progress.log(&format!(
                "warning: layer {digest} has {} entries named above the rootfs with `..`; kept inside the rootfs",
                stats.contained
            ));
        }
    }
    Ok(())
}

/// Pulls manifest, config and layers of `reference` into the cache.
///
/// # Errors
/// Any [`PullError`] but the layer-application ones.
pub async fn pull(
    reference: &Reference,
    options: &PullOptions,
    cache: &LayerCache,
    progress: &dyn Progress,
) -> Result<PulledImage> {
    let name = reference.whole();
    let (session, auth) = Session::open(reference, options, progress)?;
    progress.log(&format!("pulling {name} for {}", options.platform));

    let (manifest, manifest_digest, index_digest) = fetch_image_manifest(&session, &auth).await?;
    if !CONFIG_MEDIA_TYPES.contains(&manifest.config.media_type.as_str()) {
        return Err(PullError::NotAnImage {
            reference: name,
            media_type: manifest.config.media_type.clone(),
        });
    }
    if manifest.layers.is_empty() {
        return Err(PullError::NoLayers { reference: name });
    }
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for layer in &manifest.layers {
        if !LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()) {
            return Err(PullError::UnsupportedLayer {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
            });
        }
        layers.push(BlobRef::new(&name, layer, options.max_layer_bytes)?);
    }

    let config_blob = BlobRef::new(&name, &manifest.config, options.max_config_bytes)?;
    let config_json = fetch_config(&session, &config_blob).await?;
    let config_digest = config_blob.digest;
    let config_error = |source| PullError::Config {
        digest: config_digest.clone(),
        source,
    };
    let config = ImageConfig::parse(&config_json).map_err(config_error)?;
    let oci_config = config::oci_config_object(&config_json).map_err(config_error)?;
    check_config_platform(&config, &options.platform, progress)?;

    let session = &session;
    let pulled: Vec<PulledLayer> =
        futures::stream::iter(layers.into_iter().map(|layer| async move {
            let blob = fetch_layer(session, &layer, cache).await?;
            Ok::<_, PullError>(PulledLayer {
                media_type: layer.desc.media_type,
                blob,
            })
        }))
        .buffered(options.concurrent_downloads.max(1))
        .try_collect()
        .await?;

    Ok(PulledImage {
        reference: name,
        manifest_digest,
        index_digest,
        config_digest,
        config_json,
        config,
        oci_config,
        layers: pulled,
    })
}

/// Config media type of a SIF pushed with `singularity push oras://` (sylabs/singularity
/// `internal/pkg/client/oras`).
pub const SIF_CONFIG_MEDIA_TYPE: &str = "application/vnd.sylabs.sif.config.v1+json";
/// Layer media type of that SIF: the whole image file.
pub const SIF_LAYER_MEDIA_TYPE: &str = "application/vnd.sylabs.sif.layer.v1.sif";

/// A SIF pulled from an OCI registry (`Bootstrap: oras`), verified and held in the cache.
#[derive(Debug)]
pub struct PulledSif {
    /// The reference pulled, normalised.
    pub reference: String,
    /// Digest of the artifact manifest.
    pub manifest_digest: String,
    /// The SIF file.
    pub blob: BlobLease,
}

/// Pulls the SIF artifact `reference` into the cache: a manifest whose config has
/// [`SIF_CONFIG_MEDIA_TYPE`] and whose one layer, [`SIF_LAYER_MEDIA_TYPE`], is the image. The
/// registry client, retries, size bound (`max_layer_bytes`) and digest checks are the docker
/// pull's.
///
/// # Errors
/// [`PullError::NotASif`] for anything else, or a pull failure.
pub async fn pull_sif(
    reference: &Reference,
    options: &PullOptions,
    cache: &LayerCache,
    progress: &dyn Progress,
) -> Result<PulledSif> {
    let name = reference.whole();
    let (session, auth) = Session::open(reference, options, progress)?;
    progress.log(&format!("pulling SIF artifact {name}"));
    let (manifest, manifest_digest, _) = fetch_image_manifest(&session, &auth).await?;
    let layers: Vec<&OciDescriptor> = manifest
        .layers
        .iter()
        .filter(|l| l.media_type == SIF_LAYER_MEDIA_TYPE)
        .collect();
    let [layer] = layers[..] else {
        let mut found = vec![format!("config {}", manifest.config.media_type)];
        found.extend(
            manifest
                .layers
                .iter()
                .map(|l| format!("layer {}", l.media_type)),
        );
        return Err(PullError::NotASif {
            reference: name,
            found: found.join(", "),
        });
    };
    if manifest.config.media_type != SIF_CONFIG_MEDIA_TYPE {
        return Err(PullError::NotASif {
            reference: name,
            found: format!("config {}", manifest.config.media_type),
        });
    }
    let blob = BlobRef::new(&name, layer, options.max_layer_bytes)?;
    let blob = fetch_layer(&session, &blob, cache).await?;
    Ok(PulledSif {
        reference: name,
        manifest_digest,
        blob,
    })
}

fn registry_client(reference: &Reference, options: &PullOptions) -> Result<Client> {
    let registry = reference.resolve_registry().to_owned();
    let protocol = if is_loopback(&registry) || options.insecure_registries.contains(&registry) {
        ClientProtocol::HttpsExcept(vec![registry])
    } else {
        ClientProtocol::Https
    };
    let config = ClientConfig {
        protocol,
        connect_timeout: Some(options.connect_timeout),
        read_timeout: Some(options.read_timeout),
        // The index is resolved here, with the requested platform and a useful error.
        platform_resolver: None,
        ..ClientConfig::default()
    };
    Client::try_from(config).map_err(PullError::Client)
}

/// Whether `host[:port]` names the local machine.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Fetches the manifest, resolving an index to the entry for the requested platform.
async fn fetch_image_manifest(
    session: &Session<'_>,
    auth: &RegistryAuth,
) -> Result<(OciImageManifest, String, Option<String>)> {
    let (client, reference, options, progress) = (
        &session.client,
        session.reference,
        session.options,
        session.progress,
    );
    let name = reference.whole();
    let name = name.as_str();
    let fetch = |r: Reference| async move {
        retry(&options.retry, progress, "manifest request", || {
            client.pull_manifest(&r, auth)
        })
        .await
        .map_err(|(source, attempts)| manifest_error(name, source, attempts))
    };
    let (manifest, digest) = fetch(reference.clone()).await?;
    let index = match manifest {
        OciManifest::Image(m) => return Ok((m, digest, None)),
        OciManifest::ImageIndex(index) => index,
    };
    let Some(entry) = options.platform.choose(&index.manifests) else {
        let available: Vec<String> = index.manifests.iter().map(platform::describe).collect();
        return Err(PullError::NoMatchingPlatform {
            reference: reference.whole(),
            wanted: options.platform.to_string(),
            available: available.join(", "),
        });
    };
    progress.log(&format!(
        "chose {} ({}) from the image index",
        entry.digest,
        platform::describe(entry)
    ));
    let entry_digest = entry.digest.clone();
    match fetch(reference.clone_with_digest(entry_digest.clone())).await? {
        (OciManifest::Image(m), d) => Ok((m, d, Some(digest))),
        (OciManifest::ImageIndex(_), _) => Err(PullError::NestedIndex {
            reference: reference.whole(),
            digest: entry_digest,
        }),
    }
}

fn manifest_error(reference: &str, source: OciDistributionError, attempts: u32) -> PullError {
    let reference = reference.to_owned();
    let codes: Vec<&OciErrorCode> = match &source {
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().map(|e| &e.code).collect()
        }
        _ => Vec::new(),
    };
    let not_found = codes.iter().any(|c| {
        matches!(
            c,
            OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound
        )
    }) || matches!(source, OciDistributionError::ServerError { code: 404, .. })
        || matches!(source, OciDistributionError::ImageManifestNotFoundError(_));
    let refused = codes
        .iter()
        .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
        || matches!(
            source,
            OciDistributionError::UnauthorizedError { .. }
                | OciDistributionError::AuthenticationFailure(_)
                | OciDistributionError::ServerError {
                    code: 401 | 403,
                    ..
                }
        );
    if not_found {
        PullError::NotFound { reference, source }
    } else if refused {
        PullError::Unauthorized { reference, source }
    } else {
        PullError::Manifest {
            reference,
            attempts,
            source,
        }
    }
}

/// Whether a registry error is worth another try.
fn is_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => {
            r.is_connect() || r.is_timeout() || r.is_request() || r.is_body() || r.is_decode()
        }
        OciDistributionError::ServerError { code, .. } => {
            *code >= 500 || *code == 429 || *code == 408
        }
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// Failures a retry loop can classify.
trait Transient {
    fn is_transient(&self) -> bool;
}

impl Transient for OciDistributionError {
    fn is_transient(&self) -> bool {
        is_transient(self)
    }
}

impl Transient for FetchError {
    fn is_transient(&self) -> bool {
        FetchError::is_transient(self)
    }
}

/// Runs `op` until it succeeds, fails for good, or runs out of attempts; returns the last
/// error with the number of attempts made.
async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    progress: &dyn Progress,
    what: &str,
    mut op: F,
) -> std::result::Result<T, (E, u32)>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, E>>,
{
    let attempts = policy.attempts.max(1);
    let mut delay = policy.first_delay;
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < attempts && e.is_transient() => {
                progress.log(&format!(
                    "{what} failed ({e}); retry {attempt} of {} in {delay:?}",
                    attempts - 1
                ));
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
                attempt += 1;
            }
            Err(e) => return Err((e, attempt)),
        }
    }
}

/// What every request of one pull needs.
struct Session<'a> {
    client: Client,
    reference: &'a Reference,
    options: &'a PullOptions,
    progress: &'a dyn Progress,
}

impl<'a> Session<'a> {
    /// The registry client for `reference` and the credentials to present.
    fn open(
        reference: &'a Reference,
        options: &'a PullOptions,
        progress: &'a dyn Progress,
    ) -> Result<(Self, RegistryAuth)> {
        let session = Session {
            client: registry_client(reference, options)?,
            reference,
            options,
            progress,
        };
        let auth = match &options.credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok((session, auth))
    }
}

/// A blob to fetch, checked before any byte of it is accepted.
struct BlobRef {
    /// The descriptor without `urls`: oci-client would fetch from them when the registry
    /// fails, letting a manifest point the worker at any address (SSRF).
    desc: OciDescriptor,
    /// The strictly parsed digest (it becomes a cache file name).
    digest: Digest,
    /// The announced size, within the bound.
    size: u64,
}

impl BlobRef {
    fn new(reference: &str, desc: &OciDescriptor, max_bytes: u64) -> Result<Self> {
        let digest: Digest = desc.digest.parse().map_err(|source| PullError::BadDigest {
            reference: reference.to_owned(),
            source,
        })?;
        let size = match u64::try_from(desc.size) {
            Ok(s) if s <= max_bytes => s,
            _ => {
                return Err(PullError::BlobTooLarge {
                    digest,
                    size: desc.size,
                    limit: max_bytes,
                });
            }
        };
        Ok(Self {
            desc: OciDescriptor {
                urls: None,
                ..desc.clone()
            },
            digest,
            size,
        })
    }
}

/// Fetches the config blob into memory (bounded by `size`) and verifies it.
async fn fetch_config(session: &Session<'_>, blob: &BlobRef) -> Result<Vec<u8>> {
    let BlobRef { desc, digest, size } = blob;
    let size = *size;
    let attempt = || async move {
        let mut stream = session
            .client
            .pull_blob_stream(session.reference, desc)
            .await
            .map_err(FetchError::Registry)?;
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let mut hasher = Hasher::new(digest.algorithm());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(stream_error)?;
            if out.len() as u64 + chunk.len() as u64 > size {
                return Err(FetchError::Oversized);
            }
            hasher.update(&chunk);
            out.extend_from_slice(&chunk);
        }
        if hasher.finish() != *digest {
            return Err(FetchError::Digest);
        }
        Ok(out)
    };
    retry(
        &session.options.retry,
        session.progress,
        "config download",
        attempt,
    )
    .await
    .map_err(|(e, attempts)| blob_error(digest, e, attempts))
}

/// Leases a cached layer, or downloads it into the cache.
async fn fetch_layer(
    session: &Session<'_>,
    blob: &BlobRef,
    cache: &LayerCache,
) -> Result<BlobLease> {
    let BlobRef { digest, size, .. } = blob;
    let (size, progress) = (*size, session.progress);
    let cache_error = |source| PullError::Cache {
        digest: digest.clone(),
        source,
    };
    // A cached blob of another size than the manifest says cannot be this layer; fetching
    // it again then fails the size check with a clear error.
    if let Some(lease) = cache.lease(digest).map_err(cache_error)?
        && lease.size() == size
    {
        progress.log(&format!("using cached layer {digest}"));
        progress.blob_bytes(digest, size, size);
        return Ok(lease);
    }
    let attempt = || async move {
        let writer = cache.writer(digest, size).map_err(FetchError::Cache)?;
        download(session, blob, writer).await
    };
    retry(&session.options.retry, progress, "layer download", attempt)
        .await
        .map_err(|(e, attempts)| blob_error(digest, e, attempts))
}

/// Streams one blob into a cache writer, handing the disk writes to blocking threads in
/// [`WRITE_CHUNK`] pieces, and commits it.
async fn download(
    session: &Session<'_>,
    blob: &BlobRef,
    mut writer: BlobWriter,
) -> std::result::Result<BlobLease, FetchError> {
    let mut stream = session
        .client
        .pull_blob_stream(session.reference, &blob.desc)
        .await
        .map_err(FetchError::Registry)?;
    let mut pending: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
    let mut received: u64 = 0;
    loop {
        let chunk = stream.next().await.transpose().map_err(stream_error)?;
        if let Some(chunk) = &chunk {
            received += chunk.len() as u64;
            if received > blob.size {
                return Err(FetchError::Oversized);
            }
            pending.extend_from_slice(chunk);
        }
        if pending.len() >= WRITE_CHUNK || (chunk.is_none() && !pending.is_empty()) {
            (writer, pending) = write_blocking(writer, pending).await?;
            session
                .progress
                .blob_bytes(&blob.digest, received, blob.size);
        }
        if chunk.is_none() {
            break;
        }
    }
    tokio::task::spawn_blocking(move || writer.commit())
        .await
        .map_err(|e| FetchError::Stream(io::Error::other(e)))?
        .map_err(|e| match e {
            CacheError::DigestMismatch { .. } => FetchError::Digest,
            other => FetchError::Cache(other),
        })
}

async fn write_blocking(
    mut writer: BlobWriter,
    mut buf: Vec<u8>,
) -> std::result::Result<(BlobWriter, Vec<u8>), FetchError> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        writer.write_all(&buf)?;
        buf.clear();
        Ok((writer, buf))
    })
    .await
    .map_err(|e| FetchError::Stream(io::Error::other(e)))?
    .map_err(|e: io::Error| {
        if e.kind() == io::ErrorKind::FileTooLarge {
            FetchError::Oversized
        } else {
            FetchError::Write(e)
        }
    })
}

/// A broken-off body is transient; oci-client reports a digest mismatch the same way, as an
/// I/O error wrapping its `DigestError`, and that one is not.
fn stream_error(e: io::Error) -> FetchError {
    let is_digest = e
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<OciDigestError>().is_some())
        || e.source()
            .is_some_and(|s| s.downcast_ref::<OciDigestError>().is_some());
    if is_digest {
        FetchError::Digest
    } else {
        FetchError::Stream(e)
    }
}

fn blob_error(digest: &Digest, e: FetchError, attempts: u32) -> PullError {
    match e {
        FetchError::Digest => PullError::DigestMismatch {
            digest: digest.clone(),
        },
        FetchError::Registry(source)
            if matches!(source, OciDistributionError::UnauthorizedError { .. }) =>
        {
            PullError::Unauthorized {
                reference: digest.to_string(),
                source,
            }
        }
        source => PullError::Blob {
            digest: digest.clone(),
            attempts,
            source,
        },
    }
}

/// SingularityCE's `CheckImagePlatform`: a config that declares another platform fails the
/// pull; one that declares none only earns a warning.
fn check_config_platform(
    config: &ImageConfig,
    wanted: &Platform,
    progress: &dyn Progress,
) -> Result<()> {
    let Some(arch) = config.architecture.as_deref().filter(|a| !a.is_empty()) else {
        progress.log(&format!(
            "warning: image declares no platform; assuming {wanted}"
        ));
        return Ok(());
    };
    let os = config.os.as_deref().unwrap_or("linux");
    if wanted.matches_parts(os, arch, config.variant.as_deref()) {
        return Ok(());
    }
    let found = match &config.variant {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    };
    Err(PullError::PlatformMismatch {
        found,
        wanted: wanted.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_follow_registry_and_namespace_keys() {
        let r = docker_reference("bitnami/python:3.7", Some("quay.io"), None).unwrap();
        assert_eq!(r.whole(), "quay.io/bitnami/python:3.7");
        let r = docker_reference("python:3.7", Some("quay.io"), Some("bitnami")).unwrap();
        assert_eq!(r.whole(), "quay.io/bitnami/python:3.7");
        let r = docker_reference("busybox", None, None).unwrap();
        assert_eq!(r.whole(), "docker.io/library/busybox:latest");
        assert_eq!(r.resolve_registry(), "index.docker.io");
        let r = docker_reference("127.0.0.1:5000/layers", None, None).unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "layers", Some("latest"))
        );
        for bad in ["", "busy box", "library/Busybox", "busybox@sha256:zz"] {
            let err = docker_reference(bad, None, None).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid docker reference"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn loopback_registries_are_recognised() {
        for yes in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in ["registry.example:5000", "10.0.0.1:5000", "index.docker.io"] {
            assert!(!is_loopback(no), "{no}");
        }
    }

    #[test]
    fn config_platform_is_checked_like_singularity() {
        let arm64 = Platform::from_arch("arm64").unwrap();
        let mut c = ImageConfig {
            architecture: Some("amd64".into()),
            os: Some("linux".into()),
            ..ImageConfig::default()
        };
        let err =
            check_config_platform(&c, &arm64, &crate::pipeline::progress::NoProgress).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image (linux/amd64) does not satisfy required platform (linux/arm64)"
        );
        c.architecture = Some("arm64".into());
        check_config_platform(&c, &arm64, &crate::pipeline::progress::NoProgress).unwrap();
        c.architecture = None;
        check_config_platform(&c, &arm64, &crate::pipeline::progress::NoProgress).unwrap();
    }
}
