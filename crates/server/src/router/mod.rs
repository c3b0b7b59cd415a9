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

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use tokio::sync::{Semaphore, watch};

pub use check::{Publisher, Refusal};

use crate::broker::{self, BrokerError, Consumer, Delivery, PublishChannel as Channel, PublishError, Target};
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

    /// Routes what `consumer` (of the ingress queue) delivers until `shutdown` turns true or the
    /// connection fails. At most `concurrency` envelopes are in flight (the consumer's prefetch
    /// should be the same). Returns when every envelope in flight has been settled.
    pub async fn consume(
        &self,
        mut consumer: Consumer,
        concurrency: u16,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), BrokerError> {
        let slots = Arc::new(Semaphore::new(usize::from(concurrency)));
        let result = loop {
            let delivery = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break Ok(()),
                next = consumer.next() => next,
            };
            let delivery = match delivery {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            };
            let permit = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
            let router = self.clone();
            let channel = consumer.channel().clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                router.handle(delivery, &channel, shutdown).await;
                drop(permit);
            });
        };
        // Let in-flight envelopes finish before the caller closes the channel.
        let _ = slots.acquire_many(u32::from(concurrency)).await;
        result
    }

    #[tracing::instrument(skip_all, fields(tag = delivery.tag))]
    async fn handle(&self, delivery: Delivery, channel: &Channel, mut shutdown: watch::Receiver<bool>) {
        let publisher_name = delivery.user_id.clone();
        let route = || async {
            match &publisher_name {
                Some(user) => self.route(&delivery.data, Publisher::Node(None), user, channel).await,
                None => Err(RouteError::Refused {
                    refusal: Refusal::new("missing_user_id", "published without a validated user id"),
                    header: None,
                }),
            }
        };
        let mut result = route().await;
        // While the database is unreachable, hold the delivery and retry in place.
        let mut hold = Hold::default();
        while matches!(result, Err(RouteError::Database(_))) {
            match self.hold(&mut hold, channel, &mut shutdown).await {
                HoldOutcome::Retry => result = route().await,
                HoldOutcome::Proceed => break,
                // The broker requeued the delivery when the channel closed.
                HoldOutcome::ChannelClosed => return,
            }
        }
        let result = match result {
            // A failure of this envelope, not of the database or broker as a whole (a recipient
            // queue that refuses it, say): retried a few times, then dead-lettered with the
            // reason, so one bad envelope never circles forever.
            Err(e)
                if !matches!(e, RouteError::Refused { .. })
                    && delivery.delivery_count + 1 >= MAX_ATTEMPTS =>
            {
                Err(RouteError::Refused {
                    refusal: Refusal::new(
                        "undeliverable",
                        format!("routing failed {MAX_ATTEMPTS} times; last error: {e}"),
                    ),
                    header: parse(&delivery.data, self.inner.policy.max_len).ok().map(|p| Box::new(p.header)),
                })
            }
            other => other,
        };
        let publisher_name = publisher_name.as_deref().unwrap_or("");
        let settled = match result {
            Ok(routed) => {
                tracing::debug!(?routed, "routed");
                delivery.acker.ack().await
            }
            Err(RouteError::Refused { refusal, header }) => {
                tracing::warn!(code = refusal.code, reason = %refusal.message, "envelope refused");
                let dead_letter =
                    || self.dead_letter(channel, &delivery.data, &refusal, header.as_deref(), publisher_name);
                let mut recorded = dead_letter().await;
                // Recording the refusal needs the database too: hold through an outage rather
                // than requeue toward the broker's delivery limit.
                let mut hold = Hold::default();
                while matches!(recorded, Err(RouteError::Database(_))) {
                    match self.hold(&mut hold, channel, &mut shutdown).await {
                        HoldOutcome::Retry => recorded = dead_letter().await,
                        HoldOutcome::Proceed => break,
                        HoldOutcome::ChannelClosed => return,
                    }
                }
                match recorded {
                    Ok(()) => delivery.acker.ack().await,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not dead-letter; will retry");
                        retry_later(&delivery).await
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "routing failed; will retry");
                retry_later(&delivery).await
            }
        };
        if let Err(e) = settled {
            // The channel is gone; the broker redelivers the message to another consumer.
            tracing::warn!(error = %e, "could not settle a delivery");
        }
    }

    /// One step of holding a delivery while the database is unreachable: waits (with growing
    /// pauses) unless the database answers, the server stops or the channel closed. At most
    /// `concurrency` envelopes wait here; the broker sees neither ack nor nack, so the envelope
    /// is neither lost nor counted as a failed delivery.
    async fn hold(
        &self,
        hold: &mut Hold,
        channel: &Channel,
        shutdown: &mut watch::Receiver<bool>,
    ) -> HoldOutcome {
        if self.database_answers().await {
            return HoldOutcome::Proceed;
        }
        if !hold.warned {
            tracing::warn!("the database is unreachable; holding envelopes until it answers");
            hold.warned = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(hold.pause) => {}
            _ = shutdown.wait_for(|stop| *stop) => return HoldOutcome::Proceed,
        }
        if !channel.is_open() {
            return HoldOutcome::ChannelClosed;
        }
        hold.pause = (hold.pause * 2).min(Duration::from_secs(5));
        HoldOutcome::Retry
    }

    /// Whether the database answers a trivial query within two seconds.
    async fn database_answers(&self) -> bool {
        let probe = async {
            let client = self.inner.db.get().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        };
        matches!(tokio::time::timeout(Duration::from_secs(2), probe).await, Ok(Some(_)))
    }

    async fn dead_letter(
        &self,
        channel: &Channel,
        bytes: &[u8],
        refusal: &Refusal,
        header: Option<&Header>,
        publisher: &str,
    ) -> Result<(), RouteError> {
        let client = self.inner.db.get().await.map_err(DbError::from)?;
        let record = routing::DeadLetter {
            header,
            code: refusal.code,
            reason: &refusal.message,
            publisher,
            size: bytes.len(),
        };
        routing::record_dead_letter(&**client, &record).await?;
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from(broker::REASON_CODE_HEADER),
            AMQPValue::LongString(refusal.code.into()),
        );
        headers.insert(
            ShortString::from(broker::REASON_HEADER),
            AMQPValue::LongString(refusal.message.as_str().into()),
        );
        headers.insert(ShortString::from(broker::PUBLISHER_HEADER), AMQPValue::LongString(publisher.into()));
        headers.insert(ShortString::from(broker::SIZE_HEADER), AMQPValue::LongLongInt(bytes.len() as i64));
        let properties = BasicProperties::default().with_delivery_mode(2).with_headers(headers);
        // The header block only: what an operator needs to see who sent what, not a copy of a
        // payload that a flooding publisher would make the broker store twice.
        let kept = &bytes[..bytes.len().min(broker::DEAD_LETTER_KEEP_BYTES)];
        channel
            .publish(Target::exchange(broker::DEAD_EXCHANGE), kept, properties, None)
            .await
            .map_err(|e| RouteError::Broker(format!("dead letter not confirmed: {e}")))?;
        self.inner.metrics.dead_lettered(refusal.code);
        Ok(())
    }
}

