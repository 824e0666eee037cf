//! Browser sessions of the web builder: the cookie's digest, its user, the CSRF token its forms
//! carry, and the API token it signed in with, if any (revoking that token ends the session).

use sqlx::Row;

use super::users::user_from_row;
use super::{Result, Store, User};

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who is signed in.
    pub user: User,
    /// Every form this session posts must carry it.
    pub csrf_token: String,
    /// Unix ms when it ends.
    pub expires_ms: i64,
}

impl Store {
    /// Records a session by the digest of its cookie. Sessions that ended before `now_ms` are
    /// removed on the way, so the table holds only live ones and those of the last sign-in.
    pub async fn create_session(
        &self,
        session_hash: &str,
        user_id: i64,
        token_hash: Option<&str>,
        csrf_token: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<()> {
        sqlx::query("DELETE FROM web_sessions WHERE expires_ms <= $1")
            .bind(now_ms)
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO web_sessions (session_hash, user_id, token_hash, csrf_token, \
             created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(session_hash)
        .bind(user_id)
        .bind(token_hash)
        .bind(csrf_token)
        .bind(now_ms)
        .bind(expires_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The session with cookie digest `session_hash`, if it has not ended at `now_ms` and the
    /// token it signed in with (if any) still works.
    pub async fn session(&self, session_hash: &str, now_ms: i64) -> Result<Option<Session>> {
        let row = sqlx::query(
            "SELECT users.id, users.name, is_admin, build_timeout_seconds, \
             max_concurrent_builds, csrf_token, web_sessions.expires_ms \
             FROM web_sessions JOIN users ON users.id = web_sessions.user_id \
             LEFT JOIN tokens ON tokens.token_hash = web_sessions.token_hash \
             WHERE session_hash = $1 AND web_sessions.expires_ms > $2 \
             AND (web_sessions.token_hash IS NULL OR (tokens.revoked_ms IS NULL \
                  AND (tokens.expires_ms IS NULL OR tokens.expires_ms > $2)))",
        )
        .bind(session_hash)
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(Session {
                user: user_from_row(&row)?,
                csrf_token: row.try_get("csrf_token")?,
                expires_ms: row.try_get("expires_ms")?,
            })
        })
        .transpose()
    }

    /// Ends a session (sign-out). Unknown sessions are fine.
    pub async fn delete_session(&self, session_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM web_sessions WHERE session_hash = $1")
            .bind(session_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::UserLimits;
    use crate::store::tests::on_both_backends;

    #[tokio::test]
    async fn sessions_end_on_expiry_sign_out_and_revocation_of_their_token() {
        on_both_backends(check_sessions).await;
    }

    async fn check_sessions(store: Store) {
        let alice = store
            .add_user("alice", false, UserLimits::default(), 0)
            .await
            .unwrap();
        store
            .create_session("s1", alice.id, None, "c1", 0, 100)
            .await
            .unwrap();
        let session = store.session("s1", 99).await.unwrap().unwrap();
        assert_eq!(
            (session.user.name.as_str(), session.csrf_token.as_str()),
            ("alice", "c1")
        );
        assert!(store.session("s1", 100).await.unwrap().is_none());
        assert!(store.session("s2", 0).await.unwrap().is_none());

        let token = "d".repeat(64);
        let row = store
            .create_token(alice.id, &token, "t", None, 0)
            .await
            .unwrap();
        store
            .create_session("s3", alice.id, Some(&token), "c3", 1, 1_000)
            .await
            .unwrap();
        store
            .create_session("s4", alice.id, None, "c4", 1, 1_000)
            .await
            .unwrap();
        assert!(store.session("s3", 2).await.unwrap().is_some());
        store
            .revoke_token(alice.id, &row.public_id, 3)
            .await
            .unwrap();
        assert!(store.session("s3", 4).await.unwrap().is_none());
        assert!(store.session("s4", 4).await.unwrap().is_some());
        store.delete_session("s4").await.unwrap();
        assert!(store.session("s4", 5).await.unwrap().is_none());
    }
}
