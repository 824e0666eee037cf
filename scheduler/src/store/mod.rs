//! The scheduler's state in SQL: users, their tokens and browser sessions, builds, their persisted
//! logs, the uploaded build contexts, the workers' latest heartbeats, and the library's rows.
//!
//! One [`Store`] over `sqlx::Any` serves both backends: a SQLite file under the data directory
//! (the embedded default) and PostgreSQL (for several schedulers sharing one state). We chose
//! `Any` over a trait with one implementation per backend because every statement Kiln needs
//! is plain SQL both accept (both bind `$1`-style parameters), so a second implementation would
//! only repeat the first; the cost is that `Any` carries only integers, text and blobs, which is
//! why times are stored as Unix milliseconds and flags as 0/1. Each backend has its own migration
//! folder (`migrations/sqlite`, `migrations/postgres`), embedded in the binary.
//!
//! Handlers, the relay and the sweeper call the store; nothing else writes SQL.

mod builds;
mod catalog;
mod contexts;
mod history;
mod library;
mod logs;
mod sessions;
mod stats;
mod tokens;
mod users;
mod workers;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr};

pub use builds::{BuildRow, BuildState, FinalState, NewBuild};
pub use catalog::EntitySummary;
pub use contexts::{ContextRow, ContextState};
pub use library::{CollectionRow, ContainerRow, EntityRow, ImageRow, PartRow, TagRow, UploadRow};
pub use logs::{LogAppend, LogChunk};
pub use sessions::Session;
pub use stats::BuildCount;
pub use tokens::{TokenRow, public_token_id};
pub use users::{User, UserLimits};
pub use workers::WorkerRow;

/// One migration: version, description, SQL. Files are never edited once merged; a change is a
/// new file in both folders and a new line in both lists.
type MigrationFile = (i64, &'static str, &'static str);

/// `migrations/sqlite/`, embedded.
const SQLITE_MIGRATIONS: &[MigrationFile] = &[
    (
        20261127000001,
        "initial",
        include_str!("../../migrations/sqlite/20261127000001_initial.sql"),
    ),
    (
        20261127000002,
        "library",
        include_str!("../../migrations/sqlite/20261127000002_library.sql"),
    ),
    (
        20261127000003,
        "web",
        include_str!("../../migrations/sqlite/20261127000003_web.sql"),
    ),
    (
        20261127000004,
        "workers",
        include_str!("../../migrations/sqlite/20261127000004_workers.sql"),
    ),
    (
        20261127000005,
        "worker stats",
        include_str!("../../migrations/sqlite/20261127000005_worker_stats.sql"),
    ),
    (
        20261127000006,
        "library quota parts",
        include_str!("../../migrations/sqlite/20261127000006_library_quota_parts.sql"),
    ),
];

/// `migrations/postgres/`, embedded.
const POSTGRES_MIGRATIONS: &[MigrationFile] = &[
    (
        20261127000001,
        "initial",
        include_str!("../../migrations/postgres/20261127000001_initial.sql"),
    ),
    (
        20261127000002,
        "library",
        include_str!("../../migrations/postgres/20261127000002_library.sql"),
    ),
    (
        20261127000003,
        "web",
        include_str!("../../migrations/postgres/20261127000003_web.sql"),
    ),
    (
        20261127000004,
        "workers",
        include_str!("../../migrations/postgres/20261127000004_workers.sql"),
    ),
    (
        20261127000005,
        "worker stats",
        include_str!("../../migrations/postgres/20261127000005_worker_stats.sql"),
    ),
    (
        20261127000006,
        "library quota parts",
        include_str!("../../migrations/postgres/20261127000006_library_quota_parts.sql"),
    ),
];

