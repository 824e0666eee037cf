//! The build pages: the form (`/build`), a build (`/builds/{id}`), the user's history
//! (`/builds`), and the JSON the build page polls (`/web/api/builds/{id}`).
//!
//! The form's script submits to the build API itself (`POST /v1/build`, authenticated by the
//! session cookie), so the web form and `singularity build --remote` go through the same checks:
//! a definition the parser refuses comes back as a 400 whose message names the lines
//! (`definition:LINE:COLUMN: ...`), which the script highlights, and nothing is queued. The
//! build page replays and follows the log over the API's WebSocket (`/v1/build-ws/{id}`).

use std::fmt::Write;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::page::{Nav, bytes, duration, escape, pull_command, render, time, url_encode};
use super::session::SignedIn;
use crate::api::{ApiError, AppState, AuthUser, visible_build};
use crate::store::{BuildRow, BuildState};

/// Builds listed in the history.
const HISTORY_LENGTH: u32 = 100;

/// What a new form holds: a build that works offline against a registry named in `From:`.
const EXAMPLE_DEFINITION: &str =
    "Bootstrap: docker\nFrom: busybox:latest\n\n%post\n    echo \"hello from %post\"\n";

/// `GET /build`: the form.
pub async fn form(State(state): State<AppState>, SignedIn(session): SignedIn) -> Response {
    let mut arches = String::new();
    for arch in &state.limits.arches {
        let _ = write!(arches, "<option>{}</option>", escape(arch));
    }
    let main = format!(
        "<form id=\"build-form\" class=\"stack\" novalidate>\
         <div class=\"field\"><div class=\"label-row\"><label for=\"definition\">Definition file</label>\
         <label class=\"file-button\" for=\"definition-file\">Open a file…</label>\
         <input type=\"file\" id=\"definition-file\" class=\"visually-hidden\" accept=\".def,.txt,text/plain\"></div>\
         <div class=\"editor\" id=\"editor\"><pre class=\"gutter\" id=\"gutter\" aria-hidden=\"true\"></pre>\
         <textarea id=\"definition\" name=\"definition\" spellcheck=\"false\" autocapitalize=\"none\" \
         rows=\"18\" wrap=\"off\" aria-describedby=\"definition-help definition-errors\">{example}</textarea></div>\
         <p id=\"definition-help\" class=\"help\">Paste or open a Singularity definition file. \
         Tab moves on to the next field; Ctrl+Enter builds.</p>\
         <div id=\"definition-errors\" class=\"error\" role=\"alert\" hidden></div></div>\
         <div class=\"row\"><div class=\"field\"><label for=\"arch\">Architecture</label>\
         <select id=\"arch\" name=\"arch\">{arches}</select></div>\
         <div class=\"field grow\"><label for=\"library-ref\">Library destination (optional)</label>\
         <input id=\"library-ref\" name=\"libraryRef\" class=\"mono\" autocapitalize=\"none\" \
         placeholder=\"library://{user}/collection/container:tag\" aria-describedby=\"library-ref-help\">\
         <p id=\"library-ref-help\" class=\"help\">Empty: a private image under \
         <code>{user}/remote-builds</code>.</p></div></div>\
         <button type=\"submit\" id=\"build-button\">Build</button>\
         <p id=\"build-status\" role=\"status\"></p></form>",
        example = escape(EXAMPLE_DEFINITION),
        user = escape(&session.user.name),
    );
    render("New build", Nav::Build, Some(&session), &main)
}

/// `GET /builds`: the user's builds, newest first.
pub async fn history(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
) -> Result<Response, ApiError> {
    let builds = state
        .store
        .builds_of(session.user.id, HISTORY_LENGTH)
        .await?;
    let now_ms = state.clock.now_ms();
    let mut main = String::new();
    if builds.is_empty() {
        main.push_str("<p>No builds yet. <a href=\"/build\">Start one</a>.</p>");
    } else {
        main.push_str(
            "<div class=\"table-wrap\"><table id=\"history\"><thead><tr><th scope=\"col\">Build</th>\
             <th scope=\"col\">State</th><th scope=\"col\">Submitted</th><th scope=\"col\">Took</th>\
             <th scope=\"col\">Arch</th><th scope=\"col\">Image</th></tr></thead><tbody>",
        );
        for build in &builds {
            let took = match (build.start_ms, build.complete_ms) {
                (Some(start), Some(end)) => duration(end - start),
                (Some(start), None) => format!("{} so far", duration(now_ms - start)),
                (None, _) => "–".to_owned(),
            };
            let _ = write!(
                main,
                "<tr><th scope=\"row\"><a class=\"mono\" href=\"/builds/{id}\">{id}</a></th>\
                 <td><span class=\"state state-{state}\">{state_label}</span></td><td>{submitted}</td>\
                 <td>{took}</td><td>{arch}</td><td class=\"mono\">{library_ref}</td></tr>",
                id = escape(&build.id),
                state = build.state,
                state_label = state_label(build.state),
                submitted = time(build.submit_ms),
                arch = escape(&build.arch),
                library_ref = escape(&build.library_ref),
            );
        }
        main.push_str("</tbody></table></div>");
    }
    Ok(render("My builds", Nav::History, Some(&session), &main))
}

