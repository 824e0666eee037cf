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
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload,
    WriteMultipart,
};
use sha2::{Digest, Sha256};

/// Bytes per part of a streamed write: S3 wants at least 5 MiB per part but the last.
pub const CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// Parts of one write uploading at once; with [`CHUNK_BYTES`] this bounds a write's memory.
pub const MAX_PARTS_IN_FLIGHT: usize = 2;

/// How many store parts [`Objects::put_parts`] makes of `length` bytes: one per whole
/// [`CHUNK_BYTES`], at least one.
pub fn store_parts_of(length: u64) -> usize {
    usize::try_from(length / CHUNK_BYTES as u64)
        .unwrap_or(usize::MAX)
        .max(1)
}

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
    /// The same store when it is S3, which can presign URLs.
    s3: Option<Arc<AmazonS3>>,
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
                    s3: None,
                    prefix: Path::default(),
                })
            }
            Some(text) => {
                let invalid =
                    |e: object_store::Error| ObjectsError::Url(text.to_owned(), Box::new(e));
                let parsed = url::Url::parse(text)
                    .map_err(|e| ObjectsError::Url(text.to_owned(), Box::new(e)))?;
                let (scheme, s3_prefix) = ObjectStoreScheme::parse(&parsed)
                    .map_err(|e| ObjectsError::Url(text.to_owned(), Box::new(e)))?;
                if scheme == ObjectStoreScheme::AmazonS3 {
                    // Built here rather than by `parse_url_opts`, which hides the type: the
                    // S3 store also signs URLs (`presigned_get`).
                    let builder = options.iter().fold(
                        AmazonS3Builder::new().with_url(text),
                        |builder, (key, value)| match key.to_ascii_lowercase().parse() {
                            Ok(key) => builder.with_config(key, value),
                            Err(_) => builder,
                        },
                    );
                    let s3 = Arc::new(builder.build().map_err(invalid)?);
                    return Ok(Self {
                        store: s3.clone(),
                        s3: Some(s3),
                        prefix: s3_prefix,
                    });
                }
                let (store, prefix) = object_store::parse_url_opts(
                    &parsed,
                    options.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                )
                .map_err(invalid)?;
                Ok(Self {
                    store: Arc::from(store),
                    s3: None,
                    prefix,
                })
            }
        }
    }

    /// A URL that lets anyone without credentials `GET` `key` (with `Range`, answered 206)
    /// for `expires_in`, when the store can presign one (S3); `None` for the others.
    ///
    /// # Errors
    /// [`ObjectsError::Store`] when signing fails (no credentials).
    pub async fn presigned_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<Option<String>, ObjectsError> {
        let Some(s3) = &self.s3 else {
            return Ok(None);
        };
        let url = s3
            .signed_url(Method::GET, &self.path(key), expires_in)
            .await
            .map_err(ObjectsError::Store)?;
        Ok(Some(url.to_string()))
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

    /// Whether the parts of a multipart upload can go straight into one multipart upload of
    /// the final object ([`Self::start_parts`]), as S3 allows; else each part is an object of
    /// its own, joined by a copy.
    pub fn has_direct_parts(&self) -> bool {
        self.s3.is_some()
    }

    fn multipart(&self) -> Result<&AmazonS3, object_store::Error> {
        self.s3
            .as_deref()
            .ok_or_else(|| object_store::Error::NotSupported {
                source: "this object store has no direct multipart uploads".into(),
            })
    }

    /// Starts a multipart upload of `key` whose parts [`Self::put_parts`] sends; returns its
    /// id. Nothing is visible until [`Self::finish_parts`].
    ///
    /// # Errors
    /// [`ObjectsError::Store`], also when the store has no direct parts.
    pub async fn start_parts(&self, key: &str) -> Result<String, ObjectsError> {
        let s3 = self.multipart().map_err(ObjectsError::Store)?;
        s3.create_multipart(&self.path(key))
            .await
            .map_err(ObjectsError::Store)
    }

    /// Streams `length` bytes of `source` into the multipart upload `upload_id` of `key` as
    /// the store's parts `first_index..`, [`store_parts_of`]`(length)` of them (all but the
    /// last [`CHUNK_BYTES`] long, the last up to twice that, so memory stays bounded and every
    /// part but the very last of the object meets S3's 5 MiB minimum). `inspect` sees every
    /// byte in order. Returns the bytes received and the parts' ids; when fewer than `length`
    /// bytes came, the last part is not sent.
    ///
    /// # Errors
    /// [`WriteError`]; more than `length` bytes is [`WriteError::TooLarge`].
    pub async fn put_parts<S, E>(
        &self,
        key: &str,
        upload_id: &str,
        first_index: usize,
        length: u64,
        source: S,
        inspect: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(u64, Vec<String>), WriteError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::error::Error + Send + Sync + 'static,
    {
        let s3 = self.multipart().map_err(WriteError::Store)?;
        let path = self.path(key);
        let id = upload_id.to_owned();
        let count = store_parts_of(length);
        let mut ids = Vec::with_capacity(count);
        let mut buffer: Vec<Bytes> = Vec::new();
        let mut buffered = 0usize;
        let mut received = 0u64;
        let mut source = std::pin::pin!(source);
        while let Some(chunk) = source.next().await {
            let mut chunk = chunk.map_err(|e| WriteError::Source(Box::new(e)))?;
            received = received.saturating_add(chunk.len() as u64);
            if received > length {
                return Err(WriteError::TooLarge(length));
            }
            inspect(&chunk);
            // Cut at part boundaries; the last part takes whatever remains.
            while !chunk.is_empty() {
                let room = CHUNK_BYTES - buffered;
                if ids.len() + 1 == count || chunk.len() < room {
                    buffered += chunk.len();
                    buffer.push(chunk);
                    break;
                }
                buffer.push(chunk.split_to(room));
                let payload = PutPayload::from_iter(std::mem::take(&mut buffer));
                buffered = 0;
                let part = s3
                    .put_part(&path, &id, first_index + ids.len(), payload)
                    .await
                    .map_err(WriteError::Store)?;
                ids.push(part.content_id);
            }
        }
        if received == length {
            let payload = PutPayload::from_iter(buffer);
            let part = s3
                .put_part(&path, &id, first_index + ids.len(), payload)
                .await
                .map_err(WriteError::Store)?;
            ids.push(part.content_id);
        }
        Ok((received, ids))
    }

    /// Makes the multipart upload `upload_id` of `key` visible, made of `parts` in order
    /// (the ids [`Self::put_parts`] returned, of every part).
    ///
    /// # Errors
    /// [`ObjectsError::Store`].
    pub async fn finish_parts(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<String>,
    ) -> Result<(), ObjectsError> {
        let parts = parts
            .into_iter()
            .map(|content_id| PartId { content_id })
            .collect();
        let s3 = self.multipart().map_err(ObjectsError::Store)?;
        s3.complete_multipart(&self.path(key), &upload_id.to_owned(), parts)
            .await
            .map_err(ObjectsError::Store)?;
        Ok(())
    }

    /// Throws the multipart upload `upload_id` of `key` and its parts away.
    ///
    /// # Errors
    /// [`ObjectsError::Store`].
    pub async fn abort_parts(&self, key: &str, upload_id: &str) -> Result<(), ObjectsError> {
        let s3 = self.multipart().map_err(ObjectsError::Store)?;
        s3.abort_multipart(&self.path(key), &upload_id.to_owned())
            .await
            .map_err(ObjectsError::Store)
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
