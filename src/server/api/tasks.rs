//! `/tasks`: create a task (the client seals one envelope per organization; the server checks
//! and forwards them), list, show, kill, and fetch sealed results.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use warp::http::StatusCode;

use super::auth::Principal;
use super::collaborations;
use super::{ApiError, Response, State, db, reply};
use crate::envelope::parse;
use crate::ids::{CollaborationId, JobId, OrgId, RunId, TaskId};
use crate::protocol::{JobStatus, Kind};
use crate::server::db::tasks::{self as store, NewTask, TaskFilter};
use crate::server::router::{Publisher, RouteError};

/// One organization's job in `POST /tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    id: JobId,
    organization: OrgId,
    /// The `job_start` envelope sealed for the organization, base64.
    envelope: String,
}

/// `POST /tasks` body. Identifiers are chosen by the client, which seals them into the
/// envelopes' headers; retrying the same request is safe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    id: TaskId,
    run: RunId,
    collaboration: CollaborationId,
    image: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    parent: Option<TaskId>,
    jobs: Vec<NewJob>,
}

/// Creates a task and forwards its `job_start` envelopes.
pub async fn create(principal: Principal, body: CreateTask, state: State) -> Response {
    let creator = principal.require_task_creator()?;
    if body.jobs.is_empty() {
        return Err(ApiError::invalid("a task has at least one job").into());
    }
    if body.image.trim().is_empty() || body.image.len() > 500 || body.name.len() > 200 {
        return Err(ApiError::invalid("image is 1 to 500 characters, name at most 200").into());
    }
    let collaboration = collaborations::visible(&principal, body.collaboration, &state).await?;
    if !collaboration.organizations.contains(&creator) {
        return Err(ApiError::forbidden("your organization is not a member of this collaboration").into());
    }
    let mut seen = HashSet::new();
    let mut envelopes = Vec::with_capacity(body.jobs.len());
    for job in &body.jobs {
        if !seen.insert(job.organization) {
            return Err(ApiError::invalid(format!("organization {} has two jobs", job.organization)).into());
        }
        if !collaboration.organizations.contains(&job.organization) {
            return Err(ApiError::invalid(format!(
                "organization {} is not a member of collaboration {}",
                job.organization, body.collaboration
            ))
            .into());
        }
        let bytes = STANDARD
            .decode(&job.envelope)
            .map_err(|_| ApiError::invalid(format!("the envelope for {} is not base64", job.organization)))?;
        let header = parse(&bytes, state.config.router.max_envelope_bytes)
            .map_err(|e| ApiError::envelope_refused("malformed", e.to_string()))?
            .header;
        let consistent = header.kind == Kind::JobStart
            && header.task == body.id
            && header.run == body.run
            && header.collaboration == body.collaboration
            && header.sender == creator
            && header.recipient == job.organization;
        if !consistent {
            return Err(ApiError::invalid(format!(
                "the envelope for {} must be a job_start from {creator} to it, for this task, run and collaboration",
                job.organization
            ))
            .into());
        }
        envelopes.push(bytes);
    }

    let mut client = db(&state).await?;
    match &principal {
        Principal::Node(node) => {
            // A subtask: created by an algorithm through its node, in the run of a task where
            // the node's organization has a job.
            let parent_id =
                body.parent.ok_or_else(|| ApiError::invalid("a node creates subtasks only: give parent"))?;
            let parent = store::get(&**client, parent_id)
                .await
                .map_err(ApiError::from)?
                .filter(|p| p.jobs.iter().any(|j| j.organization == node.organization))
                .ok_or_else(|| ApiError::not_found(format!("task {parent_id}")))?;
            if parent.run != body.run || parent.collaboration != body.collaboration {
                return Err(
                    ApiError::invalid("a subtask belongs to its parent's run and collaboration").into()
                );
            }
        }
        Principal::User(_) if body.parent.is_some() => {
            return Err(ApiError::invalid("only nodes create subtasks").into());
        }
        Principal::User(_) => {}
    }
    let jobs: Vec<(JobId, OrgId)> = body.jobs.iter().map(|j| (j.id, j.organization)).collect();
    let (user, node) = match &principal {
        Principal::User(u) => (Some(u.id), None),
        Principal::Node(n) => (None, Some(n.id)),
    };
    let new = NewTask {
        id: body.id,
        collaboration: body.collaboration,
        run: body.run,
        parent: body.parent,
        image: body.image.trim(),
        name: body.name.trim(),
        creator_org: creator,
        creator_user: user,
        creator_node: node,
        jobs: &jobs,
    };
    let existing = store::get(&**client, body.id).await.map_err(ApiError::from)?;
    match existing {
        // A retry of the same request: route again, duplicates are dropped by the router.
        Some(task) if task.creator_organization == creator && task.run == body.run => {}
        Some(_) => return Err(ApiError::conflict(format!("task {} exists", body.id)).into()),
        None => {
            let tx = client.transaction().await.map_err(ApiError::from)?;
            store::insert(&*tx, &new).await.map_err(|e| {
                if e.is_unique_violation() {
                    ApiError::conflict("a job id is already in use")
                } else {
                    e.into()
                }
            })?;
            tx.commit().await.map_err(ApiError::from)?;
        }
    }
    drop(client);

    let channel = state.broker.channel().await?;
    let publisher_name = match &principal {
        Principal::User(u) => format!("api:user:{}", u.username),
        Principal::Node(n) => format!("api:node:{}", n.id),
    };
    for bytes in &envelopes {
        match state.router.route(bytes, Publisher::Api(creator), &publisher_name, &channel).await {
            Ok(_) => {}
            Err(RouteError::Refused { refusal, .. }) => {
                // Nothing was forwarded for a refused envelope; the ones before it were, and
                // their jobs run. The caller fixes the refused one and retries the request.
                return Err(ApiError::envelope_refused(refusal.code, refusal.message).into());
            }
            Err(e) => {
                tracing::warn!(error = %e, task = %body.id, "could not forward a job_start envelope");
                return Err(
                    ApiError::unavailable("could not forward the task now; retry the same request").into()
                );
            }
        }
    }
    let client = db(&state).await?;
    let task =
        store::get(&**client, body.id).await.map_err(ApiError::from)?.ok_or_else(ApiError::internal)?;
    tracing::info!(task = %task.id, jobs = task.jobs.len(), "task created");
    Ok(reply(StatusCode::CREATED, &task))
}

