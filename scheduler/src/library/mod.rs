//! The library API (`library://`, library-api.md): entities, collections, containers, images,
//! tags, search, uploads and downloads, with the files in the object store (`crate::objects`)
//! and the rows in the store (`crate::store` `library`).
//!
//! Modules: `refs` (parsing `e/c/n:tag` and short refs), `namespaces` (entities, collections,
//! containers), `images` (image rows, tags, search, delete), `upload` (v1, v2 single part and
//! multipart), `download` (200 stream and 303 + ranged capability), `results` (remote build
//! results stored as library images, expiry of ephemeral ones).
//!
//! Access (§7): public content is readable without a token; private collections and containers
//! only by their owner (others get 404, which hides that they exist); every write needs a token
//! and ownership of the entity (403 otherwise).

mod download;
mod images;
mod namespaces;
mod refs;
mod results;
mod upload;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::{get, post, put};
use kiln_proto::http::library as wire;
use serde::de::DeserializeOwned;

use crate::api::{ApiError, AppState, authenticate, authenticate_reader};
use crate::clock::rfc3339;
use crate::store::{CollectionRow, ContainerRow, EntityRow, ImageRow, Store, TagRow, User};

pub use refs::ImageRef;
pub use results::{publish_build_result, result_key, sweep_library};

/// The library's JSON routes (merged into `crate::api::router` under its JSON body limit).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/entities", post(namespaces::create_entity))
        .route("/v1/entities/{name}", get(namespaces::entity))
        .route("/v1/collections", post(namespaces::create_collection))
        .route(
            "/v1/collections/{entity}/{collection}",
            get(namespaces::collection),
        )
        .route("/v1/containers", post(namespaces::create_container))
        .route(
            "/v1/containers/{entity}/{collection}/{container}",
            get(namespaces::container),
        )
        .route("/v1/images", post(images::create))
        .route(
            "/v1/images/{*reference}",
            get(images::get).delete(images::delete),
        )
        .route(
            "/v1/tags/{container}",
            get(images::tags_v1).post(images::set_tag_v1),
        )
        .route(
            "/v2/tags/{container}",
            get(images::tags_v2).post(images::set_tag_v2),
        )
        .route("/v1/search", get(images::search))
        .route("/v1/library-blob/{token}", get(download::ranged))
        .route("/v2/imagefile/{id}", post(upload::start))
        .route("/v2/imagefile/{id}/_complete", put(upload::complete))
        .route(
            "/v2/imagefile/{id}/_multipart",
            post(upload::start_multipart).put(upload::part_url),
        )
        .route(
            "/v2/imagefile/{id}/_multipart_complete",
            put(upload::complete_multipart),
        )
        .route(
            "/v2/imagefile/{id}/_multipart_abort",
            put(upload::abort_multipart),
        )
        // The keystore entry of the discovery document points here; until Kiln has a key
        // server, every HKP look-up misses, so unsigned images push and pull cleanly (§1).
        .route("/pks/lookup", get(no_keys))
}

/// The routes whose bodies are image files: no JSON size limit, they count against the
/// announced size and the image size limit instead.
pub fn file_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/imagefile/{*reference}",
            get(download::download).post(upload::upload_v1),
        )
        .route("/v1/library-upload/{token}", put(upload::receive))
        .route("/v1/library-part/{token}", put(upload::receive_part))
}

async fn no_keys() -> ApiError {
    ApiError::NotFound("no keys: this server has no key store".into())
}

/// A JSON body read whatever the `Content-Type` says: the library client sends none (§3), so
/// `axum::Json` would refuse every create with 415. An empty body reads as `{}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientJson<T>(pub T);

impl<S, T> FromRequest<S> for ClientJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::Rejected {
                status: rejection.status(),
                message: rejection.body_text(),
            })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(Self)
            .map_err(|error| ApiError::BadRequest(format!("invalid JSON body: {error}")))
    }
}

