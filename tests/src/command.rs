//! Runs the external programs the fixtures rely on (skopeo, umoci, htpasswd, rabbitmqctl) and turns
//! a failure into a [`SupportError`] that shows the command line and its standard error.

use std::process::{Command, Output};

use crate::error::{Result, SupportError};

/// Bytes of standard error kept in an error message: enough for the tools' last lines.
const STDERR_TAIL_BYTES: usize = 2048;

/// Runs `command` to completion, capturing its output.
///
/// Returns the output when the command exits with status 0; otherwise
/// [`SupportError::Command`] with the tail of its standard error, or [`SupportError::Spawn`] when
/// it cannot be started.
pub fn run(command: &mut Command) -> Result<Output> {
    let output = command.output().map_err(|source| SupportError::Spawn {
        program: command.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(SupportError::Command {
            command: describe(command),
            status: output.status,
            stderr: tail(&output.stderr),
        })
    }
}

/// Like [`run`], returning standard output as (lossy) UTF-8 text.
pub fn run_stdout(command: &mut Command) -> Result<String> {
    run(command).map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The command line as a shell user would type it (arguments are not quoted).
pub fn describe(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

fn tail(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL_BYTES);
    String::from_utf8_lossy(&stderr[start..]).trim().to_owned()
}
