//! The Kiln scheduler: the HTTP service stock Singularity clients and the web builder talk to.
//!
//! It parses and checks definitions (`kiln-definitions`), records builds (`store`), publishes
//! jobs to the workers over AMQP (`queue`), relays their events to the database and to log
//! viewers (`relay`, `api::ws`), serves the image library (`library`, files in `objects`), and
//! ends builds that outlive their limits (`sweeper`).
//! `main.rs` parses the command line and calls [`run`] or [`admin`]; tests call [`serve`] with
//! their own listener.

pub mod api;
pub mod autoscale;
pub mod clock;
pub mod config;
pub mod context_archive;
pub mod definition;
pub mod finish;
pub mod fleet;
pub mod library;
pub mod library_ref;
pub mod metrics;
pub mod objects;
pub mod password;
pub mod queue;
pub mod relay;
pub mod secrets;
pub mod store;
pub mod sweeper;
pub mod upload;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kiln_proto::amqp::Topology;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::AppState;
use crate::clock::{Clock, SystemClock};
use crate::config::{
    AdminCommand, AdminConfig, QuotaSetting, ServeConfig, TokenCommand, UserCommand,
};
use crate::queue::AmqpBroker;
use crate::store::{Store, StoreError, UserLimits};

/// Why the scheduler could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Binding the listening socket failed.
    #[error("failed to listen on {0}")]
    Listen(SocketAddr, #[source] std::io::Error),
    /// Creating the data directory failed.
    #[error("failed to create the data directory")]
    DataDir(#[source] std::io::Error),
    /// The database could not be opened or migrated.
    #[error("failed to open the state")]
    Store(#[from] StoreError),
    /// The object store could not be opened.
    #[error("failed to open the object store")]
    Objects(#[from] objects::ObjectsError),
    /// The HTTP server failed.
    #[error("the http server failed")]
    Serve(#[source] std::io::Error),
}

/// Binds `config.listen` and serves until `shutdown` is cancelled (see [`serve`]).
///
/// # Errors
/// [`RunError`].
pub async fn run(config: ServeConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| RunError::Listen(config.listen, e))?;
    serve(config, listener, Arc::new(SystemClock), shutdown).await
}

/// Serves the API on `listener` and runs the relay and the sweeper until `shutdown` is
/// cancelled; then stops accepting requests, closes WebSockets with 1001, waits for the tasks
/// (at most the configured grace), and closes the broker connection and the database last.
///
/// # Errors
/// [`RunError`].
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    tokio::fs::create_dir_all(&config.state.data)
        .await
        .map_err(RunError::DataDir)?;
    let store = Store::open(&config.state.database_url()).await?;
    let objects = objects::Objects::open(
        config.library.object_store.as_deref(),
        &config.library.object_store_options,
        &config.state.data,
    )?;
    let public_url = match &config.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{}", listener.local_addr().map_err(RunError::Serve)?),
    };
    let limits = config.limits.clone();
    let topology = Topology {
        prefix: limits.amqp_prefix.clone(),
        delivery_limit: limits.delivery_limit,
    };
    let broker = Arc::new(AmqpBroker::new(
        config.amqp.clone(),
        topology.clone(),
        limits.arches.clone(),
    ));
    if let Err(error) = broker.connect().await {
        // Not fatal: submissions retry the connection, and the relay reconnects with backoff.
        tracing::warn!(error = %error, "broker unreachable at start-up");
    }
    let tracker = TaskTracker::new();
    let (changes, _) = broadcast::channel(1024);
    let state = AppState {
        store: store.clone(),
        broker: broker.clone(),
        limits: Arc::new(limits),
        topology: Arc::new(topology),
        public_url: public_url.clone().into(),
        data_dir: Arc::new(config.state.data.clone()),
        objects,
        library: Arc::new(config.library.clone()),
        clock,
        changes,
        shutdown: shutdown.child_token(),
        tracker: tracker.clone(),
        metrics: Arc::new(metrics::Metrics::new()),
        sign_ins: Arc::default(),
    };

    tracker.spawn(relay::run(
        state.clone(),
        config.amqp.clone(),
        shutdown.child_token(),
    ));
    tracker.spawn(sweeper::run(state.clone(), shutdown.child_token()));

    tracing::info!(address = %listener.local_addr().map_err(RunError::Serve)?, %public_url, "serving");
    let grace = Duration::from_secs(state.limits.shutdown_grace_seconds);
    let http_shutdown = shutdown.clone();
    // The peer address reaches handlers (the sign-in throttle counts failures by it).
    let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
        .await
        .map_err(RunError::Serve);

    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            ?grace,
            "tasks still running after the shutdown grace; stopping anyway"
        );
    }
    broker.close().await;
    store.close().await;
    served
}

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The store failed (including unknown and duplicate users).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A user name that cannot be a library entity.
    #[error("invalid user name {0:?}: use lowercase letters, digits, and . _ - between them")]
    InvalidName(String),
    /// Creating the data directory failed.
    #[error("failed to create the data directory")]
    DataDir(#[source] std::io::Error),
    /// A password that cannot be set.
    #[error(transparent)]
    Password(#[from] password::PasswordError),
}

/// Runs an admin command; returns what to print on stdout (for `token create`, only the
/// token).
///
/// # Errors
/// [`AdminError`].
pub async fn admin(config: AdminConfig, clock: &dyn Clock) -> Result<String, AdminError> {
    tokio::fs::create_dir_all(&config.state.data)
        .await
        .map_err(AdminError::DataDir)?;
    let store = Store::open(&config.state.database_url()).await?;
    let now_ms = clock.now_ms();
    let output = match config.command {
        AdminCommand::User(UserCommand::Add {
            name,
            admin,
            build_timeout,
            max_concurrent_builds,
        }) => {
            if !library_ref::is_ref_element(&name) {
                return Err(AdminError::InvalidName(name));
            }
            let limits = UserLimits {
                build_timeout_seconds: build_timeout,
                max_concurrent_builds,
            };
            store.add_user(&name, admin, limits, now_ms).await?;
            format!("added user {name}")
        }
        AdminCommand::User(UserCommand::Set {
            name,
            build_timeout,
            max_concurrent_builds,
        }) => {
            let limits = UserLimits {
                build_timeout_seconds: build_timeout,
                max_concurrent_builds,
            };
            store.set_user_limits(&name, limits).await?;
            format!("updated user {name}")
        }
        AdminCommand::User(UserCommand::Quota { name, quota }) => {
            store.set_library_quota(&name, quota.stored()).await?;
            match quota {
                QuotaSetting::Bytes(bytes) => {
                    format!("set the library quota of {name} to {bytes} bytes")
                }
                QuotaSetting::Unlimited => format!("set the library quota of {name} to unlimited"),
                QuotaSetting::Default => {
                    format!("set the library quota of {name} to the deployment's default")
                }
            }
        }
        AdminCommand::User(UserCommand::Passwd { name, password }) => {
            let hash = password::hash_password(&password)?;
            store.set_password_hash(&name, Some(&hash)).await?;
            format!("set the password of {name}")
        }
        AdminCommand::Token(TokenCommand::Create { name }) => {
            let token = secrets::new_api_token();
            store
                .add_token(&name, &secrets::token_hash(&token), now_ms)
                .await?;
            token
        }
    };
    store.close().await;
    Ok(output)
}