/// `GET /tasks` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    collaboration: Option<CollaborationId>,
    organization: Option<OrgId>,
    status: Option<JobStatus>,
    #[serde(default = "default_limit")]
    limit: i64,
    #[serde(default)]
    offset: i64,
}

fn default_limit() -> i64 {
    50
}

/// Tasks visible to the caller, newest first, filtered and paginated.
pub async fn list(principal: Principal, q: ListQuery, state: State) -> Response {
    if !(1..=500).contains(&q.limit) || q.offset < 0 {
        return Err(ApiError::invalid("limit is 1 to 500 and offset at least 0").into());
    }
    let client = db(&state).await?;
    let filter = TaskFilter {
        visible_to: principal.scope(),
        collaboration: q.collaboration,
        organization: q.organization,
        status: q.status,
        task_status: None,
        limit: q.limit,
        offset: q.offset,
    };
    let tasks = store::list(&**client, &filter).await.map_err(ApiError::from)?;
    Ok(reply(StatusCode::OK, &tasks))
}

/// A task the caller may see, or `not_found` (whether it exists or not).
pub async fn visible(principal: &Principal, id: TaskId, state: &State) -> Result<store::Task, ApiError> {
    let client = db(state).await?;
    let task = store::get(&**client, id).await?.ok_or_else(|| ApiError::not_found(format!("task {id}")))?;
    if !principal.is_root() {
        collaborations::visible(principal, task.collaboration, state)
            .await
            .map_err(|_| ApiError::not_found(format!("task {id}")))?;
    }
    Ok(task)
}

/// One task with each organization's job status.
pub async fn get(id: TaskId, principal: Principal, state: State) -> Response {
    Ok(reply(StatusCode::OK, &visible(&principal, id, &state).await?))
}

/// Kills every unfinished job of the task and of its subtasks, and tells their nodes.
pub async fn kill(id: TaskId, principal: Principal, state: State) -> Response {
    Ok(reply(StatusCode::OK, &kill_task(&principal, id, &state).await?))
}

/// Whether `principal` may kill `task`: root, or the creating organization's researchers,
/// administrators and nodes.
pub fn may_kill(principal: &Principal, task: &store::Task) -> bool {
    use crate::server::db::users::Role;
    principal.is_root()
        || match principal {
            Principal::User(u) => {
                u.organization == Some(task.creator_organization)
                    && matches!(u.role, Role::Researcher | Role::OrgAdmin)
            }
            Principal::Node(n) => n.organization == task.creator_organization,
        }
}

/// Kills a task's tree for `principal` (the API and the dashboard): the creating organization's
/// researchers and administrators, or root. Returns the task as it is afterwards.
pub async fn kill_task(principal: &Principal, id: TaskId, state: &State) -> Result<store::Task, ApiError> {
    let task = visible(principal, id, state).await?;
    if !may_kill(principal, &task) {
        return Err(ApiError::forbidden(
            "only the creating organization's researchers or administrators kill a task",
        ));
    }
    let client = db(state).await?;
    let killed = store::kill_tree(&**client, id).await?;
    for (org, task, run) in &killed {
        let control = crate::protocol::control::Control::Kill { task: *task, run: *run };
        if let Err(e) = state.broker.publish_control(*org, &control).await {
            // The jobs are killed in the database; a node that misses the message still sees
            // its job as killed when it reports status, and stops it then.
            tracing::warn!(error = ?e, %org, %task, "could not tell a node about a kill");
        }
    }
    tracing::info!(task = %id, jobs = killed.len(), "task killed");
    visible(principal, id, state).await
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
        return Err(ApiError::invalid("wait is at most 60 seconds").into());
    }
    let task = visible(&principal, id, &state).await?;
    if !principal.is_root() && principal.org() != Some(task.creator_organization) {
        return Err(ApiError::forbidden("results are for the creating organization").into());
    }
    let deadline = Instant::now() + Duration::from_secs(q.wait);
    let mut changed = state.router.results_changed();
    loop {
        let (results, complete) = {
            let client = db(&state).await?;
            store::results(&**client, id).await.map_err(ApiError::from)?
        };
        let now = Instant::now();
        if complete || now >= deadline {
            let results: Vec<_> = results
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "job": r.job,
                        "organization": r.organization,
                        "status": r.status,
                        "envelope": STANDARD.encode(&r.envelope),
                    })
                })
                .collect();
            return Ok(reply(
                StatusCode::OK,
                &serde_json::json!({ "complete": complete, "results": results }),
            ));
        }
        // Woken by a result this server stored, or after a second for results another replica
        // stored.
        let wait = (deadline - now).min(Duration::from_secs(1));
        let _ = tokio::time::timeout(wait, changed.changed()).await;
    }
}
