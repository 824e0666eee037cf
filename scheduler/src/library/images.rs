//! Images, tags and search (library-api.md §5.5–5.7).
//!
//! A ref resolves as Hinkskalle resolves it (§5.5): `sha256.<hex>` is the image with that hash
//! in the container whatever the arch (push looks it up before the image has an arch); a tag
//! with an arch is the arch tag; a tag without one is the arch-less tag of old clients.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use kiln_proto::http::library::{ArchTagMap, NewImage, SearchResults, TagMap, TagRequest};
use serde::Deserialize;

use super::refs::{ImageRef, Selector, is_tag};
use super::{
    ClientJson, Located, MaybeUser, collection_json, container_json, entity_json, image_json,
    locate, locate_container, new_id, not_found, not_owner, owns, quota_of, writable_image,
};
use crate::api::{ApiError, AppState, AuthUser, data};
use crate::store::{CollectionRow, ContainerRow, EntityRow, ImageRow, User};
use crate::upload::is_digest;

/// The query of image look-ups and downloads.
#[derive(Debug, Default, Deserialize)]
pub struct ArchQuery {
    /// Go architecture name; empty or absent means the arch-less tags.
    #[serde(default)]
    pub arch: Option<String>,
}

/// Most images a search answers.
const MAX_SEARCH_RESULTS: i64 = 200;

/// Most entities, collections and containers (each) a search answers.
const MAX_NAMESPACE_RESULTS: i64 = 50;

/// The image a ref names, if `user` may read it; `uploaded_only` hides images whose file has
/// not arrived (downloads), while push needs to see them (§5.5).
pub async fn resolve(
    state: &AppState,
    user: Option<&User>,
    reference: &str,
    arch: Option<&str>,
    uploaded_only: bool,
) -> Result<(ImageRow, Located), ApiError> {
    let missing = || not_found("image");
    let image_ref =
        ImageRef::parse(reference, &state.library.default_entity).ok_or_else(missing)?;
    let located = locate(
        &state.store,
        &image_ref.entity,
        &image_ref.collection,
        &image_ref.container,
    )
    .await?
    .filter(|l| l.is_readable(user))
    .ok_or_else(missing)?;
    let container_id = &located.container.id;
    let arch = arch.unwrap_or_default();
    let image = match &image_ref.selector {
        Selector::Hash(hash) => state.store.image_by_hash(container_id, hash).await?,
        Selector::Tag(tag) => state.store.image_by_tag(container_id, arch, tag).await?,
    }
    .filter(|i| i.uploaded || !uploaded_only)
    .ok_or_else(missing)?;
    Ok((image, located))
}

/// `GET /v1/images/{ref}?arch=`.
pub async fn get(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Path(reference): Path<String>,
    Query(query): Query<ArchQuery>,
) -> Result<Response, ApiError> {
    let (image, located) = resolve(
        &state,
        user.as_ref(),
        &reference,
        query.arch.as_deref(),
        false,
    )
    .await?;
    let tags = state.store.tags_of(&located.container.id).await?;
    Ok(data(StatusCode::OK, image_json(&located, &image, &tags)))
}

/// `POST /v1/images`: an image row waiting for its file (`uploaded: false`).
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ClientJson(body): ClientJson<NewImage>,
) -> Result<Response, ApiError> {
    if !is_digest(&body.hash) {
        return Err(ApiError::BadRequest(format!(
            "invalid image hash {:?}: expected sha256.<64 lowercase hex digits>",
            body.hash
        )));
    }
    let located = locate_container(&state.store, &body.container)
        .await?
        .filter(|l| l.is_readable(Some(&user)))
        .ok_or_else(|| not_found("container"))?;
    if !located.is_owner(Some(&user)) {
        return Err(not_owner(&located.entity.name));
    }
    let id = new_id(&state);
    let row = ImageRow {
        id: id.clone(),
        container_id: located.container.id.clone(),
        hash: body.hash.clone(),
        description: body
            .description
            .unwrap_or_default()
            .chars()
            .take(1024)
            .collect(),
        arch: String::new(),
        size: 0,
        uploaded: false,
        object_key: format!("images/{id}"),
        build_id: None,
        expires_ms: None,
        created_ms: state.clock.now_ms(),
    };
    // A second push of the same file finds the first image (the client only posts after a
    // 404, so this is a race between two pushes).
    state.store.insert_image(&row).await?;
    let image = state
        .store
        .image_by_hash(&located.container.id, &body.hash)
        .await?
        .ok_or_else(|| not_found("image"))?;
    Ok(data(StatusCode::OK, image_json(&located, &image, &[])))
}

