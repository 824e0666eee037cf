//! The OCI registries the end-to-end tests pull base images from, holding the [`Fixture`]s.
//!
//! # Environment contract
//!
//! `./tests/run.sh` starts two registries for the whole run (`kiln-fixtures serve`), pushes
//! every fixture to both, and exports:
//!
//! | variable | value |
//! |---|---|
//! | `KILN_TEST_REGISTRY` | `127.0.0.1:<port>`: plain HTTP, no auth; `busybox`, `layers`, `multi`, `evil` (tag `latest`) |
//! | `KILN_TEST_REGISTRY_AUTH` | `127.0.0.1:<port>`: plain HTTP, htpasswd basic auth; the same fixtures |
//! | `KILN_TEST_REGISTRY_AUTH_USER`, `KILN_TEST_REGISTRY_AUTH_PASSWORD` | its credentials |
//! | `KILN_TEST_DEBIAN` | `127.0.0.1:<port>/debian:bookworm`: the debootstrap minbase, for benchmarks and heavy tests (only set by `run.sh`) |
//!
//! [`TestRegistry::plain`] and [`TestRegistry::authenticated`] use these when set. Otherwise
//! (`cargo test -p <crate>` by hand) they start a private `docker-registry` on a free 127.0.0.1
//! port with its storage in a temp dir, push the fixtures, and kill it when the value is dropped.
//! Either way a test must not delete or overwrite the fixtures: other tests share them. A test
//! that pushes images uses a repository name from [`crate::unique_name`].
//!
//! Clients talk to both registries over plain HTTP: skopeo needs `--tls-verify=false`.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::command;
use crate::error::{Result, SupportError, io_error};
use crate::fixtures::{Fixture, FixtureStore, TAG};
use crate::net::{free_port, http_status, wait_until};
use crate::unique_name;

/// Variable naming the shared plain registry (`host:port`).
pub const ENV_REGISTRY: &str = "KILN_TEST_REGISTRY";
/// Variable naming the shared authenticated registry (`host:port`).
pub const ENV_REGISTRY_AUTH: &str = "KILN_TEST_REGISTRY_AUTH";
/// Variable holding the authenticated registry's user name.
pub const ENV_REGISTRY_AUTH_USER: &str = "KILN_TEST_REGISTRY_AUTH_USER";
/// Variable holding the authenticated registry's password.
pub const ENV_REGISTRY_AUTH_PASSWORD: &str = "KILN_TEST_REGISTRY_AUTH_PASSWORD";
/// Variable holding the full reference of the debootstrap base image, when it was pushed.
pub const ENV_DEBIAN: &str = "KILN_TEST_DEBIAN";

/// How long a registry may take to answer after it is started (it takes < 0.1 s when idle).
const START_DEADLINE: Duration = Duration::from_secs(20);
/// How many free ports to try when another process takes the chosen one first.
const START_ATTEMPTS: usize = 5;

/// A user name and password for HTTP basic auth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl Credentials {
    /// `user:password`, as skopeo's `--creds` takes them.
    pub fn colon_pair(&self) -> String {
        format!("{}:{}", self.username, self.password)
    }
}

/// A registry holding every fixture: the run's shared one, or a private one owned by this value.
#[derive(Debug)]
pub struct TestRegistry {
    addr: String,
    credentials: Option<Credentials>,
    /// The private server, killed on drop; `None` for the run's shared registry.
    server: Option<RegistryServer>,
}

impl TestRegistry {
    /// The plain registry: `KILN_TEST_REGISTRY` if set, else a private one with the fixtures.
    pub fn plain() -> Result<TestRegistry> {
        match std::env::var(ENV_REGISTRY) {
            Ok(addr) if !addr.is_empty() => Ok(TestRegistry {
                addr,
                credentials: None,
                server: None,
            }),
            _ => TestRegistry::start_private(None, &FixtureStore::in_target_dir()),
        }
    }

    /// The authenticated registry: `KILN_TEST_REGISTRY_AUTH` and its credentials if set, else a
    /// private one with random credentials and the fixtures.
    ///
    /// Errors: [`SupportError::Environment`] when the address is set without both credentials.
    pub fn authenticated() -> Result<TestRegistry> {
        let addr = match std::env::var(ENV_REGISTRY_AUTH) {
            Ok(addr) if !addr.is_empty() => addr,
            _ => {
                let credentials = Credentials {
                    username: "kiln".to_owned(),
                    password: unique_name("pw")?,
                };
                return TestRegistry::start_private(
                    Some(credentials),
                    &FixtureStore::in_target_dir(),
                );
            }
        };
        let var = |name: &'static str| {
            std::env::var(name).map_err(|_| SupportError::Environment {
                name,
                reason: "must be set with KILN_TEST_REGISTRY_AUTH",
            })
        };
        Ok(TestRegistry {
            addr,
            credentials: Some(Credentials {
                username: var(ENV_REGISTRY_AUTH_USER)?,
                password: var(ENV_REGISTRY_AUTH_PASSWORD)?,
            }),
            server: None,
        })
    }

    /// Starts a private registry (with basic auth when `credentials` is set) and pushes every
    /// fixture of `store` to it.
    pub fn start_private(
        credentials: Option<Credentials>,
        store: &FixtureStore,
    ) -> Result<TestRegistry> {
        let server = RegistryServer::start(credentials.as_ref())?;
        let registry = TestRegistry {
            addr: server.addr().to_owned(),
            credentials,
            server: Some(server),
        };
        push_fixtures(store, &registry.addr, registry.credentials.as_ref())?;
        Ok(registry)
    }

    /// `host:port` of the registry.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The credentials it requires, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// True when this value started the registry (and kills it on drop).
    pub fn is_private(&self) -> bool {
        self.server.is_some()
    }

    /// `host:port/<repository>:latest` of `fixture`, as a `docker://` or `From:` reference.
    pub fn reference(&self, fixture: Fixture) -> String {
        format!("{}/{}:{TAG}", self.addr, fixture.repository())
    }
}

