//! The parser proper: SingularityCE's `ParseDefinitionFile` (one stage) and `All` (the split at
//! column-0 `Bootstrap:` lines, then one parse per chunk), over the tokens of [`crate::scan`].
//! Deffile spec §2 (header), §3 (sections), §4 (stages).
//!
//! Besides the [`Definition`], a parse keeps [`Notes`]: where each header key and section was,
//! and the inputs on which SingularityCE crashes. `check` reports from them.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::{Location, ParseError, ParseErrorKind};
use crate::scan::{self, Line};
use crate::types::{Definition, FileTransport, Files, Script};
use crate::{MAX_DEFINITION_BYTES, MAX_STAGES};

/// The standard sections (`validSections`); any other name is an error unless it is an app
/// section.
const STANDARD_SECTIONS: [&str; 11] = [
    "help",
    "setup",
    "files",
    "labels",
    "environment",
    "pre",
    "post",
    "runscript",
    "test",
    "startscript",
    "arguments",
];

/// SCIF app sections (`appSections`), matched case-sensitively in the final check.
const APP_SECTIONS: [&str; 8] = [
    "appinstall",
    "applabels",
    "appfiles",
    "appenv",
    "apptest",
    "apphelp",
    "apprun",
    "appstart",
];

/// Header keys SingularityCE accepts (`validHeaders`); `&n` stands for trailing digits.
const VALID_HEADERS: [&str; 20] = [
    "bootstrap",
    "from",
    "includecmd",
    "mirrorurl",
    "updateurl",
    "osversion",
    "include",
    "library",
    "registry",
    "namespace",
    "stage",
    "product",
    "user",
    "regcode",
    "productpgp",
    "registerurl",
    "modules",
    "otherurl&n",
    "fingerprints",
    "setopt",
];

/// Where things were in one parsed stage, for `check`. Line numbers are 1-based in the text
/// given to the parse (add [`Stage::line_offset`] for the whole file).
#[derive(Debug, Clone, Default)]
pub(crate) struct Notes {
    /// The line that set each header key (the last one, since the last duplicate wins).
    pub header_lines: HashMap<String, Line0>,
    /// The first line of each section, keyed like the parsed section (`post`, `apprun foo`).
    pub section_lines: HashMap<String, Line0>,
    /// The first line of each `%files` entry, by index in `build_data.files`.
    pub files_lines: Vec<Line0>,
    /// Blank or comment lines that ended a `\` continuation: SingularityCE panics there.
    pub continuation_crashes: Vec<Line0>,
}

/// A line number and column (1-based) with the line's text, kept for messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Line0 {
    pub line: usize,
    pub column: usize,
    pub text: String,
}

impl Line0 {
    fn of(line: &Line<'_>) -> Self {
        Line0 {
            line: line.number,
            column: line.first_column(),
            text: line.text.to_owned(),
        }
    }

    fn location(&self) -> Location {
        Location {
            line: self.line,
            column: self.column,
            text: self.text.clone(),
        }
    }
}

/// One stage of [`parse_stages`].
#[derive(Debug, Clone)]
pub(crate) struct Stage {
    pub definition: Definition,
    /// Lines of the file before this stage's first line.
    pub line_offset: usize,
    pub notes: Notes,
}

/// Rejects input over the size limit before anything is allocated for it.
pub(crate) fn check_size(text: &str) -> Result<(), ParseError> {
    if text.len() > MAX_DEFINITION_BYTES {
        return Err(ParseError::new(
            ParseErrorKind::TooLarge {
                size: text.len(),
                limit: MAX_DEFINITION_BYTES,
            },
            Location::whole_file(),
        ));
    }
    Ok(())
}

