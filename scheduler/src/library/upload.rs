//! Image file uploads (library-api.md §6.1): v1 (`POST /v1/imagefile/{id}` with the file as the
//! body), v2 single part (`POST /v2/imagefile/{id}` → `uploadURL`, `PUT` there, `_complete`) and
//! v2 multipart (`_multipart` → parts, each `PUT` to its own URL, `_multipart_complete`).
//!
//! Upload URLs are capabilities: the client sends no token to them, so each carries a random
//! secret, stored only as its digest, that dies after the configured TTL. Every file is
//! streamed into the object store, hashed on the way, and committed only when its size is the
//! announced one and its SHA-256 is the image's `hash` (else 400/422 and nothing stays behind).
//! Quota is checked when an upload is announced (507 with the figures) and counts an image
//! from the moment its file is stored.
//!
//! Multipart parts in S3 go straight into one S3 multipart upload of the image's object (cut
//! into [`crate::objects::CHUNK_BYTES`] store parts, so memory stays bounded), and the file's
//! SHA-256 goes on through each part that arrives in order, its state kept in the upload's
//! row: completion then joins the parts in S3 without moving a byte. Parts out of order cost
//! one read of the joined file. In a local directory, each part is a file of its own and
//! completion copies them into the image's file, hashing on the way.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::ETAG;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use kiln_proto::http::library::{
    MultipartFinish, MultipartUpload, PartRequest, PartUrl, UploadComplete, UploadRequest,
    UploadUrl,
};
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest, Sha256};

use super::{ClientJson, after_seconds, check_quota, new_id, not_found, quota_of, writable_image};
use crate::api::{ApiError, AppState, AuthUser, data};
use crate::objects::{Objects, WriteError, store_parts_of};
use crate::secrets::{new_capability, token_hash};
use crate::store::{ImageRow, PartRow, UploadRow};

/// Smallest part a multipart upload may use but the last (S3's rule).
const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;

/// Most parts one multipart upload of the object store may have (S3's rule).
const MAX_STORE_PARTS: usize = 10_000;

fn write_error(error: WriteError) -> ApiError {
    match error {
        WriteError::TooLarge(limit) => {
            ApiError::TooLarge(format!("the upload is larger than {limit} bytes"))
        }
        WriteError::Source(_) => ApiError::BadRequest("the upload was cut short".into()),
        WriteError::Store(error) => ApiError::internal(error),
    }
}

/// Streams `source` into the image's object; commits it only when it has `expected` bytes
/// (when given) and the image's hash, then marks the image uploaded.
pub(super) async fn store_file<S, E>(
    state: &AppState,
    image: &ImageRow,
    source: S,
    expected: Option<u64>,
    max_bytes: u64,
) -> Result<u64, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::error::Error + Send + Sync + 'static,
{
    let limit = expected.unwrap_or(max_bytes).min(max_bytes);
    let pending = state
        .objects
        .write(&image.object_key, source, limit)
        .await
        .map_err(write_error)?;
    if let Some(expected) = expected.filter(|e| *e != pending.size) {
        let size = pending.size;
        pending.abort().await;
        return Err(ApiError::BadRequest(format!(
            "received {size} bytes, {expected} were announced"
        )));
    }
    if let Err(refused) = check_hash(image, &format!("sha256.{}", pending.sha256)) {
        pending.abort().await;
        return Err(refused);
    }
    let size = pending.size;
    pending.commit().await.map_err(write_error)?;
    state
        .store
        .mark_uploaded(&image.id, i64::try_from(size).unwrap_or(i64::MAX))
        .await?;
    tracing::info!(image_id = %image.id, size, "library image stored");
    Ok(size)
}

fn check_not_uploaded(image: &ImageRow) -> Result<(), ApiError> {
    if image.uploaded {
        Err(ApiError::Conflict(format!(
            "image {} is uploaded already",
            image.id
        )))
    } else {
        Ok(())
    }
}

fn check_size(state: &AppState, filesize: i64) -> Result<u64, ApiError> {
    let size = u64::try_from(filesize)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid filesize {filesize}")))?;
    if size > state.limits.max_image_bytes {
        return Err(ApiError::TooLarge(format!(
            "the image is larger than {} bytes",
            state.limits.max_image_bytes
        )));
    }
    Ok(size)
}