/// Routing facts read recently, by everything they depend on.
///
/// Traffic within a run repeats the same (task, sender, recipient, key, publisher) many times,
/// and reading the facts is the router's most expensive query. Cached facts are at most
/// `FACTS_TTL` old, so a membership change, a key retirement or a node revocation reaches
/// routing within that time (a revoked node is cut off at the broker at once anyway).
#[derive(Default)]
struct FactsCache {
    entries: std::sync::Mutex<std::collections::HashMap<FactsKey, (tokio::time::Instant, routing::Facts)>>,
}

type FactsKey =
    (crate::ids::TaskId, crate::ids::OrgId, crate::ids::OrgId, crate::keys::KeyId, Option<String>, i64);

const FACTS_TTL: Duration = Duration::from_secs(5);
const FACTS_MAX: usize = 10_000;

impl FactsCache {
    async fn get_or_read(
        &self,
        db: &tokio_postgres::Client,
        header: &Header,
        broker_user: Option<&str>,
    ) -> Result<routing::Facts, DbError> {
        // The signing key's validity depends on the creation time, so it is part of the key
        // (to the second: envelopes of one burst share it).
        let key: FactsKey = (
            header.task,
            header.sender,
            header.recipient,
            header.sender_key,
            broker_user.map(str::to_owned),
            header.created_at.as_millis() / 1000,
        );
        let now = tokio::time::Instant::now();
        if let Some((at, facts)) = self.entries.lock().expect("not poisoned").get(&key)
            && now.duration_since(*at) < FACTS_TTL
        {
            return Ok(facts.clone());
        }
        let facts = routing::facts(db, header, broker_user).await?;
        // Only facts about an existing task are kept: a task created a moment later must be
        // routable at once.
        if facts.task.is_some() {
            let mut entries = self.entries.lock().expect("not poisoned");
            if entries.len() >= FACTS_MAX {
                entries.retain(|_, (at, _)| now.duration_since(*at) < FACTS_TTL);
                if entries.len() >= FACTS_MAX {
                    entries.clear();
                }
            }
            entries.insert(key, (now, facts.clone()));
        }
        Ok(facts)
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

/// The state of holding one delivery through a database outage.
struct Hold {
    pause: Duration,
    warned: bool,
}

impl Default for Hold {
    fn default() -> Self {
        Self { pause: Duration::from_millis(250), warned: false }
    }
}

/// What to do after a step of holding.
enum HoldOutcome {
    /// The database may be back: try again.
    Retry,
    /// The database answers (the failure is the envelope's own) or the server stops: settle
    /// the delivery as usual.
    Proceed,
    /// The channel closed: the broker has requeued the delivery already.
    ChannelClosed,
}

/// How many times an envelope is tried before it is dead-lettered as undeliverable (database
/// outages excepted: the router holds envelopes through them without counting). Below the
/// broker's own `DELIVERY_LIMIT`, so the router records the reason before RabbitMQ would drop
/// the envelope into the dead-letter queue without one.
pub const MAX_ATTEMPTS: u64 = 5;

/// Returns a delivery to the queue after a pause, so a database outage holds traffic instead of
/// spinning on it.
async fn retry_later(delivery: &Delivery) -> Result<(), BrokerError> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    delivery.acker.requeue().await
}

/// The envelope checks the router shares with opening.
pub fn policy(config: &crate::server::config::RouterConfig) -> OpenPolicy {
    OpenPolicy {
        max_len: config.max_envelope_bytes,
        clock_skew: config.clock_skew(),
        ..OpenPolicy::default()
    }
}
