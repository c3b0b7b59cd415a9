//! What every part of the node shares: its settings, keys, state, clients and the jobs it runs
//! (`Core`), built once at start and handed to each part in an `Arc`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::active::Running;
use crate::config::NodeConfig;
use crate::containers::Sandbox;
use crate::contract::NodeRefusal;
use crate::envelope::{OpenPolicy, Rejections};
use crate::ids::{JobId, OrgId};
use crate::keys::Identity;
use crate::link::IngressLink;
use crate::server::{PeerKeys, ServerClient};
use crate::state::StateDir;
use crate::{link, live_policy, log_monitor, metrics};

/// What every part of the node shares.
pub(crate) struct Core {
    pub(crate) config: NodeConfig,
    /// `[policy]` and `[data]` as node.toml says now (the rest of `config` is read once).
    pub(crate) rules: Arc<live_policy::LivePolicy>,
    pub(crate) me: Identity,
    pub(crate) state: StateDir,
    pub(crate) peers: PeerKeys,
    pub(crate) server: ServerClient,
    pub(crate) sandbox: Sandbox,
    pub(crate) link: IngressLink,
    /// The broker's addresses, tried in turn.
    pub(crate) endpoints: crate::broker::endpoints::Endpoints,
    pub(crate) policy: OpenPolicy,
    /// What was refused or held, counted.
    pub(crate) tally: Tally,
    /// The jobs running here.
    pub(crate) running: Running,
    /// Bumped when a run message or a subtask result is stored, to wake long polls.
    pub(crate) arrivals: watch::Sender<u64>,
    /// Turns true when the node is asked to stop: no new work is taken.
    pub(crate) stop: watch::Receiver<bool>,
    /// Turns true when the grace period after a stop is over: running jobs are abandoned and
    /// publishing gives up.
    pub(crate) halt: watch::Receiver<bool>,
    /// Prometheus metrics.
    pub(crate) metrics: metrics::NodeMetrics,
    /// The monitor of the server's transparency log.
    pub(crate) log: log_monitor::LogMonitor,
    /// Each task's jobs and where they run, as the server lists them: what binds a run
    /// message's `from_job` to its sender.
    pub(crate) task_jobs: Mutex<HashMap<crate::ids::TaskId, Vec<(JobId, OrgId)>>>,
}

/// What the node refused or held, counted (for its tests, logs and metrics).
#[derive(Default)]
pub(crate) struct Tally {
    /// Envelopes that did not open, by reason.
    pub(crate) rejections: Rejections,
    /// Times an envelope from an unknown key waited for the server to answer a key fetch.
    pub(crate) key_waits: std::sync::atomic::AtomicU64,
    /// Authenticated envelopes refused for what they ask, by reason code.
    pub(crate) refusals: Mutex<HashMap<NodeRefusal, u64>>,
}

impl Core {
    pub(crate) fn org(&self) -> OrgId {
        self.me.org()
    }

    /// The policy and data sources in force now.
    pub(crate) fn rules(&self) -> Arc<live_policy::Rules> {
        self.rules.current()
    }

    /// What the heartbeat tells the server about this node's policy.
    pub(crate) fn policy_summary(&self) -> crate::protocol::heartbeat::PolicySummary {
        self.rules().summary(&self.config.limits)
    }

    /// Publishes an envelope to ingress until the broker confirms it (see `IngressLink::publish`),
    /// and has the transparency log's monitor expect its leaf.
    pub(crate) async fn publish(
        &self,
        header: &crate::envelope::Header,
        bytes: &[u8],
        halt: &mut watch::Receiver<bool>,
    ) -> Result<(), link::Stopping> {
        self.link.publish(header, bytes, halt).await?;
        self.log.sent(header, bytes);
        Ok(())
    }