/// The most a user may still store, given the quota (for uploads that announce no size).
async fn room_left(state: &AppState, owner_id: i64) -> Result<u64, ApiError> {
    let quota = quota_of(state, owner_id).await?;
    let max = state.limits.max_image_bytes;
    if quota.quota_total <= 0 {
        return Ok(max);
    }
    Ok(u64::try_from(quota.quota_total - quota.quota_usage)
        .unwrap_or(0)
        .min(max))
}

/// `POST /v1/imagefile/{id}`: the v1 upload, the file as the body; 200 (§6.1).
pub async fn upload_v1(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let (image, located) = writable_image(&state, &user, &id).await?;
    check_not_uploaded(&image)?;
    let room = room_left(&state, located.entity.owner_id).await?;
    match store_file(&state, &image, body.into_data_stream(), None, room).await {
        Err(ApiError::TooLarge(_)) if room < state.limits.max_image_bytes => {
            let quota = quota_of(&state, located.entity.owner_id).await?;
            Err(ApiError::InsufficientStorage(format!(
                "storage quota exceeded: {} of {} bytes used",
                quota.quota_usage, quota.quota_total
            )))
        }
        Err(error) => Err(error),
        Ok(_) => Ok(data(StatusCode::OK, serde_json::json!({}))),
    }
}

/// `POST /v2/imagefile/{id}` `{"filesize","sha256sum","md5sum"}` → `{"uploadURL"}`.
pub async fn start(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    ClientJson(body): ClientJson<UploadRequest>,
) -> Result<Response, ApiError> {
    let (image, located) = writable_image(&state, &user, &id).await?;
    check_not_uploaded(&image)?;
    let size = check_size(&state, body.filesize)?;
    if let Some(sum) = body.sha256sum.as_deref().filter(|s| !s.is_empty())
        && format!("sha256.{sum}") != image.hash
    {
        return Err(ApiError::BadRequest(format!(
            "sha256sum {sum} is not the image's hash {}",
            image.hash
        )));
    }
    check_quota(&state, located.entity.owner_id, body.filesize).await?;
    let token = new_capability();
    let upload = UploadRow {
        id: new_id(&state),
        image_id: image.id.clone(),
        is_multipart: false,
        size: i64::try_from(size).unwrap_or(i64::MAX),
        part_size: 0,
        expires_ms: after_seconds(&state, state.library.url_ttl_seconds),
        store_upload_id: None,
        hashed_parts: 0,
        hash_state: None,
    };
    state
        .store
        .insert_upload(&upload, &token_hash(&token))
        .await?;
    Ok(data(
        StatusCode::OK,
        UploadUrl {
            upload_url: format!("{}/v1/library-upload/{token}", state.public_url),
        },
    ))
}

/// `PUT {uploadURL}`: the file; 200 (201 and 204 fail the client, §9.1 pitfall 3).
pub async fn receive(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let now_ms = state.clock.now_ms();
    let upload = state
        .store
        .upload_by_token(&token_hash(&token))
        .await?
        .filter(|u| !u.is_multipart && u.expires_ms >= now_ms)
        .ok_or_else(|| not_found("upload"))?;
    let image = state
        .store
        .image_by_id(&upload.image_id)
        .await?
        .ok_or_else(|| not_found("image"))?;
    check_not_uploaded(&image)?;
    let expected = u64::try_from(upload.size).unwrap_or(0);
    store_file(
        &state,
        &image,
        body.into_data_stream(),
        Some(expected),
        state.limits.max_image_bytes,
    )
    .await?;
    state.store.delete_upload(&upload.id).await?;
    Ok(StatusCode::OK.into_response())
}

async fn complete_answer(
    state: &AppState,
    user_id: i64,
    path: String,
) -> Result<Response, ApiError> {
    Ok(data(
        StatusCode::OK,
        UploadComplete {
            quota: quota_of(state, user_id).await?,
            container_url: path,
        },
    ))
}

