//! Remote build results in the library, and the library's housekeeping.
//!
//! The worker `PUT`s the finished SIF to its job's capability URL (`crate::api` `imagefile`),
//! which streams it to the object key [`result_key`] of the build: a redelivered job's second
//! upload replaces the first under the same key. When the build succeeds, the relay calls
//! [`publish_build_result`], which makes that file an image of the build's library ref (the
//! user's `libraryRef`, or the private, ephemeral `USER/remote-builds/rb-<id>` that expires
//! after the configured TTL) and tags it for the build's arch. The image row is keyed by the
//! build id, so publishing twice makes no second image.

use super::namespaces::{ensure_collection, ensure_container, ensure_entity, entity_owner_id};
use super::{after_seconds, check_quota, locate, new_id};
use crate::api::{ApiError, AppState};
use crate::library_ref::LibraryRef;
use crate::store::{BuildRow, ImageRow, StoreError, User};

/// Where the worker's upload of build `build_id` is kept.
pub fn result_key(build_id: &str) -> String {
    format!("results/{build_id}")
}

/// The collection of ephemeral remote-build results; private to their owner.
const EPHEMERAL_COLLECTION: &str = "remote-builds";

/// Makes the uploaded result of `build` an image at its library ref. Does nothing when the
/// build has no uploaded result or was published before.
///
/// # Errors
/// [`ApiError`] when the store fails or the ref is invalid;
/// [`ApiError::InsufficientStorage`], with the figures, when the image would take its owner
/// over their library quota: then the uploaded file is deleted and nothing is created.
pub async fn publish_build_result(state: &AppState, build: &BuildRow) -> Result<(), ApiError> {
    let (Some(size), Some(hash)) = (build.result_size, build.result_checksum.as_deref()) else {
        return Ok(());
    };
    if state.store.image_by_build(&build.id).await?.is_some() {
        return Ok(());
    }
    let library_ref = LibraryRef::parse(&build.library_ref).map_err(ApiError::BadRequest)?;
    let ephemeral =
        build.library_ref == LibraryRef::ephemeral(library_ref.entity(), &build.id).to_string();
    let owner = state
        .store
        .user_by_id(build.user_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("the build's owner is gone".into()))?;
    if let Err(refused) = check_result_quota(state, &owner, &library_ref, hash, size).await {
        // Nothing is kept: the build fails with the quota's figures as its reason.
        if let Err(error) = state.objects.delete(&result_key(&build.id)).await {
            tracing::warn!(build_id = %build.id, error = %error, "could not delete a refused result");
        }
        return Err(refused);
    }
    let entity = ensure_entity(state, &owner, library_ref.entity(), String::new(), false).await?;
    let collection = ensure_collection(
        state,
        &entity,
        library_ref.collection(),
        String::new(),
        entity.default_private || library_ref.collection() == EPHEMERAL_COLLECTION,
    )
    .await?;
    let container = ensure_container(
        state,
        &collection,
        library_ref.container(),
        String::new(),
        false,
    )
    .await?;
    let image = match state.store.image_by_hash(&container.id, hash).await? {
        // The same file again (a reproducible build): tag the image that has it.
        Some(existing) if existing.uploaded => {
            if let Err(error) = state.objects.delete(&result_key(&build.id)).await {
                tracing::warn!(build_id = %build.id, error = %error, "could not delete a duplicate result");
            }
            existing
        }
        stale => {
            if let Some(stale) = stale {
                // A push of this file that never finished: the build's file replaces it.
                super::images::delete_image(state, &stale).await?;
            }
            let row = ImageRow {
                id: new_id(state),
                container_id: container.id.clone(),
                hash: hash.to_owned(),
                description: format!("remote build {}", build.id),
                arch: build.arch.clone(),
                size: i64::try_from(size).unwrap_or(i64::MAX),
                uploaded: true,
                object_key: result_key(&build.id),
                build_id: Some(build.id.clone()),
                expires_ms: ephemeral
                    .then(|| after_seconds(state, state.library.ephemeral_ttl_seconds)),
                created_ms: state.clock.now_ms(),
            };
            state.store.insert_image(&row).await?;
            row
        }
    };
    let tag = library_ref.tag();
    state
        .store
        .set_tag(&container.id, &build.arch, tag, &image.id)
        .await?;
    state
        .store
        .set_tag(&container.id, "", tag, &image.id)
        .await?;
    tracing::info!(build_id = %build.id, image_id = %image.id, library_ref = %build.library_ref, "build result published");
    Ok(())
}

/// 507 when the result would take the owner of its entity over their library quota; a file
/// the container holds already costs nothing.
async fn check_result_quota(
    state: &AppState,
    owner: &User,
    library_ref: &LibraryRef,
    hash: &str,
    size: u64,
) -> Result<(), ApiError> {
    let located = locate(
        &state.store,
        library_ref.entity(),
        library_ref.collection(),
        library_ref.container(),
    )
    .await?;
    if let Some(located) = &located
        && let Some(image) = state
            .store
            .image_by_hash(&located.container.id, hash)
            .await?
        && image.uploaded
    {
        return Ok(());
    }
    let owner_id = match &located {
        Some(located) => located.entity.owner_id,
        None => entity_owner_id(state, owner, library_ref.entity()).await?,
    };
    check_quota(state, owner_id, i64::try_from(size).unwrap_or(i64::MAX))
        .await
        .map_err(|error| match error {
            ApiError::InsufficientStorage(figures) => ApiError::InsufficientStorage(format!(
                "the image ({size} bytes) does not fit in the library: {figures}"
            )),
            other => other,
        })
}

/// Deletes expired ephemeral images, uploads whose URLs died, and dead download capabilities.
/// Returns how many images went.
///
/// # Errors
/// The first failed query.
pub async fn sweep_library(state: &AppState) -> Result<usize, StoreError> {
    let now_ms = state.clock.now_ms();
    let mut removed = 0;
    for image in state.store.expired_images(now_ms).await? {
        state.store.delete_image(&image.id).await?;
        if let Err(error) = state.objects.delete(&image.object_key).await {
            tracing::warn!(image_id = %image.id, error = %error, "could not delete an expired image file");
        }
        tracing::info!(image_id = %image.id, "expired library image deleted");
        removed += 1;
    }
    for upload in state.store.expired_uploads(now_ms).await? {
        let parts = state.store.parts_of(&upload.id).await?;
        if let Err(error) = super::upload::drop_upload(state, &upload, &parts).await {
            tracing::warn!(upload_id = %upload.id, error = %error, "could not drop an expired upload");
        }
    }
    state.store.delete_expired_downloads(now_ms).await?;
    Ok(removed)
}