/// The user of a request if it carries a token: anonymous requests are allowed, but a token
/// that is present and wrong is refused with 401 rather than ignored. Without a token, a
/// plain read (GET, HEAD) by the web builder's pages counts as its signed-in user, so a
/// page's download link fetches a private build result.
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<User>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let is_read =
            parts.method == axum::http::Method::GET || parts.method == axum::http::Method::HEAD;
        match parts.headers.get(AUTHORIZATION) {
            // A running build's worker reads as the build's owner (`Bootstrap: library`).
            Some(header) if is_read => Ok(Self(Some(authenticate_reader(header, state).await?))),
            Some(header) => Ok(Self(Some(authenticate(header, state).await?))),
            None if is_read => {
                let session = crate::web::session::session_of(&parts.headers, state).await?;
                Ok(Self(session.map(|session| session.user)))
            }
            None => Ok(Self(None)),
        }
    }
}

/// An entity, a collection and a container, as one path names them.
#[derive(Debug, Clone)]
pub struct Located {
    /// The entity.
    pub entity: EntityRow,
    /// The collection.
    pub collection: CollectionRow,
    /// The container.
    pub container: ContainerRow,
}

impl Located {
    /// Whether `user` owns it (admins own everything).
    pub fn is_owner(&self, user: Option<&User>) -> bool {
        owns(user, &self.entity)
    }

    /// Whether `user` may read it.
    pub fn is_readable(&self, user: Option<&User>) -> bool {
        !(self.collection.private || self.container.private) || self.is_owner(user)
    }

    /// `library/<entity>/<collection>/<container>`, what push prints after the remote's URL.
    pub fn url_path(&self) -> String {
        format!(
            "library/{}/{}/{}",
            self.entity.name, self.collection.name, self.container.name
        )
    }
}

/// Whether `user` owns `entity` (admins own everything).
pub fn owns(user: Option<&User>, entity: &EntityRow) -> bool {
    user.is_some_and(|u| u.is_admin || u.id == entity.owner_id)
}

/// 403 for a write into someone else's entity.
pub fn not_owner(entity: &str) -> ApiError {
    ApiError::Forbidden(format!("entity {entity} belongs to another user"))
}

/// 404 for a library object, in the words the client prints.
pub fn not_found(what: &str) -> ApiError {
    ApiError::NotFound(format!("{what} not found"))
}

/// The entity, collection and container with these names, if they exist.
pub async fn locate(
    store: &Store,
    entity: &str,
    collection: &str,
    container: &str,
) -> Result<Option<Located>, ApiError> {
    let Some(entity) = store.entity_by_name(entity).await? else {
        return Ok(None);
    };
    let Some(collection) = store.collection_by_name(&entity.id, collection).await? else {
        return Ok(None);
    };
    let Some(container) = store.container_by_name(&collection.id, container).await? else {
        return Ok(None);
    };
    Ok(Some(Located {
        entity,
        collection,
        container,
    }))
}

/// The entity, collection and container of container id `id`.
pub async fn locate_container(store: &Store, id: &str) -> Result<Option<Located>, ApiError> {
    let Some(container) = store.container_by_id(id).await? else {
        return Ok(None);
    };
    let Some(collection) = store.collection_by_id(&container.collection_id).await? else {
        return Ok(None);
    };
    let Some(entity) = store.entity_by_id(&collection.entity_id).await? else {
        return Ok(None);
    };
    Ok(Some(Located {
        entity,
        collection,
        container,
    }))
}

/// An image with its container, if `user` may write it (404 when it does not exist or is
/// hidden, 403 when visible but not theirs).
pub async fn writable_image(
    state: &AppState,
    user: &User,
    image_id: &str,
) -> Result<(ImageRow, Located), ApiError> {
    let image = state
        .store
        .image_by_id(image_id)
        .await?
        .ok_or_else(|| not_found("image"))?;
    let located = locate_container(&state.store, &image.container_id)
        .await?
        .ok_or_else(|| not_found("image"))?;
    if !located.is_owner(Some(user)) {
        return Err(if located.is_readable(Some(user)) {
            not_owner(&located.entity.name)
        } else {
            not_found("image")
        });
    }
    Ok((image, located))
}

fn base(created_ms: i64, owner: &str) -> wire::BaseModel {
    wire::BaseModel {
        deleted: false,
        created_by: owner.to_owned(),
        created_at: rfc3339(created_ms),
        owner: owner.to_owned(),
    }
}

/// The wire form of an entity.
pub fn entity_json(entity: &EntityRow, collections: &[CollectionRow], quota: i64) -> wire::Entity {
    wire::Entity {
        base: base(entity.created_ms, &entity.name),
        id: entity.id.clone(),
        name: entity.name.clone(),
        description: entity.description.clone(),
        collections: collections.iter().map(|c| c.id.clone()).collect(),
        size: 0,
        quota,
        default_private: entity.default_private,
    }
}

