//! The object store behind the library: image files go in and out as streams, never whole in
//! memory, through the `object_store` crate, so one code path serves a local directory (the
//! default, under the data directory) and any S3-compatible bucket (`s3://bucket` plus options
//! such as `aws_endpoint`).
//!
//! Writes are multipart uploads of [`CHUNK_BYTES`] chunks with at most [`MAX_PARTS_IN_FLIGHT`]
//! in flight, hashed on the way; the caller checks size and digest before [`PendingObject::commit`]
//! makes the object visible, and [`PendingObject::abort`] leaves nothing behind.

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};

/// Bytes per part of a streamed write: S3 wants at least 5 MiB per part but the last.
pub const CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// Parts of one write uploading at once; with [`CHUNK_BYTES`] this bounds a write's memory.
pub const MAX_PARTS_IN_FLIGHT: usize = 2;

/// Why the object store failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    /// The URL could not be parsed or names an unsupported store.
    #[error("invalid object store url {0:?}")]
    Url(String, #[source] Box<dyn std::error::Error + Send + Sync>),
    /// Creating the local directory failed.
    #[error("failed to create the object directory")]
    Dir(#[source] std::io::Error),
    /// The object does not exist.
    #[error("object {0} not found")]
    NotFound(String),
    /// The store failed.
    #[error("object store failed")]
    Store(#[source] object_store::Error),
}

/// Why a streamed write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The stream is longer than allowed.
    #[error("the upload is larger than {0} bytes")]
    TooLarge(u64),
    /// The source stream failed (a client that went away).
    #[error("failed to read the upload")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store failed.
    #[error("failed to store the upload")]
    Store(#[source] object_store::Error),
}

fn store_error(error: object_store::Error, key: &str) -> ObjectsError {
    match error {
        object_store::Error::NotFound { .. } => ObjectsError::NotFound(key.to_owned()),
        other => ObjectsError::Store(other),
    }
}

/// The object store (cheap to clone).
#[derive(Debug, Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

/// A write whose bytes are all sent but not yet visible.
pub struct PendingObject {
    upload: WriteMultipart,
    /// Bytes written.
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
}

impl std::fmt::Debug for PendingObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingObject")
            .field("size", &self.size)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl PendingObject {
    /// Makes the object visible under its key (replacing an older one).
    ///
    /// # Errors
    /// [`WriteError::Store`].
    pub async fn commit(self) -> Result<(), WriteError> {
        self.upload.finish().await.map_err(WriteError::Store)?;
        Ok(())
    }

    /// Throws the bytes away.
    pub async fn abort(self) {
        if let Err(error) = self.upload.abort().await {
            tracing::warn!(error = %error, "could not abort an object upload");
        }
    }
}

/// A readable object: its bytes (or the requested range of them) and its full size.
pub struct ObjectRead {
    /// The bytes.
    pub stream: BoxStream<'static, Result<Bytes, std::io::Error>>,
    /// The range delivered.
    pub range: Range<u64>,
    /// Size of the whole object, bytes.
    pub total: u64,
}

impl Objects {
    /// Opens the store: `url` of `s3://…` (or any scheme `object_store` parses) with
    /// `options` (`aws_endpoint`, `aws_allow_http`, …); without a URL, the directory `objects`
    /// in `data_dir`.
    ///
    /// # Errors
    /// [`ObjectsError::Url`] or [`ObjectsError::Dir`].
    pub fn open(
        url: Option<&str>,
        options: &[(String, String)],
        data_dir: &FsPath,
    ) -> Result<Self, ObjectsError> {
        match url.filter(|u| !u.is_empty()) {
            None => {
                let dir = data_dir.join("objects");
                std::fs::create_dir_all(&dir).map_err(ObjectsError::Dir)?;
                let store = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| ObjectsError::Url(dir.display().to_string(), Box::new(e)))?
                    .with_automatic_cleanup(true);
                Ok(Self {
                    store: Arc::new(store),
                    prefix: Path::default(),
                })
            }
            Some(text) => {
                let parsed = url::Url::parse(text)
                    .map_err(|e| ObjectsError::Url(text.to_owned(), Box::new(e)))?;
                let (store, prefix) = object_store::parse_url_opts(
                    &parsed,
                    options.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                )
                .map_err(|e| ObjectsError::Url(text.to_owned(), Box::new(e)))?;
                Ok(Self {
                    store: Arc::from(store),
                    prefix,
                })
            }
        }
    }

    fn path(&self, key: &str) -> Path {
        key.split('/')
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    /// Streams `source` to `key`, at most `max_bytes`, hashing on the way; the object is
    /// visible only after [`PendingObject::commit`].
    ///
    /// # Errors
    /// [`WriteError`]; the partial upload is aborted first.
    pub async fn write<S, E>(
        &self,
        key: &str,
        source: S,
        max_bytes: u64,
    ) -> Result<PendingObject, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::error::Error + Send + Sync + 'static,
    {
        let upload = self
            .store
            .put_multipart(&self.path(key))
            .await
            .map_err(WriteError::Store)?;
        let mut upload = WriteMultipart::new_with_chunk_size(upload, CHUNK_BYTES);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut source = std::pin::pin!(source);
        let failure = loop {
            let bytes = match source.next().await {
                None => break None,
                Some(Err(error)) => break Some(WriteError::Source(Box::new(error))),
                Some(Ok(bytes)) => bytes,
            };
            size = size.saturating_add(bytes.len() as u64);
            if size > max_bytes {
                break Some(WriteError::TooLarge(max_bytes));
            }
            hasher.update(&bytes);
            if let Err(error) = upload.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await {
                break Some(WriteError::Store(error));
            }
            upload.put(bytes);
        };
        if let Some(error) = failure {
            if let Err(abort) = upload.abort().await {
                tracing::warn!(error = %abort, "could not abort an object upload");
            }
            return Err(error);
        }
        Ok(PendingObject {
            upload,
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Reads `key`, all of it or `range` (clipped to its end).
    ///
    /// # Errors
    /// [`ObjectsError::NotFound`] or [`ObjectsError::Store`].
    pub async fn read(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<ObjectRead, ObjectsError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&self.path(key), options)
            .await
            .map_err(|e| store_error(e, key))?;
        let total = result.meta.size;
        let range = result.range.clone();
        let stream = result.into_stream().map_err(std::io::Error::other).boxed();
        Ok(ObjectRead {
            stream,
            range,
            total,
        })
    }

    /// Size of `key`, bytes.
    ///
    /// # Errors
    /// [`ObjectsError::NotFound`] or [`ObjectsError::Store`].
    pub async fn size(&self, key: &str) -> Result<u64, ObjectsError> {
        let meta = self
            .store
            .head(&self.path(key))
            .await
            .map_err(|e| store_error(e, key))?;
        Ok(meta.size)
    }

    /// Whether the store answers: one listing of the top level (for S3, the bucket exists and
    /// the credentials may read it), for `/readyz`.
    ///
    /// # Errors
    /// [`ObjectsError::Store`].
    pub async fn check(&self) -> Result<(), ObjectsError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        self.store
            .list_with_delimiter(prefix)
            .await
            .map(drop)
            .map_err(ObjectsError::Store)
    }

    /// Deletes `key`; a missing object is fine.
    ///
    /// # Errors
    /// [`ObjectsError::Store`].
    pub async fn delete(&self, key: &str) -> Result<(), ObjectsError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(ObjectsError::Store(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_are_invisible_until_committed_and_ranges_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::open(None, &[], dir.path()).unwrap();
        let chunks = (0..3).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![i as u8; 5])));
        let pending = objects
            .write("images/a", futures::stream::iter(chunks), 15)
            .await
            .unwrap();
        assert_eq!(pending.size, 15);
        assert!(matches!(
            objects.size("images/a").await,
            Err(ObjectsError::NotFound(_))
        ));
        pending.commit().await.unwrap();
        assert_eq!(objects.size("images/a").await.unwrap(), 15);
        let read = objects.read("images/a", Some(4..6)).await.unwrap();
        let bytes: Vec<Bytes> = read.stream.try_collect().await.unwrap();
        assert_eq!(bytes.concat(), vec![0, 1]);
        assert_eq!((read.range, read.total), (4..6, 15));

        let too_long = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from("abcd"))]);
        assert!(matches!(
            objects.write("images/b", too_long, 3).await,
            Err(WriteError::TooLarge(3))
        ));
        assert!(objects.size("images/b").await.is_err());
        objects.delete("images/a").await.unwrap();
        objects.delete("images/a").await.unwrap();
        let leftovers: Vec<_> = walk(dir.path());
        assert!(
            leftovers.iter().all(|p| !p.contains("images/")),
            "{leftovers:?}"
        );
    }

    fn walk(dir: &FsPath) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path.display().to_string());
            }
        }
        found
    }
}
