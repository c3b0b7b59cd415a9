//! Every permission rule of the server, read in one place: who the caller is ([`Principal`])
//! and what each kind of caller may do. The API and the dashboard call these, never a check of
//! their own.

use crate::app::AppError;
use crate::db::directory::{Collaboration, Node};
use crate::db::tasks::Task;
use crate::db::users::{Role, User};
use crate::ids::OrgId;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A person.
    User(User),
    /// A node, by its API key.
    Node(Node),
}

impl Principal {
    /// The caller's organization; `None` for root administrators.
    pub fn org(&self) -> Option<OrgId> {
        match self {
            Principal::User(u) => u.organization,
            Principal::Node(n) => Some(n.organization),
        }
    }

    /// Whether the caller is a root administrator.
    pub fn is_root(&self) -> bool {
        matches!(self, Principal::User(u) if u.role == Role::Root)
    }

    /// Root only.
    pub fn require_root(&self) -> Result<(), AppError> {
        if self.is_root() {
            Ok(())
        } else {
            Err(AppError::forbidden("only a root administrator may do this"))
        }
    }

    /// A root administrator, or an administrator of `org`.
    pub fn require_admin_of(&self, org: OrgId) -> Result<(), AppError> {
        match self {
            _ if self.is_root() => Ok(()),
            Principal::User(u) if u.role == Role::OrgAdmin && u.organization == Some(org) => Ok(()),
            _ => Err(AppError::forbidden(format!("only an administrator of organization {org} may do this"))),
        }
    }

    /// An administrator of `org` who belongs to it: root is not. Used where the organization
    /// itself must act, such as publishing its key, so that the server's operator cannot.
    pub fn require_own_admin(&self, org: OrgId) -> Result<(), AppError> {
        match self {
            Principal::User(u) if u.role == Role::OrgAdmin && u.organization == Some(org) => Ok(()),
            _ => Err(AppError::forbidden(format!(
                "only an administrator who belongs to organization {org} may do this (not root: \
                 members trust an organization's keys because the organization itself publishes them)"
            ))),
        }
    }

    /// A person who may create tasks for their organization (researchers and organization
    /// administrators), or a node (subtasks).
    pub fn require_task_creator(&self) -> Result<OrgId, AppError> {
        match self {
            Principal::User(u) if matches!(u.role, Role::Researcher | Role::OrgAdmin) => u
                .organization
                .ok_or_else(|| AppError::forbidden("a user without organization cannot create tasks")),
            Principal::Node(n) => Ok(n.organization),
            _ => Err(AppError::forbidden(
                "only researchers, organization administrators and nodes create tasks",
            )),
        }
    }

    /// A person (not a node).
    pub fn require_user(&self) -> Result<&User, AppError> {
        match self {
            Principal::User(u) => Ok(u),
            Principal::Node(_) => Err(AppError::forbidden("nodes may not do this")),
        }
    }

    /// A node.
    pub fn require_node(&self) -> Result<&Node, AppError> {
        match self {
            Principal::Node(n) => Ok(n),
            Principal::User(_) => Err(AppError::forbidden("only nodes may do this")),
        }
    }

    /// The organization whose view the caller has: `None` (everything) for root.
    pub fn scope(&self) -> Option<OrgId> {
        if self.is_root() { None } else { self.org() }
    }
}

/// Whether `principal` may kill `task`: root, or the creating organization's researchers,
/// administrators and nodes.
pub fn may_kill(principal: &Principal, task: &Task) -> bool {
    principal.is_root()
        || match principal {
            Principal::User(u) => {
                u.organization == Some(task.creator_organization)
                    && matches!(u.role, Role::Researcher | Role::OrgAdmin)
            }
            Principal::Node(n) => n.organization == task.creator_organization,
        }
}

/// Whether `principal` may fetch `task`'s sealed results: root, or the creating organization
/// (only it can open them).
pub fn may_read_results(principal: &Principal, task: &Task) -> bool {
    principal.is_root() || principal.org() == Some(task.creator_organization)
}

