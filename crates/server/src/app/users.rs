//! Users as the application sees them: which ones a caller may see, creating one, changing a
//! role, deleting one; an organization keeps at least one administrator.

use secrecy::{ExposeSecret as _, SecretString};

use super::access::UserCreation;
use super::{AppError, Principal, State, access, db, logins};
use crate::db::DbError;
use crate::db::users::{self, Role, User};
use crate::ids::{OrgId, UserId};

/// A user the caller may see, or `not_found` (whether it exists or not).
pub async fn visible(principal: &Principal, id: UserId, state: &State) -> Result<User, AppError> {
    let client = db(state).await?;
    users::get(&**client, id)
        .await?
        .filter(|u| access::user_visible(principal, u))
        .ok_or_else(|| AppError::not_found(format!("user {id}")))
}

/// A user to create, as `POST /users` gives it.
pub struct NewUser {
    /// Login name (trimmed here).
    pub username: String,
    /// Password, hashed here and not kept.
    pub password: SecretString,
    /// Role.
    pub role: Role,
    /// Organization; none for a root administrator.
    pub organization: Option<OrgId>,
}

/// Creates `new` for `principal`: root creates root administrators and an organization's first
/// administrator, an organization's administrators its users ([`access::may_create_user`]).
pub async fn create(principal: &Principal, new: NewUser, state: &State) -> Result<User, AppError> {
    let creation = match (new.role, new.organization) {
        (Role::Root, None) => {
            principal.require_root()?;
            None
        }
        (Role::Root, Some(_)) => {
            return Err(AppError::invalid("a root administrator has no organization"));
        }
        (_, None) => return Err(AppError::invalid("this role needs an organization")),
        (role, Some(org)) => Some((org, access::may_create_user(principal, org, role)?)),
    };
    let username = new.username.trim();
    if username.is_empty() || username.len() > 100 || username.chars().any(char::is_whitespace) {
        return Err(AppError::invalid("a user name is 1 to 100 characters without spaces"));
    }
    if new.password.expose_secret().chars().count() < 12 {
        return Err(AppError::invalid("a password has at least 12 characters"));
    }
    let password = new.password;
    let hash = tokio::task::spawn_blocking(move || logins::hash_password(&password))
        .await
        .map_err(|_| AppError::internal())??;
    let mut client = db(state).await?;
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
        _ => users::insert(&**client, new.organization, username, &hash, new.role).await.map_err(taken)?,
    };
    Ok(user)
}

/// Gives user `id` the role `role` for `principal` ([`access::may_set_role`]); the user as it
/// is afterwards. The change applies to the user's sessions at once: they read the role on
/// every request.
pub async fn set_role(
    principal: &Principal,
    id: UserId,
    role: Role,
    state: &State,
) -> Result<User, AppError> {
    let user = visible(principal, id, state).await?;
    let org = access::may_set_role(principal, &user, role)?;
    let mut client = db(state).await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    if user.role == Role::OrgAdmin && role != Role::OrgAdmin {
        keeps_an_admin(&tx, org, id).await?;
    }
    // The statement names the organization the permission was granted for: a user deleted or
    // changed since it was read is not found rather than changed elsewhere.
    if !users::set_role(&*tx, id, org, role).await? {
        return Err(AppError::not_found(format!("user {id}")));
    }
    tx.commit().await.map_err(DbError::from)?;
    tracing::info!(user = %id, org = %org, role = role.as_str(), "role changed");
    Ok(User { role, ..user })
}

/// Deletes user `id` for `principal`: a root administrator by root, a user of an organization by
/// its own administrators ([`access::require_users_admin`]), never the organization's last
/// administrator. The user as it was.
pub async fn delete(principal: &Principal, id: UserId, state: &State) -> Result<User, AppError> {
    let user = visible(principal, id, state).await?;
    let mut client = db(state).await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    match user.organization {
        Some(org) => {
            access::require_users_admin(principal, org)?;
            if user.role == Role::OrgAdmin {
                keeps_an_admin(&tx, org, id).await?;
            }
        }
        None => principal.require_root()?,
    }
    users::delete(&*tx, id, user.organization).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(user)
}

/// `conflict` unless `org` has an administrator besides `leaving` (checked under the
/// organization's lock, held until the transaction ends).
async fn keeps_an_admin(
    tx: &deadpool_postgres::Transaction<'_>,
    org: OrgId,
    leaving: UserId,
) -> Result<(), AppError> {
    if users::admin_besides_locked(tx, org, Some(leaving)).await? {
        return Ok(());
    }
    Err(AppError::conflict(format!(
        "user {leaving} is the last administrator of organization {org}: create another administrator first, \
         so that the organization keeps one (root cannot make one for an organization that has had one)"
    )))
}
