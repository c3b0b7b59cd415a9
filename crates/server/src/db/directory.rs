//! Organizations and their keys, collaborations and their members, nodes.

use std::time::SystemTime;

use base64::Engine as _;
use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use fedq_transparency::Event;

use super::{DbError, transparency};
use crate::ids::{CollaborationId, NodeId, OrgId};
use crate::keys::{KeyId, PublicKey};
use crate::protocol::heartbeat::Heartbeat;

/// An organization.
#[derive(Debug, Clone)]
pub struct Organization {
    /// Identifier.
    pub id: OrgId,
    /// Display name, unique.
    pub name: String,
    /// Current public key, if one is published.
    pub public_key: Option<String>,
    /// Its fingerprint.
    pub fingerprint: Option<String>,
}

/// One published key of an organization.
#[derive(Debug, Clone, Serialize)]
pub struct PublishedKey {
    /// Organization.
    pub organization: OrgId,
    /// Fingerprint (`SHA256:…`).
    pub key_id: String,
    /// The key (`fedq-pk1:…`).
    pub public_key: String,
    /// When it was published.
    pub published_at: SystemTime,
    /// When a newer key replaced it.
    pub retired_at: Option<SystemTime>,
    /// When it was revoked: it verifies nothing from then on.
    pub revoked_at: Option<SystemTime>,
    /// The fingerprint of the key it replaced, if any.
    pub previous_key_id: Option<String>,
    /// The organization's signature of the hand-over, made with the previous key (base64), if
    /// the replacement was a signed rotation.
    pub rotation_signature: Option<String>,
    /// The transparency-log leaf that logged it (hex), whose inclusion a client proves before it
    /// trusts the key on first use or by a rotation.
    pub log_leaf: Option<String>,
    /// The organization's signature of the revocation (base64), if revoked with one.
    pub revocation_signature: Option<String>,
    /// The fingerprint of the key that signed the revocation.
    pub revoked_by: Option<String>,
}

const ORG_SELECT: &str = "SELECT o.id, o.name, k.public_key, k.key_id FROM organizations o
     LEFT JOIN LATERAL (SELECT public_key, key_id FROM organization_keys
                        WHERE org_id = o.id AND retired_at IS NULL AND revoked_at IS NULL
                        ORDER BY published_at DESC LIMIT 1) k ON true";

fn org_from_row(row: &tokio_postgres::Row) -> Organization {
    Organization {
        id: OrgId::from_uuid(row.get("id")),
        name: row.get("name"),
        public_key: row.get("public_key"),
        fingerprint: row.get::<_, Option<Vec<u8>>>("key_id").map(|b| fingerprint(&b)),
    }
}

/// The text form of a fingerprint stored as bytes.
fn fingerprint(bytes: &[u8]) -> String {
    <[u8; 32]>::try_from(bytes)
        .map(|b| KeyId::from_bytes(b).to_string())
        .unwrap_or_else(|_| hex::encode(bytes))
}

/// Inserts an organization.
pub async fn insert_org(db: &impl GenericClient, name: &str) -> Result<Organization, DbError> {
    let id = OrgId::new();
    db.execute("INSERT INTO organizations (id, name) VALUES ($1, $2)", &[id.as_uuid(), &name]).await?;
    Ok(Organization { id, name: name.to_owned(), public_key: None, fingerprint: None })
}

/// An organization by id.
pub async fn org(db: &impl GenericClient, id: OrgId) -> Result<Option<Organization>, DbError> {
    let row = db.query_opt(&format!("{ORG_SELECT} WHERE o.id = $1"), &[id.as_uuid()]).await?;
    Ok(row.as_ref().map(org_from_row))
}

/// All organizations, or those sharing a collaboration with `visible_to` (and itself).
pub async fn orgs(db: &impl GenericClient, visible_to: Option<OrgId>) -> Result<Vec<Organization>, DbError> {
    let rows = db
        .query(
            &format!(
                "{ORG_SELECT} WHERE $1::uuid IS NULL OR o.id = $1 OR o.id IN (
                   SELECT m2.org_id FROM collaboration_members m1
                   JOIN collaboration_members m2 ON m2.collaboration_id = m1.collaboration_id
                   WHERE m1.org_id = $1)
                 ORDER BY o.name"
            ),
            &[&visible_to.map(|o| *o.as_uuid())],
        )
        .await?;
    Ok(rows.iter().map(org_from_row).collect())
}

