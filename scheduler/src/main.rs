//! `kiln-scheduler`: parses the command line, starts tracing and hands over to the library.
//! The first SIGTERM or Ctrl-C drains (see `kiln_scheduler::serve`); a second one exits at once.

use anyhow::Context;
use clap::Parser;
use kiln_scheduler::clock::SystemClock;
use kiln_scheduler::config::{AdminCommand, Cli, Command, UserCommand};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            let shutdown = CancellationToken::new();
            tokio::spawn(watch_signals(shutdown.clone()));
            kiln_scheduler::run(*config, shutdown)
                .await
                .context("kiln-scheduler serve failed")
        }
        Command::Autoscale(config) => {
            let shutdown = CancellationToken::new();
            tokio::spawn(watch_signals(shutdown.clone()));
            let autoscaler = kiln_scheduler::autoscale::Autoscaler::new(config)
                .await
                .context("kiln-scheduler autoscale failed to start")?;
            autoscaler.run(shutdown).await;
            Ok(())
        }
        Command::Admin(mut config) => {
            if let AdminCommand::User(UserCommand::Passwd { password, .. }) = &mut config.command {
                *password = read_password().context("failed to read the password")?;
            }
            let output = kiln_scheduler::admin(config, &SystemClock)
                .await
                .context("kiln-scheduler admin failed")?;
            println!("{output}");
            Ok(())
        }
    }
}

/// The first line of standard input, without its line ending (`echo PW | kiln-scheduler admin
/// user passwd NAME`, or typed at the terminal).
fn read_password() -> std::io::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// First signal: drain. Second: exit now.
async fn watch_signals(shutdown: CancellationToken) {
    wait_for_signal().await;
    tracing::info!("shutting down: draining (send the signal again to stop at once)");
    shutdown.cancel();
    wait_for_signal().await;
    tracing::warn!("second signal: stopping without drain");
    std::process::exit(130);
}

async fn wait_for_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot watch SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Logs go to stderr so that stdout stays free for command output (tokens).
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
