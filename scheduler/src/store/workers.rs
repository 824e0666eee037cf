//! The fleet: one row per worker, replaced by each of its heartbeats (`relay.rs`), read by the
//! fleet view (`api/fleet.rs`), the metrics (`metrics.rs`) and the autoscaler.

use kiln_proto::amqp::WorkerHeartbeat;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::Result;
use super::Store;
use super::users::saturating_i64;

/// A worker as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRow {
    /// The worker's id (`EventMessage.worker_id`).
    pub worker_id: String,
    /// Its latest heartbeat.
    pub heartbeat: WorkerHeartbeat,
    /// When its first heartbeat arrived, Unix ms (scheduler clock).
    pub first_seen_ms: i64,
    /// When its latest heartbeat arrived, Unix ms (scheduler clock).
    pub last_seen_ms: i64,
}

fn worker_from_row(row: &AnyRow) -> Result<WorkerRow> {
    let builds: String = row.try_get("builds")?;
    let stats: String = row.try_get("stats")?;
    Ok(WorkerRow {
        worker_id: row.try_get("id")?,
        heartbeat: WorkerHeartbeat {
            host: row.try_get("host")?,
            arch: row.try_get("arch")?,
            worker_version: row.try_get("version")?,
            concurrency: u32::try_from(row.try_get::<i64, _>("concurrency")?).unwrap_or(0),
            builds: builds.split_whitespace().map(str::to_owned).collect(),
            is_draining: row.try_get::<i64, _>("is_draining")? != 0,
            // Written by this code from a parsed heartbeat; an unreadable value only loses
            // the counters, not the worker.
            stats: serde_json::from_str(&stats).unwrap_or_default(),
        },
        first_seen_ms: row.try_get("first_seen_ms")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
    })
}

impl Store {
    /// Records a heartbeat of `worker_id` that arrived at `now_ms`: inserts the worker or
    /// replaces what its previous heartbeat said.
    pub async fn record_heartbeat(
        &self,
        worker_id: &str,
        heartbeat: &WorkerHeartbeat,
        now_ms: i64,
    ) -> Result<()> {
        // Build ids never contain white space (the relay only passes checked ones), so a
        // space-separated list needs no escaping and reads back on both backends alike.
        let builds = heartbeat.builds.join(" ");
        sqlx::query(
            "INSERT INTO workers (id, host, arch, version, concurrency, builds, is_draining, \
             stats, first_seen_ms, last_seen_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
             ON CONFLICT (id) DO UPDATE SET host = excluded.host, arch = excluded.arch, \
             version = excluded.version, concurrency = excluded.concurrency, \
             builds = excluded.builds, is_draining = excluded.is_draining, \
             stats = excluded.stats, last_seen_ms = excluded.last_seen_ms",
        )
        .bind(worker_id)
        .bind(&heartbeat.host)
        .bind(&heartbeat.arch)
        .bind(&heartbeat.worker_version)
        .bind(saturating_i64(u64::from(heartbeat.concurrency)))
        .bind(builds)
        .bind(i64::from(heartbeat.is_draining))
        .bind(serde_json::to_string(&heartbeat.stats).unwrap_or_else(|_| "{}".into()))
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every known worker, most recently seen first.
    pub async fn workers(&self) -> Result<Vec<WorkerRow>> {
        let rows = sqlx::query(
            "SELECT id, host, arch, version, concurrency, builds, is_draining, stats, \
             first_seen_ms, last_seen_ms FROM workers ORDER BY last_seen_ms DESC, id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(worker_from_row).collect()
    }

    /// Forgets workers whose last heartbeat arrived before `before_ms`; returns how many.
    pub async fn forget_workers(&self, before_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM workers WHERE last_seen_ms < $1")
            .bind(before_ms)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use kiln_proto::amqp::WorkerStats;

    use super::*;
    use crate::store::tests::sqlite_store;

    fn heartbeat(id: &str, builds: &[&str]) -> WorkerHeartbeat {
        WorkerHeartbeat {
            host: format!("{id}.example"),
            arch: "amd64".into(),
            worker_version: "0.1.0".into(),
            concurrency: 2,
            builds: builds.iter().map(|b| (*b).to_owned()).collect(),
            is_draining: false,
            stats: WorkerStats::default(),
        }
    }

    #[tokio::test]
    async fn heartbeats_replace_each_other_and_old_workers_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(dir.path()).await;
        store
            .record_heartbeat("w1", &heartbeat("w1", &["aa", "bb"]), 100)
            .await
            .unwrap();
        store
            .record_heartbeat("w2", &heartbeat("w2", &[]), 150)
            .await
            .unwrap();
        let mut later = heartbeat("w1", &["bb"]);
        later.is_draining = true;
        later.stats.bytes_pulled = 42;
        later
            .stats
            .step_seconds
            .entry("run".into())
            .or_default()
            .observe(1_500);
        store.record_heartbeat("w1", &later, 200).await.unwrap();

        let workers = store.workers().await.unwrap();
        assert_eq!(workers.len(), 2);
        assert_eq!(workers[0].worker_id, "w1");
        assert_eq!(workers[0].heartbeat, later);
        assert_eq!(
            (workers[0].first_seen_ms, workers[0].last_seen_ms),
            (100, 200)
        );
        assert_eq!(workers[1].heartbeat.builds, Vec::<String>::new());

        assert_eq!(store.forget_workers(160).await.unwrap(), 1);
        let left: Vec<_> = store
            .workers()
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.worker_id)
            .collect();
        assert_eq!(left, ["w1"]);
    }
}
