//! Group commit: the envelopes that are in flight together are routed as one group, with one
//! transaction and one statement per step instead of three round trips and a transaction each.
//!
//! For a group: each envelope is parsed and checked alone (a refusal is that envelope's own);
//! then, in one transaction, one insert of every routing-log row tells which envelopes are new,
//! the new ones to forward are published together and their confirms awaited, the rows of any
//! whose publish failed are removed again, the job statuses and stored results are applied in
//! one statement each, and the transaction commits. Only then does the caller acknowledge. A
//! group is never made to wait for more traffic: the consumer takes what has arrived, so light
//! traffic routes in groups of one.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::GenericClient;
use futures_util::future::join_all;

use super::{Publisher, Refusal, RouteError, Routed, Router, forward};
use crate::broker::PublishChannel as Channel;
use crate::contract::RouterRefusal;
use crate::db::{DbError, routing, transparency};
use crate::envelope::{FormatError, Parsed, parse};
use crate::ids::{MessageId, OrgId, TaskId};
use crate::protocol::Kind;
use crate::time::Timestamp;

/// One envelope of a group, as it came in.
#[derive(Debug, Clone)]
pub(crate) struct Item<'a> {
    /// The envelope.
    pub bytes: &'a [u8],
    /// The envelope already parsed by whoever handed it in (the API's checks), so that it is
    /// parsed once; `None` to have the router parse it.
    pub parsed: Option<Parsed<'a>>,
    /// Who published it (a node's organization is looked up from `publisher_name`).
    pub publisher: Publisher,
    /// The validated broker user or the API principal; `None` for a broker message published
    /// without a validated user id.
    pub publisher_name: Option<&'a str>,
}

/// What became of one envelope of a group, with its kind when its header could be read.
pub(crate) type ItemResult = Result<(Routed, Kind), RouteError>;

/// An envelope that passed every check, with what the router does with it.
struct Accepted<'a> {
    index: usize,
    parsed: Parsed<'a>,
    outcome: routing::Outcome,
}

/// A group after its checks: the refused (and repeated) envelopes' results, and the accepted.
pub(crate) struct Checked<'a> {
    results: Vec<Option<ItemResult>>,
    accepted: Vec<Accepted<'a>>,
    repeats: HashMap<OrgId, i64>,
    started: std::time::Instant,
}

/// A group recorded in a transaction not yet committed: every item's result, and what to do
/// once the transaction has committed.
struct Recorded {
    results: Vec<Option<ItemResult>>,
    repeats: HashMap<OrgId, i64>,
    stored_results: HashSet<TaskId>,
    started: std::time::Instant,
}

