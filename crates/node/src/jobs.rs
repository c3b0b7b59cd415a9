//! One job's life at a node: accepted (or refused by policy), its container started with a
//! fresh endpoint token, waited for under its limits, and its result sealed, stored, published
//! with a confirm, and only then its `job_start` delivery acknowledged.
//!
//! A redelivered `job_start` (after a broker reconnection or a node restart) is recognised by
//! its job id: a job still running takes over the new delivery; a job whose result was stored
//! re-sends that result (the router drops the copy if the first one got through); a job that was
//! running when the node died starts again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use sha2::Digest as _;

use crate::active::{ActiveJob, JobTiming, Stop, TIMINGS_KEPT};
use crate::broker::Acker;
use crate::containers::ContainerSpec;
use crate::contract::NodeRefusal;
use crate::envelope::{self, Header, Route, SealOptions};
use crate::ids::{OrgId, RunId};
use crate::policy::{self, ImageRefusal};
use crate::protocol::{JobResult, JobStart, JobStatus, JobStatusUpdate, Kind, Payload};
use crate::shared::Core;
use crate::state::JobRecord;
use crate::time::Timestamp;

/// The largest container log kept (its end).
const MAX_LOG: usize = 1024 * 1024;

/// Handles a `job_start` that passed every envelope check.
pub(crate) async fn accept(
    core: Arc<Core>,
    header: Header,
    start: JobStart,
    acker: Acker,
    received: Instant,
) {
    let job = start.job;
    // A job id belongs to one task. Members see other tasks' job ids (`GET /tasks`), so a
    // job_start for one task may carry the id of another task's job that has not come here yet;
    // taken for a redelivery, it would take over that job's delivery or re-send its result, and
    // the other task would wait for ever. The id is bound to the task it first came with.
    let known = core.running.jobs.lock().expect("not poisoned").get(&job).map(|a| a.record.task);
    let known = match known {
        Some(task) => Some(task),
        None => match core.state.job(job) {
            Ok(record) => record.map(|r| r.task),
            Err(e) => {
                tracing::error!(%job, error = %e, "cannot read the state directory; the job will be redelivered");
                return;
            }
        },
    };
    if let Some(task) = known.filter(|t| *t != header.task) {
        return refuse_reused_id(&core, &header, &start, task, acker).await;
    }
    if let Some(active) = core.running.jobs.lock().expect("not poisoned").get(&job) {
        // Redelivered after a reconnection while the job runs: the old delivery's channel is
        // gone, so the new one is what to acknowledge.
        tracing::info!(%job, "job_start redelivered while the job runs");
        *active.acker.lock().expect("not poisoned") = Some(acker);
        return;
    }
    match core.state.result(job) {
        Ok(Some(result)) => {
            tracing::info!(%job, "job_start redelivered after its result was stored; re-sending the result");
            resend(&core, &result, acker, &header).await;
            return;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(%job, error = %e, "cannot read the state directory; the job will be redelivered");
            return;
        }
    }
    // It runs (again): whatever run messages an earlier attempt took, before a restart cut it
    // short, are this attempt's to take.
    match core.state.give_back_messages(header.run, job) {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(%job, messages = n, "run messages taken by an earlier attempt given back to the rerun")
        }
        Err(e) => {
            tracing::error!(%job, error = %e, "cannot read the run's inbox; the job will be redelivered");
            return;
        }
    }
    let record = JobRecord {
        job,
        task: header.task,
        run: header.run,
        collaboration: header.collaboration,
        requester: header.sender,
        expires_at: header.expires_at,
    };
    let active = Arc::new(ActiveJob {
        record,
        start,
        start_id: (header.id, header.expires_at.saturating_add(core.policy.clock_skew)),
        acker: Mutex::new(Some(acker)),
        output: Mutex::new(None),
        requests: Arc::new(tokio::sync::Semaphore::new(core.config.limits.job_concurrent_requests)),
        subtask_bytes: std::sync::atomic::AtomicU64::new(0),
        stop: tokio::sync::watch::channel(None).0,
        container: Mutex::new(None),
        received,
        started: Mutex::new(None),
        docker_start: Mutex::new(Duration::ZERO),
        exited: Mutex::new(None),
    });
    core.running.insert(job, active.clone());
    tokio::spawn(async move {
        let outcome = run(&core, &active).await;
        match outcome {
            Some((status, reason, log)) => finish(&core, &active, status, reason, log).await,
            None => tracing::info!(job = %active.record.job, "job left for redelivery"),
        }
        // Removed after the result is out, so that the removal does not delay it.
        let container = active.container.lock().expect("not poisoned").take();
        if let Some(name) = container {
            core.sandbox.remove(&name).await;
        }
        let run = active.record.run;
        // The run's end is often announced the moment this job's result is stored, before the
        // job has wound down here. `finish_run` decides under the jobs lock, either cleaning up
        // (no job of the run is left) or leaving the run in `ended_runs` for its last job, which
        // takes it out: the end is acted on exactly once.
        let clean_up = !core.running.remove(active.record.job, run)
            && core.running.ended_runs.lock().expect("not poisoned").remove(&run);
        if clean_up {
            remove_run(&core, run).await;
        }
    });
}

