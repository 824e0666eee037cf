//! `%arguments` templating (deffile spec §5), with SingularityCE 4 semantics throughout
//! (`internal/pkg/build/build.go` `MakeAllDefs`, `internal/pkg/build/args`):
//!
//! 1. the *untemplated* text is split into stages and parsed, so parse errors come first;
//! 2. per stage, `%arguments` gives defaults (`KEY=value` lines; `KEY=` is skipped with a
//!    warning); build arguments win over defaults, and defaults never cross stages;
//! 3. every `{{ name }}` in the stage's whole text (header, comments and `%arguments` included)
//!    is replaced by its value, verbatim and without nesting; an unknown name is an error;
//! 4. each templated stage is parsed again on its own, and `full_raw` becomes the templated
//!    stages concatenated (text before the first stage that held nothing is not kept).
//!
//! Kiln keeps SingularityCE's choices rather than Apptainer's (which skips commented lines,
//! accepts `KEY=` and resolves one level of nesting): a file must template to the same text it
//! does with the SingularityCE client the user has. The one addition is a bound: a templated
//! definition larger than [`MAX_DEFINITION_BYTES`] is an error, since values may repeat.

use std::collections::{BTreeMap, HashSet};

use crate::MAX_DEFINITION_BYTES;
use crate::error::{Location, ParseError};
use crate::parser;
use crate::scan;
use crate::types::Definition;

/// Build-argument values by name (`--build-arg KEY=VAL`, `--build-arg-file`).
pub type BuildArgs = BTreeMap<String, String>;

/// A `KEY=VAL` string that is not a usable build argument. Messages are SingularityCE's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildArgError {
    /// No `=`.
    #[error("{} is not a key=value pair", go_quote(.0))]
    NotKeyValue(String),
    /// Nothing but spaces before `=`.
    #[error("missing key portion in {}", go_quote(.0))]
    MissingKey(String),
    /// Nothing but spaces after `=`.
    #[error("missing value portion in {}", go_quote(.0))]
    MissingValue(String),
}

/// Why a definition could not be templated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The untemplated text does not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A placeholder with neither a build argument nor a default in its stage.
    #[error(
        "build var {name} is not defined through either --build-arg (--build-arg-file) or 'arguments' section"
    )]
    UndefinedVariable {
        /// The variable name.
        name: String,
        /// Where the placeholder is in the untemplated text.
        location: Location,
    },
    /// A templated stage no longer parses (a value brought in a section line, for example).
    /// Its location is in the templated stage's text.
    #[error("stage {stage} does not parse after templating")]
    Reparse {
        /// 1-based stage number.
        stage: usize,
        /// The parse error.
        #[source]
        error: ParseError,
    },
    /// The templated text would exceed [`MAX_DEFINITION_BYTES`].
    #[error("templated definition is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

impl RenderError {
    /// The error for people, with the place in the file (see [`ParseError::report`]).
    pub fn report(&self, name: &str) -> String {
        match self {
            RenderError::Parse(error) => error.report(name),
            RenderError::UndefinedVariable { location, .. } => {
                location.report(name, &self.to_string())
            }
            RenderError::Reparse { stage, error } => format!(
                "{name}: {self}\n{}",
                error.report(&format!("{name} (stage {stage}, templated)"))
            ),
            RenderError::TooLarge { .. } => format!("{name}: {self}"),
        }
    }
}

/// The result of [`render`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The templated stages concatenated: what the build stores as the image's definition.
    pub text: String,
    /// The templated stages, parsed; each `full_raw` is [`text`](Self::text).
    pub stages: Vec<Definition>,
    /// SingularityCE's warnings: skipped `%arguments` lines and unused build arguments.
    pub warnings: Vec<String>,
    /// Build arguments that no placeholder used, sorted.
    pub unused_build_args: Vec<String>,
}

