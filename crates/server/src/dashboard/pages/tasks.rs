//! `/admin/tasks`: the task list with filters, a task's page (each organization's job with its
//! timing, the tree of its run's subtasks, the envelopes routed for it) and the kill action.

use std::collections::HashMap;

use maud::{Markup, html};
use serde::Deserialize;
use warp::http::StatusCode;

use super::Page;
use super::{filter, names, page_of};
use crate::app::access::may_kill;
use crate::app::tasks::{kill_task, visible};
use crate::app::{AppError, State, db};
use crate::dashboard::session::Admin;
use crate::dashboard::view::{
    self, Names, Nav, PAGE_SIZE, badge, between, bytes, option, pager, short, when, when_opt,
};
use crate::db::directory;
use crate::db::monitor::{self, RoutingFilter};
use crate::db::tasks::{self as store, Task, TaskFilter};
use crate::ids::{CollaborationId, OrgId, TaskId};
use crate::protocol::{JobStatus, TaskStatus};

/// `GET /admin/tasks` query. Every field is text, so that an empty "any" option is no filter.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    collaboration: Option<String>,
    organization: Option<String>,
    status: Option<String>,
    task_status: Option<String>,
    page: Option<i64>,
}

/// `GET /admin/tasks`.
pub async fn list(admin: Admin, q: ListQuery, state: State) -> Page {
    let (page, offset) = page_of(q.page)?;
    let collaboration: Option<CollaborationId> = filter(&q.collaboration, "collaboration")?;
    let organization: Option<OrgId> = filter(&q.organization, "organization")?;
    let status: Option<JobStatus> = filter(&q.status, "status")?;
    let overall: Option<TaskStatus> = filter(&q.task_status, "task status").map_err(|_| {
        let all: Vec<_> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
        AppError::invalid(format!(
            "task status {:?} is not one of {all:?}",
            q.task_status.as_deref().unwrap_or("")
        ))
    })?;
    let scope = admin.scope();
    let client = db(&state).await?;
    let names = names(&**client, scope).await?;
    let collaborations = directory::collaborations(&**client, scope).await?;
    let mut tasks = store::list(
        &**client,
        &TaskFilter {
            visible_to: scope,
            collaboration,
            organization,
            status,
            task_status: overall,
            run: None,
            limit: PAGE_SIZE + 1,
            offset,
        },
    )
    .await?;
    let has_next = tasks.len() as i64 > PAGE_SIZE;
    tasks.truncate(PAGE_SIZE as usize);
    let collab_names: HashMap<_, _> = collaborations.iter().map(|c| (c.id, c.name.as_str())).collect();
    let (c, o, s, ts) = (
        q.collaboration.as_deref().unwrap_or(""),
        q.organization.as_deref().unwrap_or(""),
        q.status.as_deref().unwrap_or(""),
        q.task_status.as_deref().unwrap_or(""),
    );
    let body = html! {
        form.filters method="get" action="/admin/tasks" {
            label { "Collaboration" select name="collaboration" {
                (option("", "any", c))
                @for collab in &collaborations { (option(&collab.id.to_string(), &collab.name, c)) }
            } }
            label { "Organization" select name="organization" {
                (option("", "any", o))
                (names.options(o))
            } }
            label { "Task status" select name="task_status" {
                (option("", "any", ts))
                @for status in TaskStatus::ALL { (option(status.as_str(), status.as_str(), ts)) }
            } }
            label { "With a job" select name="status" {
                (option("", "any", s))
                @for status in JobStatus::ALL { (option(status.as_str(), status.as_str(), s)) }
            } }
            button type="submit" { "Filter" }
        }
        table #task-table {
            thead { tr {
                th { "Task" } th { "Image" } th { "Collaboration" } th { "By" } th { "Created" } th { "Status" }
                th { "Jobs" }
            } }
            tbody {
                @for task in &tasks {
                    tr data-task=(task.id) {
                        td { a href={ "/admin/tasks/" (task.id) } { (short(&task.id)) } " " (task.name) }
                        td { code { (task.image) } }
                        td { (collab_names.get(&task.collaboration).copied().unwrap_or("–")) }
                        td { (names.org(task.creator_organization)) }
                        td { (when(task.created_at)) }
                        td { (badge(task.status().as_str())) }
                        td.jobs { @for job in &task.jobs { span.job { (names.org(job.organization)) " " (badge(job.status.as_str())) } } }
                    }
                }
                @if tasks.is_empty() { tr { td colspan="7" .muted { "No task matches." } } }
            }
        }
        (pager("/admin/tasks", &[("collaboration", c), ("organization", o), ("status", s), ("task_status", ts)], page, has_next))
    };
    Ok(view::respond(StatusCode::OK, view::page("Tasks", Some(&admin), Nav::Tasks, body)))
}

