//! Collaborations as the application sees them: which ones a caller may see.

use super::{AppError, Principal, State, access, db};
use crate::db::directory;
use crate::ids::CollaborationId;

/// A collaboration the caller may see.
pub async fn visible(
    principal: &Principal,
    id: CollaborationId,
    state: &State,
) -> Result<directory::Collaboration, AppError> {
    visible_with(&**db(state).await?, principal, id).await
}

/// [`visible`], read through `client` (a caller that holds a connection already).
pub async fn visible_with(
    client: &impl tokio_postgres::GenericClient,
    principal: &Principal,
    id: CollaborationId,
) -> Result<directory::Collaboration, AppError> {
    let collaboration = directory::collaboration(client, id).await?;
    collaboration
        .filter(|c| access::collaboration_visible(principal, c))
        .ok_or_else(|| AppError::not_found(format!("collaboration {id}")))
}
