//! `kiln-scheduler autoscale`: worker containers on a Docker Engine API (Docker or Podman),
//! started when builds wait and stopped when idle, never while busy.
//!
//! Every `interval` it reads the scheduler's queue (`GET /v1/admin/queues`) and fleet view
//! (`GET /v1/admin/workers`, with an admin token), lists its containers on the engine
//! (`engine.rs`), and applies the decision of `plan.rs`. A container's name is its worker's id
//! (`KILN_WORKER_ID`), which is how heartbeats and containers meet. Busy is what heartbeats
//! say: a worker is stopped only after its heartbeats said idle for `--idle-seconds`, and
//! stopping is SIGTERM, which drains, so a job taken in between still finishes (anchors.md
//! §4.5: scaling in must not kill running builds). A drain that outlives `--stop-timeout` is
//! killed; its job goes back to the queue.
//!
//! The autoscaler keeps no state that matters across restarts: containers carry their group
//! label, and idle times are learnt again from heartbeats. Stopping the autoscaler leaves the
//! fleet as it is.

mod engine;
pub mod plan;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kiln_proto::http::{QueueInfo, Response as Envelope, WorkerInfo, WorkerStatus};
use tokio_util::sync::CancellationToken;

pub use engine::{ContainerSeen, Engine, EngineError, GROUP_LABEL, WorkerTemplate};
use plan::{Action, Container, Demand, Policy, plan};

use crate::config::AutoscaleConfig;

/// Why the autoscaler could not run, or one look at the fleet failed.
#[derive(Debug, thiserror::Error)]
pub enum AutoscaleError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The scheduler did not answer, or not with what was asked.
    #[error("failed to read {path} from the scheduler")]
    Scheduler {
        /// The endpoint.
        path: &'static str,
        /// What went wrong.
        #[source]
        cause: reqwest::Error,
    },
    /// The scheduler answered with an error envelope.
    #[error("the scheduler refused {path}: {message}")]
    Refused {
        /// The endpoint.
        path: &'static str,
        /// Its message.
        message: String,
    },
    /// The watched architecture has no queue on the scheduler.
    #[error("the scheduler has no queue for architecture {0:?}")]
    NoQueue(String),
}

/// What one look at the fleet did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Workers the queue asked for.
    pub wanted: u32,
    /// Containers started.
    pub started: Vec<String>,
    /// Containers asked to drain.
    pub terminated: Vec<String>,
    /// Containers removed.
    pub removed: Vec<String>,
}

/// The autoscaler and what it remembers between looks.
#[derive(Debug)]
pub struct Autoscaler {
    // Constant fields.
    config: AutoscaleConfig,
    engine: Engine,
    client: reqwest::Client,
    policy: Policy,
    template: WorkerTemplate,
    // Mutable: since when each worker has been seen idle, and when each drain began.
    idle_since: HashMap<String, Instant>,
    terminating_since: HashMap<String, Instant>,
}

impl Autoscaler {
    /// Connects to the engine.
    ///
    /// # Errors
    /// [`AutoscaleError::Engine`].
    pub async fn new(config: AutoscaleConfig) -> Result<Self, AutoscaleError> {
        let engine = Engine::connect(&config.docker, &config.group).await?;
        let policy = Policy {
            min: config.min,
            max: config.max,
            concurrency: config.concurrency.max(1),
            idle: Duration::from_secs(config.idle_seconds),
            start_timeout: Duration::from_secs(config.start_timeout_seconds),
        };
        let template = WorkerTemplate {
            image: config.image.clone(),
            env: config.env.clone(),
            network: config.network.clone(),
            security_opts: config.security_opts.clone(),
            cap_add: config.cap_add.clone(),
            stop_timeout_seconds: config.stop_timeout_seconds,
        };
        Ok(Self {
            config,
            engine,
            client: reqwest::Client::new(),
            policy,
            template,
            idle_since: HashMap::new(),
            terminating_since: HashMap::new(),
        })
    }

