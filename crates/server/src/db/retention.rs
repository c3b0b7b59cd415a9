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

    /// Its key column, and the column its age is read from.
    const fn columns(self) -> (&'static str, &'static str) {
        match self {
            Table::RoutingLog => ("message_id", "routed_at"),
            Table::Results => ("job_id", "received_at"),
            Table::DeadLetters => ("id", "received_at"),
            Table::Sessions => ("token_hash", "expires_at"),
        }
    }

    fn statement(self) -> String {
        let (table, (key, age)) = (self.as_str(), self.columns());
        // `SKIP LOCKED`: rows another replica's round is removing, or that a transaction holds,
        // are left for the next batch instead of waited for.
        format!(
            "DELETE FROM {table} WHERE {key} IN
               (SELECT {key} FROM {table} WHERE {age} < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"
        )
    }
}

/// Removes at most `batch` rows of `table` older than `before`; returns how many went.
pub async fn purge(
    db: &impl GenericClient,
    table: Table,
    before: SystemTime,
    batch: u32,
) -> Result<u64, DbError> {
    let statement = db.prepare_cached(&table.statement()).await?;
    Ok(db.execute(&statement, &[&before, &i64::from(batch)]).await?)
}