    pub(crate) fn notify_arrival(&self) {
        self.arrivals.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The organization that runs `job` of `task`, as the server lists the task: `Ok(None)` when
    /// the task has no such job, `Err` when the server could not say.
    pub(crate) async fn job_of(&self, task: crate::ids::TaskId, job: JobId) -> Result<Option<OrgId>, ()> {
        let cached = self.task_jobs.lock().expect("not poisoned").get(&task).cloned();
        let jobs = match cached {
            Some(jobs) => jobs,
            None => {
                let listed = self.server.api().task(task).await.map_err(|e| {
                    tracing::warn!(%task, error = %e, "could not read a task's jobs from the server");
                })?;
                let jobs: Vec<(JobId, OrgId)> = listed.jobs.iter().map(|j| (j.id, j.organization)).collect();
                let mut cache = self.task_jobs.lock().expect("not poisoned");
                if cache.len() >= 10_000 {
                    cache.clear();
                }
                cache.insert(task, jobs.clone());
                jobs
            }
        };
        Ok(jobs.iter().find(|(j, _)| *j == job).map(|(_, org)| *org))
    }

    /// Whether `org` has a job in `run`: first among the tasks of this node's own jobs in the run
    /// (a finishing subtask's parent lists the whole ring), then as the server lists the run's
    /// tasks (asked each time: a subtask may have joined the run since). `Err` when the server
    /// did not answer.
    pub(crate) async fn in_run(&self, run: crate::ids::RunId, org: OrgId) -> Result<bool, ()> {
        let known_here = self
            .running
            .jobs
            .lock()
            .expect("not poisoned")
            .values()
            .any(|j| j.record.run == run && j.start.organizations.contains(&org));
        if known_here {
            return Ok(true);
        }
        self.server.api().has_job_in_run(run, org).await.map_err(|e| {
            tracing::warn!(%run, error = %e, "could not read a run's tasks from the server");
        })
    }

    /// Logs and counts an authenticated envelope that asks for what its sender may not do.
    pub(crate) fn refuse(&self, header: &crate::envelope::Header, code: NodeRefusal, why: &str) {
        *self.tally.refusals.lock().expect("not poisoned").entry(code).or_default() += 1;
        self.metrics.refused(code.as_str());
        tracing::warn!(
            code = code.as_str(),
            id = %header.id, kind = %header.kind, sender = %header.sender, task = %header.task,
            "refused {why}"
        );
    }

    pub(crate) fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Fetches the collaboration's keys from the server and decides which to trust. Returns
    /// whether the server answered (a refusal is an answer; no answer, or a failure of its own, is
    /// not).
    pub(crate) async fn refresh_keys(&self, collaboration: crate::ids::CollaborationId) -> bool {
        match self.server.trusted_keys(collaboration).await {
            Ok(decisions) => {
                let refusals = self.peers.record(collaboration, decisions);
                // The log names the organizations (read once, and only when something was
                // refused); the alarm keeps the ids alone, so that its text (by which alarms are
                // told apart) takes nothing the server serves.
                let names = match refusals.is_empty() {
                    true => Default::default(),
                    false => self.server.organization_names().await,
                };
                for refusal in refusals {
                    let said = names.name(&refusal.to_string());
                    tracing::error!(%collaboration, error = %said, "refusing a key the server handed out");
                    // A partner's key replaced without a rotation signed by the trusted one: what a
                    // key swapped in the server's database looks like from here. Evidence for the
                    // administrator, not only a refusal in the log.
                    if matches!(refusal, crate::keys::TrustError::Changed { .. }) {
                        self.log.raise(
                            "partner_key_changed",
                            &format!("collaboration {collaboration}: {refusal}"),
                        );
                    }
                    // A key the log does not prove: the server showing this node what no monitor
                    // of the organization would see.
                    if matches!(refusal, crate::keys::TrustError::NotLogged { .. }) {
                        self.log.raise(
                            "partner_key_not_logged",
                            &format!("collaboration {collaboration}: {refusal}"),
                        );
                    }
                }
                true
            }
            Err(e) => {
                tracing::warn!(%collaboration, error = %e, "could not fetch public keys");
                !matches!(e, crate::client::ClientError::Unreachable { .. })
                    && e.status().is_none_or(|status| status < 500)
            }
        }
    }
}

/// Resolves when `stop` turns true (without holding the channel's lock across an await).
pub(crate) async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
