//! What the router needs to know about an envelope's parties, and what it records.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::DbError;
use crate::envelope::Header;
use crate::ids::{CollaborationId, OrgId, RunId, TaskId};
use crate::keys::PublicKey;

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
        Some(user) => db
            .query_opt("SELECT org_id FROM nodes WHERE broker_user = $1 AND revoked_at IS NULL", &[&user])
            .await?
            .map(|r| OrgId::from_uuid(r.get(0))),
        None => None,
    };
    let row = db
        .query_opt(
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

/// Records a routed envelope in the caller's transaction: the routing log row, the job status
/// it reports, and (for `Stored` results) the sealed envelope. Returns `false` if the message
/// id was routed before, in which case nothing was written.
pub async fn record(
    tx: &impl GenericClient,
    header: &Header,
    envelope: &[u8],
    outcome: Outcome,
    via: &str,
    publisher: &str,
) -> Result<bool, DbError> {
    let status = header.status.map(|s| s.as_str());
    let inserted = tx
        .execute(
            "INSERT INTO routing_log (message_id, kind, sender_org, recipient_org, collaboration_id, task_id,
                                      run_id, status, size, outcome, via, publisher)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (message_id) DO NOTHING",
            &[
                &header.id.as_bytes().as_slice(),
                &header.kind.as_str(),
                header.sender.as_uuid(),
                header.recipient.as_uuid(),
                header.collaboration.as_uuid(),
                header.task.as_uuid(),
                header.run.as_uuid(),
                &status,
                &i32::try_from(envelope.len()).unwrap_or(i32::MAX),
                &match outcome {
                    Outcome::Forwarded => "forwarded",
                    Outcome::Stored => "stored",
                },
                &via,
                &publisher,
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(false);
    }
    if let Some(status) = status {
        // A job never leaves a terminal state: a late "running" cannot undo "killed".
        tx.execute(
            "UPDATE jobs SET status = $3, status_changed_at = now()
             WHERE task_id = $1 AND org_id = $2
               AND status NOT IN ('completed', 'failed', 'crashed', 'killed', 'refused')",
            &[header.task.as_uuid(), header.sender.as_uuid(), &status],
        )
        .await?;
    }
    if outcome == Outcome::Stored && header.kind == crate::protocol::Kind::JobResult {
        tx.execute(
            "INSERT INTO results (job_id, message_id, envelope)
             SELECT id, $3, $4 FROM jobs WHERE task_id = $1 AND org_id = $2
             ON CONFLICT (job_id) DO NOTHING",
            &[header.task.as_uuid(), header.sender.as_uuid(), &header.id.as_bytes().as_slice(), &envelope],
        )
        .await?;
    }
    Ok(true)
}

/// A refused envelope, as recorded.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// What could be read of the header.
    pub header: Option<&'a Header>,
    /// Stable reason code.
    pub code: &'a str,
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
            &d.code,
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

/// Counts an envelope from `sender` that was routed before and came again.
pub async fn count_repeat(db: &impl GenericClient, sender: OrgId) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO repeated_envelopes (sender_org, count) VALUES ($1, 1)
         ON CONFLICT (sender_org) DO UPDATE SET count = repeated_envelopes.count + 1, last_at = now()",
        &[sender.as_uuid()],
    )
    .await?;
    Ok(())
}