/// A `docker-registry serve` process on a free 127.0.0.1 port, storing into a temp dir. Dropping
/// it kills the process and removes the storage.
#[derive(Debug)]
pub struct RegistryServer {
    child: Child,
    addr: String,
    /// Config, htpasswd file, log and storage; removed on drop after the process is gone.
    _dir: TempDir,
}

impl RegistryServer {
    /// Starts a registry, with htpasswd basic auth for `credentials` when set, and returns once
    /// it answers `GET /v2/` (200, or 401 with auth).
    ///
    /// Errors: `docker-registry` or `htpasswd` is missing or fails, or the registry does not
    /// answer within 20 s.
    pub fn start(credentials: Option<&Credentials>) -> Result<RegistryServer> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-registry-")
            .tempdir()
            .map_err(io_error("create a temp dir in", std::env::temp_dir()))?;
        let auth = match credentials {
            Some(credentials) => {
                let htpasswd = dir.path().join("htpasswd");
                let line = command::run_stdout(Command::new("htpasswd").args([
                    "-Bbn",
                    &credentials.username,
                    &credentials.password,
                ]))?;
                fs::write(&htpasswd, line.trim_end()).map_err(io_error("write", &htpasswd))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            None => String::new(),
        };
        let expected = if credentials.is_some() { 401 } else { 200 };
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match RegistryServer::spawn(dir.path(), &auth, expected) {
                Ok((child, addr)) => {
                    return Ok(RegistryServer {
                        child,
                        addr,
                        _dir: dir,
                    });
                }
                Err(Spawned::PortTaken(error)) => last_error = Some(error),
                Err(Spawned::Failed(error)) => return Err(error),
            }
        }
        Err(last_error.unwrap_or(SupportError::Environment {
            name: "docker-registry",
            reason: "found no free port",
        }))
    }

    fn spawn(
        dir: &Path,
        auth: &str,
        expected: u16,
    ) -> std::result::Result<(Child, String), Spawned> {
        let port = free_port().map_err(Spawned::Failed)?;
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.join("storage");
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n\
             {auth}",
            storage.display()
        );
        let config_path = dir.join("config.yml");
        fs::write(&config_path, config)
            .map_err(io_error("write", &config_path))
            .map_err(Spawned::Failed)?;
        let log_path = dir.join("registry.log");
        let log = File::create(&log_path)
            .map_err(io_error("create", &log_path))
            .map_err(Spawned::Failed)?;
        let log_err = log
            .try_clone()
            .map_err(io_error("duplicate", &log_path))
            .map_err(Spawned::Failed)?;
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| {
                Spawned::Failed(SupportError::Spawn {
                    program: "docker-registry".to_owned(),
                    source,
                })
            })?;
        let mut exited = None;
        let ready = wait_until(
            &format!("registry on {addr}"),
            "answer GET /v2/",
            START_DEADLINE,
            || {
                if let Some(status) = child
                    .try_wait()
                    .map_err(io_error("wait for", "docker-registry"))?
                {
                    exited = Some(status);
                    return Ok(true);
                }
                Ok(http_status(&addr, "/v2/") == Some(expected))
            },
        );
        let failure = match (ready, exited) {
            (Ok(()), None) => return Ok((child, addr)),
            (Ok(()), Some(status)) => {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                let error = SupportError::Command {
                    command: format!("docker-registry serve {}", config_path.display()),
                    status,
                    stderr: log.trim().to_owned(),
                };
                if log.contains("address already in use") {
                    return Err(Spawned::PortTaken(error));
                }
                error
            }
            (Err(error), _) => error,
        };
        let _ = child.kill();
        let _ = child.wait();
        Err(Spawned::Failed(failure))
    }

    /// `127.0.0.1:<port>` it listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The process id, for tests that check it is gone after drop.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

enum Spawned {
    PortTaken(SupportError),
    Failed(SupportError),
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        // SIGKILL: the registry keeps nothing worth flushing. `_dir`, a field, is removed after
        // this body returns, once the process no longer writes to it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes every fixture of `store` to the registry at `addr` as `<repository>:latest`.
pub fn push_fixtures(
    store: &FixtureStore,
    addr: &str,
    credentials: Option<&Credentials>,
) -> Result<()> {
    for fixture in Fixture::ALL {
        let layout = store.layout(fixture)?;
        let destination = format!("{addr}/{}:{TAG}", fixture.repository());
        push_layout(&layout, TAG, &destination, credentials)?;
    }
    Ok(())
}

/// Copies the image `tag` of the OCI layout `layout` (every platform of an index) to
/// `destination` (`host:port/name:tag`) over plain HTTP with skopeo.
pub fn push_layout(
    layout: &Path,
    tag: &str,
    destination: &str,
    credentials: Option<&Credentials>,
) -> Result<()> {
    let mut skopeo = Command::new("skopeo");
    skopeo.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--all",
        "--dest-tls-verify=false",
    ]);
    if let Some(credentials) = credentials {
        skopeo.arg("--dest-creds").arg(credentials.colon_pair());
    }
    skopeo
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{destination}"));
    command::run(&mut skopeo).map(drop)
}
