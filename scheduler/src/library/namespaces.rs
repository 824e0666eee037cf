//! Entities, collections and containers (library-api.md §5.2–5.4): the three levels push
//! creates on its way to an image (`GET` → 404 → `POST`).
//!
//! An entity belongs to the user of the same name (admins may create any); collections and
//! containers belong to their entity's owner. A `POST` for a name that exists answers the
//! existing object, so two racing pushes both go on.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use kiln_proto::http::library::{NewCollectionOrContainer, NewEntity};

use super::{
    ClientJson, Located, MaybeUser, collection_json, container_json, entity_json, locate, new_id,
    not_found, not_owner, owns, quota_of,
};
use crate::api::{ApiError, AppState, AuthUser, data};
use crate::library_ref::is_ref_element;
use crate::store::{CollectionRow, ContainerRow, EntityRow, User};

fn check_name(name: &str, what: &str) -> Result<(), ApiError> {
    if is_ref_element(name) && name.len() <= 128 {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid {what} name {name:?}: use lowercase letters, digits, and . _ - between them"
        )))
    }
}

fn description(text: Option<String>) -> String {
    text.unwrap_or_default().chars().take(1024).collect()
}

/// `GET /v1/entities/{name}`: any entity is visible (its name is public in every ref).
pub async fn entity(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let entity = state
        .store
        .entity_by_name(&name)
        .await?
        .ok_or_else(|| not_found("entity"))?;
    let collections = super::images::readable_collections(&state, user.as_ref(), &entity).await?;
    let quota = quota_of(&state, entity.owner_id).await?;
    Ok(data(
        StatusCode::OK,
        entity_json(&entity, &collections, quota.quota_total),
    ))
}

/// `POST /v1/entities`: creates the caller's own entity.
pub async fn create_entity(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ClientJson(body): ClientJson<NewEntity>,
) -> Result<Response, ApiError> {
    check_name(&body.name, "entity")?;
    if body.name != user.name && !user.is_admin {
        return Err(ApiError::Forbidden(format!(
            "you may only create your own entity {:?}",
            user.name
        )));
    }
    let entity = ensure_entity(
        &state,
        &user,
        &body.name,
        description(body.description),
        body.default_private.unwrap_or(false),
    )
    .await?;
    if !owns(Some(&user), &entity) {
        return Err(not_owner(&entity.name));
    }
    Ok(data(StatusCode::OK, entity_json(&entity, &[], 0)))
}

/// The entity `name`, created for `owner` when missing.
pub async fn ensure_entity(
    state: &AppState,
    owner: &User,
    name: &str,
    description: String,
    default_private: bool,
) -> Result<EntityRow, ApiError> {
    if let Some(entity) = state.store.entity_by_name(name).await? {
        return Ok(entity);
    }
    let row = EntityRow {
        id: new_id(state),
        name: name.to_owned(),
        owner_id: entity_owner_id(state, owner, name).await?,
        description,
        default_private,
        created_ms: state.clock.now_ms(),
    };
    state.store.insert_entity(&row).await?;
    state
        .store
        .entity_by_name(name)
        .await?
        .ok_or_else(|| not_found("entity"))
}

/// Who a new entity `name` created by `creator` belongs to: the user of that name (an admin
/// creating a user's entity creates it for that user), else the creator.
pub async fn entity_owner_id(
    state: &AppState,
    creator: &User,
    name: &str,
) -> Result<i64, ApiError> {
    Ok(match state.store.user_by_name(name).await? {
        Some(named) => named.id,
        None => creator.id,
    })
}

