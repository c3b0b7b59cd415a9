//! Who is looking: the administrator of a dashboard session, what they may see, and the CSRF
//! token their forms carry. The session (`session.rs`) makes one; pages and the layout read it.

use crate::app::Principal;
use crate::db::users::{Role, User};
use crate::ids::OrgId;

/// A logged-in administrator.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The user.
    pub user: User,
    csrf: String,
}

impl Admin {
    /// The administrator `user` of a session whose forms carry `csrf`.
    pub(super) fn new(user: User, csrf: String) -> Self {
        Self { user, csrf }
    }

    /// As a principal of the API's permission rules.
    pub fn principal(&self) -> Principal {
        Principal::User(self.user.clone())
    }

    /// Whether this is a root administrator.
    pub fn is_root(&self) -> bool {
        self.user.role == Role::Root
    }

    /// What the administrator may see: `None` (everything) for root, else their organization.
    pub fn scope(&self) -> Option<OrgId> {
        if self.is_root() { None } else { self.user.organization }
    }

    /// The token every form of this session carries.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// The role, for people.
    pub fn role_label(&self) -> &'static str {
        match self.user.role {
            Role::Root => "root administrator",
            _ => "organization administrator",
        }
    }
}