/// `PUT /v2/imagefile/{id}/_complete` → quota and container URL, which push prints.
pub async fn complete(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (image, located) = writable_image(&state, &user, &id).await?;
    if !image.uploaded {
        return Err(ApiError::BadRequest(format!(
            "image {} has no file yet: PUT it to the upload URL first",
            image.id
        )));
    }
    complete_answer(&state, located.entity.owner_id, located.url_path()).await
}

/// `POST /v2/imagefile/{id}/_multipart` `{"filesize"}` → upload id, part size and count.
pub async fn start_multipart(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    ClientJson(body): ClientJson<UploadRequest>,
) -> Result<Response, ApiError> {
    let (image, located) = writable_image(&state, &user, &id).await?;
    check_not_uploaded(&image)?;
    let size = check_size(&state, body.filesize)?;
    check_quota(&state, located.entity.owner_id, body.filesize).await?;
    let part_size = state.library.part_size_bytes.max(MIN_PART_BYTES);
    let total_parts = size.div_ceil(part_size);
    let store_upload_id = if state.objects.has_direct_parts() {
        let last = size - (total_parts - 1) * part_size;
        let store_parts = usize::try_from(total_parts - 1)
            .unwrap_or(usize::MAX)
            .saturating_mul(store_parts_of(part_size))
            .saturating_add(store_parts_of(last));
        if store_parts > MAX_STORE_PARTS {
            return Err(ApiError::TooLarge(format!(
                "the image needs {store_parts} object store parts, at most {MAX_STORE_PARTS} \
                 are possible"
            )));
        }
        Some(
            state
                .objects
                .start_parts(&image.object_key)
                .await
                .map_err(ApiError::internal)?,
        )
    } else {
        None
    };
    let upload = UploadRow {
        id: new_id(&state),
        image_id: image.id.clone(),
        is_multipart: true,
        size: i64::try_from(size).unwrap_or(i64::MAX),
        part_size: i64::try_from(part_size).unwrap_or(i64::MAX),
        expires_ms: after_seconds(&state, state.library.url_ttl_seconds),
        store_upload_id,
        hashed_parts: 0,
        hash_state: None,
    };
    // The multipart capabilities are per part (`part_url`); this one only fills the column.
    if let Err(error) = state
        .store
        .insert_upload(&upload, &token_hash(&new_capability()))
        .await
    {
        drop_store_upload(&state, &image, &upload).await;
        return Err(error.into());
    }
    Ok(data(
        StatusCode::OK,
        MultipartUpload {
            upload_id: upload.id,
            total_parts: i64::try_from(total_parts).unwrap_or(i64::MAX),
            part_size: upload.part_size,
            // We check each part's SHA-256 ourselves when the client sends it; "false" keeps
            // it from adding S3's signed-payload header that our URLs do not need.
            options: [("s3compliant".to_owned(), "false".to_owned())].into(),
        },
    ))
}

async fn live_upload(
    state: &AppState,
    image: &ImageRow,
    upload_id: &str,
) -> Result<UploadRow, ApiError> {
    let now_ms = state.clock.now_ms();
    state
        .store
        .upload_by_id(upload_id, &image.id)
        .await?
        .filter(|u| u.is_multipart && u.expires_ms >= now_ms)
        .ok_or_else(|| not_found("upload"))
}

/// Bytes part `number` (1-based) of `upload` must have.
fn part_length(upload: &UploadRow, number: i64) -> Option<i64> {
    if upload.part_size <= 0 || number < 1 {
        return None;
    }
    let start = (number - 1).checked_mul(upload.part_size)?;
    (start < upload.size).then(|| (upload.size - start).min(upload.part_size))
}

fn part_key(upload_id: &str, number: i64) -> String {
    format!("uploads/{upload_id}/{number:05}")
}