/// `ParseDefinitionFile` on `text`: `raw` and `full_raw` are both `text`.
pub(crate) fn parse_one(text: &str) -> Result<(Definition, Notes), ParseError> {
    let lines = scan::split_lines(text);
    let tokens = scan::tokens(&lines, text.len());
    let mut builder = Builder::default();
    let mut tokens = tokens.iter();
    let Some(first) = tokens.next() else {
        return Err(ParseError::new(
            ParseErrorKind::Empty,
            Location::whole_file(),
        ));
    };
    if first.is_too_long {
        return Err(too_long(&lines[first.first]));
    }
    let first_lines = &lines[first.first..first.end];
    if first.is_section {
        // The first token is trimmed as a whole, so a header-less file loses the trailing
        // whitespace of its first section, and a lone section line has no body at all.
        let joined = scan::join_lines(first_lines);
        let trimmed = joined.trim();
        let Some((name, body)) = trimmed.split_once('\n') else {
            return Err(ParseError::new(
                ParseErrorKind::SectionWithoutBody {
                    line: trimmed.to_owned(),
                },
                Line0::of(&first_lines[0]).location(),
            ));
        };
        builder.section(name, body, &first_lines[0])?;
    } else {
        builder.header(first_lines)?;
    }
    for token in tokens {
        if token.is_too_long {
            return Err(too_long(&lines[token.first]));
        }
        let body = scan::join_lines(&lines[token.first + 1..token.end]);
        builder.section(lines[token.first].text, &body, &lines[token.first])?;
    }
    builder.finish(text)
}

fn too_long(line: &Line<'_>) -> ParseError {
    ParseError::new(ParseErrorKind::TokenTooLong, Line0::of(line).location())
}

/// `All`: split at every column-0 `bootstrap:` (any case) before parsing, parse each chunk,
/// drop the chunks that are empty definitions. Errors carry lines of the whole file.
pub(crate) fn parse_stages(text: &str) -> Result<Vec<Stage>, ParseError> {
    // Text before the first match is a chunk of its own (empty when the file starts with one).
    let mut starts = vec![0];
    starts.extend(
        text.match_indices('\n')
            .map(|(i, _)| i + 1)
            .filter(|&i| scan::starts_with_bootstrap(&text[i..])),
    );
    let mut stages = Vec::with_capacity(starts.len());
    let mut line_offset = 0;
    let mut previous = 0;
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(text.len());
        line_offset += text[previous..start].matches('\n').count();
        previous = start;
        let chunk = &text[start..end];
        if chunk.is_empty() {
            continue;
        }
        match parse_one(chunk) {
            Ok(_) if stages.len() == MAX_STAGES => {
                let first = chunk.split('\n').next().unwrap_or("");
                return Err(ParseError::new(
                    ParseErrorKind::TooManyStages { limit: MAX_STAGES },
                    Location {
                        line: line_offset + 1,
                        column: 1,
                        text: first.strip_suffix('\r').unwrap_or(first).to_owned(),
                    },
                ));
            }
            Ok((mut definition, notes)) => {
                definition.full_raw = text.to_owned();
                stages.push(Stage {
                    definition,
                    line_offset,
                    notes,
                });
            }
            Err(err) if err.kind == ParseErrorKind::Empty => {}
            Err(err) => return Err(err.shifted(line_offset)),
        }
    }
    Ok(stages)
}

/// A section as it accumulates over repeated occurrences.
struct SectionEntry {
    key: String,
    script: Script,
    first: Line0,
}

/// The state of `doSections` while tokens are fed in.
#[derive(Default)]
struct Builder {
    header: Option<BTreeMap<String, String>>,
    sections: Vec<SectionEntry>,
    section_index: HashMap<String, usize>,
    files: Vec<Files>,
    files_index: HashMap<String, usize>,
    app_order: Vec<String>,
    apps_seen: HashSet<String>,
    notes: Notes,
}