/// The wire form of a collection.
pub fn collection_json(
    entity: &EntityRow,
    collection: &CollectionRow,
    containers: &[ContainerRow],
) -> wire::Collection {
    wire::Collection {
        base: base(collection.created_ms, &entity.name),
        id: collection.id.clone(),
        name: collection.name.clone(),
        description: collection.description.clone(),
        entity: entity.id.clone(),
        entity_name: entity.name.clone(),
        containers: containers.iter().map(|c| c.id.clone()).collect(),
        size: 0,
        private: collection.private,
    }
}

/// The wire form of a container with its images and tags.
pub fn container_json(located: &Located, images: &[ImageRow], tags: &[TagRow]) -> wire::Container {
    let mut container = wire::Container {
        base: base(located.container.created_ms, &located.entity.name),
        id: located.container.id.clone(),
        name: located.container.name.clone(),
        description: located.container.description.clone(),
        collection: located.collection.id.clone(),
        collection_name: located.collection.name.clone(),
        entity: located.entity.id.clone(),
        entity_name: located.entity.name.clone(),
        images: images.iter().map(|i| i.id.clone()).collect(),
        size: images.iter().map(|i| i.size).sum(),
        download_count: located.container.download_count,
        private: located.collection.private || located.container.private,
        ..wire::Container::default()
    };
    for tag in tags {
        if tag.arch.is_empty() {
            container
                .image_tags
                .insert(tag.tag.clone(), tag.image_id.clone());
        } else {
            container
                .arch_tags
                .entry(tag.arch.clone())
                .or_default()
                .insert(tag.tag.clone(), tag.image_id.clone());
        }
    }
    container
}

/// The wire form of an image; `tags` are its tags for its arch (search prints them).
pub fn image_json(located: &Located, image: &ImageRow, tags: &[TagRow]) -> wire::Image {
    let mut own_tags: Vec<String> = tags
        .iter()
        .filter(|t| t.image_id == image.id && (t.arch == image.arch || t.arch.is_empty()))
        .map(|t| t.tag.clone())
        .collect();
    own_tags.sort();
    own_tags.dedup();
    wire::Image {
        base: base(image.created_ms, &located.entity.name),
        id: image.id.clone(),
        hash: image.hash.clone(),
        description: image.description.clone(),
        container: located.container.id.clone(),
        size: image.size,
        uploaded: image.uploaded,
        arch: image.arch.clone(),
        fingerprints: Vec::new(),
        entity: located.entity.id.clone(),
        entity_name: located.entity.name.clone(),
        collection: located.collection.id.clone(),
        collection_name: located.collection.name.clone(),
        container_name: located.container.name.clone(),
        tags: own_tags,
    }
}

/// A new library id: 24 lowercase hex digits, time-ordered like build ids.
pub fn new_id(state: &AppState) -> String {
    crate::secrets::new_build_id(state.clock.now_ms())
}

/// Unix ms `seconds` from now.
pub fn after_seconds(state: &AppState, seconds: u64) -> i64 {
    state
        .clock
        .now_ms()
        .saturating_add(i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX / 2))
}

/// The quota figures of `owner_id` as push prints them (`quotaTotal` 0: unlimited): the
/// user's own quota, else the deployment's.
pub async fn quota_of(state: &AppState, owner_id: i64) -> Result<wire::Quota, ApiError> {
    let total = match state.store.library_quota(owner_id).await? {
        Some(own) => own,
        None => state.library.quota_bytes,
    };
    Ok(wire::Quota {
        quota_total: i64::try_from(total).unwrap_or(i64::MAX),
        quota_usage: state.store.library_usage(owner_id).await?,
    })
}

/// Refuses with 507 when `extra` more bytes would take `owner_id` over the quota.
pub async fn check_quota(state: &AppState, owner_id: i64, extra: i64) -> Result<(), ApiError> {
    let quota = quota_of(state, owner_id).await?;
    if quota.quota_total > 0 && quota.quota_usage.saturating_add(extra) > quota.quota_total {
        return Err(ApiError::InsufficientStorage(format!(
            "library storage quota exceeded: {} of {} bytes used, the image needs {extra} more",
            quota.quota_usage, quota.quota_total
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