/// The migrator of a backend. Built from `include_str!` rather than `sqlx::migrate!`, which
/// would compile sqlx a second time for its proc macro.
fn migrator(files: &[MigrationFile]) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    (*sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL names neither SQLite nor PostgreSQL.
    #[error("unsupported database url {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// Connecting to the database failed.
    #[error("failed to open database")]
    Open(#[source] sqlx::Error),
    /// Applying the migrations failed.
    #[error("failed to migrate database")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    /// A user name given to an admin command does not exist.
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    /// A user with this name exists already.
    #[error("a user named {0:?} exists already")]
    UserExists(String),
    /// A row holds a value this version does not know.
    #[error("database holds an unknown {what} {value:?}")]
    Corrupt {
        /// The column.
        what: &'static str,
        /// The value found.
        value: String,
    },
}

/// Shorthand for store results.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Which SQL dialect a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend a database URL names.
    ///
    /// # Errors
    /// [`StoreError::UnsupportedUrl`] for any other scheme.
    pub fn of_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }
}

/// The scheduler's database (cheap to clone: a pool).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens the database at `url` (creating a SQLite file when missing) and applies the
    /// migrations of its backend.
    ///
    /// # Errors
    /// [`StoreError::UnsupportedUrl`], [`StoreError::Open`] or [`StoreError::Migrate`].
    pub async fn open(url: &str) -> Result<Self> {
        let backend = Backend::of_url(url)?;
        install_default_drivers();
        let (url, max_connections) = match backend {
            // One connection: SQLite has one writer anyway, and a single connection never meets
            // SQLITE_BUSY on a read-then-write transaction. Every statement here is short.
            Backend::Sqlite => (sqlite_url_creating(url), 1),
            Backend::Postgres => (url.to_owned(), 16),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .map_err(StoreError::Open)?;
        if backend == Backend::Sqlite {
            // Readers do not block the writer; the setting persists in the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(StoreError::Open)?;
        }
        let migrator = migrator(match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        });
        migrator.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(Self { pool, backend })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Adds `mode=rwc` to a SQLite URL that names no mode, so the file is created on first start.
fn sqlite_url_creating(url: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// Parses a text column into one of the store's enums.
fn parse_column<T: FromStr>(what: &'static str, value: String) -> Result<T> {
    value
        .parse()
        .map_err(|_| StoreError::Corrupt { what, value })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A store in a fresh SQLite file under `dir`.
    pub(crate) async fn sqlite_store(dir: &std::path::Path) -> Store {
        Store::open(&format!("sqlite://{}/kiln.db", dir.display()))
            .await
            .expect("open sqlite store")
    }

    /// A PostgreSQL database made for one test on the machine's server (`KILN_TEST_POSTGRES`,
    /// default `postgres://postgres@127.0.0.1:5432/test`); [`PgTestDb::drop_database`] removes
    /// it after a passing test, a failing one leaves it to look at.
    pub(crate) struct PgTestDb {
        admin_url: String,
        name: String,
    }

    impl PgTestDb {
        pub(crate) async fn create() -> (Self, Store) {
            let admin_url = std::env::var("KILN_TEST_POSTGRES")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let name = format!(
                "kiln_unit_{}",
                crate::secrets::new_capability()[..12].to_owned()
            );
            install_default_drivers();
            let admin = sqlx::AnyPool::connect(&admin_url)
                .await
                .expect("connect to the test PostgreSQL");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await
                .expect("create a test database");
            admin.close().await;
            let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
            let store = Store::open(&url).await.expect("open postgres store");
            (Self { admin_url, name }, store)
        }

        pub(crate) async fn drop_database(self, store: Store) {
            store.close().await;
            let admin = sqlx::AnyPool::connect(&self.admin_url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&admin)
            .await
            .expect("drop the test database");
            admin.close().await;
        }
    }

    /// Runs `check` on a fresh SQLite store and a fresh PostgreSQL store.
    pub(crate) async fn on_both_backends<F, Fut>(check: F)
    where
        F: Fn(Store) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let dir = tempfile::tempdir().unwrap();
        check(sqlite_store(dir.path()).await).await;
        let (db, store) = PgTestDb::create().await;
        check(store.clone()).await;
        db.drop_database(store).await;
    }

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(
            Backend::of_url("sqlite:///x/k.db").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::of_url("postgres://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert!(Backend::of_url("mysql://h/db").is_err());
        assert_eq!(
            sqlite_url_creating("sqlite:///a.db"),
            "sqlite:///a.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url_creating("sqlite:///a.db?mode=ro"),
            "sqlite:///a.db?mode=ro"
        );
    }
}
