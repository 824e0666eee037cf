//! `kiln-def`: parse, render and check definition files from the command line.
//!
//! Exit codes: 0 success; 1 the definition is rejected (parse or templating error, or `check`
//! found an error); 2 the command could not run (usage, unreadable file).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use kiln_definitions::{
    BuildArgs, MAX_DEFINITION_BYTES, Severity, check, parse, parse_all, parse_build_arg,
    parse_build_arg_file, render,
};

/// Parse, template and check Singularity definition files as SingularityCE does.
#[derive(Debug, Parser)]
#[command(name = "kiln-def", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the parsed definition as SingularityCE's JSON (`types.Definition`).
    Parse {
        /// Parse every stage (split at `Bootstrap:` lines) and print an array.
        #[arg(long)]
        all: bool,
        /// The definition file, or `-` for standard input.
        file: PathBuf,
    },
    /// Print the definition with `{{ name }}` placeholders replaced (SingularityCE 4 rules).
    Render {
        /// A build argument `KEY=VAL`; may be repeated, the last one wins.
        #[arg(long = "build-arg", value_name = "KEY=VAL")]
        build_args: Vec<String>,
        /// A file of `KEY=VAL` lines; `--build-arg` values override it.
        #[arg(long = "build-arg-file", value_name = "FILE")]
        build_arg_file: Option<PathBuf>,
        /// The definition file, or `-` for standard input.
        file: PathBuf,
    },
    /// Report what parses but would fail at build time or is refused by Kiln.
    Check {
        /// The definition file, or `-` for standard input.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kiln-def: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut stdout = io::stdout().lock();
    match cli.command {
        Command::Parse { all, file } => {
            let (name, text) = match read_definition(&file)? {
                Ok(input) => input,
                Err(rejected) => return Ok(reject(&rejected)),
            };
            let json = if all {
                parse_all(&text).map(|stages| serde_json::to_string_pretty(&stages))
            } else {
                parse(&text).map(|def| serde_json::to_string_pretty(&def))
            };
            match json {
                Ok(json) => writeln!(stdout, "{}", json.context("serialise the definition")?)?,
                Err(err) => return Ok(reject(&err.report(&name))),
            }
        }
        Command::Render {
            build_args,
            build_arg_file,
            file,
        } => {
            let (name, text) = match read_definition(&file)? {
                Ok(input) => input,
                Err(rejected) => return Ok(reject(&rejected)),
            };
            let mut args = BuildArgs::new();
            if let Some(path) = build_arg_file {
                let text = read_text(&path)?
                    .with_context(|| format!("{}: build arg file too large", path.display()))?;
                let (file_args, warnings) = parse_build_arg_file(&text);
                for warning in warnings {
                    eprintln!("warning: {warning}");
                }
                args.extend(file_args);
            }
            for arg in &build_args {
                let (key, value) =
                    parse_build_arg(arg).with_context(|| format!("--build-arg {arg:?}"))?;
                args.insert(key, value);
            }
            match render(&text, &args) {
                Ok(rendered) => {
                    for warning in &rendered.warnings {
                        eprintln!("warning: {warning}");
                    }
                    stdout.write_all(rendered.text.as_bytes())?;
                }
                Err(err) => return Ok(reject(&err.report(&name))),
            }
        }
        Command::Check { file } => {
            let (name, text) = match read_definition(&file)? {
                Ok(input) => input,
                Err(rejected) => return Ok(reject(&rejected)),
            };
            let findings = match check(&text) {
                Ok(findings) => findings,
                Err(err) => return Ok(reject(&err.report(&name))),
            };
            for finding in &findings {
                writeln!(stdout, "{name}:{finding}")?;
            }
            if findings.iter().any(|f| f.severity == Severity::Error) {
                return Ok(ExitCode::from(1));
            }
        }
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Prints why the definition is rejected; exit code 1.
fn reject(report: &str) -> ExitCode {
    eprintln!("{report}");
    ExitCode::from(1)
}

/// Reads a definition (or `-` for stdin) as UTF-8. `Ok(Err(message))` is a definition that is
/// rejected unread because it exceeds [`MAX_DEFINITION_BYTES`].
fn read_definition(path: &Path) -> anyhow::Result<Result<(String, String), String>> {
    let name = if path.as_os_str() == "-" {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    };
    Ok(read_text(path)?
        .map(|text| (name.clone(), text))
        .ok_or_else(|| {
            format!("{name}: definition file is too large: more than {MAX_DEFINITION_BYTES} bytes")
        }))
}

/// Reads at most [`MAX_DEFINITION_BYTES`] of UTF-8 text; `None` when there is more.
fn read_text(path: &Path) -> anyhow::Result<Option<String>> {
    let limit = MAX_DEFINITION_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .context("read standard input")?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("open {}", path.display()))?
            .take(limit)
            .read_to_end(&mut bytes)
            .with_context(|| format!("read {}", path.display()))?;
    }
    if bytes.len() as u64 == limit {
        return Ok(None);
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text)),
        Err(err) => bail!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            err.utf8_error().valid_up_to()
        ),
    }
}
