//! The fleet as the scheduler sees it: workers send heartbeats (`proto::amqp::WorkerHeartbeat`)
//! on the events exchange, the relay stores the latest one per worker (`store/workers.rs`), and
//! this module judges them: busy, idle, or lost when heartbeats stopped for longer than the
//! deployment's limit ([`crate::config::Limits::worker_lost_after_ms`]).
//!
//! Lost is judged at read time from the last arrival, so it needs no timer and holds for
//! every scheduler reading the same database.

use kiln_proto::http::WorkerInfo;
pub use kiln_proto::http::WorkerStatus;

use crate::clock::rfc3339;
use crate::store::WorkerRow;

/// The status of `worker` at `now_ms`: lost when its last heartbeat arrived more than
/// `lost_after_ms` ago; else busy when it listed builds, idle when it listed none.
pub fn worker_status(worker: &WorkerRow, now_ms: i64, lost_after_ms: i64) -> WorkerStatus {
    if now_ms.saturating_sub(worker.last_seen_ms) > lost_after_ms {
        WorkerStatus::Lost
    } else if worker.heartbeat.builds.is_empty() {
        WorkerStatus::Idle
    } else {
        WorkerStatus::Busy
    }
}

/// The fleet view's entry for `worker` at `now_ms`.
pub fn worker_info(worker: &WorkerRow, now_ms: i64, lost_after_ms: i64) -> WorkerInfo {
    let heartbeat = &worker.heartbeat;
    let since_ms = now_ms.saturating_sub(worker.last_seen_ms).max(0);
    WorkerInfo {
        id: worker.worker_id.clone(),
        host: heartbeat.host.clone(),
        arch: heartbeat.arch.clone(),
        version: heartbeat.worker_version.clone(),
        concurrency: heartbeat.concurrency,
        builds: heartbeat.builds.clone(),
        is_draining: heartbeat.is_draining,
        status: worker_status(worker, now_ms, lost_after_ms),
        first_seen: rfc3339(worker.first_seen_ms),
        last_seen: rfc3339(worker.last_seen_ms),
        seconds_since_seen: u64::try_from(since_ms / 1000).unwrap_or(0),
        stats: heartbeat.stats.clone(),
    }
}

#[cfg(test)]
mod tests {
    use kiln_proto::amqp::WorkerHeartbeat;

    use super::*;

    fn row(builds: &[&str], last_seen_ms: i64) -> WorkerRow {
        WorkerRow {
            worker_id: "w1".into(),
            heartbeat: WorkerHeartbeat {
                host: "h".into(),
                arch: "amd64".into(),
                worker_version: "0.1.0".into(),
                concurrency: 1,
                builds: builds.iter().map(|b| (*b).to_owned()).collect(),
                is_draining: false,
                stats: Default::default(),
            },
            first_seen_ms: 0,
            last_seen_ms,
        }
    }

    #[test]
    fn lost_wins_over_busy_and_the_limit_is_inclusive() {
        assert_eq!(
            worker_status(&row(&["b"], 1000), 31_000, 30_000),
            WorkerStatus::Busy
        );
        assert_eq!(
            worker_status(&row(&[], 1000), 31_000, 30_000),
            WorkerStatus::Idle
        );
        assert_eq!(
            worker_status(&row(&["b"], 1000), 31_001, 30_000),
            WorkerStatus::Lost
        );
        let info = worker_info(&row(&[], 1000), 4_500, 30_000);
        assert_eq!(info.seconds_since_seen, 3);
        assert_eq!(info.last_seen, "1970-01-01T00:00:01Z");
    }
}
