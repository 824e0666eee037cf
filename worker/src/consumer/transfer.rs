//! The worker's two HTTP calls to the scheduler, both through one-time capability URLs carried
//! by the job: fetching the build context and storing the result. Both retry transient
//! failures (connection refused while the scheduler restarts, 5xx) with backoff, so a
//! scheduler restart during a build costs a delay, not the build.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::{StatusCode, Url};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::events::BuildReporter;

/// How long a transfer keeps retrying before the build fails.
const RETRY_WINDOW: Duration = Duration::from_secs(180);

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The URL in the job is not one this worker can use.
    #[error("bad URL {0:?} in the job")]
    BadUrl(String),
    /// The scheduler refused the request for good (4xx).
    #[error("the scheduler answered {status} to {what}: {body}")]
    Refused {
        /// What was being done.
        what: &'static str,
        /// The status.
        status: StatusCode,
        /// The start of the answer's body.
        body: String,
    },
    /// The scheduler could not be reached, or kept failing, for the whole retry window.
    #[error("gave up on {what} after {RETRY_WINDOW:?}: {last}")]
    GaveUp {
        /// What was being done.
        what: &'static str,
        /// The last error.
        last: String,
    },
    /// The local file could not be read or written.
    #[error("failed to {what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The build was cancelled during the transfer.
    #[error("cancelled")]
    Cancelled,
}

/// Talks to the scheduler at a base URL the worker was configured with.
#[derive(Debug, Clone)]
pub struct SchedulerClient {
    base: Url,
    http: reqwest::Client,
}

/// One attempt's failure: worth retrying or not.
enum Attempt {
    Retry(String),
    Fatal(TransferError),
}

impl SchedulerClient {
    /// A client for the scheduler at `base` (`http://host:port`).
    ///
    /// # Errors
    /// [`TransferError::BadUrl`] when `base` does not parse.
    pub fn new(base: &str) -> Result<Self, TransferError> {
        let base = Url::parse(base).map_err(|_| TransferError::BadUrl(base.to_owned()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TransferError::BadUrl(e.to_string()))?;
        Ok(Self { base, http })
    }

    /// The job's `url` with its origin replaced by this worker's scheduler base: the scheduler
    /// writes its public URL into jobs, and workers may reach it by another address.
    pub fn resolve(&self, url: &str) -> Result<Url, TransferError> {
        let bad = || TransferError::BadUrl(url.to_owned());
        let given = Url::parse(url)
            .or_else(|_| self.base.join(url))
            .map_err(|_| bad())?;
        let mut path = given.path().to_owned();
        if let Some(query) = given.query() {
            path.push('?');
            path.push_str(query);
        }
        let base_path = self.base.path().trim_end_matches('/');
        self.base
            .join(&format!("{base_path}{path}"))
            .map_err(|_| bad())
    }

    /// Downloads `url` to `path`.
    ///
    /// # Errors
    /// [`TransferError`].
    pub async fn download(
        &self,
        url: &str,
        path: &Path,
        max_bytes: u64,
        reporter: &BuildReporter,
        cancel: &CancellationToken,
    ) -> Result<u64, TransferError> {
        let url = self.resolve(url)?;
        retrying("download the build context", cancel, || async {
            let response = self
                .http
                .get(url.clone())
                .send()
                .await
                .map_err(|e| Attempt::Retry(e.to_string()))?;
            let response = check_status("download the build context", response).await?;
            let io = |what: &'static str| {
                let path = path.display().to_string();
                move |source| {
                    Attempt::Fatal(TransferError::Io {
                        what,
                        path: path.clone(),
                        source,
                    })
                }
            };
            let mut file = tokio::fs::File::create(path).await.map_err(io("create"))?;
            let total = response.content_length();
            let mut done = 0u64;
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Attempt::Retry(e.to_string()))?;
                done += chunk.len() as u64;
                if done > max_bytes {
                    return Err(Attempt::Fatal(TransferError::Refused {
                        what: "download the build context",
                        status: StatusCode::PAYLOAD_TOO_LARGE,
                        body: format!("more than {max_bytes} bytes"),
                    }));
                }
                file.write_all(&chunk).await.map_err(io("write"))?;
                reporter.progress("context", done, total);
            }
            file.flush().await.map_err(io("write"))?;
            Ok(done)
        })
        .await
    }

    /// Uploads the file at `path` to `url` with `PUT`.
    ///
    /// # Errors
    /// [`TransferError`].
    pub async fn upload(
        &self,
        url: &str,
        path: &Path,
        reporter: &Arc<BuildReporter>,
        cancel: &CancellationToken,
    ) -> Result<(), TransferError> {
        let url = self.resolve(url)?;
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|source| TransferError::Io {
                what: "read",
                path: path.display().to_string(),
                source,
            })?
            .len();
        retrying("upload the image", cancel, || async {
            let file = tokio::fs::File::open(path).await.map_err(|source| {
                Attempt::Fatal(TransferError::Io {
                    what: "open",
                    path: path.display().to_string(),
                    source,
                })
            })?;
            let mut done = 0u64;
            let progress = Arc::clone(reporter);
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).map(
                move |chunk: std::io::Result<bytes::Bytes>| {
                    if let Ok(bytes) = &chunk {
                        done += bytes.len() as u64;
                        progress.progress("upload", done, Some(size));
                    }
                    chunk
                },
            );
            let response = self
                .http
                .put(url.clone())
                .header(reqwest::header::CONTENT_LENGTH, size)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await
                .map_err(|e| Attempt::Retry(e.to_string()))?;
            check_status("upload the image", response).await?;
            Ok(())
        })
        .await
    }
}

/// `Ok` for 2xx; 5xx and 429 are worth another try, other statuses are final.
async fn check_status(
    what: &'static str,
    response: reqwest::Response,
) -> Result<reqwest::Response, Attempt> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let mut body = response.text().await.unwrap_or_default();
    body.truncate(500);
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(Attempt::Retry(format!("{status}: {body}")));
    }
    Err(Attempt::Fatal(TransferError::Refused {
        what,
        status,
        body,
    }))
}

/// Runs `attempt` until it succeeds, fails for good, the retry window passes or `cancel` fires.
async fn retrying<T, F, Fut>(
    what: &'static str,
    cancel: &CancellationToken,
    mut attempt: F,
) -> Result<T, TransferError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        let result = tokio::select! {
            result = attempt() => result,
            () = cancel.cancelled() => return Err(TransferError::Cancelled),
        };
        let last = match result {
            Ok(value) => return Ok(value),
            Err(Attempt::Fatal(error)) => return Err(error),
            Err(Attempt::Retry(last)) => last,
        };
        if started.elapsed() + backoff > RETRY_WINDOW {
            return Err(TransferError::GaveUp { what, last });
        }
        tracing::warn!(what, error = %last, retry_in = ?backoff, "transfer failed, retrying");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = cancel.cancelled() => return Err(TransferError::Cancelled),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
