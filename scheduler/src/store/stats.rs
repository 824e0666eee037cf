//! Aggregates for the operators: build counts for `/metrics` and the database check of
//! `/readyz`.

use sqlx::Row;

use super::{BuildState, Result, Store, parse_column};

/// How many builds are in one state for one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildCount {
    /// The state.
    pub state: BuildState,
    /// Go architecture name.
    pub arch: String,
    /// Builds in that state.
    pub count: u64,
}

impl Store {
    /// Builds per state and architecture (states without builds are absent).
    pub async fn build_counts(&self) -> Result<Vec<BuildCount>> {
        let rows = sqlx::query(
            "SELECT state, arch, COUNT(*) AS n FROM builds GROUP BY state, arch ORDER BY state, arch",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(BuildCount {
                    state: parse_column("build state", row.try_get("state")?)?,
                    arch: row.try_get("arch")?,
                    count: u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Runs a trivial query: the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(self.pool()).await?;
        Ok(())
    }
}
