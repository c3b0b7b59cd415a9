//! Users as the application sees them: which ones a caller may see, and changing a role.

use crate::ids::UserId;

use super::{AppError, Principal, State, access, db};
use crate::server::db::users::{self, Role, User};

/// A user the caller may see, or `not_found` (whether it exists or not).
pub async fn visible(principal: &Principal, id: UserId, state: &State) -> Result<User, AppError> {
    let client = db(state).await?;
    users::get(&**client, id)
        .await?
        .filter(|u| access::user_visible(principal, u))
        .ok_or_else(|| AppError::not_found(format!("user {id}")))
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
    let client = db(state).await?;
    // The statement names the organization the permission was granted for: a user deleted or
    // changed since it was read is not found rather than changed elsewhere.
    if !users::set_role(&**client, id, org, role).await? {
        return Err(AppError::not_found(format!("user {id}")));
    }
    tracing::info!(user = %id, org = %org, role = role.as_str(), "role changed");
    Ok(User { role, ..user })
}
