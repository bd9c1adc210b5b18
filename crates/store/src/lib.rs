//! Vigil's storage: one sea-orm connection to PostgreSQL (production) or SQLite (the embedded
//! default), from one URL.
//!
//! This crate owns the connection, its readiness check, the migrations ([`migration`]) and the
//! repositories ([`Platform`], [`TenantScope`]): tenant data is reachable only through a
//! [`TenantScope`], which adds its tenant to every statement, so no query depends on
//! remembering a filter.

mod entity;
pub mod migration;
mod repo;

use std::path::Path;
use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseBackend, DatabaseConnection};
use sea_orm_migration::MigratorTrait;

pub use repo::{
    AlertQuery, AuditPage, ContentVersions, FeedRecord, Feeds, KeyRecord, NewRule, OverrideRecord,
    OwnerVersion, Platform, PrincipalRecord, Principals, RuleRecord, Rules, TableVersion,
    TenantRecord, TenantScope, TenantState, TokenRecord, Transaction, level_number,
};

/// What went wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not a PostgreSQL or SQLite URL.
    #[error("unsupported store URL {url:?}: expected postgres://… or sqlite://…")]
    UnsupportedUrl {
        /// The URL without credentials.
        url: String,
    },
    /// The database could not be reached or opened.
    #[error("cannot connect to the store at {url}: {reason}")]
    Connect {
        /// The URL without credentials.
        url: String,
        /// What failed.
        reason: String,
    },
    /// A query failed.
    #[error("store query failed: {0}")]
    Query(String),
    /// The object already exists.
    #[error("{0}")]
    Conflict(String),
    /// The object does not exist (or is not visible in this scope).
    #[error("{0} not found")]
    NotFound(String),
    /// The input cannot be stored.
    #[error("{0}")]
    Invalid(String),
}

/// Microseconds since the Unix epoch: how the store keeps time.
pub fn micros(time: time::OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// The inverse of [`micros`]; out-of-range values clamp to the epoch.
pub fn from_micros(micros: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A connection pool to Vigil's database.
#[derive(Debug, Clone)]
pub struct Store {
    connection: DatabaseConnection,
    display_url: String,
}

impl Store {
    /// Connects to `url` (`postgres://…`, or `sqlite://PATH` which is created if missing).
    pub async fn connect(url: &str) -> Result<Self> {
        let display_url = redact(url);
        let url = if let Some(path) = url.strip_prefix("sqlite://") {
            let file = path.split('?').next().unwrap_or_default();
            let parent = Path::new(file)
                .parent()
                .filter(|p| !p.as_os_str().is_empty());
            if let Some(parent) = parent.filter(|_| file != ":memory:") {
                std::fs::create_dir_all(parent).map_err(|err| StoreError::Connect {
                    url: display_url.clone(),
                    reason: format!("cannot create directory {}: {err}", parent.display()),
                })?;
            }
            if path.contains("mode=") {
                url.to_owned()
            } else if path.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.to_owned()
        } else {
            return Err(StoreError::UnsupportedUrl { url: display_url });
        };
        let mut options = ConnectOptions::new(url);
        options
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            .sqlx_logging(false);
        let connection = Database::connect(options)
            .await
            .map_err(|err| StoreError::Connect {
                url: display_url.clone(),
                reason: err.to_string(),
            })?;
        let store = Self {
            connection,
            display_url,
        };
        store.ping().await?;
        if store.backend() == "sqlite" {
            // Readers never wait for the writer (the API reads while the alert persister
            // writes). The journal mode is kept in the database file.
            use sea_orm::ConnectionTrait;
            for pragma in ["PRAGMA journal_mode=WAL"] {
                store
                    .connection
                    .execute_unprepared(pragma)
                    .await
                    .map_err(|err| StoreError::Connect {
                        url: store.display_url.clone(),
                        reason: format!("{pragma}: {err}"),
                    })?;
            }
        }
        Ok(store)
    }

    /// Applies the migrations this build knows that the database has not seen. Safe to run
    /// from several processes at start: each migration runs in a transaction where the
    /// database supports transactional DDL (PostgreSQL, SQLite).
    pub async fn migrate(&self) -> Result<()> {
        migration::Migrator::up(&self.connection, None)
            .await
            .map_err(|err| StoreError::Query(format!("migrating the store failed: {err}")))
    }

    /// Checks the database answers; used by `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        self.connection
            .ping()
            .await
            .map_err(|err| StoreError::Connect {
                url: self.display_url.clone(),
                reason: err.to_string(),
            })
    }

    /// Closes the pool (tests drop their database afterwards).
    pub async fn close(self) {
        let _ = self.connection.close().await;
    }

    /// `postgres` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match self.connection.get_database_backend() {
            DatabaseBackend::Postgres => "postgres",
            DatabaseBackend::Sqlite => "sqlite",
            _ => "other",
        }
    }

    /// The URL with credentials removed, for logs.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }
}

/// Removes the password from a URL like `postgres://user:secret@host/db`, including a
/// `password=` query parameter.
pub fn redact(url: &str) -> String {
    let redacted = redact_user_info(url);
    match redacted.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        None => redacted,
    }
}

fn redact_user_info(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user_info = &url[scheme + 3..at];
            let user = user_info.split(':').next().unwrap_or_default();
            let masked = if user_info.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{}{}@{}", &url[..scheme + 3], masked, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://vigil:s3cret@db:5432/vigil"),
            "postgres://vigil:***@db:5432/vigil"
        );
        assert_eq!(
            redact("postgres://vigil@db/vigil"),
            "postgres://vigil@db/vigil"
        );
        assert_eq!(
            redact("sqlite://./data/vigil.db"),
            "sqlite://./data/vigil.db"
        );
        assert_eq!(
            redact("postgres://db/vigil?user=v&password=s3cret&sslmode=require"),
            "postgres://db/vigil?user=v&password=***&sslmode=require"
        );
    }

    #[tokio::test]
    async fn sqlite_file_is_created_with_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/vigil.db");
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        assert_eq!(store.backend(), "sqlite");
        store.ping().await.unwrap();
        assert!(path.exists());
    }

    #[tokio::test]
    async fn postgres_connects() {
        let url = std::env::var("VIGIL_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let store = Store::connect(&url).await.unwrap();
        assert_eq!(store.backend(), "postgres");
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn bad_urls_fail_with_a_clear_error() {
        let err = Store::connect("mysql://root@localhost/x")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("expected postgres://"), "{err}");
        let err = Store::connect("postgres://nobody:pw@127.0.0.1:1/none")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(
                "cannot connect to the store at postgres://nobody:***@127.0.0.1:1/none"
            ),
            "{text}"
        );
        assert!(!text.contains(":pw@"), "{text}");
    }
}
