//! The worker's health for exec probes (`kiln-worker health`): the worker holds no HTTP server
//! (STYLE.md §1), so at every heartbeat it writes a small report to a file, and a probe judges
//! the file. Alive: the report is fresh, so the heartbeat loop, and with it the runtime, still
//! turns. Ready: also connected to the broker and not draining, so it takes jobs.

use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What the worker last said about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Id in events and heartbeats.
    pub worker_id: String,
    /// When the report was written, Unix ms (the worker's clock, the probe's too).
    pub time_unix_ms: u64,
    /// Whether the job consumer's broker connection is up.
    pub is_connected: bool,
    /// Whether it stopped taking jobs after a shutdown signal.
    pub is_draining: bool,
    /// Builds running now.
    pub builds: usize,
}

/// Largest report file read, bytes: the file is ours, but a probe must not read a huge one.
const MAX_REPORT_BYTES: u64 = 64 * 1024;

impl HealthReport {
    /// Writes the report to `path` atomically (a temporary file renamed over it), so a probe
    /// never reads half a report.
    ///
    /// # Errors
    /// The I/O error.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        file.write_all(&serde_json::to_vec(self).map_err(io::Error::other)?)?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Reads the report at `path`.
    ///
    /// # Errors
    /// The I/O error, or `InvalidData` for a file that is not a report.
    pub fn read(path: &Path) -> io::Result<Self> {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::fs::File::open(path)?
            .take(MAX_REPORT_BYTES)
            .read_to_end(&mut bytes)?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// The probe's verdict at `now_ms`: `Ok` with a line saying what is fine, or `Err` with a
    /// line saying why not. `ready` asks for readiness on top of liveness.
    ///
    /// # Errors
    /// The reason the worker is not alive (report older than `max_age_ms`) or not ready.
    pub fn judge(&self, now_ms: u64, max_age_ms: u64, ready: bool) -> Result<String, String> {
        let age_ms = now_ms.saturating_sub(self.time_unix_ms);
        if age_ms > max_age_ms {
            return Err(format!(
                "worker {} last reported {} s ago (limit {} s): its heartbeat loop is stuck",
                self.worker_id,
                age_ms / 1000,
                max_age_ms / 1000
            ));
        }
        if ready && !self.is_connected {
            return Err(format!(
                "worker {} is not connected to the broker",
                self.worker_id
            ));
        }
        if ready && self.is_draining {
            return Err(format!(
                "worker {} is draining and takes no jobs",
                self.worker_id
            ));
        }
        Ok(format!(
            "worker {} is {} ({} builds running)",
            self.worker_id,
            if ready { "ready" } else { "alive" },
            self.builds
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(time_unix_ms: u64, is_connected: bool, is_draining: bool) -> HealthReport {
        HealthReport {
            worker_id: "w1".into(),
            time_unix_ms,
            is_connected,
            is_draining,
            builds: 1,
        }
    }

    #[test]
    fn fresh_reports_are_alive_and_connected_ones_ready() {
        let fresh = report(10_000, true, false);
        assert!(fresh.judge(15_000, 30_000, true).is_ok());
        let stale = fresh.judge(50_000, 30_000, false).unwrap_err();
        assert!(stale.contains("40 s ago"), "{stale}");
        let offline = report(10_000, false, false);
        assert!(offline.judge(10_000, 30_000, false).is_ok());
        assert!(
            offline
                .judge(10_000, 30_000, true)
                .unwrap_err()
                .contains("not connected")
        );
        let draining = report(10_000, true, true);
        assert!(
            draining
                .judge(10_000, 30_000, true)
                .unwrap_err()
                .contains("draining")
        );
    }

    #[test]
    fn reports_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("health.json");
        let written = report(1, true, false);
        written.write(&path).unwrap();
        assert_eq!(HealthReport::read(&path).unwrap(), written);
        std::fs::write(&path, b"{").unwrap();
        assert_eq!(
            HealthReport::read(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
