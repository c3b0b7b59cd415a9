//! The directory as the REST API answers it: organizations, collaborations, users and their
//! roles, who a credential belongs to (`GET /users/me`) and a new session (`POST /login`). The
//! server answers with these, converted from its own rows; the client reads them.

use serde::{Deserialize, Serialize};

use super::{Node, ShownOnce};
use crate::ids::{CollaborationId, OrgId, UserId};

stable_codes! {
    /// What a user may do.
    Role {
        /// Administers the whole federation; belongs to no organization.
        Root = "root",
        /// Administers one organization: its users, nodes and keys; can also do research.
        OrgAdmin = "org_admin",
        /// Creates and follows tasks in the collaborations of their organization.
        Researcher = "researcher",
        /// Reads only.
        Viewer = "viewer",
    }
}

impl Role {
    /// Its code in the transparency log's `UserRoleChanged` leaves (0 means removed).
    pub const fn code(self) -> u8 {
        match self {
            Role::Root => 4,
            Role::OrgAdmin => 2,
            Role::Researcher => 1,
            Role::Viewer => 3,
        }
    }
}

/// An organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    /// Identifier.
    pub id: OrgId,
    /// Display name, unique.
    pub name: String,
    /// Current public key (`fedq-pk1:…`), if one is published.
    pub public_key: Option<String>,
    /// Its fingerprint (`SHA256:…`).
    pub fingerprint: Option<String>,
}

/// A set of organizations that analyse together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collaboration {
    /// Identifier.
    pub id: CollaborationId,
    /// Display name, unique.
    pub name: String,
    /// Member organizations.
    pub organizations: Vec<OrgId>,
}

/// A user (never with a password or its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// `GET /users/me`: a user for a session token, a node for a node's API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Me {
    /// A person's session.
    User(User),
    /// A node's API key.
    Node(Node),
}

impl Me {
    /// The organization the credential acts for (`None` for a root administrator).
    pub fn organization(&self) -> Option<OrgId> {
        match self {
            Me::User(u) => u.organization,
            Me::Node(n) => Some(n.organization),
        }
    }

    /// The user's name; `None` for a node.
    pub fn username(&self) -> Option<&str> {
        match self {
            Me::User(u) => Some(&u.username),
            Me::Node(_) => None,
        }
    }
}

/// `POST /login`'s answer: a new session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginAnswer {
    /// The session token, sent as `Authorization: Bearer <token>`.
    pub token: ShownOnce,
    /// When the session ends, in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// Whose session it is.
    pub user: User,
}