/// `DELETE /v1/images/{ref}?arch=`: removes the image, its tags and its file, which frees its
/// bytes from the owner's quota.
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(reference): Path<String>,
    Query(query): Query<ArchQuery>,
) -> Result<Response, ApiError> {
    let (image, located) = resolve(
        &state,
        Some(&user),
        &reference,
        query.arch.as_deref(),
        false,
    )
    .await?;
    if !located.is_owner(Some(&user)) {
        return Err(not_owner(&located.entity.name));
    }
    delete_image(&state, &image).await?;
    tracing::info!(image_id = %image.id, user = %user.name, "library image deleted");
    Ok(data(StatusCode::OK, serde_json::json!({})))
}

/// Removes an image's rows, then its file (a file without rows is harmless, the reverse is
/// not), and the object store's side of its uploads in flight.
pub async fn delete_image(state: &AppState, image: &ImageRow) -> Result<(), ApiError> {
    for upload in state.store.uploads_of(&image.id).await? {
        let parts = state.store.parts_of(&upload.id).await?;
        super::upload::drop_upload(state, &upload, &parts).await?;
    }
    state.store.delete_image(&image.id).await?;
    if let Err(error) = state.objects.delete(&image.object_key).await {
        tracing::warn!(key = %image.object_key, error = %error, "could not delete an image file");
    }
    Ok(())
}

async fn readable_container(
    state: &AppState,
    user: Option<&User>,
    id: &str,
) -> Result<Located, ApiError> {
    locate_container(&state.store, id)
        .await?
        .filter(|l| l.is_readable(user))
        .ok_or_else(|| not_found("container"))
}

/// `GET /v1/tags/{containerID}`: the arch-less tags.
pub async fn tags_v1(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let located = readable_container(&state, user.as_ref(), &id).await?;
    let tags: TagMap = state
        .store
        .tags_of(&located.container.id)
        .await?
        .into_iter()
        .filter(|t| t.arch.is_empty())
        .map(|t| (t.tag, t.image_id))
        .collect();
    Ok(data(StatusCode::OK, tags))
}

/// `GET /v2/tags/{containerID}`: arch → tag → image.
pub async fn tags_v2(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let located = readable_container(&state, user.as_ref(), &id).await?;
    let mut tags = ArchTagMap::new();
    for tag in state.store.tags_of(&located.container.id).await? {
        if !tag.arch.is_empty() {
            tags.entry(tag.arch)
                .or_default()
                .insert(tag.tag, tag.image_id);
        }
    }
    Ok(data(StatusCode::OK, tags))
}

/// `POST /v1/tags/{containerID}` `{"Tag","ImageID"}` → 200 (the client accepts nothing else).
pub async fn set_tag_v1(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    ClientJson(body): ClientJson<TagRequest>,
) -> Result<Response, ApiError> {
    set_tag(&state, &user, &id, None, &body).await
}

/// `POST /v2/tags/{containerID}` `{"Arch","Tag","ImageID"}` → 200; also gives the image its
/// arch, or a later `GET /v1/images/…:tag?arch=` would miss it (§9.1 pitfall 11).
pub async fn set_tag_v2(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    ClientJson(body): ClientJson<TagRequest>,
) -> Result<Response, ApiError> {
    let arch = body.arch.clone().unwrap_or_default();
    if !is_arch(&arch) {
        return Err(ApiError::BadRequest(format!(
            "invalid architecture {arch:?}"
        )));
    }
    set_tag(&state, &user, &id, Some(&arch), &body).await
}

