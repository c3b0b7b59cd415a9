//! The REST contract as types: the bodies the server answers and the client and the node send
//! and read. Both sides use these same types, so a field renamed here is renamed on both sides
//! at once, and `docs/openapi.json` is checked against them (`server::api::system`).
//!
//! Secrets in answers (a node's API key and broker password, shown once) are [`ShownOnce`]:
//! they serialize as plain strings but never print in `Debug` output.

/// A closed set of stable codes: an enum, its texts, every value in order, and reading a text
/// back. The texts are the contract; the variants are how the code names them.
macro_rules! stable_codes {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// Its text, as the wire, the database and the docs write it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value of its text; `None` for one this build does not know.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|c| c.as_str() == text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!(concat!("unknown ", stringify!($name), " {:?}"), text))
                })
            }
        }
    };
}

mod directory;
mod errors;
mod refusals;
mod requests;

pub use directory::{Collaboration, LoginAnswer, Me, Organization, Role, User};
pub use errors::ErrorCode;
pub use refusals::{NodeRefusal, RouterRefusal};
pub use requests::{
    CreateCollaboration, CreateEnrollment, CreateNode, CreateOrganization, CreateUser, Credential, Enroll,
    Login, PublishKey, RevokeKey, SetRole,
};

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::ids::{CollaborationId, JobId, NodeId, OrgId, RunId, TaskId};
use crate::protocol::heartbeat::{LogReport, PolicySummary};
use crate::protocol::{JobStatus, TaskStatus};

/// A secret the server shows once (an API key, a broker password): the string itself on the
/// wire, `"<redacted>"` in `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShownOnce(String);

impl ShownOnce {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, to store it where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ShownOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code (`docs/api.md`).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// For `envelope_refused`: the refusal's reason code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A task as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Identifier.
    pub id: TaskId,
    /// Collaboration.
    pub collaboration: CollaborationId,
    /// Run.
    pub run: RunId,
    /// The task that created it, for subtasks.
    pub parent: Option<TaskId>,
    /// Algorithm image.
    pub image: String,
    /// Free-form name.
    pub name: String,
    /// The organization that created it; results are sealed for it.
    pub creator_organization: OrgId,
    /// The researcher who created it.
    pub creator_user: Option<crate::ids::UserId>,
    /// The node that created it (subtasks).
    pub creator_node: Option<NodeId>,
    /// When it was created.
    pub created_at: SystemTime,
    /// Its jobs, one per organization.
    pub jobs: Vec<Job>,
}

impl Task {
    /// The task's overall status, from its jobs'.
    pub fn status(&self) -> TaskStatus {
        TaskStatus::of(self.jobs.iter().map(|j| j.status))
    }
}

/// One organization's job of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Identifier.
    pub id: JobId,
    /// Organization.
    pub organization: OrgId,
    /// The organization's name, for people to read.
    pub organization_name: String,
    /// Status.
    pub status: JobStatus,
    /// When the status last changed.
    pub status_changed_at: SystemTime,
}

/// One organization's job in `POST /tasks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    /// Chosen by the client, sealed into the envelope.
    pub id: JobId,
    /// Where it runs.
    pub organization: OrgId,
    /// The `job_start` envelope sealed for the organization, base64.
    pub envelope: String,
}

/// `POST /tasks` body. Identifiers are chosen by the client, which seals them into the
/// envelopes' headers; retrying the same request is safe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// The task.
    pub id: TaskId,
    /// Its run (a subtask's is its parent's).
    pub run: RunId,
    /// Its collaboration.
    pub collaboration: CollaborationId,
    /// The algorithm image.
    pub image: String,
    /// A name for people.
    #[serde(default)]
    pub name: String,
    /// The parent task, for a subtask (nodes only).
    #[serde(default)]
    pub parent: Option<TaskId>,
    /// One job per organization.
    pub jobs: Vec<NewJob>,
}

/// `GET /tasks/{id}/results` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskResults {
    /// Whether every job has finished.
    pub complete: bool,
    /// The sealed results stored so far.
    pub results: Vec<SealedResult>,
}

/// One job's sealed result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedResult {
    /// The job.
    pub job: JobId,
    /// Where it ran.
    pub organization: OrgId,
    /// How it ended.
    pub status: JobStatus,
    /// The `job_result` envelope, base64: only the creating organization opens it.
    pub envelope: String,
}

