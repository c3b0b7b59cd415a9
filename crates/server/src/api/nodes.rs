//! `/nodes`: register a node (its API key and broker credentials are shown once), list, revoke;
//! `/node/heartbeat`: a node reports itself.

use warp::http::StatusCode;

use super::{Response, reply};
use crate::app::nodes::{self, revoke_node, visible};
use crate::app::{AppError, Principal, State, db};
use crate::db::directory;
use crate::ids::NodeId;
use crate::protocol::heartbeat::Heartbeat;

/// An administrator of the organization (or root) registers a node.
pub async fn create(principal: Principal, body: crate::contract::CreateNode, state: State) -> Response {
    let registration = nodes::create(&principal, body.organization, &body.name, &state).await?;
    Ok(reply(StatusCode::CREATED, &registration))
}

/// Nodes of the caller's organization (all for root).
pub async fn list(principal: Principal, state: State) -> Response {
    let client = db(&state).await?;
    let nodes = directory::nodes(&**client, principal.scope()).await.map_err(AppError::from)?;
    Ok(reply(StatusCode::OK, &nodes))
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

/// A node reports that it is online (or going offline), its version and its policy.
pub async fn heartbeat(principal: Principal, body: Heartbeat, state: State) -> Response {
    let node = principal.require_node()?;
    body.validate().map_err(|e| AppError::invalid(e.to_string()))?;
    let client = db(&state).await?;
    directory::heartbeat(&**client, node.id, &body).await.map_err(AppError::from)?;
    Ok(reply(StatusCode::OK, &serde_json::json!({ "node": node.id, "online": body.online })))
}
