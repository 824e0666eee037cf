//! Parse errors. The `Display` text of every error is SingularityCE's message for the same input
//! (deffile spec §6), so it can be shown where a user expects SingularityCE's words; the line,
//! column and offending line travel beside it as data, and [`ParseError::report`] formats them
//! for people.

use std::fmt::Write as _;

/// Where an error was found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    /// 1-based line number in the text that was parsed (the whole file for `parse_all`).
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// The offending line without its line ending (`""` when the error is about the whole file).
    pub text: String,
}

impl Location {
    /// `message` for people: `<name>:<line>:<column>: <message>`, then the line with a caret
    /// under the column.
    pub fn report(&self, name: &str, message: &str) -> String {
        let Location { line, column, text } = self;
        let mut out = format!("{name}:{line}:{column}: {message}");
        if !text.is_empty() {
            let gutter = line.to_string().len();
            // Control characters (tabs) would move the caret; show them as spaces.
            let shown: String = text
                .chars()
                .take(200)
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let _ = write!(
                out,
                "\n{line} | {shown}\n{:gutter$} | {:>column$}",
                "",
                "^",
                column = *column
            );
        }
        out
    }

    /// The location of an error about the whole input.
    pub(crate) fn whole_file() -> Self {
        Location {
            line: 1,
            column: 1,
            text: String::new(),
        }
    }
}

/// Why a definition was rejected. The messages are SingularityCE's (deffile spec §6) except for
/// the cases SingularityCE does not have: [`TooLarge`](Self::TooLarge),
/// [`TooManyStages`](Self::TooManyStages),
/// [`FilesLineWithoutSource`](Self::FilesLineWithoutSource) (SingularityCE crashes with an index
/// out of range) and the multi-name order of [`InvalidSections`](Self::InvalidSections)
/// (SingularityCE's is random; ours is the order of first appearance).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// Section names that are neither standard nor `%app*` sections.
    #[error("invalid section(s) specified: {}", .names.join(", "))]
    InvalidSections {
        /// The lower-cased names (app sections keep their spelling), in order of first
        /// appearance; a section line such as `% post` gives the empty name.
        names: Vec<String>,
    },
    /// `%appinstall` and friends without an app name.
    #[error("app section {section}: could not be split into section name and app name")]
    AppSectionWithoutName {
        /// The section word as written, without `%`.
        section: String,
    },
    /// A file whose first line is a section line and which has nothing else but whitespace.
    #[error("section {line}: could not be split into section name and body")]
    SectionWithoutBody {
        /// The trimmed section line.
        line: String,
    },
    /// A header line without `:`.
    #[error("failed to parse deffile header: header key {line} had no val")]
    HeaderLineWithoutValue {
        /// The trimmed line, cut at its first `#`.
        line: String,
    },
    /// A header key that is not one of SingularityCE's.
    #[error("failed to parse deffile header: invalid header keyword found: {key}")]
    InvalidHeaderKey {
        /// The lower-cased key.
        key: String,
    },
    /// Nothing at all was parsed: no header key, no section content.
    #[error("empty definition file")]
    Empty,
    /// The header or one section is longer than SingularityCE's 64 KiB scanner buffer.
    #[error("bufio.Scanner: token too long")]
    TokenTooLong,
    /// A `%files` line that is a lone `"`: SingularityCE crashes on it; Kiln rejects it.
    #[error("files: line {line:?} names no source")]
    FilesLineWithoutSource {
        /// The trimmed line.
        line: String,
    },
    /// More stages than [`MAX_STAGES`](crate::MAX_STAGES).
    #[error("definition file has too many stages: more than {limit}")]
    TooManyStages {
        /// The limit.
        limit: usize,
    },
    /// The input is larger than [`MAX_DEFINITION_BYTES`](crate::MAX_DEFINITION_BYTES).
    #[error("definition file is too large: {size} bytes, the limit is {limit} bytes")]
    TooLarge {
        /// Size of the input in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

/// A definition that SingularityCE would reject (or crash on), with the place it failed.
///
/// `to_string()` gives SingularityCE's message alone; [`report`](Self::report) adds the place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    /// What went wrong.
    pub kind: ParseErrorKind,
    /// Where it went wrong.
    pub location: Location,
}

impl ParseError {
    pub(crate) fn new(kind: ParseErrorKind, location: Location) -> Self {
        ParseError { kind, location }
    }

    /// The error for people: `<name>:<line>:<column>: <message>`, then the offending line with a
    /// caret under the column.
    pub fn report(&self, name: &str) -> String {
        self.location.report(name, &self.kind.to_string())
    }

    /// Moves the location down by `lines` lines (a stage's first line in the whole file).
    pub(crate) fn shifted(mut self, lines: usize) -> Self {
        self.location.line += lines;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_upstream_message_and_report_adds_the_place() {
        let err = ParseError::new(
            ParseErrorKind::InvalidSections {
                names: vec!["label".into(), "run".into()],
            },
            Location {
                line: 12,
                column: 3,
                text: "  %label".into(),
            },
        );
        assert_eq!(err.to_string(), "invalid section(s) specified: label, run");
        assert_eq!(
            err.report("x.def"),
            "x.def:12:3: invalid section(s) specified: label, run\n12 |   %label\n   |   ^"
        );
    }

    #[test]
    fn empty_name_keeps_the_trailing_space() {
        let kind = ParseErrorKind::InvalidSections {
            names: vec![String::new()],
        };
        assert_eq!(kind.to_string(), "invalid section(s) specified: ");
    }
}
