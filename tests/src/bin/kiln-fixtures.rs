//! `kiln-fixtures`: builds the fixture images and serves them to a test run.
//!
//! - `serve --env-file F`: starts the plain and the authenticated registry, pushes every fixture
//!   to both, writes the `KILN_TEST_REGISTRY*` variables to `F` as `export` lines, then waits
//!   for SIGTERM, SIGINT or SIGHUP (or for its parent to die) and kills both registries.
//!   `./tests/run.sh` runs it.
//! - `push --registry HOST:PORT [--user U --password P]`: pushes every fixture to a registry.
//! - `pack-rootfs --rootfs DIR --out LAYOUT --tag T`: packs a directory tree (the debootstrap
//!   base) as a one-layer linux/amd64 image, unless `LAYOUT` already exists.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};

use kiln_tests::fixtures::{self, FixtureStore};
use kiln_tests::oci::{Platform, RuntimeConfig};
use kiln_tests::registry::{
    self, Credentials, ENV_REGISTRY, ENV_REGISTRY_AUTH, ENV_REGISTRY_AUTH_PASSWORD,
    ENV_REGISTRY_AUTH_USER, TestRegistry,
};

#[derive(Parser)]
#[command(about = "Builds Kiln's fixture images and serves them to a test run")]
struct Args {
    /// Cache directory of the built fixture layouts.
    #[arg(long, default_value_os_t = FixtureStore::in_target_dir_path())]
    cache: PathBuf,
    /// The static busybox binary the fixtures are made of.
    #[arg(long, default_value = fixtures::DEFAULT_BUSYBOX)]
    busybox: PathBuf,
    #[command(subcommand)]
    command: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Start both registries with the fixtures, write their variables, wait for a signal.
    Serve {
        /// File receiving `export NAME=value` lines, written once the fixtures are pushed.
        #[arg(long)]
        env_file: PathBuf,
    },
    /// Push every fixture to a running registry.
    Push {
        /// `host:port` of the registry (plain HTTP).
        #[arg(long)]
        registry: String,
        /// User name for basic auth.
        #[arg(long, requires = "password")]
        user: Option<String>,
        /// Password for basic auth.
        #[arg(long, requires = "user")]
        password: Option<String>,
    },
    /// Pack a directory tree as a one-layer image layout.
    PackRootfs {
        /// The tree to pack.
        #[arg(long)]
        rootfs: PathBuf,
        /// The OCI layout to create; left alone when it already exists.
        #[arg(long)]
        out: PathBuf,
        /// The reference name inside the layout.
        #[arg(long)]
        tag: String,
        /// The default command of the image.
        #[arg(long, default_value = "bash")]
        cmd: String,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    let store = FixtureStore::new(&args.cache, &args.busybox);
    match args.command {
        Action::Serve { env_file } => serve(&store, &env_file),
        Action::Push {
            registry,
            user,
            password,
        } => {
            let credentials = user
                .zip(password)
                .map(|(username, password)| Credentials { username, password });
            registry::push_fixtures(&store, &registry, credentials.as_ref())
                .with_context(|| format!("failed to push the fixtures to {registry}"))
        }
        Action::PackRootfs {
            rootfs,
            out,
            tag,
            cmd,
        } => {
            if out.join("index.json").exists() {
                println!("{} is already packed", out.display());
                return Ok(());
            }
            let config = RuntimeConfig {
                env: vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
                ],
                cmd: vec![cmd],
                ..RuntimeConfig::default()
            };
            fixtures::pack_rootfs(
                &rootfs,
                &out,
                &tag,
                &Platform::linux("amd64", None),
                &config,
            )
            .with_context(|| format!("failed to pack {}", rootfs.display()))
        }
    }
}

fn serve(store: &FixtureStore, env_file: &PathBuf) -> Result<()> {
    // Block the signals before any thread or child exists, so they queue for `wait` below
    // instead of killing us before the registries are stopped.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals
        .thread_block()
        .context("failed to block termination signals")?;
    // If run.sh is killed outright it cannot signal us; the kernel does (prctl(2)). The signal
    // is blocked, so it queues for `wait` like the others.
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
        .context("failed to set a parent-death signal")?;

    let plain =
        TestRegistry::start_private(None, store).context("failed to start the plain registry")?;
    let credentials = Credentials {
        username: "kiln".to_owned(),
        password: kiln_tests::unique_name("pw")?,
    };
    let auth = TestRegistry::start_private(Some(credentials.clone()), store)
        .context("failed to start the authenticated registry")?;
    let variables = format!(
        "export {ENV_REGISTRY}={}\nexport {ENV_REGISTRY_AUTH}={}\n\
         export {ENV_REGISTRY_AUTH_USER}={}\nexport {ENV_REGISTRY_AUTH_PASSWORD}={}\n",
        plain.addr(),
        auth.addr(),
        credentials.username,
        credentials.password,
    );
    // Written whole, then renamed: a reader polling for the file never sees half of it.
    let partial = env_file.with_extension("partial");
    fs::write(&partial, &variables)
        .with_context(|| format!("failed to write {}", partial.display()))?;
    fs::rename(&partial, env_file)
        .with_context(|| format!("failed to write {}", env_file.display()))?;
    eprintln!(
        "kiln-fixtures: registries {} and {} (auth) serve the fixtures",
        plain.addr(),
        auth.addr()
    );
    let signal = signals.wait().context("failed to wait for a signal")?;
    eprintln!("kiln-fixtures: {signal}, stopping the registries");
    drop(auth);
    drop(plain);
    Ok(())
}
