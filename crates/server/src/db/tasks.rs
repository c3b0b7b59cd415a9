//! Tasks, their jobs, and sealed results.

use std::time::SystemTime;

use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::DbError;
use crate::ids::{CollaborationId, JobId, NodeId, OrgId, RunId, TaskId};
use crate::protocol::JobStatus;

pub use crate::contract::{Job, Task};

/// What is needed to insert a task.
#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    /// Identifier chosen by the client (it sealed the inputs under it).
    pub id: TaskId,
    /// Collaboration.
    pub collaboration: CollaborationId,
    /// Run.
    pub run: RunId,
    /// Parent task, for subtasks.
    pub parent: Option<TaskId>,
    /// Algorithm image.
    pub image: &'a str,
    /// Free-form name.
    pub name: &'a str,
    /// Creating organization.
    pub creator_org: OrgId,
    /// Creating user.
    pub creator_user: Option<crate::ids::UserId>,
    /// Creating node.
    pub creator_node: Option<NodeId>,
    /// Jobs: (job id, organization).
    pub jobs: &'a [(JobId, OrgId)],
}

pub(crate) fn parse_status(s: &str) -> JobStatus {
    match s {
        "delivered" => JobStatus::Delivered,
        "running" => JobStatus::Running,
        "completed" => JobStatus::Completed,
        "failed" => JobStatus::Failed,
        "crashed" => JobStatus::Crashed,
        "killed" => JobStatus::Killed,
        "refused" => JobStatus::Refused,
        // The column's CHECK constraint allows nothing else.
        _ => JobStatus::Pending,
    }
}

/// Inserts a task and its jobs in one transaction (inside the caller's transaction).
pub async fn insert(tx: &impl GenericClient, task: &NewTask<'_>) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO tasks (id, collaboration_id, run_id, parent_task_id, image, name, creator_org_id,
                            creator_user_id, creator_node_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            task.id.as_uuid(),
            task.collaboration.as_uuid(),
            task.run.as_uuid(),
            &task.parent.map(|p| *p.as_uuid()),
            &task.image,
            &task.name,
            task.creator_org.as_uuid(),
            &task.creator_user.map(|u| *u.as_uuid()),
            &task.creator_node.map(|n| *n.as_uuid()),
        ],
    )
    .await?;
    for (job, org) in task.jobs {
        tx.execute(
            "INSERT INTO jobs (id, task_id, org_id) VALUES ($1, $2, $3)",
            &[job.as_uuid(), task.id.as_uuid(), org.as_uuid()],
        )
        .await?;
    }
    Ok(())
}

pub(crate) const TASK_COLUMNS: &str =
    "t.id, t.collaboration_id, t.run_id, t.parent_task_id, t.image, t.name, t.creator_org_id,
     t.creator_user_id, t.creator_node_id, t.created_at,
     coalesce((SELECT json_agg(json_build_object(
                 'id', j.id, 'organization', j.org_id, 'organization_name', o.name, 'status', j.status,
                 'changed_ms', (extract(epoch FROM j.status_changed_at) * 1000)::bigint) ORDER BY j.org_id)
               FROM jobs j JOIN organizations o ON o.id = j.org_id WHERE j.task_id = t.id), '[]') AS jobs";

