//! `/users`: people, their organizations and roles.

use crate::ids::UserId;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use warp::http::StatusCode;

use super::{Response, reply};
use crate::app::access::{self, UserCreation};
use crate::app::users as app_users;
use crate::app::{AppError, Principal, State, db, logins};
use crate::db::DbError;
use crate::db::users::{self, Role};
use crate::ids::OrgId;

/// `POST /users` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    username: String,
    password: SecretString,
    role: Role,
    #[serde(default)]
    organization: Option<OrgId>,
}

/// Root creates root administrators and an organization's first administrator; an
/// organization's administrators create its users ([`access::may_create_user`]).
pub async fn create(principal: Principal, body: CreateUser, state: State) -> Response {
    let creation = match (body.role, body.organization) {
        (Role::Root, None) => {
            principal.require_root()?;
            None
        }
        (Role::Root, Some(_)) => {
            return Err(AppError::invalid("a root administrator has no organization").into());
        }
        (_, None) => return Err(AppError::invalid("this role needs an organization").into()),
        (role, Some(org)) => Some((org, access::may_create_user(&principal, org, role)?)),
    };
    let username = body.username.trim();
    if username.is_empty() || username.len() > 100 || username.chars().any(char::is_whitespace) {
        return Err(AppError::invalid("a user name is 1 to 100 characters without spaces").into());
    }
    if body.password.expose_secret().chars().count() < 12 {
        return Err(AppError::invalid("a password has at least 12 characters").into());
    }
    let password = body.password;
    let hash = tokio::task::spawn_blocking(move || logins::hash_password(&password))
        .await
        .map_err(|_| AppError::internal())??;
    let mut client = db(&state).await?;
    let taken = |e: DbError| {
        if e.is_unique_violation() {
            AppError::conflict(format!("user name {username:?} is taken"))
        } else {
            e.into()
        }
    };
    let user = match creation {
        Some((org, UserCreation::FirstAdministratorByRoot)) => {
            users::insert_first_admin(&mut client, org, username, &hash).await.map_err(taken)?.ok_or_else(
                || {
                    AppError::forbidden(format!(
                        "organization {org} has an administrator: root creates only an organization's first \
                     administrator; its other users are created by that administrator"
                    ))
                },
            )?
        }
        _ => users::insert(&**client, body.organization, username, &hash, body.role).await.map_err(taken)?,
    };
    Ok(reply(StatusCode::CREATED, &user))
}

/// Users of the caller's organization (all users for root).
pub async fn list(principal: Principal, state: State) -> Response {
    principal.require_user()?;
    let client = db(&state).await?;
    let users = users::list(&**client, principal.scope()).await.map_err(AppError::from)?;
    Ok(reply(StatusCode::OK, &users))
}

/// The caller.
pub async fn me(principal: Principal) -> Response {
    match &principal {
        Principal::User(u) => Ok(reply(StatusCode::OK, u)),
        Principal::Node(n) => Ok(reply(StatusCode::OK, n)),
    }
}

/// Root deletes root administrators; an organization's administrators delete its users, but not
/// its last administrator ([`app_users::delete`]).
pub async fn delete(id: UserId, principal: Principal, state: State) -> Response {
    Ok(reply(StatusCode::OK, &app_users::delete(&principal, id, &state).await?))
}

/// `PATCH /users/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    role: Role,
}

/// An organization's administrators change the roles of its users (not root); never to or from
/// root, and never the organization's last administrator away from it.
pub async fn set_role(id: UserId, principal: Principal, body: SetRole, state: State) -> Response {
    Ok(reply(StatusCode::OK, &app_users::set_role(&principal, id, body.role, &state).await?))
}
