//! `/auth/tokens`, the page `singularity remote login` sends people to ("Generate an access
//! token at {remote}/auth/tokens", library-api.md §1): create a named token with an optional
//! expiry (shown once, with a copy button and the commands that use it), list tokens with their
//! last use, revoke one. A revoked or expired token stops working at once everywhere, since
//! every check goes through `Store::user_by_token`.

use std::fmt::Write;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::page::{Nav, escape, render_with_status, time};
use super::session::{SignedIn, check_csrf};
use crate::api::{ApiError, AppState};
use crate::secrets::{new_api_token, token_hash};
use crate::store::{Session, TokenRow};

/// Longest token name, characters.
const MAX_NAME_CHARS: usize = 64;

/// The expiry choices the form offers, in days (0: never).
const EXPIRY_DAYS: [(u32, &str); 6] = [
    (30, "30 days"),
    (7, "7 days"),
    (1, "1 day"),
    (90, "90 days"),
    (365, "1 year"),
    (0, "Never"),
];

/// The page: the new token (right after creating it), the form, and the list.
async fn page(
    state: &AppState,
    session: &Session,
    created: Option<(&str, &TokenRow)>,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let now_ms = state.clock.now_ms();
    let tokens = state.store.tokens_of(session.user.id).await?;
    let csrf = escape(&session.csrf_token);
    let mut main = String::new();
    if let Some((token, row)) = created {
        let remote = &*state.public_url;
        let _ = write!(
            main,
            "<section class=\"new-token\" aria-labelledby=\"new-token-title\">\
             <h2 id=\"new-token-title\">Your new token “{name}”</h2>\
             <p>Copy it now: it is shown only this once.</p>\
             <div class=\"copy-row\"><label for=\"new-token\" class=\"visually-hidden\">New token</label>\
             <input id=\"new-token\" readonly value=\"{token}\" class=\"mono\">\
             <button type=\"button\" data-copy=\"new-token\">Copy token</button></div>\
             <p>Then, with this service as a Singularity remote:</p>\
             <div class=\"copy-row\"><label for=\"login-command\" class=\"visually-hidden\">Login commands</label>\
             <textarea id=\"login-command\" readonly rows=\"2\" class=\"mono\">\
singularity remote add --no-login kiln {remote}\nsingularity remote login kiln</textarea>\
             <button type=\"button\" data-copy=\"login-command\">Copy commands</button></div>\
             <p class=\"help\">Paste the token when <code>remote login</code> asks for it. A remote URL \
             with a port must be written as <code>URI: //host:port</code> in \
             <code>~/.singularity/remote.yaml</code>; <code>remote add</code> cannot parse it.</p>\
             </section>",
            name = escape(&row.name),
            token = escape(token),
            remote = escape(remote),
        );
    }
    if let Some(error) = error {
        let _ = write!(
            main,
            "<p class=\"error\" role=\"alert\" id=\"token-error\">{}</p>",
            escape(error)
        );
    }
    let mut options = String::new();
    for (days, label) in EXPIRY_DAYS {
        let _ = write!(options, "<option value=\"{days}\">{label}</option>");
    }
    let _ = write!(
        main,
        "<section aria-labelledby=\"create-title\"><h2 id=\"create-title\">Create a token</h2>\
         <form method=\"post\" action=\"/auth/tokens\" class=\"stack narrow\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"token-name\">Name</label>\
         <input id=\"token-name\" name=\"name\" required maxlength=\"{MAX_NAME_CHARS}\" \
         placeholder=\"laptop\" aria-describedby=\"token-name-help\">\
         <p id=\"token-name-help\" class=\"help\">Where you will use it, so you know which to revoke.</p>\
         <label for=\"token-expiry\">Expires after</label>\
         <select id=\"token-expiry\" name=\"expires_days\">{options}</select>\
         <button type=\"submit\" id=\"create-token\">Create token</button></form></section>\
         <section aria-labelledby=\"list-title\"><h2 id=\"list-title\">Your tokens</h2>"
    );
    if tokens.is_empty() {
        main.push_str("<p>You have no tokens yet.</p>");
    } else {
        main.push_str(
            "<div class=\"table-wrap\"><table id=\"tokens\"><thead><tr><th scope=\"col\">Name</th>\
             <th scope=\"col\">Created</th><th scope=\"col\">Expires</th>\
             <th scope=\"col\">Last used</th><th scope=\"col\">Status</th>\
             <th scope=\"col\"><span class=\"visually-hidden\">Actions</span></th></tr></thead><tbody>",
        );
        for token in &tokens {
            let name = if token.name.is_empty() {
                "(unnamed)".to_owned()
            } else {
                escape(&token.name)
            };
            let status = match (token.revoked_ms, token.is_active(now_ms)) {
                (Some(_), _) => "revoked",
                (None, false) => "expired",
                (None, true) => "active",
            };
            let action = if token.is_active(now_ms) {
                format!(
                    "<form method=\"post\" action=\"/auth/tokens/{id}/revoke\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                     <button type=\"submit\" class=\"danger\" aria-label=\"Revoke token {name}\">Revoke</button></form>",
                    id = escape(&token.public_id),
                )
            } else {
                String::new()
            };
            let _ = write!(
                main,
                "<tr data-token-id=\"{id}\"><th scope=\"row\">{name}</th><td>{created}</td><td>{expires}</td>\
                 <td class=\"last-used\">{last}</td><td class=\"status status-{status}\">{status}</td><td>{action}</td></tr>",
                id = escape(&token.public_id),
                created = time(token.created_ms),
                expires = token.expires_ms.map_or_else(|| "never".to_owned(), time),
                last = token.last_used_ms.map_or_else(|| "never".to_owned(), time),
            );
        }
        main.push_str("</tbody></table></div>");
    }
    main.push_str("</section>");
    Ok(render_with_status(
        status,
        "Access tokens",
        Nav::Tokens,
        Some(session),
        &main,
    ))
}

