//! Submit, status and cancel (build-api.md §4.1–4.3).
//!
//! A submission is checked completely before anything is recorded: body, base64, UTF-8, the
//! definition (parser and build-time checks), architecture, library ref, build context. Only
//! then is the build recorded and its job published with confirms; if the broker does not
//! confirm, the row is removed again, so a refused submission leaves no row, file or message.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kiln_proto::amqp::{BuildContextRef, Control, Job, LibraryCredential};
use kiln_proto::http::{BuildInfo, BuildRequest};

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, AppJson, data};
use crate::clock::rfc3339;
use crate::definition::validate_definition;
use crate::library_ref::LibraryRef;
use crate::secrets::{is_build_id, new_build_id, new_capability, token_hash};
use crate::store::{BuildRow, BuildState, FinalState, NewBuild, User};

/// `POST /v1/build`: checks, records and queues a build; 201 with its [`BuildInfo`].
pub async fn submit(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    AppJson(request): AppJson<BuildRequest>,
) -> Result<Response, ApiError> {
    let bytes = STANDARD
        .decode(request.definition_raw.trim())
        .map_err(|e| ApiError::BadRequest(format!("definitionRaw is not valid base64: {e}")))?;
    let definition = String::from_utf8(bytes)
        .map_err(|_| ApiError::BadRequest("the definition file is not valid UTF-8".into()))?;
    validate_definition(&definition).map_err(ApiError::BadRequest)?;

    let arch = request
        .arch()
        .unwrap_or_else(|| state.limits.arches.first().map_or("amd64", String::as_str))
        .to_owned();
    if !state.limits.arches.contains(&arch) {
        return Err(ApiError::BadRequest(format!(
            "unsupported architecture {arch:?}: this service builds for {}",
            state.limits.arches.join(", ")
        )));
    }

    let now_ms = state.clock.now_ms();
    let id = new_build_id(now_ms);
    let library_ref = if request.library_ref.trim().is_empty() {
        LibraryRef::ephemeral(&user.name, &id)
    } else {
        let parsed = LibraryRef::parse(&request.library_ref).map_err(ApiError::BadRequest)?;
        if parsed.entity() != user.name && !user.is_admin {
            return Err(ApiError::Forbidden(format!(
                "you may only build into your own entity {:?}, not {:?}",
                user.name,
                parsed.entity()
            )));
        }
        parsed
    };

    let context = match request.context_digest.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(digest) => {
            let context = state
                .store
                .context(user.id, digest)
                .await?
                .filter(|c| c.state == crate::store::ContextState::Ready)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "build context {digest} was not uploaded (POST /v1/build-context first)"
                    ))
                })?;
            state.store.touch_context(user.id, digest, now_ms).await?;
            Some((context, new_capability()))
        }
    };
    let result_token = new_capability();
    let timeout_seconds = user
        .limits
        .build_timeout_seconds
        .unwrap_or(state.limits.build_timeout_seconds);
    let max_active = user
        .limits
        .max_concurrent_builds
        .unwrap_or(state.limits.max_concurrent_builds);

    let new = NewBuild {
        id: id.clone(),
        user_id: user.id,
        arch: arch.clone(),
        library_ref: library_ref.to_string(),
        definition: definition.clone(),
        context_digest: context.as_ref().map(|(c, _)| c.digest.clone()),
        context_token_hash: context.as_ref().map(|(_, token)| token_hash(token)),
        result_token_hash: token_hash(&result_token),
        timeout_seconds,
        submit_ms: now_ms,
    };
    if !state.store.insert_build(&new, max_active).await? {
        return Err(ApiError::TooManyRequests(format!(
            "you have {max_active} builds queued or running, the most allowed; \
             wait for one to finish"
        )));
    }

    let mut job = Job::new(
        &id,
        &user.name,
        definition,
        &arch,
        library_ref.to_string(),
        timeout_seconds,
    );
    // `Bootstrap: library` without a `Library:` header pulls from the client's library, which
    // for a stock client sending none is this service's own (the remote it talks to).
    job.library_url = Some(
        request
            .library_url
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| state.public_url.to_string()),
    );
    job.working_dir = request.working_dir.filter(|d| !d.is_empty());
    job.context = context.map(|(context, token)| BuildContextRef {
        url: format!("{}/v1/build-context-archive/{id}/{token}", state.public_url),
        digest: context.digest,
        size: context.size,
    });
    job.result_url = Some(format!(
        "{}/v1/build-result/{id}/{result_token}",
        state.public_url
    ));
    job.library_credential = Some(LibraryCredential {
        url: state.public_url.to_string(),
        token: super::auth::build_reader_token(&id, &result_token),
    });
    if let Err(error) = state
        .broker
        .publish_job(&job, state.limits.queue_ttl())
        .await
    {
        // Nothing may stay behind for a build nobody will run.
        state.store.delete_build(&id).await?;
        return Err(ApiError::Unavailable {
            message: "the build queue is unavailable, try again later",
            cause: Box::new(error),
        });
    }
    tracing::info!(build_id = %id, user = %user.name, %arch, "build queued");
    let row = state
        .store
        .build(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound("build not found".into()))?;
    Ok(data(StatusCode::CREATED, build_info(&state, &row)))
}