impl Builder {
    /// `doHeader` over the header token's lines.
    fn header(&mut self, lines: &[Line<'_>]) -> Result<(), ParseError> {
        // The token is trimmed first: blank lines at either end do not exist for what follows.
        let Some(first) = lines.iter().position(|l| !l.text.trim().is_empty()) else {
            return Ok(());
        };
        let last = lines
            .iter()
            .rposition(|l| !l.text.trim().is_empty())
            .unwrap_or(first);
        let mut header = BTreeMap::new();
        let mut key_cont = String::new();
        let mut val_cont = String::new();
        let mut key_cont_line = Line0::default();
        for line in &lines[first..=last] {
            let trimmed = line.text.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                if !key_cont.is_empty() {
                    // SingularityCE writes into a nil map here and panics (spec §2, quirk 2).
                    // Kiln ends the continued value at this line instead, which is what that
                    // code means to do, and checks its key like any other.
                    self.notes.continuation_crashes.push(Line0::of(line));
                    validate_header_key(&key_cont, &key_cont_line)?;
                    self.notes
                        .header_lines
                        .insert(key_cont.clone(), key_cont_line.clone());
                    header.insert(std::mem::take(&mut key_cont), std::mem::take(&mut val_cont));
                }
                continue;
            }
            let cut = trimmed.split('#').next().unwrap_or("");
            let (key, val) = if val_cont.is_empty() {
                let Some((key, val)) = cut.split_once(':') else {
                    return Err(ParseError::new(
                        ParseErrorKind::HeaderLineWithoutValue {
                            line: cut.to_owned(),
                        },
                        Line0::of(line).location(),
                    ));
                };
                key_cont_line = Line0::of(line);
                (scan::go_lower(key.trim()), val.trim().to_owned())
            } else {
                // A continued value; `key_cont` is only reset on this path, so a key whose value
                // was a lone `\` lingers, as upstream.
                let val = std::mem::take(&mut val_cont) + cut.trim();
                (std::mem::take(&mut key_cont), val)
            };
            if let Some(stripped) = val.strip_suffix('\\') {
                val_cont = match stripped.strip_suffix("\\n") {
                    Some(before) => format!("{before}\n"),
                    None => stripped.to_owned(),
                };
                key_cont = key;
                continue;
            }
            validate_header_key(&key, &key_cont_line)?;
            self.notes
                .header_lines
                .insert(key.clone(), key_cont_line.clone());
            header.insert(key, val);
        }
        // A value still being continued at the end of the header is dropped (spec §2, quirk 1).
        if !header.is_empty() {
            self.header = Some(header);
        }
        Ok(())
    }

    /// `parseTokenSection`: `name_line` is the section line, `body` the text after it.
    fn section(&mut self, name_line: &str, body: &str, line: &Line<'_>) -> Result<(), ParseError> {
        let here = Line0::of(line);
        let stripped = name_line.trim_start_matches('%');
        let mut key = scan::go_lower(stripped.split(' ').next().unwrap_or(""));
        let args = stripped.split_once(' ').map(|(_, args)| args);

        if key == "files" {
            return self.files_section(args.unwrap_or(""), body, &here);
        }

        if APP_SECTIONS.contains(&key.as_str()) {
            let mut parts = stripped.splitn(3, ' ');
            let section = parts.next().unwrap_or("");
            let Some(app) = parts.next() else {
                return Err(ParseError::new(
                    ParseErrorKind::AppSectionWithoutName {
                        section: section.to_owned(),
                    },
                    here.location(),
                ));
            };
            // The key keeps the spelling of the file, so `%AppRun x` is later rejected.
            key = format!("{section} {app}");
            if self.apps_seen.insert(app.to_owned()) {
                self.app_order.push(app.to_owned());
            }
            self.entry(key, &here).script.script.push_str(body);
        } else {
            let entry = self.entry(key, &here);
            // Any text after the first space replaces earlier arguments, even an empty string.
            if let Some(args) = args {
                args.clone_into(&mut entry.script.args);
            }
            entry.script.script.push_str(body);
        }
        Ok(())
    }

    fn entry(&mut self, key: String, here: &Line0) -> &mut SectionEntry {
        let index = *self.section_index.entry(key.clone()).or_insert_with(|| {
            self.sections.push(SectionEntry {
                key,
                script: Script::default(),
                first: here.clone(),
            });
            self.sections.len() - 1
        });
        &mut self.sections[index]
    }

    /// A `%files` body: one `source [destination]` per line; sections with the same argument
    /// string are merged.
    fn files_section(&mut self, args: &str, body: &str, here: &Line0) -> Result<(), ParseError> {
        let mut files = Vec::new();
        for (i, raw_line) in body.split('\n').enumerate() {
            let line = raw_line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (source, destination) = match scan::files_line_tokens(line) {
                (Some(source), destination) => (source, destination.unwrap_or("")),
                (None, _) => {
                    // Only a lone `"` matches nothing; SingularityCE indexes the empty match
                    // list and crashes.
                    let column = raw_line.chars().take_while(|c| c.is_whitespace()).count() + 1;
                    return Err(ParseError::new(
                        ParseErrorKind::FilesLineWithoutSource {
                            line: line.to_owned(),
                        },
                        Location {
                            line: here.line + 1 + i,
                            column,
                            text: raw_line.to_owned(),
                        },
                    ));
                }
            };
            files.push(FileTransport {
                source: source.trim().trim_matches('"').to_owned(),
                destination: destination.trim().trim_matches('"').to_owned(),
            });
        }
        match self.files_index.get(args) {
            Some(&index) => self.files[index].files.extend(files),
            None => {
                self.files_index.insert(args.to_owned(), self.files.len());
                self.files.push(Files {
                    args: args.to_owned(),
                    files,
                });
                self.notes.files_lines.push(here.clone());
            }
        }
        Ok(())
    }

