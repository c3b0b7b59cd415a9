//! The REST API's request bodies: what the command line, the clients and the node send, and
//! the server reads (refusing a field it does not know). Answers are in the module above.

use serde::{Deserialize, Serialize};

use super::Role;
use crate::ids::OrgId;

/// A password or token in a request: the string itself on the wire, `"<redacted>"` in `Debug`.
/// The server moves it into a zeroized secret as soon as it is read.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Credential(String);

impl Credential {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret itself, moved out (into the receiver's own secret type).
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `POST /login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The user's name.
    pub username: String,
    /// Their password.
    pub password: Credential,
}

/// `POST /users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// The new user's name.
    pub username: String,
    /// Their first password.
    pub password: Credential,
    /// What they may do.
    pub role: Role,
    /// Their organization (none for a root administrator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<OrgId>,
}

/// `PATCH /users/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    /// The user's new role.
    pub role: Role,
}

/// `POST /organizations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganization {
    /// Its name, 1 to 200 characters.
    pub name: String,
    /// Refused: an organization publishes its own key (`PUT /organizations/{id}/public-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// `PUT /organizations/{id}/public-key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishKey {
    /// The new key, as `fedq keys` prints it.
    pub public_key: String,
    /// The organization's signature of the hand-over from its current key to this one, made
    /// with the current key (base64 of 64 bytes): members then follow the rotation by themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_signature: Option<String>,
}

/// `POST /organizations/{id}/keys/{fingerprint}/revoke`: the organization's signed statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeKey {
    /// Ed25519 signature over the revocation message (base64 of 64 bytes).
    pub signature: String,
    /// The fingerprint of the key that signed it: the revoked key, or another of the organization.
    pub signed_by: String,
}

/// `POST /collaborations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCollaboration {
    /// Its name, 1 to 200 characters.
    pub name: String,
    /// Its first members.
    pub organizations: Vec<OrgId>,
}

/// `POST /nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNode {
    /// The node's organization.
    pub organization: OrgId,
    /// Its name.
    pub name: String,
}

/// `POST /organizations/{id}/enrollments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollment {
    /// The name of the node the token enrolls.
    pub node_name: String,
    /// How long the token is valid (the server's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_secs: Option<u64>,
}

/// `POST /enroll`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enroll {
    /// The one-time enrollment token.
    pub token: Credential,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_travels_in_clear_but_never_prints() {
        let login = Login { username: "ada".into(), password: Credential::new("correct horse") };
        let text = serde_json::to_string(&login).unwrap();
        assert_eq!(text, r#"{"username":"ada","password":"correct horse"}"#);
        assert!(!format!("{login:?}").contains("horse"), "{login:?}");
        assert_eq!(serde_json::from_str::<Login>(&text).unwrap(), login);
    }

    #[test]
    fn a_request_with_a_field_the_server_does_not_know_is_refused() {
        let error = serde_json::from_str::<SetRole>(r#"{"role": "viewer", "admin": true}"#).unwrap_err();
        assert!(error.to_string().contains("unknown field `admin`"), "{error}");
        let user: CreateUser =
            serde_json::from_str(r#"{"username": "u", "password": "p", "role": "researcher"}"#).unwrap();
        assert_eq!((user.role, user.organization), (Role::Researcher, None));
        assert_eq!(serde_json::to_value(&user).unwrap().get("organization"), None);
    }
}
