//! `/users`: people, their organizations and roles.

use crate::contract;
use crate::ids::UserId;
use secrecy::SecretString;
use warp::http::StatusCode;

use super::{Response, reply};
use crate::app::users as app_users;
use crate::app::{AppError, Principal, State, db};
use crate::db::users;

/// Root creates root administrators and an organization's first administrator; an
/// organization's administrators create its users ([`app_users::create`]).
pub async fn create(principal: Principal, body: contract::CreateUser, state: State) -> Response {
    let new = app_users::NewUser {
        username: body.username,
        password: SecretString::from(body.password.into_inner()),
        role: body.role,
        organization: body.organization,
    };
    Ok(reply(StatusCode::CREATED, &contract::User::from(app_users::create(&principal, new, &state).await?)))
}

/// Users of the caller's organization (all users for root).
pub async fn list(principal: Principal, state: State) -> Response {
    principal.require_user()?;
    let client = db(&state).await?;
    let users = users::list(&**client, principal.scope()).await.map_err(AppError::from)?;
    let users: Vec<contract::User> = users.into_iter().map(Into::into).collect();
    Ok(reply(StatusCode::OK, &users))
}

/// The caller.
pub async fn me(principal: Principal) -> Response {
    let me = match principal {
        Principal::User(u) => contract::Me::User(u.into()),
        Principal::Node(n) => contract::Me::Node(n),
    };
    Ok(reply(StatusCode::OK, &me))
}

/// Root deletes root administrators; an organization's administrators delete its users, but not
/// its last administrator ([`app_users::delete`]).
pub async fn delete(id: UserId, principal: Principal, state: State) -> Response {
    Ok(reply(StatusCode::OK, &contract::User::from(app_users::delete(&principal, id, &state).await?)))
}

/// An organization's administrators change the roles of its users (not root); never to or from
/// root, and never the organization's last administrator away from it.
pub async fn set_role(id: UserId, principal: Principal, body: contract::SetRole, state: State) -> Response {
    Ok(reply(
        StatusCode::OK,
        &contract::User::from(app_users::set_role(&principal, id, body.role, &state).await?),
    ))
}
