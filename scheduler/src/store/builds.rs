//! Builds: one row per submission, from `queued` to one of the final states.

use std::fmt;
use std::str::FromStr;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store, StoreError, parse_column};

/// Where a build is, as the scheduler records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildState {
    /// Waiting in the queue for a worker.
    Queued,
    /// A worker reported that it started.
    Running,
    /// The image is stored.
    Succeeded,
    /// The build failed (the worker said so, or the job was dead-lettered).
    Failed,
    /// A user cancelled it.
    Cancelled,
    /// It ran longer than its timeout.
    TimedOut,
    /// It waited in the queue longer than the queue TTL.
    Expired,
}

impl BuildState {
    /// Every state, in lifecycle order.
    pub const ALL: [BuildState; 7] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::TimedOut,
        Self::Expired,
    ];

    /// The name stored in the database and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
            Self::Expired => "expired",
        }
    }

    /// True once the build can change no more.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

impl fmt::Display for BuildState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BuildState {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or(())
    }
}

/// A final state and what goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalState {
    /// The image is stored: its size in bytes and `sha256.<hex>`.
    Succeeded {
        /// Size of the SIF, bytes.
        image_size: u64,
        /// `sha256.<hex>` of the SIF.
        image_checksum: String,
    },
    /// Failed, with the reason for people.
    Failed(String),
    /// Cancelled by a user.
    Cancelled,
    /// Ran out of time, with the reason for people.
    TimedOut(String),
    /// Waited too long in the queue, with the reason for people.
    Expired(String),
}

impl FinalState {
    /// The state this outcome records.
    pub fn state(&self) -> BuildState {
        match self {
            Self::Succeeded { .. } => BuildState::Succeeded,
            Self::Failed(_) => BuildState::Failed,
            Self::Cancelled => BuildState::Cancelled,
            Self::TimedOut(_) => BuildState::TimedOut,
            Self::Expired(_) => BuildState::Expired,
        }
    }

    /// The reason for people, for the outcomes that have one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Failed(reason) | Self::TimedOut(reason) | Self::Expired(reason) => Some(reason),
            Self::Succeeded { .. } | Self::Cancelled => None,
        }
    }
}

/// What a submission records.
#[derive(Debug, Clone)]
pub struct NewBuild {
    /// 24 lowercase hex digits.
    pub id: String,
    /// The submitting user's row id.
    pub user_id: i64,
    /// Go architecture name.
    pub arch: String,
    /// `entity/collection/container:tag`, without scheme.
    pub library_ref: String,
    /// The definition file as submitted.
    pub definition: String,
    /// `sha256.<hex>` of the build context, if any.
    pub context_digest: Option<String>,
    /// Digest of the worker's capability token for the context download.
    pub context_token_hash: Option<String>,
    /// Digest of the worker's capability token for the result upload.
    pub result_token_hash: String,
    /// Wall-time limit, seconds.
    pub timeout_seconds: u64,
    /// Submission time, Unix ms.
    pub submit_ms: i64,
}

/// A build as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRow {
    /// 24 lowercase hex digits.
    pub id: String,
    /// The owner's row id.
    pub user_id: i64,
    /// Where it is.
    pub state: BuildState,
    /// The worker's latest progress state, if it reported one.
    pub phase: Option<String>,
    /// Go architecture name.
    pub arch: String,
    /// `entity/collection/container:tag`.
    pub library_ref: String,
    /// `sha256.<hex>` of its build context.
    pub context_digest: Option<String>,
    /// Digest of the worker's context download token.
    pub context_token_hash: Option<String>,
    /// Digest of the worker's result upload token.
    pub result_token_hash: Option<String>,
    /// Wall-time limit, seconds.
    pub timeout_seconds: u64,
    /// Unix ms.
    pub submit_ms: i64,
    /// Unix ms, once a worker started it.
    pub start_ms: Option<i64>,
    /// Unix ms, once it is final.
    pub complete_ms: Option<i64>,
    /// The worker that runs or ran it.
    pub worker_id: Option<String>,
    /// SIF size in bytes, once succeeded.
    pub image_size: Option<u64>,
    /// `sha256.<hex>` of the SIF, once succeeded.
    pub image_checksum: Option<String>,
    /// Why it failed, timed out or expired.
    pub failure_reason: Option<String>,
    /// Size of the SIF the worker uploaded, bytes.
    pub result_size: Option<u64>,
    /// `sha256.<hex>` of the SIF the worker uploaded.
    pub result_checksum: Option<String>,
}

pub(super) const BUILD_COLUMNS: &str = "SELECT id, user_id, state, phase, arch, library_ref, \
    context_digest, context_token_hash, result_token_hash, timeout_seconds, submit_ms, start_ms, \
    complete_ms, worker_id, image_size, image_checksum, failure_reason, result_size, \
    result_checksum FROM builds ";

