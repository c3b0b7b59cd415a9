//! What the router needs to know about an envelope's parties, and what it records.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::collections::{HashMap, HashSet};

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::DbError;
use crate::contract::RouterRefusal;
use crate::envelope::Header;
use crate::ids::{CollaborationId, MessageId, OrgId, RunId, TaskId};
use crate::keys::PublicKey;
use crate::protocol::JobStatus;

/// The task an envelope names, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFacts {
    /// Its collaboration.
    pub collaboration: CollaborationId,
    /// Its run.
    pub run: RunId,
    /// Its parent, for subtasks.
    pub parent: Option<TaskId>,
    /// The organization that created it.
    pub creator: OrgId,
}

/// Everything the routing decision depends on, read in one query.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The organization of the node whose broker user published the envelope.
    pub publisher_org: Option<OrgId>,
    /// The task named in the header, if it exists.
    pub task: Option<TaskFacts>,
    /// Whether the sender is a member of the task's collaboration.
    pub sender_member: bool,
    /// Whether the recipient is a member of the task's collaboration.
    pub recipient_member: bool,
    /// Whether the sender has a job in the task.
    pub sender_job: bool,
    /// Whether the recipient has a job in the task.
    pub recipient_job: bool,
    /// Whether the sender has a job in any task of the run.
    pub sender_in_run: bool,
    /// Whether the recipient has a job in any task of the run.
    pub recipient_in_run: bool,
    /// The sender's signing key named in the header, if valid for the envelope's creation time.
    pub sender_key: Option<PublicKey>,
}

/// A header timestamp as a `SystemTime`.
pub fn system_time(ts: crate::time::Timestamp) -> SystemTime {
    u64::try_from(ts.as_millis()).map_or(UNIX_EPOCH, |ms| UNIX_EPOCH + Duration::from_millis(ms))
}

/// Reads the facts about `header`. `broker_user` is the validated publisher, if any.
pub async fn facts(
    db: &impl GenericClient,
    header: &Header,
    broker_user: Option<&str>,
) -> Result<Facts, DbError> {
    let publisher_org = match broker_user {
        Some(user) => {
            let statement = db
                .prepare_cached("SELECT org_id FROM nodes WHERE broker_user = $1 AND revoked_at IS NULL")
                .await?;
            db.query_opt(&statement, &[&user]).await?.map(|r| OrgId::from_uuid(r.get(0)))
        }
        None => None,
    };
    let statement = db
        .prepare_cached(
            "SELECT t.collaboration_id, t.run_id, t.parent_task_id, t.creator_org_id,
               EXISTS (SELECT 1 FROM collaboration_members WHERE collaboration_id = t.collaboration_id AND org_id = $2),
               EXISTS (SELECT 1 FROM collaboration_members WHERE collaboration_id = t.collaboration_id AND org_id = $3),
               EXISTS (SELECT 1 FROM jobs WHERE task_id = t.id AND org_id = $2),
               EXISTS (SELECT 1 FROM jobs WHERE task_id = t.id AND org_id = $3),
               EXISTS (SELECT 1 FROM jobs j JOIN tasks r ON r.id = j.task_id WHERE r.run_id = t.run_id AND j.org_id = $2),
               EXISTS (SELECT 1 FROM jobs j JOIN tasks r ON r.id = j.task_id WHERE r.run_id = t.run_id AND j.org_id = $3),
               (SELECT public_key FROM organization_keys
                 WHERE org_id = $2 AND key_id = $4 AND revoked_at IS NULL
                   AND (retired_at IS NULL OR retired_at > $5))
             FROM tasks t WHERE t.id = $1",
        )
        .await?;
    let row = db
        .query_opt(
            &statement,
            &[
                header.task.as_uuid(),
                header.sender.as_uuid(),
                header.recipient.as_uuid(),
                &header.sender_key.as_bytes().as_slice(),
                &system_time(header.created_at),
            ],
        )
        .await?;
    let Some(row) = row else { return Ok(Facts { publisher_org, ..Facts::default() }) };
    Ok(Facts {
        publisher_org,
        task: Some(TaskFacts {
            collaboration: CollaborationId::from_uuid(row.get(0)),
            run: RunId::from_uuid(row.get(1)),
            parent: row.get::<_, Option<Uuid>>(2).map(TaskId::from_uuid),
            creator: OrgId::from_uuid(row.get(3)),
        }),
        sender_member: row.get(4),
        recipient_member: row.get(5),
        sender_job: row.get(6),
        recipient_job: row.get(7),
        sender_in_run: row.get(8),
        recipient_in_run: row.get(9),
        sender_key: row.get::<_, Option<String>>(10).and_then(|k| k.parse().ok()),
    })
}

/// What the router did with an envelope, for the routing log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Published to the recipient's queue.
    Forwarded,
    /// Kept in the results table for the REST API (results and statuses for researchers).
    Stored,
}

impl Outcome {
    /// The routing log's name for it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Stored => "stored",
        }
    }
}