/// `GET /v1/collections/{entity}/{collection}`.
pub async fn collection(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Path((entity, collection)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let entity = state
        .store
        .entity_by_name(&entity)
        .await?
        .ok_or_else(|| not_found("collection"))?;
    let collection = state
        .store
        .collection_by_name(&entity.id, &collection)
        .await?
        .filter(|c| !c.private || owns(user.as_ref(), &entity))
        .ok_or_else(|| not_found("collection"))?;
    let containers: Vec<ContainerRow> = state
        .store
        .containers_of(&collection.id)
        .await?
        .into_iter()
        .filter(|c| !c.private || owns(user.as_ref(), &entity))
        .collect();
    Ok(data(
        StatusCode::OK,
        collection_json(&entity, &collection, &containers),
    ))
}

/// `POST /v1/collections`: `entity` is the entity's id.
pub async fn create_collection(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ClientJson(body): ClientJson<NewCollectionOrContainer>,
) -> Result<Response, ApiError> {
    check_name(&body.name, "collection")?;
    let entity = state
        .store
        .entity_by_id(body.entity.as_deref().unwrap_or_default())
        .await?
        .ok_or_else(|| not_found("entity"))?;
    if !owns(Some(&user), &entity) {
        return Err(not_owner(&entity.name));
    }
    let private = body.private.unwrap_or(false) || entity.default_private;
    let collection = ensure_collection(
        &state,
        &entity,
        &body.name,
        description(body.description),
        private,
    )
    .await?;
    Ok(data(
        StatusCode::OK,
        collection_json(&entity, &collection, &[]),
    ))
}

/// The collection `name` of `entity`, created when missing.
pub async fn ensure_collection(
    state: &AppState,
    entity: &EntityRow,
    name: &str,
    description: String,
    private: bool,
) -> Result<CollectionRow, ApiError> {
    if let Some(found) = state.store.collection_by_name(&entity.id, name).await? {
        return Ok(found);
    }
    let row = CollectionRow {
        id: new_id(state),
        entity_id: entity.id.clone(),
        name: name.to_owned(),
        description,
        private,
        created_ms: state.clock.now_ms(),
    };
    state.store.insert_collection(&row).await?;
    state
        .store
        .collection_by_name(&entity.id, name)
        .await?
        .ok_or_else(|| not_found("collection"))
}

/// `GET /v1/containers/{entity}/{collection}/{container}`.
pub async fn container(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Path((entity, collection, container)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let located = locate(&state.store, &entity, &collection, &container)
        .await?
        .filter(|l| l.is_readable(user.as_ref()))
        .ok_or_else(|| not_found("container"))?;
    let images = state.store.images_of(&located.container.id).await?;
    let tags = state.store.tags_of(&located.container.id).await?;
    Ok(data(
        StatusCode::OK,
        container_json(&located, &images, &tags),
    ))
}

/// `POST /v1/containers`: `collection` is the collection's id.
pub async fn create_container(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ClientJson(body): ClientJson<NewCollectionOrContainer>,
) -> Result<Response, ApiError> {
    check_name(&body.name, "container")?;
    let collection = state
        .store
        .collection_by_id(body.collection.as_deref().unwrap_or_default())
        .await?
        .ok_or_else(|| not_found("collection"))?;
    let entity = state
        .store
        .entity_by_id(&collection.entity_id)
        .await?
        .ok_or_else(|| not_found("entity"))?;
    if !owns(Some(&user), &entity) {
        return Err(not_owner(&entity.name));
    }
    let container = ensure_container(
        &state,
        &collection,
        &body.name,
        description(body.description),
        body.private.unwrap_or(false),
    )
    .await?;
    let located = Located {
        entity,
        collection,
        container,
    };
    Ok(data(StatusCode::OK, container_json(&located, &[], &[])))
}

/// The container `name` of `collection`, created when missing.
pub async fn ensure_container(
    state: &AppState,
    collection: &CollectionRow,
    name: &str,
    description: String,
    private: bool,
) -> Result<ContainerRow, ApiError> {
    if let Some(found) = state.store.container_by_name(&collection.id, name).await? {
        return Ok(found);
    }
    let row = ContainerRow {
        id: new_id(state),
        collection_id: collection.id.clone(),
        name: name.to_owned(),
        description,
        private,
        download_count: 0,
        created_ms: state.clock.now_ms(),
    };
    state.store.insert_container(&row).await?;
    state
        .store
        .container_by_name(&collection.id, name)
        .await?
        .ok_or_else(|| not_found("container"))
}
