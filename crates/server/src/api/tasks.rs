//! `/tasks`: create a task (the client seals one envelope per organization; the server checks
//! and forwards them), list, show, kill, and fetch sealed results.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use warp::http::StatusCode;

use super::{Response, reply};
use crate::app::tasks;
use crate::app::{AppError, Principal, State, db};
use crate::contract::{CreateTask, SealedResult, TaskResults};
use crate::db::tasks::{self as store, TaskFilter};
use crate::ids::{CollaborationId, OrgId, RunId, TaskId};
use crate::protocol::JobStatus;

/// Creates a task and forwards its `job_start` envelopes, holding the body's reservation until
/// it answers.
pub async fn create(
    principal: Principal,
    _reserved: crate::app::bodies::Reservation,
    body: CreateTask,
    state: State,
) -> Response {
    Ok(reply(StatusCode::CREATED, &tasks::create(&principal, body, &state).await?))
}

/// `GET /tasks` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    collaboration: Option<CollaborationId>,
    organization: Option<OrgId>,
    status: Option<JobStatus>,
    run: Option<RunId>,
    #[serde(default = "super::default_limit")]
    limit: i64,
    #[serde(default)]
    offset: i64,
}

/// Tasks visible to the caller, newest first, filtered and paginated.
pub async fn list(principal: Principal, q: ListQuery, state: State) -> Response {
    super::check_page(q.limit, q.offset)?;
    let client = db(&state).await?;
    let filter = TaskFilter {
        visible_to: principal.scope(),
        collaboration: q.collaboration,
        organization: q.organization,
        status: q.status,
        task_status: None,
        run: q.run,
        limit: q.limit,
        offset: q.offset,
    };
    let tasks = store::list(&**client, &filter).await.map_err(AppError::from)?;
    Ok(reply(StatusCode::OK, &tasks))
}

/// One task with each organization's job status.
pub async fn get(id: TaskId, principal: Principal, state: State) -> Response {
    Ok(reply(StatusCode::OK, &tasks::visible(&principal, id, &state).await?))
}

/// Kills every unfinished job of the task and of its subtasks, and tells their nodes.
pub async fn kill(id: TaskId, principal: Principal, state: State) -> Response {
    Ok(reply(StatusCode::OK, &tasks::kill_task(&principal, id, &state).await?))
}

/// `GET /tasks/{id}/results` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsQuery {
    /// Seconds to wait for every job to finish (at most 60).
    #[serde(default)]
    wait: u64,
}

/// The sealed results of a task's jobs. With `?wait=N`, answers as soon as every job has
/// finished, or after N seconds with what there is.
pub async fn results(id: TaskId, principal: Principal, q: ResultsQuery, state: State) -> Response {
    if q.wait > 60 {
        return Err(AppError::invalid("wait is at most 60 seconds").into());
    }
    let (results, complete) = tasks::results(&principal, id, Duration::from_secs(q.wait), &state).await?;
    let results = results
        .iter()
        .map(|r| SealedResult {
            job: r.job,
            organization: r.organization,
            status: r.status,
            envelope: STANDARD.encode(&r.envelope),
        })
        .collect();
    Ok(reply(StatusCode::OK, &TaskResults { complete, results }))
}