/// Templates `text` with `build_args` and the stages' `%arguments` defaults, then parses the
/// result, as `singularity build --build-arg …` does before building.
///
/// # Errors
/// [`RenderError::Parse`] when the untemplated text does not parse, then the first undefined
/// placeholder, a stage that no longer parses, or an oversized result.
pub fn render(text: &str, build_args: &BuildArgs) -> Result<Rendered, RenderError> {
    parser::check_size(text)?;
    let stages = parser::parse_stages(text)?;
    let mut warnings = Vec::new();
    let mut consumed: HashSet<String> = HashSet::new();
    let mut full = String::new();
    let mut rendered = Vec::with_capacity(stages.len());
    for (index, stage) in stages.iter().enumerate() {
        let raw = &stage.definition.raw;
        let arguments = &stage.definition.build_data.build_scripts.arguments.script;
        let defaults = read_defaults(arguments, &mut warnings);
        let mut out = String::with_capacity(raw.len());
        let mut last = 0;
        for placeholder in scan::placeholders(raw) {
            out.push_str(&raw[last..placeholder.start]);
            let Some(value) = build_args
                .get(placeholder.name)
                .or_else(|| defaults.get(placeholder.name))
            else {
                return Err(RenderError::UndefinedVariable {
                    name: placeholder.name.to_owned(),
                    location: location_of(raw, placeholder.start, stage.line_offset),
                });
            };
            out.push_str(value);
            consumed.insert(placeholder.name.to_owned());
            last = placeholder.end;
            if full.len() + out.len() > MAX_DEFINITION_BYTES {
                return Err(RenderError::TooLarge {
                    limit: MAX_DEFINITION_BYTES,
                });
            }
        }
        out.push_str(&raw[last..]);
        if full.len() + out.len() > MAX_DEFINITION_BYTES {
            return Err(RenderError::TooLarge {
                limit: MAX_DEFINITION_BYTES,
            });
        }
        let (definition, _) = parser::parse_one(&out).map_err(|error| RenderError::Reparse {
            stage: index + 1,
            error,
        })?;
        full.push_str(&out);
        rendered.push(definition);
    }
    for definition in &mut rendered {
        definition.full_raw.clone_from(&full);
    }
    let unused_build_args: Vec<String> = build_args
        .keys()
        .filter(|k| !consumed.contains(*k))
        .cloned()
        .collect();
    if !unused_build_args.is_empty() {
        warnings.push(format!(
            "Unused build variables: {}",
            unused_build_args.join(", ")
        ));
    }
    Ok(Rendered {
        text: full,
        stages: rendered,
        warnings,
        unused_build_args,
    })
}

/// The line and column of byte `at` in a stage text whose first line is `line_offset + 1`.
pub(crate) fn location_of(text: &str, at: usize, line_offset: usize) -> Location {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = &text[line_start..line_end];
    Location {
        line: line_offset + text[..at].matches('\n').count() + 1,
        column: text[line_start..at].chars().count() + 1,
        text: line.strip_suffix('\r').unwrap_or(line).to_owned(),
    }
}

/// `ReadDefaults`: the `%arguments` body of one stage. Blank and `#` lines are ignored; bad lines
/// are skipped with SingularityCE's warning.
pub(crate) fn read_defaults(script: &str, warnings: &mut Vec<String>) -> BuildArgs {
    let lines = go_lines(script)
        .map(str::trim)
        .filter(|text| !text.is_empty() && !text.starts_with('#'));
    collect_args(lines, "'arguments' section", warnings)
}

/// `KEY=VAL` lines into a map, later lines winning; bad lines become SingularityCE's warning
/// `Skipping "<line>" in <place>: <why>`.
fn collect_args<'a>(
    lines: impl Iterator<Item = &'a str>,
    place: &str,
    warnings: &mut Vec<String>,
) -> BuildArgs {
    let mut args = BuildArgs::new();
    for line in lines {
        match parse_build_arg(line) {
            Ok((key, value)) => {
                args.insert(key, value);
            }
            Err(err) => warnings.push(format!("Skipping {} in {place}: {err}", go_quote(line))),
        }
    }
    args
}