/// `PUT /v2/imagefile/{id}/_multipart` `{"partSize","uploadID","partNumber","sha256sum"}` →
/// `{"presignedURL"}` for that part.
pub async fn part_url(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    ClientJson(body): ClientJson<PartRequest>,
) -> Result<Response, ApiError> {
    let (image, _) = writable_image(&state, &user, &id).await?;
    let upload = live_upload(&state, &image, &body.upload_id).await?;
    let length = part_length(&upload, body.part_number)
        .filter(|l| *l == body.part_size)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "part {} of {} bytes does not fit this upload",
                body.part_number, body.part_size
            ))
        })?;
    let token = new_capability();
    state
        .store
        .insert_part_url(&token_hash(&token), &upload.id, body.part_number, length)
        .await?;
    Ok(data(
        StatusCode::OK,
        PartUrl {
            presigned_url: format!("{}/v1/library-part/{token}", state.public_url),
        },
    ))
}

/// `PUT {presignedURL}`: one part; 200 with its `ETag` (quoted hex SHA-256 of the part).
pub async fn receive_part(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let now_ms = state.clock.now_ms();
    let (upload, number, length) = state
        .store
        .part_url(&token_hash(&token))
        .await?
        .filter(|(u, _, _)| u.expires_ms >= now_ms)
        .ok_or_else(|| not_found("upload"))?;
    let expected = u64::try_from(length).unwrap_or(0);
    let short = |size: u64| {
        ApiError::BadRequest(format!(
            "part {number} has {size} bytes, {expected} were announced"
        ))
    };
    let (etag, store_parts, file_hash) = match &upload.store_upload_id {
        Some(store_upload_id) => {
            let image = state
                .store
                .image_by_id(&upload.image_id)
                .await?
                .ok_or_else(|| not_found("image"))?;
            let mut part_hash = Sha256::new();
            // The file's hash goes on through this part when it went through the ones before.
            let mut file_hash = if number == upload.hashed_parts + 1 {
                resume_hash(upload.hash_state.as_deref())
            } else {
                None
            };
            let part_size = u64::try_from(upload.part_size).unwrap_or(0);
            let first_index = usize::try_from(number - 1)
                .unwrap_or(usize::MAX)
                .saturating_mul(store_parts_of(part_size));
            let (received, ids) = state
                .objects
                .put_parts(
                    &image.object_key,
                    store_upload_id,
                    first_index,
                    expected,
                    body.into_data_stream(),
                    &mut |bytes| {
                        part_hash.update(bytes);
                        if let Some(hash) = file_hash.as_mut() {
                            hash.update(bytes);
                        }
                    },
                )
                .await
                .map_err(write_error)?;
            if received != expected {
                return Err(short(received));
            }
            let etag = format!("\"{}\"", hex::encode(part_hash.finalize()));
            (etag, ids, file_hash)
        }
        None => {
            let pending = state
                .objects
                .write(
                    &part_key(&upload.id, number),
                    body.into_data_stream(),
                    expected,
                )
                .await
                .map_err(write_error)?;
            if pending.size != expected {
                let size = pending.size;
                pending.abort().await;
                return Err(short(size));
            }
            let etag = format!("\"{}\"", pending.sha256);
            pending.commit().await.map_err(write_error)?;
            (etag, Vec::new(), None)
        }
    };
    state
        .store
        .put_part(
            &upload.id,
            &PartRow {
                part_number: number,
                size: length,
                etag: etag.clone(),
                store_parts,
            },
        )
        .await?;
    if let Some(hash) = file_hash {
        let hash_state = hex::encode(hash.serialize().as_slice());
        state
            .store
            .advance_upload_hash(&upload.id, number, &hash_state)
            .await?;
    } else if number <= upload.hashed_parts {
        // A part sent again after it went through the file's hash: completion reads the file.
        state.store.reset_upload_hash(&upload.id).await?;
    }
    let mut response = StatusCode::OK.into_response();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(ETAG, value);
    }
    Ok(response)
}

