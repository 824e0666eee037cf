//! The web builder: pages served by the scheduler for people who never touch a terminal on the
//! build host. Sign in (`login`, `session`, slowed after failures by `throttle`), access tokens
//! (`tokens`), the build form, build page and history (`builds`), the library browser
//! (`library`), the fleet view for admins (`fleet`), and the static assets (`assets`), all
//! plain HTML, CSS and JavaScript embedded in the binary: no CDN, no build step, nothing
//! fetched at run time.
//!
//! Pages are rendered on the server (`page`); scripts only add what needs them: line numbers
//! and file loading in the form, the live log, copy buttons. The build API does the real work:
//! the scripts call it with the session cookie, which `api::auth` accepts beside tokens.

mod assets;
mod builds;
mod fleet;
mod library;
mod login;
mod page;
pub mod session;
pub mod throttle;
mod tokens;

use axum::Router;
use axum::response::Redirect;
use axum::routing::{get, post};

use crate::api::AppState;

/// The web builder's routes, merged into the API's router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/build") }))
        .route("/login", get(login::show).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/auth/tokens", get(tokens::show).post(tokens::create))
        .route("/auth/tokens/{id}/revoke", post(tokens::revoke))
        .route("/build", get(builds::form))
        .route("/builds", get(builds::history))
        .route("/builds/{id}", get(builds::show))
        .route("/web/api/builds/{id}", get(builds::view))
        .route("/library", get(library::index))
        .route("/library/{entity}", get(library::entity))
        .route("/library/{entity}/{collection}", get(library::collection))
        .route(
            "/library/{entity}/{collection}/{container}",
            get(library::container),
        )
        .route("/admin/workers", get(fleet::show))
        .route("/web/{asset}", get(assets::serve))
}

#[cfg(test)]
mod tests;