/// Answers a `job_start` whose job id is already another task's job here with a refusal that is
/// not stored (the id's record is the other task's), and acknowledges it.
async fn refuse_reused_id(
    core: &Core,
    header: &Header,
    start: &JobStart,
    task: crate::ids::TaskId,
    acker: Acker,
) {
    core.refuse(header, NodeRefusal::JobOfAnotherTask, "a job_start reusing another task's job id");
    let reason = format!(
        "job id {} is already a job of task {task} at this node; a job id belongs to one task",
        start.job
    );
    let result = Payload::JobResult(JobResult {
        job: start.job,
        status: JobStatus::Refused,
        output: ByteBuf::new(),
        log: String::new(),
        reason: Some(reason),
        log_head: core.log.seen_head(),
    });
    let route = Route {
        kind: Kind::JobResult,
        collaboration: header.collaboration,
        task: header.task,
        run: header.run,
        status: Some(JobStatus::Refused),
    };
    let Some(sealed) = seal_to(core, header.sender, &route, &result).await else {
        // No key to answer with: kept for operators, not retried.
        let _ = acker.reject().await;
        return;
    };
    let mut halt = core.halt.clone();
    if core.publish(&sealed.header, &sealed.bytes, &mut halt).await.is_ok() {
        let _ = acker.ack().await;
        let _ = core.state.record_seen(header.id, header.expires_at.saturating_add(core.policy.clock_skew));
    }
}

/// Re-publishes a stored result and acknowledges the delivery.
async fn resend(core: &Core, result: &[u8], acker: Acker, start: &Header) {
    let Ok(header) = envelope::peek_header(result, usize::MAX) else {
        tracing::error!(job_start = %start.id, "a stored result is unreadable");
        return;
    };
    let mut halt = core.halt.clone();
    if core.publish(&header, result, &mut halt).await.is_ok() {
        let _ = acker.ack().await;
        let _ = core.state.record_seen(start.id, start.expires_at.saturating_add(core.policy.clock_skew));
    }
}

