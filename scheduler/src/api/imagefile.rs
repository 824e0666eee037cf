//! Build results until the library API lands (issue #8): the worker `PUT`s the SIF to the
//! capability URL of its job, and the client downloads it with
//! `GET /v1/imagefile/{entity/collection/container:tag}?arch=` as a single 200 stream, the form
//! every client generation accepts (library-api.md §6.3). `GET /v1/oci-redirect` answers 404,
//! which makes the library client fall back to that legacy download (build-api.md §5.1).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio_util::io::ReaderStream;

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, data};
use crate::library_ref::LibraryRef;
use crate::secrets::{is_build_id, new_capability, token_hash};
use crate::upload::{UploadError, receive};

/// The query of `/v1/imagefile`.
#[derive(Debug, Deserialize)]
pub struct ImageQuery {
    /// Go architecture name; default: the deployment's first.
    arch: Option<String>,
}

/// `GET /v1/imagefile/{ref}?arch=`: the SIF of the user's latest succeeded build for that ref.
/// Results of remote builds are private: 401 without a token, 404 for anyone else's.
pub async fn download(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(reference): Path<String>,
    Query(query): Query<ImageQuery>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("requested image was not found in the library".into());
    let library_ref =
        LibraryRef::parse(reference.trim_start_matches('/')).map_err(|_| not_found())?;
    let arch = query
        .arch
        .filter(|a| !a.is_empty())
        .or_else(|| state.limits.arches.first().cloned())
        .unwrap_or_default();
    let row = state
        .store
        .succeeded_build_by_ref(user.id, &library_ref.to_string(), &arch)
        .await?
        .ok_or_else(not_found)?;
    let file = tokio::fs::File::open(result_path(&state, &row.id))
        .await
        .map_err(|_| not_found())?;
    let length = file.metadata().await?.len();
    Ok((
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (CONTENT_LENGTH, HeaderValue::from(length)),
        ],
        Body::from_stream(ReaderStream::new(file)),
    )
        .into_response())
}

fn result_path(state: &AppState, build_id: &str) -> std::path::PathBuf {
    state.results_dir().join(format!("{build_id}.sif"))
}

/// `PUT /v1/build-result/{id}/{token}`: the worker's upload of the finished SIF of a queued or
/// running build (the token from the job is the capability). 201 with size and digest.
pub async fn upload_result(
    State(state): State<AppState>,
    Path((id, token)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("build not found or not running".into());
    if !is_build_id(&id) {
        return Err(not_found());
    }
    let row = state.store.build(&id).await?.ok_or_else(not_found)?;
    if row.state.is_final() || row.result_token_hash.as_deref() != Some(token_hash(&token).as_str())
    {
        return Err(not_found());
    }
    let dir = state.results_dir();
    tokio::fs::create_dir_all(&dir).await?;
    let partial = dir.join(format!(".upload-{}", new_capability()));
    let blob = receive(body, &partial, state.limits.max_image_bytes)
        .await
        .map_err(|error| match error {
            UploadError::TooLarge(limit) => {
                ApiError::TooLarge(format!("the image is larger than {limit} bytes"))
            }
            UploadError::Body(_) => ApiError::BadRequest("the upload was cut short".into()),
            UploadError::Io(error) => ApiError::internal(error),
        })?;
    tokio::fs::rename(&partial, result_path(&state, &id)).await?;
    if !state.store.set_result(&id, blob.size, &blob.digest).await? {
        let _ = tokio::fs::remove_file(result_path(&state, &id)).await;
        return Err(not_found());
    }
    tracing::info!(build_id = %id, size = blob.size, digest = %blob.digest, "build result stored");
    Ok(data(StatusCode::CREATED, blob))
}

/// `GET /v1/oci-redirect`: 404, so the library client uses the legacy download.
pub async fn oci_redirect() -> ApiError {
    ApiError::NotFound("this library has no OCI registry".into())
}