fn state_label(state: BuildState) -> &'static str {
    match state {
        BuildState::Queued => "queued",
        BuildState::Running => "running",
        BuildState::Succeeded => "succeeded",
        BuildState::Failed => "failed",
        BuildState::Cancelled => "cancelled",
        BuildState::TimedOut => "timed out",
        BuildState::Expired => "expired",
    }
}

/// `GET /builds/{id}`: the build page. Its script fills in the state and follows the log.
pub async fn show(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let build = visible_build(&state, &session.user, &id).await?;
    let main = format!(
        "<div id=\"build\" data-build-id=\"{id}\">\
         <dl class=\"facts\">\
         <div><dt>State</dt><dd><span id=\"build-state\" class=\"state state-{state}\" role=\"status\">{state_label}</span></dd></div>\
         <div><dt id=\"build-timing-label\">Submitted</dt><dd id=\"build-timing\">{submitted}</dd></div>\
         <div><dt>Architecture</dt><dd>{arch}</dd></div>\
         <div><dt>Image</dt><dd class=\"mono\">library://{library_ref}</dd></div></dl>\
         <p id=\"build-reason\" class=\"error\" hidden></p>\
         <button type=\"button\" id=\"cancel-button\" class=\"danger\" hidden>Cancel build</button>\
         <section id=\"result\" aria-labelledby=\"result-title\" hidden><h2 id=\"result-title\">Image</h2>\
         <dl class=\"facts\"><div><dt>Size</dt><dd id=\"image-size\"></dd></div>\
         <div><dt>SHA-256</dt><dd id=\"image-sha256\" class=\"mono wrap\"></dd></div></dl>\
         <p><a id=\"download-link\" class=\"button\" href=\"#\" download>Download SIF</a></p>\
         <div class=\"copy-row\"><label for=\"pull-command\" class=\"visually-hidden\">Pull command</label>\
         <input id=\"pull-command\" readonly class=\"mono\">\
         <button type=\"button\" data-copy=\"pull-command\">Copy command</button></div></section>\
         <section aria-labelledby=\"log-title\"><h2 id=\"log-title\">Log</h2>\
         <pre id=\"log\" role=\"log\" tabindex=\"0\" aria-label=\"Build log\"></pre>\
         <p id=\"log-status\" class=\"help\"></p></section></div>",
        id = escape(&build.id),
        state = build.state,
        state_label = state_label(build.state),
        submitted = time(build.submit_ms),
        arch = escape(&build.arch),
        library_ref = escape(&build.library_ref),
    );
    Ok(render(
        &format!("Build {}", build.id),
        Nav::History,
        Some(&session),
        &main,
    ))
}

/// What the build page shows, as `/web/api/builds/{id}` returns it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildView {
    id: String,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled`, `timed_out`, `expired`.
    state: &'static str,
    /// For people: `timed out` rather than `timed_out`.
    state_label: &'static str,
    /// The worker's step (`fetching`, `running:post`, `packing`, ...).
    phase: Option<String>,
    is_final: bool,
    /// Queued builds for the same architecture ahead of this one.
    queue_position: Option<u64>,
    /// Unix ms.
    submit_ms: i64,
    start_ms: Option<i64>,
    complete_ms: Option<i64>,
    /// Milliseconds it has been running, or ran.
    elapsed_ms: Option<i64>,
    reason: Option<String>,
    image_size: Option<u64>,
    image_size_label: Option<String>,
    /// Hex SHA-256 of the SIF.
    image_sha256: Option<String>,
    download_url: Option<String>,
    pull_command: Option<String>,
}

/// `GET /web/api/builds/{id}`: the build page's view of a build (session or token).
pub async fn view(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let build = visible_build(&state, &user, &id).await?;
    Ok(Json(build_view(&state, &build).await?).into_response())
}

async fn build_view(state: &AppState, build: &BuildRow) -> Result<BuildView, ApiError> {
    let now_ms = state.clock.now_ms();
    let queue_position = if build.state == BuildState::Queued {
        Some(state.store.queue_position(build).await?)
    } else {
        None
    };
    let succeeded = build.state == BuildState::Succeeded;
    Ok(BuildView {
        id: build.id.clone(),
        state: build.state.as_str(),
        state_label: state_label(build.state),
        phase: build.phase.clone(),
        is_final: build.state.is_final(),
        queue_position,
        submit_ms: build.submit_ms,
        start_ms: build.start_ms,
        complete_ms: build.complete_ms,
        elapsed_ms: build
            .start_ms
            .map(|start| build.complete_ms.unwrap_or(now_ms) - start),
        reason: build.failure_reason.clone(),
        image_size: build.image_size.filter(|_| succeeded),
        image_size_label: build.image_size.filter(|_| succeeded).map(bytes),
        image_sha256: build
            .image_checksum
            .as_deref()
            .filter(|_| succeeded)
            .map(|c| c.trim_start_matches("sha256.").to_owned()),
        download_url: succeeded.then(|| {
            format!(
                "/v1/imagefile/{}?arch={}",
                url_encode(&build.library_ref).replace("%3A", ":"),
                url_encode(&build.arch)
            )
        }),
        pull_command: succeeded.then(|| pull_command(&build.arch, &build.library_ref)),
    })
}