/// Checks policy, runs the container and returns its final status, or `None` if the job was
/// abandoned at shutdown.
async fn run(core: &Core, job: &Arc<ActiveJob>) -> Option<(JobStatus, Option<String>, Vec<u8>)> {
    // Recorded first, so that even a refusal's result can be re-sent after a restart.
    if let Err(e) = core.state.save_job(&job.record) {
        tracing::error!(job = %job.record.job, error = %e, "cannot record the job");
        return None;
    }
    let requester = job.record.requester;
    if job.start.requester.org() != requester {
        return Some((
            JobStatus::Refused,
            Some("the job's requester is not the envelope's sender".into()),
            vec![],
        ));
    }
    // Whom the job works for: its sender, and the run's root requester when the sender names
    // another (a subtask its host node creates for a partner's job). Policy holds for both.
    let principals = job.principals();
    // One version of the policy for the whole decision, even if node.toml changes meanwhile.
    let rules = core.rules();
    for &principal in &principals {
        if !policy::requester_allowed(&rules.policy, principal) {
            let reason = if principal == requester {
                format!("organization {requester} may not run jobs at this node")
            } else {
                format!(
                    "organization {principal}, whose run this subtask of organization {requester} serves, may not \
                     run jobs at this node"
                )
            };
            return Some((JobStatus::Refused, Some(reason), vec![]));
        }
    }
    let own = core.config.node.organization;
    if let Some(reason) =
        policy::too_few_organizations(&rules.policy, requester, own, &job.start.organizations)
    {
        return Some((JobStatus::Refused, Some(reason), vec![]));
    }
    // A run's volume and messages here belong to the organization whose job came first, and
    // to this organization's own jobs (its algorithms' subtasks): a partner's subtask may not
    // join them and read what the owner's jobs keep there (Secure Sum's R, and so the count).
    match core.state.claim_run(job.record.run, requester) {
        Ok(owner) if owner == requester || requester == own => {}
        Ok(owner) => {
            let reason = format!(
                "run {} at this node belongs to the jobs of organization {owner}; a job requested by \
                 organization {requester} may not share its volume and messages (docs/algorithm-api.md)",
                job.record.run
            );
            return Some((JobStatus::Refused, Some(reason), vec![]));
        }
        Err(e) => {
            tracing::error!(job = %job.record.job, error = %e, "cannot record the run's owner");
            return None;
        }
    }
    let image = match core.sandbox.image(&job.start.image).await {
        Ok(Some(image)) => image,
        Ok(None) => {
            let reason = ImageRefusal::Missing(job.start.image.clone()).to_string();
            return Some((JobStatus::Refused, Some(reason), vec![]));
        }
        Err(e) => {
            return Some((JobStatus::Crashed, Some(format!("could not inspect the image: {e}")), vec![]));
        }
    };
    let data = match policy::check_image_for_all(&rules.policy, &job.start.image, &image, &principals) {
        Ok(labels) => rules.sources(&labels),
        Err(refusal) => return Some((JobStatus::Refused, Some(refusal.to_string()), vec![])),
    };
    send_status(core, job, JobStatus::Delivered, Some("accepted; waiting for a slot".into())).await;

    let mut stop = job.stop.subscribe();
    let _slot = tokio::select! {
        slot = core.running.slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        () = async { let _ = stop.wait_for(Option::is_some).await; } => return stopped_before_start(job),
    };
    if job.stop.borrow().is_some() {
        return stopped_before_start(job);
    }
    if core.stopping() {
        // Taken from the queue just before the stop: left for the next start.
        return None;
    }
    let expires = Timestamp::now().saturating_add(Duration::from_secs(core.config.node.run_ttl_secs));
    let owner = core.config.limits.uid_gid().expect("validated at load");
    let limits = &core.config.limits;
    let disk = crate::containers::run_disk::DiskLimits {
        mib: limits.run_volume_mib,
        max_disks: limits.max_run_disks,
        reserve_mib: limits.state_reserve_mib,
    };
    let volume = match core.state.run_volume_image(job.record.run) {
        Ok(image) => core.sandbox.ensure_run_volume(job.record.run, &image, disk, owner, expires).await,
        Err(e) => Err(e.into()),
    };
    let volume = match volume {
        Ok(v) => v,
        Err(e) => {
            return Some((
                JobStatus::Crashed,
                Some(format!("could not prepare the run volume: {e}")),
                vec![],
            ));
        }
    };
    let token = hex::encode(random_bytes());
    let token_hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    let spec = ContainerSpec {
        job: job.record.job,
        task: job.record.task,
        run: job.record.run,
        image_id: image.id.clone(),
        token,
        volume,
        data,
        min_cell_count: core.rules().policy.min_cell_count,
    };
    core.running.tokens.lock().expect("not poisoned").insert(token_hash, job.clone());
    let outcome = run_container(core, job, &spec, &mut stop).await;
    // The token dies with the job.
    core.running.tokens.lock().expect("not poisoned").remove(&token_hash);
    outcome
}

fn stopped_before_start(job: &ActiveJob) -> Option<(JobStatus, Option<String>, Vec<u8>)> {
    match job.stop.borrow().clone() {
        Some(Stop::Killed(reason)) => Some((JobStatus::Killed, Some(reason), vec![])),
        _ => None,
    }
}

