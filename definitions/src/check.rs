//! What parses but would not build: SingularityCE's build-time checks that sit outside its
//! parser (deffile spec §4, §6 "build pipeline", §8.2), and what Kiln refuses by policy (spec
//! §10.2: host scripts, agents that need the user's machine or host tools). The scheduler runs
//! this at submit time so the user hears about it before the build is queued.

use std::collections::HashSet;
use std::fmt;

use crate::error::{Location, ParseError};
use crate::parser::{self, Line0, Stage};
use crate::scan;
use crate::template;

/// Bootstrap agents a Kiln worker implements.
const SUPPORTED_AGENTS: [&str; 4] = ["docker", "library", "oras", "scratch"];

/// Agents SingularityCE knows (`NewConveyorPacker`) that Kiln does not run: they read files or a
/// daemon on the user's machine, or need root and host package managers.
const UNSUPPORTED_AGENTS: [&str; 12] = [
    "shub",
    "localimage",
    "docker-archive",
    "docker-daemon",
    "oci",
    "oci-archive",
    "busybox",
    "debootstrap",
    "arch",
    "yum",
    "dnf",
    "zypper",
];

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The build would fail, or Kiln refuses it.
    Error,
    /// The build may run but probably not as the author meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem [`check`] found (serialisable, for an API answer).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// 1-based stage number (1 when the file has no stage).
    pub stage: usize,
    /// Where, in the whole file.
    pub location: Location,
    /// What, for people; quotes SingularityCE's build error where it has one.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: stage {}: {}",
            self.location.line, self.location.column, self.severity, self.stage, self.message
        )
    }
}

/// Parses `text` like [`parse_all`](crate::parse_all) and reports, in file order, what would
/// fail at build time or what Kiln refuses:
///
/// * errors: no stage at all; a stage without header or without `Bootstrap:` (including header
///   lines such as `From:` above `Bootstrap:`, which become a stage of their own); an unknown
///   agent (names are case-sensitive) or one Kiln does not run; `docker`, `library` or `oras`
///   without `From:`; a non-blank `%setup` or `%pre`; `%post -c` with no shell after it;
///   `%files from` a stage that does not exist;
/// * warnings: `%files from` the same or a later stage (its root filesystem is still empty); a
///   header continuation that SingularityCE crashes on; a placeholder with no `%arguments`
///   default, which then needs a build argument.
///
/// # Errors
/// The parse error when `text` does not parse.
pub fn check(text: &str) -> Result<Vec<Finding>, ParseError> {
    parser::check_size(text)?;
    let stages = parser::parse_stages(text)?;
    let mut findings = Vec::new();
    if stages.is_empty() {
        findings.push(Finding {
            severity: Severity::Error,
            stage: 1,
            location: Location::whole_file(),
            message: "the file has no stage: it holds only blank lines and comments".into(),
        });
    }
    let names: Vec<&str> = stages.iter().map(|s| s.definition.stage_name()).collect();
    for (index, stage) in stages.iter().enumerate() {
        let mut checker = StageChecker {
            stage,
            number: index + 1,
            findings: &mut findings,
        };
        checker.header(stages.len());
        checker.host_scripts();
        checker.files_from(&names, index);
        checker.template_defaults();
    }
    findings.sort_by_key(|f| (f.location.line, f.location.column));
    Ok(findings)
}

struct StageChecker<'a> {
    stage: &'a Stage,
    number: usize,
    findings: &'a mut Vec<Finding>,
}