/// Parses one `--build-arg` value: split at the first `=`, key and value trimmed, neither empty.
///
/// # Errors
/// [`BuildArgError`] with SingularityCE's message; its CLI stops on it.
pub fn parse_build_arg(text: &str) -> Result<(String, String), BuildArgError> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(BuildArgError::NotKeyValue(text.to_owned()));
    };
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty() {
        return Err(BuildArgError::MissingKey(text.to_owned()));
    }
    if value.is_empty() {
        return Err(BuildArgError::MissingValue(text.to_owned()));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Parses the text of a `--build-arg-file`: one `KEY=VAL` per line, later lines win. Lines that
/// are not build arguments (blank lines and comments included, as in SingularityCE) are skipped
/// and reported in the returned warnings.
pub fn parse_build_arg_file(text: &str) -> (BuildArgs, Vec<String>) {
    let mut warnings = Vec::new();
    let args = collect_args(go_lines(text), "build arg file", &mut warnings);
    (args, warnings)
}

/// Lines as `bufio.ScanLines` gives them: no final empty line, one trailing `\r` dropped.
fn go_lines(text: &str) -> impl Iterator<Item = &str> {
    text.strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .filter(move |_| !text.is_empty())
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// Go's `%q` (`strconv.Quote`), for SingularityCE's warning texts.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            ' ' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || c.is_whitespace() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BuildArgs {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn build_args_win_over_defaults_and_values_are_verbatim() {
        let text = "Bootstrap: docker\nFrom: {{ IMAGE }}\n%post\n  echo {{MSG}}\n%arguments\n  IMAGE=alpine\n  MSG=hi\n";
        let out = render(text, &args(&[("MSG", "'quoted text'")])).unwrap();
        assert_eq!(
            out.text,
            "Bootstrap: docker\nFrom: alpine\n%post\n  echo 'quoted text'\n%arguments\n  IMAGE=alpine\n  MSG=hi\n"
        );
        assert_eq!(out.stages[0].header_value("from"), Some("alpine"));
        assert_eq!(
            out.stages[0].build_data.build_scripts.post.script,
            "  echo 'quoted text'\n"
        );
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn undefined_variable_names_the_place() {
        let text = "Bootstrap: docker\nFrom: alpine\n%post\n  echo {{ A }} {{ B }}\n";
        let err = render(text, &args(&[("A", "1")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "build var B is not defined through either --build-arg (--build-arg-file) or 'arguments' section"
        );
        let RenderError::UndefinedVariable { location, .. } = err else {
            panic!("wrong error {err:?}");
        };
        assert_eq!((location.line, location.column), (4, 16));
    }

    #[test]
    fn empty_default_is_skipped_with_singularityce_warning() {
        let text = "Bootstrap: docker\nFrom: alpine\n%arguments\n  MSG=\n  X=1\n";
        let out = render(text, &args(&[("UNUSED", "x"), ("AAA", "y")])).unwrap();
        assert_eq!(
            out.warnings,
            [
                "Skipping \"MSG=\" in 'arguments' section: missing value portion in \"MSG=\"",
                "Unused build variables: AAA, UNUSED"
            ]
        );
        assert_eq!(out.unused_build_args, ["AAA", "UNUSED"]);
    }

    #[test]
    fn a_value_that_makes_a_bad_section_fails_the_reparse() {
        let text = "Bootstrap: docker\nFrom: alpine\n%post\n{{ X }}\n";
        let err = render(text, &args(&[("X", "%nope")])).unwrap_err();
        assert!(
            matches!(err, RenderError::Reparse { stage: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn repeated_large_values_hit_the_size_limit() {
        let text = format!("Bootstrap: docker\n%post\n{}\n", "{{X}}".repeat(2000));
        let big = "x".repeat(1000);
        let err = render(&text, &args(&[("X", &big)])).unwrap_err();
        assert_eq!(
            err,
            RenderError::TooLarge {
                limit: MAX_DEFINITION_BYTES
            }
        );
    }

    #[test]
    fn build_arg_strings_follow_get_key_val() {
        assert_eq!(
            parse_build_arg(" A = b=c ").unwrap(),
            ("A".into(), "b=c".into())
        );
        assert_eq!(
            parse_build_arg("A").unwrap_err().to_string(),
            "\"A\" is not a key=value pair"
        );
        assert_eq!(
            parse_build_arg("=1").unwrap_err().to_string(),
            "missing key portion in \"=1\""
        );
        assert_eq!(
            parse_build_arg("A= ").unwrap_err().to_string(),
            "missing value portion in \"A= \""
        );
    }

    #[test]
    fn build_arg_file_skips_bad_lines_and_later_lines_win() {
        let (args, warnings) = parse_build_arg_file("A=1\r\n# note\nA=2\nB = x y\n");
        assert_eq!(args, self::args(&[("A", "2"), ("B", "x y")]));
        assert_eq!(
            warnings,
            ["Skipping \"# note\" in build arg file: \"# note\" is not a key=value pair"]
        );
        assert_eq!(parse_build_arg_file(""), (BuildArgs::new(), vec![]));
    }

    #[test]
    fn go_quote_escapes_like_strconv() {
        assert_eq!(
            go_quote("a\"b\\c\td\u{1}é\u{a0}"),
            "\"a\\\"b\\\\c\\td\\x01é\\u00a0\""
        );
    }
}