impl Router {
    /// Routes a group of envelopes, publishing forwarded copies on `channel` (in confirm mode).
    /// Returns one result per item, in order, or the database error that stopped the whole
    /// group (nothing of it was committed; it may be routed again as it is).
    pub(crate) async fn route_group(
        &self,
        items: &[Item<'_>],
        channel: &Channel,
    ) -> Result<Vec<ItemResult>, DbError> {
        let started = std::time::Instant::now();
        let mut client = self.inner.db.get().await?;
        // Timed from before the connection was taken, as the routing histogram always was.
        let checked = Checked { started, ..self.check_all(&client, true, items).await? };
        self.forward_checked(&mut client, items, checked, channel).await
    }

    /// Checks the `job_start` envelopes of a task being created (or created by an earlier try
    /// of the same request) inside the task's own transaction `tx`, whose facts see the new
    /// task; they are never cached (`tx` may yet roll back). All or nothing: the first refusal,
    /// if any envelope is refused. Nothing is recorded or published here: the caller commits
    /// the task first, then [`forwards`](Router::forward_checked) them, so that a node's answer
    /// never finds the server without the task.
    pub(crate) async fn check_task<'a>(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        items: &[Item<'a>],
    ) -> Result<Result<Checked<'a>, Refusal>, DbError> {
        let checked = self.check_all(tx, false, items).await?;
        let refused = checked.results.iter().flatten().find_map(|r| match r {
            Err(RouteError::Refused { refusal, .. }) => Some(refusal.clone()),
            _ => None,
        });
        if let Some(refusal) = refused {
            self.inner.metrics.refused(refusal.code.as_str());
            return Ok(Err(refusal));
        }
        Ok(Ok(checked))
    }

    /// Records and forwards a checked group in one transaction on `client` (none if nothing was
    /// accepted), then does the bookkeeping that follows the commit. One result per item, in
    /// order, or the database error that stopped the whole group (nothing of it was committed;
    /// it may be routed again as it is).
    pub(crate) async fn forward_checked(
        &self,
        client: &mut deadpool_postgres::Client,
        items: &[Item<'_>],
        checked: Checked<'_>,
        channel: &Channel,
    ) -> Result<Vec<ItemResult>, DbError> {
        let recorded = if checked.accepted.is_empty() {
            Recorded {
                results: checked.results,
                repeats: checked.repeats,
                stored_results: HashSet::new(),
                started: checked.started,
            }
        } else {
            let tx = client.transaction().await?;
            let recorded = self.record(&tx, items, checked, channel).await?;
            tx.commit().await?;
            recorded
        };
        Ok(self.settle_group(client, recorded, channel).await)
    }

    /// Checks each envelope alone, reading its facts through `db` (from the cache, when
    /// `cached`).
    async fn check_all<'a>(
        &self,
        db: &impl GenericClient,
        cached: bool,
        items: &[Item<'a>],
    ) -> Result<Checked<'a>, DbError> {
        let started = std::time::Instant::now();
        let now = Timestamp::now();
        let mut results: Vec<Option<ItemResult>> = (0..items.len()).map(|_| None).collect();
        let mut accepted: Vec<Accepted<'_>> = Vec::with_capacity(items.len());
        let mut in_group: HashSet<MessageId> = HashSet::with_capacity(items.len());
        let mut repeats: HashMap<OrgId, i64> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            match self.check(db, cached, item, now).await? {
                Err(e) => results[index] = Some(Err(e)),
                // The same envelope twice in one group: the second is a repeat like any other.
                Ok((parsed, _)) if !in_group.insert(parsed.header.id) => {
                    *repeats.entry(parsed.header.sender).or_default() += 1;
                    results[index] = Some(Ok((Routed::Duplicate, parsed.header.kind)));
                }
                Ok((parsed, outcome)) => accepted.push(Accepted { index, parsed, outcome }),
            }
        }
        Ok(Checked { results, accepted, repeats, started })
    }

    /// In `tx`: one insert of every routing-log row tells which envelopes are new; the new ones
    /// to forward are published together and their confirms awaited; the rows of any whose
    /// publish failed are removed again; job statuses and stored results are applied.
    async fn record(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        items: &[Item<'_>],
        checked: Checked<'_>,
        channel: &Channel,
    ) -> Result<Recorded, DbError> {
        let Checked { mut results, accepted, mut repeats, started } = checked;
        let mut stored_results: HashSet<TaskId> = HashSet::new();
        let rows: Vec<routing::LogRow<'_>> = accepted
            .iter()
            .map(|a| routing::LogRow {
                header: &a.parsed.header,
                size: items[a.index].bytes.len(),
                outcome: a.outcome,
                via: match items[a.index].publisher {
                    Publisher::Api(_) => "api",
                    Publisher::Node(_) => "broker",
                },
                publisher: items[a.index].publisher_name.unwrap_or(""),
                leaf: self
                    .inner
                    .log_envelopes
                    .then(|| transparency::envelope(&a.parsed.header, items[a.index].bytes)),
            })
            .collect();
        let new = routing::insert_log(tx, &rows).await?;
        // Publish every new forwarded copy at once; the confirms come back together.
        let forwarded: Vec<&Accepted<'_>> = accepted
            .iter()
            .filter(|a| a.outcome == routing::Outcome::Forwarded && new.contains(&a.parsed.header.id))
            .collect();
        let published =
            join_all(forwarded.iter().map(|a| forward(channel, &a.parsed.header, items[a.index].bytes)))
                .await;
        let mut failed: HashMap<usize, RouteError> = HashMap::new();
        for (a, outcome) in forwarded.iter().zip(published) {
            if let Err(e) = outcome {
                failed.insert(a.index, e);
            }
        }
        let forgotten: Vec<MessageId> =
            accepted.iter().filter(|a| failed.contains_key(&a.index)).map(|a| a.parsed.header.id).collect();
        routing::forget(tx, &forgotten).await?;
        let reports: Vec<routing::Reported<'_>> = accepted
            .iter()
            .filter(|a| new.contains(&a.parsed.header.id) && !failed.contains_key(&a.index))
            .filter(|a| a.parsed.header.status.is_some() || a.outcome == routing::Outcome::Stored)
            .map(|a| routing::Reported {
                header: &a.parsed.header,
                stored_result: (a.outcome == routing::Outcome::Stored
                    && a.parsed.header.kind == Kind::JobResult)
                    .then_some(items[a.index].bytes),
            })
            .collect();
        routing::apply_reports(tx, &reports).await?;

        for a in &accepted {
            let header = &a.parsed.header;
            results[a.index] = Some(if let Some(e) = failed.remove(&a.index) {
                Err(e)
            } else if !new.contains(&header.id) {
                // Dropped, but not silently: operators see repeats per sender on the dashboard.
                *repeats.entry(header.sender).or_default() += 1;
                Ok((Routed::Duplicate, header.kind))
            } else if a.outcome == routing::Outcome::Stored {
                if header.kind == Kind::JobResult {
                    stored_results.insert(header.task);
                }
                Ok((Routed::Stored, header.kind))
            } else {
                Ok((Routed::Forwarded, header.kind))
            });
        }
        Ok(Recorded { results, repeats, stored_results, started })
    }

    /// After the commit: what follows is bookkeeping, and its failure loses nothing. Returns one
    /// result per item, in order.
    async fn settle_group(
        &self,
        client: &deadpool_postgres::Client,
        recorded: Recorded,
        channel: &Channel,
    ) -> Vec<ItemResult> {
        let Recorded { results, repeats, stored_results, started } = recorded;
        for (sender, n) in repeats {
            if let Err(e) = routing::count_repeats(client, sender, n).await {
                tracing::warn!(error = %e, %sender, "could not count repeated envelopes");
            }
        }
        let results: Vec<ItemResult> =
            results.into_iter().map(|r| r.expect("every item of the group has a result")).collect();
        if results.iter().any(|r| matches!(r, Ok((Routed::Stored, _)))) {
            self.inner.results.send_modify(|n| *n = n.wrapping_add(1));
        }
        for task in stored_results {
            self.announce_if_run_finished(client, task, channel).await;
        }
        let elapsed = started.elapsed();
        for result in &results {
            match result {
                Ok((routed, kind)) => self.inner.metrics.routed(*kind, routed.as_str(), elapsed),
                Err(RouteError::Refused { refusal, .. }) => self.inner.metrics.refused(refusal.code.as_str()),
                Err(_) => {}
            }
        }
        results
    }

    /// Parses and checks one envelope on its own: what the router would do with it, or why it
    /// is refused. Fails only when the database does.
    async fn check<'a>(
        &self,
        db: &impl GenericClient,
        cached: bool,
        item: &Item<'a>,
        now: Timestamp,
    ) -> Result<Result<(Parsed<'a>, routing::Outcome), RouteError>, DbError> {
        let (publisher, broker_user) = match (item.publisher, item.publisher_name) {
            (Publisher::Node(_), None) => {
                let refusal =
                    Refusal::new(RouterRefusal::MissingUserId, "published without a validated user id");
                return Ok(Err(RouteError::Refused { refusal, header: None }));
            }
            (Publisher::Node(_), Some(user)) => (item.publisher, Some(user)),
            (api @ Publisher::Api(_), _) => (api, None),
        };
        // Before anything else, parsing included: a flood costs the router as little as can be.
        if let Some(user) = broker_user
            && !self.inner.rates.admit(user, item.bytes.len())
        {
            let refusal = Refusal::new(
                RouterRefusal::RateLimited,
                format!(
                    "{user} publishes faster than router.publisher_envelopes_per_sec / publisher_mib_per_sec allow"
                ),
            );
            return Ok(Err(RouteError::Refused { refusal, header: None }));
        }
        let parsed =
            match item.parsed.clone().map_or_else(|| parse(item.bytes, self.inner.policy.max_len), Ok) {
                Ok(parsed) => parsed,
                Err(e) => {
                    let code = if matches!(e, FormatError::TooLarge { .. }) {
                        RouterRefusal::TooLarge
                    } else {
                        RouterRefusal::Malformed
                    };
                    let refusal = Refusal::new(code, e.to_string());
                    return Ok(Err(RouteError::Refused { refusal, header: None }));
                }
            };
        let facts = if cached {
            self.inner.facts.get_or_read(db, &parsed.header, broker_user).await?
        } else {
            routing::facts(db, &parsed.header, broker_user).await?
        };
        let publisher = match publisher {
            Publisher::Node(_) => Publisher::Node(facts.publisher_org),
            api => api,
        };
        Ok(match super::check::decide(&parsed, publisher, &facts, &self.inner.policy, now) {
            Ok(outcome) => Ok((parsed, outcome)),
            Err(refusal) => {
                let header = Some(Box::new(parsed.header.clone()));
                Err(RouteError::Refused { refusal, header })
            }
        })
    }
}