/// One routed envelope, as the routing log records it.
#[derive(Debug, Clone)]
pub struct LogRow<'a> {
    /// Its header.
    pub header: &'a Header,
    /// Its size in bytes.
    pub size: usize,
    /// What the router does with it.
    pub outcome: Outcome,
    /// `broker` or `api`.
    pub via: &'a str,
    /// The validated broker user or API principal that published it.
    pub publisher: &'a str,
    /// Its transparency-log leaf, queued with its row if the row is new (none when the log of
    /// envelopes is off).
    pub leaf: Option<Vec<u8>>,
}

/// Inserts the routing log rows of a group of envelopes in one statement, in the caller's
/// transaction, and returns the message ids that were new (the others were routed before).
///
/// Rows are inserted in message id order, so that two replicas routing overlapping groups (after
/// a redelivery) wait for each other's rows in the same order and never deadlock.
pub async fn insert_log(tx: &impl GenericClient, rows: &[LogRow<'_>]) -> Result<HashSet<MessageId>, DbError> {
    let mut rows: Vec<&LogRow<'_>> = rows.iter().collect();
    rows.sort_by_key(|r| r.header.id);
    let ids: Vec<&[u8]> = rows.iter().map(|r| r.header.id.as_bytes().as_slice()).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.header.kind.as_str()).collect();
    let senders: Vec<&Uuid> = rows.iter().map(|r| r.header.sender.as_uuid()).collect();
    let recipients: Vec<&Uuid> = rows.iter().map(|r| r.header.recipient.as_uuid()).collect();
    let collaborations: Vec<&Uuid> = rows.iter().map(|r| r.header.collaboration.as_uuid()).collect();
    let tasks: Vec<&Uuid> = rows.iter().map(|r| r.header.task.as_uuid()).collect();
    let runs: Vec<&Uuid> = rows.iter().map(|r| r.header.run.as_uuid()).collect();
    let statuses: Vec<Option<&str>> = rows.iter().map(|r| r.header.status.map(|s| s.as_str())).collect();
    let sizes: Vec<i32> = rows.iter().map(|r| i32::try_from(r.size).unwrap_or(i32::MAX)).collect();
    let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
    let vias: Vec<&str> = rows.iter().map(|r| r.via).collect();
    let publishers: Vec<&str> = rows.iter().map(|r| r.publisher).collect();
    let leaves: Vec<Option<&[u8]>> = rows.iter().map(|r| r.leaf.as_deref()).collect();
    // The new rows' transparency-log leaves go in by the same statement: no round trip of their
    // own, and exactly the rows inserted (a repeat's leaf is not queued again).
    let statement = tx
        .prepare_cached(
            "WITH inserted AS (
                 INSERT INTO routing_log (message_id, kind, sender_org, recipient_org, collaboration_id, task_id,
                                          run_id, status, size, outcome, via, publisher)
                 SELECT * FROM unnest($1::bytea[], $2::text[], $3::uuid[], $4::uuid[], $5::uuid[], $6::uuid[],
                                      $7::uuid[], $8::text[], $9::int4[], $10::text[], $11::text[], $12::text[])
                 ON CONFLICT (message_id) DO NOTHING
                 RETURNING message_id),
             logged AS (
                 INSERT INTO transparency_pending (message_id, leaf)
                 SELECT l.id, l.leaf FROM unnest($1::bytea[], $13::bytea[]) AS l(id, leaf)
                 JOIN inserted ON inserted.message_id = l.id
                 WHERE l.leaf IS NOT NULL)
             SELECT message_id FROM inserted",
        )
        .await?;
    let inserted = tx
        .query(
            &statement,
            &[
                &ids,
                &kinds,
                &senders,
                &recipients,
                &collaborations,
                &tasks,
                &runs,
                &statuses,
                &sizes,
                &outcomes,
                &vias,
                &publishers,
                &leaves,
            ],
        )
        .await?;
    Ok(inserted
        .iter()
        .filter_map(|row| <[u8; 16]>::try_from(row.get::<_, &[u8]>(0)).ok().map(MessageId::from_bytes))
        .collect())
}

/// Removes log rows inserted earlier in the caller's transaction, with their transparency-log
/// leaves, for envelopes whose forwarding failed after all: they are routed again when the
/// broker delivers them again.
pub async fn forget(tx: &impl GenericClient, ids: &[MessageId]) -> Result<(), DbError> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes().as_slice()).collect();
    // Their transparency-log leaves go with them: they are logged when they are routed again.
    let statement = tx
        .prepare_cached(
            "WITH forgotten AS (DELETE FROM routing_log WHERE message_id = ANY($1::bytea[]))
             DELETE FROM transparency_pending WHERE message_id = ANY($1::bytea[])",
        )
        .await?;
    tx.execute(&statement, &[&ids]).await?;
    Ok(())
}

