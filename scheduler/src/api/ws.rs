//! `GET /v1/build-ws/{id}`: a build's log as WebSocket text frames (build-api.md §4.4).
//!
//! The database is the source of truth: a viewer replays the stored chunks from the start, then
//! waits for a wake-up from the relay ([`AppState::changes`]) or a periodic poll (which also
//! covers events relayed by another scheduler sharing the PostgreSQL database) and sends what
//! is new. It reads the build's state *before* the log, and the relay writes the log before the
//! final state, so once it sees a final state and has sent the log read after it, the log is
//! complete: only then does it close with 1000, which the stock client reads as "finished,
//! fetch the status" (§4.2). On scheduler shutdown it closes with 1001 instead, never 1000.
//!
//! Each socket has a reader (answers pings, notices the client leaving) and a writer, under one
//! `select!`: when either ends the other is dropped. The writer works on any `Sink` of
//! messages, so tests drive it with a channel.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::auth::AuthUser;
use super::build::visible_build;
use super::error::ApiError;
use crate::store::StoreError;

/// How often a viewer looks at the database without a wake-up.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// How often the server pings an idle client; there is no client read deadline, but proxies
/// drop silent connections.
const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Close code: the build is finished and its status final.
const CLOSE_NORMAL: u16 = 1000;
/// Close code: the scheduler is going away; the client must not take it for "finished".
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: the scheduler failed to read the log.
const CLOSE_INTERNAL: u16 = 1011;

/// Opens the log stream of a build the token's user may see; 401/404 before the upgrade.
pub async fn build_log(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    visible_build(&state, &user, &id).await?;
    Ok(upgrade.on_upgrade(move |socket| serve_socket(socket, state, id)))
}

/// Runs one socket; axum spawns it detached, so it holds a tracker token for shutdown to wait
/// on.
async fn serve_socket(socket: WebSocket, state: AppState, id: String) {
    let _tracked = state.tracker.token();
    let (sink, stream) = socket.split();
    tokio::select! {
        () = read_until_closed(stream) => {}
        result = stream_log(sink, &state, &id) => {
            if let Err(error) = result {
                tracing::warn!(build_id = %id, error = %error, "log stream failed");
            }
        }
    }
}

/// Reads (and drops) client frames until the client closes or the connection fails. Pongs to
/// pings are sent by the WebSocket layer.
async fn read_until_closed<S>(mut stream: S)
where
    S: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    while let Some(message) = stream.next().await {
        if matches!(message, Err(_) | Ok(Message::Close(_))) {
            return;
        }
    }
}

/// Why a log stream stopped early.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The client went away.
    #[error("failed to send to the viewer")]
    Send,
    /// Reading the log or state failed.
    #[error("failed to read the build log")]
    Store(#[source] StoreError),
}

/// Sends the log of build `id` to `sink` from the start: replay, then live text, then close.
///
/// # Errors
/// [`StreamError::Send`] when the client is gone; [`StreamError::Store`] after closing with
/// 1011.
pub async fn stream_log<S>(mut sink: S, state: &AppState, id: &str) -> Result<(), StreamError>
where
    S: Sink<Message> + Unpin,
{
    // Subscribe before the first read, so no wake-up between read and wait is lost.
    let mut changes = state.changes.subscribe();
    let mut chunk_no = 0i64;
    let mut offset = 0usize;
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    loop {
        let step = send_new_text(&mut sink, state, id, &mut chunk_no, &mut offset).await;
        match step {
            Ok(true) => return close(&mut sink, CLOSE_NORMAL, "").await,
            Ok(false) => {}
            Err(StreamError::Store(error)) => {
                close(&mut sink, CLOSE_INTERNAL, "failed to read the build log").await?;
                return Err(StreamError::Store(error));
            }
            Err(error) => return Err(error),
        }
        // Wait for news about this build, a poll, a ping, or shutdown.
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => {
                    return close(&mut sink, CLOSE_GOING_AWAY, "scheduler shutting down").await;
                }
                change = changes.recv() => match change {
                    Ok(changed) if changed == id => break,
                    Ok(_) => {}
                    // Missed wake-ups: look anyway.
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => {
                        return close(&mut sink, CLOSE_GOING_AWAY, "scheduler shutting down").await;
                    }
                },
                () = tokio::time::sleep(POLL_INTERVAL) => break,
                _ = ping.tick() => {
                    sink.send(Message::Ping(Default::default())).await.map_err(|_| StreamError::Send)?;
                }
            }
        }
    }
}

/// Sends the text stored after `(chunk_no, offset)` and moves the position. Returns true once
/// the build is final and everything is sent.
async fn send_new_text<S>(
    sink: &mut S,
    state: &AppState,
    id: &str,
    chunk_no: &mut i64,
    offset: &mut usize,
) -> Result<bool, StreamError>
where
    S: Sink<Message> + Unpin,
{
    // State first, then the log (see the module docs).
    let is_final = state
        .store
        .build(id)
        .await
        .map_err(StreamError::Store)?
        .is_none_or(|row| row.state.is_final());
    let chunks = state
        .store
        .log_since(id, *chunk_no)
        .await
        .map_err(StreamError::Store)?;
    for chunk in chunks {
        let start = if chunk.chunk_no == *chunk_no {
            *offset
        } else {
            0
        };
        if let Some(text) = chunk.text.get(start..).filter(|t| !t.is_empty()) {
            sink.send(Message::Text(text.into()))
                .await
                .map_err(|_| StreamError::Send)?;
        }
        *chunk_no = chunk.chunk_no;
        *offset = chunk.text.len();
    }
    Ok(is_final)
}

async fn close<S>(sink: &mut S, code: u16, reason: &str) -> Result<(), StreamError>
where
    S: Sink<Message> + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    sink.send(Message::Close(Some(frame)))
        .await
        .map_err(|_| StreamError::Send)
}
