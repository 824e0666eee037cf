//! Writes OCI image layouts (image-spec `image-layout.md`): `oci-layout`, `index.json` and
//! content-addressed blobs under `blobs/sha256/`, which `skopeo copy oci:DIR:TAG …` pushes to a
//! registry. Layers are gzip-compressed with mtime 0 and no file name in the header (like
//! `gzip -n`), so a layout built twice from the same description is identical.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Result, SupportError, io_error};
use crate::layer::Layer;

/// Media type of an image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an image index (a multi-platform image).
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a gzip-compressed tar layer.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Annotation naming a reference (the `TAG` of `oci:DIR:TAG`) in `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content descriptor (image-spec `descriptor.md`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced blob.
    pub media_type: String,
    /// `sha256:<hex>` of the blob's bytes.
    pub digest: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Platform of a manifest listed in an index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations, such as the reference name in `index.json`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The platform an image runs on, in Go's `GOARCH`/`GOOS` words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Platform {
    /// CPU architecture: `amd64`, `arm64`…
    pub architecture: String,
    /// Operating system: `linux`.
    pub os: String,
    /// CPU variant, such as `v8` for arm64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// linux/`architecture` with an optional `variant`.
    pub fn linux(architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: architecture.to_owned(),
            os: "linux".to_owned(),
            variant: variant.map(str::to_owned),
        }
    }
}

/// The execution parameters of an image config (`config` object of image-spec `config.md`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    /// `NAME=value` environment entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Entrypoint argv.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// Default arguments (or argv when there is no entrypoint).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// Working directory of the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Free-form labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A layer stored in a layout: its blob descriptor and the digest of its uncompressed tar.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    /// Descriptor of the compressed blob, as listed in a manifest.
    pub descriptor: Descriptor,
    /// `sha256:<hex>` of the uncompressed tar, as listed in the config's `rootfs.diff_ids`.
    pub diff_id: String,
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    // A fixed creation time keeps the config, hence the manifest digest, reproducible.
    created: &'static str,
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    config: &'a RuntimeConfig,
    rootfs: RootFs<'a>,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<&'a Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: &'a [Descriptor],
}

/// An OCI image layout being written into a directory.
#[derive(Debug)]
pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    /// Creates the layout skeleton (`oci-layout`, `blobs/sha256/`) in `dir`, which may exist.
    pub fn create(dir: &Path) -> Result<OciLayout> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io_error("create directory", &blobs))?;
        let marker = dir.join("oci-layout");
        fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(io_error("write", &marker))?;
        Ok(OciLayout {
            dir: dir.to_owned(),
        })
    }

    /// The layout's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `bytes` as a blob of `media_type` and returns its descriptor.
    pub fn add_blob(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let path = self.blob_path(&digest);
        fs::write(&path, bytes).map_err(io_error("write blob", &path))?;
        Ok(descriptor(media_type, digest, bytes.len() as u64))
    }

    /// Writes `layer` as a gzip blob at `level`, streaming, and returns its blob and diff id.
    pub fn add_layer(&self, layer: &Layer, level: Compression) -> Result<LayerBlob> {
        let partial = self.dir.join("blobs/sha256/.partial-layer");
        let file = File::create(&partial).map_err(io_error("create", &partial))?;
        let compressed = HashingWriter::new(file);
        let gzip = GzBuilder::new().mtime(0).write(compressed, level);
        let tar = layer.write_tar(HashingWriter::new(gzip))?;
        let (gzip, diff_id) = tar.finish();
        let compressed = gzip.finish().map_err(io_error("compress", &partial))?;
        let (mut file, digest) = compressed.finish();
        file.flush().map_err(io_error("write", &partial))?;
        let size = file.metadata().map_err(io_error("stat", &partial))?.len();
        let path = self.blob_path(&digest);
        fs::rename(&partial, &path).map_err(io_error("rename into place", &path))?;
        Ok(LayerBlob {
            descriptor: descriptor(MEDIA_TYPE_LAYER_GZIP, digest, size),
            diff_id,
        })
    }

    /// Stores the config and manifest of an image for `platform` made of `layers` (lowest first)
    /// and returns the manifest's descriptor, with `platform` set for use in an index.
    pub fn add_image(
        &self,
        platform: &Platform,
        config: &RuntimeConfig,
        layers: &[&LayerBlob],
    ) -> Result<Descriptor> {
        let image_config = ImageConfig {
            created: "1970-01-01T00:00:00Z",
            architecture: &platform.architecture,
            os: &platform.os,
            variant: platform.variant.as_deref(),
            config,
            rootfs: RootFs {
                kind: "layers",
                diff_ids: layers.iter().map(|l| l.diff_id.as_str()).collect(),
            },
        };
        let config_descriptor = self.add_json(MEDIA_TYPE_CONFIG, "image config", &image_config)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: MEDIA_TYPE_MANIFEST,
            config: config_descriptor,
            layers: layers.iter().map(|l| &l.descriptor).collect(),
        };
        let mut manifest = self.add_json(MEDIA_TYPE_MANIFEST, "manifest", &manifest)?;
        manifest.platform = Some(platform.clone());
        Ok(manifest)
    }

    /// Stores an artifact manifest: a config blob of `config_media_type` and one layer of
    /// `layer_media_type` (how `singularity push oras://` stores a SIF). Returns the manifest's
    /// descriptor.
    pub fn add_artifact(
        &self,
        config_media_type: &str,
        config: &[u8],
        layer_media_type: &str,
        layer: &[u8],
    ) -> Result<Descriptor> {
        let config = self.add_blob(config_media_type, config)?;
        let layer = self.add_blob(layer_media_type, layer)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: MEDIA_TYPE_MANIFEST,
            config,
            layers: vec![&layer],
        };
        self.add_json(MEDIA_TYPE_MANIFEST, "manifest", &manifest)
    }

    /// Stores an image index listing `manifests` and returns its descriptor.
    pub fn add_index(&self, manifests: &[Descriptor]) -> Result<Descriptor> {
        let index = Index {
            schema_version: 2,
            media_type: MEDIA_TYPE_INDEX,
            manifests,
        };
        self.add_json(MEDIA_TYPE_INDEX, "image index", &index)
    }

    /// Writes `index.json` naming `target` (a manifest or an index) as reference `tag`.
    pub fn write_index(&self, tag: &str, target: &Descriptor) -> Result<()> {
        let mut named = target.clone();
        // In index.json the platform of a single image is implied by its config.
        named.platform = None;
        named
            .annotations
            .insert(ANNOTATION_REF_NAME.to_owned(), tag.to_owned());
        let index = Index {
            schema_version: 2,
            media_type: MEDIA_TYPE_INDEX,
            manifests: &[named],
        };
        let bytes = serde_json::to_vec(&index).map_err(|source| SupportError::Json {
            what: "index.json",
            source,
        })?;
        let path = self.dir.join("index.json");
        fs::write(&path, bytes).map_err(io_error("write", &path))
    }

    fn add_json<T: Serialize>(
        &self,
        media_type: &str,
        what: &'static str,
        value: &T,
    ) -> Result<Descriptor> {
        let bytes =
            serde_json::to_vec(value).map_err(|source| SupportError::Json { what, source })?;
        self.add_blob(media_type, &bytes)
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.join("blobs/sha256").join(hex)
    }
}

fn descriptor(media_type: &str, digest: String, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest,
        size,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

/// Passes writes through to `inner` while computing their SHA-256.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The inner writer and `sha256:<hex>` of everything written.
    fn finish(self) -> (W, String) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::layer::Entry;

    #[test]
    fn layer_blob_digest_and_diff_id_match_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(dir.path()).unwrap();
        let layer = Layer::new(vec![Entry::file("hello", "world")]);
        let blob = layout.add_layer(&layer, Compression::default()).unwrap();
        let path = layout.blob_path(&blob.descriptor.digest);
        let compressed = fs::read(path).unwrap();
        assert_eq!(
            blob.descriptor.digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&compressed)))
        );
        assert_eq!(blob.descriptor.size, compressed.len() as u64);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(compressed.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(tar, layer.write_tar(Vec::new()).unwrap());
        assert_eq!(
            blob.diff_id,
            format!("sha256:{}", hex::encode(Sha256::digest(&tar)))
        );
        // gzip header: magic, method, flags 0 (no name), mtime 0.
        assert_eq!(&compressed[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
    }
}
