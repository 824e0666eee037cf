//! The uid and gid maps of a sandbox's user namespace, read from `/etc/subuid` and `/etc/subgid`
//! and written by the setuid `newuidmap`/`newgidmap` (package uidmap).
//!
//! An unprivileged process may only map its own id (user_namespaces(7)); the full map that `apt`,
//! `useradd` and `chown` need inside (environment.md, "Rootless execution") takes the setuid
//! helpers, which check the ranges against the subordinate id files. The map is:
//! inner 0 → the build user's id, inner 1..=65536 → the user's subordinate range.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::error::{Result, SandboxError};

/// Number of subordinate ids a build user needs: inner ids 1..=65536.
pub const SUBORDINATE_COUNT: u32 = 65536;

/// Longest stderr of `newuidmap` kept for an error message, in bytes.
const MAX_MAPPER_STDERR_BYTES: usize = 4096;

/// One `name:start:count` line of `/etc/subuid` or `/etc/subgid` (subuid(5)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubordinateRange {
    /// First host id of the range.
    pub start: u32,
    /// Number of ids in the range.
    pub count: u32,
}

/// Finds the first range of at least `min_count` ids given to the user, named by `user_name` or
/// by its numeric `id` (subuid(5) allows both). Malformed lines are skipped, as `newuidmap` does.
pub fn find_subordinate_range(
    contents: &str,
    user_name: &str,
    id: u32,
    min_count: u32,
) -> Option<SubordinateRange> {
    let id_text = id.to_string();
    contents.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let (owner, start, count) = (fields.next()?, fields.next()?, fields.next()?);
        if fields.next().is_some() || (owner != user_name && owner != id_text) {
            return None;
        }
        let range = SubordinateRange {
            start: start.parse().ok()?,
            count: count.parse().ok()?,
        };
        // A range that wraps past u32::MAX would map ids that do not exist.
        let is_valid = range.count >= min_count && range.start.checked_add(range.count).is_some();
        is_valid.then_some(range)
    })
}

/// One line of `/proc/PID/uid_map`: `count` ids from `inner` map to ids from `outer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMapEntry {
    /// First id inside the namespace.
    pub inner: u32,
    /// First id outside, in the worker's namespace.
    pub outer: u32,
    /// Number of ids.
    pub count: u32,
}

/// A uid or gid map of a sandbox's user namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdMap {
    /// The lines of the map, in order.
    pub entries: Vec<IdMapEntry>,
}

impl IdMap {
    /// The full map: inner 0 → `id` (the build user's uid or gid), inner 1..=65536 → the first
    /// 65536 ids of `range`.
    pub fn full(id: u32, range: SubordinateRange) -> Self {
        Self {
            entries: vec![
                IdMapEntry {
                    inner: 0,
                    outer: id,
                    count: 1,
                },
                IdMapEntry {
                    inner: 1,
                    outer: range.start,
                    count: SUBORDINATE_COUNT,
                },
            ],
        }
    }

    /// The host id of the inner id `inner`, if the map covers it. A worker running as root
    /// that writes a rootfs from outside the sandbox (layer extraction) gives files these
    /// owners, so that the sandbox sees the image's ids (environment.md, "Rootless execution").
    pub fn host_id(&self, inner: u32) -> Option<u32> {
        self.entries.iter().find_map(|e| {
            let offset = inner.checked_sub(e.inner)?;
            (offset < e.count).then(|| e.outer + offset)
        })
    }

    /// The arguments of `newuidmap`/`newgidmap` that write this map for process `pid`.
    pub fn mapper_args(&self, pid: u32) -> Vec<String> {
        std::iter::once(pid.to_string())
            .chain(self.entries.iter().flat_map(|e| {
                [
                    e.inner.to_string(),
                    e.outer.to_string(),
                    e.count.to_string(),
                ]
            }))
            .collect()
    }
}

/// Reads the build user's full map from a subordinate id file (`/etc/subuid` or `/etc/subgid`).
pub(crate) fn read_full_map(path: &Path, user_name: &str, id: u32) -> Result<IdMap> {
    let contents =
        std::fs::read_to_string(path).map_err(|source| SandboxError::ReadSubordinateIds {
            path: path.to_owned(),
            source,
        })?;
    let range =
        find_subordinate_range(&contents, user_name, id, SUBORDINATE_COUNT).ok_or_else(|| {
            SandboxError::NoSubordinateRange {
                path: path.to_owned(),
                user: user_name.to_owned(),
                count: SUBORDINATE_COUNT,
            }
        })?;
    Ok(IdMap::full(id, range))
}

/// Runs `program` (`newuidmap` or `newgidmap`) to write `map` for the helper `pid`. `run_as` is
/// the build user's uid and gid when the worker runs as root: the mappers require that the
/// caller's real ids match the owner of the target process (newuidmap(1)).
pub(crate) async fn write_map(
    program: &Path,
    pid: u32,
    map: &IdMap,
    run_as: Option<(u32, u32)>,
) -> Result<()> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(map.mapper_args(pid))
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid);
    }
    let output = command
        .output()
        .await
        .map_err(|source| SandboxError::RunIdMapper {
            program: PathBuf::from(program),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = &output.stderr[..output.stderr.len().min(MAX_MAPPER_STDERR_BYTES)];
    Err(SandboxError::IdMapperFailed {
        program: program.to_owned(),
        status: output.status,
        stderr: String::from_utf8_lossy(stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBUID: &str = "\
alice:100000:65536
# not a range
bob:165536:1000
bob:200000:65536
1005:300000:70000
broken:x:65536
wrap:4294967000:65536
";

    #[test]
    fn finds_the_first_range_large_enough_by_name() {
        assert_eq!(
            find_subordinate_range(SUBUID, "bob", 1002, SUBORDINATE_COUNT),
            Some(SubordinateRange {
                start: 200000,
                count: 65536
            })
        );
    }

    #[test]
    fn finds_a_range_by_numeric_id() {
        assert_eq!(
            find_subordinate_range(SUBUID, "carol", 1005, SUBORDINATE_COUNT),
            Some(SubordinateRange {
                start: 300000,
                count: 70000
            })
        );
    }

    #[test]
    fn refuses_missing_malformed_and_wrapping_ranges() {
        for user in ["nobody", "broken", "wrap"] {
            assert_eq!(
                find_subordinate_range(SUBUID, user, 4000, SUBORDINATE_COUNT),
                None,
                "{user}"
            );
        }
    }

    #[test]
    fn full_map_gives_root_to_the_user_and_the_range_to_the_rest() {
        let map = IdMap::full(
            1001,
            SubordinateRange {
                start: 100000,
                count: 65536,
            },
        );
        assert_eq!(
            map.mapper_args(4242),
            ["4242", "0", "1001", "1", "1", "100000", "65536"]
        );
    }

    #[test]
    fn host_ids_follow_the_map_and_stop_at_its_end() {
        let map = IdMap::full(
            1001,
            SubordinateRange {
                start: 100000,
                count: 70000,
            },
        );
        assert_eq!(map.host_id(0), Some(1001));
        assert_eq!(map.host_id(1), Some(100000));
        assert_eq!(map.host_id(1000), Some(100999));
        assert_eq!(map.host_id(65536), Some(165535));
        assert_eq!(map.host_id(65537), None);
    }

    #[test]
    fn read_full_map_names_the_file_and_user_when_no_range_fits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subuid");
        std::fs::write(&path, "alice:100000:1000\n").unwrap();
        let error = read_full_map(&path, "alice", 1000).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{} gives user alice no range of 65536 subordinate ids",
                path.display()
            )
        );
    }
}
