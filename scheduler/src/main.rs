//! `kiln-scheduler`: parses the command line, starts tracing and hands over to the library.

use clap::Parser;

/// Kiln's scheduler: remote build API, library API and web builder. Its subcommands (`serve`,
/// `admin`) arrive with issue #6.
#[derive(Debug, Parser)]
#[command(name = "kiln-scheduler", version, about)]
struct Cli {}

fn main() {
    Cli::parse();
}
