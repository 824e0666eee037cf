//! Browser sessions: a random cookie (`kiln_session`, HttpOnly, SameSite=Lax, Secure behind
//! https) whose SHA-256 names a row in the store, like API tokens. Pages take the [`SignedIn`]
//! extractor, which sends strangers to the sign-in page; the API's `AuthUser` accepts the same
//! cookie, so the page's scripts call the build API and open its WebSocket as the signed-in
//! user.
//!
//! Cross-site request forgery: SameSite=Lax keeps the cookie off cross-site POSTs in current
//! browsers; on top of that every form carries the session's CSRF token ([`check_csrf`]), and
//! cookie-authenticated API calls that change something, and WebSocket handshakes (which
//! SameSite does not cover everywhere), must come with an `Origin` of this service
//! ([`is_same_origin`]).

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE, UPGRADE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Redirect, Response};

use crate::api::{ApiError, AppState};
use crate::secrets::{new_capability, token_hash};
use crate::store::{Session, User};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "kiln_session";

/// How long a session lasts after sign-in, ms (12 h: a working day, then sign in again).
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// The live session the request's cookie names, if any.
///
/// # Errors
/// A store failure.
pub async fn session_of(
    headers: &HeaderMap,
    state: &AppState,
) -> Result<Option<Session>, ApiError> {
    let Some(value) = cookie(headers, SESSION_COOKIE).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    Ok(state
        .store
        .session(&token_hash(value), state.clock.now_ms())
        .await?)
}

/// Whether a cookie-authenticated request must prove it comes from our own pages: everything
/// but plain GET and HEAD, and every WebSocket handshake.
pub fn needs_same_origin(parts: &Parts) -> bool {
    !matches!(parts.method, Method::GET | Method::HEAD) || parts.headers.contains_key(UPGRADE)
}

/// Whether the request's `Origin` is this service: the public URL, or the scheme-less
/// authority equal to the `Host` the browser sent. A missing `Origin` does not count.
pub fn is_same_origin(headers: &HeaderMap, state: &AppState) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if origin == &*state.public_url {
        return true;
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let host = headers.get(HOST).and_then(|v| v.to_str().ok());
    authority.is_some() && authority == host
}

/// Starts a session for `user` (signed in with the token of digest `token_hash`, if any); the
/// `Set-Cookie` value to send.
///
/// # Errors
/// A store failure.
pub async fn start_session(
    state: &AppState,
    user: &User,
    token_hash_used: Option<&str>,
) -> Result<HeaderValue, ApiError> {
    let value = new_capability();
    let now_ms = state.clock.now_ms();
    state
        .store
        .create_session(
            &token_hash(&value),
            user.id,
            token_hash_used,
            &new_capability(),
            now_ms,
            now_ms + SESSION_TTL_MS,
        )
        .await?;
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        SESSION_TTL_MS / 1000,
        secure_attribute(state)
    );
    HeaderValue::from_str(&cookie).map_err(ApiError::internal)
}

/// The `Set-Cookie` value that makes the browser forget the session.
pub fn clear_cookie(state: &AppState) -> HeaderValue {
    let cookie = format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
        secure_attribute(state)
    );
    HeaderValue::from_str(&cookie).unwrap_or(HeaderValue::from_static("kiln_session=; Max-Age=0"))
}

/// Browsers keep a Secure cookie off plain http, so it is set only when we are served by https.
fn secure_attribute(state: &AppState) -> &'static str {
    if state.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

/// Whether a posted form's `csrf` field is the session's token.
///
/// # Errors
/// 403 when it is not.
pub fn check_csrf(session: &Session, posted: &str) -> Result<(), ApiError> {
    if !posted.is_empty() && posted == session.csrf_token {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "the form is stale or came from another site; reload the page and try again".into(),
        ))
    }
}

/// A page's signed-in user. Strangers are redirected to `/login?next=<this page>`.
#[derive(Debug, Clone)]
pub struct SignedIn(pub Session);

/// Why a page could not be shown to the request.
#[derive(Debug)]
pub enum SignInRequired {
    /// Nobody is signed in: go and sign in, then come back.
    Redirect(String),
    /// The store failed.
    Error(ApiError),
}

impl IntoResponse for SignInRequired {
    fn into_response(self) -> Response {
        match self {
            Self::Redirect(to) => Redirect::to(&to).into_response(),
            Self::Error(error) => error.into_response(),
        }
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = SignInRequired;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match session_of(&parts.headers, state).await {
            Ok(Some(session)) => Ok(Self(session)),
            Ok(None) => {
                let here = parts
                    .extensions
                    .get::<OriginalUri>()
                    .map_or_else(|| parts.uri.to_string(), |uri| uri.0.to_string());
                Err(SignInRequired::Redirect(format!(
                    "/login?next={}",
                    super::page::url_encode(&here)
                )))
            }
            Err(error) => Err(SignInRequired::Error(error)),
        }
    }
}

/// Adds `Set-Cookie: value` to a response.
pub fn with_cookie(mut response: Response, value: HeaderValue) -> Response {
    response.headers_mut().append(SET_COOKIE, value);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; kiln_session=abc"));
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, "kiln_session"), Some("abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
