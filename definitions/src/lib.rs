//! Singularity definition files: the parser, compatible with SingularityCE's, and the JSON form
//! of its `types.Definition`. Pure functions from `&str` to plain structs; no I/O.
//!
//! The contract is `shared/specs/deffile.md`. Four entry points:
//!
//! * [`parse`]: one stage, like SingularityCE's `ParseDefinitionFile` (what its remote-build
//!   client validates);
//! * [`parse_all`]: every stage, like `parser.All`, which splits the text at column-0
//!   `Bootstrap:` lines before parsing; this is what a build uses;
//! * [`render`]: `%arguments` templating with build arguments, SingularityCE 4 semantics,
//!   followed by the re-parse a build does;
//! * [`check`]: what parses but would fail at build time, or that Kiln refuses.
//!
//! Where SingularityCE's behaviour is not a function of its input, Kiln picks one:
//!
//! * A header value continued with `\` and followed by a blank or comment line makes
//!   SingularityCE panic (`assignment to entry in nil map`). Kiln ends the value at that line,
//!   as the upstream code intends: the key keeps the text collected so far, verbatim, and is
//!   validated like any other. [`check`] warns that SingularityCE cannot build the file.
//! * `invalid section(s) specified: a, b` lists names in Go map order, which is random. Kiln
//!   lists them in order of first appearance.
//! * A `%files` line that is a lone `"` makes SingularityCE index an empty slice and panic.
//!   Kiln rejects it with [`ParseErrorKind::FilesLineWithoutSource`].
//!
//! Kiln also rejects any input over [`MAX_DEFINITION_BYTES`] before parsing it, and files of more
//! than [`MAX_STAGES`] stages; SingularityCE reads files of any size (though each header or
//! section must fit its 64 KiB scanner buffer, a limit Kiln reproduces with the same message). Input is `&str`: a file that is not UTF-8 must be refused by the
//! caller, where SingularityCE would parse its bytes.

#![warn(missing_docs)]

mod check;
mod error;
mod parser;
mod scan;
mod template;
mod types;

pub use check::{Finding, Severity, check};
pub use error::{Location, ParseError, ParseErrorKind};
pub use template::{
    BuildArgError, BuildArgs, RenderError, Rendered, parse_build_arg, parse_build_arg_file, render,
};
pub use types::{
    BuildData, BuildScripts, Definition, FileTransport, Files, ImageData, ImageScripts, Script,
};

/// 1 MiB: the largest definition Kiln parses or produces by templating. Real definition files
/// are far smaller (the largest of the 4,533 Singularity Hub recipes is 30 KB).
pub const MAX_DEFINITION_BYTES: usize = 1024 * 1024;

/// 32: the most stages [`parse_all`], [`render`] and [`check`] accept. Every stage carries the
/// whole file as `full_raw`, so without a bound a 1 MiB file of `Bootstrap:` lines would ask for
/// tens of gigabytes; real multi-stage files have a handful of stages.
pub const MAX_STAGES: usize = 32;

/// Parses `text` as one stage, like SingularityCE's `ParseDefinitionFile`: later `Bootstrap:`
/// lines are not stage boundaries. `raw` and `full_raw` are `text`.
///
/// # Errors
/// SingularityCE's parse errors (see [`ParseErrorKind`]), with the line and column, and
/// [`ParseErrorKind::TooLarge`] for input over [`MAX_DEFINITION_BYTES`].
pub fn parse(text: &str) -> Result<Definition, ParseError> {
    parser::check_size(text)?;
    parser::parse_one(text).map(|(definition, _)| definition)
}

/// Parses every stage of `text`, like SingularityCE's `parser.All`: the text is cut before each
/// line that starts with `bootstrap:` (any case, column 0, even inside a script), each chunk is
/// parsed with [`parse`], and chunks with nothing in them (comments, blank lines) are dropped.
/// Each stage's `raw` is its chunk, `full_raw` the whole text. An empty file gives no stages.
///
/// # Errors
/// The first chunk's parse error, with line numbers of the whole text; see [`parse`].
/// [`ParseErrorKind::TooManyStages`] past [`MAX_STAGES`] stages.
pub fn parse_all(text: &str) -> Result<Vec<Definition>, ParseError> {
    parser::check_size(text)?;
    Ok(parser::parse_stages(text)?
        .into_iter()
        .map(|stage| stage.definition)
        .collect())
}
