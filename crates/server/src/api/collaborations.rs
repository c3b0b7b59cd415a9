//! `/collaborations`: which organizations analyse together, and their public keys.

use warp::http::StatusCode;

use super::{Response, reply};
use crate::app::collaborations::visible;
use crate::app::{AppError, Principal, State, db};
use crate::contract;
use crate::db::directory;
use crate::ids::{CollaborationId, OrgId};

/// Root creates a collaboration of existing organizations.
pub async fn create(principal: Principal, body: contract::CreateCollaboration, state: State) -> Response {
    principal.require_root()?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(AppError::invalid("a name is 1 to 200 characters").into());
    }
    let mut client = db(&state).await?;
    let collaboration =
        directory::insert_collaboration(&mut client, name, &body.organizations).await.map_err(|e| {
            if e.is_unique_violation() {
                AppError::conflict(format!("a collaboration named {name:?} exists"))
            } else if e.is_foreign_key_violation() {
                AppError::invalid("an organization of the list does not exist")
            } else {
                e.into()
            }
        })?;
    Ok(reply(StatusCode::CREATED, &contract::Collaboration::from(collaboration)))
}

/// Collaborations the caller's organization belongs to (all for root).
pub async fn list(principal: Principal, state: State) -> Response {
    let client = db(&state).await?;
    let list = directory::collaborations(&**client, principal.scope()).await.map_err(AppError::from)?;
    let list: Vec<contract::Collaboration> = list.into_iter().map(Into::into).collect();
    Ok(reply(StatusCode::OK, &list))
}

/// One collaboration.
pub async fn get(id: CollaborationId, principal: Principal, state: State) -> Response {
    Ok(reply(StatusCode::OK, &contract::Collaboration::from(visible(&principal, id, &state).await?)))
}

/// Root adds or removes a member.
pub async fn set_member(
    id: CollaborationId,
    org: OrgId,
    principal: Principal,
    state: State,
    member: bool,
) -> Response {
    principal.require_root()?;
    let client = db(&state).await?;
    if directory::collaboration(&**client, id).await.map_err(AppError::from)?.is_none() {
        return Err(AppError::not_found(format!("collaboration {id}")).into());
    }
    directory::set_member(&**client, id, org, member).await.map_err(|e| {
        if e.is_foreign_key_violation() {
            AppError::not_found(format!("organization {org}"))
        } else {
            e.into()
        }
    })?;
    let collaboration = directory::collaboration(&**client, id).await.map_err(AppError::from)?;
    Ok(reply(StatusCode::OK, &collaboration.map(contract::Collaboration::from)))
}

/// The current public keys of the members: what clients and nodes seal to.
pub async fn public_keys(id: CollaborationId, principal: Principal, state: State) -> Response {
    visible(&principal, id, &state).await?;
    let client = db(&state).await?;
    let keys = directory::collaboration_keys(&**client, id).await.map_err(AppError::from)?;
    Ok(reply(StatusCode::OK, &keys))
}
