//! Receiving an upload body onto disk: streamed, counted against a limit before it is written,
//! hashed on the way, and removed again on any failure, so a refused upload leaves no file.

use std::path::Path;

use axum::body::Body;
use futures::StreamExt;
use kiln_proto::http::StoredBlob;
use sha2::{Digest, Sha256};
use tokio::fs::File;
use tokio::io::AsyncWriteExt;

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The body is longer than allowed.
    #[error("the upload is larger than {0} bytes")]
    TooLarge(u64),
    /// The connection failed while reading the body.
    #[error("failed to read the upload")]
    Body(#[source] axum::Error),
    /// Writing the file failed.
    #[error("failed to store the upload")]
    Io(#[source] std::io::Error),
}

/// `sha256.<lowercase hex>`, the digest form of the build API (build-api.md §4.5).
pub fn sha256_digest(hash: impl AsRef<[u8]>) -> String {
    format!("sha256.{}", hex::encode(hash))
}

/// Writes `body` to a new file at `path` (its directory must exist), at most `max_bytes`.
///
/// # Errors
/// [`UploadError`]; the partial file is removed first.
pub async fn receive(body: Body, path: &Path, max_bytes: u64) -> Result<StoredBlob, UploadError> {
    let result = write(body, path, max_bytes).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(path).await;
    }
    result
}

async fn write(body: Body, path: &Path, max_bytes: u64) -> Result<StoredBlob, UploadError> {
    let mut file = File::create_new(path).await.map_err(UploadError::Io)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(bytes) = stream.next().await {
        let bytes = bytes.map_err(UploadError::Body)?;
        size = size.saturating_add(bytes.len() as u64);
        if size > max_bytes {
            return Err(UploadError::TooLarge(max_bytes));
        }
        hasher.update(&bytes);
        file.write_all(&bytes).await.map_err(UploadError::Io)?;
    }
    file.sync_all().await.map_err(UploadError::Io)?;
    Ok(StoredBlob {
        size,
        digest: sha256_digest(hasher.finalize()),
    })
}

/// True for `sha256.` and 64 lowercase hex digits.
pub fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256.").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_counts_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        let blob = receive(Body::from("abc"), &path, 3).await.unwrap();
        assert_eq!(blob.size, 3);
        assert_eq!(
            blob.digest,
            "sha256.ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_digest(&blob.digest));
        let path = dir.path().join("y");
        assert!(matches!(
            receive(Body::from("abcd"), &path, 3).await,
            Err(UploadError::TooLarge(3))
        ));
        assert!(!path.exists(), "a refused upload leaves no file");
        assert!(!is_digest("sha256:ba78"));
    }
}
