//! Read-only views for the admin dashboard: counts for the overview, the routing log and the
//! dead letters with filters, job timings and the task tree of a run. Every query takes the
//! caller's scope (`None` for root, an organization for its administrators), so what an
//! organization administrator sees is decided here, in SQL, once.

use std::time::SystemTime;

use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::DbError;
use super::tasks::{TASK_COLUMNS, Task, task_from_row};
use crate::contract::DeadLetter;
use crate::ids::{OrgId, RunId, TaskId};
use crate::protocol::TaskStatus;

/// Counts shown on the overview.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Tasks by status.
    pub tasks: Vec<(String, i64)>,
    /// Jobs by status: all of them for root, those at the organization's own nodes for its
    /// administrators.
    pub jobs: Vec<(String, i64)>,
    /// Envelopes routed in the last minute.
    pub routed_last_minute: i64,
    /// Dead letters, all time.
    pub dead_letters: i64,
    /// Dead letters in the last hour.
    pub dead_letters_last_hour: i64,
    /// Envelopes that came to ingress again after being routed, and were dropped.
    pub repeated: i64,
}

/// The overview's counts, in one round trip.
pub async fn counts(db: &impl GenericClient, scope: Option<OrgId>) -> Result<Counts, DbError> {
    let scope = scope.map(|o| *o.as_uuid());
    // Tasks by the status the database keeps for each (migration V7), counted from indexes.
    // Jobs: root sees all of them; an organization's administrator the jobs at their own
    // organization's nodes, which is what they run, and what an index counts without reading
    // every job of their collaborations.
    let statuses = if scope.is_none() {
        "SELECT 'task' AS what, status, count(*) FROM tasks GROUP BY status
         UNION ALL
         SELECT 'job', status, count(*) FROM jobs GROUP BY status"
    } else {
        "SELECT 'task' AS what, status, count(*) FROM tasks
         WHERE collaboration_id IN (SELECT collaboration_id FROM collaboration_members WHERE org_id = $1)
         GROUP BY status
         UNION ALL
         SELECT 'job', status, count(*) FROM jobs WHERE org_id = $1 GROUP BY status"
    };
    let rows = db
        .query(
            &format!(
                "{statuses}
                 UNION ALL
                 SELECT 'routed', NULL, count(*) FROM routing_log r
                 WHERE r.routed_at > now() - interval '1 minute'
                   AND ($1::uuid IS NULL OR r.sender_org = $1 OR r.recipient_org = $1)
                 UNION ALL
                 SELECT 'dead', NULL, count(*) FROM dead_letters d
                 WHERE $1::uuid IS NULL OR d.sender_org = $1 OR d.recipient_org = $1
                 UNION ALL
                 SELECT 'dead_hour', NULL, count(*) FROM dead_letters d
                 WHERE d.received_at > now() - interval '1 hour'
                   AND ($1::uuid IS NULL OR d.sender_org = $1 OR d.recipient_org = $1)
                 UNION ALL
                 SELECT 'repeated', NULL, coalesce(sum(r.count), 0)::bigint FROM repeated_envelopes r
                 WHERE $1::uuid IS NULL OR r.sender_org = $1"
            ),
            &[&scope],
        )
        .await?;
    let mut counts = Counts::default();
    for row in rows {
        let what: &str = row.get(0);
        let status: Option<String> = row.get(1);
        let n: i64 = row.get(2);
        match (what, status) {
            ("task", Some(s)) => counts.tasks.push((s, n)),
            ("job", Some(s)) => counts.jobs.push((s, n)),
            ("routed", _) => counts.routed_last_minute = n,
            ("dead", _) => counts.dead_letters = n,
            ("dead_hour", _) => counts.dead_letters_last_hour = n,
            ("repeated", _) => counts.repeated = n,
            _ => {}
        }
    }
    counts.tasks.sort_by_key(|(s, _)| TaskStatus::ALL.iter().position(|t| t.as_str() == s));
    counts.jobs.sort();
    Ok(counts)
}

/// One routed envelope, as the routing log holds it: metadata and size, no contents.
#[derive(Debug, Clone)]
pub struct Routed {
    /// Message id (hex).
    pub message_id: String,
    /// Kind.
    pub kind: String,
    /// Sending organization.
    pub sender: OrgId,
    /// Receiving organization.
    pub recipient: OrgId,
    /// Task.
    pub task: TaskId,
    /// Run.
    pub run: RunId,
    /// Job status it reported, for statuses and results.
    pub status: Option<String>,
    /// Size in bytes.
    pub size: i32,
    /// `forwarded` or `stored`.
    pub outcome: String,
    /// `broker` or `api`.
    pub via: String,
    /// When.
    pub routed_at: SystemTime,
}

