//! `/admin/dead-letters`: envelopes the router refused, by reason, with the header fields it
//! could read. Never a payload: the server has none to show.

use maud::html;
use serde::Deserialize;
use warp::http::StatusCode;

use super::Page;
use super::{filter, names, page_of};
use crate::app::{State, access, db};
use crate::dashboard::session::Admin;
use crate::dashboard::view::{self, Nav, PAGE_SIZE, bytes, pager, query, short, when};
use crate::db::monitor;

/// `GET /admin/dead-letters` query.
#[derive(Debug, Default, Deserialize)]
pub struct Query {
    reason: Option<String>,
    page: Option<i64>,
}

/// `GET /admin/dead-letters`.
pub async fn page(admin: Admin, q: Query, state: State) -> Page {
    let (page, offset) = page_of(q.page)?;
    let reason: Option<String> = filter(&q.reason, "reason")?;
    // The API's rule, so that both front ends show the same dead letters.
    let scope = access::dead_letter_scope(&admin.principal())?;
    let client = db(&state).await?;
    let names = names(&**client, scope).await?;
    let counts = monitor::dead_letter_reasons(&**client, scope).await?;
    let mut rows = monitor::dead_letters(&**client, scope, reason.as_deref(), PAGE_SIZE + 1, offset).await?;
    let has_next = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(PAGE_SIZE as usize);
    let current = reason.as_deref().unwrap_or("");
    let body = html! {
        p.muted { "Envelopes the router refused. Only what could be read of the header is kept, never the sealed contents." }
        h2 { "By reason" }
        table.counts #reason-counts {
            @for (code, n) in &counts {
                tr.active[code == current] { td { a href={ "/admin/dead-letters" (query(&[("reason", code)])) } { code { (code) } } } td.num { (n) } }
            }
            @if counts.is_empty() { tr { td.muted { "No envelope was refused." } } }
        }
        @if !current.is_empty() { p { "Showing " code { (current) } " only. " a href="/admin/dead-letters" { "Show all" } } }
        table #dead-letter-table {
            thead { tr {
                th { "Received" } th { "Reason" } th { "Kind" } th { "From" } th { "To" } th { "Task" } th { "Message" }
                th { "Publisher" } th.num { "Size" }
            } }
            tbody {
                @for d in &rows {
                    tr {
                        td { (when(d.received_at)) }
                        td { code.reason { (d.reason_code) } br; span.reason-text { (d.reason) } }
                        td { (d.kind.as_deref().unwrap_or("–")) }
                        td { (names.org_opt(d.sender)) }
                        td { (names.org_opt(d.recipient)) }
                        td { @match d.task { Some(t) => (short(&t)), None => "–" } }
                        td { @match &d.message_id { Some(m) => (short(m)), None => "–" } }
                        td { code { (d.publisher.as_deref().unwrap_or("–")) } }
                        td.num { (bytes(i64::try_from(d.size).unwrap_or(i64::MAX))) }
                    }
                }
            }
        }
        (pager("/admin/dead-letters", &[("reason", current)], page, has_next))
    };
    Ok(view::respond(StatusCode::OK, view::page("Dead letters", Some(&admin), Nav::DeadLetters, body)))
}