/// `GET /v1/build/{id}`: the build's [`BuildInfo`].
pub async fn status(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = visible_build(&state, &user, &id).await?;
    Ok(data(StatusCode::OK, build_info(&state, &row)))
}

/// `PUT /v1/build/{id}/_cancel`: 204, also for a build that is already final (old clients
/// require exactly 204). A queued or running build becomes `cancelled` at once, and its worker,
/// if any, is told to stop through the control exchange.
pub async fn cancel(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let row = visible_build(&state, &user, &id).await?;
    if row.state.is_final() {
        return Ok(StatusCode::NO_CONTENT);
    }
    let note = format!("[kiln] build cancelled by {}\n", user.name);
    let changed = crate::finish::finish_build(
        &state.store,
        &id,
        &FinalState::Cancelled,
        &note,
        state.clock.now_ms(),
    )
    .await?;
    state.notify(&id);
    // Also for a queued build: a worker may have taken the job a moment ago.
    if changed && let Err(error) = state.broker.publish_control(&Control::cancel(&id)).await {
        // The relay cancels again when the worker reports anything for this build.
        tracing::warn!(build_id = %id, error = %error, "could not publish cancel");
    }
    tracing::info!(build_id = %id, user = %user.name, "build cancelled");
    Ok(StatusCode::NO_CONTENT)
}

/// The build `id` if it exists and `user` may see it (owner or admin); 404 otherwise, so ids
/// of other users' builds are not revealed.
pub async fn visible_build(state: &AppState, user: &User, id: &str) -> Result<BuildRow, ApiError> {
    let not_found = || ApiError::NotFound(format!("build {id} not found"));
    if !is_build_id(id) {
        return Err(not_found());
    }
    let row = state.store.build(id).await?.ok_or_else(not_found)?;
    if row.user_id != user.id && !user.is_admin {
        return Err(not_found());
    }
    Ok(row)
}

/// The client's view of a build. A failed build is complete with no image size, which
/// SingularityCE reports as `build image size <= 0` after the log ended (§4.2).
pub(super) fn build_info(state: &AppState, row: &BuildRow) -> BuildInfo {
    let succeeded = row.state == BuildState::Succeeded;
    BuildInfo {
        id: row.id.clone(),
        is_complete: row.state.is_final(),
        image_size: row.image_size.filter(|_| succeeded),
        image_checksum: row.image_checksum.clone().filter(|_| succeeded),
        library_ref: format!("library://{}", row.library_ref),
        library_url: state.public_url.to_string(),
        submit_time: rfc3339(row.submit_ms),
        start_time: row.start_ms.map(rfc3339),
        complete_time: row.complete_ms.map(rfc3339),
        state: Some(row.state.as_str().to_owned()),
        failure_reason: row.failure_reason.clone(),
    }
}
