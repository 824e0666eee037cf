//! Build contexts (build-api.md §4.5): announced with size and digest, uploaded once through a
//! one-time URL, deduplicated per user by digest, collected after a TTL.

use std::fmt;
use std::str::FromStr;

use sqlx::Row;

use super::{Result, Store, parse_column};

/// Where a build context is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextState {
    /// Announced; the upload URL is out, no verified archive yet.
    Pending,
    /// The archive is on disk, its size and digest verified.
    Ready,
}

impl ContextState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
        }
    }
}

impl fmt::Display for ContextState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContextState {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        match s {
            "pending" => Ok(Self::Pending),
            "ready" => Ok(Self::Ready),
            _ => Err(()),
        }
    }
}

/// A build context as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextRow {
    /// The owner's row id.
    pub user_id: i64,
    /// `sha256.<hex>` of the archive.
    pub digest: String,
    /// Size of the archive, bytes.
    pub size: u64,
    /// Pending or ready.
    pub state: ContextState,
    /// Unix ms of the announcement.
    pub created_ms: i64,
    /// Unix ms of the last announcement or use by a build.
    pub last_used_ms: i64,
}

fn context_from_row(row: &sqlx::any::AnyRow) -> Result<ContextRow> {
    Ok(ContextRow {
        user_id: row.try_get("user_id")?,
        digest: row.try_get("digest")?,
        size: u64::try_from(row.try_get::<i64, _>("size")?).unwrap_or(0),
        state: parse_column("context state", row.try_get("state")?)?,
        created_ms: row.try_get("created_ms")?,
        last_used_ms: row.try_get("last_used_ms")?,
    })
}

impl Store {
    /// The context `digest` of `user_id`.
    pub async fn context(&self, user_id: i64, digest: &str) -> Result<Option<ContextRow>> {
        let row = sqlx::query(
            "SELECT user_id, digest, size, state, created_ms, last_used_ms FROM build_contexts \
             WHERE user_id = $1 AND digest = $2",
        )
        .bind(user_id)
        .bind(digest)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(context_from_row).transpose()
    }

    /// Announces (or re-announces) a pending context with a new upload token.
    pub async fn put_pending_context(
        &self,
        user_id: i64,
        digest: &str,
        size: u64,
        upload_token_hash: &str,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM build_contexts WHERE user_id = $1 AND digest = $2")
            .bind(user_id)
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO build_contexts (user_id, digest, size, state, upload_token_hash, \
             created_ms, last_used_ms) VALUES ($1, $2, $3, 'pending', $4, $5, $5)",
        )
        .bind(user_id)
        .bind(digest)
        .bind(super::users::saturating_i64(size))
        .bind(upload_token_hash)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes the pending context an upload token belongs to: the token is cleared, so it works
    /// once.
    pub async fn take_upload_token(&self, upload_token_hash: &str) -> Result<Option<ContextRow>> {
        let row = sqlx::query(
            "SELECT user_id, digest, size, state, created_ms, last_used_ms FROM build_contexts \
             WHERE upload_token_hash = $1 AND state = 'pending'",
        )
        .bind(upload_token_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(context) = row.as_ref().map(context_from_row).transpose()? else {
            return Ok(None);
        };
        let done = sqlx::query(
            "UPDATE build_contexts SET upload_token_hash = NULL WHERE upload_token_hash = $1",
        )
        .bind(upload_token_hash)
        .execute(self.pool())
        .await?;
        // A concurrent request with the same token took it first.
        Ok((done.rows_affected() == 1).then_some(context))
    }

    /// Marks a context whose archive was verified as ready.
    pub async fn mark_context_ready(&self, user_id: i64, digest: &str, now_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE build_contexts SET state = 'ready', last_used_ms = $1 \
             WHERE user_id = $2 AND digest = $3",
        )
        .bind(now_ms)
        .bind(user_id)
        .bind(digest)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Refreshes a context's last use, so the collector keeps it.
    pub async fn touch_context(&self, user_id: i64, digest: &str, now_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE build_contexts SET last_used_ms = $1 WHERE user_id = $2 AND digest = $3",
        )
        .bind(now_ms)
        .bind(user_id)
        .bind(digest)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets a context.
    pub async fn delete_context(&self, user_id: i64, digest: &str) -> Result<()> {
        sqlx::query("DELETE FROM build_contexts WHERE user_id = $1 AND digest = $2")
            .bind(user_id)
            .bind(digest)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Contexts not used since `before_ms` and not used by a queued or running build.
    pub async fn stale_contexts(&self, before_ms: i64) -> Result<Vec<ContextRow>> {
        let rows = sqlx::query(
            "SELECT user_id, digest, size, state, created_ms, last_used_ms FROM build_contexts c \
             WHERE last_used_ms < $1 AND NOT EXISTS (SELECT 1 FROM builds b \
               WHERE b.user_id = c.user_id AND b.context_digest = c.digest \
               AND b.state IN ('queued', 'running'))",
        )
        .bind(before_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(context_from_row).collect()
    }

    /// How many contexts exist (for tests).
    pub async fn count_contexts(&self) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM build_contexts")
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
