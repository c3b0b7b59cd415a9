//! The node's metrics: jobs by final status and running, container start time, endpoint
//! requests by route and status, and envelopes rejected (did not open) or refused (opened, but
//! asked for what their sender may not do), by reason code.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::protocol::JobStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByStatus {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByReason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    route: String,
    status: String,
}

/// Every metric of the node, cheap to clone.
#[derive(Clone)]
pub struct NodeMetrics {
    registry: Arc<Registry>,
    jobs: Family<ByStatus, Counter>,
    running: Gauge,
    container_start: Histogram,
    requests: Family<Request, Counter>,
    rejected: Family<ByReason, Counter>,
    refused: Family<ByReason, Counter>,
    log_alarms: Family<ByReason, Counter>,
    log_size: Gauge,
    log_proven: Counter,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    /// Fresh metrics in a registry of their own.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fedq_node");
        let jobs = Family::<ByStatus, Counter>::default();
        registry.register("jobs_finished", "Jobs finished here, by final status", jobs.clone());
        let running = Gauge::default();
        registry.register("jobs_running", "Jobs accepted and not finished", running.clone());
        let container_start = fedq_service::metrics::seconds_histogram();
        registry.register(
            "container_start_seconds",
            "Time Docker took to create and start a job's container",
            container_start.clone(),
        );
        let requests = Family::<Request, Counter>::default();
        registry.register(
            "endpoint_requests",
            "Requests of algorithm containers to the node-local endpoint, by route and status",
            requests.clone(),
        );
        let rejected = Family::<ByReason, Counter>::default();
        registry.register(
            "rejected_envelopes",
            "Envelopes that did not open (signature, key, replay, expiry…), by reason code",
            rejected.clone(),
        );
        let refused = Family::<ByReason, Counter>::default();
        registry.register(
            "refused_envelopes",
            "Envelopes that opened but asked for what their sender may not do, by reason code",
            refused.clone(),
        );
        let log_alarms = Family::<ByReason, Counter>::default();
        registry.register(
            "log_alarms",
            "Alarms of the transparency log's monitor (the server's log misbehaved or logged a change this organization did not make), by code",
            log_alarms.clone(),
        );
        let log_size = Gauge::default();
        registry.register("log_size", "Leaves in the last transparency-log head checked", log_size.clone());
        let log_proven = Counter::default();
        registry.register(
            "log_envelopes_proven",
            "Envelopes delivered or sent again whose leaf, logged before, the log proved included",
            log_proven.clone(),
        );
        Self {
            registry: Arc::new(registry),
            jobs,
            running,
            container_start,
            requests,
            rejected,
            refused,
            log_alarms,
            log_size,
            log_proven,
        }
    }

    /// The registry, to serve.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// A job finished with `status`.
    pub fn job_finished(&self, status: JobStatus) {
        self.jobs.get_or_create(&ByStatus { status: status.as_str() }).inc();
    }

    /// Jobs running now.
    pub fn set_running(&self, n: usize) {
        self.running.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A container started in `took`.
    pub fn container_started(&self, took: Duration) {
        self.container_start.observe(took.as_secs_f64());
    }

    /// An endpoint request answered, by its route label (one of the endpoint's templates, or
    /// `unmatched`).
    pub fn request(&self, route: &str, status: u16) {
        self.requests.get_or_create(&Request { route: route.to_owned(), status: status.to_string() }).inc();
    }

    /// An envelope that did not open.
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ByReason { reason }).inc();
    }

    /// An envelope refused for what it asked.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ByReason { reason }).inc();
    }

    /// The transparency log's monitor raised an alarm.
    pub fn log_alarm(&self, reason: &'static str) {
        self.log_alarms.get_or_create(&ByReason { reason }).inc();
    }

    /// An envelope past its inclusion delay that the log proved included after all.
    pub fn log_proven(&self) {
        self.log_proven.inc();
    }

    /// The transparency log's monitor checked a head of `size` leaves.
    pub fn log_size(&self, size: u64) {
        self.log_size.set(i64::try_from(size).unwrap_or(i64::MAX));
    }
}
