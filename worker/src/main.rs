//! `kiln-worker`: parses the command line, starts tracing and hands over to the library.

use anyhow::Context;
use clap::{Parser, Subcommand};

mod cli;

/// Kiln's rootless build worker.
#[derive(Debug, Parser)]
#[command(name = "kiln-worker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Internal: the sandbox helper the worker starts for each sandboxed script, talking to it
    /// over the socket passed as stdin. Not for people.
    #[command(name = kiln_worker::sandbox::HELPER_SUBCOMMAND, hide = true)]
    SandboxInit,
    /// Build a SIF image from a definition file, rootless.
    Build {
        #[command(flatten)]
        args: cli::build::BuildArgsCli,
        /// The user to become when started as root: the sandbox's root.
        #[arg(long, default_value = "kiln-build")]
        build_user: String,
    },
    /// Run an image's runscript in the sandbox, without singularity.
    Run {
        #[command(flatten)]
        args: cli::build::RunArgs,
        /// The user to become when started as root.
        #[arg(long, default_value = "kiln-build")]
        build_user: String,
    },
    /// Take build jobs from the broker and run them: the fleet's worker process.
    Serve {
        #[command(flatten)]
        args: cli::serve::ServeArgs,
        /// The user to become when started as root: the sandbox's root.
        #[arg(long, default_value = "kiln-build")]
        build_user: String,
    },
    /// Exec probe of a running `serve`: exit 0 when it is alive (`--ready`: and takes jobs).
    Health(cli::serve::HealthArgs),
    /// Inspect and assemble SIF images.
    Sif {
        #[command(subcommand)]
        command: cli::sif::SifCommand,
    },
    /// Write a SquashFS image from a directory tree or from OCI layer blobs applied in order.
    Squashfs(cli::squashfs::SquashfsArgs),
}

fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::SandboxInit => {
            kiln_worker::sandbox::helper_main(kiln_worker::pipeline::tasks::run)
                .context("the sandbox helper failed")
        }
        Command::Sif { command } => cli::sif::run(command),
        Command::Squashfs(args) => cli::squashfs::run(args),
        Command::Health(args) => std::process::exit(cli::serve::run_health(&args)),
        Command::Build { args, build_user } => {
            cli::build::drop_root(&build_user)?;
            let code = cli::build::run_build(args)?;
            std::process::exit(code)
        }
        Command::Serve { args, build_user } => {
            cli::build::drop_root(&build_user)?;
            cli::serve::run_serve(args)
        }
        Command::Run { args, build_user } => {
            cli::build::drop_root(&build_user)?;
            let code = cli::build::run_image(args)?;
            std::process::exit(code)
        }
    }
}

/// Logs go to stderr so that stdout stays free for command output (JSON events, listings).
fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for people: logs that go to files and journald stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
