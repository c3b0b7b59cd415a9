//! `/organizations`: register organizations, publish and rotate their public keys.

use warp::http::StatusCode;

use super::{Response, reply};
use crate::app::{AppError, Principal, State, db};
use crate::contract;
use crate::ids::OrgId;
use base64::Engine as _;

use crate::db::directory;
use crate::keys::{PublicKey, Rotation};

fn parse_key(text: &str) -> Result<PublicKey, AppError> {
    text.parse().map_err(|e| AppError::invalid(format!("invalid public key: {e}")))
}

fn check_name(name: &str) -> Result<&str, AppError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(AppError::invalid("a name is 1 to 200 characters"));
    }
    Ok(name)
}

/// Root registers an organization; its queue is created. Its key is published by its own
/// administrator afterwards, never by root.
pub async fn create(principal: Principal, body: contract::CreateOrganization, state: State) -> Response {
    principal.require_root()?;
    let name = check_name(&body.name)?;
    if body.public_key.is_some() {
        return Err(AppError::invalid(
            "public_key: an organization's key is published by its own administrator \
             (PUT /api/v1/organizations/{id}/public-key, or `fedq keys publish`), not by root",
        )
        .into());
    }
    let client = db(&state).await?;
    let org = directory::insert_org(&**client, name).await.map_err(|e| {
        if e.is_unique_violation() {
            AppError::conflict(format!("an organization named {name:?} exists"))
        } else {
            e.into()
        }
    })?;
    state.broker.declare_org_queue(org.id).await?;
    let org =
        directory::org(&**client, org.id).await.map_err(AppError::from)?.ok_or_else(AppError::internal)?;
    Ok(reply(StatusCode::CREATED, &contract::Organization::from(org)))
}

/// Organizations the caller can see: all for root, else its own and its collaboration partners.
pub async fn list(principal: Principal, state: State) -> Response {
    let client = db(&state).await?;
    let orgs = directory::orgs(&**client, principal.scope()).await.map_err(AppError::from)?;
    let orgs: Vec<contract::Organization> = orgs.into_iter().map(Into::into).collect();
    Ok(reply(StatusCode::OK, &orgs))
}

async fn visible(
    principal: &Principal,
    id: OrgId,
    state: &State,
) -> Result<directory::Organization, AppError> {
    let client = db(state).await?;
    let visible = directory::orgs(&**client, principal.scope()).await?;
    visible.into_iter().find(|o| o.id == id).ok_or_else(|| AppError::not_found(format!("organization {id}")))
}

/// One organization.
pub async fn get(id: OrgId, principal: Principal, state: State) -> Response {
    Ok(reply(StatusCode::OK, &contract::Organization::from(visible(&principal, id, &state).await?)))
}

/// An administrator who belongs to the organization publishes a new public key; the previous
/// one is retired (it still verifies envelopes created before now). With a rotation signature
/// made by the current key, members follow the change by themselves; without one, each member
/// must trust the new fingerprint by hand.
pub async fn publish_key(
    id: OrgId,
    principal: Principal,
    body: contract::PublishKey,
    state: State,
) -> Response {
    principal.require_own_admin(id)?;
    let key = parse_key(&body.public_key)?;
    let mut client = db(&state).await?;
    if directory::org(&**client, id).await.map_err(AppError::from)?.is_none() {
        return Err(AppError::not_found(format!("organization {id}")).into());
    }
    let current = directory::current_key(&**client, id).await.map_err(AppError::from)?;
    let signature = match &body.rotation_signature {
        None => None,
        Some(text) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .ok()
                .and_then(|b| <[u8; 64]>::try_from(b).ok())
                .ok_or_else(|| AppError::invalid("rotation_signature: 64 bytes in standard base64"))?;
            let Some(current) = &current else {
                return Err(AppError::invalid(
                    "rotation_signature: the organization has no key yet, so there is nothing to rotate from",
                )
                .into());
            };
            let rotation = Rotation { org: id, old: current.id(), new: key.clone(), signature: bytes };
            if !rotation.verify(current) {
                return Err(AppError::invalid(format!(
                    "rotation_signature does not verify with the current key {}: sign the rotation with \
                     that key (`fedq keys publish --key NEW.key --previous-key CURRENT.key`)",
                    current.id()
                ))
                .into());
            }
            Some(bytes)
        }
    };
    let previous = current.filter(|c| c.id() != key.id()).map(|c| (c.id(), signature));
    directory::publish_key(&mut client, id, &key, previous).await.map_err(AppError::from)?;
    tracing::info!(org = %id, key = %key.id(), signed = signature.is_some(), "public key published");
    let org = directory::org(&**client, id).await.map_err(AppError::from)?.ok_or_else(AppError::internal)?;
    Ok(reply(StatusCode::OK, &contract::Organization::from(org)))
}

/// `POST /organizations/{id}/keys/{fingerprint}/revoke`: the key was compromised. Unlike a
/// retired key it verifies nothing any more, whatever creation time an envelope claims; members
/// learn it with the collaboration's keys and stop trusting it once the revocation's signature,
/// by the revoked key or another key of the organization, verifies. An administrator who belongs
/// to the organization (not root: the statement is the organization's, and members check it).
pub async fn revoke_key(
    id: OrgId,
    fingerprint: String,
    principal: Principal,
    body: contract::RevokeKey,
    state: State,
) -> Response {
    principal.require_own_admin(id)?;
    let fingerprint_of = |text: &str, what: &str| {
        text.trim()
            .parse::<crate::keys::KeyId>()
            .map_err(|_| AppError::invalid(format!("{what}: a fingerprint, `SHA256:<64 hex digits>`")))
    };
    let key = fingerprint_of(&fingerprint, "the key revoked")?;
    let signer = fingerprint_of(&body.signed_by, "signed_by")?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(body.signature.trim())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or_else(|| AppError::invalid("signature: 64 bytes in standard base64"))?;
    let client = db(&state).await?;
    let history = directory::key_history(&**client, id).await.map_err(AppError::from)?;
    let signing_key = history
        .iter()
        .find(|k| k.key_id == signer.to_string() && (k.revoked_at.is_none() || signer == key))
        .and_then(|k| k.public_key.parse::<crate::keys::PublicKey>().ok())
        .ok_or_else(|| {
            AppError::invalid(format!(
                "signed_by: {signer} is no unrevoked key of organization {id}; sign with the key revoked or the \
                 organization's current one"
            ))
        })?;
    let revocation = crate::keys::Revocation { org: id, key, signer, signature };
    if !revocation.verify(&signing_key) {
        return Err(AppError::invalid(format!(
            "signature does not verify with {signer}: sign the revocation with that key (`fedq admin key revoke \
             ORGANIZATION FINGERPRINT --key FILE`)"
        ))
        .into());
    }
    match directory::revoke_key(&**client, id, &revocation).await.map_err(AppError::from)? {
        None => Err(AppError::not_found(format!("key {key} of organization {id}")).into()),
        Some(was_live) => {
            if was_live {
                tracing::warn!(org = %id, key = %key, signed_by = %signer, "organization key revoked");
            }
            Ok(warp::Reply::into_response(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT)))
        }
    }
}

/// Every key the organization has published, for checking fingerprints and rotations.
pub async fn key_history(id: OrgId, principal: Principal, state: State) -> Response {
    visible(&principal, id, &state).await?;
    let client = db(&state).await?;
    let keys = directory::key_history(&**client, id).await.map_err(AppError::from)?;
    Ok(reply(StatusCode::OK, &keys))
}