/// A job status reported by a routed envelope, with the sealed result for the API when the
/// envelope is a researcher's result.
#[derive(Debug, Clone, Copy)]
pub struct Reported<'a> {
    /// The envelope's header: its task, sender and status name the job and its new state.
    pub header: &'a Header,
    /// The envelope, to keep for the REST API (a `Stored` result), or `None`.
    pub stored_result: Option<&'a [u8]>,
}

/// Applies the job statuses that a group of routed envelopes report, and keeps the results
/// among them for the API, in the caller's transaction (one statement each).
///
/// A job never leaves a terminal state: a late `running` cannot undo `killed`. Of several
/// statuses for one job in a group, a terminal one wins, else the last.
pub async fn apply_reports(tx: &impl GenericClient, reports: &[Reported<'_>]) -> Result<(), DbError> {
    let mut latest: HashMap<(&Uuid, &Uuid), JobStatus> = HashMap::new();
    for report in reports {
        let Some(status) = report.header.status else { continue };
        let job = (report.header.task.as_uuid(), report.header.sender.as_uuid());
        match latest.get(&job) {
            Some(kept) if kept.is_terminal() && !status.is_terminal() => {}
            _ => {
                latest.insert(job, status);
            }
        }
    }
    if !latest.is_empty() {
        let mut jobs: Vec<_> = latest.into_iter().collect();
        // One order for every replica: row locks are taken in it.
        jobs.sort_by_key(|((task, org), _)| (**task, **org));
        let tasks: Vec<&Uuid> = jobs.iter().map(|((task, _), _)| *task).collect();
        let orgs: Vec<&Uuid> = jobs.iter().map(|((_, org), _)| *org).collect();
        let statuses: Vec<&str> = jobs.iter().map(|(_, status)| status.as_str()).collect();
        let statement = tx
            .prepare_cached(
                "UPDATE jobs SET status = u.status, status_changed_at = now()
                 FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS u(task_id, org_id, status)
                 WHERE jobs.task_id = u.task_id AND jobs.org_id = u.org_id
                   AND jobs.status <> ALL($4::text[])",
            )
            .await?;
        let terminal = JobStatus::TERMINAL_NAMES.as_slice();
        tx.execute(&statement, &[&tasks, &orgs, &statuses, &terminal]).await?;
    }
    let results: Vec<(&Header, &[u8])> =
        reports.iter().filter_map(|r| Some((r.header, r.stored_result?))).collect();
    if !results.is_empty() {
        let tasks: Vec<&Uuid> = results.iter().map(|(h, _)| h.task.as_uuid()).collect();
        let orgs: Vec<&Uuid> = results.iter().map(|(h, _)| h.sender.as_uuid()).collect();
        let ids: Vec<&[u8]> = results.iter().map(|(h, _)| h.id.as_bytes().as_slice()).collect();
        let envelopes: Vec<&[u8]> = results.iter().map(|(_, bytes)| *bytes).collect();
        let statement = tx
            .prepare_cached(
                "INSERT INTO results (job_id, message_id, envelope)
                 SELECT j.id, u.message_id, u.envelope
                 FROM unnest($1::uuid[], $2::uuid[], $3::bytea[], $4::bytea[])
                      AS u(task_id, org_id, message_id, envelope)
                 JOIN jobs j ON j.task_id = u.task_id AND j.org_id = u.org_id
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&statement, &[&tasks, &orgs, &ids, &envelopes]).await?;
    }
    Ok(())
}

/// A refused envelope, as recorded.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// What could be read of the header.
    pub header: Option<&'a Header>,
    /// Stable reason code.
    pub code: RouterRefusal,
    /// Reason for people.
    pub reason: &'a str,
    /// The validated broker user that published it, or `api`.
    pub publisher: &'a str,
    /// Its size in bytes.
    pub size: usize,
}

/// Records a refused envelope (never its payload).
pub async fn record_dead_letter(db: &impl GenericClient, d: &DeadLetter<'_>) -> Result<(), DbError> {
    let h = d.header;
    db.execute(
        "INSERT INTO dead_letters (message_id, reason_code, reason, kind, sender_org, recipient_org, task_id,
                                   publisher, size)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &h.map(|h| h.id.as_bytes().to_vec()),
            &d.code.as_str(),
            &d.reason,
            &h.map(|h| h.kind.as_str()),
            &h.map(|h| *h.sender.as_uuid()),
            &h.map(|h| *h.recipient.as_uuid()),
            &h.map(|h| *h.task.as_uuid()),
            &d.publisher,
            &i32::try_from(d.size).unwrap_or(i32::MAX),
        ],
    )
    .await?;
    Ok(())
}

/// Counts `n` envelopes from `sender` that were routed before and came again.
pub async fn count_repeats(db: &impl GenericClient, sender: OrgId, n: i64) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO repeated_envelopes (sender_org, count) VALUES ($1, $2)
         ON CONFLICT (sender_org) DO UPDATE SET count = repeated_envelopes.count + $2, last_at = now()",
        &[sender.as_uuid(), &n],
    )
    .await?;
    Ok(())
}
