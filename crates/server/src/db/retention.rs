//! Removing what is older than the retention settings, a bounded batch per statement.

use std::time::SystemTime;

use deadpool_postgres::GenericClient;

use super::DbError;

/// What the retention job empties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Routing-log rows, by the time they were routed.
    RoutingLog,
    /// Sealed results kept for the API, by the time they arrived.
    Results,
    /// Dead-letter records, by the time they were refused.
    DeadLetters,
    /// Login sessions, once expired.
    Sessions,
}

impl Table {
    /// Every table, in the order a round goes through them.
    pub const ALL: [Table; 4] = [Table::RoutingLog, Table::Results, Table::DeadLetters, Table::Sessions];

    /// Its name, in metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Table::RoutingLog => "routing_log",
            Table::Results => "results",
            Table::DeadLetters => "dead_letters",
            Table::Sessions => "sessions",
        }
    }

    fn statement(self) -> &'static str {
        // `SKIP LOCKED`: rows another replica's round is removing, or that a transaction holds,
        // are left for the next batch instead of waited for.
        match self {
            Table::RoutingLog => {
                "DELETE FROM routing_log WHERE message_id IN
                   (SELECT message_id FROM routing_log WHERE routed_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"
            }
            Table::Results => {
                "DELETE FROM results WHERE job_id IN
                   (SELECT job_id FROM results WHERE received_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"
            }
            Table::DeadLetters => {
                "DELETE FROM dead_letters WHERE id IN
                   (SELECT id FROM dead_letters WHERE received_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"
            }
            Table::Sessions => {
                "DELETE FROM sessions WHERE token_hash IN
                   (SELECT token_hash FROM sessions WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"
            }
        }
    }
}

/// Removes at most `batch` rows of `table` older than `before`; returns how many went.
pub async fn purge(
    db: &impl GenericClient,
    table: Table,
    before: SystemTime,
    batch: u32,
) -> Result<u64, DbError> {
    let statement = db.prepare_cached(table.statement()).await?;
    Ok(db.execute(&statement, &[&before, &i64::from(batch)]).await?)
}
