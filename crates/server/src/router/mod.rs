//! The blind router: consumes the ingress queue, reads only envelope headers, checks them, records
//! metadata, and forwards the unchanged bytes to the recipient organization's queue.
//!
//! Delivery guarantees. An ingress message is acknowledged only after everything it caused is
//! durable: the routing-log row and job status committed, the forwarded copy confirmed by the
//! broker. The envelopes in flight together are routed as a group (`group`), inside one
//! transaction whose first statement inserts their message ids into the routing log; a
//! redelivered or duplicated envelope finds its id and is dropped, and two replicas handling
//! copies of one envelope serialize on that row. If a server dies after the
//! broker confirmed the forwarded copy but before the commit, the redelivery forwards it again;
//! the receiving node's replay guard drops that copy.

pub mod check;
mod consumer;
mod dead_letter;
mod facts;
mod group;
mod hold;
mod rates;

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::watch;

pub use check::{Publisher, Refusal};
use facts::FactsCache;
pub(crate) use group::Item;

use crate::broker::{self, PublishChannel as Channel, PublishError, Target};
use crate::db::DbError;
use crate::envelope::{Header, OpenPolicy};

/// What happened to a routed envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Published to the recipient organization's queue.
    Forwarded,
    /// Kept for the REST API (a researcher's result or status).
    Stored,
    /// Routed before: dropped.
    Duplicate,
}

impl Routed {
    /// Its name in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Routed::Forwarded => "forwarded",
            Routed::Stored => "stored",
            Routed::Duplicate => "duplicate",
        }
    }
}

/// Why an envelope was not routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The envelope breaks a rule: it is dead-lettered and never retried.
    #[error("refused ({}): {}", .refusal.code, .refusal.message)]
    Refused {
        /// Why.
        refusal: Refusal,
        /// Its header, when it could be read.
        header: Option<Box<Header>>,
    },
    /// The database failed: retry later.
    #[error(transparent)]
    Database(#[from] DbError),
    /// The broker failed or did not confirm: retry later.
    #[error("broker: {0}")]
    Broker(String),
}

impl From<PublishError> for RouteError {
    fn from(e: PublishError) -> Self {
        RouteError::Broker(e.to_string())
    }
}

/// The router's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    db: Pool,
    /// The server's broker user: the validated user id of control messages.
    server_user: String,
    policy: OpenPolicy,
    facts: FactsCache,
    /// Bumped whenever a result is stored, to wake long-polling API requests.
    results: watch::Sender<u64>,
    metrics: crate::metrics::ServerMetrics,
    /// Whether routed envelopes get their transparency-log leaf (`transparency.log_envelopes`).
    log_envelopes: bool,
    /// How fast each broker user may publish.
    rates: rates::PublisherRates,
    /// How many of each publisher's refusals are recorded.
    recorded: rates::DeadLetterBudget,
}

impl Router {
    /// A router over `db` that checks envelopes against the limits of `config` (see
    /// [`policy`]) and bounds each publisher by its rates (`rates.rs`).
    /// `server_user` is the server's broker user, stamped on the control messages it publishes.
    /// `log_envelopes` gives each routed envelope its transparency-log leaf (off only to measure
    /// the log's cost, `transparency.log_envelopes`).
    pub fn new(
        db: Pool,
        config: &crate::config::RouterConfig,
        server_user: String,
        metrics: crate::metrics::ServerMetrics,
        log_envelopes: bool,
    ) -> Self {
        let (results, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                db,
                server_user,
                policy: policy(config),
                facts: FactsCache::default(),
                results,
                metrics,
                log_envelopes,
                rates: rates::PublisherRates::new(config),
                recorded: rates::DeadLetterBudget::new(config),
            }),
        }
    }

    /// A receiver that changes whenever this server stores a result.
    pub fn results_changed(&self) -> watch::Receiver<u64> {
        self.inner.results.subscribe()
    }

    /// When the last job of a researcher's task has reported, tells every node with a job in
    /// the run that the run is over, so they remove its volumes. Best effort: a node that misses
    /// it removes the volume when its time-to-live passes.
    async fn announce_if_run_finished(
        &self,
        db: &tokio_postgres::Client,
        task: crate::ids::TaskId,
        channel: &Channel,
    ) {
        let finished = match crate::db::tasks::finished_run(db, task).await {
            Ok(Some(finished)) => finished,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, %task, "could not check whether the run finished");
                return;
            }
        };
        let (run, orgs) = finished;
        let control = crate::protocol::control::Control::RunFinished { run };
        for org in orgs {
            if let Err(e) = broker::publish_control(channel, &self.inner.server_user, org, &control).await {
                tracing::warn!(error = %e, %org, %run, "could not announce the end of a run");
            }
        }
    }
}

/// Publishes `bytes` unchanged to the recipient's queue and waits for the broker's confirm.
pub(super) async fn forward(channel: &Channel, header: &Header, bytes: &[u8]) -> Result<(), RouteError> {
    let properties = broker::properties::envelope(&header.id.to_string(), header.kind, None);
    let key = broker::org_routing_key(header.recipient);
    // Mandatory: if the recipient's queue does not exist the broker returns the message instead
    // of dropping it, and routing fails (to be retried) rather than losing it.
    let target = Target { exchange: broker::DELIVER_EXCHANGE, routing_key: &key, mandatory: true };
    match channel.publish(target, bytes, properties, None).await {
        Ok(()) => Ok(()),
        Err(PublishError::Unroutable) => {
            // The organization's queue is missing (registered while the broker was unreachable,
            // say): declare it so the retry succeeds.
            broker::declare_org_queue(channel.amqp(), header.recipient)
                .await
                .map_err(|e| RouteError::Broker(e.to_string()))?;
            Err(RouteError::Broker(format!("no queue for organization {}; declared it", header.recipient)))
        }
        Err(e) => Err(e.into()),
    }
}

/// How many times an envelope is tried before it is dead-lettered as undeliverable (database
/// outages excepted: the router holds envelopes through them without counting). Below the
/// broker's own `DELIVERY_LIMIT`, so the router records the reason before RabbitMQ would drop
/// the envelope into the dead-letter queue without one.
pub const MAX_ATTEMPTS: u64 = 5;

/// The envelope checks the router shares with opening.
pub fn policy(config: &crate::config::RouterConfig) -> OpenPolicy {
    OpenPolicy {
        max_len: config.max_envelope_bytes,
        clock_skew: config.clock_skew(),
        ..OpenPolicy::default()
    }
}
