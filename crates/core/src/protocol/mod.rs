//! Protocol types: what the envelope kinds are and what their sealed payloads carry.
//!
//! These are wire types. They are serialized with MessagePack (`rmp-serde`) inside the sealed
//! part of an envelope; only [`Kind`] and [`JobStatus`] also appear in the clear header, because
//! the router needs them to route and to record job status changes.

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, OrgId, TaskId};

pub mod control;
pub mod heartbeat;
mod payload;

pub use payload::{JobResult, JobStart, JobStatusUpdate, Payload, PayloadError, RunMessage, SeenHead};

/// What an envelope is for. Carried in the clear header so the router can check that the kind
/// is allowed in the direction it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Start a job: a task's input for one organization (requester → organization).
    JobStart,
    /// A job's final result (organization → requester).
    JobResult,
    /// A job's intermediate status, e.g. running (organization → requester).
    JobStatus,
    /// A message between the algorithm containers of one run (organization → organization).
    RunMessage,
}
// Stopping a task's jobs and ending a run are not envelope kinds: only the server knows when a
// researcher killed a task or a run's last job ended, and it tells nodes by a control message
// (`control`), so that no organization has an envelope with which to act on another's jobs.

impl Kind {
    /// Every kind, for exhaustive tests and listings.
    pub const ALL: [Kind; 4] = [Kind::JobStart, Kind::JobResult, Kind::JobStatus, Kind::RunMessage];

    /// The stable name used in headers, logs and dead-letter reasons.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::JobStart => "job_start",
            Kind::JobResult => "job_result",
            Kind::JobStatus => "job_status",
            Kind::RunMessage => "run_message",
        }
    }

    /// Whether envelopes of this kind carry a job status in the clear header.
    pub const fn carries_status(self) -> bool {
        matches!(self, Kind::JobResult | Kind::JobStatus)
    }
}

impl std::str::FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// A kind name that is not one of [`Kind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown envelope kind {0:?}")]
pub struct UnknownKind(pub String);

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lifecycle of a job. `Pending → Delivered → Running →` one of the terminal states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Created at the server, not yet taken by the organization's node.
    Pending,
    /// Taken from the queue by the node.
    Delivered,
    /// The algorithm container is running.
    Running,
    /// The algorithm posted a result and exited cleanly.
    Completed,
    /// The algorithm reported failure or exited non-zero.
    Failed,
    /// The container died: out of memory, timeout, or a node-side error.
    Crashed,
    /// Stopped by a kill request.
    Killed,
    /// The node's policy refused the job; it never started.
    Refused,
}

impl JobStatus {
    /// The statuses a job can no longer leave: the one list of them, which the database's
    /// statements take as a parameter ([`JobStatus::TERMINAL_NAMES`]) and the Python client
    /// reads from its native module.
    pub const TERMINAL: [JobStatus; 5] =
        [JobStatus::Completed, JobStatus::Failed, JobStatus::Crashed, JobStatus::Killed, JobStatus::Refused];

    /// The names of [`JobStatus::TERMINAL`], as the database and the API write them.
    pub const TERMINAL_NAMES: [&'static str; 5] = {
        let mut names = [""; 5];
        let mut i = 0;
        while i < names.len() {
            names[i] = Self::TERMINAL[i].as_str();
            i += 1;
        }
        names
    };

    /// Whether the job can no longer change state.
    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }

    /// The stable name used in the API and the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Delivered => "delivered",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Crashed => "crashed",
            JobStatus::Killed => "killed",
            JobStatus::Refused => "refused",
        }
    }
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Pending,
        JobStatus::Delivered,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Crashed,
        JobStatus::Killed,
        JobStatus::Refused,
    ];
}

/// A status name that is not one of [`JobStatus::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

impl std::str::FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of a whole task, from its jobs' statuses: running while any job runs, pending
/// while any waits, completed when all completed, killed when any was killed, refused when all
/// were, and failed otherwise. The server's database keeps the same rule for each task
/// (`task_status_of` in migrations/V7__task_status.sql), tested against this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// A job is running.
    Running,
    /// No job runs and one has not started.
    Pending,
    /// Every job completed.
    Completed,
    /// A job was killed.
    Killed,
    /// Every job was refused by its node's policy.
    Refused,
    /// Every job ended, at least one not cleanly.
    Failed,
}

impl TaskStatus {
    /// Every status, in the order the dashboard lists them.
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Running,
        TaskStatus::Pending,
        TaskStatus::Completed,
        TaskStatus::Killed,
        TaskStatus::Refused,
        TaskStatus::Failed,
    ];

    /// The status of a task whose jobs have `statuses`.
    pub fn of(statuses: impl IntoIterator<Item = JobStatus> + Clone) -> TaskStatus {
        use JobStatus as S;
        let any = |f: fn(S) -> bool| statuses.clone().into_iter().any(f);
        let all = |f: fn(S) -> bool| statuses.clone().into_iter().all(f);
        if any(|s| s == S::Running) {
            TaskStatus::Running
        } else if any(|s| matches!(s, S::Pending | S::Delivered)) {
            TaskStatus::Pending
        } else if all(|s| s == S::Completed) {
            TaskStatus::Completed
        } else if any(|s| s == S::Killed) {
            TaskStatus::Killed
        } else if all(|s| s == S::Refused) {
            TaskStatus::Refused
        } else {
            TaskStatus::Failed
        }
    }

    /// The stable name used in the API, the dashboard and the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Running => "running",
            TaskStatus::Pending => "pending",
            TaskStatus::Completed => "completed",
            TaskStatus::Killed => "killed",
            TaskStatus::Refused => "refused",
            TaskStatus::Failed => "failed",
        }
    }

    /// Whether the task can still change: a job is running or has not started.
    pub const fn is_unfinished(self) -> bool {
        matches!(self, TaskStatus::Running | TaskStatus::Pending)
    }
}

impl std::str::FromStr for TaskStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who asked for a job: a researcher of an organization, or a job that created a subtask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requester {
    /// A person, by organization and user name.
    User {
        /// The researcher's organization; results are sealed for it.
        org: OrgId,
        /// The researcher's user name at the server.
        user: String,
    },
    /// An algorithm, through the node that runs it.
    Job {
        /// The organization whose node runs the parent job; results are sealed for it.
        org: OrgId,
        /// The parent job.
        job: JobId,
        /// The parent job's task.
        task: TaskId,
    },
}

impl Requester {
    /// The organization that results are sealed for.
    pub fn org(&self) -> OrgId {
        match self {
            Requester::User { org, .. } | Requester::Job { org, .. } => *org,
        }
    }
}
