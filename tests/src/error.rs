//! The ways the test support code fails: building fixtures, running the external tools that build,
//! push and judge them, and starting the services a test needs.

use std::io;
use std::path::PathBuf;

/// A failure of the fixture builders or the service helpers. Tests turn it into a panic with the
/// whole source chain; `kiln-fixtures` into an exit code.
#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    /// Reading or writing a file or directory of a fixture, a cache or a temp dir failed.
    #[error("failed to {action} {}", path.display())]
    Io {
        /// What was being done, as a verb phrase ("write blob", "create directory").
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Writing a layer's tar stream failed.
    #[error("failed to write tar entry {path}")]
    Tar {
        /// The entry's path as written into the archive (lossy UTF-8).
        path: String,
        /// The tar writer's error.
        #[source]
        source: io::Error,
    },
    /// A fixture description is not representable (for example a device node in a rootfs).
    #[error("cannot pack {}: {reason}", path.display())]
    Unsupported {
        /// The file concerned.
        path: PathBuf,
        /// Why it cannot be packed.
        reason: &'static str,
    },
    /// An external program could not be started.
    #[error("failed to run {program}")]
    Spawn {
        /// The program's name.
        program: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// An external program ran and failed.
    #[error("{command} exited with {status}: {stderr}")]
    Command {
        /// The command line, for the reader to rerun it by hand.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The last part of its standard error.
        stderr: String,
    },
    /// A service did not come up before its deadline.
    #[error("{service} did not {condition} within {waited_secs} s")]
    Timeout {
        /// The service ("registry on 127.0.0.1:41234").
        service: String,
        /// What was awaited ("answer GET /v2/").
        condition: &'static str,
        /// How long the helper waited, in seconds.
        waited_secs: u64,
    },
    /// An environment variable of the test contract is malformed or incomplete.
    #[error("environment variable {name}: {reason}")]
    Environment {
        /// The variable's name.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Serializing an image's JSON documents failed.
    #[error("failed to serialize {what}")]
    Json {
        /// Which document ("image config", "manifest").
        what: &'static str,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
}

/// Result of the test support code.
pub type Result<T> = std::result::Result<T, SupportError>;

/// Builds the closure that maps an `io::Error` on `path` to [`SupportError::Io`].
pub(crate) fn io_error(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> SupportError {
    let path = path.into();
    move |source| SupportError::Io {
        action,
        path,
        source,
    }
}
