//! A client of the Library API for `Bootstrap: library` (`library-api.md` §2, §6.2): resolve
//! the reference for an architecture (`GET /v1/images/{ref}?arch=`), download the image file
//! (`GET /v1/imagefile/{ref}?arch=`, a 200 stream or a 303 to an absolute URL), and accept it
//! only if its sha256 is the image's `hash`. The file goes into the layer cache under that
//! digest, so concurrent builds share it and its size is bounded.

use std::fmt;
use std::io::Write;
use std::time::Duration;

use kiln_proto::amqp::LibraryCredential;
use serde::Deserialize;

use super::cache::{BlobLease, CacheError, LayerCache};
use super::digest::Digest;

/// Longest a library request may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a library response may stay silent.
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest JSON answer read, bytes.
const MAX_JSON_BYTES: usize = 1 << 20;

/// A `library://` reference as the CLI splits it (`library-api.md` §2): an optional host
/// (only with all three path components), the path passed verbatim, and the first tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryRef {
    /// `host[:port]`, when the reference names one.
    pub host: Option<String>,
    /// `entity/collection/container`, or a shorter path the server maps.
    pub path: String,
    /// A tag name or `sha256.<hex>`; `latest` by default.
    pub tag: String,
}

impl LibraryRef {
    /// Parses `From:` of a `library` bootstrap.
    ///
    /// # Errors
    /// A message for an empty path or one with characters a reference cannot hold.
    pub fn parse(from: &str) -> Result<Self, String> {
        let bad = || format!("invalid library reference {from:?}");
        let trimmed = from.trim();
        let rest = trimmed
            .strip_prefix("library://")
            .or_else(|| trimmed.strip_prefix("library:"))
            .unwrap_or(trimmed)
            .trim_start_matches('/');
        // A host only with all three path components: more than two slashes.
        let (host, rest) = match rest.split_once('/') {
            Some((host, path)) if rest.matches('/').count() > 2 => (Some(host), path),
            _ => (None, rest),
        };
        let (path, tags) = match rest.split_once(':') {
            Some((path, tags)) => (path, Some(tags)),
            None => (rest, None),
        };
        let is_safe = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() > 3 || !parts.iter().all(|p| is_safe(p)) {
            return Err(bad());
        }
        if let Some(host) = host {
            let (name, port) = host.split_once(':').unwrap_or((host, "1"));
            if !is_safe(name) || port.parse::<u16>().is_err() {
                return Err(bad());
            }
        }
        let tag = tags
            .and_then(|t| t.split(',').next())
            .filter(|t| !t.is_empty())
            .unwrap_or("latest");
        if !is_safe(tag) {
            return Err(bad());
        }
        Ok(Self {
            host: host.map(str::to_owned),
            path: parts.join("/"),
            tag: tag.to_owned(),
        })
    }
}

impl fmt::Display for LibraryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Some(host) => write!(f, "library://{host}/{}:{}", self.path, self.tag),
            None => write!(f, "library://{}:{}", self.path, self.tag),
        }
    }
}

/// Why a library pull failed.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// The library URL does not parse.
    #[error("invalid library URL {0:?}")]
    BadUrl(String),
    /// The HTTP client could not be set up.
    #[error("failed to set up the library client")]
    Client(#[source] reqwest::Error),
    /// The library could not be reached or broke off.
    #[error("failed to reach the library at {url}")]
    Request {
        /// The URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// No image of that reference for that architecture (SingularityCE's wording).
    #[error("image {reference} ({arch}) does not exist in the library")]
    NotFound {
        /// The reference.
        reference: String,
        /// The architecture.
        arch: String,
    },
    /// The library answered with an unexpected status.
    #[error("the library answered {status} for {url}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: reqwest::StatusCode,
    },
    /// The image record is not what the API promises.
    #[error("the library's image record for {reference} is invalid: {message}")]
    BadRecord {
        /// The reference.
        reference: String,
        /// What is wrong.
        message: String,
    },
    /// The downloaded file is larger than announced or than the bound.
    #[error("the image file of {reference} is larger than {limit} bytes")]
    TooLarge {
        /// The reference.
        reference: String,
        /// The bound.
        limit: u64,
    },
    /// The downloaded file does not hash to the image's `hash` (SingularityCE checks the same).
    #[error("the image file of {reference} does not match its hash {hash}")]
    HashMismatch {
        /// The reference.
        reference: String,
        /// The expected hash.
        hash: String,
    },
    /// The layer cache failed.
    #[error("the layer cache failed for {digest}")]
    Cache {
        /// The digest.
        digest: Digest,
        /// Cause.
        #[source]
        source: CacheError,
    },
}

