//! Build logs, persisted in chunks so that a viewer who connects late, or after a scheduler
//! restart, replays the whole log from the database (build-api.md §4.4: "logs must be buffered
//! from build start").
//!
//! A chunk grows by appends until it holds [`CHUNK_BYTES`]; then a new one starts. Chunks only
//! grow, so a viewer's position is `(chunk number, byte offset)`. The log of a build is capped:
//! past the cap one truncation line is written and later text is dropped.

use sqlx::Row;

use super::{Backend, Result, Store, StoreError};

/// Target size of one chunk, bytes.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// One stored chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Position in the build's log, from 0.
    pub chunk_no: i64,
    /// Its text (whole lines, each ending in `\n`).
    pub text: String,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAppend {
    /// The text is stored.
    Stored,
    /// The log reached its cap: the text was cut (now or earlier).
    Truncated,
    /// The build is unknown or final: nothing was stored.
    Refused,
}

impl Store {
    /// Appends build output `text` to the log of build `id`, unless the build is unknown or
    /// final. At most `max_log_bytes` are kept: the append that crosses the cap is cut at a line
    /// boundary and followed by one line saying so; later appends are dropped.
    pub async fn append_log(&self, id: &str, text: &str, max_log_bytes: u64) -> Result<LogAppend> {
        self.append(id, text, Some(max_log_bytes)).await
    }

    /// Appends the scheduler's own `note` (why a build ended) to the log of an active build,
    /// past the cap if need be: the reason must reach the user even when the output was
    /// clipped.
    pub async fn append_note(&self, id: &str, note: &str) -> Result<LogAppend> {
        self.append(id, note, None).await
    }

    async fn append(&self, id: &str, text: &str, cap: Option<u64>) -> Result<LogAppend> {
        // Postgres rejects NUL in text; a build may print anything.
        let text = text.replace('\0', "\u{fffd}");
        let mut tx = self.pool().begin().await?;
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "SELECT state, log_bytes, log_chunks, log_tail_bytes, log_truncated \
             FROM builds WHERE id = $1{lock}"
        );
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(LogAppend::Refused);
        };
        let state: String = row.try_get(0)?;
        let active = state == "queued" || state == "running";
        if !active {
            return Ok(LogAppend::Refused);
        }
        let log_bytes = u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0);
        let mut chunks: i64 = row.try_get(2)?;
        let mut tail = usize::try_from(row.try_get::<i64, _>(3)?).unwrap_or(0);
        let was_truncated = row.try_get::<i64, _>(4)? != 0;
        if was_truncated && cap.is_some() {
            return Ok(LogAppend::Truncated);
        }

        let (kept, truncated_now) = match cap {
            Some(max_log_bytes) if text.len() as u64 > max_log_bytes.saturating_sub(log_bytes) => {
                let room =
                    usize::try_from(max_log_bytes.saturating_sub(log_bytes)).unwrap_or(usize::MAX);
                let mut cut = text[..floor_char_boundary(&text, room)].to_owned();
                // Keep whole lines only.
                match cut.rfind('\n') {
                    Some(end) => cut.truncate(end + 1),
                    None => cut.clear(),
                }
                cut.push_str(&format!(
                    "[kiln] the log of this build reached its limit of {max_log_bytes} bytes; \
                 later output is not shown\n"
                ));
                (cut, true)
            }
            _ => (text, false),
        };

        let mut rest = kept.as_str();
        while !rest.is_empty() {
            let fits = CHUNK_BYTES.saturating_sub(tail);
            if chunks > 0 && fits > 0 {
                let piece = &rest[..floor_char_boundary(rest, fits)];
                if !piece.is_empty() {
                    sqlx::query(
                        "UPDATE build_log_chunks SET text = text || $1 \
                         WHERE build_id = $2 AND chunk_no = $3",
                    )
                    .bind(piece)
                    .bind(id)
                    .bind(chunks - 1)
                    .execute(&mut *tx)
                    .await?;
                    tail += piece.len();
                    rest = &rest[piece.len()..];
                    continue;
                }
            }
            let piece = &rest[..floor_char_boundary(rest, CHUNK_BYTES).max(next_char(rest))];
            sqlx::query(
                "INSERT INTO build_log_chunks (build_id, chunk_no, text) VALUES ($1, $2, $3)",
            )
            .bind(id)
            .bind(chunks)
            .bind(piece)
            .execute(&mut *tx)
            .await?;
            chunks += 1;
            tail = piece.len();
            rest = &rest[piece.len()..];
        }
        sqlx::query(
            "UPDATE builds SET log_bytes = log_bytes + $1, log_chunks = $2, log_tail_bytes = $3, \
             log_truncated = $4 WHERE id = $5",
        )
        .bind(i64::try_from(kept.len()).unwrap_or(i64::MAX))
        .bind(chunks)
        .bind(i64::try_from(tail).unwrap_or(i64::MAX))
        .bind(i64::from(was_truncated || truncated_now))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(if truncated_now {
            LogAppend::Truncated
        } else {
            LogAppend::Stored
        })
    }

    /// The chunks of build `id` from number `from_chunk` on, in order.
    pub async fn log_since(&self, id: &str, from_chunk: i64) -> Result<Vec<LogChunk>> {
        let rows = sqlx::query(
            "SELECT chunk_no, text FROM build_log_chunks WHERE build_id = $1 AND chunk_no >= $2 \
             ORDER BY chunk_no",
        )
        .bind(id)
        .bind(from_chunk)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok::<_, StoreError>(LogChunk {
                    chunk_no: row.try_get(0)?,
                    text: row.try_get(1)?,
                })
            })
            .collect()
    }
}