    /// `populateDefinition`: standard sections into their fields, the rest into `customData`,
    /// then the invalid-section and empty-definition checks.
    fn finish(mut self, text: &str) -> Result<(Definition, Notes), ParseError> {
        let mut standard: HashMap<&str, Script> = HashMap::new();
        let mut custom: Vec<SectionEntry> = Vec::new();
        for entry in std::mem::take(&mut self.sections) {
            self.notes
                .section_lines
                .insert(entry.key.clone(), entry.first.clone());
            match STANDARD_SECTIONS.iter().find(|s| **s == entry.key) {
                Some(name) => {
                    standard.insert(name, entry.script);
                }
                None => custom.push(entry),
            }
        }
        let mut take = |name: &str| standard.remove(name).unwrap_or_default();

        let mut def = Definition {
            header: self.header,
            raw: text.to_owned(),
            full_raw: text.to_owned(),
            ..Definition::default()
        };
        let scripts = &mut def.image_data.image_scripts;
        scripts.help = take("help");
        scripts.environment = take("environment");
        scripts.run_script = take("runscript");
        scripts.test = take("test");
        scripts.start_script = take("startscript");
        def.image_data.labels = labels(&take("labels").script);
        def.build_data.files = self.files;
        let build = &mut def.build_data.build_scripts;
        build.arguments = take("arguments");
        build.pre = take("pre");
        build.setup = take("setup");
        build.post = take("post");
        build.test = def.image_data.image_scripts.test.clone();

        if !custom.is_empty() {
            let invalid: Vec<&SectionEntry> = custom
                .iter()
                .filter(|e| !APP_SECTIONS.contains(&e.key.split(' ').next().unwrap_or("")))
                .collect();
            if let Some(first) = invalid.first() {
                return Err(ParseError::new(
                    ParseErrorKind::InvalidSections {
                        names: invalid.iter().map(|e| e.key.clone()).collect(),
                    },
                    first.first.location(),
                ));
            }
            def.custom_data = Some(
                custom
                    .into_iter()
                    .map(|e| (e.key, e.script.script))
                    .collect(),
            );
        }
        def.app_order = self.app_order;

        if is_empty(&def) {
            return Err(ParseError::new(
                ParseErrorKind::Empty,
                Location::whole_file(),
            ));
        }
        Ok((def, self.notes))
    }
}

/// Accepts a key SingularityCE accepts: listed, or listed as `<stem>&n` once its trailing ASCII
/// digits are replaced.
fn validate_header_key(key: &str, line: &Line0) -> Result<(), ParseError> {
    if VALID_HEADERS.contains(&key) {
        return Ok(());
    }
    let stem = key.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() < key.len() && VALID_HEADERS.contains(&format!("{stem}&n").as_str()) {
        return Ok(());
    }
    Err(ParseError::new(
        ParseErrorKind::InvalidHeaderKey {
            key: key.to_owned(),
        },
        line.location(),
    ))
}

/// `GetLabels`: `KEY VALUE` per line, split at the first space; later keys win.
pub(crate) fn labels(script: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for line in script.trim().split('\n') {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, val) = line.split_once(' ').unwrap_or((line, ""));
        labels.insert(key.trim().to_owned(), val.trim().to_owned());
    }
    labels
}

/// `isEmpty`: nothing parsed beyond the raw text.
fn is_empty(def: &Definition) -> bool {
    let scripts = &def.image_data.image_scripts;
    let build = &def.build_data.build_scripts;
    let blank = |s: &Script| s.args.is_empty() && s.script.is_empty();
    def.header.is_none()
        && def.custom_data.is_none()
        && def.image_data.labels.is_empty()
        && def.build_data.files.is_empty()
        && [
            &scripts.help,
            &scripts.environment,
            &scripts.run_script,
            &scripts.test,
            &scripts.start_script,
            &build.pre,
            &build.setup,
            &build.post,
            &build.arguments,
        ]
        .into_iter()
        .all(blank)
}
