//! The ways a sandboxed run can fail before or around the script. A script that fails is not an
//! error here: it is an [`super::Outcome`].

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while setting up, supervising or tearing down a sandbox. All of
/// them are infrastructure faults (the job can be retried elsewhere) except [`Self::Setup`] and
/// [`Self::RelativeCommand`], which a hostile or broken rootfs can cause.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The subordinate id file could not be read.
    #[error("failed to read the subordinate id file {path}")]
    ReadSubordinateIds {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The build user has no range of 65536 subordinate ids (run tests/setup/build-user.sh).
    #[error("{path} gives user {user} no range of {count} subordinate ids")]
    NoSubordinateRange {
        path: PathBuf,
        user: String,
        count: u32,
    },
    /// The user the worker runs as could not be looked up.
    #[error("failed to look up the user with uid {uid}")]
    LookUpUser {
        uid: u32,
        #[source]
        source: io::Error,
    },
    /// The build user could not be looked up by name.
    #[error("failed to look up the user {name}")]
    LookUpUserName {
        name: String,
        #[source]
        source: io::Error,
    },
    /// The command to run is not an absolute path (there is no `PATH` search in the sandbox).
    #[error("the command {0:?} is not an absolute path inside the rootfs")]
    RelativeCommand(String),
    /// A control channel or an output pipe could not be created.
    #[error("failed to create the sandbox's {what}")]
    CreatePipe {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The helper process (`kiln-worker sandbox-init`) could not be started.
    #[error("failed to start the sandbox helper {path}")]
    SpawnHelper {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Sending to or receiving from the helper failed, or it sent something unexpected.
    #[error("failed to talk to the sandbox helper ({what})")]
    Channel {
        what: String,
        #[source]
        source: io::Error,
    },
    /// `newuidmap` or `newgidmap` could not be run.
    #[error("failed to run {program}")]
    RunIdMapper {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `newuidmap` or `newgidmap` refused the map.
    #[error("{program} failed ({status}): {stderr}")]
    IdMapperFailed {
        program: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// A step inside the sandbox failed before the script ran: a mount, `pivot_root`, `execve`.
    #[error("sandbox setup failed: {step}")]
    Setup {
        step: String,
        #[source]
        source: io::Error,
    },
    /// The helper ended without reporting how the script ended.
    #[error("the sandbox helper ended without a report ({status})")]
    HelperDied { status: std::process::ExitStatus },
    /// A task run in the user namespace failed; the message is the task's.
    #[error("{name} in the build's user namespace failed: {message}")]
    Task { name: String, message: String },
    /// Waiting for the helper failed.
    #[error("failed to wait for the sandbox helper")]
    WaitHelper(#[source] io::Error),
    /// Processes of the sandbox's pid namespace were still alive after it ended.
    #[error("{} processes of the sandbox outlived it: {pids:?}", pids.len())]
    ProcessesLeft { pids: Vec<i32> },
    /// `/proc` could not be scanned for processes left behind.
    #[error("failed to scan {path} for processes left behind")]
    ScanProc {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Results of this module.
pub type Result<T> = std::result::Result<T, SandboxError>;