/// The largest char boundary of `text` at or below `index`.
fn floor_char_boundary(text: &str, index: usize) -> usize {
    if index >= text.len() {
        return text.len();
    }
    (0..=index)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// The length of the first char of a non-empty `text`, so a split always makes progress.
fn next_char(text: &str) -> usize {
    text.chars().next().map_or(0, char::len_utf8)
}

#[cfg(test)]
mod tests {
    use crate::store::tests::sqlite_store;
    use crate::store::{FinalState, NewBuild, UserLimits};

    use super::*;

    async fn store_with_build(dir: &std::path::Path) -> Store {
        let store = sqlite_store(dir).await;
        let user = store
            .add_user("alice", false, UserLimits::default(), 0)
            .await
            .unwrap();
        let build = NewBuild {
            id: "b".into(),
            user_id: user.id,
            arch: "amd64".into(),
            library_ref: "alice/x/y:latest".into(),
            definition: String::new(),
            context_digest: None,
            context_token_hash: None,
            result_token_hash: String::new(),
            timeout_seconds: 1,
            submit_ms: 0,
        };
        assert!(store.insert_build(&build, 10).await.unwrap());
        store
    }

    fn whole(chunks: &[LogChunk]) -> String {
        chunks.iter().map(|c| c.text.as_str()).collect()
    }

    #[tokio::test]
    async fn chunks_fill_up_then_roll_over_and_the_cap_writes_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_build(dir.path()).await;
        let line = format!("{}\n", "é".repeat(1000)); // 2001 bytes, multi-byte chars
        let mut expected = String::new();
        for _ in 0..40 {
            assert_eq!(
                store.append_log("b", &line, 1 << 20).await.unwrap(),
                LogAppend::Stored
            );
            expected.push_str(&line);
        }
        let chunks = store.log_since("b", 0).await.unwrap();
        assert_eq!(chunks.len(), 2, "80 KB make two 64 KiB chunks");
        assert!(chunks[0].text.len() <= CHUNK_BYTES);
        assert_eq!(whole(&chunks), expected);
        assert_eq!(store.log_since("b", 1).await.unwrap(), chunks[1..]);

        // Cap at the current size plus one and a half lines: one more line fits, then the note.
        let cap = u64::try_from(expected.len() + line.len() * 3 / 2).unwrap();
        assert_eq!(
            store.append_log("b", &line.repeat(2), cap).await.unwrap(),
            LogAppend::Truncated
        );
        assert_eq!(
            store.append_log("b", "later\n", cap).await.unwrap(),
            LogAppend::Truncated
        );
        let text = whole(&store.log_since("b", 0).await.unwrap());
        assert!(text.starts_with(&expected));
        let after = &text[expected.len()..];
        assert!(after.starts_with(&line));
        assert!(after[line.len()..].starts_with("[kiln] the log of this build reached its limit"));
        assert!(
            text.ends_with("later output is not shown\n"),
            "nothing after the note"
        );

        // The scheduler's note passes the cap; a final build takes nothing more.
        assert_eq!(
            store.append_note("b", "closing\n").await.unwrap(),
            LogAppend::Stored
        );
        assert!(whole(&store.log_since("b", 0).await.unwrap()).ends_with("not shown\nclosing\n"));
        store
            .finish_build("b", &FinalState::Cancelled, 5)
            .await
            .unwrap();
        assert_eq!(
            store.append_log("b", "late\n", 1 << 30).await.unwrap(),
            LogAppend::Refused
        );
        assert_eq!(
            store.append_note("b", "late\n").await.unwrap(),
            LogAppend::Refused
        );
    }

    #[test]
    fn char_boundaries() {
        assert_eq!(floor_char_boundary("aé", 2), 1);
        assert_eq!(floor_char_boundary("aé", 9), 3);
        assert_eq!(next_char("éa"), 2);
    }
}
