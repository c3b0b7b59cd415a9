//! Nodes: registration (the node's API key and broker user with least privilege) and
//! revocation (its key stops working, its broker user is deleted and its connections closed).

use secrecy::ExposeSecret as _;

use super::{AppError, Principal, State, access, db, logins};
use crate::broker;
use crate::contract::{BrokerAccess, NodeRegistration, ShownOnce};
use crate::db::directory;
use crate::ids::{NodeId, OrgId};

/// Registers node `name` of `org` for `principal`: root or an administrator of `org`.
pub async fn create(
    principal: &Principal,
    org: OrgId,
    name: &str,
    state: &State,
) -> Result<NodeRegistration, AppError> {
    principal.require_admin_of(org)?;
    register(state, org, name).await
}

/// Registers node `name` of `org` (the caller is entitled: [`create`], or an enrollment token). The server creates the node's
/// broker user with least privilege: configure nothing, publish only to ingress, consume only
/// the organization's queue.
pub async fn register(state: &State, org: OrgId, name: &str) -> Result<NodeRegistration, AppError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(AppError::invalid("a node name is 1 to 100 characters"));
    }
    let client = db(state).await?;
    if directory::org(&**client, org).await.map_err(AppError::from)?.is_none() {
        return Err(AppError::not_found(format!("organization {org}")));
    }
    let id = NodeId::new();
    let api_key = logins::new_node_key();
    let broker_user = format!("fedq-node-{id}");
    let broker_password = logins::new_node_key();
    let vhost = &state.config.broker.vhost;
    let mgmt = &state.management;
    let broker_error = |e: crate::broker::management::ManagementError| {
        tracing::warn!(error = %e, "could not create the node's broker user");
        // Say which kind of failure it is: a refusal will not go away by retrying.
        AppError::unavailable(match e {
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
        &logins::secret_hash(api_key.expose_secret()),
        &broker_user,
    )
    .await;
    let node = match inserted {
        Ok(node) => node,
        Err(e) => {
            // No node row means no way to revoke the user later: remove it now.
            let _ = mgmt.delete_user(&broker_user).await;
            return Err(if e.is_unique_violation() {
                AppError::conflict(format!("organization {org} already has a node named {name:?}"))
            } else {
                e.into()
            });
        }
    };
    tracing::info!(node = %node.id, org = %node.organization, "node registered");
    Ok(NodeRegistration {
        node,
        api_key: ShownOnce::new(api_key.expose_secret()),
        broker: BrokerAccess {
            url: state.broker.node_url().to_owned(),
            vhost: vhost.clone(),
            username: broker_user,
            password: ShownOnce::new(broker_password.expose_secret()),
            queue: broker::org_queue(org),
            exchange: broker::INGRESS_EXCHANGE.to_owned(),
            server_user: state.broker.server_user().to_owned(),
            ca_pem: None,
        },
        organization: None,
    })
}

/// A node `principal` may see, or `not_found` (whether it exists or not).
pub async fn visible(principal: &Principal, id: NodeId, state: &State) -> Result<directory::Node, AppError> {
    let client = db(state).await?;
    directory::node(&**client, id)
        .await?
        .filter(|n| access::node_visible(principal, n))
        .ok_or_else(|| AppError::not_found(format!("node {id}")))
}

/// Revokes a node for `principal` (the API and the dashboard): root or an administrator of the
/// node's organization. Returns the node as it is afterwards.
pub async fn revoke_node(
    principal: &Principal,
    id: NodeId,
    state: &State,
) -> Result<directory::Node, AppError> {
    let node = visible(principal, id, state).await?;
    principal.require_admin_of(node.organization)?;
    // The broker first: a node whose broker user is gone can do nothing, whatever the database
    // says, while the other order would leave a node revoked on paper still consuming when the
    // broker fails. Both steps are idempotent, so a retry finishes what a failure left.
    let unavailable = |e: crate::broker::management::ManagementError| {
        tracing::warn!(error = %e, node = %id, "could not revoke the node's broker user");
        AppError::unavailable("the broker could not be reached, so the node is not revoked yet; retry")
    };
    state.management.delete_user(&node.broker_user).await.map_err(unavailable)?;
    state.management.close_connections(&node.broker_user).await.map_err(unavailable)?;
    let client = db(state).await?;
    directory::revoke_node(&**client, id, node.organization).await?;
    tracing::info!(node = %id, "node revoked");
    visible(principal, id, state).await
}
