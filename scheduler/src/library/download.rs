//! Image downloads (library-api.md §6.2, §6.3): `GET /v1/imagefile/{ref}?arch=` answers either
//! `200` with the file streamed from the object store (every client generation takes it), or
//! `303 See Other` to an absolute, expiring capability URL that serves `Range: bytes=S-E` with
//! `206` and `Content-Range` (for clients that download in concurrent parts): a presigned URL
//! of the S3 bucket when the images are in S3, so the bytes skip the scheduler, else the
//! scheduler's own. Never 302/307: Apptainer 1.0 and SingularityCE 3.9 refuse them.

use std::ops::Range;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::images::{ArchQuery, resolve};
use super::{MaybeUser, after_seconds, not_found};
use crate::api::{ApiError, AppState};
use crate::config::DownloadMode;
use crate::objects::ObjectsError;
use crate::secrets::{new_capability, token_hash};
use crate::store::ImageRow;

/// Longest life of a presigned S3 URL (SigV4's limit), seconds.
const MAX_PRESIGNED_SECONDS: u64 = 7 * 24 * 3600;

/// `GET /v1/imagefile/{ref}?arch=`: 404 when the image is missing, hidden, or has no file yet.
/// `HEAD` answers the size and counts no download (as Hinkskalle, §6.3).
pub async fn download(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    method: Method,
    Path(reference): Path<String>,
    Query(query): Query<ArchQuery>,
) -> Result<Response, ApiError> {
    let (image, located) = resolve(
        &state,
        user.as_ref(),
        &reference,
        query.arch.as_deref(),
        true,
    )
    .await?;
    if method == Method::HEAD {
        return Ok(file_headers(
            StatusCode::OK,
            u64::try_from(image.size).unwrap_or(0),
        ));
    }
    state.store.count_download(&located.container.id).await?;
    match state.library.download {
        DownloadMode::Stream => serve(&state, &image, None).await,
        DownloadMode::Redirect => {
            // SigV4 presigned URLs live at most 7 days.
            let ttl = Duration::from_secs(state.library.url_ttl_seconds.min(MAX_PRESIGNED_SECONDS));
            // S3 serves the ranges itself through a presigned URL; the scheduler's own
            // capability URL otherwise.
            let presigned = state
                .objects
                .presigned_get(&image.object_key, ttl)
                .await
                .map_err(ApiError::internal)?;
            let location = match presigned {
                Some(url) => url,
                None => {
                    let token = new_capability();
                    let expires_ms = after_seconds(&state, state.library.url_ttl_seconds);
                    state
                        .store
                        .insert_download(&token_hash(&token), &image.id, expires_ms)
                        .await?;
                    format!("{}/v1/library-blob/{token}", state.public_url)
                }
            };
            let mut response = StatusCode::SEE_OTHER.into_response();
            response.headers_mut().insert(
                LOCATION,
                HeaderValue::from_str(&location).map_err(ApiError::internal)?,
            );
            Ok(response)
        }
    }
}

/// `GET /v1/library-blob/{token}`: the 303 target; no token header needed (generation B sends
/// none), the URL is the capability.
pub async fn ranged(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let image = state
        .store
        .download_image(&token_hash(&token), state.clock.now_ms())
        .await?
        .ok_or_else(|| not_found("download"))?;
    let range = match headers.get(RANGE) {
        None => None,
        Some(value) => {
            let total = u64::try_from(image.size).unwrap_or(0);
            match value.to_str().ok().and_then(|v| parse_range(v, total)) {
                Some(range) => Some(range),
                None => {
                    let mut response = ApiError::Rejected {
                        status: StatusCode::RANGE_NOT_SATISFIABLE,
                        message: format!("unsupported or unsatisfiable range for {total} bytes"),
                    }
                    .into_response();
                    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{total}")) {
                        response.headers_mut().insert(CONTENT_RANGE, value);
                    }
                    return Ok(response);
                }
            }
        }
    };
    serve(&state, &image, range).await
}

/// One range `bytes=S-E`, `bytes=S-` or `bytes=-N` within `total` bytes (end exclusive);
/// `None` for anything else (several ranges, other units, beyond the end).
pub fn parse_range(text: &str, total: u64) -> Option<Range<u64>> {
    let spec = text.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (total.saturating_sub(n), total)
        }
        (start, "") => (start.parse().ok()?, total),
        (start, end) => {
            let end: u64 = end.parse().ok()?;
            (start.parse().ok()?, end.saturating_add(1).min(total))
        }
    };
    (start < end && start < total).then_some(start..end)
}

/// The file, whole (200) or a range of it (206 with `Content-Range`).
async fn serve(
    state: &AppState,
    image: &ImageRow,
    range: Option<Range<u64>>,
) -> Result<Response, ApiError> {
    let read = state
        .objects
        .read(&image.object_key, range.clone())
        .await
        .map_err(|error| match error {
            ObjectsError::NotFound(_) => not_found("image file"),
            other => ApiError::internal(other),
        })?;
    let length = read.range.end - read.range.start;
    let status = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut response = file_headers(status, length);
    *response.body_mut() = Body::from_stream(read.stream);
    if range.is_some() {
        let value = format!(
            "bytes {}-{}/{}",
            read.range.start,
            read.range.end - 1,
            read.total
        );
        response.headers_mut().insert(
            CONTENT_RANGE,
            HeaderValue::from_str(&value).map_err(ApiError::internal)?,
        );
    }
    Ok(response)
}

/// An empty response with the headers of `length` bytes of a file.
fn file_headers(status: StatusCode, length: u64) -> Response {
    let mut response = status.into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive_and_clipped() {
        assert_eq!(parse_range("bytes=0-1024", 2000), Some(0..1025));
        assert_eq!(parse_range("bytes=1000-5000", 2000), Some(1000..2000));
        assert_eq!(parse_range("bytes=1990-", 2000), Some(1990..2000));
        assert_eq!(parse_range("bytes=-10", 2000), Some(1990..2000));
        assert_eq!(parse_range("bytes=2000-2001", 2000), None);
        assert_eq!(parse_range("bytes=0-1,4-5", 2000), None);
        assert_eq!(parse_range("items=0-1", 2000), None);
        assert_eq!(parse_range("bytes=5-1", 2000), None);
    }
}