/// Filters of the routing log.
#[derive(Debug, Clone, Default)]
pub struct RoutingFilter {
    /// Only envelopes to or from this organization (the caller's scope).
    pub scope: Option<OrgId>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only envelopes to or from this organization (a search).
    pub organization: Option<OrgId>,
    /// Only this task.
    pub task: Option<TaskId>,
    /// Only message ids starting with these hex digits.
    pub message_prefix: Option<String>,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// The routing log, newest first.
pub async fn routing_log(db: &impl GenericClient, f: &RoutingFilter) -> Result<Vec<Routed>, DbError> {
    let rows = db
        .query(
            "SELECT message_id, kind, sender_org, recipient_org, task_id, run_id, status, size, outcome, via,
                    routed_at
             FROM routing_log
             WHERE ($1::uuid IS NULL OR sender_org = $1 OR recipient_org = $1)
               AND ($2::text IS NULL OR kind = $2)
               AND ($3::uuid IS NULL OR sender_org = $3 OR recipient_org = $3)
               AND ($4::uuid IS NULL OR task_id = $4)
               AND ($5::text IS NULL OR encode(message_id, 'hex') LIKE $5 || '%')
             ORDER BY routed_at DESC, message_id LIMIT $6 OFFSET $7",
            &[
                &f.scope.map(|o| *o.as_uuid()),
                &f.kind,
                &f.organization.map(|o| *o.as_uuid()),
                &f.task.map(|t| *t.as_uuid()),
                &f.message_prefix,
                &f.limit,
                &f.offset,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Routed {
            message_id: hex::encode(r.get::<_, Vec<u8>>(0)),
            kind: r.get(1),
            sender: OrgId::from_uuid(r.get(2)),
            recipient: OrgId::from_uuid(r.get(3)),
            task: TaskId::from_uuid(r.get(4)),
            run: RunId::from_uuid(r.get(5)),
            status: r.get(6),
            size: r.get(7),
            outcome: r.get(8),
            via: r.get(9),
            routed_at: r.get(10),
        })
        .collect())
}

/// Dead letters, newest first, optionally of one reason.
pub async fn dead_letters(
    db: &impl GenericClient,
    scope: Option<OrgId>,
    reason: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<DeadLetter>, DbError> {
    let rows = db
        .query(
            "SELECT message_id, reason_code, reason, kind, sender_org, recipient_org, task_id, publisher, size,
                    received_at
             FROM dead_letters
             WHERE ($1::uuid IS NULL OR sender_org = $1 OR recipient_org = $1)
               AND ($2::text IS NULL OR reason_code = $2)
             ORDER BY received_at DESC, id DESC LIMIT $3 OFFSET $4",
            &[&scope.map(|o| *o.as_uuid()), &reason, &limit, &offset],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| DeadLetter {
            message_id: r.get::<_, Option<Vec<u8>>>(0).map(hex::encode),
            reason_code: r.get(1),
            reason: r.get(2),
            kind: r.get(3),
            sender: r.get::<_, Option<Uuid>>(4).map(OrgId::from_uuid),
            recipient: r.get::<_, Option<Uuid>>(5).map(OrgId::from_uuid),
            task: r.get::<_, Option<Uuid>>(6).map(TaskId::from_uuid),
            publisher: r.get(7),
            size: u64::try_from(r.get::<_, i32>(8)).unwrap_or_default(),
            received_at: r.get(9),
        })
        .collect())
}

/// Dead letters by reason code, most frequent first.
pub async fn dead_letter_reasons(
    db: &impl GenericClient,
    scope: Option<OrgId>,
) -> Result<Vec<(String, i64)>, DbError> {
    let rows = db
        .query(
            "SELECT reason_code, count(*) FROM dead_letters
             WHERE $1::uuid IS NULL OR sender_org = $1 OR recipient_org = $1
             GROUP BY reason_code ORDER BY count(*) DESC, reason_code",
            &[&scope.map(|o| *o.as_uuid())],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// When a job's envelopes passed the router: its `job_start` forwarded, its first `running`
/// status, its result.
#[derive(Debug, Clone)]
pub struct JobTimes {
    /// The job's organization.
    pub organization: OrgId,
    /// The `job_start` was forwarded.
    pub sent: Option<SystemTime>,
    /// The node said it runs.
    pub running: Option<SystemTime>,
    /// The result arrived.
    pub finished: Option<SystemTime>,
}

/// Timings of a task's jobs, from the routing log.
pub async fn job_times(db: &impl GenericClient, task: TaskId) -> Result<Vec<JobTimes>, DbError> {
    let rows = db
        .query(
            "SELECT j.org_id,
                    min(r.routed_at) FILTER (WHERE r.kind = 'job_start' AND r.recipient_org = j.org_id),
                    min(r.routed_at) FILTER (WHERE r.kind = 'job_status' AND r.status = 'running'
                                               AND r.sender_org = j.org_id),
                    min(r.routed_at) FILTER (WHERE r.kind = 'job_result' AND r.sender_org = j.org_id)
             FROM jobs j LEFT JOIN routing_log r ON r.task_id = j.task_id
             WHERE j.task_id = $1 GROUP BY j.org_id",
            &[task.as_uuid()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| JobTimes {
            organization: OrgId::from_uuid(r.get(0)),
            sent: r.get(1),
            running: r.get(2),
            finished: r.get(3),
        })
        .collect())
}

/// Every task of a run, oldest first, with its jobs: the root task and its subtasks.
pub async fn run_tasks(db: &impl GenericClient, run: RunId) -> Result<Vec<Task>, DbError> {
    let rows = db
        .query(
            &format!(
                "SELECT {TASK_COLUMNS} FROM tasks t WHERE t.run_id = $1 ORDER BY t.created_at, t.id LIMIT 500"
            ),
            &[run.as_uuid()],
        )
        .await?;
    Ok(rows.iter().map(task_from_row).collect())
}
