//! `/admin`: the federation at a glance. The part below the summary is also served alone at
//! `/admin/live`, which the page fetches every few seconds (plain `fetch`, no framework).

use maud::{Markup, html};
use warp::http::StatusCode;

use super::Page;
use super::names;
use crate::app::{AppError, State, db};
use crate::broker;
use crate::dashboard::session::Admin;
use crate::dashboard::view::{self, Names, Nav, badge, short, when_opt};
use crate::db::{directory, monitor};

/// `GET /admin`.
pub async fn page(admin: Admin, state: State) -> Page {
    let live = live_section(&admin, &state).await?;
    let body = html! {
        section #live data-live="/admin/live" { (live) }
    };
    Ok(view::respond(StatusCode::OK, view::page("Overview", Some(&admin), Nav::Overview, body)))
}

/// `GET /admin/live`: the overview's changing part, as an HTML fragment.
pub async fn live(admin: Admin, state: State) -> Page {
    Ok(view::respond(StatusCode::OK, live_section(&admin, &state).await?))
}

async fn live_section(admin: &Admin, state: &State) -> Result<Markup, AppError> {
    let scope = admin.scope();
    let (orgs, collaborations, nodes, counts, head) = {
        let pooled = db(state).await?;
        let head = crate::db::transparency::head(&pooled, None).await?;
        let client = &**pooled;
        let orgs = names(client, scope).await?;
        let collaborations = directory::collaborations(client, scope).await?;
        let nodes = directory::nodes(client, scope).await?;
        let counts = monitor::counts(client, scope).await?;
        (orgs, collaborations, nodes, counts, head)
    };
    // Nodes whose monitor of the transparency log reports an alarm.
    let alarmed = nodes
        .iter()
        .filter(|n| n.revoked_at.is_none() && n.transparency.as_ref().is_some_and(|r| !r.alarms.is_empty()))
        .count();
    let reading = state.broker_stats.read(&state.management, &state.config.broker.vhost).await;
    // An organization administrator's federation is their organization and its partners.
    let own_orgs = orgs.0.len();
    let live_nodes: Vec<_> = nodes.iter().filter(|n| n.revoked_at.is_none()).collect();
    let online = live_nodes.iter().filter(|n| n.online).count();
    let tasks: i64 = counts.tasks.iter().map(|(_, n)| n).sum();
    Ok(html! {
        div.cards {
            div.card { span.n { (own_orgs) } span.l { @if scope.is_some() { "organizations (yours and partners)" } @else { "organizations" } } }
            div.card { span.n { (collaborations.len()) } span.l { "collaborations" } }
            div.card #nodes-online { span.n { (online) " / " (live_nodes.len()) } span.l { "nodes online" } }
            div.card { span.n { (tasks) } span.l { "tasks" } }
            div.card { span.n { (counts.routed_last_minute) } span.l { "envelopes routed, last minute" } }
            a.card.warn[counts.dead_letters_last_hour > 0] href="/admin/dead-letters" {
                span.n { (counts.dead_letters) } span.l { "dead letters (" (counts.dead_letters_last_hour) " last hour)" }
            }
            div.card.warn[counts.repeated > 0] #repeated {
                span.n { (counts.repeated) } span.l { "envelopes repeated after routing, dropped" }
            }
            a.card.warn[alarmed > 0] #transparency href="/admin/organizations" {
                @match &head {
                    Some(h) => {
                        span.n { (h.head.size) }
                        span.l { "leaves in the transparency log, root " code { (hex::encode(&h.head.root[..8])) } "…; "
                            (alarmed) " node(s) reporting an alarm" }
                    }
                    None => { span.n { "–" } span.l { "transparency log: no signed head yet" } }
                }
            }
        }
        div.grid {
            section {
                h2 { "Nodes" }
                table #node-table {
                    thead { tr { th { "Node" } th { "Organization" } th { "Status" } th { "Version" } th { "Last seen" } } }
                    tbody {
                        @for node in &live_nodes {
                            tr data-node=(node.name) {
                                td { (node.name) }
                                td { (orgs.org(node.organization)) }
                                td.status { (badge(if node.online { "online" } else { "offline" })) }
                                td { (node.version.as_deref().unwrap_or("–")) }
                                td { (when_opt(node.last_seen_at)) }
                            }
                        }
                        @if live_nodes.is_empty() { tr { td colspan="5" .muted { "No node is registered." } } }
                    }
                }
            }
            section {
                h2 { "Tasks by status" }
                table.counts {
                    @for (status, n) in &counts.tasks {
                        tr { td { a href={ "/admin/tasks?task_status=" (status) } { (badge(status)) } } td.num { (n) } }
                    }
                    @if counts.tasks.is_empty() { tr { td.muted { "No task yet." } } }
                }
                h2 { @if scope.is_some() { "Jobs at your nodes by status" } @else { "Jobs by status" } }
                table.counts {
                    @for (status, n) in &counts.jobs {
                        tr { td { a href={ "/admin/tasks?status=" (status) } { (badge(status)) } } td.num { (n) } }
                    }
                }
            }
        }
        section {
            h2 { "Broker" }
            (broker_table(admin, &orgs, &reading))
        }
    })
}

fn broker_table(admin: &Admin, orgs: &Names, reading: &crate::app::broker_stats::Reading) -> Markup {
    let queues = match &reading.queues {
        Ok(queues) => queues,
        Err(e) => return html! { p.error role="alert" { "Broker statistics unavailable: " (e) } },
    };
    // Organization administrators see their own queue only: other queues' depths say how busy
    // other organizations are.
    let own = admin.scope().map(broker::org_queue);
    let shown: Vec<_> = queues.iter().filter(|q| own.as_ref().is_none_or(|own| &q.name == own)).collect();
    html! {
        table #broker-table {
            thead { tr {
                th { "Queue" } th { "For" } th.num { "Ready" } th.num { "Unacked" } th.num { "Consumers" }
                th.num { "In /s" } th.num { "Out /s" }
            } }
            tbody {
                @for q in shown {
                    tr.warn[q.name == broker::DEAD_QUEUE && q.messages > 0] {
                        td { code { (q.name) } }
                        td { (queue_owner(&q.name, orgs)) }
                        td.num { (q.messages_ready) }
                        td.num { (q.messages_unacknowledged) }
                        td.num { (q.consumers) }
                        td.num { (format!("{:.1}", q.message_stats.publish_details.rate)) }
                        td.num { (format!("{:.1}", q.message_stats.deliver_get_details.rate)) }
                    }
                }
            }
        }
    }
}

fn queue_owner(name: &str, orgs: &Names) -> Markup {
    if name == broker::INGRESS_QUEUE {
        return html! { "the router (ingress)" };
    }
    if name == broker::DEAD_QUEUE {
        return html! { "refused envelopes" };
    }
    match name.strip_prefix(broker::ORG_QUEUE_PREFIX).and_then(|id| id.parse().ok()) {
        Some(org) => orgs.org(org),
        None => short(&name),
    }
}