/// A node as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Identifier.
    pub id: NodeId,
    /// Its organization.
    pub organization: OrgId,
    /// Name, unique within the organization.
    pub name: String,
    /// Its broker user name.
    pub broker_user: String,
    /// Version it last reported.
    pub version: Option<String>,
    /// When it last reported.
    pub last_seen_at: Option<SystemTime>,
    /// Whether it reported itself online.
    pub online: bool,
    /// When it was revoked.
    pub revoked_at: Option<SystemTime>,
    /// What it said it agrees to run, with its last heartbeat.
    pub policy: Option<PolicySummary>,
    /// What its monitor of the transparency log reported with its last heartbeat.
    #[serde(default)]
    pub transparency: Option<LogReport>,
}

/// `POST /nodes` and `POST /enroll` answer: the node and its credentials, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRegistration {
    /// The node as stored.
    pub node: Node,
    /// Its API key for the REST API.
    pub api_key: ShownOnce,
    /// Its broker account.
    pub broker: BrokerAccess,
    /// Its organization (enrollment only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<EnrolledOrganization>,
}

/// A node's broker account: least privilege, consume its organization's queue, publish to
/// ingress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerAccess {
    /// The AMQP URL to connect to, without credentials.
    pub url: String,
    /// The virtual host.
    pub vhost: String,
    /// The node's broker user.
    pub username: String,
    /// Its password.
    pub password: ShownOnce,
    /// The organization's queue.
    pub queue: String,
    /// The exchange to publish to.
    pub exchange: String,
    /// The server's broker user: control messages come only from it.
    pub server_user: String,
    /// The CA the broker's certificate chains to, PEM (enrollment, when the server knows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// The organization an enrolled node belongs to, as the server lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrolledOrganization {
    /// Identifier.
    pub id: OrgId,
    /// Name.
    pub name: String,
    /// Its published public key, if any (the node pins it after checking it out of band).
    pub public_key: Option<String>,
}

/// An envelope the router refused, as `GET /dead-letters` shows it: what could be read of its
/// header, and why. Never a payload: the server keeps none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The envelope's message id (hex), if its header could be read.
    pub message_id: Option<String>,
    /// Stable reason code (`docs/operations.md`, "Reading the dead-letter queue").
    pub reason_code: String,
    /// The reason, for people.
    pub reason: String,
    /// Its kind, if the header could be read.
    pub kind: Option<String>,
    /// The sending organization the header claims.
    pub sender: Option<OrgId>,
    /// The receiving organization the header names.
    pub recipient: Option<OrgId>,
    /// The task the header names.
    pub task: Option<TaskId>,
    /// The validated broker user that published it (empty when the message carried none).
    pub publisher: Option<String>,
    /// The envelope's size in bytes.
    pub size: u64,
    /// When the router refused it.
    pub received_at: SystemTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_shown_once_never_print() {
        let secret = ShownOnce::new("fedq_n_very-secret");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(serde_json::to_value(&secret).unwrap(), "fedq_n_very-secret");
    }
}

/// The transparency log's public key (`GET /transparency/key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogKey {
    /// `Ed25519`.
    pub algorithm: String,
    /// The 32-byte public key, in hex.
    pub public_key: String,
}

/// A signed tree head of the transparency log (`GET /transparency/tree-head`). The signature
/// covers the label `fedq transparency log tree head v1\0`, then size, root and timestamp
/// (docs/protocol.md, "The transparency log").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeHeadBody {
    /// Leaves in the tree.
    pub size: u64,
    /// The Merkle tree head (RFC 9162), 32 bytes in hex.
    pub root: String,
    /// When the log signed it, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Ed25519, 64 bytes in hex.
    pub signature: String,
}

/// That a leaf is in the tree of a size (`GET /transparency/proof/inclusion`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProofBody {
    /// The leaf's index.
    pub leaf_index: u64,
    /// The size of the tree it is proven in.
    pub tree_size: u64,
    /// The audit path (RFC 9162, 2.1.3), hashes in hex.
    pub path: Vec<String>,
}

/// That the tree of size `from` is a prefix of the tree of size `to`
/// (`GET /transparency/proof/consistency`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProofBody {
    /// The older size.
    pub from: u64,
    /// The newer size.
    pub to: u64,
    /// The consistency proof (RFC 9162, 2.1.4), hashes in hex.
    pub path: Vec<String>,
}

/// One leaf of the log (`GET /transparency/entries`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Its index.
    pub index: u64,
    /// The leaf's bytes (layout version 1), in hex; absent for an envelope of a collaboration
    /// the reader's organization is not in (neither its sender nor its recipient), which is
    /// shown by its hash alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
    /// The leaf's RFC 9162 hash in hex, when the leaf itself is not shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_hash: Option<String>,
}
