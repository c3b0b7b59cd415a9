//! Tasks: creation (the client seals one envelope per organization; the server checks and
//! forwards them through the router), visibility, kill, and sealed results.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{AppError, Principal, State, access, collaborations, db};
use crate::contract::CreateTask;
use crate::contract::RouterRefusal;
use crate::db::tasks::{self as store, NewTask};
use crate::envelope::parse;
use crate::ids::{JobId, OrgId, TaskId};
use crate::protocol::Kind;
use crate::router::{Item, Publisher};

/// Creates a task and forwards its `job_start` envelopes: the creator's organization must be a
/// member of the collaboration, each job's envelope a `job_start` from it to a member, for this
/// task, run and collaboration; a node creates only subtasks, in a run where it has a job.
/// Retrying the same request is safe.
pub async fn create(principal: &Principal, body: CreateTask, state: &State) -> Result<store::Task, AppError> {
    let creator = principal.require_task_creator()?;
    if body.jobs.is_empty() {
        return Err(AppError::invalid("a task has at least one job"));
    }
    if body.image.trim().is_empty() || body.image.len() > 500 || body.name.len() > 200 {
        return Err(AppError::invalid("image is 1 to 500 characters, name at most 200"));
    }
    // One connection for the whole creation: the checks, the task's transaction and the answer.
    let mut client = db(state).await?;
    let collaboration = collaborations::visible_with(&**client, principal, body.collaboration).await?;
    if !collaboration.organizations.contains(&creator) {
        return Err(AppError::forbidden("your organization is not a member of this collaboration"));
    }
    let mut seen = HashSet::new();
    let mut envelopes = Vec::with_capacity(body.jobs.len());
    for job in &body.jobs {
        if !seen.insert(job.organization) {
            return Err(AppError::invalid(format!("organization {} has two jobs", job.organization)));
        }
        if !collaboration.organizations.contains(&job.organization) {
            return Err(AppError::invalid(format!(
                "organization {} is not a member of collaboration {}",
                job.organization, body.collaboration
            )));
        }
        let bytes = STANDARD
            .decode(&job.envelope)
            .map_err(|_| AppError::invalid(format!("the envelope for {} is not base64", job.organization)))?;
        envelopes.push(bytes);
    }
    // Each envelope parsed once: for the consistency checks here, and for the router.
    let mut parsed = Vec::with_capacity(envelopes.len());
    for (job, bytes) in body.jobs.iter().zip(&envelopes) {
        let envelope = parse(bytes, state.config.router.max_envelope_bytes)
            .map_err(|e| AppError::envelope_refused(RouterRefusal::Malformed, e.to_string()))?;
        let header = &envelope.header;
        let consistent = header.kind == Kind::JobStart
            && header.task == body.id
            && header.run == body.run
            && header.collaboration == body.collaboration
            && header.sender == creator
            && header.recipient == job.organization;
        if !consistent {
            return Err(AppError::invalid(format!(
                "the envelope for {} must be a job_start from {creator} to it, for this task, run and collaboration",
                job.organization
            )));
        }
        parsed.push(envelope);
    }

    match principal {
        Principal::Node(node) => {
            // A subtask: created by an algorithm through its node, in the run of a task where
            // the node's organization has a job.
            let parent_id =
                body.parent.ok_or_else(|| AppError::invalid("a node creates subtasks only: give parent"))?;
            let parent = store::get(&**client, parent_id)
                .await
                .map_err(AppError::from)?
                .filter(|p| p.jobs.iter().any(|j| j.organization == node.organization))
                .ok_or_else(|| AppError::not_found(format!("task {parent_id}")))?;
            if parent.run != body.run || parent.collaboration != body.collaboration {
                return Err(AppError::invalid("a subtask belongs to its parent's run and collaboration"));
            }
        }
        Principal::User(_) if body.parent.is_some() => {
            return Err(AppError::invalid("only nodes create subtasks"));
        }
        Principal::User(_) => {}
    }
    let jobs: Vec<(JobId, OrgId)> = body.jobs.iter().map(|j| (j.id, j.organization)).collect();
    let (user, node) = match principal {
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
    let publisher_name = match principal {
        Principal::User(u) => format!("api:user:{}", u.username),
        Principal::Node(n) => format!("api:node:{}", n.id),
    };
    let items: Vec<Item<'_>> = envelopes
        .iter()
        .zip(parsed)
        .map(|(bytes, parsed)| Item {
            bytes,
            parsed: Some(parsed),
            publisher: Publisher::Api(creator),
            publisher_name: Some(&publisher_name),
        })
        .collect();
    let channel = state.broker.channel()?;

    // The task and the checks of its envelopes in one transaction: a refusal leaves no task.
    let tx = client.transaction().await.map_err(AppError::from)?;
    match store::get(&*tx, body.id).await.map_err(AppError::from)? {
        // A retry of the same request: route again, duplicates are dropped by the router.
        Some(task) if task.creator_organization == creator && task.run == body.run => {}
        Some(_) => return Err(AppError::conflict(format!("task {} exists", body.id))),
        None => store::insert(&*tx, &new).await.map_err(|e| {
            if e.is_unique_violation() { AppError::conflict("a job id is already in use") } else { e.into() }
        })?,
    }
    let checked = match state.router.check_task(&tx, &items).await {
        Ok(Ok(checked)) => checked,
        // Nothing is stored or forwarded: the caller fixes the refused envelope and sends the
        // request again.
        Ok(Err(refusal)) => return Err(AppError::envelope_refused(refusal.code, refusal.message)),
        Err(e) => {
            tracing::warn!(error = %e, task = %body.id, "could not check a task's job_start envelopes");
            return Err(AppError::unavailable("could not create the task now; retry the same request"));
        }
    };
    // Committed before anything is forwarded, so that no node's answer finds the server
    // without the task; then the envelopes go as one group.
    tx.commit().await.map_err(AppError::from)?;
    let forwarded = state.router.forward_checked(&mut client, &items, checked, &channel).await;
    let failure = match &forwarded {
        Ok(results) => results.iter().find_map(|r| r.as_ref().err().map(ToString::to_string)),
        Err(e) => Some(e.to_string()),
    };
    if let Some(e) = failure {
        // The task is kept with the envelopes that went; a retry of the same request forwards
        // the rest (the router drops those that went already).
        tracing::warn!(error = %e, task = %body.id, "could not forward a job_start envelope");
        return Err(AppError::unavailable("could not forward the task now; retry the same request"));
    }
    let task =
        store::get(&**client, body.id).await.map_err(AppError::from)?.ok_or_else(AppError::internal)?;
    tracing::info!(task = %task.id, jobs = task.jobs.len(), "task created");
    Ok(task)
}

/// A task the caller may see, or `not_found` (whether it exists or not).
pub async fn visible(principal: &Principal, id: TaskId, state: &State) -> Result<store::Task, AppError> {
    let client = db(state).await?;
    let task = store::get(&**client, id).await?.ok_or_else(|| AppError::not_found(format!("task {id}")))?;
    if !principal.is_root() {
        collaborations::visible(principal, task.collaboration, state)
            .await
            .map_err(|_| AppError::not_found(format!("task {id}")))?;
    }
    Ok(task)
}

/// Kills a task's tree for `principal` (the API and the dashboard): the creating organization's
/// researchers and administrators, or root. Returns the task as it is afterwards.
pub async fn kill_task(principal: &Principal, id: TaskId, state: &State) -> Result<store::Task, AppError> {
    let task = visible(principal, id, state).await?;
    if !access::may_kill(principal, &task) {
        return Err(AppError::forbidden(
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

/// The sealed results of a task's jobs, and whether every job has finished. With `wait`,
/// answers as soon as every job has finished, or after `wait` with what there is.
pub async fn results(
    principal: &Principal,
    id: TaskId,
    wait: Duration,
    state: &State,
) -> Result<(Vec<store::StoredResult>, bool), AppError> {
    let task = visible(principal, id, state).await?;
    if !access::may_read_results(principal, &task) {
        return Err(AppError::forbidden("results are for the creating organization"));
    }
    let deadline = Instant::now() + wait;
    let mut changed = state.router.results_changed();
    loop {
        let (results, complete) = {
            let client = db(state).await?;
            store::results(&**client, id).await?
        };
        let now = Instant::now();
        if complete || now >= deadline {
            return Ok((results, complete));
        }
        // Woken by a result this server stored, or after a second for results another replica
        // stored.
        let wait = (deadline - now).min(Duration::from_secs(1));
        let _ = tokio::time::timeout(wait, changed.changed()).await;
    }
}
