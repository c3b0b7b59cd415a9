//! The server's metrics: routing by kind and outcome with its latency, refusals and dead
//! letters by reason, API requests by route and status with their latency, the broker's queue
//! depths and the database pool, refreshed every few seconds.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::protocol::Kind;
use fedq_service::metrics::seconds_histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Routed {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByKind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByReason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    method: &'static str,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByRoute {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByQueue {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByState {
    state: &'static str,
}

type Seconds<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of the server, cheap to clone (the families are shared).
#[derive(Clone)]
pub struct ServerMetrics {
    registry: Arc<Registry>,
    routed: Family<Routed, Counter>,
    routing_seconds: Seconds<ByKind>,
    refused: Family<ByReason, Counter>,
    dead_letters: Family<ByReason, Counter>,
    requests: Family<Request, Counter>,
    request_seconds: Seconds<ByRoute>,
    queue_messages: Family<ByQueue, Gauge>,
    db_pool: Family<ByState, Gauge>,
    retention_removed: Family<ByTable, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByTable {
    table: &'static str,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerMetrics {
    /// Fresh metrics in a registry of their own.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fedq");
        let routed = Family::<Routed, Counter>::default();
        registry.register(
            "routed_envelopes",
            "Envelopes routed, by kind and outcome (forwarded, stored, duplicate)",
            routed.clone(),
        );
        let routing_seconds = Seconds::<ByKind>::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register(
            "routing_seconds",
            "Time to route an envelope, with the group routed beside it, from parsing to commit, by kind",
            routing_seconds.clone(),
        );
        let refused = Family::<ByReason, Counter>::default();
        registry.register(
            "refused_envelopes",
            "Envelopes refused by the router, by reason code",
            refused.clone(),
        );
        let dead_letters = Family::<ByReason, Counter>::default();
        registry.register(
            "dead_letters",
            "Envelopes put on the dead-letter queue, by reason code",
            dead_letters.clone(),
        );
        let requests = Family::<Request, Counter>::default();
        registry.register("http_requests", "API requests, by method, route and status", requests.clone());
        let request_seconds =
            Seconds::<ByRoute>::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register(
            "http_request_seconds",
            "Time to answer a request, by route",
            request_seconds.clone(),
        );
        let queue_messages = Family::<ByQueue, Gauge>::default();
        registry.register(
            "queue_messages",
            "Messages in each of the broker's fedq queues (ready and unacknowledged)",
            queue_messages.clone(),
        );
        let db_pool = Family::<ByState, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database pool connections: size, available, waiting",
            db_pool.clone(),
        );
        let retention_removed = Family::<ByTable, Counter>::default();
        registry.register(
            "retention_removed_rows",
            "Rows removed by the retention job, by table",
            retention_removed.clone(),
        );
        Self {
            registry: Arc::new(registry),
            routed,
            routing_seconds,
            refused,
            dead_letters,
            requests,
            request_seconds,
            queue_messages,
            db_pool,
            retention_removed,
        }
    }

    /// Counts rows the retention job removed from `table`.
    pub fn retention_removed(&self, table: &'static str, rows: u64) {
        self.retention_removed.get_or_create(&ByTable { table }).inc_by(rows);
    }

    /// The registry, to serve.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// An envelope of `kind` routed with `outcome` in `took`.
    pub fn routed(&self, kind: Kind, outcome: &'static str, took: Duration) {
        self.routed.get_or_create(&Routed { kind: kind.as_str(), outcome }).inc();
        self.routing_seconds.get_or_create(&ByKind { kind: kind.as_str() }).observe(took.as_secs_f64());
    }

    /// An envelope refused for `reason`.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ByReason { reason }).inc();
    }

    /// An envelope dead-lettered for `reason`.
    pub fn dead_lettered(&self, reason: &'static str) {
        self.dead_letters.get_or_create(&ByReason { reason }).inc();
    }

    /// A request answered, by its method and route as labels (see `fedq_service::metrics`:
    /// each from a closed set, so that requests cannot add series without bound).
    pub fn request(&self, method: &'static str, route: &str, status: u16, took: Duration) {
        let route = route.to_owned();
        self.request_seconds.get_or_create(&ByRoute { route: route.clone() }).observe(took.as_secs_f64());
        self.requests.get_or_create(&Request { method, route, status: status.to_string() }).inc();
    }

    /// Refreshes the gauges that are read, not counted: queue depths and the database pool.
    pub async fn refresh(
        &self,
        db: &deadpool_postgres::Pool,
        management: &crate::broker::management::Management,
        vhost: &str,
    ) {
        let status = db.status();
        self.db_pool.get_or_create(&ByState { state: "size" }).set(status.size as i64);
        self.db_pool.get_or_create(&ByState { state: "available" }).set(status.available as i64);
        self.db_pool.get_or_create(&ByState { state: "waiting" }).set(status.waiting as i64);
        // Read directly, not through the dashboard's cache: a reading taken here must not make
        // a page that follows show the queues as they were before.
        let queues = tokio::time::timeout(Duration::from_secs(2), management.queues(vhost)).await;
        if let Ok(Ok(queues)) = queues {
            for queue in queues.iter().filter(|q| q.name.starts_with("fedq.")) {
                self.queue_messages
                    .get_or_create(&ByQueue { queue: queue.name.clone() })
                    .set(queue.messages as i64);
            }
        }
    }
}
