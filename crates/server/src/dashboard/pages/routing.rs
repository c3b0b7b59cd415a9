//! `/admin/routing`: the routing log, searchable by kind, organization, task and message id:
//! who sent what kind to whom and when, with sizes and no contents.

use maud::html;
use serde::Deserialize;
use warp::http::StatusCode;

use super::Page;
use super::{filter, names, page_of};
use crate::app::{AppError, State, db};
use crate::dashboard::session::Admin;
use crate::dashboard::view::{self, Nav, PAGE_SIZE, bytes, option, pager, short, when};
use crate::db::monitor::{self, RoutingFilter};
use crate::ids::{OrgId, TaskId};
use crate::protocol::Kind;

/// `GET /admin/routing` query.
#[derive(Debug, Default, Deserialize)]
pub struct Query {
    kind: Option<String>,
    organization: Option<String>,
    task: Option<String>,
    message: Option<String>,
    page: Option<i64>,
}

/// `GET /admin/routing`.
pub async fn page(admin: Admin, q: Query, state: State) -> Page {
    let (page, offset) = page_of(q.page)?;
    let kind: Option<String> = filter(&q.kind, "kind")?;
    if let Some(k) = &kind
        && !Kind::ALL.iter().any(|x| x.as_str() == k)
    {
        return Err(AppError::invalid(format!("kind {k:?} is not an envelope kind")));
    }
    let organization: Option<OrgId> = filter(&q.organization, "organization")?;
    let task: Option<TaskId> = filter(&q.task, "task id")?;
    let message: Option<String> = filter(&q.message, "message id")?;
    if let Some(m) = &message
        && (m.len() > 32 || !m.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(AppError::invalid("a message id is up to 32 hex digits"));
    }
    let scope = admin.scope();
    let client = db(&state).await?;
    let names = names(&**client, scope).await?;
    let mut rows = monitor::routing_log(
        &**client,
        &RoutingFilter {
            scope,
            kind,
            organization,
            task,
            message_prefix: message.map(|m| m.to_ascii_lowercase()),
            limit: PAGE_SIZE + 1,
            offset,
        },
    )
    .await?;
    let has_next = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(PAGE_SIZE as usize);
    let (k, o, t, m) = (
        q.kind.as_deref().unwrap_or(""),
        q.organization.as_deref().unwrap_or(""),
        q.task.as_deref().unwrap_or(""),
        q.message.as_deref().unwrap_or(""),
    );
    let body = html! {
        form.filters method="get" action="/admin/routing" {
            label { "Kind" select name="kind" {
                (option("", "any", k))
                @for kind in Kind::ALL { (option(kind.as_str(), kind.as_str(), k)) }
            } }
            label { "From or to" select name="organization" {
                (option("", "anyone", o))
                (names.options(o))
            } }
            label { "Task id" input name="task" value=(t) placeholder="uuid" size="36"; }
            label { "Message id" input name="message" value=(m) placeholder="hex prefix" size="20"; }
            button type="submit" { "Search" }
        }
        table #routing-table {
            thead { tr {
                th { "When" } th { "Kind" } th { "From" } th { "To" } th { "Status" } th { "Task" } th { "Message" }
                th.num { "Size" } th { "Outcome" } th { "Via" }
            } }
            tbody {
                @for r in &rows {
                    tr {
                        td { (when(r.routed_at)) }
                        td { (r.kind) }
                        td { (names.org(r.sender)) }
                        td { (names.org(r.recipient)) }
                        td { (r.status.as_deref().unwrap_or("")) }
                        td { a href={ "/admin/tasks/" (r.task) } { (short(&r.task)) } }
                        td { (short(&r.message_id)) }
                        td.num { (bytes(r.size.into())) }
                        td { (r.outcome) }
                        td { (r.via) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="10" .muted { "Nothing matches." } } }
            }
        }
        (pager("/admin/routing", &[("kind", k), ("organization", o), ("task", t), ("message", m)], page, has_next))
    };
    Ok(view::respond(StatusCode::OK, view::page("Routing log", Some(&admin), Nav::Routing, body)))
}