/// `PUT /v2/imagefile/{id}/_multipart_complete` `{"uploadID","completedParts"}`: joins the
/// parts into the image's file (checked like a single upload), then drops them.
pub async fn complete_multipart(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    ClientJson(body): ClientJson<MultipartFinish>,
) -> Result<Response, ApiError> {
    let (image, located) = writable_image(&state, &user, &id).await?;
    check_not_uploaded(&image)?;
    let upload = live_upload(&state, &image, &body.upload_id).await?;
    let parts = state.store.parts_of(&upload.id).await?;
    let part_size = upload.part_size.max(1);
    let total = (upload.size + part_size - 1) / part_size;
    let unquote = |t: &str| t.trim().trim_matches('"').to_owned();
    let complete = i64::try_from(parts.len()).ok() == Some(total)
        && parts
            .iter()
            .zip(1..)
            .all(|(p, n)| p.part_number == n && Some(p.size) == part_length(&upload, n))
        && body.completed_parts.len() == parts.len()
        && body.completed_parts.iter().all(|c| {
            parts
                .iter()
                .any(|p| p.part_number == c.part_number && unquote(&p.etag) == unquote(&c.token))
        });
    if !complete {
        return Err(ApiError::BadRequest(format!(
            "upload {} is missing parts or their ETags do not match",
            upload.id
        )));
    }
    if let Some(store_upload_id) = &upload.store_upload_id {
        let finished = finish_direct_parts(&state, &image, &upload, store_upload_id, &parts).await;
        if finished.is_err() {
            drop_store_upload(&state, &image, &upload).await;
        }
        state.store.delete_upload(&upload.id).await?;
        finished?;
        return complete_answer(&state, located.entity.owner_id, located.url_path()).await;
    }
    let keys: Vec<String> = parts
        .iter()
        .map(|p| part_key(&upload.id, p.part_number))
        .collect();
    let joined = joined_parts(state.objects.clone(), keys);
    let stored = store_file(
        &state,
        &image,
        joined,
        Some(u64::try_from(upload.size).unwrap_or(0)),
        state.limits.max_image_bytes,
    )
    .await;
    drop_upload(&state, &upload, &parts).await?;
    stored?;
    complete_answer(&state, located.entity.owner_id, located.url_path()).await
}

/// Joins the parts that went straight into the store's multipart upload and checks the
/// file's hash: from the hash that went through the parts as they arrived when they arrived
/// in order (before anything becomes visible), else by reading the joined file once (and
/// deleting it when it is wrong). Marks the image uploaded.
async fn finish_direct_parts(
    state: &AppState,
    image: &ImageRow,
    upload: &UploadRow,
    store_upload_id: &str,
    parts: &[PartRow],
) -> Result<(), ApiError> {
    let size = u64::try_from(upload.size).unwrap_or(0);
    let ids: Vec<String> = parts
        .iter()
        .flat_map(|p| p.store_parts.iter().cloned())
        .collect();
    let hashed = i64::try_from(parts.len()).ok() == Some(upload.hashed_parts);
    let running = resume_hash(upload.hash_state.as_deref()).filter(|_| hashed);
    if let Some(hash) = running {
        check_hash(image, &format!("sha256.{}", hex::encode(hash.finalize())))?;
        state
            .objects
            .finish_parts(&image.object_key, store_upload_id, ids)
            .await
            .map_err(ApiError::internal)?;
    } else {
        state
            .objects
            .finish_parts(&image.object_key, store_upload_id, ids)
            .await
            .map_err(ApiError::internal)?;
        let checked = match hash_object(state, &image.object_key).await {
            Ok((read, _)) if read != size => Err(ApiError::BadRequest(format!(
                "the joined parts have {read} bytes, {size} were announced"
            ))),
            Ok((_, hash)) => check_hash(image, &hash),
            Err(error) => Err(error),
        };
        if checked.is_err()
            && let Err(error) = state.objects.delete(&image.object_key).await
        {
            tracing::warn!(image_id = %image.id, error = %error, "could not delete a refused file");
        }
        checked?;
    }
    state.store.mark_uploaded(&image.id, upload.size).await?;
    tracing::info!(image_id = %image.id, size, in_order = hashed, "library image stored from direct parts");
    Ok(())
}

/// Size and `sha256.<hex>` of an object, read once.
async fn hash_object(state: &AppState, key: &str) -> Result<(u64, String), ApiError> {
    let read = state
        .objects
        .read(key, None)
        .await
        .map_err(ApiError::internal)?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut stream = read.stream;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ApiError::internal)?;
        size += chunk.len() as u64;
        hash.update(&chunk);
    }
    Ok((size, format!("sha256.{}", hex::encode(hash.finalize()))))
}

