//! Sign-in and sign-out. A local account signs in with the password an admin set
//! (`kiln-scheduler admin user passwd NAME`) or with one of its API tokens; both start the same
//! kind of session ([`super::session::start_session`]), which is where a site's single sign-on
//! would plug in too: an OpenID Connect callback, or a trusted proxy's user header, that maps
//! the verified identity to a local user and calls it.
//!
//! Failed sign-ins slow the next ones from the same address (`super::throttle`): past a few,
//! the form answers 429 with `Retry-After` and checks nothing until then.

use std::net::{IpAddr, SocketAddr};

use axum::Form;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::header::RETRY_AFTER;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::page::{Nav, escape, render, render_with_status};
use super::session::{
    SESSION_COOKIE, check_csrf, clear_cookie, cookie, is_same_origin, session_of, start_session,
    with_cookie,
};
use crate::api::{ApiError, AppState};
use crate::password::verify_password;
use crate::secrets::token_hash;

/// Longest user name or token accepted in the form, bytes (tokens are 205 characters).
const MAX_FIELD_BYTES: usize = 4096;

/// The address of the client a request came from (`None` when the server was not started
/// with connection info, as in router tests that do not set it). Behind a trusted reverse
/// proxy (`--trusted-proxy`), the client `X-Forwarded-For` names.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        Ok(Self(client_address(
            peer,
            &forwarded,
            &state.limits.trusted_proxies,
        )))
    }
}

/// The client behind `peer`: `peer` itself unless it is a trusted proxy; then the right-most
/// `X-Forwarded-For` hop that is not a trusted proxy (hops further left were written by the
/// client and prove nothing). A proxy that sent no usable header stays the address.
fn client_address(
    peer: Option<IpAddr>,
    forwarded: &[&str],
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer?;
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut hops = forwarded
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    hops.reverse();
    for hop in hops {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => {}
            Ok(ip) => return Some(ip),
            // Garbage is the client's writing: stop at the last hop a proxy vouched for.
            Err(_) => break,
        }
    }
    Some(peer)
}

/// `?next=` of the sign-in page.
#[derive(Debug, Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// Where to go after signing in: a path on this site, else the build form. `//host` and
/// `/\host` would leave the site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next)
            if next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\") =>
        {
            next
        }
        _ => "/build",
    }
}

fn login_form(next: &str, error: Option<&str>, user: &str) -> String {
    let error = error.map_or_else(String::new, |e| {
        format!(
            "<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>",
            escape(e)
        )
    });
    format!(
        "{error}<form method=\"post\" action=\"/login\" class=\"stack narrow\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <fieldset><legend>With your password</legend>\
         <label for=\"user\">User name</label>\
         <input id=\"user\" name=\"user\" autocomplete=\"username\" autocapitalize=\"none\" value=\"{user}\">\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\">\
         </fieldset>\
         <fieldset><legend>Or with an access token</legend>\
         <label for=\"token\">Access token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" \
         aria-describedby=\"token-help\">\
         <p id=\"token-help\" class=\"help\">A token from <code>kiln-scheduler admin token create</code> \
         or from this page once signed in. Leave the password fields empty.</p>\
         </fieldset>\
         <button type=\"submit\" id=\"sign-in\">Sign in</button></form>",
        next = escape(next),
        user = escape(user),
    )
}

/// `GET /login`: the sign-in form (or, when signed in already, onwards).
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Next>,
) -> Result<Response, ApiError> {
    let next = safe_next(query.next.as_deref());
    if session_of(&headers, &state).await?.is_some() {
        return Ok(Redirect::to(next).into_response());
    }
    Ok(render(
        "Sign in",
        Nav::None,
        None,
        &login_form(next, None, ""),
    ))
}

/// The sign-in form's fields.
#[derive(Debug, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    token: String,
    next: Option<String>,
}

