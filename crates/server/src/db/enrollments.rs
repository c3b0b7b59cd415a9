//! One-time enrollment tokens: created for a node name by an organization's administrator,
//! traded once by `fedq node enroll` for the node's registration.

use std::time::SystemTime;

use tokio_postgres::GenericClient;

use super::DbError;
use crate::ids::{EnrollmentId, NodeId, OrgId};

/// A token's claim: what it enrolls.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The token's row.
    pub id: EnrollmentId,
    /// The organization the node will work for.
    pub organization: OrgId,
    /// The node's name.
    pub node_name: String,
}

/// Stores a new token (its hash only).
pub async fn insert(
    db: &impl GenericClient,
    org: OrgId,
    node_name: &str,
    token_hash: &[u8],
    created_by: &str,
    expires_at: SystemTime,
) -> Result<EnrollmentId, DbError> {
    let id = EnrollmentId::new();
    db.execute(
        "INSERT INTO enrollment_tokens (id, org_id, node_name, token_hash, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[id.as_uuid(), org.as_uuid(), &node_name, &token_hash, &created_by, &expires_at],
    )
    .await?;
    Ok(id)
}

/// Takes the token: marks it used, if it is unused and unexpired, in one statement, so that two
/// enrollments with the same token cannot both have it.
pub async fn take(db: &impl GenericClient, token_hash: &[u8]) -> Result<Option<Claim>, DbError> {
    let row = db
        .query_opt(
            "UPDATE enrollment_tokens SET used_at = now()
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
             RETURNING id, org_id, node_name",
            &[&token_hash],
        )
        .await?;
    Ok(row.map(|row| Claim {
        id: EnrollmentId::from_uuid(row.get("id")),
        organization: OrgId::from_uuid(row.get("org_id")),
        node_name: row.get("node_name"),
    }))
}

/// Gives a taken token back (the registration it was taken for failed: nothing is lost).
pub async fn give_back(db: &impl GenericClient, id: EnrollmentId) -> Result<(), DbError> {
    db.execute(
        "UPDATE enrollment_tokens SET used_at = NULL WHERE id = $1 AND node_id IS NULL",
        &[id.as_uuid()],
    )
    .await?;
    Ok(())
}

/// Records the node a token enrolled.
pub async fn enrolled(db: &impl GenericClient, id: EnrollmentId, node: NodeId) -> Result<(), DbError> {
    db.execute("UPDATE enrollment_tokens SET node_id = $2 WHERE id = $1", &[id.as_uuid(), node.as_uuid()])
        .await?;
    Ok(())
}