/// `GET /admin/tasks/{id}`.
pub async fn show(id: TaskId, admin: Admin, state: State) -> Page {
    let task = visible(&admin.principal(), id, &state).await?;
    let scope = admin.scope();
    let client = db(&state).await?;
    let names = names(&**client, scope).await?;
    let times = monitor::job_times(&**client, id).await?;
    let run = monitor::run_tasks(&**client, task.run).await?;
    let routed = monitor::routing_log(
        &**client,
        &RoutingFilter { scope, task: Some(id), limit: 200, ..Default::default() },
    )
    .await?;
    let collaboration = directory::collaboration(&**client, task.collaboration).await?;
    let times: HashMap<OrgId, _> = times.into_iter().map(|t| (t.organization, t)).collect();
    let status = task.status();
    let unfinished = status.is_unfinished();
    let title =
        if task.name.is_empty() { format!("Task {}", &id.to_string()[..8]) } else { task.name.clone() };
    let body = html! {
        dl.facts {
            dt { "Task" } dd { code { (task.id) } }
            dt { "Status" } dd #task-status { (badge(status.as_str())) }
            dt { "Image" } dd { code { (task.image) } }
            dt { "Collaboration" } dd { (collaboration.map(|c| c.name).unwrap_or_default()) }
            dt { "Created by" } dd { (names.org(task.creator_organization)) " " (when(task.created_at)) }
            dt { "Run" } dd { code { (task.run) } }
            @if let Some(parent) = task.parent { dt { "Parent" } dd { a href={ "/admin/tasks/" (parent) } { (short(&parent)) } } }
        }
        @if unfinished && may_kill(&admin.principal(), &task) {
            form.kill method="post" action={ "/admin/tasks/" (task.id) "/kill" }
                data-confirm="Kill this task and its subtasks at every organization?" {
                input type="hidden" name="csrf" value=(admin.csrf());
                button.danger type="submit" #kill { "Kill task" }
            }
        }
        h2 { "Jobs" }
        table #job-table {
            thead { tr {
                th { "Organization" } th { "Status" } th { "Job" } th { "Sent" } th { "Running" } th { "Finished" }
                th { "Queue → running" } th { "Total" }
            } }
            tbody {
                @for job in &task.jobs {
                    @let t = times.get(&job.organization);
                    @let (sent, running, finished) = (t.and_then(|t| t.sent), t.and_then(|t| t.running), t.and_then(|t| t.finished));
                    tr data-org=(job.organization) {
                        td { (names.org(job.organization)) }
                        td.status { (badge(job.status.as_str())) }
                        td { (short(&job.id)) }
                        td { (when_opt(sent)) }
                        td { (when_opt(running)) }
                        td { (when_opt(finished.or(job.status.is_terminal().then_some(job.status_changed_at)))) }
                        td { (between(sent, running)) }
                        td { (between(sent, finished)) }
                    }
                }
            }
        }
        h2 { "Run" }
        p.muted { "Every task of run " (short(&task.run)) ": the researcher's task and the subtasks its algorithm started." }
        (run_tree(&run, &names, id))
        h2 { "Envelopes" }
        p.muted { "What the router passed for this task: kinds, parties and sizes; the contents are sealed." }
        table {
            thead { tr { th { "When" } th { "Kind" } th { "From" } th { "To" } th { "Status" } th.num { "Size" } th { "Outcome" } } }
            tbody {
                @for r in &routed {
                    tr {
                        td { (when(r.routed_at)) } td { (r.kind) } td { (names.org(r.sender)) } td { (names.org(r.recipient)) }
                        td { (r.status.as_deref().unwrap_or("")) } td.num { (bytes(r.size.into())) } td { (r.outcome) }
                    }
                }
            }
        }
    };
    Ok(view::respond(StatusCode::OK, view::page(&title, Some(&admin), Nav::Tasks, body)))
}

/// The tasks of a run as a tree by parent, `current` highlighted.
fn run_tree(run: &[Task], names: &Names, current: TaskId) -> Markup {
    let ids: std::collections::HashSet<_> = run.iter().map(|t| t.id).collect();
    let mut children: HashMap<Option<TaskId>, Vec<&Task>> = HashMap::new();
    for task in run {
        let parent = task.parent.filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(task);
    }
    fn branch(
        parent: Option<TaskId>,
        children: &HashMap<Option<TaskId>, Vec<&Task>>,
        names: &Names,
        current: TaskId,
    ) -> Markup {
        html! {
            @if let Some(tasks) = children.get(&parent) {
                ul.tree {
                    @for task in tasks {
                        li.current[task.id == current] {
                            a href={ "/admin/tasks/" (task.id) } { (short(&task.id)) }
                            " " (task.name) " " code { (task.image) } " " (badge(task.status().as_str()))
                            " at "
                            @for (i, job) in task.jobs.iter().enumerate() {
                                @if i > 0 { ", " }
                                (names.org(job.organization))
                            }
                            (branch(Some(task.id), children, names, current))
                        }
                    }
                }
            }
        }
    }
    branch(None, &children, names, current)
}

/// `POST /admin/tasks/{id}/kill`.
pub async fn kill(id: TaskId, admin: Admin, state: State) -> Page {
    kill_task(&admin.principal(), id, &state).await?;
    tracing::info!(task = %id, by = %admin.user.username, "task killed from the dashboard");
    Ok(view::redirect(&format!("/admin/tasks/{id}")))
}