/// `POST /login`: checks a password or a token, starts a session, goes on to `next`. A
/// failure shows the form again with 401 and does not say which part was wrong.
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<Credentials>,
) -> Result<Response, ApiError> {
    // Login forgery (signing a victim into the attacker's account) is refused like any other.
    if !is_same_origin(&headers, &state) {
        return Err(ApiError::Forbidden(
            "sign in from this site's own page".into(),
        ));
    }
    let next = safe_next(form.next.as_deref()).to_owned();
    let token = form.token.trim();
    // A token sign-in names no account: only the address counts for it.
    let account = token.is_empty().then_some(form.user.as_str());
    if let Some(wait_ms) = state
        .sign_ins
        .wait_ms(account, address, state.clock.now_ms())
    {
        let seconds = (wait_ms + 999) / 1000;
        tracing::warn!(user = %form.user, ?address, seconds, "sign-in throttled");
        let message = format!(
            "Too many failed sign-ins. Try again in {seconds} second{}.",
            if seconds == 1 { "" } else { "s" }
        );
        let mut response = render_with_status(
            StatusCode::TOO_MANY_REQUESTS,
            "Sign in",
            Nav::None,
            None,
            &login_form(&next, Some(&message), &form.user),
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
        return Ok(response);
    }
    let signed_in = if !token.is_empty() {
        if token.len() > MAX_FIELD_BYTES {
            None
        } else {
            let hash = token_hash(token);
            let user = state
                .store
                .user_by_token(&hash, state.clock.now_ms())
                .await?;
            user.map(|user| (user, Some(hash)))
        }
    } else if form.user.is_empty() || form.user.len() > MAX_FIELD_BYTES {
        None
    } else {
        match state.store.user_with_password(form.user.trim()).await? {
            Some((user, Some(hash))) => {
                let password = form.password;
                let matches =
                    tokio::task::spawn_blocking(move || verify_password(&password, &hash))
                        .await
                        .map_err(ApiError::internal)?;
                matches.then_some((user, None))
            }
            _ => None,
        }
    };
    let Some((user, token_hash_used)) = signed_in else {
        state
            .sign_ins
            .record_failure(account, address, state.clock.now_ms());
        tracing::info!(user = %form.user, ?address, "sign-in refused");
        let form_html = login_form(
            &next,
            Some("Wrong user name, password or token."),
            &form.user,
        );
        return Ok(render_with_status(
            StatusCode::UNAUTHORIZED,
            "Sign in",
            Nav::None,
            None,
            &form_html,
        ));
    };
    state.sign_ins.record_success(account, address);
    let cookie_value = start_session(&state, &user, token_hash_used.as_deref()).await?;
    tracing::info!(user = %user.name, with_token = token_hash_used.is_some(), "signed in");
    Ok(with_cookie(
        Redirect::to(&next).into_response(),
        cookie_value,
    ))
}

/// The sign-out form's field.
#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

impl CsrfOnly {
    /// The posted token.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /logout`: ends the session and forgets the cookie.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, ApiError> {
    if let Some(session) = session_of(&headers, &state).await? {
        check_csrf(&session, form.csrf())?;
        if let Some(value) = cookie(&headers, SESSION_COOKIE) {
            state.store.delete_session(&token_hash(value)).await?;
        }
        tracing::info!(user = %session.user.name, "signed out");
    }
    Ok(with_cookie(
        Redirect::to("/login").into_response(),
        clear_cookie(&state),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trusted_proxy_passes_on_the_client_it_saw() {
        let trusted: Vec<ipnet::IpNet> =
            vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // No proxy: the peer, whatever it claims.
        assert_eq!(
            client_address(ip("198.51.100.9"), &["192.0.2.1"], &trusted),
            ip("198.51.100.9")
        );
        // One proxy; a client-written hop on the left proves nothing.
        assert_eq!(
            client_address(ip("10.1.2.3"), &["203.0.113.5, 192.0.2.7"], &trusted),
            ip("192.0.2.7")
        );
        // Two proxies, in separate headers.
        assert_eq!(
            client_address(ip("::1"), &["192.0.2.7", "10.9.9.9"], &trusted),
            ip("192.0.2.7")
        );
        // A proxy that forwarded nothing usable is the address.
        assert_eq!(
            client_address(ip("10.1.2.3"), &[], &trusted),
            ip("10.1.2.3")
        );
        assert_eq!(
            client_address(ip("10.1.2.3"), &["not-an-ip"], &trusted),
            ip("10.1.2.3")
        );
        assert_eq!(client_address(None, &["192.0.2.7"], &trusted), None);
        // Nothing trusted: the header is ignored.
        assert_eq!(
            client_address(ip("10.1.2.3"), &["192.0.2.7"], &[]),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn next_stays_on_the_site() {
        assert_eq!(safe_next(Some("/builds/abc")), "/builds/abc");
        assert_eq!(safe_next(Some("//evil.example/")), "/build");
        assert_eq!(safe_next(Some("/\\evil.example/")), "/build");
        assert_eq!(safe_next(Some("https://evil.example/")), "/build");
        assert_eq!(safe_next(None), "/build");
    }
}
