//! Named API tokens as the token page manages them (`/auth/tokens`): created with an optional
//! expiry, listed with their last use, revoked. Authentication itself is
//! [`Store::user_by_token`], which refuses revoked and expired tokens.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store};

/// A token as its owner sees it; never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// What the page names and revokes it by: the first 24 hex digits of its digest.
    pub public_id: String,
    /// The owner's label ("laptop", "CI"); empty for tokens made by `admin token create`.
    pub name: String,
    /// Unix ms.
    pub created_ms: i64,
    /// Unix ms after which it stops working; `None`: never.
    pub expires_ms: Option<i64>,
    /// Unix ms of its last use, to the minute; `None`: never used.
    pub last_used_ms: Option<i64>,
    /// Unix ms it was revoked at.
    pub revoked_ms: Option<i64>,
}

impl TokenRow {
    /// Whether the token authenticates at `now_ms`.
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.revoked_ms.is_none() && self.expires_ms.is_none_or(|expires| expires > now_ms)
    }
}

/// The public id of the token with digest `token_hash`.
pub fn public_token_id(token_hash: &str) -> &str {
    token_hash.get(..24).unwrap_or(token_hash)
}

fn token_from_row(row: &AnyRow) -> Result<TokenRow> {
    Ok(TokenRow {
        public_id: row.try_get("public_id")?,
        name: row.try_get("name")?,
        created_ms: row.try_get("created_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        last_used_ms: row.try_get("last_used_ms")?,
        revoked_ms: row.try_get("revoked_ms")?,
    })
}

impl Store {
    /// Records a token of `user_id` by its digest, named `name`, working until `expires_ms`.
    pub async fn create_token(
        &self,
        user_id: i64,
        token_hash: &str,
        name: &str,
        expires_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<TokenRow> {
        sqlx::query(
            "INSERT INTO tokens (token_hash, user_id, created_ms, public_id, name, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(now_ms)
        .bind(public_token_id(token_hash))
        .bind(name)
        .bind(expires_ms)
        .execute(self.pool())
        .await?;
        Ok(TokenRow {
            public_id: public_token_id(token_hash).to_owned(),
            name: name.to_owned(),
            created_ms: now_ms,
            expires_ms,
            last_used_ms: None,
            revoked_ms: None,
        })
    }

    /// The tokens of `user_id`, newest first, revoked ones included (they show as revoked).
    pub async fn tokens_of(&self, user_id: i64) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query(
            "SELECT public_id, name, created_ms, expires_ms, last_used_ms, revoked_ms \
             FROM tokens WHERE user_id = $1 ORDER BY created_ms DESC, public_id",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revokes the token `public_id` of `user_id`, and ends the browser sessions that signed in
    /// with it. Returns false when `user_id` has no such unrevoked token.
    pub async fn revoke_token(&self, user_id: i64, public_id: &str, now_ms: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tokens SET revoked_ms = $1 \
             WHERE user_id = $2 AND public_id = $3 AND revoked_ms IS NULL",
        )
        .bind(now_ms)
        .bind(user_id)
        .bind(public_id)
        .execute(self.pool())
        .await?;
        sqlx::query(
            "DELETE FROM web_sessions WHERE token_hash IN \
             (SELECT token_hash FROM tokens WHERE user_id = $1 AND public_id = $2)",
        )
        .bind(user_id)
        .bind(public_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::UserLimits;
    use crate::store::tests::on_both_backends;

    #[tokio::test]
    async fn revoked_and_expired_tokens_authenticate_nothing() {
        on_both_backends(check_revoked).await;
    }

    async fn check_revoked(store: Store) {
        let alice = store
            .add_user("alice", false, UserLimits::default(), 0)
            .await
            .unwrap();
        let hash = "a".repeat(64);
        let expiring = "b".repeat(64);
        let row = store
            .create_token(alice.id, &hash, "laptop", None, 10)
            .await
            .unwrap();
        store
            .create_token(alice.id, &expiring, "ci", Some(1_000), 20)
            .await
            .unwrap();
        assert_eq!(row.public_id, "a".repeat(24));

        // Use is recorded once per minute.
        assert!(store.user_by_token(&hash, 100).await.unwrap().is_some());
        assert!(store.user_by_token(&hash, 200).await.unwrap().is_some());
        let listed = store.tokens_of(alice.id).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].name, "ci");
        assert_eq!(listed[1].last_used_ms, Some(100));
        assert!(store.user_by_token(&hash, 60_100).await.unwrap().is_some());
        assert_eq!(
            store.tokens_of(alice.id).await.unwrap()[1].last_used_ms,
            Some(60_100)
        );

        assert!(store.user_by_token(&expiring, 999).await.unwrap().is_some());
        assert!(
            store
                .user_by_token(&expiring, 1_000)
                .await
                .unwrap()
                .is_none()
        );
        assert!(!listed[0].is_active(1_000));

        let bob = store
            .add_user("bob", false, UserLimits::default(), 0)
            .await
            .unwrap();
        assert!(
            !store
                .revoke_token(bob.id, &row.public_id, 300)
                .await
                .unwrap()
        );
        assert!(store.user_by_token(&hash, 301).await.unwrap().is_some());
        assert!(
            store
                .revoke_token(alice.id, &row.public_id, 300)
                .await
                .unwrap()
        );
        assert!(
            !store
                .revoke_token(alice.id, &row.public_id, 301)
                .await
                .unwrap()
        );
        assert!(store.user_by_token(&hash, 302).await.unwrap().is_none());
        assert_eq!(
            store.tokens_of(alice.id).await.unwrap()[1].revoked_ms,
            Some(300)
        );
    }
}
