//! `/admin/workers`, the fleet view for admins: each worker's id, host, arch, version,
//! concurrency, the builds it runs, its last heartbeat, and whether it is busy, idle, draining
//! or lost. The figures are those of `GET /v1/admin/workers` (`crate::fleet::worker_info` over
//! the stored heartbeats); other users get 403.

use std::fmt::Write;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::page::{Nav, bytes, escape, render, render_with_status, time};
use super::session::SignedIn;
use crate::api::{ApiError, AppState};
use crate::fleet::{WorkerStatus, worker_info};

fn status_label(status: WorkerStatus) -> &'static str {
    match status {
        WorkerStatus::Busy => "busy",
        WorkerStatus::Idle => "idle",
        WorkerStatus::Lost => "lost",
    }
}

/// `GET /admin/workers`.
pub async fn show(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
) -> Result<Response, ApiError> {
    if !session.user.is_admin {
        return Ok(render_with_status(
            StatusCode::FORBIDDEN,
            "Fleet",
            Nav::Fleet,
            Some(&session),
            "<p id=\"forbidden\">The fleet view is for administrators.</p>",
        ));
    }
    let now_ms = state.clock.now_ms();
    let lost_after_ms = state.limits.worker_lost_after_ms();
    let workers = state.store.workers().await?;
    let infos: Vec<_> = workers
        .iter()
        .map(|row| (row, worker_info(row, now_ms, lost_after_ms)))
        .collect();
    let count = |wanted: WorkerStatus| infos.iter().filter(|(_, i)| i.status == wanted).count();
    let mut main = format!(
        "<p id=\"fleet-summary\">{} workers: {} busy, {} idle, {} lost. Lost: no heartbeat for \
         more than {} s.</p>",
        infos.len(),
        count(WorkerStatus::Busy),
        count(WorkerStatus::Idle),
        count(WorkerStatus::Lost),
        lost_after_ms / 1000,
    );
    if infos.is_empty() {
        main.push_str("<p>No worker has sent a heartbeat yet.</p>");
        return Ok(render("Fleet", Nav::Fleet, Some(&session), &main));
    }
    main.push_str(
        "<div class=\"table-wrap\"><table id=\"workers\"><thead><tr><th scope=\"col\">Worker</th>\
         <th scope=\"col\">Host</th><th scope=\"col\">Arch</th><th scope=\"col\">Version</th>\
         <th scope=\"col\">Builds / concurrency</th><th scope=\"col\">Current builds</th>\
         <th scope=\"col\">Since it started</th>\
         <th scope=\"col\">Last heartbeat</th><th scope=\"col\">Status</th></tr></thead><tbody>",
    );
    for (row, info) in &infos {
        let mut builds = String::new();
        for id in &info.builds {
            let _ = write!(
                builds,
                "<a class=\"mono\" href=\"/builds/{id}\">{id}</a> ",
                id = escape(id)
            );
        }
        let status = status_label(info.status);
        let draining = if info.is_draining { " (draining)" } else { "" };
        let _ = write!(
            main,
            "<tr class=\"worker-{status}\" data-worker-id=\"{id}\"><th scope=\"row\" class=\"mono\">{id}</th>\
             <td>{host}</td><td>{arch}</td><td>{version}</td><td>{running} / {concurrency}</td>\
             <td>{builds}</td><td class=\"since-start\">{since}</td>\
             <td>{last} <span class=\"help\">({ago} s ago)</span></td>\
             <td class=\"status\"><span class=\"state state-{status}\">{status}</span>{draining}</td></tr>",
            id = escape(&info.id),
            host = escape(&info.host),
            arch = escape(&info.arch),
            version = escape(&info.version),
            running = info.builds.len(),
            concurrency = info.concurrency,
            last = time(row.last_seen_ms),
            ago = info.seconds_since_seen,
            since = format_args!(
                "{} finished, {} failed, {} cancelled; pulled {}, pushed {}",
                info.stats.builds_finished,
                info.stats.builds_failed,
                info.stats.builds_cancelled,
                bytes(info.stats.bytes_pulled),
                bytes(info.stats.bytes_pushed),
            ),
        );
    }
    main.push_str("</tbody></table></div>");
    Ok(render("Fleet", Nav::Fleet, Some(&session), &main))
}
