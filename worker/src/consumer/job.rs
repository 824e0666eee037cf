//! One job on a serving worker: fetch the build context, run the build pipeline on its own
//! thread, upload the SIF through the job's one-time URL, report the end, and say whether the
//! delivery may be acked.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_proto::amqp::{BuildState, Failed, Fault, Job};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::publisher::EventQueue;
use super::transfer::{SchedulerClient, TransferError};
use crate::events::{BuildReporter, ReporterLimits, system_clock};
use crate::image::SquashfsOptions;
use crate::pipeline::{BuildEnv, BuildError, BuildOptions, build};
use crate::sandbox::Sandbox;

/// Why a running job was stopped from outside its build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The user cancelled it (a control message).
    Cancelled,
    /// It ran past its time limit.
    TimedOut,
    /// The worker gives it back: it lost the delivery (broker connection) or is shutting down.
    /// No final event is sent; the broker redelivers the job.
    Abandoned,
}

/// Stops one running job; the first reason given wins.
#[derive(Debug, Clone, Default)]
pub struct StopHandle {
    /// Cancels the build.
    token: CancellationToken,
    /// Cancelled only for [`Stop::Abandoned`]: nobody waits for the job's end any more.
    abandoned: CancellationToken,
    reason: Arc<Mutex<Option<Stop>>>,
}

impl StopHandle {
    /// Stops the job for `why`, unless it was already stopped.
    pub fn stop(&self, why: Stop) {
        let mut reason = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if reason.is_none() {
            *reason = Some(why);
        }
        drop(reason);
        if why == Stop::Abandoned {
            self.abandoned.cancel();
        }
        self.token.cancel();
    }

    /// True when both handles stop the same job.
    pub fn is_same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.reason, &other.reason)
    }

    fn reason(&self) -> Option<Stop> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the consumer does with the delivery once the job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// The result or the failure is recorded: the job is done.
    Ack,
    /// Give the job back for another attempt.
    Requeue,
}

/// What every job of a worker shares.
pub struct Worker {
    /// Runs `%post` and `%test`.
    pub sandbox: Arc<Sandbox>,
    /// Reaches the scheduler's capability URLs.
    pub scheduler: SchedulerClient,
    /// Carries events to the broker.
    pub events: EventQueue,
    /// This worker's id in events.
    pub worker_id: String,
    /// Each job gets a directory below it, removed when the job ends.
    pub work_dir: PathBuf,
    /// The shared layer cache.
    pub cache_dir: PathBuf,
    /// Registries spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// SquashFS settings of the images.
    pub squashfs: SquashfsOptions,
    /// Largest build context accepted, bytes.
    pub max_context_bytes: u64,
}

/// Runs `job` (delivery `attempt`, from 1) until it ends or `stop` stops it.
pub async fn run(worker: Arc<Worker>, job: Job, attempt: u32, stop: StopHandle) -> Settle {
    let (sink, final_confirmed) = worker.events.build_sink();
    let reporter = Arc::new(BuildReporter::new(
        Arc::new(sink),
        worker.worker_id.clone(),
        Some(job.build_id.clone()),
        attempt,
        system_clock(),
        ReporterLimits::default(),
    ));
    reporter.state(BuildState::Started);
    reporter.info(format!(
        "worker {} starts build {} (attempt {attempt}) for {}",
        worker.worker_id, job.build_id, job.arch
    ));
    let work_dir = worker.work_dir.join(format!("{}.{attempt}", job.build_id));
    let timeout = Duration::from_secs(job.timeout_seconds.max(1));
    let result = tokio::select! {
        result = attempt_build(&worker, &job, &work_dir, &reporter, &stop) => result,
        () = tokio::time::sleep(timeout) => {
            stop.stop(Stop::TimedOut);
            Err(JobError::Stopped)
        }
    };
    let _ = tokio::fs::remove_dir_all(&work_dir).await;
    match (result, stop.reason()) {
        (_, Some(Stop::Abandoned)) => {
            tracing::info!(build_id = %job.build_id, "giving the job back");
            return Settle::Requeue;
        }
        (Ok(()), _) => {}
        (Err(_), Some(Stop::Cancelled)) => reporter.cancelled(),
        (Err(_), Some(Stop::TimedOut)) => reporter.failed(Failed {
            reason: format!(
                "the build did not finish within its time limit of {} s",
                job.timeout_seconds
            ),
            fault: Fault::User,
            section: None,
            exit_code: None,
            timed_out: true,
        }),
        (Err(error), None) => reporter.failed(error.into_failed()),
    }
    // The job is done only once the scheduler is sure to hear so.
    tokio::select! {
        confirmed = final_confirmed => if confirmed.is_ok() { Settle::Ack } else { Settle::Requeue },
        () = stop.abandoned.cancelled() => Settle::Requeue,
    }
}

/// Why an attempt did not produce an image.
enum JobError {
    /// The pipeline failed.
    Build(BuildError),
    /// Talking to the scheduler failed.
    Transfer(TransferError),
    /// Stopped from outside; the [`StopHandle`] says why.
    Stopped,
}