/// Whether the caller may see `user`.
pub fn user_visible(principal: &Principal, user: &User) -> bool {
    principal.is_root() || (principal.org().is_some() && principal.org() == user.organization)
}

/// How a user of an organization comes to be created, when the caller may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserCreation {
    /// By an administrator who belongs to the organization: any role.
    ByOwnAdministrator,
    /// By root: the organization's first administrator, only while it has none (checked as
    /// the user is inserted, `db::users::insert_first_admin`).
    FirstAdministratorByRoot,
}

/// Whether `principal` may create a user of `org` with `role`. Root creates an organization's
/// first administrator and nothing else within it: after that, the organization's people are
/// its administrators' to create, re-role and delete, so that the federation's operator cannot
/// act inside an organization that administers itself.
pub fn may_create_user(principal: &Principal, org: OrgId, role: Role) -> Result<UserCreation, AppError> {
    match principal {
        Principal::User(u) if u.role == Role::OrgAdmin && u.organization == Some(org) => {
            Ok(UserCreation::ByOwnAdministrator)
        }
        _ if principal.is_root() && role == Role::OrgAdmin => Ok(UserCreation::FirstAdministratorByRoot),
        _ if principal.is_root() => Err(AppError::forbidden(format!(
            "root creates only the first administrator of organization {org}; its other users are \
             created by the organization's own administrators"
        ))),
        _ => Err(AppError::forbidden(format!("only an administrator of organization {org} may do this"))),
    }
}

/// An administrator who belongs to `org`, for changes to its users: not root, who creates an
/// organization's first administrator only ([`may_create_user`]).
pub fn require_users_admin(principal: &Principal, org: OrgId) -> Result<(), AppError> {
    match principal {
        Principal::User(u) if u.role == Role::OrgAdmin && u.organization == Some(org) => Ok(()),
        _ if principal.is_root() => Err(AppError::forbidden(format!(
            "the users of organization {org} are changed by its own administrators, not by root"
        ))),
        _ => Err(AppError::forbidden(format!("only an administrator of organization {org} may do this"))),
    }
}

/// The organization within which `principal` may give `user` the role `role`: an administrator
/// who belongs to the user's organization ([`require_users_admin`]). A role changes within an
/// organization only: root administrators belong to none, so no one becomes or stops being one
/// this way. The caller has already seen `user` ([`user_visible`]).
pub fn may_set_role(principal: &Principal, user: &User, role: Role) -> Result<OrgId, AppError> {
    let Some(org) = user.organization else {
        return Err(AppError::invalid(format!(
            "user {} is a root administrator, who belongs to no organization: the role does not change; \
             an organization's administrator creates its users",
            user.username
        )));
    };
    if role == Role::Root {
        return Err(AppError::invalid(
            "a root administrator belongs to no organization: create one with POST /users instead of \
             changing a user's role",
        ));
    }
    require_users_admin(principal, org)?;
    Ok(org)
}

/// Whether the caller may see `node`: root, or the node's organization.
pub fn node_visible(principal: &Principal, node: &Node) -> bool {
    principal.is_root() || principal.org() == Some(node.organization)
}

/// Whether the caller may see `collaboration`: root, or a member organization.
pub fn collaboration_visible(principal: &Principal, collaboration: &Collaboration) -> bool {
    principal.is_root() || principal.org().is_some_and(|o| collaboration.organizations.contains(&o))
}

/// Which dead letters the caller may read: every one for root (`None`), those whose sender or
/// recipient is their organization for its administrators. Others are refused: a refusal's
/// header names organizations, tasks and publishers beyond what they may see.
pub fn dead_letter_scope(principal: &Principal) -> Result<Option<OrgId>, AppError> {
    match principal {
        _ if principal.is_root() => Ok(None),
        Principal::User(User { role: Role::OrgAdmin, organization: Some(org), .. }) => Ok(Some(*org)),
        _ => Err(AppError::forbidden(
            "only root and organization administrators read dead letters (an organization's administrator \
             those to or from it); ask one of yours",
        )),
    }
}
