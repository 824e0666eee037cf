//! Resource limits of a sandboxed script, enforced with rlimits (setrlimit(2)) because rootless
//! workers here have no delegated cgroup controllers (environment.md, "Rootless execution").
//!
//! Limits are per process except `RLIMIT_NPROC`, which the kernel counts per user and user
//! namespace and checks at every level up to the initial namespace (kernel/ucount.c
//! `is_rlimit_overlimit`): the helper sets it before it creates the user namespace, so that the
//! namespace's ceiling holds even for processes that switch to other inner uids.

use serde::{Deserialize, Serialize};

/// The limits applied to every sandboxed script. Values above the worker's own hard limit are
/// lowered to it: an unprivileged process cannot raise a hard limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// `RLIMIT_NPROC`: processes and threads of the build user, counted inside the sandbox and,
    /// across all of that user's sandboxes, on the host. Default 4096.
    pub max_processes: u64,
    /// `RLIMIT_NOFILE`: open file descriptors per process. Default 65536.
    pub max_open_files: u64,
    /// `RLIMIT_FSIZE`: largest file a process may write, in bytes (`SIGXFSZ` beyond). Default
    /// 64 GiB.
    pub max_file_size_bytes: u64,
    /// `RLIMIT_CPU`: CPU seconds per process (`SIGXCPU`, then `SIGKILL` 5 s later). Default 4 h;
    /// the wall timeout usually ends a build first.
    pub max_cpu_seconds: Option<u64>,
    /// `RLIMIT_DATA`: heap and private writable mappings per process, in bytes. Unlike
    /// `RLIMIT_AS` it does not count reserved but unused address space, which JVMs and Go
    /// programs take in large amounts. Default 16 GiB.
    pub max_data_bytes: Option<u64>,
    /// `RLIMIT_AS`: address space per process, in bytes. Default none.
    pub max_address_space_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_processes: 4096,
            max_open_files: 65536,
            max_file_size_bytes: 64 << 30,
            max_cpu_seconds: Some(4 * 3600),
            max_data_bytes: Some(16 << 30),
            max_address_space_bytes: None,
        }
    }
}

/// Seconds between `SIGXCPU` at the soft CPU limit and `SIGKILL` at the hard one, for programs
/// that catch `SIGXCPU`.
const CPU_GRACE_SECONDS: u64 = 5;

/// One rlimit to set: the resource, its soft and hard values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rlimit {
    /// Which limit.
    pub resource: Resource,
    /// The soft limit, what the kernel enforces.
    pub soft: u64,
    /// The hard limit, the ceiling for the soft one.
    pub hard: u64,
}

/// The resources Kiln limits, named as in setrlimit(2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resource {
    Nproc,
    Nofile,
    Fsize,
    Cpu,
    Data,
    As,
    Core,
}

impl Limits {
    /// The limit the helper sets on itself before creating the user namespace.
    pub(crate) fn process_limit(&self) -> Rlimit {
        Rlimit {
            resource: Resource::Nproc,
            soft: self.max_processes,
            hard: self.max_processes,
        }
    }

    /// Every limit the script gets, core dumps off (a dump of a build tool is not an artifact).
    pub(crate) fn rlimits(&self) -> Vec<Rlimit> {
        let same = |resource, value| Rlimit {
            resource,
            soft: value,
            hard: value,
        };
        let mut limits = vec![
            self.process_limit(),
            same(Resource::Nofile, self.max_open_files),
            same(Resource::Fsize, self.max_file_size_bytes),
            same(Resource::Core, 0),
        ];
        if let Some(seconds) = self.max_cpu_seconds {
            limits.push(Rlimit {
                resource: Resource::Cpu,
                soft: seconds,
                hard: seconds.saturating_add(CPU_GRACE_SECONDS),
            });
        }
        limits.extend(self.max_data_bytes.map(|b| same(Resource::Data, b)));
        limits.extend(self.max_address_space_bytes.map(|b| same(Resource::As, b)));
        limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_gets_every_configured_limit_and_no_core_dumps() {
        let limits = Limits {
            max_processes: 64,
            max_open_files: 128,
            max_file_size_bytes: 1 << 20,
            max_cpu_seconds: Some(10),
            max_data_bytes: None,
            max_address_space_bytes: Some(1 << 30),
        };
        let got: Vec<_> = limits
            .rlimits()
            .into_iter()
            .map(|l| (l.resource, l.soft, l.hard))
            .collect();
        assert_eq!(
            got,
            [
                (Resource::Nproc, 64, 64),
                (Resource::Nofile, 128, 128),
                (Resource::Fsize, 1 << 20, 1 << 20),
                (Resource::Core, 0, 0),
                (Resource::Cpu, 10, 15),
                (Resource::As, 1 << 30, 1 << 30),
            ]
        );
    }
}