/// 422 unless `hash` is the image's.
fn check_hash(image: &ImageRow, hash: &str) -> Result<(), ApiError> {
    if hash == image.hash {
        return Ok(());
    }
    Err(ApiError::Rejected {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: format!(
            "the file's hash is {hash}, the image was created with {}",
            image.hash
        ),
    })
}

/// The running hash of an upload from its stored state; a new one before the first part.
fn resume_hash(state: Option<&str>) -> Option<Sha256> {
    let Some(state) = state else {
        return Some(Sha256::new());
    };
    let bytes = hex::decode(state).ok()?;
    let serialized = SerializedState::<Sha256>::try_from(bytes.as_slice()).ok()?;
    Sha256::deserialize(&serialized).ok()
}

/// Throws away the store's multipart upload of `upload`, if it has one (logged on failure:
/// S3 drops abandoned uploads by its own lifecycle rules at worst).
async fn drop_store_upload(state: &AppState, image: &ImageRow, upload: &UploadRow) {
    if let Some(store_upload_id) = &upload.store_upload_id
        && let Err(error) = state
            .objects
            .abort_parts(&image.object_key, store_upload_id)
            .await
    {
        tracing::warn!(upload_id = %upload.id, error = %error, "could not abort a store upload");
    }
}

/// The part files one after the other, as one stream. Boxed: inside a handler, the unnamed
/// closure and future types would not prove `Send` for every lifetime axum asks about.
fn joined_parts(
    objects: Objects,
    keys: Vec<String>,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    futures::stream::iter(keys)
        .then(move |key| {
            let objects = objects.clone();
            async move {
                objects
                    .read(&key, None)
                    .await
                    .map(|read| read.stream)
                    .map_err(std::io::Error::other)
            }
        })
        .try_flatten()
        .boxed()
}

/// Deletes an upload's parts (files, or the store's multipart upload) and rows.
pub(super) async fn drop_upload(
    state: &AppState,
    upload: &UploadRow,
    parts: &[PartRow],
) -> Result<(), ApiError> {
    if upload.store_upload_id.is_some() {
        if let Some(image) = state.store.image_by_id(&upload.image_id).await? {
            drop_store_upload(state, &image, upload).await;
        }
        state.store.delete_upload(&upload.id).await?;
        return Ok(());
    }
    for part in parts {
        if let Err(error) = state
            .objects
            .delete(&part_key(&upload.id, part.part_number))
            .await
        {
            tracing::warn!(upload_id = %upload.id, error = %error, "could not delete a part");
        }
    }
    state.store.delete_upload(&upload.id).await?;
    Ok(())
}

/// `PUT /v2/imagefile/{id}/_multipart_abort` `{"uploadID"}`: drops the parts; 200.
pub async fn abort_multipart(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    ClientJson(body): ClientJson<MultipartFinish>,
) -> Result<Response, ApiError> {
    let (image, _) = writable_image(&state, &user, &id).await?;
    let upload = live_upload(&state, &image, &body.upload_id).await?;
    let parts = state.store.parts_of(&upload.id).await?;
    drop_upload(&state, &upload, &parts).await?;
    Ok(data(StatusCode::OK, serde_json::json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_file_exactly() {
        let upload = UploadRow {
            id: "u".into(),
            image_id: "i".into(),
            is_multipart: true,
            size: 25,
            part_size: 10,
            expires_ms: 0,
            store_upload_id: None,
            hashed_parts: 0,
            hash_state: None,
        };
        assert_eq!(part_length(&upload, 1), Some(10));
        assert_eq!(part_length(&upload, 3), Some(5));
        assert_eq!(part_length(&upload, 4), None);
        assert_eq!(part_length(&upload, 0), None);
    }

    #[test]
    fn the_running_hash_survives_its_stored_state() {
        let file: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let mut state = None;
        for part in file.chunks(30_001) {
            let mut hash = resume_hash(state.as_deref()).unwrap();
            hash.update(part);
            state = Some(hex::encode(hash.serialize().as_slice()));
        }
        let resumed = resume_hash(state.as_deref()).unwrap().finalize();
        assert_eq!(resumed, Sha256::digest(&file));
        assert!(resume_hash(Some("00")).is_none());
    }
}
