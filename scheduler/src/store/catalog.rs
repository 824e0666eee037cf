//! The library browser's index (`crate::web`'s `/library`): the entities a viewer can see
//! something in, with how many of their collections they can see. The same rule as the
//! library API: public collections for everyone, private ones for their entity's owner and
//! admins.

use sqlx::Row;

use super::{Result, Store, User};

/// One entity in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitySummary {
    /// The entity name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Unix ms.
    pub created_ms: i64,
    /// Its collections the viewer may see.
    pub visible_collections: i64,
}

impl Store {
    /// Entities with a collection `viewer` (`None`: anonymous) may see, and the viewer's own
    /// (admins see all), by name, at most `limit`.
    pub async fn visible_entities(
        &self,
        viewer: Option<&User>,
        limit: i64,
    ) -> Result<Vec<EntitySummary>> {
        // User ids start at 1, so -1 owns nothing.
        let viewer_id = viewer.map_or(-1, |u| u.id);
        let is_admin = i64::from(viewer.is_some_and(|u| u.is_admin));
        let rows = sqlx::query(
            "SELECT e.name, e.description, e.created_ms, CAST((SELECT COUNT(*) \
             FROM library_collections l WHERE l.entity_id = e.id \
             AND (l.private = 0 OR e.owner_id = $1 OR $2 = 1)) AS BIGINT) AS visible \
             FROM library_entities e WHERE e.owner_id = $1 OR $2 = 1 OR EXISTS \
             (SELECT 1 FROM library_collections l WHERE l.entity_id = e.id AND l.private = 0) \
             ORDER BY e.name LIMIT $3",
        )
        .bind(viewer_id)
        .bind(is_admin)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(EntitySummary {
                    name: row.try_get("name")?,
                    description: row.try_get("description")?,
                    created_ms: row.try_get("created_ms")?,
                    visible_collections: row.try_get("visible")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::on_both_backends;
    use crate::store::{CollectionRow, EntityRow, UserLimits};

    #[tokio::test]
    async fn strangers_see_entities_with_public_collections_owners_and_admins_more() {
        on_both_backends(|store| async move {
            let alice = store
                .add_user("alice", false, UserLimits::default(), 0)
                .await
                .unwrap();
            let bob = store
                .add_user("bob", false, UserLimits::default(), 0)
                .await
                .unwrap();
            let root = store
                .add_user("root", true, UserLimits::default(), 0)
                .await
                .unwrap();
            for (n, (entity, owner, collections)) in [
                ("alice", alice.id, &[("pub", false), ("priv", true)][..]),
                ("bob", bob.id, &[("priv", true)][..]),
                ("empty", bob.id, &[][..]),
            ]
            .into_iter()
            .enumerate()
            {
                let entity_id = format!("{n:024}");
                store
                    .insert_entity(&EntityRow {
                        id: entity_id.clone(),
                        name: entity.into(),
                        owner_id: owner,
                        description: String::new(),
                        default_private: false,
                        created_ms: 0,
                    })
                    .await
                    .unwrap();
                for (c, (name, private)) in collections.iter().enumerate() {
                    store
                        .insert_collection(&CollectionRow {
                            id: format!("{n}{c:023}"),
                            entity_id: entity_id.clone(),
                            name: (*name).into(),
                            description: String::new(),
                            private: *private,
                            created_ms: 0,
                        })
                        .await
                        .unwrap();
                }
            }
            let seen = |viewer: Option<User>| {
                let store = store.clone();
                async move {
                    store
                        .visible_entities(viewer.as_ref(), 10)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|e| (e.name, e.visible_collections))
                        .collect::<Vec<_>>()
                }
            };
            let own = |name: &str, count: i64| (name.to_owned(), count);
            assert_eq!(seen(None).await, [own("alice", 1)]);
            assert_eq!(seen(Some(alice)).await, [own("alice", 2)]);
            assert_eq!(
                seen(Some(bob)).await,
                [own("alice", 1), own("bob", 1), own("empty", 0)]
            );
            assert_eq!(
                seen(Some(root)).await,
                [own("alice", 2), own("bob", 1), own("empty", 0)]
            );
        })
        .await;
    }
}