async fn run_container(
    core: &Core,
    job: &ActiveJob,
    spec: &ContainerSpec,
    stop: &mut tokio::sync::watch::Receiver<Option<Stop>>,
) -> Option<(JobStatus, Option<String>, Vec<u8>)> {
    let creating = Instant::now();
    let name = match core.sandbox.start(spec).await {
        Ok(name) => name,
        Err(e) => {
            core.sandbox.remove(&core.sandbox.container_name(spec.job)).await;
            return Some((JobStatus::Crashed, Some(format!("the container did not start: {e}")), vec![]));
        }
    };
    *job.container.lock().expect("not poisoned") = Some(name.clone());
    *job.started.lock().expect("not poisoned") = Some(Instant::now());
    *job.docker_start.lock().expect("not poisoned") = creating.elapsed();
    core.metrics.container_started(creating.elapsed());
    // A kill that arrived while the container was being created.
    if job.stop.borrow().is_some() {
        core.sandbox.kill(&name).await;
    }
    send_status(core, job, JobStatus::Running, Some("container started".into())).await;
    let limit = core.config.limits.timeout();
    let mut timed_out = false;
    let exit = tokio::select! {
        exit = core.sandbox.wait(&name) => exit,
        () = tokio::time::sleep(limit) => {
            timed_out = true;
            core.sandbox.kill(&name).await;
            core.sandbox.wait(&name).await
        }
    };
    *job.exited.lock().expect("not poisoned") = Some(Instant::now());
    let exit = match exit {
        // A SIGKILL that the node did not send: the kernel's OOM killer is the one to suspect,
        // whatever Docker's flag says (`Sandbox::oom_event`).
        Ok(mut exit) if exit.code == 137 && !exit.oom_killed && !timed_out && stop.borrow().is_none() => {
            exit.oom_killed = core.sandbox.oom_event(&name).await;
            Ok(exit)
        }
        other => other,
    };
    let log = core.sandbox.logs(&name, MAX_LOG).await;
    if let Err(e) = core.state.save_log(job.record.job, &log) {
        tracing::warn!(job = %job.record.job, error = %e, "could not keep the container log");
    }
    let stopped = stop.borrow_and_update().clone();
    let outcome = match (stopped, exit) {
        (Some(Stop::Abandoned), _) => return None,
        (Some(Stop::Killed(reason)), _) => (JobStatus::Killed, Some(reason)),
        (None, _) if timed_out => {
            (JobStatus::Failed, Some(format!("stopped at the wall-clock limit of {} s", limit.as_secs())))
        }
        (None, Ok(exit)) if exit.oom_killed => (
            JobStatus::Failed,
            Some(format!("killed at the memory limit of {} MiB", core.config.limits.memory_mib)),
        ),
        (None, Ok(exit)) if exit.code == 0 => (JobStatus::Completed, None),
        (None, Ok(exit)) => {
            (JobStatus::Failed, Some(format!("the algorithm exited with code {}", exit.code)))
        }
        (None, Err(e)) => (JobStatus::Crashed, Some(format!("lost the container: {e}"))),
    };
    Some((outcome.0, outcome.1, log))
}

/// Seals the result, stores it, publishes it with a confirm, then acknowledges the delivery.
async fn finish(core: &Core, job: &ActiveJob, status: JobStatus, reason: Option<String>, log: Vec<u8>) {
    let output = job.output.lock().expect("not poisoned").take().unwrap_or_default();
    let share_log = core.rules().policy.share_logs && job.start.return_log;
    let result = JobResult {
        job: job.record.job,
        status,
        output: ByteBuf::from(output),
        log: if share_log { String::from_utf8_lossy(&log).into_owned() } else { String::new() },
        reason: reason.clone(),
        log_head: core.log.seen_head(),
    };
    tracing::info!(job = %job.record.job, %status, reason = reason.as_deref().unwrap_or(""), "job finished");
    core.metrics.job_finished(status);
    let Some(sealed) =
        seal_for_requester(core, job, Kind::JobResult, Some(status), &Payload::JobResult(result)).await
    else {
        return;
    };
    if let Err(e) = core.state.save_result(job.record.job, &sealed.bytes) {
        tracing::error!(job = %job.record.job, error = %e, "cannot store the result; the job will be redelivered");
        return;
    }
    let mut halt = core.halt.clone();
    if core.publish(&sealed.header, &sealed.bytes, &mut halt).await.is_err() {
        // Stored: the redelivered job_start re-sends it after the restart.
        return;
    }
    record_timing(core, job);
    let acker = job.acker.lock().expect("not poisoned").take();
    if let Some(acker) = acker
        && let Err(e) = acker.ack().await
    {
        // The channel closed: the job_start comes again and the stored result is re-sent.
        tracing::warn!(job = %job.record.job, error = %e, "could not acknowledge the job_start");
    }
    let (id, until) = job.start_id;
    if let Err(e) = core.state.record_seen(id, until) {
        tracing::warn!(error = %e, "could not record a handled envelope");
    }
}

