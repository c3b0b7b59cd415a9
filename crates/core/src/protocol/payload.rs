//! Sealed payloads, one type per [`Kind`].

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{JobStatus, Kind, Requester};
use crate::ids::{JobId, OrgId};

/// Start one organization's job of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStart {
    /// The job this envelope starts.
    pub job: JobId,
    /// The algorithm image, by name and (preferably) digest.
    pub image: String,
    /// Who asked; the result is sealed for `requester.org()`.
    pub requester: Requester,
    /// Every organization the task runs at, in the order the requester gave; algorithms such as
    /// Secure Sum derive their role from their position in it.
    pub organizations: Vec<OrgId>,
    /// The input for this organization, opaque to fedq.
    pub input: ByteBuf,
    /// Whether the requester asks for the container's log with the result (the node sends it
    /// only if its policy shares logs).
    #[serde(default)]
    pub return_log: bool,
    /// The transparency log's head as the sender last checked it, if it monitors the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_head: Option<SeenHead>,
    /// For a subtask: every organization the creating job answered to (the run's requester,
    /// and whoever sent the jobs between), as the node that creates the subtask knows them. The
    /// receiving node checks its policy against each of them as well as against the sender, so
    /// that a partner's job cannot borrow the grants its host node's organization has: the set
    /// only grows along a chain of subtasks, and a claim can only narrow what a job may do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_behalf_of: Vec<OrgId>,
}

/// The final result of a job, sealed for the requester.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job this result ends.
    pub job: JobId,
    /// A terminal status.
    pub status: JobStatus,
    /// What the algorithm posted, opaque to fedq; empty when it posted nothing.
    pub output: ByteBuf,
    /// The container's log, sealed like the result so the server never stores it in clear.
    pub log: String,
    /// Why the job ended as it did, when it did not complete.
    pub reason: Option<String>,
    /// The transparency log's head as the sender last checked it, if it monitors the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_head: Option<SeenHead>,
}

/// An intermediate status change of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatusUpdate {
    /// The job whose status changed.
    pub job: JobId,
    /// Its new status.
    pub status: JobStatus,
    /// A short explanation for people.
    pub detail: Option<String>,
}

/// A message between algorithm containers of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMessage {
    /// The job that sent it.
    pub from_job: JobId,
    /// A label the algorithms agree on, so that one container can wait for a specific message.
    pub topic: String,
    /// The message, opaque to fedq.
    pub body: ByteBuf,
    /// The transparency log's head as the sender last checked it, if it monitors the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_head: Option<SeenHead>,
}

/// A signed tree head of the server's transparency log, as the sender of an envelope last
/// checked it. Sealed inside the payload, so the server can neither read nor strip it: the
/// receiver compares it with its own, and a server that showed the two organizations different
/// histories is caught (docs/protocol.md, "The transparency log"). Old readers ignore it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenHead {
    /// Leaves in the tree.
    pub size: u64,
    /// Its root, 32 bytes.
    pub root: ByteBuf,
    /// When the log signed it, ms since the epoch.
    pub timestamp_ms: u64,
    /// The log's Ed25519 signature, 64 bytes.
    pub signature: ByteBuf,
}

/// A payload of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// See [`JobStart`].
    JobStart(JobStart),
    /// See [`JobResult`].
    JobResult(JobResult),
    /// See [`JobStatusUpdate`].
    JobStatus(JobStatusUpdate),
    /// See [`RunMessage`].
    RunMessage(RunMessage),
}

/// A payload that does not decode as the kind its header names.
#[derive(Debug, thiserror::Error)]
#[error("the payload is not a valid {kind} body: {source}")]
pub struct PayloadError {
    kind: Kind,
    #[source]
    source: rmp_serde::decode::Error,
}

impl Payload {
    /// The transparency log's head the sender sealed in, if any.
    pub fn log_head(&self) -> Option<&SeenHead> {
        match self {
            Payload::JobStart(p) => p.log_head.as_ref(),
            Payload::JobResult(p) => p.log_head.as_ref(),
            Payload::RunMessage(p) => p.log_head.as_ref(),
            Payload::JobStatus(_) => None,
        }
    }