pub(crate) fn task_from_row(row: &tokio_postgres::Row) -> Task {
    let jobs: serde_json::Value = row.get("jobs");
    let jobs = jobs
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .filter_map(|j| {
                    Some(Job {
                        id: j["id"].as_str()?.parse().ok()?,
                        organization: j["organization"].as_str()?.parse().ok()?,
                        organization_name: j["organization_name"].as_str().unwrap_or_default().to_owned(),
                        status: parse_status(j["status"].as_str()?),
                        status_changed_at: SystemTime::UNIX_EPOCH
                            + std::time::Duration::from_millis(j["changed_ms"].as_u64().unwrap_or(0)),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Task {
        id: TaskId::from_uuid(row.get("id")),
        collaboration: CollaborationId::from_uuid(row.get("collaboration_id")),
        run: RunId::from_uuid(row.get("run_id")),
        parent: row.get::<_, Option<Uuid>>("parent_task_id").map(TaskId::from_uuid),
        image: row.get("image"),
        name: row.get("name"),
        creator_organization: OrgId::from_uuid(row.get("creator_org_id")),
        creator_user: row.get::<_, Option<Uuid>>("creator_user_id").map(crate::ids::UserId::from_uuid),
        creator_node: row.get::<_, Option<Uuid>>("creator_node_id").map(NodeId::from_uuid),
        created_at: row.get("created_at"),
        jobs,
    }
}

/// One task with its jobs.
pub async fn get(db: &impl GenericClient, id: TaskId) -> Result<Option<Task>, DbError> {
    let row =
        db.query_opt(&format!("SELECT {TASK_COLUMNS} FROM tasks t WHERE t.id = $1"), &[id.as_uuid()]).await?;
    Ok(row.as_ref().map(task_from_row))
}

/// Filters of the task list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only tasks visible to this organization (in its collaborations); `None` for all.
    pub visible_to: Option<OrgId>,
    /// Only this collaboration.
    pub collaboration: Option<CollaborationId>,
    /// Only tasks with a job at this organization.
    pub organization: Option<OrgId>,
    /// Only tasks with a job in this status.
    pub status: Option<JobStatus>,
    /// Only tasks in this overall status.
    pub task_status: Option<crate::protocol::TaskStatus>,
    /// Only tasks of this run (its root task and subtasks).
    pub run: Option<RunId>,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// Tasks, newest first.
pub async fn list(db: &impl GenericClient, f: &TaskFilter) -> Result<Vec<Task>, DbError> {
    let rows = db
        .query(
            &format!(
                // The page is chosen first, by id from the (created_at, id) index alone where no
                // filter needs the rows, and the jobs aggregated for its rows only: PostgreSQL
                // would otherwise read (and aggregate the jobs of) every row an OFFSET skips.
                "SELECT {TASK_COLUMNS} FROM tasks t JOIN (
                     SELECT t.id FROM tasks t
                     WHERE ($1::uuid IS NULL OR t.collaboration_id IN
                              (SELECT collaboration_id FROM collaboration_members WHERE org_id = $1))
                       AND ($2::uuid IS NULL OR t.collaboration_id = $2)
                       AND ($3::uuid IS NULL OR EXISTS (SELECT 1 FROM jobs j WHERE j.task_id = t.id AND j.org_id = $3))
                       AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM jobs j WHERE j.task_id = t.id AND j.status = $4))
                       AND ($7::text IS NULL OR t.status = $7)
                       AND ($8::uuid IS NULL OR t.run_id = $8)
                     ORDER BY t.created_at DESC, t.id LIMIT $5 OFFSET $6) page ON page.id = t.id
                 ORDER BY t.created_at DESC, t.id"
            ),
            &[
                &f.visible_to.map(|o| *o.as_uuid()),
                &f.collaboration.map(|c| *c.as_uuid()),
                &f.organization.map(|o| *o.as_uuid()),
                &f.status.map(|s| s.as_str()),
                &f.limit,
                &f.offset,
                &f.task_status.map(|s| s.as_str()),
                &f.run.map(|r| *r.as_uuid()),
            ],
        )
        .await?;
    Ok(rows.iter().map(task_from_row).collect())
}

/// Marks every unfinished job of a task and of all its descendant subtasks killed. Returns the
/// (organization, task, run) of each job that changed, so their nodes can be told.
pub async fn kill_tree(db: &impl GenericClient, id: TaskId) -> Result<Vec<(OrgId, TaskId, RunId)>, DbError> {
    let rows = db
        .query(
            "WITH RECURSIVE tree AS (
                 SELECT id, run_id FROM tasks WHERE id = $1
                 UNION ALL SELECT t.id, t.run_id FROM tasks t JOIN tree ON t.parent_task_id = tree.id)
             UPDATE jobs j SET status = 'killed', status_changed_at = now()
             FROM tree WHERE j.task_id = tree.id
               AND j.status <> ALL($2::text[])
             RETURNING j.org_id, j.task_id, tree.run_id",
            &[id.as_uuid(), &JobStatus::TERMINAL_NAMES.as_slice()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (OrgId::from_uuid(r.get(0)), TaskId::from_uuid(r.get(1)), RunId::from_uuid(r.get(2))))
        .collect())
}

/// A sealed result as stored.
#[derive(Debug, Clone)]
pub struct StoredResult {
    /// The job.
    pub job: JobId,
    /// Its organization.
    pub organization: OrgId,
    /// The job's status.
    pub status: JobStatus,
    /// The sealed envelope, as the node sent it.
    pub envelope: Vec<u8>,
}

/// The results stored for a task, and whether every job has finished.
pub async fn results(db: &impl GenericClient, task: TaskId) -> Result<(Vec<StoredResult>, bool), DbError> {
    let rows = db
        .query(
            "SELECT j.id, j.org_id, j.status, r.envelope FROM jobs j LEFT JOIN results r ON r.job_id = j.id
             WHERE j.task_id = $1 ORDER BY j.org_id",
            &[task.as_uuid()],
        )
        .await?;
    let mut all_done = !rows.is_empty();
    let mut results = Vec::new();
    for row in &rows {
        let status = parse_status(row.get(2));
        all_done &= status.is_terminal();
        if let Some(envelope) = row.get::<_, Option<Vec<u8>>>(3) {
            results.push(StoredResult {
                job: JobId::from_uuid(row.get(0)),
                organization: OrgId::from_uuid(row.get(1)),
                status,
                envelope,
            });
        }
    }
    Ok((results, all_done))
}

/// If every job of `task`'s run (its own and those of every other task and subtask in the run)
/// has finished, the run is over: the run and the organizations with a job in it, to be told to
/// clean up.
pub async fn finished_run(
    db: &impl GenericClient,
    task: TaskId,
) -> Result<Option<(RunId, Vec<OrgId>)>, DbError> {
    let row = db
        .query_opt(
            "SELECT t.run_id,
                    ARRAY(SELECT DISTINCT j2.org_id FROM jobs j2 JOIN tasks t2 ON t2.id = j2.task_id
                          WHERE t2.run_id = t.run_id) AS orgs
             FROM tasks t
             WHERE t.id = $1
               AND NOT EXISTS (SELECT 1 FROM jobs j JOIN tasks t3 ON t3.id = j.task_id
                               WHERE t3.run_id = t.run_id
                                 AND j.status <> ALL($2::text[]))",
            &[task.as_uuid(), &JobStatus::TERMINAL_NAMES.as_slice()],
        )
        .await?;
    Ok(row.map(|r| {
        let orgs: Vec<Uuid> = r.get(1);
        (RunId::from_uuid(r.get(0)), orgs.into_iter().map(OrgId::from_uuid).collect())
    }))
}
