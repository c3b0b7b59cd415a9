//! `/organizations`: register organizations, publish and rotate their public keys.

use serde::Deserialize;
use warp::http::StatusCode;

use super::auth::Principal;
use super::{ApiError, Response, State, db, reply};
use crate::ids::OrgId;
use crate::keys::PublicKey;
use crate::server::db::directory;

/// `POST /organizations` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganization {
    name: String,
    #[serde(default)]
    public_key: Option<String>,
}

fn parse_key(text: &str) -> Result<PublicKey, ApiError> {
    text.parse().map_err(|e| ApiError::invalid(format!("invalid public key: {e}")))
}

fn check_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::invalid("a name is 1 to 200 characters"));
    }
    Ok(name)
}

/// Root registers an organization, optionally with its first public key; its queue is created.
pub async fn create(principal: Principal, body: CreateOrganization, state: State) -> Response {
    principal.require_root()?;
    let name = check_name(&body.name)?;
    let key = body.public_key.as_deref().map(parse_key).transpose()?;
    let mut client = db(&state).await?;
    let org = directory::insert_org(&**client, name).await.map_err(|e| {
        if e.is_unique_violation() {
            ApiError::conflict(format!("an organization named {name:?} exists"))
        } else {
            e.into()
        }
    })?;
    if let Some(key) = &key {
        directory::publish_key(&mut client, org.id, key).await.map_err(ApiError::from)?;
    }
    state.broker.declare_org_queue(org.id).await?;
    let org =
        directory::org(&**client, org.id).await.map_err(ApiError::from)?.ok_or_else(ApiError::internal)?;
    Ok(reply(StatusCode::CREATED, &org))
}

/// Organizations the caller can see: all for root, else its own and its collaboration partners.
pub async fn list(principal: Principal, state: State) -> Response {
    let client = db(&state).await?;
    let orgs = directory::orgs(&**client, principal.scope()).await.map_err(ApiError::from)?;
    Ok(reply(StatusCode::OK, &orgs))
}

async fn visible(
    principal: &Principal,
    id: OrgId,
    state: &State,
) -> Result<directory::Organization, ApiError> {
    let client = db(state).await?;
    let visible = directory::orgs(&**client, principal.scope()).await?;
    visible.into_iter().find(|o| o.id == id).ok_or_else(|| ApiError::not_found(format!("organization {id}")))
}

/// One organization.
pub async fn get(id: OrgId, principal: Principal, state: State) -> Response {
    Ok(reply(StatusCode::OK, &visible(&principal, id, &state).await?))
}

/// `PUT /organizations/{id}/public-key` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishKey {
    public_key: String,
}

/// An administrator of the organization publishes a new public key; the previous one is
/// retired (it still verifies envelopes created before now).
pub async fn publish_key(id: OrgId, principal: Principal, body: PublishKey, state: State) -> Response {
    principal.require_admin_of(id)?;
    let key = parse_key(&body.public_key)?;
    let mut client = db(&state).await?;
    if directory::org(&**client, id).await.map_err(ApiError::from)?.is_none() {
        return Err(ApiError::not_found(format!("organization {id}")).into());
    }
    directory::publish_key(&mut client, id, &key).await.map_err(ApiError::from)?;
    tracing::info!(org = %id, key = ?key.id(), "public key published");
    let org = directory::org(&**client, id).await.map_err(ApiError::from)?.ok_or_else(ApiError::internal)?;
    Ok(reply(StatusCode::OK, &org))
}

/// Every key the organization has published, for checking fingerprints and rotations.
pub async fn key_history(id: OrgId, principal: Principal, state: State) -> Response {
    visible(&principal, id, &state).await?;
    let client = db(&state).await?;
    let keys = directory::key_history(&**client, id).await.map_err(ApiError::from)?;
    Ok(reply(StatusCode::OK, &keys))
}
