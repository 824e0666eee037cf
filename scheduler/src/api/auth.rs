//! Token authentication (build-api.md §3, §7): `Authorization: Bearer <token>`, with the scheme
//! matched case-insensitively because the build client sends `BEARER` and the library client
//! `Bearer`. Revoked and expired tokens are refused (`Store::user_by_token`), and each use is
//! recorded for the token page. Also `GET /v1/token-status` and `GET /v1/rbac/users/current`.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::error::{ApiError, data};
use crate::secrets::{is_build_id, token_hash};
use crate::store::{BuildRow, User};
use crate::web::session;

/// The authenticated user of a request; rejects with 401 when the token is missing or invalid.
#[derive(Debug, Clone)]
pub struct AuthUser(pub User);

/// The token of an `Authorization` header value, if it uses the bearer scheme.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The user an `Authorization` header names.
///
/// # Errors
/// [`ApiError::Unauthorized`] for a malformed header or an unknown token.
pub async fn authenticate(header: &HeaderValue, state: &AppState) -> Result<User, ApiError> {
    let token = header
        .to_str()
        .ok()
        .and_then(bearer_token)
        .ok_or(ApiError::Unauthorized("malformed authorization header"))?;
    state
        .store
        .user_by_token(&token_hash(token), state.clock.now_ms())
        .await?
        .ok_or(ApiError::Unauthorized("invalid token"))
}

/// Prefix of a build's library read token: `kiln-build.<build id>.<result capability>`.
const BUILD_READER_PREFIX: &str = "kiln-build.";

/// The library read token of a build: the worker sends it with `Bootstrap: library` requests
/// to this service, so the build reads what its owner may read (`Job::library_credential`).
pub fn build_reader_token(build_id: &str, result_capability: &str) -> String {
    format!("{BUILD_READER_PREFIX}{build_id}.{result_capability}")
}

/// The queued or running build whose result capability is `capability`; `None` for anything
/// else, including a build that has ended, so its capabilities die with it.
///
/// # Errors
/// A store failure.
pub async fn running_build_with_capability(
    state: &AppState,
    build_id: &str,
    capability: &str,
) -> Result<Option<BuildRow>, ApiError> {
    if !is_build_id(build_id) {
        return Ok(None);
    }
    let Some(row) = state.store.build(build_id).await? else {
        return Ok(None);
    };
    let matches = row.result_token_hash.as_deref() == Some(token_hash(capability).as_str());
    Ok((matches && !row.state.is_final()).then_some(row))
}

/// The user a read-only request acts as: the owner of a running build for a build reader token
/// (see [`build_reader_token`]), else the token's user as [`authenticate`] finds it.
///
/// # Errors
/// [`ApiError::Unauthorized`] for a malformed header, an unknown token or an ended build.
pub async fn authenticate_reader(header: &HeaderValue, state: &AppState) -> Result<User, ApiError> {
    let build = header
        .to_str()
        .ok()
        .and_then(bearer_token)
        .and_then(|token| token.strip_prefix(BUILD_READER_PREFIX))
        .and_then(|rest| rest.split_once('.'));
    let Some((build_id, capability)) = build else {
        return authenticate(header, state).await;
    };
    let invalid = ApiError::Unauthorized("invalid token");
    let row = running_build_with_capability(state, build_id, capability)
        .await?
        .ok_or(invalid)?;
    state
        .store
        .user_by_id(row.user_id)
        .await?
        .ok_or(ApiError::Unauthorized("invalid token"))
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    /// A bearer token, or else the web builder's session cookie (see `web::session`), which
    /// must come from our own origin for anything but a plain GET.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            let session = session::session_of(&parts.headers, state)
                .await?
                .ok_or(ApiError::Unauthorized("missing token"))?;
            if session::needs_same_origin(parts) && !session::is_same_origin(&parts.headers, state)
            {
                return Err(ApiError::Forbidden(
                    "a request with the session cookie must come from this site's pages".into(),
                ));
            }
            return Ok(Self(session.user));
        };
        Ok(Self(authenticate(header, state).await?))
    }
}

/// `GET /v1/token-status`: 200 iff the token is valid (the client ignores the body).
pub async fn token_status(AuthUser(_user): AuthUser) -> Response {
    data(StatusCode::OK, serde_json::json!({ "status": "valid" }))
}

/// The plain (not enveloped) body of `/v1/rbac/users/current` (SingularityCE
/// `internal/pkg/client/library/user.go`).
#[derive(Debug, Serialize)]
struct CurrentUser {
    username: String,
    email: String,
    realname: String,
    oidc_user_meta: OidcUserMeta,
}

/// Kiln has no OCI registry behind its library, so there is no registry secret to hand out.
#[derive(Debug, Serialize)]
struct OidcUserMeta {
    secret: String,
}

/// `GET /v1/rbac/users/current`: who the token belongs to, for `remote status`.
pub async fn current_user(AuthUser(user): AuthUser) -> Response {
    Json(CurrentUser {
        username: user.name.clone(),
        email: String::new(),
        realname: user.name,
        oidc_user_meta: OidcUserMeta {
            secret: String::new(),
        },
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_is_case_insensitive() {
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
