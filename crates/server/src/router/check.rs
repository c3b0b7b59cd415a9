//! The routing decision: a pure function of the envelope's header and the facts read about it,
//! so every rule is unit-tested without a database or a broker.

use crate::contract::RouterRefusal;
use crate::db::routing::{Facts, Outcome};
use crate::envelope::{OpenError, OpenPolicy, Parsed, check_times};
use crate::ids::OrgId;
use crate::protocol::Kind;
use crate::time::Timestamp;

/// Why the router refused an envelope. `code`'s text is stable: it goes into the dead-letter
/// reason header, the dead-letter table and the API's error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// Stable reason code.
    pub code: RouterRefusal,
    /// Reason for people.
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(code: RouterRefusal, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Who published the envelope, as the router knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publisher {
    /// A node, by the organization of its validated broker user (`None` if the user is unknown
    /// or revoked).
    Node(Option<OrgId>),
    /// A user or node through the REST API, already authenticated as this organization.
    Api(OrgId),
}

/// Decides what to do with a parsed envelope, or why to refuse it.
pub fn decide(
    parsed: &Parsed<'_>,
    publisher: Publisher,
    facts: &Facts,
    policy: &OpenPolicy,
    now: Timestamp,
) -> Result<Outcome, Refusal> {
    let h = &parsed.header;
    let publisher_org = match publisher {
        Publisher::Node(org) => org,
        Publisher::Api(org) => Some(org),
    };
    let publisher_org = publisher_org.ok_or_else(|| {
        Refusal::new(RouterRefusal::UnknownPublisher, "published by a broker user that is not a live node")
    })?;
    if publisher_org != h.sender {
        return Err(Refusal::new(
            RouterRefusal::PublisherMismatch,
            format!("header claims sender {} but the publisher belongs to {publisher_org}", h.sender),
        ));
    }
    let task = facts
        .task
        .as_ref()
        .ok_or_else(|| Refusal::new(RouterRefusal::UnknownTask, format!("no task {}", h.task)))?;
    if task.collaboration != h.collaboration {
        return Err(Refusal::new(
            RouterRefusal::WrongCollaboration,
            format!(
                "task {} belongs to collaboration {}, not {}",
                h.task, task.collaboration, h.collaboration
            ),
        ));
    }
    if task.run != h.run {
        return Err(Refusal::new(
            RouterRefusal::WrongRun,
            format!("task {} belongs to run {}, not {}", h.task, task.run, h.run),
        ));
    }
    if !facts.sender_member || !facts.recipient_member {
        let who = if facts.sender_member { h.recipient } else { h.sender };
        return Err(Refusal::new(
            RouterRefusal::NotAMember,
            format!("organization {who} is not a member of collaboration {}", h.collaboration),
        ));
    }
    let outcome = direction(h.kind, h.recipient, h.sender, facts, task)?;
    if let Some(status) = h.status {
        let ok = match h.kind {
            Kind::JobResult => status.is_terminal(),
            _ => !status.is_terminal() && status != crate::protocol::JobStatus::Pending,
        };
        if !ok {
            return Err(Refusal::new(
                RouterRefusal::BadStatus,
                format!("a {} cannot report status {status}", h.kind),
            ));
        }
    }
    check_times(h, policy, now).map_err(|e| {
        let code = match e {
            OpenError::Expired { .. } => RouterRefusal::Expired,
            OpenError::NotYetValid { .. } => RouterRefusal::NotYetValid,
            _ => RouterRefusal::BadLifetime,
        };
        Refusal::new(code, e.to_string())
    })?;
    let key = facts.sender_key.as_ref().ok_or_else(|| {
        let e = OpenError::UnknownSenderKey { sender: h.sender, key: h.sender_key };
        Refusal::new(RouterRefusal::UnknownSenderKey, e.to_string())
    })?;
    if !parsed.verify_signature(key) {
        let e = OpenError::BadSignature { sender: h.sender };
        return Err(Refusal::new(RouterRefusal::BadSignature, e.to_string()));
    }
    Ok(outcome)
}

/// Which kinds may travel from whom to whom, and what the router does with them.
fn direction(
    kind: Kind,
    recipient: OrgId,
    sender: OrgId,
    facts: &Facts,
    task: &crate::db::routing::TaskFacts,
) -> Result<Outcome, Refusal> {
    let refuse = |why: &str| {
        Refusal::new(RouterRefusal::Direction, format!("{kind} from {sender} to {recipient}: {why}"))
    };
    // Results and statuses of a researcher's task stop at the server (for the API); those of a
    // subtask go on to the node of the job that created it.
    let to_requester = if task.parent.is_none() { Outcome::Stored } else { Outcome::Forwarded };
    match kind {
        Kind::JobStart => {
            if sender != task.creator {
                return Err(refuse("only the task's creator may send it"));
            }
            if !facts.recipient_job {
                return Err(refuse("the recipient has no job in the task"));
            }
            Ok(Outcome::Forwarded)
        }
        Kind::JobResult | Kind::JobStatus => {
            if !facts.sender_job {
                return Err(refuse("the sender has no job in the task"));
            }
            if recipient != task.creator {
                return Err(refuse("results go to the task's creator only"));
            }
            Ok(to_requester)
        }
        Kind::RunMessage => {
            if !facts.sender_in_run || !facts.recipient_in_run {
                return Err(refuse("both organizations must have a job in the run"));
            }
            Ok(Outcome::Forwarded)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_and_signature_reasons_are_the_envelopes_own_codes() {
        // A node refuses what does not open with these same codes, so both sides name a failure alike.
        for reason in [
            RouterRefusal::BadLifetime,
            RouterRefusal::Expired,
            RouterRefusal::NotYetValid,
            RouterRefusal::UnknownSenderKey,
            RouterRefusal::BadSignature,
        ] {
            assert!(OpenError::CODES.contains(&reason.as_str()), "{reason}");
        }
    }
}
