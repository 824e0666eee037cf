//! Why a build failed, and whose fault it is: the definition and its inputs (the build fails,
//! retrying cannot help) or the worker and the services it uses (the job may succeed elsewhere).

use std::path::PathBuf;

use kiln_proto::amqp::Fault;

use crate::image::ImageError;
use crate::sandbox::{Outcome, SandboxError};

/// A failed build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The definition asks for something a remote builder cannot or will not do, or does not
    /// build (unknown agent, `%setup`, a missing `From:`); the message says why.
    #[error("{0}")]
    Refused(String),
    /// The definition does not parse or cannot be templated; the message has the line.
    #[error("{0}")]
    Definition(String),
    /// A section's script did not succeed.
    #[error("%{section} of stage {stage} failed: {outcome}")]
    Script {
        /// `post` or `test`.
        section: String,
        /// 1-based stage number.
        stage: usize,
        /// How it ended.
        outcome: Outcome,
    },
    /// A section's script could not be started inside the image: no `/bin/sh`, a broken
    /// interpreter, a rootfs the sandbox cannot mount.
    #[error("%{section} of stage {stage} could not start in the image (is there a /bin/sh?)")]
    ScriptStart {
        /// `post` or `test`.
        section: String,
        /// 1-based stage number.
        stage: usize,
        /// The sandbox's report.
        #[source]
        source: SandboxError,
    },
    /// A `%files` entry could not be copied (no match, a source outside the context).
    #[error("%files of stage {stage}: {message}")]
    Files {
        /// 1-based stage number.
        stage: usize,
        /// What went wrong with which entry.
        message: String,
    },
    /// The build context could not be read: it is the client's upload.
    #[error("the build context {path} is not a readable tar archive")]
    Context {
        /// The archive.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The base image could not be fetched or is unusable.
    #[error("{message}")]
    Bootstrap {
        /// One line naming the image and the problem.
        message: String,
        /// Whether the image or its reference is at fault rather than the service.
        is_user_fault: bool,
    },
    /// The worker's own disk failed.
    #[error("failed to {what} {path}")]
    Io {
        /// What the worker was doing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The sandbox could not be set up or supervised.
    #[error("the sandbox failed")]
    Sandbox(#[source] SandboxError),
    /// The SquashFS image could not be written.
    #[error("failed to write the SquashFS image")]
    Image(#[source] ImageError),
    /// The SquashFS image could not be written; squashing runs in the build's user namespace,
    /// so the cause arrives as text.
    #[error("failed to write the SquashFS image: {message}")]
    Squash {
        /// The cause, one line.
        message: String,
        /// Whether the build's content is at fault (a name SquashFS cannot hold).
        is_user_fault: bool,
    },
    /// The SIF could not be written.
    #[error("failed to write the SIF image {path}")]
    Sif {
        /// The output.
        path: PathBuf,
        /// The cause.
        #[source]
        source: kiln_proto::sif::SifError,
    },
    /// The stage's metadata could not be written or read back after `%post`.
    #[error("failed to write the metadata of stage {stage}: {message}")]
    Metadata {
        /// 1-based stage number.
        stage: usize,
        /// What went wrong.
        message: String,
        /// Whether what `%post` left in the rootfs is at fault rather than the worker.
        is_user_fault: bool,
    },
    /// The build was cancelled.
    #[error("the build was cancelled")]
    Cancelled,
}

impl BuildError {
    /// Whose fault the failure is.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Refused(_)
            | Self::Definition(_)
            | Self::Files { .. }
            | Self::Context { .. }
            | Self::ScriptStart { .. } => Fault::User,
            Self::Script { outcome, .. } => match outcome {
                Outcome::Exited(_) | Outcome::Signaled(_) | Outcome::TimedOut(_) => Fault::User,
                Outcome::Cancelled => Fault::Infrastructure,
            },
            Self::Image(error) if error.is_content_fault() => Fault::User,
            Self::Squash { is_user_fault, .. }
            | Self::Bootstrap { is_user_fault, .. }
            | Self::Metadata { is_user_fault, .. }
                if *is_user_fault =>
            {
                Fault::User
            }
            Self::Io { .. }
            | Self::Bootstrap { .. }
            | Self::Squash { .. }
            | Self::Metadata { .. }
            | Self::Sandbox(_)
            | Self::Image(_)
            | Self::Sif { .. }
            | Self::Cancelled => Fault::Infrastructure,
        }
    }

    /// The section whose script failed, and its exit code, for the `Failed` event.
    pub fn script_failure(&self) -> (Option<String>, Option<i32>, bool) {
        match self {
            Self::Script {
                section, outcome, ..
            } => (
                Some(section.clone()),
                match outcome {
                    Outcome::Exited(code) => Some(*code),
                    _ => None,
                },
                matches!(outcome, Outcome::TimedOut(_)),
            ),
            _ => (None, None, false),
        }
    }

    /// The error and its causes on one line, `a: b: c`, for people and for the `Failed` event.
    pub fn one_line(&self) -> String {
        let mut line = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            line.push_str(": ");
            line.push_str(&cause.to_string());
            source = cause.source();
        }
        line.replace('\n', " ")
    }
}

/// Shorthand for an I/O failure of the worker's disk.
pub(crate) fn io(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_owned();
    move |source| BuildError::Io { what, path, source }
}
