//! The jobs a node runs now: each accepted job's state while it runs (`ActiveJob`), the
//! registry of them by id and by endpoint token (`Running`), and where their time went.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest as _;
use tokio::sync::{Semaphore, watch};

use crate::broker::Acker;
use crate::containers::Sandbox;
use crate::ids::{JobId, OrgId};
use crate::policy;
use crate::protocol::JobStart;
use crate::state::JobRecord;
use crate::time::Timestamp;

/// Where a job's time went at the node, for the benchmark and for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobTiming {
    /// The job.
    pub job: JobId,
    /// From its `job_start` delivery reaching the node to its container running.
    pub to_running: Duration,
    /// Of `to_running`, the time Docker took to create and start the container.
    pub docker_start: Duration,
    /// From its container's exit to the broker's confirm of its result.
    pub exit_to_confirm: Duration,
}

impl JobTiming {
    /// What the node itself added: everything but Docker's create and start.
    pub fn overhead(&self) -> Duration {
        self.to_running.saturating_sub(self.docker_start) + self.exit_to_confirm
    }
}

/// Timings kept (the newest).
pub(crate) const TIMINGS_KEPT: usize = 1000;

/// Why a job stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// A kill envelope or control message.
    Killed(String),
    /// The node is shutting down: the job will be redelivered.
    Abandoned,
}

/// A job accepted and not finished.
pub(crate) struct ActiveJob {
    pub(crate) record: JobRecord,
    pub(crate) start: JobStart,
    /// The id of the `job_start` envelope, and when it may be forgotten.
    pub(crate) start_id: (crate::ids::MessageId, Timestamp),
    /// The delivery to acknowledge when the result is confirmed (the latest one).
    pub(crate) acker: Mutex<Option<Acker>>,
    /// What the algorithm posted.
    pub(crate) output: Mutex<Option<Vec<u8>>>,
    /// The endpoint requests it may have in flight (`limits.job_concurrent_requests`).
    pub(crate) requests: Arc<tokio::sync::Semaphore>,
    /// Input bytes its subtasks carried so far (`limits.job_subtask_mib`).
    pub(crate) subtask_bytes: std::sync::atomic::AtomicU64,
    /// Set to stop the container.
    pub(crate) stop: tokio::sync::watch::Sender<Option<Stop>>,
    pub(crate) container: Mutex<Option<String>>,
    /// When its delivery reached the node, its container started, and exited.
    pub(crate) received: Instant,
    pub(crate) started: Mutex<Option<Instant>>,
    pub(crate) docker_start: Mutex<Duration>,
    pub(crate) exited: Mutex<Option<Instant>>,
}

impl ActiveJob {
    /// The organizations this node's policy must allow the job for, and that its subtasks are
    /// created on behalf of: its sender, and every organization the sender says its job answered
    /// to (a subtask's run requester and the chain between). A claim only ever adds to the set.
    pub(crate) fn principals(&self) -> Vec<OrgId> {
        policy::principals(self.record.requester, &self.start.on_behalf_of)
    }

    /// Stops the job's container because the node is shutting down; its delivery stays
    /// unacknowledged.
    pub(crate) async fn abandon(&self, sandbox: &Sandbox) {
        self.stop.send_replace(Some(Stop::Abandoned));
        let name = self.container.lock().expect("not poisoned").clone();
        if let Some(name) = name {
            sandbox.kill(&name).await;
        }
    }

    /// Stops the job's container because its task was killed.
    pub(crate) async fn kill(&self, sandbox: &Sandbox, reason: String) {
        self.stop.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(Stop::Killed(reason));
                true
            } else {
                false
            }
        });
        let name = self.container.lock().expect("not poisoned").clone();
        if let Some(name) = name {
            sandbox.kill(&name).await;
        }
    }
}

/// The jobs this node runs now, and what is kept about the ones it ran.
pub(crate) struct Running {
    /// Jobs accepted and not finished, by job id.
    pub(crate) jobs: Mutex<HashMap<JobId, Arc<ActiveJob>>>,
    /// Running jobs by the SHA-256 of their endpoint token.
    pub(crate) tokens: Mutex<HashMap<[u8; 32], Arc<ActiveJob>>>,
    /// Containers running at once.
    pub(crate) slots: Arc<Semaphore>,
    /// Runs announced finished while one of their jobs was still winding down here: cleaned
    /// up when it is done.
    pub(crate) ended_runs: Mutex<std::collections::HashSet<crate::ids::RunId>>,
    /// Where recent jobs' time went.
    pub(crate) timings: Mutex<std::collections::VecDeque<JobTiming>>,
    /// How many jobs `jobs` holds, for whoever waits for them all to end (shutdown).
    pub(crate) count: watch::Sender<usize>,
}

impl Running {
    /// Takes `active` in as `job`.
    pub(crate) fn insert(&self, job: JobId, active: Arc<ActiveJob>) {
        let mut jobs = self.jobs.lock().expect("not poisoned");
        jobs.insert(job, active);
        self.count.send_replace(jobs.len());
    }

    /// Lets `job` go; whether another job of `run` is still here. Decided under the jobs lock,
    /// so that a run's end announced meanwhile is acted on exactly once.
    pub(crate) fn remove(&self, job: JobId, run: crate::ids::RunId) -> bool {
        let mut jobs = self.jobs.lock().expect("not poisoned");
        jobs.remove(&job);
        self.count.send_replace(jobs.len());
        jobs.values().any(|j| j.record.run == run)
    }

    /// Which job a token belongs to, for the endpoint.
    pub(crate) fn by_token(&self, token: &str) -> Option<Arc<ActiveJob>> {
        let hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        self.tokens.lock().expect("not poisoned").get(&hash).cloned()
    }

    /// Resolves when no job is left (at once if none is).
    pub(crate) async fn all_done(&self) {
        let _ = self.count.subscribe().wait_for(|n| *n == 0).await;
    }
}
