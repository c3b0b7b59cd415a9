//! The blind router: consumes the ingress queue, reads only envelope headers, checks them, records
//! metadata, and forwards the unchanged bytes to the recipient organization's queue.
//!
//! Delivery guarantees. An ingress message is acknowledged only after everything it caused is
//! durable: the routing-log row and job status committed, the forwarded copy confirmed by the
//! broker. Routing runs inside a transaction whose first statement inserts the message id into
//! the routing log; a redelivered or duplicated envelope finds the id and is dropped, and two
//! replicas handling copies of one envelope serialize on that row. If a server dies after the
//! broker confirmed the forwarded copy but before the commit, the redelivery forwards it again;
//! the receiving node's replay guard drops that copy.

pub mod check;
mod consumer;
mod dead_letter;
mod facts;
mod hold;

use std::sync::Arc;

use deadpool_postgres::Pool;
use lapin::BasicProperties;
use tokio::sync::watch;

pub use check::{Publisher, Refusal};
use facts::FactsCache;

use crate::broker::{self, PublishChannel as Channel, PublishError, Target};
use crate::envelope::{FormatError, Header, OpenPolicy, parse};
use crate::server::db::{DbError, routing};
use crate::time::Timestamp;

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
    metrics: crate::server::metrics::ServerMetrics,
}

impl Router {
    /// A router over `db` that checks envelopes against `policy` (its `max_len` and
    /// `clock_skew`).
    /// `server_user` is the server's broker user, stamped on the control messages it publishes.
    pub fn new(
        db: Pool,
        policy: OpenPolicy,
        server_user: String,
        metrics: crate::server::metrics::ServerMetrics,
    ) -> Self {
        let (results, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                db,
                server_user,
                policy,
                facts: FactsCache::default(),
                results,
                metrics,
            }),
        }
    }

    /// A receiver that changes whenever this server stores a result.
    pub fn results_changed(&self) -> watch::Receiver<u64> {
        self.inner.results.subscribe()
    }

    /// Routes one envelope published by `publisher` (`publisher_name` goes into the log),
    /// publishing forwarded copies on `channel` (in confirm mode).
    pub async fn route(
        &self,
        bytes: &[u8],
        publisher: Publisher,
        publisher_name: &str,
        channel: &Channel,
    ) -> Result<Routed, RouteError> {
        let started = std::time::Instant::now();
        let result = self.route_once(bytes, publisher, publisher_name, channel).await;
        let metrics = &self.inner.metrics;
        match &result {
            Ok((routed, kind)) => {
                let outcome = match routed {
                    Routed::Forwarded => "forwarded",
                    Routed::Stored => "stored",
                    Routed::Duplicate => "duplicate",
                };
                metrics.routed(*kind, outcome, started.elapsed());
            }
            Err(RouteError::Refused { refusal, .. }) => metrics.refused(refusal.code),
            Err(_) => {}
        }
        result.map(|(routed, _)| routed)
    }

    async fn route_once(
        &self,
        bytes: &[u8],
        publisher: Publisher,
        publisher_name: &str,
        channel: &Channel,
    ) -> Result<(Routed, crate::protocol::Kind), RouteError> {
        let parsed = parse(bytes, self.inner.policy.max_len).map_err(|e| {
            let code = if matches!(e, FormatError::TooLarge { .. }) { "too_large" } else { "malformed" };
            RouteError::Refused { refusal: Refusal::new(code, e.to_string()), header: None }
        })?;
        let header = &parsed.header;
        let mut client = self.inner.db.get().await.map_err(DbError::from)?;
        let broker_user = matches!(publisher, Publisher::Node(_)).then_some(publisher_name);
        let facts = self.inner.facts.get_or_read(&client, header, broker_user).await?;
        let publisher = match publisher {
            Publisher::Node(_) => Publisher::Node(facts.publisher_org),
            api => api,
        };
        let outcome = check::decide(&parsed, publisher, &facts, &self.inner.policy, Timestamp::now())
            .map_err(|refusal| RouteError::Refused { refusal, header: Some(Box::new(header.clone())) })?;

        let tx = client.transaction().await.map_err(DbError::from)?;
        let via = if matches!(publisher, Publisher::Api(_)) { "api" } else { "broker" };
        if !routing::record(&*tx, header, bytes, outcome, via, publisher_name).await? {
            tx.rollback().await.map_err(DbError::from)?;
            // Dropped, but not silently: operators see repeats per sender on the dashboard.
            routing::count_repeat(&**client, header.sender).await?;
            return Ok((Routed::Duplicate, header.kind));
        }
        if outcome == routing::Outcome::Forwarded {
            forward(channel, header, bytes).await?;
        }
        tx.commit().await.map_err(DbError::from)?;
        let routed = match outcome {
            routing::Outcome::Forwarded => Routed::Forwarded,
            routing::Outcome::Stored => {
                self.inner.results.send_modify(|n| *n = n.wrapping_add(1));
                if header.kind == crate::protocol::Kind::JobResult {
                    self.announce_if_run_finished(&client, header.task, channel).await;
                }
                Routed::Stored
            }
        };
        Ok((routed, header.kind))
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
        let finished = match crate::server::db::tasks::finished_run(db, task).await {
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
async fn forward(channel: &Channel, header: &Header, bytes: &[u8]) -> Result<(), RouteError> {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(header.id.to_string().as_str().into())
        .with_type(header.kind.as_str().into());
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
pub fn policy(config: &crate::server::config::RouterConfig) -> OpenPolicy {
    OpenPolicy {
        max_len: config.max_envelope_bytes,
        clock_skew: config.clock_skew(),
        ..OpenPolicy::default()
    }
}
