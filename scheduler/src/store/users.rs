//! Users, their passwords and the lookup of API tokens. Tokens are stored as SHA-256 digests: a
//! database leak does not leak working tokens; passwords as Argon2id PHC strings.

use sqlx::Row;

use super::{Result, Store, StoreError};

/// A user as handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Login name; also the library entity of their remote builds.
    pub name: String,
    /// Admins may see and cancel every build.
    pub is_admin: bool,
    /// Per-user overrides of the deployment's limits.
    pub limits: UserLimits,
}

/// Limits set for one user; `None` means the deployment's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserLimits {
    /// Wall-time limit of one build, seconds.
    pub build_timeout_seconds: Option<u64>,
    /// Builds queued or running at once.
    pub max_concurrent_builds: Option<u64>,
}

pub(super) fn user_from_row(row: &sqlx::any::AnyRow) -> Result<User> {
    let timeout: Option<i64> = row.try_get("build_timeout_seconds")?;
    let concurrent: Option<i64> = row.try_get("max_concurrent_builds")?;
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        limits: UserLimits {
            build_timeout_seconds: timeout.and_then(|t| u64::try_from(t).ok()),
            max_concurrent_builds: concurrent.and_then(|c| u64::try_from(c).ok()),
        },
    })
}

/// `Ok` when an update by user name touched a row, [`StoreError::NoSuchUser`] when none.
fn one_user_changed(done: &sqlx::any::AnyQueryResult, name: &str) -> Result<()> {
    if done.rows_affected() == 0 {
        return Err(StoreError::NoSuchUser(name.to_owned()));
    }
    Ok(())
}

