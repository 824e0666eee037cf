//! The worker containers on a Docker Engine API (Docker, or Podman's compatible service),
//! through `bollard`. Every container this autoscaler makes carries the label
//! [`GROUP_LABEL`] with its group, so it only ever lists, stops or removes its own.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, ResourcesUlimits,
};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StartContainerOptions,
};

/// The label that marks the containers of one autoscaler group.
pub const GROUP_LABEL: &str = "kiln.autoscale.group";

/// Open files per container. Podman refuses to create a container without explicit limits on
/// hosts whose own limit exceeds what its runtime may set (environment.md); 20000 is enough
/// for a build's layer extraction and SquashFS writer.
const NOFILE: i64 = 20_000;

/// Processes per container (the build user's `%post` included).
const NPROC: i64 = 32_768;

/// Seconds one engine request may take.
const ENGINE_TIMEOUT_SECONDS: u64 = 120;

/// Why the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The address is neither `unix://`, `tcp://` nor `http://`.
    #[error(
        "unsupported docker address {0:?}: use unix://PATH, tcp://HOST:PORT or http://HOST:PORT"
    )]
    Address(String),
    /// A request to the engine failed.
    #[error("docker engine request failed")]
    Request(#[from] bollard::errors::Error),
}

/// A container of the group, as the engine lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSeen {
    /// Its name (without the leading `/`), also its worker's id.
    pub name: String,
    /// Running (or about to: created, restarting).
    pub is_running: bool,
    /// Time since it was created.
    pub age: Duration,
}

/// What every new worker container gets.
#[derive(Debug, Clone)]
pub struct WorkerTemplate {
    /// The image.
    pub image: String,
    /// `KEY=VALUE` pairs; `KILN_WORKER_ID` is added per container.
    pub env: Vec<String>,
    /// Network mode, when not the engine's default.
    pub network: Option<String>,
    /// Security options (`unmask=ALL`, ...).
    pub security_opts: Vec<String>,
    /// Capabilities added to the bounding set.
    pub cap_add: Vec<String>,
    /// Seconds the engine waits after SIGTERM on `stop` before it kills.
    pub stop_timeout_seconds: u64,
}

/// One engine, one group.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    group: String,
}

impl Engine {
    /// Connects to the engine at `address` and agrees on an API version with it (Podman 4
    /// speaks 1.41, older than bollard's default).
    ///
    /// # Errors
    /// [`EngineError`].
    pub async fn connect(address: &str, group: &str) -> Result<Self, EngineError> {
        let docker = if let Some(path) = address.strip_prefix("unix://") {
            Docker::connect_with_unix(path, ENGINE_TIMEOUT_SECONDS, bollard::API_DEFAULT_VERSION)?
        } else if address.starts_with("tcp://") || address.starts_with("http://") {
            Docker::connect_with_http(
                address,
                ENGINE_TIMEOUT_SECONDS,
                bollard::API_DEFAULT_VERSION,
            )?
        } else {
            return Err(EngineError::Address(address.to_owned()));
        };
        let docker = docker.negotiate_version().await?;
        Ok(Self {
            docker,
            group: group.to_owned(),
        })
    }

    /// Every container of the group, running or not.
    ///
    /// # Errors
    /// [`EngineError::Request`].
    pub async fn list(&self) -> Result<Vec<ContainerSeen>, EngineError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{GROUP_LABEL}={}", self.group)],
        )]);
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..ListContainersOptions::default()
            }))
            .await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(containers
            .into_iter()
            .filter_map(|container| {
                let name = container.names?.first()?.trim_start_matches('/').to_owned();
                let is_running = matches!(
                    container.state,
                    Some(
                        ContainerSummaryStateEnum::RUNNING
                            | ContainerSummaryStateEnum::CREATED
                            | ContainerSummaryStateEnum::RESTARTING
                    )
                );
                let created = container.created.and_then(|c| u64::try_from(c).ok());
                let age = Duration::from_secs(now.saturating_sub(created.unwrap_or(now)));
                Some(ContainerSeen {
                    name,
                    is_running,
                    age,
                })
            })
            .collect())
    }

    /// Creates and starts a worker container named `name`, whose worker id is `name` too.
    ///
    /// # Errors
    /// [`EngineError::Request`]; a container created but not started is removed again.
    pub async fn start(&self, name: &str, template: &WorkerTemplate) -> Result<(), EngineError> {
        let mut env = template.env.clone();
        env.push(format!("KILN_WORKER_ID={name}"));
        let ulimit = |name: &str, limit: i64| ResourcesUlimits {
            name: Some(name.to_owned()),
            soft: Some(limit),
            hard: Some(limit),
        };
        let body = ContainerCreateBody {
            image: Some(template.image.clone()),
            hostname: Some(name.to_owned()),
            env: Some(env),
            labels: Some(HashMap::from([(
                GROUP_LABEL.to_owned(),
                self.group.clone(),
            )])),
            stop_signal: Some("SIGTERM".to_owned()),
            stop_timeout: Some(i64::try_from(template.stop_timeout_seconds).unwrap_or(i64::MAX)),
            host_config: Some(HostConfig {
                ulimits: Some(vec![ulimit("nofile", NOFILE), ulimit("nproc", NPROC)]),
                network_mode: template.network.clone(),
                security_opt: (!template.security_opts.is_empty())
                    .then(|| template.security_opts.clone()),
                cap_add: (!template.cap_add.is_empty()).then(|| template.cap_add.clone()),
                init: Some(false),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_owned()),
                    ..CreateContainerOptions::default()
                }),
                body,
            )
            .await?;
        if let Err(error) = self
            .docker
            .start_container(name, None::<StartContainerOptions>)
            .await
        {
            let _ = self.remove(name).await;
            return Err(error.into());
        }
        Ok(())
    }

    /// Sends SIGTERM: the worker stops taking jobs, finishes what it runs and exits.
    ///
    /// # Errors
    /// [`EngineError::Request`].
    pub async fn terminate(&self, name: &str) -> Result<(), EngineError> {
        self.signal(name, "SIGTERM").await
    }

    /// Sends SIGKILL (after a drain that outlived the stop timeout).
    ///
    /// # Errors
    /// [`EngineError::Request`].
    pub async fn kill(&self, name: &str) -> Result<(), EngineError> {
        self.signal(name, "SIGKILL").await
    }

    async fn signal(&self, name: &str, signal: &str) -> Result<(), EngineError> {
        self.docker
            .kill_container(
                name,
                Some(KillContainerOptions {
                    signal: signal.to_owned(),
                }),
            )
            .await?;
        Ok(())
    }

    /// Removes a container, stopping it first if it still runs.
    ///
    /// # Errors
    /// [`EngineError::Request`].
    pub async fn remove(&self, name: &str) -> Result<(), EngineError> {
        self.docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..RemoveContainerOptions::default()
                }),
            )
            .await?;
        Ok(())
    }
}