/// A Go architecture name (`amd64`, `arm64`, `ppc64le`, …).
fn is_arch(arch: &str) -> bool {
    !arch.is_empty()
        && arch.len() <= 32
        && arch
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

async fn set_tag(
    state: &AppState,
    user: &User,
    container_id: &str,
    arch: Option<&str>,
    body: &TagRequest,
) -> Result<Response, ApiError> {
    if !is_tag(&body.tag) {
        return Err(ApiError::BadRequest(format!("invalid tag {:?}", body.tag)));
    }
    let (image, located) = writable_image(state, user, &body.image_id).await?;
    if located.container.id != container_id {
        return Err(ApiError::BadRequest(format!(
            "image {} is not in container {container_id}",
            image.id
        )));
    }
    if let Some(arch) = arch {
        state.store.set_image_arch(&image.id, arch).await?;
        state
            .store
            .set_tag(container_id, arch, &body.tag, &image.id)
            .await?;
    }
    // The arch-less tag follows the latest image tagged, for clients before arch tags.
    state
        .store
        .set_tag(container_id, "", &body.tag, &image.id)
        .await?;
    Ok(data(StatusCode::OK, serde_json::json!({})))
}

/// The query of `/v1/search`.
#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    /// What to look for (at least 3 characters).
    #[serde(default)]
    value: String,
    /// Comma-separated Go architecture names.
    #[serde(default)]
    arch: Option<String>,
    /// `true`: signed images only.
    #[serde(default)]
    signed: Option<String>,
}

/// `GET /v1/search?value=&arch=&signed=`: what contains `value` (case-insensitive) and the
/// caller may read: images by their names, description or hash, and without `arch` and
/// `signed` also entities, collections and containers by name (§5.6: with either, images
/// only). Kiln signs nothing yet, so `signed=true` finds nothing.
pub async fn search(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Query(query): Query<SearchQuery>,
) -> Result<Response, ApiError> {
    let needle = query.value.trim().to_lowercase();
    if needle.chars().count() < 3 {
        return Err(ApiError::BadRequest(
            "search value must be at least 3 characters".into(),
        ));
    }
    let arches: Vec<String> = query
        .arch
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    let mut results = SearchResults::default();
    if query.signed.as_deref() == Some("true") {
        return Ok(data(StatusCode::OK, results));
    }
    if arches.is_empty() && query.signed.is_none() {
        search_namespaces(&state, user.as_ref(), &needle, &mut results).await?;
    }
    let mut located_by_container: std::collections::HashMap<String, Option<Located>> =
        std::collections::HashMap::new();
    for image in state
        .store
        .search_images(&needle, MAX_SEARCH_RESULTS)
        .await?
    {
        if !arches.is_empty() && !arches.contains(&image.arch) {
            continue;
        }
        if !located_by_container.contains_key(&image.container_id) {
            let located = locate_container(&state.store, &image.container_id).await?;
            located_by_container.insert(image.container_id.clone(), located);
        }
        let Some(Some(located)) = located_by_container.get(&image.container_id) else {
            continue;
        };
        if !located.is_readable(user.as_ref()) {
            continue;
        }
        let tags = state.store.tags_of(&located.container.id).await?;
        results.image.push(image_json(located, &image, &tags));
    }
    Ok(data(StatusCode::OK, results))
}

/// Fills the entities, collections and containers of a search: names containing `needle`
/// that `user` may read, each with only the children `user` may read.
async fn search_namespaces(
    state: &AppState,
    user: Option<&User>,
    needle: &str,
    results: &mut SearchResults,
) -> Result<(), ApiError> {
    let store = &state.store;
    for entity in store.search_entities(needle, MAX_NAMESPACE_RESULTS).await? {
        let collections = readable_collections(state, user, &entity).await?;
        let quota = quota_of(state, entity.owner_id).await?;
        results
            .entity
            .push(entity_json(&entity, &collections, quota.quota_total));
    }
    for collection in store
        .search_collections(needle, user, MAX_NAMESPACE_RESULTS)
        .await?
    {
        let Some(entity) = store.entity_by_id(&collection.entity_id).await? else {
            continue;
        };
        let containers: Vec<ContainerRow> = store
            .containers_of(&collection.id)
            .await?
            .into_iter()
            .filter(|c| !c.private || owns(user, &entity))
            .collect();
        results
            .collection
            .push(collection_json(&entity, &collection, &containers));
    }
    for container in store
        .search_containers(needle, user, MAX_NAMESPACE_RESULTS)
        .await?
    {
        let Some(located) = locate_container(store, &container.id).await? else {
            continue;
        };
        let images = store.images_of(&container.id).await?;
        let tags = store.tags_of(&container.id).await?;
        results
            .container
            .push(container_json(&located, &images, &tags));
    }
    Ok(())
}

/// The collections of `entity` that `user` may read.
pub async fn readable_collections(
    state: &AppState,
    user: Option<&User>,
    entity: &EntityRow,
) -> Result<Vec<CollectionRow>, ApiError> {
    Ok(state
        .store
        .collections_of(&entity.id)
        .await?
        .into_iter()
        .filter(|c| !c.private || owns(user, entity))
        .collect())
}