impl LibraryError {
    /// Whether the build's input (reference, image) is at fault rather than the service.
    pub fn is_user_fault(&self) -> bool {
        match self {
            Self::BadUrl(_)
            | Self::NotFound { .. }
            | Self::BadRecord { .. }
            | Self::TooLarge { .. }
            | Self::HashMismatch { .. } => true,
            Self::Status { status, .. } => status.is_client_error(),
            Self::Client(_) | Self::Request { .. } | Self::Cache { .. } => false,
        }
    }
}

/// The fields of a library `Image` a pull reads.
#[derive(Debug, Clone, Deserialize)]
pub struct LibraryImage {
    /// `sha256.<hex>` of the whole file.
    pub hash: String,
    /// Size of the file, bytes.
    #[serde(default)]
    pub size: u64,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

/// A Library API endpoint.
pub struct LibraryClient {
    http: reqwest::Client,
    base: reqwest::Url,
    bearer: Option<String>,
}

impl LibraryClient {
    /// A client of the library at `base` (`http(s)://host[:port][/prefix]`).
    ///
    /// # Errors
    /// [`LibraryError::BadUrl`] or [`LibraryError::Client`].
    pub fn new(base: &str) -> Result<Self, LibraryError> {
        let mut url =
            reqwest::Url::parse(base).map_err(|_| LibraryError::BadUrl(base.to_owned()))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(LibraryError::BadUrl(base.to_owned()));
        }
        // Relative paths resolve below the base, as the Go client's do.
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            // A 303 is followed by hand: to an absolute URL, without credentials.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(LibraryError::Client)?;
        Ok(Self {
            http,
            base: url,
            bearer: None,
        })
    }

    /// Sends `credential`'s token with every request to this library's own URLs, if the
    /// credential is for this library; a token for another library is never sent.
    #[must_use]
    pub fn with_credential(mut self, credential: Option<&LibraryCredential>) -> Self {
        let same_library = |credential: &&LibraryCredential| {
            Self::new(&credential.url).is_ok_and(|other| other.base == self.base)
        };
        self.bearer = credential
            .filter(same_library)
            .map(|credential| credential.token.clone());
        self
    }

    /// Whether requests carry a token.
    pub fn is_authenticated(&self) -> bool {
        self.bearer.is_some()
    }

    fn url(&self, endpoint: &str, reference: &LibraryRef, arch: &str) -> reqwest::Url {
        let mut url = self.base.clone();
        {
            let mut segments = url.path_segments_mut().expect("checked in new");
            segments.pop_if_empty().push("v1").push(endpoint);
            let mut parts = reference.path.split('/').peekable();
            while let Some(part) = parts.next() {
                if parts.peek().is_some() {
                    segments.push(part);
                } else {
                    segments.push(&format!("{part}:{}", reference.tag));
                }
            }
        }
        url.query_pairs_mut().append_pair("arch", arch);
        url
    }

    /// A GET of one of this library's URLs, with the token if there is one.
    async fn get(&self, url: reqwest::Url) -> Result<reqwest::Response, LibraryError> {
        let mut request = self.http.get(url.clone());
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        send(request, url).await
    }

