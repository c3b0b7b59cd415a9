//! The node-local endpoint's contract: what an algorithm's container sends its node and what the
//! node answers, route by route (`docs/algorithm-api.md`). The node serves these types and the
//! Rust SDK reads them, so a field renamed here is renamed on both sides at once; the Python
//! package and its mock federation are held to the same shapes by `examples.json`, which both
//! this crate's tests and the Python package's read.
//!
//! Ids are their text here (organizations, jobs, tasks): the SDK stays free of the rest of fedq,
//! and the node reads them into its typed ids where it takes them. Bytes travel base64-encoded
//! (standard alphabet, padded).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod errors;

pub use errors::{ErrorBody, ErrorCode};

/// `GET /v1/job`: the job this container runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// This job.
    pub job: String,
    /// Its task.
    pub task: String,
    /// The run: every task and subtask of one analysis.
    pub run: String,
    /// The collaboration.
    pub collaboration: String,
    /// This node's organization.
    pub organization: String,
    /// The organizations of the task, in the order the requester gave.
    pub organizations: Vec<String>,
    /// The organization that asked for the task.
    pub requester: String,
    /// The image this container runs.
    pub image: String,
    /// The largest result the node accepts, in bytes.
    #[serde(default)]
    pub max_result_bytes: Option<u64>,
}

/// `GET /v1/organizations`: the collaboration's members that the node can seal to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organizations {
    /// The collaboration.
    pub collaboration: String,
    /// Its members.
    pub organizations: Vec<Organization>,
}

/// A member organization of the collaboration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    /// Its id.
    pub id: String,
    /// Fingerprint of the key the node seals to.
    pub key_id: String,
}

/// `POST /v1/messages`: a run message for the job of organization `to` in this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// The recipient organization.
    pub to: String,
    /// The label both sides agreed on (at most [`MAX_TOPIC_LEN`] bytes).
    pub topic: String,
    /// The content, base64.
    pub body: String,
}

/// The longest topic, in bytes.
pub const MAX_TOPIC_LEN: usize = 200;

/// The longest a long poll (`wait=`) waits, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;

/// The answer to `POST /v1/messages` (202): the sealed envelope's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The envelope's message id.
    pub id: String,
}

/// `GET /v1/messages?topic=&from=&wait=&max=`: the run messages taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Messages {
    /// The messages, oldest first.
    pub messages: Vec<Message>,
}

/// A run message as the endpoint hands it over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The envelope's message id.
    pub id: String,
    /// The sending organization.
    pub from: String,
    /// The sending job.
    pub from_job: String,
    /// The label.
    pub topic: String,
    /// The content, base64.
    pub body: String,
}

/// `POST /v1/subtasks`: a subtask of this job's task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSubtask {
    /// Where it runs: 1 to [`MAX_SUBTASK_ORGANIZATIONS`] organizations (repetitions count once).
    pub organizations: Vec<String>,
    /// Its image; this job's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The input every organization gets, base64; empty when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Inputs by organization, base64, in place of `input` for those listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<BTreeMap<String, String>>,
}

/// The most organizations a subtask names.
pub const MAX_SUBTASK_ORGANIZATIONS: usize = 1000;

/// The answer to `POST /v1/subtasks` (201): the subtask just created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subtask {
    /// Its task id.
    pub task: String,
    /// Its jobs, one per organization.
    pub jobs: Vec<SubtaskJob>,
}

/// One job of a subtask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskJob {
    /// The job.
    pub job: String,
    /// Where it runs.
    pub organization: String,
}

/// `GET /v1/subtasks/{task}/results?wait=`: the results of a subtask so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskResults {
    /// Whether every job has finished.
    pub complete: bool,
    /// The finished jobs.
    pub results: Vec<SubtaskResult>,
}

/// The result of one job of a subtask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskResult {
    /// The job.
    pub job: String,
    /// Where it ran.
    pub organization: String,
    /// Its terminal status (`completed`, `failed`, …).
    pub status: String,
    /// What it posted, base64.
    pub output: String,
    /// Why it did not complete.
    pub reason: Option<String>,
}

/// `POST /v1/secure-sum`: this job's contribution to a round of secure aggregation. The node
/// masks it and sends it to the aggregator's organization once every participant's node has
/// sent its run key (waiting up to `wait` seconds, at most [`MAX_WAIT_SECS`]; if one is still
/// missing, nothing is sent, the answer is `round_incomplete`, and the call can be made again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contribute {
    /// The round's name: 1 to [`MAX_ROUND_LEN`] characters of `A-Z a-z 0-9 . _ -`, unique
    /// within the run.
    pub round: String,
    /// Every organization that contributes to the round, this one included (any order).
    pub participants: Vec<String>,
    /// The organization whose job receives the sum.
    pub aggregator: String,
    /// The contribution: integers modulo 2^64, at most [`MAX_SECURE_SUM_VALUES`].
    pub values: Vec<u64>,
    /// Seconds to wait for the other participants' run keys.
    #[serde(default)]
    pub wait: u64,
}

/// The longest round name.
pub const MAX_ROUND_LEN: usize = 64;

/// The most values in one round.
pub const MAX_SECURE_SUM_VALUES: usize = 1 << 20;

/// The answer to [`Contribute`] (202): the contribution left for the aggregator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contributed {
    /// The round.
    pub round: String,
    /// Its participants, sorted.
    pub participants: Vec<String>,
}

/// `GET /v1/secure-sum/{round}?participants=a,b,c&wait=`: at the aggregator's organization, the
/// sum of the round's contributions, once every participant's is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecureSum {
    /// The round.
    pub round: String,
    /// Its participants, sorted.
    pub participants: Vec<String>,
    /// The sum of their contributions, modulo 2^64.
    pub sum: Vec<u64>,
}

/// `POST /v1/result` with `Content-Type: application/json` (any other type posts the body's
/// bytes as they are); the node answers 204.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostResult {
    /// The result, base64.
    pub output: String,
}

#[cfg(test)]
mod tests;
