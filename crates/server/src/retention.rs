//! The retention job: removes routing-log rows, sealed results and dead-letter records older
//! than the settings, and expired login sessions, in small batches so that routing is never held
//! up by it. Every replica runs it; `SKIP LOCKED` keeps replicas from waiting on each other.

use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::RetentionConfig;
use crate::db::retention::{self, Table};
use crate::metrics::ServerMetrics;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Runs a round at start and then every `interval_secs`, until `shutdown`.
pub(crate) async fn run(
    pool: deadpool_postgres::Pool,
    config: RetentionConfig,
    metrics: ServerMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        round(&pool, &config, &metrics, &shutdown).await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(config.interval_secs)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// One pass over every table. A database failure ends the round; the next one resumes.
async fn round(
    pool: &deadpool_postgres::Pool,
    config: &RetentionConfig,
    metrics: &ServerMetrics,
    shutdown: &watch::Receiver<bool>,
) {
    let now = SystemTime::now();
    let days = |n: u32| now.checked_sub(DAY * n).unwrap_or(SystemTime::UNIX_EPOCH);
    for table in Table::ALL {
        let before = match table {
            Table::RoutingLog => days(config.routing_log_days),
            Table::Results => days(config.results_days),
            Table::DeadLetters => days(config.dead_letters_days),
            Table::Sessions => now,
        };
        let mut removed = 0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let purged = match pool.get().await {
                Ok(client) => retention::purge(&client, table, before, config.batch_rows).await,
                Err(e) => Err(e.into()),
            };
            match purged {
                Ok(n) => {
                    removed += n;
                    metrics.retention_removed(table.as_str(), n);
                    if n < u64::from(config.batch_rows) {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(table = table.as_str(), error = %e, "retention round stopped; the next one resumes");
                    return;
                }
            }
            // Each batch is its own transaction: routing's statements run between them.
            tokio::task::yield_now().await;
        }
        if removed > 0 {
            tracing::info!(table = table.as_str(), removed, "old rows removed");
        }
    }
}