pub(super) fn build_from_row(row: &AnyRow) -> Result<BuildRow> {
    let opt_u64 = |name: &str| -> Result<Option<u64>> {
        let value: Option<i64> = row.try_get(name)?;
        Ok(value.and_then(|v| u64::try_from(v).ok()))
    };
    Ok(BuildRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        state: parse_column("build state", row.try_get("state")?)?,
        phase: row.try_get("phase")?,
        arch: row.try_get("arch")?,
        library_ref: row.try_get("library_ref")?,
        context_digest: row.try_get("context_digest")?,
        context_token_hash: row.try_get("context_token_hash")?,
        result_token_hash: row.try_get("result_token_hash")?,
        timeout_seconds: u64::try_from(row.try_get::<i64, _>("timeout_seconds")?).unwrap_or(0),
        submit_ms: row.try_get("submit_ms")?,
        start_ms: row.try_get("start_ms")?,
        complete_ms: row.try_get("complete_ms")?,
        worker_id: row.try_get("worker_id")?,
        image_size: opt_u64("image_size")?,
        image_checksum: row.try_get("image_checksum")?,
        failure_reason: row.try_get("failure_reason")?,
        result_size: opt_u64("result_size")?,
        result_checksum: row.try_get("result_checksum")?,
    })
}

impl Store {
    /// Records a queued build unless its owner already has `max_active` builds queued or
    /// running. The check and the insert are one statement, so two racing submissions on SQLite
    /// cannot both slip under the limit.
    ///
    /// Returns false when the limit stopped it.
    pub async fn insert_build(&self, build: &NewBuild, max_active: u64) -> Result<bool> {
        // Count and insert under the user's row lock: on PostgreSQL two concurrent submissions
        // would otherwise both see room for one more build (SQLite serializes writers anyway).
        let mut transaction = self.pool().begin().await?;
        sqlx::query("UPDATE users SET id = id WHERE id = $1")
            .bind(build.user_id)
            .execute(&mut *transaction)
            .await?;
        let done = sqlx::query(
            "INSERT INTO builds (id, user_id, state, arch, library_ref, definition, \
             context_digest, context_token_hash, result_token_hash, timeout_seconds, submit_ms) \
             SELECT $1, $2, 'queued', $3, $4, $5, $6, $7, $8, $9, $10 \
             WHERE (SELECT COUNT(*) FROM builds WHERE user_id = $2 \
                    AND state IN ('queued', 'running')) < $11",
        )
        .bind(&build.id)
        .bind(build.user_id)
        .bind(&build.arch)
        .bind(&build.library_ref)
        .bind(&build.definition)
        .bind(build.context_digest.as_deref())
        .bind(build.context_token_hash.as_deref())
        .bind(&build.result_token_hash)
        .bind(super::users::saturating_i64(build.timeout_seconds))
        .bind(build.submit_ms)
        .bind(super::users::saturating_i64(max_active))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a build and its log: the undo of a submission whose job could not be queued.
    pub async fn delete_build(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM build_log_chunks WHERE build_id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        sqlx::query("DELETE FROM builds WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The build with this id.
    pub async fn build(&self, id: &str) -> Result<Option<BuildRow>> {
        let sql = format!("{BUILD_COLUMNS} WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(build_from_row).transpose()
    }

    /// Ids of builds in `state` whose `column` (a time) is before `before_ms`.
    async fn builds_older_than(
        &self,
        state: BuildState,
        column_sql: &'static str,
        before_ms: i64,
    ) -> Result<Vec<BuildRow>> {
        let sql = format!("{BUILD_COLUMNS} WHERE state = $1 AND {column_sql} < $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(state.as_str())
            .bind(before_ms)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(build_from_row).collect()
    }

    /// Queued builds submitted before `before_ms`.
    pub async fn queued_before(&self, before_ms: i64) -> Result<Vec<BuildRow>> {
        self.builds_older_than(BuildState::Queued, "submit_ms", before_ms)
            .await
    }

    /// Running builds, for the timeout check.
    pub async fn running_builds(&self) -> Result<Vec<BuildRow>> {
        self.builds_older_than(BuildState::Running, "start_ms", i64::MAX)
            .await
    }

    /// Marks a queued or running build as running on `worker_id` in `phase`. Returns false when
    /// the build is unknown or already final.
    pub async fn mark_running(
        &self,
        id: &str,
        worker_id: &str,
        phase: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE builds SET state = 'running', phase = $1, worker_id = $2, \
             start_ms = COALESCE(start_ms, $3) \
             WHERE id = $4 AND state IN ('queued', 'running')",
        )
        .bind(phase)
        .bind(worker_id)
        .bind(now_ms)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a queued or running build to a final state. Returns false when it was final
    /// already (the first outcome wins; later ones are echoes).
    pub async fn finish_build(&self, id: &str, outcome: &FinalState, now_ms: i64) -> Result<bool> {
        let (size, checksum) = match outcome {
            FinalState::Succeeded {
                image_size,
                image_checksum,
            } => (
                Some(super::users::saturating_i64(*image_size)),
                Some(image_checksum.as_str()),
            ),
            _ => (None, None),
        };
        let done = sqlx::query(
            "UPDATE builds SET state = $1, complete_ms = $2, image_size = $3, \
             image_checksum = $4, failure_reason = $5 \
             WHERE id = $6 AND state IN ('queued', 'running')",
        )
        .bind(outcome.state().as_str())
        .bind(now_ms)
        .bind(size)
        .bind(checksum)
        .bind(outcome.reason())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Builds of `user_id` that are queued or running.
    pub async fn active_builds(&self, user_id: i64) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM builds WHERE user_id = $1 AND state IN ('queued', 'running')",
        )
        .bind(user_id)
        .fetch_one(self.pool())
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// The last applied event of a build: `(attempt, seq)`; `(0, -1)` before the first.
    pub async fn event_cursor(&self, id: &str) -> Result<Option<(i64, i64)>> {
        let row = sqlx::query("SELECT event_attempt, event_seq FROM builds WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| Ok::<_, StoreError>((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    }

    /// Records the last applied event of a build.
    pub async fn set_event_cursor(&self, id: &str, attempt: i64, seq: i64) -> Result<()> {
        sqlx::query("UPDATE builds SET event_attempt = $1, event_seq = $2 WHERE id = $3")
            .bind(attempt)
            .bind(seq)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records the SIF a worker uploaded for a running build. Returns false when the build is
    /// not running.
    pub async fn set_result(&self, id: &str, size: u64, checksum: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE builds SET result_size = $1, result_checksum = $2 \
             WHERE id = $3 AND state IN ('queued', 'running')",
        )
        .bind(super::users::saturating_i64(size))
        .bind(checksum)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// How many builds exist (for tests and metrics).
    pub async fn count_builds(&self) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM builds")
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Whether an active build uses the context `digest` of `user_id`.
    pub async fn context_in_use(&self, user_id: i64, digest: &str) -> Result<bool> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM builds WHERE user_id = $1 AND context_digest = $2 \
             AND state IN ('queued', 'running')",
        )
        .bind(user_id)
        .bind(digest)
        .fetch_one(self.pool())
        .await?;
        Ok(count > 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::UserLimits;
    use crate::store::tests::sqlite_store;

    use super::*;

    fn new_build(id: &str, user_id: i64) -> NewBuild {
        NewBuild {
            id: id.into(),
            user_id,
            arch: "amd64".into(),
            library_ref: format!("alice/remote-builds/rb-{id}:latest"),
            definition: "Bootstrap: scratch\n".into(),
            context_digest: None,
            context_token_hash: None,
            result_token_hash: "r".into(),
            timeout_seconds: 60,
            submit_ms: 10,
        }
    }

    #[tokio::test]
    async fn limit_counts_active_builds_and_the_first_outcome_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(dir.path()).await;
        let user = store
            .add_user("alice", false, UserLimits::default(), 0)
            .await
            .unwrap();
        assert!(
            store
                .insert_build(&new_build("a", user.id), 1)
                .await
                .unwrap()
        );
        assert!(
            !store
                .insert_build(&new_build("b", user.id), 1)
                .await
                .unwrap()
        );
        assert!(store.mark_running("a", "w1", "started", 20).await.unwrap());
        assert!(
            store
                .finish_build("a", &FinalState::Failed("boom".into()), 30)
                .await
                .unwrap()
        );
        assert!(
            !store
                .finish_build("a", &FinalState::Cancelled, 40)
                .await
                .unwrap()
        );
        assert!(!store.mark_running("a", "w1", "packing", 50).await.unwrap());
        let row = store.build("a").await.unwrap().unwrap();
        assert_eq!(row.state, BuildState::Failed);
        assert_eq!(row.failure_reason.as_deref(), Some("boom"));
        assert_eq!((row.start_ms, row.complete_ms), (Some(20), Some(30)));
        // The failed build no longer counts against the limit.
        assert!(
            store
                .insert_build(&new_build("b", user.id), 1)
                .await
                .unwrap()
        );
        store.delete_build("b").await.unwrap();
        assert_eq!(store.count_builds().await.unwrap(), 1);
    }
}
