//! `/nodes`: register a node (its API key and broker credentials are shown once), list, revoke;
//! `/node/heartbeat`: a node reports itself.

use secrecy::ExposeSecret as _;
use serde::Deserialize;
use warp::http::StatusCode;

use super::auth::{self, Principal};
use super::{ApiError, Response, State, db, reply};
use crate::broker;
use crate::ids::{NodeId, OrgId};
use crate::protocol::heartbeat::Heartbeat;
use crate::server::db::directory;

/// `POST /nodes` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNode {
    organization: OrgId,
    name: String,
}

/// An administrator of the organization (or root) registers a node.
pub async fn create(principal: Principal, body: CreateNode, state: State) -> Response {
    principal.require_admin_of(body.organization)?;
    let registration = register(&state, body.organization, &body.name).await?;
    Ok(reply(StatusCode::CREATED, &registration.answer))
}

/// A node registered: its row, and the answer that carries its secrets (shown once).
pub struct Registration {
    /// The node as stored.
    pub node: directory::Node,
    /// `{node, api_key, broker}`.
    pub answer: serde_json::Value,
}

/// Registers node `name` of `org` (the caller is entitled). The server creates the node's
/// broker user with least privilege: configure nothing, publish only to ingress, consume only
/// the organization's queue.
pub async fn register(state: &State, org: OrgId, name: &str) -> Result<Registration, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::invalid("a node name is 1 to 100 characters"));
    }
    let client = db(state).await?;
    if directory::org(&**client, org).await.map_err(ApiError::from)?.is_none() {
        return Err(ApiError::not_found(format!("organization {org}")));
    }
    let id = NodeId::new();
    let api_key = auth::new_node_key();
    let broker_user = format!("fedq-node-{id}");
    let broker_password = auth::new_node_key();
    let vhost = &state.config.broker.vhost;
    let mgmt = &state.management;
    let broker_error = |e: crate::broker::management::ManagementError| {
        tracing::warn!(error = %e, "could not create the node's broker user");
        // Say which kind of failure it is: a refusal will not go away by retrying.
        ApiError::unavailable(match e {
            crate::broker::management::ManagementError::Status { status, .. } => format!(
                "the broker's management API refused to create the node's user ({status}); the server's \
                 broker.management_user needs the administrator tag"
            ),
            crate::broker::management::ManagementError::Http(_) => {
                "the broker's management API did not answer (check the server's broker.management_url \
                 and broker.tls, and its log); retry once it is reachable"
                    .to_owned()
            }
        })
    };
    state.broker.declare_org_queue(org).await?;
    mgmt.put_user(&broker_user, &broker_password).await.map_err(broker_error)?;
    if let Err(e) = mgmt.set_permissions(vhost, &broker_user, &broker::node_permissions(org)).await {
        let _ = mgmt.delete_user(&broker_user).await;
        return Err(broker_error(e));
    }
    let inserted = directory::insert_node(
        &**client,
        id,
        org,
        name,
        &auth::secret_hash(api_key.expose_secret()),
        &broker_user,
    )
    .await;
    let node = match inserted {
        Ok(node) => node,
        Err(e) => {
            // No node row means no way to revoke the user later: remove it now.
            let _ = mgmt.delete_user(&broker_user).await;
            return Err(if e.is_unique_violation() {
                ApiError::conflict(format!("organization {org} already has a node named {name:?}"))
            } else {
                e.into()
            });
        }
    };
    tracing::info!(node = %node.id, org = %node.organization, "node registered");
    let answer = serde_json::json!({
        "node": node,
        "api_key": api_key.expose_secret(),
        "broker": {
            "url": state.broker.node_url(),
            "vhost": vhost,
            "username": broker_user,
            "password": broker_password.expose_secret(),
            "queue": broker::org_queue(org),
            "exchange": broker::INGRESS_EXCHANGE,
            "server_user": state.broker.server_user(),
        },
    });
    Ok(Registration { node, answer })
}

/// Nodes of the caller's organization (all for root).
pub async fn list(principal: Principal, state: State) -> Response {
    let client = db(&state).await?;
    let nodes = directory::nodes(&**client, principal.scope()).await.map_err(ApiError::from)?;
    Ok(reply(StatusCode::OK, &nodes))
}

async fn visible(principal: &Principal, id: NodeId, state: &State) -> Result<directory::Node, ApiError> {
    let client = db(state).await?;
    directory::node(&**client, id)
        .await?
        .filter(|n| principal.is_root() || principal.org() == Some(n.organization))
        .ok_or_else(|| ApiError::not_found(format!("node {id}")))
}

/// One node.
pub async fn get(id: NodeId, principal: Principal, state: State) -> Response {
    Ok(reply(StatusCode::OK, &visible(&principal, id, &state).await?))
}

/// Revokes a node: its API key stops working, its broker user is deleted and its open broker
/// connections are closed.
pub async fn revoke(id: NodeId, principal: Principal, state: State) -> Response {
    Ok(reply(StatusCode::OK, &revoke_node(&principal, id, &state).await?))
}

/// Revokes a node for `principal` (the API and the dashboard): root or an administrator of the
/// node's organization. Returns the node as it is afterwards.
pub async fn revoke_node(
    principal: &Principal,
    id: NodeId,
    state: &State,
) -> Result<directory::Node, ApiError> {
    let node = visible(principal, id, state).await?;
    principal.require_admin_of(node.organization)?;
    let client = db(state).await?;
    directory::revoke_node(&**client, id).await?;
    let unavailable = |e: crate::broker::management::ManagementError| {
        tracing::warn!(error = %e, node = %id, "could not revoke the node's broker user");
        ApiError::unavailable("the node is revoked at the server, but the broker could not be reached; retry")
    };
    state.management.delete_user(&node.broker_user).await.map_err(unavailable)?;
    state.management.close_connections(&node.broker_user).await.map_err(unavailable)?;
    tracing::info!(node = %id, "node revoked");
    visible(principal, id, state).await
}

/// A node reports that it is online (or going offline), its version and its policy.
pub async fn heartbeat(principal: Principal, body: Heartbeat, state: State) -> Response {
    let node = principal.require_node()?;
    body.validate().map_err(|e| ApiError::invalid(e.to_string()))?;
    let client = db(&state).await?;
    directory::heartbeat(&**client, node.id, &body).await.map_err(ApiError::from)?;
    Ok(reply(StatusCode::OK, &serde_json::json!({ "node": node.id, "online": body.online })))
}
