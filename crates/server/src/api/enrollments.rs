//! Enrollment: a node registered with one command on its own machine. An organization's
//! administrator creates a one-time token for a node name (`POST
//! /organizations/{id}/enrollments`); `fedq node enroll` trades it (`POST /enroll`, the token
//! its only credential) for the node's registration, which it writes into a complete node.toml.

use warp::http::StatusCode;

use super::{Response, reply};
use crate::app::enrollments::{create_token, enroll as trade};
use crate::app::{Principal, State};
use crate::ids::OrgId;

/// An administrator of the organization (or root) creates a token that enrolls one node of
/// that name. The token is shown once.
pub async fn create(
    org: OrgId,
    principal: Principal,
    body: crate::contract::CreateEnrollment,
    state: State,
) -> Response {
    let created = create_token(&principal, org, &body.node_name, body.valid_secs, &state).await?;
    Ok(reply(StatusCode::CREATED, &created))
}

/// Trades a token for the node's registration, once.
pub async fn enroll(body: crate::contract::Enroll, state: State) -> Response {
    let token = secrecy::SecretString::from(body.token.into_inner());
    Ok(reply(StatusCode::CREATED, &trade(&token, &state).await?))
}