    /// The kind an envelope carrying this payload must declare.
    pub fn kind(&self) -> Kind {
        match self {
            Payload::JobStart(_) => Kind::JobStart,
            Payload::JobResult(_) => Kind::JobResult,
            Payload::JobStatus(_) => Kind::JobStatus,
            Payload::RunMessage(_) => Kind::RunMessage,
        }
    }

    /// Encodes the payload as MessagePack (named fields, so that payloads stay readable by
    /// algorithm authors in other languages and can grow optional fields).
    pub fn to_bytes(&self) -> Vec<u8> {
        let encoded = match self {
            Payload::JobStart(p) => rmp_serde::to_vec_named(p),
            Payload::JobResult(p) => rmp_serde::to_vec_named(p),
            Payload::JobStatus(p) => rmp_serde::to_vec_named(p),
            Payload::RunMessage(p) => rmp_serde::to_vec_named(p),
        };
        // Encoding plain structs into a Vec cannot fail: there is no I/O and no map with
        // non-string keys.
        encoded.expect("payload types always encode")
    }

    /// Decodes the payload of an envelope whose header says `kind`.
    pub fn from_bytes(kind: Kind, bytes: &[u8]) -> Result<Self, PayloadError> {
        let wrap = |source| PayloadError { kind, source };
        Ok(match kind {
            Kind::JobStart => Payload::JobStart(rmp_serde::from_slice(bytes).map_err(wrap)?),
            Kind::JobResult => Payload::JobResult(rmp_serde::from_slice(bytes).map_err(wrap)?),
            Kind::JobStatus => Payload::JobStatus(rmp_serde::from_slice(bytes).map_err(wrap)?),
            Kind::RunMessage => Payload::RunMessage(rmp_serde::from_slice(bytes).map_err(wrap)?),
        })
    }
}

impl Payload {
    /// One example payload of every kind, for the tests of whatever carries payloads
    /// (the envelope's among them).
    pub fn examples() -> Vec<Payload> {
        let org = OrgId::new();
        vec![
            Payload::JobStart(JobStart {
                job: JobId::new(),
                image: "fedq/secure-sum@sha256:00ff".into(),
                requester: Requester::User { org, user: "ada".into() },
                organizations: vec![org, OrgId::new(), OrgId::new()],
                input: ByteBuf::from(b"{\"column\":\"age\"}".to_vec()),
                return_log: false,
                log_head: None,
                on_behalf_of: vec![org],
            }),
            Payload::JobResult(JobResult {
                job: JobId::new(),
                status: JobStatus::Completed,
                output: ByteBuf::from(vec![1, 2, 3]),
                log: "done\n".into(),
                reason: None,
                log_head: None,
            }),
            Payload::JobStatus(JobStatusUpdate {
                job: JobId::new(),
                status: JobStatus::Running,
                detail: Some("container started".into()),
            }),
            Payload::RunMessage(RunMessage {
                from_job: JobId::new(),
                topic: "x1".into(),
                body: ByteBuf::from(42u64.to_le_bytes().to_vec()),
                log_head: None,
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let examples = Payload::examples();
        assert_eq!(examples.len(), Kind::ALL.len());
        for (payload, kind) in examples.iter().zip(Kind::ALL) {
            assert_eq!(payload.kind(), kind);
            let bytes = payload.to_bytes();
            assert_eq!(&Payload::from_bytes(kind, &bytes).unwrap(), payload);
        }
    }

    #[test]
    fn a_payload_of_another_kind_is_a_typed_error() {
        let status = Payload::JobStatus(JobStatusUpdate {
            job: JobId::new(),
            status: JobStatus::Running,
            detail: None,
        });
        let err = Payload::from_bytes(Kind::JobStart, &status.to_bytes()).unwrap_err();
        assert!(err.to_string().contains("job_start"), "{err}");
    }
}