/// `GET /auth/tokens`.
pub async fn show(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
) -> Result<Response, ApiError> {
    page(&state, &session, None, None, StatusCode::OK).await
}

/// The create form's fields.
#[derive(Debug, Deserialize)]
pub struct NewToken {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires_days: u32,
}

/// `POST /auth/tokens`: creates the token and shows it, once (the page is not cached).
pub async fn create(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Form(form): Form<NewToken>,
) -> Result<Response, ApiError> {
    check_csrf(&session, &form.csrf)?;
    let name = form.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        let error = format!("A token needs a name of 1 to {MAX_NAME_CHARS} characters.");
        return page(
            &state,
            &session,
            None,
            Some(&error),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    if !EXPIRY_DAYS
        .iter()
        .any(|(days, _)| *days == form.expires_days)
    {
        return page(
            &state,
            &session,
            None,
            Some("Choose an expiry from the list."),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let now_ms = state.clock.now_ms();
    let expires_ms =
        (form.expires_days > 0).then(|| now_ms + i64::from(form.expires_days) * 86_400_000);
    let token = new_api_token();
    let row = state
        .store
        .create_token(
            session.user.id,
            &token_hash(&token),
            name,
            expires_ms,
            now_ms,
        )
        .await?;
    tracing::info!(user = %session.user.name, token_id = %row.public_id, "token created");
    page(
        &state,
        &session,
        Some((&token, &row)),
        None,
        StatusCode::CREATED,
    )
    .await
}

/// `POST /auth/tokens/{id}/revoke`: revokes one of the user's tokens, then back to the list.
pub async fn revoke(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    Form(form): Form<super::login::CsrfOnly>,
) -> Result<Response, ApiError> {
    check_csrf(&session, form.csrf())?;
    if !state
        .store
        .revoke_token(session.user.id, &id, state.clock.now_ms())
        .await?
    {
        return Err(ApiError::NotFound("no such active token".into()));
    }
    tracing::info!(user = %session.user.name, token_id = %id, "token revoked");
    Ok(Redirect::to("/auth/tokens").into_response())
}