/// The organization's current key, if one is published.
pub async fn current_key(db: &impl GenericClient, org: OrgId) -> Result<Option<PublicKey>, DbError> {
    let row = db
        .query_opt(
            "SELECT public_key FROM organization_keys WHERE org_id = $1 AND retired_at IS NULL
             AND revoked_at IS NULL ORDER BY published_at DESC LIMIT 1",
            &[org.as_uuid()],
        )
        .await?;
    Ok(row.and_then(|r| r.get::<_, String>(0).parse().ok()))
}

/// Publishes `key` as the organization's current key, retiring the previous one and recording
/// it as `previous` with the rotation's signature, if any. Publishing the current key again
/// changes nothing.
pub async fn publish_key(
    db: &mut deadpool_postgres::Object,
    org: OrgId,
    key: &PublicKey,
    previous: Option<(KeyId, Option<[u8; 64]>)>,
) -> Result<(), DbError> {
    let tx = db.transaction().await?;
    let key_id = key.id().as_bytes().to_vec();
    let previous_id = previous.map(|(id, _)| id.as_bytes().to_vec());
    let signature = previous.and_then(|(_, s)| s).map(|s| s.to_vec());
    let existing = tx
        .query_opt(
            "SELECT retired_at IS NULL AS current FROM organization_keys WHERE org_id = $1 AND key_id = $2",
            &[org.as_uuid(), &key_id],
        )
        .await?;
    if existing.is_none() {
        tx.execute(
            "UPDATE organization_keys SET retired_at = now() WHERE org_id = $1 AND retired_at IS NULL",
            &[org.as_uuid()],
        )
        .await?;
        let new = *key.id().as_bytes();
        let event = match previous {
            Some((old, _)) => Event::KeyRotated { old: *old.as_bytes(), new },
            None => Event::KeyPublished { key: new },
        };
        let leaf = transparency::event(org, event);
        tx.execute(
            "INSERT INTO organization_keys (org_id, key_id, public_key, previous_key_id, rotation_signature, log_leaf)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[org.as_uuid(), &key_id, &key.to_string(), &previous_id, &signature, &leaf],
        )
        .await?;
        transparency::queue(&tx, &[leaf]).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Revokes `org`'s key `key`: it signs nothing from now on, whatever time an envelope claims,
/// and stops being the current key. Returns whether it was live (not revoked already).
pub async fn revoke_key(
    db: &impl GenericClient,
    org: OrgId,
    revocation: &crate::keys::Revocation,
) -> Result<Option<bool>, DbError> {
    let key = &revocation.key;
    // One statement, so that the log's leaf is written exactly when the key goes from live to
    // revoked.
    let leaf = transparency::event(org, Event::KeyRevoked { key: *key.as_bytes() });
    let row = db
        .query_opt(
            "WITH before AS (SELECT revoked_at IS NULL AS live FROM organization_keys WHERE org_id = $1 AND key_id = $2),
                  revoked AS (UPDATE organization_keys k
                              SET revoked_at = coalesce(k.revoked_at, now()), retired_at = coalesce(k.retired_at, now()),
                                  revocation_signature = coalesce(k.revocation_signature, $4),
                                  revoked_by = coalesce(k.revoked_by, $5)
                              WHERE k.org_id = $1 AND k.key_id = $2 RETURNING 1),
                  logged AS (INSERT INTO transparency_pending (leaf) SELECT $3 FROM before WHERE before.live)
             SELECT live FROM before",
            &[
                org.as_uuid(),
                &key.as_bytes().as_slice(),
                &leaf,
                &revocation.signature.as_slice(),
                &revocation.signer.as_bytes().as_slice(),
            ],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// The collaborations `org` is a member of.
pub async fn member_collaborations(
    db: &impl GenericClient,
    org: OrgId,
) -> Result<std::collections::HashSet<CollaborationId>, DbError> {
    let rows = db
        .query("SELECT collaboration_id FROM collaboration_members WHERE org_id = $1", &[org.as_uuid()])
        .await?;
    Ok(rows.iter().map(|r| CollaborationId::from_uuid(r.get(0))).collect())
}

/// Every key an organization has published, newest first.
pub async fn key_history(db: &impl GenericClient, org: OrgId) -> Result<Vec<PublishedKey>, DbError> {
    key_histories(db, &[org]).await
}

/// Every key of several organizations, newest first within each, in one query.
pub async fn key_histories(db: &impl GenericClient, orgs: &[OrgId]) -> Result<Vec<PublishedKey>, DbError> {
    let ids: Vec<Uuid> = orgs.iter().map(|o| *o.as_uuid()).collect();
    let rows = db
        .query(
            "SELECT org_id, key_id, public_key, published_at, retired_at, revoked_at, previous_key_id,
                    rotation_signature, log_leaf, revocation_signature, revoked_by
             FROM organization_keys WHERE org_id = ANY($1) ORDER BY org_id, published_at DESC",
            &[&ids],
        )
        .await?;
    Ok(rows.iter().map(key_from_row).collect())
}

fn key_from_row(row: &tokio_postgres::Row) -> PublishedKey {
    PublishedKey {
        organization: OrgId::from_uuid(row.get("org_id")),
        key_id: fingerprint(&row.get::<_, Vec<u8>>("key_id")),
        public_key: row.get("public_key"),
        published_at: row.get("published_at"),
        retired_at: row.get("retired_at"),
        revoked_at: row.get("revoked_at"),
        previous_key_id: row.get::<_, Option<Vec<u8>>>("previous_key_id").map(|b| fingerprint(&b)),
        rotation_signature: row
            .get::<_, Option<Vec<u8>>>("rotation_signature")
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
        log_leaf: row.get::<_, Option<Vec<u8>>>("log_leaf").map(hex::encode),
        revocation_signature: row
            .get::<_, Option<Vec<u8>>>("revocation_signature")
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
        revoked_by: row.get::<_, Option<Vec<u8>>>("revoked_by").map(|b| fingerprint(&b)),
    }
}

/// The current keys of a collaboration's members, and their revoked keys (with `revoked_at`),
/// so that members stop trusting those.
pub async fn collaboration_keys(
    db: &impl GenericClient,
    collaboration: CollaborationId,
) -> Result<Vec<PublishedKey>, DbError> {
    let rows = db
        .query(
            "SELECT k.org_id, k.key_id, k.public_key, k.published_at, k.retired_at, k.revoked_at,
                    k.previous_key_id, k.rotation_signature, k.log_leaf, k.revocation_signature, k.revoked_by
             FROM collaboration_members m JOIN organization_keys k ON k.org_id = m.org_id
             WHERE m.collaboration_id = $1 AND (k.retired_at IS NULL OR k.revoked_at IS NOT NULL)
             ORDER BY k.org_id, k.published_at",
            &[collaboration.as_uuid()],
        )
        .await?;
    Ok(rows.iter().map(key_from_row).collect())
}

/// The key `key` of `org`, if it may sign an envelope created at `created_at`: current, or
/// retired after that time (so envelopes in flight during a rotation still route).
pub async fn signing_key(
    db: &impl GenericClient,
    org: OrgId,
    key: &KeyId,
    created_at: SystemTime,
) -> Result<Option<PublicKey>, DbError> {
    let row = db
        .query_opt(
            "SELECT public_key FROM organization_keys
             WHERE org_id = $1 AND key_id = $2 AND revoked_at IS NULL AND (retired_at IS NULL OR retired_at > $3)",
            &[org.as_uuid(), &key.as_bytes().as_slice(), &created_at],
        )
        .await?;
    Ok(row.and_then(|r| r.get::<_, String>(0).parse().ok()))
}

/// A collaboration with its members.
#[derive(Debug, Clone)]
pub struct Collaboration {
    /// Identifier.
    pub id: CollaborationId,
    /// Display name, unique.
    pub name: String,
    /// Member organizations.
    pub organizations: Vec<OrgId>,
}

impl From<Collaboration> for crate::contract::Collaboration {
    fn from(c: Collaboration) -> Self {
        Self { id: c.id, name: c.name, organizations: c.organizations }
    }
}

impl From<Organization> for crate::contract::Organization {
    fn from(o: Organization) -> Self {
        Self { id: o.id, name: o.name, public_key: o.public_key, fingerprint: o.fingerprint }
    }
}

const COLLABORATION_SELECT: &str = "SELECT c.id, c.name,
       coalesce(array_agg(m.org_id ORDER BY m.org_id) FILTER (WHERE m.org_id IS NOT NULL), '{}') AS members
     FROM collaborations c LEFT JOIN collaboration_members m ON m.collaboration_id = c.id";

/// Inserts a collaboration with its members.
pub async fn insert_collaboration(
    db: &mut deadpool_postgres::Object,
    name: &str,
    members: &[OrgId],
) -> Result<Collaboration, DbError> {
    let id = CollaborationId::new();
    let tx = db.transaction().await?;
    tx.execute("INSERT INTO collaborations (id, name) VALUES ($1, $2)", &[id.as_uuid(), &name]).await?;
    for org in members {
        tx.execute(
            "INSERT INTO collaboration_members (collaboration_id, org_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[id.as_uuid(), org.as_uuid()],
        )
        .await?;
    }
    let mut organizations = members.to_vec();
    organizations.sort();
    organizations.dedup();
    let leaves: Vec<Vec<u8>> = organizations
        .iter()
        .map(|org| transparency::event(*org, Event::CollaborationCreated { collaboration: id }))
        .collect();
    transparency::queue(&tx, &leaves).await?;
    tx.commit().await?;
    Ok(Collaboration { id, name: name.to_owned(), organizations })
}

/// Collaborations, all or those `member` belongs to.
pub async fn collaborations(
    db: &impl GenericClient,
    member: Option<OrgId>,
) -> Result<Vec<Collaboration>, DbError> {
    let rows = db
        .query(
            &format!(
                "{COLLABORATION_SELECT}
                 WHERE $1::uuid IS NULL OR c.id IN (SELECT collaboration_id FROM collaboration_members WHERE org_id = $1)
                 GROUP BY c.id, c.name ORDER BY c.name"
            ),
            &[&member.map(|o| *o.as_uuid())],
        )
        .await?;
    Ok(rows.iter().map(collaboration_from_row).collect())
}

/// One collaboration.
pub async fn collaboration(
    db: &impl GenericClient,
    id: CollaborationId,
) -> Result<Option<Collaboration>, DbError> {
    let row = db
        .query_opt(&format!("{COLLABORATION_SELECT} WHERE c.id = $1 GROUP BY c.id, c.name"), &[id.as_uuid()])
        .await?;
    Ok(row.as_ref().map(collaboration_from_row))
}

fn collaboration_from_row(row: &tokio_postgres::Row) -> Collaboration {
    Collaboration {
        id: CollaborationId::from_uuid(row.get("id")),
        name: row.get("name"),
        organizations: row.get::<_, Vec<Uuid>>("members").into_iter().map(OrgId::from_uuid).collect(),
    }
}

/// Adds or removes a member; returns whether anything changed.
pub async fn set_member(
    db: &impl GenericClient,
    collaboration: CollaborationId,
    org: OrgId,
    member: bool,
) -> Result<bool, DbError> {
    // One statement each, so that the log's leaf is written exactly when membership changes.
    let (statement, event) = if member {
        (
            "WITH changed AS (INSERT INTO collaboration_members (collaboration_id, org_id) VALUES ($1, $2)
                              ON CONFLICT DO NOTHING RETURNING 1),
                  logged AS (INSERT INTO transparency_pending (leaf) SELECT $3 FROM changed)
             SELECT count(*) FROM changed",
            Event::MemberAdded { collaboration },
        )
    } else {
        (
            "WITH changed AS (DELETE FROM collaboration_members WHERE collaboration_id = $1 AND org_id = $2
                              RETURNING 1),
                  logged AS (INSERT INTO transparency_pending (leaf) SELECT $3 FROM changed)
             SELECT count(*) FROM changed",
            Event::MemberRemoved { collaboration },
        )
    };
    let leaf = transparency::event(org, event);
    let changed: i64 =
        db.query_one(statement, &[collaboration.as_uuid(), org.as_uuid(), &leaf]).await?.get(0);
    Ok(changed == 1)
}

/// A node, without its credentials.
pub use crate::contract::Node;

/// A node is online while it says so and its last heartbeat is recent: nodes beat every few
/// seconds, so one that died shows offline within `NODE_OFFLINE_AFTER`.
const NODE_COLUMNS: &str = "id, org_id, name, broker_user, version, last_seen_at,
     (online AND revoked_at IS NULL AND last_seen_at > now() - interval '9 seconds') AS online, revoked_at,
     policy, log_report";

/// How long after its last heartbeat a node shows offline.
pub const NODE_OFFLINE_AFTER: std::time::Duration = std::time::Duration::from_secs(9);

fn node_from_row(row: &tokio_postgres::Row) -> Node {
    Node {
        id: NodeId::from_uuid(row.get("id")),
        organization: OrgId::from_uuid(row.get("org_id")),
        name: row.get("name"),
        broker_user: row.get("broker_user"),
        version: row.get("version"),
        last_seen_at: row.get("last_seen_at"),
        online: row.get("online"),
        revoked_at: row.get("revoked_at"),
        // Written by this server from a validated summary; a row it cannot read shows as none.
        policy: row
            .get::<_, Option<serde_json::Value>>("policy")
            .and_then(|v| serde_json::from_value(v).ok()),
        transparency: row
            .get::<_, Option<serde_json::Value>>("log_report")
            .and_then(|v| serde_json::from_value(v).ok()),
    }
}

/// Inserts a node.
pub async fn insert_node(
    db: &impl GenericClient,
    id: NodeId,
    org: OrgId,
    name: &str,
    api_key_hash: &[u8],
    broker_user: &str,
) -> Result<Node, DbError> {
    let row = db
        .query_one(
            &format!(
                "WITH node AS (INSERT INTO nodes (id, org_id, name, api_key_hash, broker_user)
                               VALUES ($1, $2, $3, $4, $5) RETURNING {NODE_COLUMNS}),
                      logged AS (INSERT INTO transparency_pending (leaf) SELECT $6 FROM node)
                 SELECT * FROM node"
            ),
            &[
                id.as_uuid(),
                org.as_uuid(),
                &name,
                &api_key_hash,
                &broker_user,
                &transparency::event(org, Event::NodeRegistered { node: id }),
            ],
        )
        .await?;
    Ok(node_from_row(&row))
}

/// Nodes, all or of one organization.
pub async fn nodes(db: &impl GenericClient, org: Option<OrgId>) -> Result<Vec<Node>, DbError> {
    let rows = db
        .query(
            &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE $1::uuid IS NULL OR org_id = $1 ORDER BY name"),
            &[&org.map(|o| *o.as_uuid())],
        )
        .await?;
    Ok(rows.iter().map(node_from_row).collect())
}

/// One node.
pub async fn node(db: &impl GenericClient, id: NodeId) -> Result<Option<Node>, DbError> {
    let row =
        db.query_opt(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1"), &[id.as_uuid()]).await?;
    Ok(row.as_ref().map(node_from_row))
}

/// The live (not revoked) node holding an API key.
pub async fn node_by_key(db: &impl GenericClient, api_key_hash: &[u8]) -> Result<Option<Node>, DbError> {
    let row = db
        .query_opt(
            &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE api_key_hash = $1 AND revoked_at IS NULL"),
            &[&api_key_hash],
        )
        .await?;
    Ok(row.as_ref().map(node_from_row))
}

/// Marks node `id` of `org` revoked; returns whether it was live.
pub async fn revoke_node(db: &impl GenericClient, id: NodeId, org: OrgId) -> Result<bool, DbError> {
    let leaf = transparency::event(org, Event::NodeRevoked { node: id });
    let revoked: i64 = db
        .query_one(
            "WITH revoked AS (UPDATE nodes SET revoked_at = now(), online = false
                              WHERE id = $1 AND org_id = $2 AND revoked_at IS NULL RETURNING 1),
                  logged AS (INSERT INTO transparency_pending (leaf) SELECT $3 FROM revoked)
             SELECT count(*) FROM revoked",
            &[id.as_uuid(), org.as_uuid(), &leaf],
        )
        .await?
        .get(0);
    Ok(revoked == 1)
}

/// Records a node's report of itself.
pub async fn heartbeat(db: &impl GenericClient, id: NodeId, report: &Heartbeat) -> Result<(), DbError> {
    let policy = report.policy.as_ref().map(|p| serde_json::to_value(p).unwrap_or_default());
    let log = report.transparency.as_ref().map(|r| serde_json::to_value(r).unwrap_or_default());
    db.execute(
        "UPDATE nodes SET last_seen_at = now(), version = $2, online = $3, policy = coalesce($4, policy),
                          log_report = coalesce($5, log_report)
         WHERE id = $1",
        &[id.as_uuid(), &report.version, &report.online, &policy, &log],
    )
    .await?;
    Ok(())
}
