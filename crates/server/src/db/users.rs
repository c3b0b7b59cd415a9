//! Users and login sessions.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::DbError;
use crate::ids::OrgId;

/// What a user may do. Checked in one place: `server::app::access`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Administers the whole federation; belongs to no organization.
    Root,
    /// Administers one organization: its users, nodes and keys; can also do research.
    OrgAdmin,
    /// Creates and follows tasks in the collaborations of their organization.
    Researcher,
    /// Reads only.
    Viewer,
}

impl Role {
    /// The name stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::OrgAdmin => "org_admin",
            Role::Researcher => "researcher",
            Role::Viewer => "viewer",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "root" => Role::Root,
            "org_admin" => Role::OrgAdmin,
            "researcher" => Role::Researcher,
            // The column's CHECK constraint allows nothing else.
            _ => Role::Viewer,
        }
    }
}

/// A user as stored, without the password hash.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// Identifier.
    pub id: Uuid,
    /// Organization; `None` for root administrators.
    pub organization: Option<OrgId>,
    /// Login name.
    pub username: String,
    /// Role.
    pub role: Role,
}

fn user_from_row(row: &tokio_postgres::Row) -> User {
    User {
        id: row.get("id"),
        organization: row.get::<_, Option<Uuid>>("org_id").map(OrgId::from_uuid),
        username: row.get("username"),
        role: Role::parse(row.get("role")),
    }
}

/// Inserts a user.
pub async fn insert(
    db: &impl GenericClient,
    org: Option<OrgId>,
    username: &str,
    password_hash: &str,
    role: Role,
) -> Result<User, DbError> {
    let row = db
        .query_one(
            "INSERT INTO users (id, org_id, username, password_hash, role) VALUES ($1, $2, $3, $4, $5)
             RETURNING id, org_id, username, role",
            &[&Uuid::new_v4(), &org.map(|o| *o.as_uuid()), &username, &password_hash, &role.as_str()],
        )
        .await?;
    Ok(user_from_row(&row))
}

/// The user and password hash for a login name.
pub async fn by_username(db: &impl GenericClient, username: &str) -> Result<Option<(User, String)>, DbError> {
    let row = db
        .query_opt(
            "SELECT id, org_id, username, role, password_hash FROM users WHERE username = $1",
            &[&username],
        )
        .await?;
    Ok(row.map(|r| (user_from_row(&r), r.get("password_hash"))))
}

/// A user by id.
pub async fn get(db: &impl GenericClient, id: Uuid) -> Result<Option<User>, DbError> {
    let row = db.query_opt("SELECT id, org_id, username, role FROM users WHERE id = $1", &[&id]).await?;
    Ok(row.as_ref().map(user_from_row))
}

/// Users of one organization, or all users.
pub async fn list(db: &impl GenericClient, org: Option<OrgId>) -> Result<Vec<User>, DbError> {
    let rows = db
        .query(
            "SELECT id, org_id, username, role FROM users
             WHERE $1::uuid IS NULL OR org_id = $1 ORDER BY username",
            &[&org.map(|o| *o.as_uuid())],
        )
        .await?;
    Ok(rows.iter().map(user_from_row).collect())
}

/// Gives user `id` of organization `org` the role `role`, in one statement whose condition
/// names the organization, so that the change reaches no user of another organization and no
/// root administrator (who belongs to none). Returns whether such a user was there.
pub async fn set_role(db: &impl GenericClient, id: Uuid, org: OrgId, role: Role) -> Result<bool, DbError> {
    let row = db
        .query_opt(
            "UPDATE users SET role = $3 WHERE id = $1 AND org_id = $2 RETURNING id",
            &[&id, org.as_uuid(), &role.as_str()],
        )
        .await?;
    Ok(row.is_some())
}

/// Deletes a user; returns whether it existed.
pub async fn delete(db: &impl GenericClient, id: Uuid) -> Result<bool, DbError> {
    Ok(db.execute("DELETE FROM users WHERE id = $1", &[&id]).await? == 1)
}

/// Whether any root administrator exists.
pub async fn root_exists(db: &impl GenericClient) -> Result<bool, DbError> {
    Ok(db.query_one("SELECT EXISTS (SELECT 1 FROM users WHERE role = 'root')", &[]).await?.get(0))
}

/// Stores a session token's hash.
pub async fn insert_session(
    db: &impl GenericClient,
    token_hash: &[u8],
    user: Uuid,
    expires_at: SystemTime,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
        &[&token_hash, &user, &expires_at],
    )
    .await?;
    Ok(())
}

/// The user of a live session.
pub async fn session_user(db: &impl GenericClient, token_hash: &[u8]) -> Result<Option<User>, DbError> {
    let row = db
        .query_opt(
            "SELECT u.id, u.org_id, u.username, u.role FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.expires_at > now()",
            &[&token_hash],
        )
        .await?;
    Ok(row.as_ref().map(user_from_row))
}

/// Ends a session.
pub async fn delete_session(db: &impl GenericClient, token_hash: &[u8]) -> Result<(), DbError> {
    db.execute("DELETE FROM sessions WHERE token_hash = $1 OR expires_at < now()", &[&token_hash]).await?;
    Ok(())
}
