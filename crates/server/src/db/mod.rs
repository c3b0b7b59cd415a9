//! PostgreSQL: the connection pool, migrations, and one module of queries per area.
//!
//! The database holds metadata and ciphertext only. Every query is here, so that what the
//! server stores can be audited in one folder.

pub mod directory;
pub mod enrollments;
pub mod monitor;
pub mod retention;
pub mod routing;
pub mod tasks;
pub mod transparency;
pub mod users;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use secrecy::ExposeSecret as _;

use crate::tls::ClientTls;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// An arbitrary constant naming the advisory lock that serializes migrations between replicas.
const MIGRATION_LOCK: i64 = 0x6665_6471_6d69_6772; // "fedqmigr"

/// Database failures, kept apart from "not found" and constraint conflicts, which callers map
/// to their own errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had from the pool.
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A query failed.
    #[error("database query failed: {}", detail(.0))]
    Query(#[from] tokio_postgres::Error),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migration(#[from] refinery::Error),
    /// The URL is not a valid PostgreSQL URL.
    #[error("invalid database URL: {0}")]
    Config(String),
}

/// What PostgreSQL said, with its SQLSTATE: `tokio_postgres` displays only "db error".
fn detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl DbError {
    /// Whether the error is a unique-constraint violation (a duplicate).
    pub fn is_unique_violation(&self) -> bool {
        self.sql_state() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    }

    /// Whether the error is a foreign-key violation (a reference to something that is not there).
    pub fn is_foreign_key_violation(&self) -> bool {
        self.sql_state() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION)
    }

    fn sql_state(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            DbError::Query(e) => e.code(),
            _ => None,
        }
    }
}

/// Creates the pool. Connections are opened lazily, so this succeeds while the database is down.
///
/// With `sslmode=require` in the URL every connection is TLS, verified against `tls.ca_file`
/// (or the system's roots) and the host name, as libpq's `verify-full`; without it, connections
/// are plain, which the plain-text rule allows only to loopback unless `tls.allow_plaintext`.
pub fn pool(url: &secrecy::SecretString, size: usize, tls: &ClientTls) -> Result<Pool, DbError> {
    let pg: tokio_postgres::Config =
        url.expose_secret().parse().map_err(|e: tokio_postgres::Error| DbError::Config(e.to_string()))?;
    let encrypted = pg.get_ssl_mode() == tokio_postgres::config::SslMode::Require;
    if !encrypted {
        for host in pg.get_hosts() {
            if let tokio_postgres::config::Host::Tcp(host) = host {
                tls.check_plaintext("database.url", "postgres", host)
                    .map_err(|e| DbError::Config(e.to_string()))?;
            }
        }
    }
    let config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
    let manager = if encrypted {
        let connector = tls
            .rustls_config("database.tls")
            .map(tokio_postgres_rustls::MakeRustlsConnect::new)
            .map_err(|e| DbError::Config(e.to_string()))?;
        Manager::from_config(pg, connector, config)
    } else {
        Manager::from_config(pg, tokio_postgres::NoTls, config)
    };
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(std::time::Duration::from_secs(10)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .build()
        .map_err(|e| DbError::Config(e.to_string()))
}

/// Applies pending migrations. Replicas starting together take turns on an advisory lock, so
/// each migration runs once.
pub async fn migrate(pool: &Pool) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let result = embedded::migrations::runner().run_async(&mut **client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    result?;
    Ok(())
}
