//! The worker's build result upload: the worker `PUT`s the finished SIF to the capability URL of
//! its job (`Job.result_url`, answered with 201 and the stored size and digest). The file is
//! streamed into the object store under the build's result key; once the build succeeds, the
//! relay publishes it as a library image (`crate::library::publish_build_result`), which the
//! client downloads with `GET /v1/imagefile/{ref}?arch=` like any other image.
//! `GET /v1/oci-redirect` answers 404, which makes the library client use the library API
//! (build-api.md §5.1).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use kiln_proto::http::StoredBlob;

use super::AppState;
use super::auth::running_build_with_capability;
use super::error::{ApiError, data};
use crate::library::result_key;
use crate::objects::WriteError;

/// `PUT /v1/build-result/{id}/{token}`: the worker's upload of the finished SIF of a queued or
/// running build (the token from the job is the capability). 201 with size and digest. A
/// redelivered job uploads again under the same key: the later file replaces the earlier.
pub async fn upload_result(
    State(state): State<AppState>,
    Path((id, token)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("build not found or not running".into());
    running_build_with_capability(&state, &id, &token)
        .await?
        .ok_or_else(not_found)?;
    let pending = state
        .objects
        .write(
            &result_key(&id),
            body.into_data_stream(),
            state.limits.max_image_bytes,
        )
        .await
        .map_err(|error| match error {
            WriteError::TooLarge(limit) => {
                ApiError::TooLarge(format!("the image is larger than {limit} bytes"))
            }
            WriteError::Source(_) => ApiError::BadRequest("the upload was cut short".into()),
            WriteError::Store(error) => ApiError::internal(error),
        })?;
    let blob = StoredBlob {
        size: pending.size,
        digest: format!("sha256.{}", pending.sha256),
    };
    pending.commit().await.map_err(ApiError::internal)?;
    if !state.store.set_result(&id, blob.size, &blob.digest).await? {
        // The build ended while the file arrived: nothing will publish it.
        let _ = state.objects.delete(&result_key(&id)).await;
        return Err(not_found());
    }
    tracing::info!(build_id = %id, size = blob.size, digest = %blob.digest, "build result stored");
    Ok(data(StatusCode::CREATED, blob))
}

/// `GET /v1/oci-redirect`: 404, so the library client uses the legacy download.
pub async fn oci_redirect() -> ApiError {
    ApiError::NotFound("this library has no OCI registry".into())
}