impl JobError {
    fn into_failed(self) -> Failed {
        match self {
            Self::Build(error) => {
                let (section, exit_code, timed_out) = error.script_failure();
                Failed {
                    reason: error.one_line(),
                    fault: error.fault(),
                    section,
                    exit_code,
                    timed_out,
                }
            }
            Self::Transfer(error) => Failed {
                reason: crate::consumer::error_chain(&error),
                fault: Fault::Infrastructure,
                section: None,
                exit_code: None,
                timed_out: false,
            },
            Self::Stopped => Failed {
                reason: "the worker stopped the build".into(),
                fault: Fault::Infrastructure,
                section: None,
                exit_code: None,
                timed_out: false,
            },
        }
    }
}

/// Context download, build and upload; reports `finished` on success.
async fn attempt_build(
    worker: &Worker,
    job: &Job,
    work_dir: &Path,
    reporter: &Arc<BuildReporter>,
    stop: &StopHandle,
) -> Result<(), JobError> {
    let io = |what: &'static str| {
        move |source| {
            JobError::Build(BuildError::Io {
                what,
                path: work_dir.to_owned(),
                source,
            })
        }
    };
    let _ = tokio::fs::remove_dir_all(work_dir).await;
    tokio::fs::create_dir_all(work_dir)
        .await
        .map_err(io("create"))?;
    let transfer = |error| match error {
        TransferError::Cancelled => JobError::Stopped,
        error => JobError::Transfer(error),
    };
    let context_tar = match &job.context {
        Some(context) => {
            reporter.state(BuildState::Fetching);
            let path = work_dir.join("context.tar.gz");
            let size = worker
                .scheduler
                .download(
                    &context.url,
                    &path,
                    worker.max_context_bytes,
                    reporter,
                    &stop.token,
                )
                .await
                .map_err(transfer)?;
            reporter.info(format!("fetched the build context: {size} bytes"));
            Some(path)
        }
        None => None,
    };
    let Some(result_url) = job.result_url.clone() else {
        return Err(JobError::Build(BuildError::Refused(
            "the job names no place to upload the image to".into(),
        )));
    };
    let output = work_dir.join("image.sif");
    let options = BuildOptions {
        arch: job.arch.clone(),
        build_args: job.build_args.clone(),
        context_tar,
        working_dir: job
            .working_dir
            .clone()
            .map_or_else(|| PathBuf::from("/"), PathBuf::from),
        library_url: job.library_url.clone(),
        library_credential: job.library_credential.clone(),
        insecure_registries: worker.insecure_registries.clone(),
        notest: false,
        work_dir: work_dir.join("build"),
        cache_dir: worker.cache_dir.clone(),
        output: output.clone(),
        squashfs: worker.squashfs.clone(),
        builder_version: format!("kiln-{}", env!("CARGO_PKG_VERSION")),
    };
    tokio::fs::create_dir_all(&options.work_dir)
        .await
        .map_err(io("create"))?;
    let finished = build_on_thread(
        Arc::clone(&worker.sandbox),
        job.definition.clone(),
        options,
        Arc::clone(reporter),
        stop.token.clone(),
    )
    .await
    .map_err(|error| match error {
        BuildError::Cancelled if stop.reason().is_some() => JobError::Stopped,
        error => JobError::Build(error),
    })?;
    reporter.state(BuildState::Uploading);
    let started = std::time::Instant::now();
    worker
        .scheduler
        .upload(&result_url, &output, reporter, &stop.token)
        .await
        .map_err(transfer)?;
    let seconds = started.elapsed().as_secs_f64().max(0.001);
    reporter.info(format!(
        "uploaded the image: {} bytes in {seconds:.2} s ({:.1} MiB/s)",
        finished.image_size,
        finished.image_size as f64 / seconds / (1 << 20) as f64
    ));
    let mut finished = finished;
    finished.library_ref = job.library_ref.clone();
    reporter.finished(finished);
    Ok(())
}

/// Runs the pipeline on a runtime of its own: it does long stretches of blocking file work
/// that must not stall the consumer's heartbeats and acks.
async fn build_on_thread(
    sandbox: Arc<Sandbox>,
    definition: String,
    options: BuildOptions,
    reporter: Arc<BuildReporter>,
    cancel: CancellationToken,
) -> Result<kiln_proto::amqp::Finished, BuildError> {
    let (sender, receiver) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("kiln-build".into())
        .spawn(move || {
            // The pipeline moves blocking work aside with `block_in_place`, which needs a
            // multi-threaded runtime.
            let result = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("kiln-build-rt")
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(async {
                    let env = BuildEnv {
                        sandbox: &sandbox,
                        reporter: &reporter,
                        cancel: &cancel,
                    };
                    build(&definition, &options, &env).await
                }),
                Err(source) => Err(BuildError::Io {
                    what: "start a runtime for",
                    path: options.work_dir.clone(),
                    source,
                }),
            };
            let _ = sender.send(result);
        });
    if let Err(source) = spawned {
        return Err(BuildError::Io {
            what: "start a thread for",
            path: PathBuf::from("the build"),
            source,
        });
    }
    receiver.await.unwrap_or_else(|_| {
        Err(BuildError::Refused(
            "the build thread ended without a result".into(),
        ))
    })
}
