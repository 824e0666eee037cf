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
use crate::secrets::token_hash;
use crate::store::User;
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
