//! Waiting for a task: the one loop, and the one rule for when a task is done, that the command
//! line, the Python client and the Rust callers all use.

use std::time::Duration;

use crate::contract;
use crate::ids::TaskId;
use crate::{Client, ClientError, Results};

/// The longest one look waits for results while a job is not finished: short, so that whoever
/// watches sees statuses change.
const LOOK_WAIT: Duration = Duration::from_secs(2);

/// One look at a task: as the server shows it (its jobs' statuses), the results sealed so far,
/// and whether those are all of them.
#[derive(Debug, Clone)]
pub struct Look {
    /// The task with its jobs.
    pub task: contract::Task,
    /// The results that arrived.
    pub results: Results,
    /// Every job has finished and every job's result is here.
    pub complete: bool,
}

/// Whether every job of `task` has a terminal status (vacuously, for a task without jobs).
fn all_finished(task: &contract::Task) -> bool {
    task.jobs.iter().all(|j| j.status.is_terminal())
}

/// A task is done when it has jobs, each has a result, and the server says so: every job's
/// status terminal, or the results complete.
fn complete(task: &contract::Task, results: &Results) -> bool {
    let finished = all_finished(task) || results.complete;
    !task.jobs.is_empty() && results.sealed.len() == task.jobs.len() && finished
}

impl Client {
    /// Looks at `task` once: its jobs, then its results, waiting up to `wait` (at most 2 s) for
    /// them only while some job has not finished.
    pub async fn look(&self, task: TaskId, wait: Duration) -> Result<Look, ClientError> {
        let shown = self.task(task).await?;
        let finished = !shown.jobs.is_empty() && all_finished(&shown);
        let wait = if finished { Duration::ZERO } else { wait.min(LOOK_WAIT) };
        let results = self.results(task, wait).await?;
        let complete = complete(&shown, &results);
        Ok(Look { task: shown, results, complete })
    }

    /// Looks at `task` until it is complete or `timeout` has passed, showing every look to
    /// `watch`; the last look, complete or not.
    pub async fn wait(
        &self,
        task: TaskId,
        timeout: Duration,
        mut watch: impl FnMut(&Look),
    ) -> Result<Look, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let look = self.look(task, left).await?;
            watch(&look);
            if look.complete || left.is_zero() {
                return Ok(look);
            }
            // Every job finished but a result is missing (one killed before it started has
            // none): the look did not wait, so this loop does, rather than ask without pause.
            if all_finished(&look.task) {
                tokio::time::sleep(left.min(LOOK_WAIT)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::contract::{Job, Task};
    use crate::ids::{CollaborationId, JobId, OrgId, RunId};
    use crate::protocol::JobStatus;

    fn task(statuses: &[JobStatus]) -> Task {
        let job = |status: &JobStatus| Job {
            id: JobId::new(),
            organization: OrgId::new(),
            organization_name: String::new(),
            status: *status,
            status_changed_at: SystemTime::now(),
        };
        Task {
            id: TaskId::new(),
            collaboration: CollaborationId::new(),
            run: RunId::new(),
            parent: None,
            image: "i".into(),
            name: String::new(),
            creator_organization: OrgId::new(),
            creator_user: None,
            creator_node: None,
            created_at: SystemTime::now(),
            jobs: statuses.iter().map(job).collect(),
        }
    }

    /// The results of `task`'s first `arrived` jobs.
    fn results(task: &Task, arrived: usize, complete: bool) -> Results {
        let sealed = task.jobs.iter().take(arrived).map(|j| (j.id, j.organization, j.status, Vec::new()));
        Results { task: task.id, complete, sealed: sealed.collect() }
    }

    #[test]
    fn a_task_is_complete_with_every_result_and_every_job_finished() {
        use JobStatus::{Completed, Failed, Refused, Running};
        let done = task(&[Completed, Failed, Refused]);
        assert!(complete(&done, &results(&done, 3, false)));
        assert!(complete(&done, &results(&done, 3, true)));
        assert!(!complete(&done, &results(&done, 2, false)), "a result is missing");
        let running = task(&[Completed, Running]);
        assert!(!complete(&running, &results(&running, 1, false)));
        assert!(!complete(&running, &results(&running, 2, false)), "the server has not said so");
        assert!(complete(&running, &results(&running, 2, true)), "the results' own word");
        let empty = task(&[]);
        assert!(!complete(&empty, &results(&empty, 0, true)), "a task without jobs is not done");
    }
}