    /// A GET of a URL the library redirected to: a capability of its own, so no token.
    async fn get_redirected(&self, url: reqwest::Url) -> Result<reqwest::Response, LibraryError> {
        send(self.http.get(url.clone()), url).await
    }

    /// `GET /v1/images/{ref}?arch=`.
    ///
    /// # Errors
    /// [`LibraryError::NotFound`] on 404; other failures as their variants.
    pub async fn image(
        &self,
        reference: &LibraryRef,
        arch: &str,
    ) -> Result<LibraryImage, LibraryError> {
        let url = self.url("images", reference, arch);
        let text = url.to_string();
        let mut response = self.get(url).await?;
        expect_ok(&response, reference, arch, &text)?;
        let mut body = Vec::new();
        while let Some(chunk) = next_chunk(&mut response, &text).await? {
            if body.len() + chunk.len() > MAX_JSON_BYTES {
                return Err(LibraryError::BadRecord {
                    reference: reference.to_string(),
                    message: format!("the answer is over {MAX_JSON_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        let envelope: Envelope<LibraryImage> =
            serde_json::from_slice(&body).map_err(|e| LibraryError::BadRecord {
                reference: reference.to_string(),
                message: e.to_string(),
            })?;
        Ok(envelope.data)
    }

    /// Downloads the file of `image` (`GET /v1/imagefile/{ref}?arch=`, following one 303) into
    /// `cache`, checking its size (at most `max_bytes`) and its hash; returns the cached blob.
    ///
    /// # Errors
    /// [`LibraryError::HashMismatch`], [`LibraryError::TooLarge`], or a transfer failure.
    pub async fn download(
        &self,
        reference: &LibraryRef,
        arch: &str,
        image: &LibraryImage,
        max_bytes: u64,
        cache: &LayerCache,
    ) -> Result<BlobLease, LibraryError> {
        let bad_record = |message: String| LibraryError::BadRecord {
            reference: reference.to_string(),
            message,
        };
        let hex = image
            .hash
            .strip_prefix("sha256.")
            .ok_or_else(|| bad_record(format!("hash {:?} is not sha256.<hex>", image.hash)))?;
        let digest: Digest = format!("sha256:{hex}")
            .parse()
            .map_err(|_| bad_record(format!("hash {:?} is not sha256.<hex>", image.hash)))?;
        if image.size == 0 {
            return Err(bad_record("the image has no size".into()));
        }
        if image.size > max_bytes {
            return Err(LibraryError::TooLarge {
                reference: reference.to_string(),
                limit: max_bytes,
            });
        }
        let cache_error = |source| LibraryError::Cache {
            digest: digest.clone(),
            source,
        };
        if let Some(lease) = cache.lease(&digest).map_err(cache_error)?
            && lease.size() == image.size
        {
            return Ok(lease);
        }
        let url = self.url("imagefile", reference, arch);
        let mut text = url.to_string();
        let mut response = self.get(url).await?;
        if response.status() == reqwest::StatusCode::SEE_OTHER {
            // library-api.md §6.3: an absolute capability URL, fetched without credentials.
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| reqwest::Url::parse(v).ok())
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| bad_record("a 303 without an absolute Location".into()))?;
            text = location.to_string();
            response = self.get_redirected(location).await?;
        }
        expect_ok(&response, reference, arch, &text)?;
        let mut writer = cache.writer(&digest, image.size).map_err(cache_error)?;
        while let Some(chunk) = next_chunk(&mut response, &text).await? {
            // Small writes of a network stream; the cache file is local.
            tokio::task::block_in_place(|| writer.write_all(&chunk)).map_err(|e| {
                if e.kind() == std::io::ErrorKind::FileTooLarge {
                    LibraryError::TooLarge {
                        reference: reference.to_string(),
                        limit: image.size,
                    }
                } else {
                    cache_error(CacheError::Blob {
                        digest: digest.clone(),
                        source: e,
                    })
                }
            })?;
        }
        tokio::task::block_in_place(|| writer.commit()).map_err(|e| match e {
            CacheError::DigestMismatch { .. } | CacheError::SizeMismatch { .. } => {
                LibraryError::HashMismatch {
                    reference: reference.to_string(),
                    hash: image.hash.clone(),
                }
            }
            other => cache_error(other),
        })
    }
}

async fn send(
    request: reqwest::RequestBuilder,
    url: reqwest::Url,
) -> Result<reqwest::Response, LibraryError> {
    request
        .send()
        .await
        .map_err(|source| LibraryError::Request {
            url: url.to_string(),
            source,
        })
}

/// `Ok` for a 200; a 404 is [`LibraryError::NotFound`] (the client reads no body then).
fn expect_ok(
    response: &reqwest::Response,
    reference: &LibraryRef,
    arch: &str,
    url: &str,
) -> Result<(), LibraryError> {
    match response.status() {
        reqwest::StatusCode::OK => Ok(()),
        reqwest::StatusCode::NOT_FOUND => Err(LibraryError::NotFound {
            reference: reference.to_string(),
            arch: arch.to_owned(),
        }),
        status => Err(LibraryError::Status {
            url: url.to_owned(),
            status,
        }),
    }
}

/// The next piece of a response body; `None` at its end.
async fn next_chunk(
    response: &mut reqwest::Response,
    url: &str,
) -> Result<Option<bytes::Bytes>, LibraryError> {
    response
        .chunk()
        .await
        .map_err(|source| LibraryError::Request {
            url: url.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_goes_only_to_its_own_library() {
        let credential = LibraryCredential {
            url: "http://127.0.0.1:8080".into(),
            token: "t".into(),
        };
        let client = |base: &str| {
            LibraryClient::new(base)
                .unwrap()
                .with_credential(Some(&credential))
                .is_authenticated()
        };
        assert!(client("http://127.0.0.1:8080/"));
        assert!(client("http://127.0.0.1:8080"));
        assert!(!client("http://127.0.0.1:8081"));
        assert!(!client("https://127.0.0.1:8080"));
        assert!(!client("http://127.0.0.1:8080/other"));
        assert!(!client("https://cloud.sylabs.io"));
        let anonymous = LibraryClient::new("http://127.0.0.1:8080")
            .unwrap()
            .with_credential(None);
        assert!(!anonymous.is_authenticated());
    }

    #[test]
    fn references_split_as_the_cli_splits_them() {
        let r = LibraryRef::parse("library://alice/builds/hello:v1,v2").unwrap();
        assert_eq!(
            (r.host, r.path.as_str(), r.tag.as_str()),
            (None, "alice/builds/hello", "v1")
        );
        let r = LibraryRef::parse("alpine").unwrap();
        assert_eq!((r.path.as_str(), r.tag.as_str()), ("alpine", "latest"));
        let r = LibraryRef::parse("e/c/n:sha256.abc").unwrap();
        assert_eq!(r.tag, "sha256.abc");
        let r = LibraryRef::parse("library://lib.example:8443/e/c/n:t").unwrap();
        assert_eq!(
            (r.host.as_deref(), r.path.as_str(), r.tag.as_str()),
            (Some("lib.example:8443"), "e/c/n", "t")
        );
        for bad in ["", "library://", "a/../b", "a/b/c/d/e", "e/c/n:../x", "a b"] {
            assert!(LibraryRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_keep_the_reference_in_one_path_and_the_arch_in_the_query() {
        let client = LibraryClient::new("http://127.0.0.1:9/prefix").unwrap();
        let r = LibraryRef::parse("e/c/n:v1").unwrap();
        assert_eq!(
            client.url("images", &r, "amd64").as_str(),
            "http://127.0.0.1:9/prefix/v1/images/e/c/n:v1?arch=amd64"
        );
    }
}