impl Store {
    /// Adds a user.
    ///
    /// # Errors
    /// [`StoreError::UserExists`] when the name is taken.
    pub async fn add_user(
        &self,
        name: &str,
        is_admin: bool,
        limits: UserLimits,
        now_ms: i64,
    ) -> Result<User> {
        if self.user_by_name(name).await?.is_some() {
            return Err(StoreError::UserExists(name.to_owned()));
        }
        sqlx::query(
            "INSERT INTO users (name, is_admin, build_timeout_seconds, max_concurrent_builds, \
             created_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name)
        .bind(i64::from(is_admin))
        .bind(limits.build_timeout_seconds.map(saturating_i64))
        .bind(limits.max_concurrent_builds.map(saturating_i64))
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        self.user_by_name(name)
            .await?
            .ok_or_else(|| StoreError::NoSuchUser(name.to_owned()))
    }

    /// Changes a user's limits (`None` fields go back to the deployment's default).
    ///
    /// # Errors
    /// [`StoreError::NoSuchUser`].
    pub async fn set_user_limits(&self, name: &str, limits: UserLimits) -> Result<()> {
        let done = sqlx::query(
            "UPDATE users SET build_timeout_seconds = $1, max_concurrent_builds = $2 \
             WHERE name = $3",
        )
        .bind(limits.build_timeout_seconds.map(saturating_i64))
        .bind(limits.max_concurrent_builds.map(saturating_i64))
        .bind(name)
        .execute(self.pool())
        .await?;
        one_user_changed(&done, name)
    }

    /// Sets the library quota of the user called `name`: `None` goes back to the deployment's
    /// default, `Some(0)` is unlimited, `Some(n)` allows `n` bytes.
    ///
    /// # Errors
    /// [`StoreError::NoSuchUser`].
    pub async fn set_library_quota(&self, name: &str, quota_bytes: Option<u64>) -> Result<()> {
        let done = sqlx::query("UPDATE users SET library_quota_bytes = $1 WHERE name = $2")
            .bind(quota_bytes.map(saturating_i64))
            .bind(name)
            .execute(self.pool())
            .await?;
        one_user_changed(&done, name)
    }

    /// The library quota set for user `user_id`: `None` when none is set (or no such user),
    /// `Some(0)` unlimited, `Some(n)` bytes.
    pub async fn library_quota(&self, user_id: i64) -> Result<Option<u64>> {
        let quota: Option<Option<i64>> =
            sqlx::query_scalar("SELECT library_quota_bytes FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(self.pool())
                .await?;
        Ok(quota.flatten().and_then(|q| u64::try_from(q).ok()))
    }

    /// The user called `name`, if any.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT id, name, is_admin, build_timeout_seconds, max_concurrent_builds \
             FROM users WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The user with row id `id`, if any.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT id, name, is_admin, build_timeout_seconds, max_concurrent_builds \
             FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Records a token (by its digest) for the user called `name`, unnamed and without expiry
    /// (the admin command's token).
    ///
    /// # Errors
    /// [`StoreError::NoSuchUser`].
    pub async fn add_token(&self, name: &str, token_hash: &str, now_ms: i64) -> Result<()> {
        let user = self
            .user_by_name(name)
            .await?
            .ok_or_else(|| StoreError::NoSuchUser(name.to_owned()))?;
        self.create_token(user.id, token_hash, "", None, now_ms)
            .await?;
        Ok(())
    }

    /// The owner of the token with digest `token_hash`, if the token exists, is not revoked and
    /// has not expired at `now_ms`. Records the use (to the minute: a busy client does not
    /// write on every request).
    pub async fn user_by_token(&self, token_hash: &str, now_ms: i64) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT users.id, users.name, is_admin, build_timeout_seconds, max_concurrent_builds, \
             tokens.last_used_ms FROM users JOIN tokens ON tokens.user_id = users.id \
             WHERE token_hash = $1 AND revoked_ms IS NULL \
             AND (expires_ms IS NULL OR expires_ms > $2)",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let last_used: Option<i64> = row.try_get("last_used_ms")?;
        if last_used.is_none_or(|last| now_ms - last >= LAST_USE_RESOLUTION_MS) {
            sqlx::query("UPDATE tokens SET last_used_ms = $1 WHERE token_hash = $2")
                .bind(now_ms)
                .bind(token_hash)
                .execute(self.pool())
                .await?;
        }
        user_from_row(&row).map(Some)
    }

    /// Sets (or with `None` removes) the password of the user called `name`, as a PHC string.
    ///
    /// # Errors
    /// [`StoreError::NoSuchUser`].
    pub async fn set_password_hash(&self, name: &str, password_hash: Option<&str>) -> Result<()> {
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE name = $2")
            .bind(password_hash)
            .bind(name)
            .execute(self.pool())
            .await?;
        one_user_changed(&done, name)
    }

    /// The user called `name` and their password's PHC string, if they have one.
    pub async fn user_with_password(&self, name: &str) -> Result<Option<(User, Option<String>)>> {
        let row = sqlx::query(
            "SELECT id, name, is_admin, build_timeout_seconds, max_concurrent_builds, \
             password_hash FROM users WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| Ok((user_from_row(&row)?, row.try_get("password_hash")?)))
            .transpose()
    }
}

/// A token's last use is recorded to this resolution, ms.
const LAST_USE_RESOLUTION_MS: i64 = 60_000;

/// Limits are configured as `u64` but stored as `BIGINT`.
pub(crate) fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use crate::store::tests::sqlite_store;

    use super::*;

    #[tokio::test]
    async fn tokens_find_their_user_and_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(dir.path()).await;
        let alice = store
            .add_user("alice", false, UserLimits::default(), 1)
            .await
            .unwrap();
        assert!(matches!(
            store
                .add_user("alice", true, UserLimits::default(), 2)
                .await,
            Err(StoreError::UserExists(_))
        ));
        let alice_id = alice.id;
        store.add_token("alice", "abc", 3).await.unwrap();
        assert_eq!(store.user_by_token("abc", 4).await.unwrap(), Some(alice));
        assert_eq!(store.user_by_token("abd", 4).await.unwrap(), None);
        assert!(matches!(
            store.add_token("bob", "x", 4).await,
            Err(StoreError::NoSuchUser(_))
        ));
        let limits = UserLimits {
            build_timeout_seconds: Some(60),
            max_concurrent_builds: Some(1),
        };
        store.set_user_limits("alice", limits).await.unwrap();
        assert_eq!(
            store.user_by_name("alice").await.unwrap().unwrap().limits,
            limits
        );
        assert_eq!(store.library_quota(alice_id).await.unwrap(), None);
        for quota in [Some(5000), Some(0), None] {
            store.set_library_quota("alice", quota).await.unwrap();
            assert_eq!(store.library_quota(alice_id).await.unwrap(), quota);
        }
        assert!(matches!(
            store.set_library_quota("bob", Some(1)).await,
            Err(StoreError::NoSuchUser(_))
        ));
    }
}