impl StageChecker<'_> {
    fn push(&mut self, severity: Severity, at: Location, message: String) {
        self.findings.push(Finding {
            severity,
            stage: self.number,
            location: at,
            message,
        });
    }

    /// A location in this stage, from a line of its own text.
    fn at(&self, line: &Line0) -> Location {
        Location {
            line: line.line + self.stage.line_offset,
            column: line.column,
            text: line.text.clone(),
        }
    }

    /// The stage's first line.
    fn start(&self) -> Location {
        let raw = &self.stage.definition.raw;
        let first = raw.split('\n').next().unwrap_or("");
        Location {
            line: self.stage.line_offset + 1,
            column: 1,
            text: first.strip_suffix('\r').unwrap_or(first).to_owned(),
        }
    }

    fn header_line(&self, key: &str) -> Location {
        match self.stage.notes.header_lines.get(key) {
            Some(line) => self.at(line),
            None => self.start(),
        }
    }

    fn header(&mut self, stage_count: usize) {
        let def = &self.stage.definition;
        let Some(header) = &def.header else {
            self.push(
                Severity::Error,
                self.start(),
                "the stage has no header; SingularityCE refuses it: \
                 \"multiple stages detected, all must have headers\""
                    .into(),
            );
            return;
        };
        for line in self.stage.notes.continuation_crashes.clone() {
            self.push(
                Severity::Warning,
                self.at(&line),
                "this blank or comment line follows a header value continued with `\\`: \
                 SingularityCE crashes on it (\"assignment to entry in nil map\"); \
                 Kiln ends the value here"
                    .into(),
            );
        }
        let agent = match header.get("bootstrap").map(String::as_str) {
            None if self.number == 1 && stage_count > 1 => {
                let first_key = self
                    .stage
                    .notes
                    .header_lines
                    .values()
                    .min_by_key(|l| l.line)
                    .map(|l| self.at(l))
                    .unwrap_or_else(|| self.start());
                self.push(
                    Severity::Error,
                    first_key,
                    "header lines above `Bootstrap:` form a stage of their own, which has no \
                     bootstrap (\"no bootstrap specification found\"); put `Bootstrap:` first"
                        .into(),
                );
                return;
            }
            None => {
                self.push(
                    Severity::Error,
                    self.start(),
                    "no `Bootstrap:` header (\"no bootstrap specification found\")".into(),
                );
                return;
            }
            Some("") => {
                self.push(
                    Severity::Error,
                    self.header_line("bootstrap"),
                    "`Bootstrap:` has no value (\"no bootstrap specification found\")".into(),
                );
                return;
            }
            Some(agent) => agent,
        };
        let at = self.header_line("bootstrap");
        if UNSUPPORTED_AGENTS.contains(&agent) {
            self.push(
                Severity::Error,
                at,
                format!(
                    "bootstrap agent {agent:?} is not supported by Kiln (supported: {})",
                    SUPPORTED_AGENTS.join(", ")
                ),
            );
        } else if !SUPPORTED_AGENTS.contains(&agent) {
            let lower = agent.to_lowercase();
            let hint = if SUPPORTED_AGENTS.contains(&lower.as_str())
                || UNSUPPORTED_AGENTS.contains(&lower.as_str())
            {
                format!("; agent names are case-sensitive: write {lower:?}")
            } else if matches!(agent, "buildkit" | "dockerfile") {
                "; this agent exists only in Apptainer".into()
            } else {
                String::new()
            };
            self.push(
                Severity::Error,
                at,
                format!("invalid build source {agent:?}{hint}"),
            );
        } else if agent != "scratch" && header.get("from").is_none_or(|f| f.is_empty()) {
            self.push(
                Severity::Error,
                at,
                format!("`Bootstrap: {agent}` needs a `From:` header naming the image"),
            );
        }
    }

    fn host_scripts(&mut self) {
        let scripts = &self.stage.definition.build_data.build_scripts;
        for (name, script, why) in [
            ("pre", &scripts.pre, "before the bootstrap"),
            ("setup", &scripts.setup, "after the bootstrap"),
        ] {
            if !script.script.trim().is_empty() {
                let at = self.section_line(name);
                self.push(
                    Severity::Error,
                    at,
                    format!(
                        "%{name} runs on the build host {why}, which Kiln does not allow; \
                         use %files to copy from the build context and %post for commands"
                    ),
                );
            }
        }
        let post = &scripts.post;
        if !post.script.is_empty() {
            // `getSectionScriptArgs`: arguments cut at `#`; `-c` must be followed by a shell.
            let cut = post.args.split('#').next().unwrap_or("");
            let words: Vec<&str> = cut.split_whitespace().collect();
            if words.last() == Some(&"-c") && !words[..words.len() - 1].contains(&"-c") {
                let at = self.section_line("post");
                self.push(
                    Severity::Error,
                    at,
                    "%post -c needs a shell after it (SingularityCE: \"bad post section '-c' \
                     parameter: missing arguments\")"
                        .into(),
                );
            }
        }
    }

    fn section_line(&self, key: &str) -> Location {
        match self.stage.notes.section_lines.get(key) {
            Some(line) => self.at(line),
            None => self.start(),
        }
    }

    fn files_from(&mut self, names: &[&str], index: usize) {
        let files = &self.stage.definition.build_data.files;
        for (entry, line) in files.iter().zip(self.stage.notes.files_lines.clone()) {
            let Some(from) = entry.stage() else { continue };
            let at = self.at(&line);
            match names.iter().position(|n| *n == from) {
                None => self.push(
                    Severity::Error,
                    at,
                    format!("%files from {from}: stage {from} was not found"),
                ),
                Some(source) if source >= index => self.push(
                    Severity::Warning,
                    at,
                    format!(
                        "%files from {from}: stage {from} is {}, so its root filesystem is \
                         still empty when this copy runs",
                        if source == index {
                            "this stage"
                        } else {
                            "built after this one"
                        }
                    ),
                ),
                Some(_) => {}
            }
        }
    }

    fn template_defaults(&mut self) {
        let def = &self.stage.definition;
        let mut ignored = Vec::new();
        let defaults =
            template::read_defaults(&def.build_data.build_scripts.arguments.script, &mut ignored);
        let mut reported = HashSet::new();
        for placeholder in scan::placeholders(&def.raw) {
            if defaults.contains_key(placeholder.name) || !reported.insert(placeholder.name) {
                continue;
            }
            let at = template::location_of(&def.raw, placeholder.start, self.stage.line_offset);
            self.push(
                Severity::Warning,
                at,
                format!(
                    "{{{{ {0} }}}} has no default in %arguments: the build needs \
                     --build-arg {0}=…",
                    placeholder.name
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(text: &str) -> Vec<(Severity, usize, usize, String)> {
        check(text)
            .expect("parses")
            .into_iter()
            .map(|f| (f.severity, f.stage, f.location.line, f.message))
            .collect()
    }

    #[test]
    fn from_before_bootstrap_is_named_as_such() {
        let found = summary("From: alpine\nBootstrap: docker\n%post\n  true\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            (found[0].0, found[0].1, found[0].2),
            (Severity::Error, 1, 1)
        );
        assert!(found[0].3.contains("put `Bootstrap:` first"), "{found:?}");
        assert!(found[1].3.contains("needs a `From:`"), "{found:?}");
    }

    #[test]
    fn multi_stage_file_with_a_later_source_stage_warns() {
        let text = "Bootstrap: docker\nFrom: alpine\nStage: one\n%files from two\n  /a /b\n\
                    Bootstrap: docker\nFrom: alpine\nStage: two\n%files from one\n  /a /b\n";
        let found = summary(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].0, found[0].1, found[0].2),
            (Severity::Warning, 1, 4)
        );
        assert!(found[0].3.contains("built after this one"), "{found:?}");
    }

    #[test]
    fn host_scripts_and_bad_post_args_are_errors_blank_ones_are_not() {
        let text = "Bootstrap: library\nFrom: alpine\n%pre\n  echo host\n%setup\n\n%post -c # no shell\n  true\n";
        let found = summary(text);
        let messages: Vec<&str> = found.iter().map(|f| f.3.as_str()).collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(messages[0].starts_with("%pre runs on the build host"));
        assert!(messages[1].starts_with("%post -c needs a shell"));
        assert!(summary("Bootstrap: docker\nFrom: a\n%post -c /bin/bash\n  true\n").is_empty());
    }

    #[test]
    fn agents_are_case_sensitive_and_some_unsupported() {
        let found = summary("Bootstrap: Docker\nFrom: alpine\n");
        assert!(
            found[0].3.contains("invalid build source \"Docker\""),
            "{found:?}"
        );
        let found = summary("Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: http://x\n");
        assert!(found[0].3.contains("not supported by Kiln"), "{found:?}");
        assert!(summary("Bootstrap: scratch\n%files\n  a /a\n").is_empty());
        let found = summary("%post\n  true\n");
        assert!(found[0].3.contains("no header"), "{found:?}");
        let found = summary("# nothing\n");
        assert!(found[0].3.contains("no stage"), "{found:?}");
    }

    #[test]
    fn placeholders_without_defaults_warn_once_per_stage() {
        let text = "Bootstrap: docker\nFrom: {{ IMAGE }}\n%post\n  echo {{ IMAGE }} {{ A }}\n%arguments\n  A=1\n";
        let found = summary(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].0, found[0].2), (Severity::Warning, 2));
        assert!(
            found[0].3.starts_with("{{ IMAGE }} has no default"),
            "{found:?}"
        );
    }
}