fn record_timing(core: &Core, job: &ActiveJob) {
    let started = *job.started.lock().expect("not poisoned");
    let exited = *job.exited.lock().expect("not poisoned");
    if let (Some(started), Some(exited)) = (started, exited) {
        let timing = JobTiming {
            job: job.record.job,
            to_running: started.duration_since(job.received),
            docker_start: *job.docker_start.lock().expect("not poisoned"),
            exit_to_confirm: exited.elapsed(),
        };
        let mut timings = core.running.timings.lock().expect("not poisoned");
        if timings.len() >= TIMINGS_KEPT {
            timings.pop_front();
        }
        timings.push_back(timing);
    }
}

/// Tells the requester (and through the router, the server) about a status change. Best
/// effort: the final result is what must arrive.
async fn send_status(core: &Core, job: &ActiveJob, status: JobStatus, detail: Option<String>) {
    let update = Payload::JobStatus(JobStatusUpdate { job: job.record.job, status, detail });
    let Some(sealed) = seal_for_requester(core, job, Kind::JobStatus, Some(status), &update).await else {
        return;
    };
    let mut halt = core.halt.clone();
    let publish = core.publish(&sealed.header, &sealed.bytes, &mut halt);
    if tokio::time::timeout(Duration::from_secs(10), publish).await.is_err() {
        tracing::warn!(job = %job.record.job, %status, "status not published within 10 s");
    }
}

async fn seal_for_requester(
    core: &Core,
    job: &ActiveJob,
    kind: Kind,
    status: Option<JobStatus>,
    payload: &Payload,
) -> Option<envelope::Sealed> {
    let route = Route {
        kind,
        collaboration: job.record.collaboration,
        task: job.record.task,
        run: job.record.run,
        status,
    };
    seal_to(core, job.record.requester, &route, payload).await
}

/// Seals `payload` for `org`, fetching its key if the cache lacks it.
pub(crate) async fn seal_to(
    core: &Core,
    org: OrgId,
    route: &Route,
    payload: &Payload,
) -> Option<envelope::Sealed> {
    // Fetched again now and then, so that a partner's signed rotation is followed.
    if core.peers.current(org).is_none() || core.peers.stale(route.collaboration) {
        core.refresh_keys(route.collaboration).await;
    }
    let Some(key) = core.peers.current(org) else {
        tracing::error!(%org, "no trusted key for the organization; cannot seal");
        return None;
    };
    match envelope::seal(
        &core.me,
        org,
        &key,
        route,
        &payload.to_bytes(),
        &SealOptions::default(),
        Timestamp::now(),
    ) {
        Ok(sealed) => Some(sealed),
        Err(e) => {
            tracing::error!(%org, error = %e, "sealing failed");
            None
        }
    }
}

/// Stops every job of `task` at this node.
///
/// With `requester`, only the jobs that organization requested are stopped.
pub(crate) async fn kill_task(core: &Core, task: crate::ids::TaskId, reason: &str) {
    let targets: Vec<Arc<ActiveJob>> = core
        .running
        .jobs
        .lock()
        .expect("not poisoned")
        .values()
        .filter(|j| j.record.task == task)
        .cloned()
        .collect();
    for job in targets {
        tracing::info!(job = %job.record.job, %task, "killing");
        job.kill(&core.sandbox, reason.to_owned()).await;
    }
}

/// Removes a run's volume and everything kept for it, unless one of its jobs still runs here.
pub(crate) async fn finish_run(core: &Core, run: RunId) {
    {
        let jobs = core.running.jobs.lock().expect("not poisoned");
        if jobs.values().any(|j| j.record.run == run) {
            tracing::debug!(%run, "run finished; cleaning up once its last job here is done");
            core.running.ended_runs.lock().expect("not poisoned").insert(run);
            return;
        }
    }
    remove_run(core, run).await;
}

async fn remove_run(core: &Core, run: RunId) {
    match core.sandbox.remove_run_volume(run, &core.state.run_volume_image_path(run)).await {
        Ok(_) => {
            if let Err(e) = core.state.remove_run(run) {
                tracing::warn!(%run, error = %e, "could not remove the run's files");
            }
        }
        Err(e) => tracing::warn!(%run, error = %e, "could not remove the run volume"),
    }
}

fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    bytes
}
