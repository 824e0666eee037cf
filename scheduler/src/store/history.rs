//! What the web builder shows about builds beyond the build API: a user's history and a queued
//! build's place in its queue.

use super::builds::{BUILD_COLUMNS, build_from_row};
use super::{BuildRow, Result, Store};

impl Store {
    /// The newest `limit` builds of `user_id`, newest first.
    pub async fn builds_of(&self, user_id: i64, limit: u32) -> Result<Vec<BuildRow>> {
        let sql =
            format!("{BUILD_COLUMNS} WHERE user_id = $1 ORDER BY submit_ms DESC, id DESC LIMIT $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(build_from_row).collect()
    }

    /// How many queued builds for the same architecture were submitted before `build` (0: it is
    /// next). Jobs leave a queue in publication order, which follows submission order.
    pub async fn queue_position(&self, build: &BuildRow) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM builds WHERE state = 'queued' AND arch = $1 \
             AND (submit_ms < $2 OR (submit_ms = $2 AND id < $3))",
        )
        .bind(&build.arch)
        .bind(build.submit_ms)
        .bind(&build.id)
        .fetch_one(self.pool())
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::tests::on_both_backends;
    use crate::store::{NewBuild, UserLimits};

    fn new_build(id: &str, user_id: i64, submit_ms: i64) -> NewBuild {
        NewBuild {
            id: id.into(),
            user_id,
            arch: "amd64".into(),
            library_ref: format!("u/remote-builds/rb-{id}:latest"),
            definition: "Bootstrap: scratch\n".into(),
            context_digest: None,
            context_token_hash: None,
            result_token_hash: "r".into(),
            timeout_seconds: 60,
            submit_ms,
        }
    }

    #[tokio::test]
    async fn history_is_per_user_and_newest_first_and_positions_count_earlier_queued_builds() {
        on_both_backends(check_history).await;
    }

    async fn check_history(store: Store) {
        let alice = store
            .add_user("alice", false, UserLimits::default(), 0)
            .await
            .unwrap();
        let bob = store
            .add_user("bob", false, UserLimits::default(), 0)
            .await
            .unwrap();
        for (id, user, at) in [("a1", alice.id, 1), ("b1", bob.id, 2), ("a2", alice.id, 3)] {
            assert!(
                store
                    .insert_build(&new_build(id, user, at), 9)
                    .await
                    .unwrap()
            );
        }
        let mine: Vec<String> = store
            .builds_of(alice.id, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(mine, ["a2", "a1"]);
        assert_eq!(store.builds_of(alice.id, 1).await.unwrap().len(), 1);
        let a2 = store.build("a2").await.unwrap().unwrap();
        assert_eq!(store.queue_position(&a2).await.unwrap(), 2);
        store.mark_running("a1", "w", "started", 4).await.unwrap();
        assert_eq!(store.queue_position(&a2).await.unwrap(), 1);
    }
}