    /// The engine, for callers that look at the containers themselves.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Looks at the fleet every `--interval-seconds` until `shutdown`; a failed look is logged
    /// and the next one tried.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick =
            tokio::time::interval(Duration::from_secs(self.config.interval_seconds.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.tick().await {
                Ok(report)
                    if report
                        != TickReport {
                            wanted: report.wanted,
                            ..TickReport::default()
                        } =>
                {
                    tracing::info!(
                        wanted = report.wanted,
                        started = ?report.started,
                        terminated = ?report.terminated,
                        removed = ?report.removed,
                        "autoscaled"
                    );
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = %crate::relay::error_chain(&error), "autoscale look failed");
                }
            }
        }
    }

    /// One look at the fleet and what follows from it.
    ///
    /// # Errors
    /// [`AutoscaleError`]; nothing was changed when the scheduler or the listing failed.
    pub async fn tick(&mut self) -> Result<TickReport, AutoscaleError> {
        let queues: Vec<QueueInfo> = self.get("/v1/admin/queues").await?;
        let queue = queues
            .into_iter()
            .find(|q| q.arch == self.config.arch)
            .ok_or_else(|| AutoscaleError::NoQueue(self.config.arch.clone()))?;
        let workers: Vec<WorkerInfo> = self.get("/v1/admin/workers").await?;
        let workers: HashMap<String, WorkerInfo> =
            workers.into_iter().map(|w| (w.id.clone(), w)).collect();
        let seen = self.engine.list().await?;

        let now = Instant::now();
        self.idle_since
            .retain(|name, _| seen.iter().any(|c| &c.name == name));
        self.terminating_since
            .retain(|name, _| seen.iter().any(|c| &c.name == name && c.is_running));
        let containers: Vec<Container> = seen
            .iter()
            .map(|container| {
                let worker = workers.get(&container.name);
                let status = worker.map(|w| w.status);
                if status == Some(WorkerStatus::Idle) {
                    self.idle_since.entry(container.name.clone()).or_insert(now);
                } else {
                    self.idle_since.remove(&container.name);
                }
                Container {
                    name: container.name.clone(),
                    is_running: container.is_running,
                    age: container.age,
                    worker: status,
                    is_draining: worker.is_some_and(|w| w.is_draining),
                    idle_for: self
                        .idle_since
                        .get(&container.name)
                        .map_or(Duration::ZERO, |since| now - *since),
                    is_terminating: self.terminating_since.contains_key(&container.name),
                }
            })
            .collect();
        let demand = Demand {
            ready: queue.ready,
            queued: queue.queued,
            running: queue.running,
        };
        let mut report = TickReport {
            wanted: plan::wanted(&self.policy, demand),
            ..TickReport::default()
        };
        for action in plan(&self.policy, demand, &containers) {
            match action {
                Action::Start(count) => {
                    for _ in 0..count {
                        let name = format!("{}-{}", self.config.group, random_suffix());
                        self.engine.start(&name, &self.template).await?;
                        tracing::info!(container = %name, "worker container started");
                        report.started.push(name);
                    }
                }
                Action::Terminate(name) => {
                    self.engine.terminate(&name).await?;
                    tracing::info!(container = %name, "idle worker asked to drain and exit");
                    self.terminating_since.insert(name.clone(), now);
                    report.terminated.push(name);
                }
                Action::Remove(name) => {
                    if let Some(container) = containers.iter().find(|c| c.name == name)
                        && container.is_running
                    {
                        tracing::warn!(container = %name, "no heartbeat from the worker since it started; removing it");
                    }
                    self.engine.remove(&name).await?;
                    report.removed.push(name);
                }
            }
        }
        let stop_timeout = Duration::from_secs(self.config.stop_timeout_seconds);
        for (name, since) in &self.terminating_since {
            if now.duration_since(*since) > stop_timeout {
                tracing::warn!(container = %name, "the drain outlived the stop timeout; killing it");
                self.engine.kill(name).await?;
            }
        }
        Ok(report)
    }

    /// `GET {scheduler}{path}` with the admin token; the envelope's data.
    async fn get<T: serde::de::DeserializeOwned + Default>(
        &self,
        path: &'static str,
    ) -> Result<T, AutoscaleError> {
        let url = format!("{}{path}", self.config.scheduler.trim_end_matches('/'));
        let scheduler = |cause| AutoscaleError::Scheduler { path, cause };
        let envelope: Envelope<T> = self
            .client
            .get(url)
            .bearer_auth(&self.config.token)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(scheduler)?
            .json()
            .await
            .map_err(scheduler)?;
        match (envelope.data, envelope.error) {
            (Some(data), None) => Ok(data),
            (_, Some(error)) => Err(AutoscaleError::Refused {
                path,
                message: error.message,
            }),
            (None, None) => Err(AutoscaleError::Refused {
                path,
                message: "an empty answer".into(),
            }),
        }
    }
}

/// 8 hex digits: container names must be unique on the engine.
fn random_suffix() -> String {
    let mut bytes = [0u8; 4];
    rand::fill(&mut bytes[..]);
    hex::encode(bytes)
}
