//! Enrollment: a node registered with one command on its own machine. An organization's
//! administrator creates a one-time token for a node name (`POST
//! /organizations/{id}/enrollments`); `fedq node enroll` trades it (`POST /enroll`, the token
//! its only credential) for the node's registration, which it writes into a complete node.toml.

use serde::Deserialize;
use warp::http::StatusCode;

use super::{Response, reply};
use crate::app::enrollments::{create_token, enroll as trade};
use crate::app::{Principal, State};
use crate::ids::OrgId;

/// `POST /organizations/{id}/enrollments` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollment {
    node_name: String,
    #[serde(default)]
    valid_secs: Option<u64>,
}

/// An administrator of the organization (or root) creates a token that enrolls one node of
/// that name. The token is shown once.
pub async fn create(org: OrgId, principal: Principal, body: CreateEnrollment, state: State) -> Response {
    let created = create_token(&principal, org, &body.node_name, body.valid_secs, &state).await?;
    Ok(reply(StatusCode::CREATED, &created))
}

/// `POST /enroll` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enroll {
    token: secrecy::SecretString,
}

/// Trades a token for the node's registration, once.
pub async fn enroll(body: Enroll, state: State) -> Response {
    Ok(reply(StatusCode::CREATED, &trade(&body.token, &state).await?))
}
