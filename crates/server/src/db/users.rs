//! Users and login sessions.

use std::time::SystemTime;

use tokio_postgres::GenericClient;
use uuid::Uuid;

use fedq_transparency::Event;

use super::{DbError, transparency};
use crate::ids::{OrgId, UserId};

/// What a user may do (the contract's), checked in one place: `server::app::access`.
pub use crate::contract::Role;

/// A user as stored, without the password hash.
#[derive(Debug, Clone)]
pub struct User {
    /// Identifier.
    pub id: UserId,
    /// Organization; `None` for root administrators.
    pub organization: Option<OrgId>,
    /// Login name.
    pub username: String,
    /// Role.
    pub role: Role,
}

fn user_from_row(row: &tokio_postgres::Row) -> User {
    User {
        id: UserId::from_uuid(row.get("id")),
        organization: row.get::<_, Option<Uuid>>("org_id").map(OrgId::from_uuid),
        username: row.get("username"),
        // The column's CHECK constraint allows the roles' names only.
        role: Role::parse(row.get("role")).unwrap_or(Role::Viewer),
    }
}

impl From<User> for crate::contract::User {
    fn from(u: User) -> Self {
        Self { id: u.id, organization: u.organization, username: u.username, role: u.role }
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
    let id = UserId::new();
    // A user of an organization is a trust event of that organization: its leaf is written by
    // the same statement.
    let leaf = org.map(|org| {
        transparency::event(org, Event::UserRoleChanged { user: *id.as_uuid(), role: role.code() })
    });
    let row = db
        .query_one(
            "WITH added AS (INSERT INTO users (id, org_id, username, password_hash, role) VALUES ($1, $2, $3, $4, $5)
                            RETURNING id, org_id, username, role),
                  logged AS (INSERT INTO transparency_pending (leaf) SELECT $6 FROM added WHERE $6::bytea IS NOT NULL)
             SELECT * FROM added",
            &[id.as_uuid(), &org.map(|o| *o.as_uuid()), &username, &password_hash, &role.as_str(), &leaf],
        )
        .await?;
    Ok(user_from_row(&row))
}

/// Inserts `username` as an administrator of `org` only if the organization has no
/// administrator: what root may do ([`crate::app::access`]). The organization's row is
/// locked first, so that two such requests at once make one administrator, not two. `None`
/// when the organization already has one.
pub async fn insert_first_admin(
    db: &mut deadpool_postgres::Object,
    org: OrgId,
    username: &str,
    password_hash: &str,
) -> Result<Option<User>, DbError> {
    let tx = db.transaction().await?;
    if admin_besides_locked(&tx, org, None).await? {
        return Ok(None);
    }
    let user = insert(&*tx, Some(org), username, password_hash, Role::OrgAdmin).await?;
    tx.commit().await?;
    Ok(Some(user))
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
pub async fn get(db: &impl GenericClient, id: UserId) -> Result<Option<User>, DbError> {
    let row =
        db.query_opt("SELECT id, org_id, username, role FROM users WHERE id = $1", &[id.as_uuid()]).await?;
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
/// root administrator (who belongs to none); the same statement queues the transparency log's
/// leaf, so a role changes exactly when it is logged. Returns whether such a user was there.
pub async fn set_role(db: &impl GenericClient, id: UserId, org: OrgId, role: Role) -> Result<bool, DbError> {
    let leaf = transparency::event(org, Event::UserRoleChanged { user: *id.as_uuid(), role: role.code() });
    let changed: i64 = db
        .query_one(
            "WITH changed AS (UPDATE users SET role = $3 WHERE id = $1 AND org_id = $2 AND role <> $3 RETURNING 1),
                  logged AS (INSERT INTO transparency_pending (leaf) SELECT $4 FROM changed)
             SELECT count(*) FROM changed",
            &[id.as_uuid(), org.as_uuid(), &role.as_str(), &leaf],
        )
        .await?
        .get(0);
    Ok(changed == 1 || exists_in(db, id, org).await?)
}

/// Whether user `id` belongs to `org`.
async fn exists_in(db: &impl GenericClient, id: UserId, org: OrgId) -> Result<bool, DbError> {
    Ok(db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND org_id = $2)",
            &[id.as_uuid(), org.as_uuid()],
        )
        .await?
        .get(0))
}

/// Deletes user `id` of `org` (`None` for a root administrator); returns whether it existed.
pub async fn delete(db: &impl GenericClient, id: UserId, org: Option<OrgId>) -> Result<bool, DbError> {
    let leaf =
        org.map(|org| transparency::event(org, Event::UserRoleChanged { user: *id.as_uuid(), role: 0 }));
    let deleted: i64 = db
        .query_one(
            "WITH deleted AS (DELETE FROM users WHERE id = $1 AND org_id IS NOT DISTINCT FROM $2 RETURNING 1),
                  logged AS (INSERT INTO transparency_pending (leaf) SELECT $3 FROM deleted WHERE $3::bytea IS NOT NULL)
             SELECT count(*) FROM deleted",
            &[id.as_uuid(), &org.map(|o| *o.as_uuid()), &leaf],
        )
        .await?
        .get(0);
    Ok(deleted == 1)
}

/// Locks organization `org`'s row until `tx` ends and says whether it has an administrator
/// (other than `besides`, if given). Every change to who administers an organization asks it
/// first, in its own transaction: the first administrator's creation ([`insert_first_admin`])
/// and an administrator's demotion or deletion, so that two such changes at once are decided
/// one after the other (read committed: the check sees what committed before the lock).
pub async fn admin_besides_locked(
    tx: &deadpool_postgres::Transaction<'_>,
    org: OrgId,
    besides: Option<UserId>,
) -> Result<bool, DbError> {
    tx.execute("SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE", &[org.as_uuid()]).await?;
    Ok(tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM users WHERE org_id = $1 AND role = 'org_admin'
                            AND ($2::uuid IS NULL OR id <> $2))",
            &[org.as_uuid(), &besides.map(|u| *u.as_uuid())],
        )
        .await?
        .get(0))
}

/// Whether any root administrator exists.
pub async fn root_exists(db: &impl GenericClient) -> Result<bool, DbError> {
    Ok(db.query_one("SELECT EXISTS (SELECT 1 FROM users WHERE role = 'root')", &[]).await?.get(0))
}

/// Stores a session token's hash.
pub async fn insert_session(
    db: &impl GenericClient,
    token_hash: &[u8],
    user: UserId,
    expires_at: SystemTime,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
        &[&token_hash, user.as_uuid(), &expires_at],
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
