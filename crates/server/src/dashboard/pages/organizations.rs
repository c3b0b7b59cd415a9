//! `/admin/organizations`: each organization with its key fingerprint (to compare out of band),
//! its key history and its nodes (version, last seen, policy), collaborations, the revoke
//! action, and enrollment tokens for new nodes.

use maud::{Markup, html};
use warp::http::StatusCode;

use super::Page;
use std::collections::HashMap;

use crate::app::enrollments::create_token;
use crate::app::nodes::revoke_node;
use crate::app::{State, db};
use crate::dashboard::session::Admin;
use crate::dashboard::view::{self, Nav, badge, fingerprint, short, when, when_opt};
use crate::db::directory::{self, Node};
use crate::ids::{NodeId, OrgId};

/// `GET /admin/organizations`.
pub async fn page(admin: Admin, state: State) -> Page {
    let scope = admin.scope();
    let client = db(&state).await?;
    let client = &**client;
    // An organization administrator sees their own organization only, not its partners.
    let orgs: Vec<_> = directory::orgs(client, scope)
        .await?
        .into_iter()
        .filter(|o| scope.is_none_or(|s| s == o.id))
        .collect();
    let nodes = directory::nodes(client, scope).await?;
    let collaborations = directory::collaborations(client, scope).await?;
    let ids: Vec<_> = orgs.iter().map(|o| o.id).collect();
    let all_keys = directory::key_histories(client, &ids).await?;
    let mut sections = Vec::with_capacity(orgs.len());
    for org in &orgs {
        let keys: Vec<_> = all_keys.iter().filter(|k| k.organization == org.id).collect();
        let org_nodes: Vec<&Node> = nodes.iter().filter(|n| n.organization == org.id).collect();
        sections.push(html! {
            section.org data-org=(org.name) {
                h2 { (org.name) " " small { code { (org.id) } } }
                dl.facts {
                    dt { "Key fingerprint" }
                    dd.fingerprint { @match &org.fingerprint {
                        Some(f) => (fingerprint(f)),
                        None => span.muted { "no key published" },
                    } }
                }
                details {
                    summary { "Key history (" (keys.len()) ")" }
                    table {
                        thead { tr { th { "Fingerprint" } th { "Published" } th { "Retired" } } }
                        tbody { @for key in &keys {
                            tr { td { (fingerprint(&key.key_id)) } td { (when(key.published_at)) } td { (when_opt(key.retired_at)) } }
                        } }
                    }
                }
                h3 { "Nodes" }
                (node_table(&admin, &org_nodes))
                form.enroll method="post" action={ "/admin/organizations/" (org.id) "/enrollments" } {
                    input type="hidden" name="csrf" value=(admin.csrf());
                    label { "New node " input type="text" name="node_name" required pattern="[A-Za-z0-9_-]{1,40}"
                        placeholder="registry-a-2" title="1 to 40 letters, digits, - or _"; }
                    " "
                    button type="submit" { "Create an enrollment token" }
                }
            }
        });
    }
    let body = html! {
        @for section in sections { (section) }
        h2 { "Collaborations" }
        table {
            thead { tr { th { "Collaboration" } th { "Members" } } }
            tbody { @for c in &collaborations {
                tr { td { (c.name) } td { (c.organizations.iter().map(|o| orgs.iter().find(|x| x.id == *o)
                    .map(|x| x.name.clone()).unwrap_or_else(|| o.to_string()[..8].to_owned())).collect::<Vec<_>>().join(", ")) } }
            } }
        }
    };
    Ok(view::respond(
        StatusCode::OK,
        view::page("Organizations & nodes", Some(&admin), Nav::Organizations, body),
    ))
}

fn node_table(admin: &Admin, nodes: &[&Node]) -> Markup {
    html! {
        table.nodes {
            thead { tr { th { "Node" } th { "Status" } th { "Version" } th { "Last seen" } th { "Policy" } th { "Transparency log" } th {} } }
            tbody {
                @for node in nodes {
                    tr data-node=(node.name) {
                        td { (node.name) br; (short(&node.id)) }
                        td.status { @if node.revoked_at.is_some() { (badge("revoked")) } @else { (badge(if node.online { "online" } else { "offline" })) } }
                        td { (node.version.as_deref().unwrap_or("–")) }
                        td { (when_opt(node.last_seen_at)) }
                        td.policy { @match &node.policy {
                            Some(p) => {
                                div { "images: " @for (i, image) in p.images.iter().enumerate() { @if i > 0 { ", " } code { (image) } } }
                                div { "requesters: " (p.requesters.join(", ")) }
                                div { (p.concurrent_jobs) " jobs at once, " (p.memory_mib) " MiB, " (p.timeout_secs) " s; logs "
                                    (if p.share_logs { "shared on request" } else { "kept at the node" }) }
                            }
                            None => span.muted { "not reported" },
                        } }
                        td.log { @match &node.transparency {
                            Some(r) if !r.alarms.is_empty() => {
                                (badge("alarm"))
                                @for alarm in &r.alarms { div.alarm { (alarm) } }
                            }
                            Some(r) => { @match r.size {
                                Some(size) => { "checked to " (size) " leaves, no alarm" }
                                None => span.muted { "not checked yet" },
                            } }
                            None => span.muted { "not reported" },
                        } }
                        td {
                            @if node.revoked_at.is_none() {
                                form method="post" action={ "/admin/nodes/" (node.id) "/revoke" }
                                    data-confirm={ "Revoke node " (node.name) "? Its API key and broker user stop working at once." } {
                                    input type="hidden" name="csrf" value=(admin.csrf());
                                    button.danger type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                }
                @if nodes.is_empty() { tr { td colspan="7" .muted { "No node registered." } } }
            }
        }
    }
}

/// `POST /admin/organizations/{id}/enrollments`: a one-time token for a new node, shown on
/// this answer only (never stored in clear, never in a URL).
pub async fn enroll(org: OrgId, admin: Admin, form: HashMap<String, String>, state: State) -> Page {
    let name = form.get("node_name").map(String::as_str).unwrap_or_default();
    let created = create_token(&admin.principal(), org, name, None, &state).await?;
    let body = html! {
        p { "A token that enrolls node " strong { (created.node_name) } " of " strong { (created.organization_name) }
            ", once, until " (when(created.expires_at)) ". It is shown only now: copy it to the node's machine." }
        pre.token { code { (created.token) } }
        p { "On the node's machine, as root:" }
        pre { code { "FEDQ_ENROLLMENT_TOKEN=… fedq node enroll --server URL --ca-file CA.pem \\\n    --data LABEL=PATH --allow IMAGE --requester ORG_ID\nfedq node check" } }
        p { a href="/admin/organizations" { "Back to organizations" } }
    };
    let mut response = view::respond(
        StatusCode::CREATED,
        view::page("Enrollment token", Some(&admin), Nav::Organizations, body),
    );
    response
        .headers_mut()
        .insert(warp::http::header::CACHE_CONTROL, warp::http::HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /admin/nodes/{id}/revoke`.
pub async fn revoke(id: NodeId, admin: Admin, state: State) -> Page {
    let node = revoke_node(&admin.principal(), id, &state).await?;
    tracing::info!(node = %id, name = %node.name, by = %admin.user.username, "node revoked from the dashboard");
    Ok(view::redirect("/admin/organizations"))
}
