//! Build contexts (build-api.md §4.5): `POST /v1/build-context` announces an archive by size
//! and digest and gets a one-time upload URL in `Location` (none when this user already
//! uploaded that digest); `PUT` to that URL stores it after checking size, digest and content;
//! `DELETE /v1/build-context/{digest}` removes it. Workers fetch it through a per-build
//! capability URL from their job. Archives live at `<data>/contexts/<user id>/<hex>.tar.gz`.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_proto::http::{BuildContextRequest, StoredBlob};
use tokio_util::io::ReaderStream;

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, AppJson, data};
use crate::context_archive;
use crate::secrets::{is_build_id, new_capability, token_hash};
use crate::store::ContextState;
use crate::upload::{UploadError, is_digest, receive};

fn archive_path(state: &AppState, user_id: i64, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256.");
    state.contexts_dir(user_id).join(format!("{hex}.tar.gz"))
}

fn check_digest(digest: &str) -> Result<(), ApiError> {
    if is_digest(digest) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid build context digest {digest:?}: expected sha256.<64 lowercase hex digits>"
        )))
    }
}

/// `POST /v1/build-context`: 202, with `Location` unless the archive is here already.
pub async fn announce(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    AppJson(request): AppJson<BuildContextRequest>,
) -> Result<Response, ApiError> {
    check_digest(&request.digest)?;
    if request.size == 0 {
        return Err(ApiError::BadRequest(
            "a build context cannot be empty".into(),
        ));
    }
    if request.size > state.limits.max_context_bytes {
        return Err(ApiError::TooLarge(format!(
            "the build context is {} bytes, the limit is {} bytes",
            request.size, state.limits.max_context_bytes
        )));
    }
    let now_ms = state.clock.now_ms();
    let existing = state.store.context(user.id, &request.digest).await?;
    let path = archive_path(&state, user.id, &request.digest);
    if existing.is_some_and(|c| c.state == ContextState::Ready && c.size == request.size)
        && tokio::fs::try_exists(&path).await?
    {
        state
            .store
            .touch_context(user.id, &request.digest, now_ms)
            .await?;
        return Ok(data(StatusCode::ACCEPTED, request));
    }
    let token = new_capability();
    state
        .store
        .put_pending_context(
            user.id,
            &request.digest,
            request.size,
            &token_hash(&token),
            now_ms,
        )
        .await?;
    let location = format!("{}/v1/build-context-upload/{token}", state.public_url);
    let mut response = data(StatusCode::ACCEPTED, request);
    response.headers_mut().insert(
        LOCATION,
        HeaderValue::from_str(&location).map_err(ApiError::internal)?,
    );
    Ok(response)
}

/// `PUT /v1/build-context-upload/{token}` (no `Authorization`: the token is the capability).
/// 201 once the archive is verified; on any failure nothing stays behind, not even the
/// announcement.
pub async fn upload(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let context = state
        .store
        .take_upload_token(&token_hash(&token))
        .await?
        .ok_or_else(|| ApiError::NotFound("upload location not found or used already".into()))?;
    let result = store_archive(&state, context.user_id, &context.digest, context.size, body).await;
    if result.is_err() {
        state
            .store
            .delete_context(context.user_id, &context.digest)
            .await?;
    }
    let blob = result?;
    state
        .store
        .mark_context_ready(context.user_id, &context.digest, state.clock.now_ms())
        .await?;
    tracing::info!(user_id = context.user_id, digest = %blob.digest, size = blob.size, "build context stored");
    Ok(data(StatusCode::CREATED, blob))
}

/// Receives, verifies and moves an archive into place.
async fn store_archive(
    state: &AppState,
    user_id: i64,
    digest: &str,
    size: u64,
    body: Body,
) -> Result<StoredBlob, ApiError> {
    let dir = state.contexts_dir(user_id);
    tokio::fs::create_dir_all(&dir).await?;
    let partial = dir.join(format!(".upload-{}", new_capability()));
    let blob = receive(body, &partial, size)
        .await
        .map_err(|error| match error {
            UploadError::TooLarge(_) => ApiError::TooLarge(format!(
                "the upload is larger than the announced {size} bytes"
            )),
            UploadError::Body(_) => ApiError::BadRequest("the upload was cut short".into()),
            UploadError::Io(error) => ApiError::internal(error),
        })?;
    let verified = verify(state, &partial, &blob, digest, size).await;
    if verified.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    verified?;
    tokio::fs::rename(&partial, archive_path(state, user_id, digest)).await?;
    Ok(blob)
}

async fn verify(
    state: &AppState,
    partial: &std::path::Path,
    blob: &StoredBlob,
    digest: &str,
    size: u64,
) -> Result<(), ApiError> {
    if blob.size != size {
        return Err(ApiError::BadRequest(format!(
            "the upload has {} bytes, {size} were announced",
            blob.size
        )));
    }
    if blob.digest != digest {
        return Err(ApiError::BadRequest(format!(
            "the upload has digest {}, {digest} was announced",
            blob.digest
        )));
    }
    let file = std::fs::File::open(partial)?;
    let max_unpacked = state.limits.max_context_unpacked_bytes;
    tokio::task::spawn_blocking(move || {
        context_archive::inspect(std::io::BufReader::new(file), max_unpacked)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    Ok(())
}

/// `DELETE /v1/build-context/{digest}`: removes one of the user's contexts (409 while a queued
/// or running build uses it; the collector removes it later).
pub async fn remove(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    check_digest(&digest)?;
    let context = state
        .store
        .context(user.id, &digest)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("build context {digest} not found")))?;
    if state.store.context_in_use(user.id, &digest).await? {
        return Err(ApiError::Conflict(format!(
            "build context {digest} is used by a queued or running build"
        )));
    }
    remove_context_files(&state, user.id, &digest).await?;
    state.store.delete_context(user.id, &digest).await?;
    Ok(data(
        StatusCode::OK,
        StoredBlob {
            size: context.size,
            digest,
        },
    ))
}

/// Deletes the archive of a context, if it is there.
pub async fn remove_context_files(
    state: &AppState,
    user_id: i64,
    digest: &str,
) -> std::io::Result<()> {
    match tokio::fs::remove_file(archive_path(state, user_id, digest)).await {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// `GET /v1/build-context-archive/{id}/{token}`: the context archive of a queued or running
/// build, for its worker (the token from the job is the capability).
pub async fn download(
    State(state): State<AppState>,
    Path((id, token)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("build context not found".into());
    if !is_build_id(&id) {
        return Err(not_found());
    }
    let row = state.store.build(&id).await?.ok_or_else(not_found)?;
    let authorized = row.context_token_hash.as_deref() == Some(token_hash(&token).as_str());
    let Some(digest) = row
        .context_digest
        .filter(|_| authorized && !row.state.is_final())
    else {
        return Err(not_found());
    };
    let file = tokio::fs::File::open(archive_path(&state, row.user_id, &digest))
        .await
        .map_err(|_| not_found())?;
    let length = file.metadata().await?.len();
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static("application/gzip")),
            (CONTENT_LENGTH, HeaderValue::from(length)),
        ],
        Body::from_stream(ReaderStream::new(file)),
    )
        .into_response())
}
