//! The application layer of the server: what a request may do and what it does, whichever front
//! end it came through. The REST API (`api/`) and the dashboard (`dashboard/`) parse requests,
//! call these functions and render what they return; every permission rule is in
//! [`access`], every task, node, enrollment and user action in its module here.

pub mod access;
pub mod bodies;
pub mod broker_stats;
pub mod collaborations;
pub mod enrollments;
pub mod error;
pub mod logins;
pub mod nodes;
pub mod tasks;
pub mod throttle;
pub mod users;

use std::sync::Arc;

use deadpool_postgres::Pool;

pub use access::Principal;
pub use broker_stats::BrokerStats;
pub use error::{AppError, ErrorCode};

use crate::ServerLink;
use crate::broker::management::Management;
use crate::config::ServerConfig;
use crate::router::Router;

/// What every request can reach.
pub struct AppState {
    /// PostgreSQL.
    pub db: Pool,
    /// The router, shared with the ingress consumer (task creation routes through it too).
    pub router: Router,
    /// The broker channel the server publishes on.
    pub broker: ServerLink,
    /// The RabbitMQ management API.
    pub management: Management,
    /// The broker's queue statistics for the dashboard, read at most every two seconds.
    pub broker_stats: BrokerStats,
    /// Bounds on password checking: concurrency and failures.
    pub throttle: throttle::LoginThrottle,
    /// Bounds on large request bodies in flight.
    pub bodies: bodies::BodyBudget,
    /// Settings.
    pub config: ServerConfig,
    /// Prometheus metrics.
    pub metrics: crate::metrics::ServerMetrics,
    /// The transparency log: its key and tree.
    pub transparency: crate::transparency::SharedLog,
}

/// Shared state handed to handlers.
pub type State = Arc<AppState>;

/// Gets a database connection, mapping failure to `unavailable`.
pub async fn db(state: &State) -> Result<deadpool_postgres::Object, AppError> {
    Ok(state.db.get().await?)
}
