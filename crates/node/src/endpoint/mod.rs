//! The node-local endpoint: the only thing an algorithm container can reach. It listens on the
//! algorithm network's gateway address; every request carries the job's bearer token, which
//! names the job and through it the only input, run and subtasks the request may touch.
//! Documented in `docs/algorithm-api.md`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fedq_algorithm_api::{self as api, ErrorBody, ErrorCode};
use serde::Serialize;
use serde_bytes::ByteBuf;
use warp::Filter as _;
use warp::http::StatusCode;
use warp::reply::{Reply as _, Response};

use crate::active::ActiveJob;
use crate::envelope::Route;
use crate::ids::{JobId, OrgId, TaskId};
use crate::jobs;
use crate::policy::ImageRefusal;
use crate::protocol::{JobStart, Kind, Payload, Requester};
use crate::run_messages::{self, SendError};
use crate::secagg;
use crate::server::NewJob;
use crate::shared::Core;
use crate::state::{SubtaskRecord, Wanted};

mod secure_sum;

/// The endpoint's routes, the only values of its metrics' route label.
static ROUTES: std::sync::LazyLock<fedq_service::metrics::Routes> = std::sync::LazyLock::new(|| {
    fedq_service::metrics::Routes::new([
        "/v1/job",
        "/v1/input",
        "/v1/organizations",
        "/v1/messages",
        "/v1/subtasks",
        "/v1/subtasks/{task}/results",
        "/v1/result",
        "/v1/secure-sum",
        "/v1/secure-sum/{round}",
    ])
});

/// An error answer: status, stable code, message.
pub(super) struct Failure(StatusCode, ErrorCode, String);

pub(super) type Answer = Result<Response, Failure>;

/// An error answer with the code's own status.
pub(super) fn fail(code: ErrorCode, message: impl Into<String>) -> Failure {
    let status = StatusCode::from_u16(code.status()).expect("the codes' statuses are valid");
    Failure(status, code, message.into())
}

fn finish(answer: Answer) -> Result<Response, Infallible> {
    Ok(match answer {
        Ok(response) => response,
        Err(Failure(status, code, message)) => {
            warp::reply::with_status(warp::reply::json(&ErrorBody::new(code, message)), status)
                .into_response()
        }
    })
}

pub(super) fn ok_json(status: StatusCode, value: &impl Serialize) -> Answer {
    Ok(warp::reply::with_status(warp::reply::json(value), status).into_response())
}

pub(super) fn authorize(core: &Core, header: Option<String>) -> Result<Arc<ActiveJob>, Failure> {
    let token = header
        .as_deref()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| fail(ErrorCode::Unauthorized, "missing bearer token"))?;
    core.running
        .by_token(token.trim())
        .ok_or_else(|| fail(ErrorCode::Unauthorized, "unknown or expired token"))
}

/// Every route of the endpoint.
pub(crate) fn routes(core: Arc<Core>) -> warp::filters::BoxedFilter<(Response,)> {
    let with_core = {
        let core = core.clone();
        warp::any().map(move || core.clone())
    };
    // Every route gets the node and the bearer token; handlers look the job up by the token.
    let authed = with_core.and(warp::header::optional::<String>("authorization"));
    let v1 = warp::path("v1");
    let max_body = u64::try_from(core.config.limits.max_result_bytes).unwrap_or(u64::MAX) * 2 + 4096;
    let body = warp::body::content_length_limit(max_body).and(warp::body::bytes());

    let job = v1
        .and(warp::path!("job"))
        .and(warp::get())
        .and(authed.clone())
        .map(|core: Arc<Core>, auth| describe(&core, auth))
        .boxed();
    let input = v1
        .and(warp::path!("input"))
        .and(warp::get())
        .and(authed.clone())
        .map(|core: Arc<Core>, auth| {
            authorize(&core, auth).map(|job| {
                warp::reply::with_header(job.start.input.to_vec(), "content-type", "application/octet-stream")
                    .into_response()
            })
        })
        .boxed();
    let organizations = v1
        .and(warp::path!("organizations"))
        .and(warp::get())
        .and(authed.clone())
        .then(|core: Arc<Core>, auth| async move { members(&core, auth).await })
        .boxed();
    let send = v1
        .and(warp::path!("messages"))
        .and(warp::post())
        .and(authed.clone())
        .and(body)
        .then(|core: Arc<Core>, auth, body: warp::hyper::body::Bytes| async move {
            send(&core, auth, &body).await
        })
        .boxed();
    let receive = v1
        .and(warp::path!("messages"))
        .and(warp::get())
        .and(authed.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(|core: Arc<Core>, auth, q| async move { receive(&core, auth, q).await })
        .boxed();
    let subtask = v1
        .and(warp::path!("subtasks"))
        .and(warp::post())
        .and(authed.clone())
        .and(body)
        .then(|core: Arc<Core>, auth, body: warp::hyper::body::Bytes| async move {
            create_subtask(&core, auth, &body).await
        })
        .boxed();
    let results =
        v1.and(warp::path!("subtasks" / String / "results"))
            .and(warp::get())
            .and(authed.clone())
            .and(warp::query::<HashMap<String, String>>())
            .then(|task: String, core: Arc<Core>, auth, q| async move {
                subtask_results(&core, auth, &task, q).await
            })
            .boxed();
    let contribute = v1
        .and(warp::path!("secure-sum"))
        .and(warp::post())
        .and(authed.clone())
        .and(body)
        .then(|core: Arc<Core>, auth, body: warp::hyper::body::Bytes| async move {
            secure_sum::contribute(&core, auth, &body).await
        })
        .boxed();
    let summed = v1
        .and(warp::path!("secure-sum" / String))
        .and(warp::get())
        .and(authed.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(|round: String, core: Arc<Core>, auth, q| async move {
            secure_sum::sum(&core, auth, &round, q).await
        })
        .boxed();
    let result = v1
        .and(warp::path!("result"))
        .and(warp::post())
        .and(authed)
        .and(warp::header::optional::<String>("content-type"))
        .and(body)
        .map(|core: Arc<Core>, auth, kind: Option<String>, body: warp::hyper::body::Bytes| {
            post_result(&core, auth, kind, &body)
        })
        .boxed();

    job.or(input)
        .unify()
        .or(organizations)
        .unify()
        .or(send)
        .unify()
        .or(receive)
        .unify()
        .or(subtask)
        .unify()
        .or(results)
        .unify()
        .or(contribute)
        .unify()
        .or(summed)
        .unify()
        .or(result)
        .unify()
        .and_then(|answer| async move { finish(answer) })
        .recover(recover)
        .unify()
        .with(warp::log::custom(move |info| {
            core.metrics.request(ROUTES.label(info.path(), info.status().as_u16()), info.status().as_u16())
        }))
        .map(warp::Reply::into_response)
        .boxed()
}

/// Turns warp's own rejections (unknown route, body too large, bad query) into the same JSON.
async fn recover(rejection: warp::Rejection) -> Result<Response, Infallible> {
    let failure = if rejection.is_not_found() {
        fail(ErrorCode::NotFound, "no such route")
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        fail(ErrorCode::TooLarge, "the body is too large")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        fail(ErrorCode::MethodNotAllowed, "method not allowed on this route")
    } else {
        fail(ErrorCode::Malformed, format!("{rejection:?}"))
    };
    finish(Err(failure))
}

fn describe(core: &Core, auth: Option<String>) -> Answer {
    let job = authorize(core, auth)?;
    ok_json(
        StatusCode::OK,
        &api::Job {
            job: job.record.job.to_string(),
            task: job.record.task.to_string(),
            run: job.record.run.to_string(),
            collaboration: job.record.collaboration.to_string(),
            organization: core.org().to_string(),
            organizations: job.start.organizations.iter().map(OrgId::to_string).collect(),
            requester: job.record.requester.to_string(),
            image: job.start.image.clone(),
            max_result_bytes: Some(u64::try_from(core.config.limits.max_result_bytes).unwrap_or(u64::MAX)),
        },
    )
}

async fn members(core: &Core, auth: Option<String>) -> Answer {
    let job = authorize(core, auth)?;
    let collaboration = job.record.collaboration;
    if core.peers.members(collaboration).is_none() {
        core.refresh_keys(collaboration).await;
    }
    let members = core
        .peers
        .members(collaboration)
        .ok_or_else(|| fail(ErrorCode::Unavailable, "the server's key directory is unreachable"))?;
    let organizations = members
        .iter()
        .map(|(org, key)| api::Organization { id: org.to_string(), key_id: key.to_string() })
        .collect();
    ok_json(StatusCode::OK, &api::Organizations { collaboration: collaboration.to_string(), organizations })
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| fail(ErrorCode::Malformed, format!("invalid JSON body: {e}")))
}

fn decode_b64(text: &str, what: &str) -> Result<Vec<u8>, Failure> {
    STANDARD.decode(text).map_err(|_| fail(ErrorCode::Malformed, format!("{what} is not base64")))
}

/// An organization's id as the algorithm wrote it in `what`.
pub(super) fn org_of(text: &str, what: &str) -> Result<OrgId, Failure> {
    text.parse()
        .map_err(|_| fail(ErrorCode::Malformed, format!("{what} is not an organization's id: {text:?}")))
}

async fn send(core: &Core, auth: Option<String>, body: &[u8]) -> Answer {
    let job = authorize(core, auth)?;
    let _permit = one_request(&job)?;
    let request: api::SendMessage = parse_json(body)?;
    let to = org_of(&request.to, "to")?;
    let content = decode_b64(&request.body, "body")?;
    if request.topic.len() > api::MAX_TOPIC_LEN {
        return Err(fail(
            ErrorCode::Malformed,
            format!("a topic is at most {} characters", api::MAX_TOPIC_LEN),
        ));
    }
    if request.topic.starts_with(secagg::wire::RESERVED_PREFIX) {
        return Err(fail(
            ErrorCode::Malformed,
            format!("topics that start with {:?} are the node's own", secagg::wire::RESERVED_PREFIX),
        ));
    }
    match run_messages::send(core, &job, to, request.topic, content).await {
        Ok(id) => ok_json(StatusCode::ACCEPTED, &api::Sent { id: id.to_string() }),
        Err(e) => Err(sent_failure(e)),
    }
}

/// The endpoint's answer to a run message that did not leave.
pub(super) fn sent_failure(e: SendError) -> Failure {
    let code = match e {
        SendError::NotInRun(_) => ErrorCode::NotInRun,
        SendError::NoKey(..) => ErrorCode::UnknownOrganization,
        SendError::Unavailable => ErrorCode::Unavailable,
    };
    fail(code, e.to_string())
}

pub(super) fn wait_of(query: &HashMap<String, String>) -> Result<Duration, Failure> {
    let wait = match query.get("wait") {
        Some(w) => w.parse::<u64>().map_err(|_| fail(ErrorCode::Malformed, "wait is whole seconds"))?,
        None => 0,
    };
    Ok(Duration::from_secs(wait.min(api::MAX_WAIT_SECS)))
}

async fn receive(core: &Core, auth: Option<String>, query: HashMap<String, String>) -> Answer {
    let job = authorize(core, auth)?;
    let wait = wait_of(&query)?;
    let max = match query.get("max") {
        Some(m) => m.parse::<usize>().map_err(|_| fail(ErrorCode::Malformed, "max is a number"))?,
        None => 100,
    };
    let from = match query.get("from") {
        Some(org) => Some(
            org.parse::<OrgId>().map_err(|_| fail(ErrorCode::Malformed, "from is an organization's id"))?,
        ),
        None => None,
    };
    let wanted = Wanted { topic: query.get("topic").map(String::as_str), from };
    long_poll(core, wait, |last| {
        let taken =
            core.state.take_messages(job.record.run, job.record.job, wanted, max.max(1)).map_err(internal)?;
        if taken.is_empty() && !last {
            return Ok(None);
        }
        let messages = taken
            .iter()
            .map(|m| api::Message {
                id: m.id.to_string(),
                from: m.from.to_string(),
                from_job: m.from_job.to_string(),
                topic: m.topic.clone(),
                body: STANDARD.encode(&m.body),
            })
            .collect();
        Ok(Some(api::Messages { messages }))
    })
    .await
}

/// Answers with what `attempt` finds, asking again whenever a run message or a subtask result
/// arrives, until `wait` has passed; the last attempt (`true`) must answer.
async fn long_poll<T: Serialize>(
    core: &Core,
    wait: Duration,
    mut attempt: impl FnMut(bool) -> Result<Option<T>, Failure>,
) -> Answer {
    let deadline = tokio::time::Instant::now() + wait;
    let mut arrivals = core.arrivals.subscribe();
    loop {
        arrivals.borrow_and_update();
        let last = tokio::time::Instant::now() >= deadline;
        if let Some(answer) = attempt(last)? {
            return ok_json(StatusCode::OK, &answer);
        }
        let _ = tokio::time::timeout_at(deadline, arrivals.changed()).await;
    }
}

pub(super) fn internal(e: std::io::Error) -> Failure {
    tracing::error!(error = %e, "state directory failed");
    fail(ErrorCode::Internal, "the node's state directory failed")
}

/// Whether `image` may run at this node for a subtask of `job`: for this organization, which
/// sends it, and for the run's root requester.
async fn check_own_image(core: &Core, job: &ActiveJob, image: &str) -> Result<(), Failure> {
    let refused = |why: String| fail(ErrorCode::Refused, why);
    let local = match core.sandbox.image(image).await {
        Ok(Some(local)) => local,
        Ok(None) => return Err(refused(ImageRefusal::Missing(image.to_owned()).to_string())),
        Err(e) => return Err(fail(ErrorCode::Unavailable, e.to_string())),
    };
    // As the node receiving it will: this organization (the sender) and all the job answers to.
    let principals = crate::policy::principals(core.org(), &job.principals());
    crate::policy::check_image_for_all(&core.rules().policy, image, &local, &principals)
        .map(|_| ())
        .map_err(|refusal| refused(format!("a subtask at this organization: {refusal}")))
}

/// How long a subtask's creation is tried again while the server is unreachable or failing:
/// less than the SDKs' 90 s request timeout, so that the algorithm gets an answer.
const SUBTASK_RETRY_FOR: Duration = Duration::from_secs(60);

/// Bytes counted against a job's subtask budget, given back when dropped unless kept: a
/// request that fails, or whose client goes away, costs the job nothing.
struct Reserved<'a> {
    counter: &'a std::sync::atomic::AtomicU64,
    bytes: u64,
    kept: bool,
}

impl<'a> Reserved<'a> {
    /// Adds `bytes` to `counter` if it stays within `limit`.
    fn take(counter: &'a std::sync::atomic::AtomicU64, bytes: u64, limit: u64) -> Option<Self> {
        use std::sync::atomic::Ordering;
        counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|after| *after <= limit)
            })
            .ok()
            .map(|_| Self { counter, bytes, kept: false })
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.counter.fetch_sub(self.bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A permit for one of the job's requests in flight, or 429.
pub(super) fn one_request(job: &ActiveJob) -> Result<tokio::sync::OwnedSemaphorePermit, Failure> {
    job.requests.clone().try_acquire_owned().map_err(|_| {
        fail(
            ErrorCode::TooManyRequests,
            "this job has limits.job_concurrent_requests requests in flight; wait for one to finish",
        )
    })
}

async fn create_subtask(core: &Core, auth: Option<String>, body: &[u8]) -> Answer {
    let job = authorize(core, auth)?;
    let _permit = one_request(&job)?;
    let request: api::CreateSubtask = parse_json(body)?;
    // Each organization once, in the order first given: a list that repeats one would have the
    // node seal the input again for every repetition.
    let mut organizations: Vec<OrgId> = Vec::new();
    let mut listed = std::collections::HashSet::new();
    for text in &request.organizations {
        let org = org_of(text, "organizations")?;
        if listed.insert(org) {
            organizations.push(org);
        }
        if organizations.len() > api::MAX_SUBTASK_ORGANIZATIONS {
            break;
        }
    }
    if organizations.is_empty() || organizations.len() > api::MAX_SUBTASK_ORGANIZATIONS {
        return Err(fail(
            ErrorCode::Malformed,
            format!("organizations lists 1 to {} organizations", api::MAX_SUBTASK_ORGANIZATIONS),
        ));
    }
    let image = request.image.unwrap_or_else(|| job.start.image.clone());
    // Decoded once each (the body bounds them); copied per organization only when sealed, after
    // the sizes have been checked.
    let common = request.input.as_deref().map(|i| decode_b64(i, "input")).transpose()?.unwrap_or_default();
    let mut each: HashMap<OrgId, Vec<u8>> = HashMap::new();
    for (org, text) in request.inputs.iter().flatten() {
        let org = org_of(org, "inputs")?;
        if listed.contains(&org) {
            each.insert(org, decode_b64(text, "inputs")?);
        }
    }
    let input_of = |org: &OrgId| each.get(org).unwrap_or(&common);
    let total: u64 = organizations.iter().map(|o| input_of(o).len() as u64).sum();
    let limits = &core.config.limits;
    if total > limits.subtask_input_mib.saturating_mul(1 << 20) {
        return Err(fail(
            ErrorCode::TooLarge,
            format!(
                "a subtask's inputs are at most limits.subtask_input_mib ({} MiB) summed over its organizations",
                limits.subtask_input_mib
            ),
        ));
    }
    // Counted against the job from here, and given back unless the server takes the subtask.
    let reserved = Reserved::take(&job.subtask_bytes, total, limits.job_subtask_mib.saturating_mul(1 << 20))
        .ok_or_else(|| {
            fail(
                ErrorCode::TooLarge,
                format!(
                    "a job's subtasks carry at most limits.job_subtask_mib ({} MiB) of inputs together",
                    limits.job_subtask_mib
                ),
            )
        })?;
    // A subtask at this organization runs under this node's policy for the run's requester as
    // well as for this organization (jobs::run); refused here, the algorithm hears why at once.
    if organizations.contains(&core.org()) {
        check_own_image(core, &job, &image).await?;
    }
    let task = TaskId::new();
    let route = Route {
        kind: Kind::JobStart,
        collaboration: job.record.collaboration,
        task,
        run: job.record.run,
        status: None,
    };
    let mut new_jobs = Vec::with_capacity(organizations.len());
    for &org in &organizations {
        let input = input_of(&org).clone();
        let id = JobId::new();
        let payload = Payload::JobStart(JobStart {
            job: id,
            image: image.clone(),
            requester: Requester::Job { org: core.org(), job: job.record.job, task: job.record.task },
            organizations: organizations.clone(),
            input: ByteBuf::from(input),
            return_log: false,
            log_head: core.log.seen_head(),
            on_behalf_of: job.principals(),
        });
        let sealed = jobs::seal_to(core, org, &route, &payload).await.ok_or_else(|| {
            fail(ErrorCode::UnknownOrganization, format!("no trusted key for organization {org}"))
        })?;
        new_jobs.push(NewJob { id, organization: org, envelope: sealed.bytes });
    }
    let record = SubtaskRecord {
        task,
        run: job.record.run,
        jobs: new_jobs.iter().map(|j| (j.id, j.organization)).collect(),
    };
    // Recorded before the server sees it, so that no result can arrive unrecognised.
    core.state.save_subtask(&record).map_err(internal)?;
    // The server may be away for a moment (a restart, an upgrade): the request is held and
    // tried again rather than failing the algorithm, which cannot tell a restart from a refusal.
    // The task's id is this node's, so a retry is idempotent: "exists" after a retry means an
    // earlier attempt reached the server and only its answer was lost.
    let deadline = tokio::time::Instant::now() + SUBTASK_RETRY_FOR;
    let mut backoff = crate::broker::backoff::Backoff::default();
    let mut retried = false;
    loop {
        let created = core
            .server
            .create_subtask(
                task,
                job.record.run,
                job.record.task,
                job.record.collaboration,
                &image,
                &new_jobs,
            )
            .await;
        match created {
            Ok(()) => break,
            Err(e) if retried && e.error_code() == Some(crate::contract::ErrorCode::Conflict) => break,
            Err(e) if matches!(e.status(), Some(400..=499)) => {
                let status =
                    e.status().and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::BAD_REQUEST);
                return Err(Failure(status, ErrorCode::Refused, e.to_string()));
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(fail(ErrorCode::Unavailable, e.to_string()));
            }
            Err(e) => {
                // Said once at warning level: a server restart would otherwise fill the log with
                // the same line every backoff step.
                if retried {
                    tracing::debug!(%task, error = %e, "the server did not take a subtask; trying again");
                } else {
                    tracing::warn!(%task, error = %e, "the server did not take a subtask; trying again until it does (for up to 60 s)");
                }
                retried = true;
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
    reserved.keep();
    let jobs = record
        .jobs
        .iter()
        .map(|(job, org)| api::SubtaskJob { job: job.to_string(), organization: org.to_string() })
        .collect();
    ok_json(StatusCode::CREATED, &api::Subtask { task: task.to_string(), jobs })
}

async fn subtask_results(
    core: &Core,
    auth: Option<String>,
    task: &str,
    query: HashMap<String, String>,
) -> Answer {
    let job = authorize(core, auth)?;
    let wait = wait_of(&query)?;
    let not_found = || fail(ErrorCode::NotFound, format!("no subtask {task} in this run"));
    let task: TaskId = task.parse().map_err(|_| not_found())?;
    let record = core
        .state
        .subtask(task)
        .map_err(internal)?
        .filter(|r| r.run == job.record.run)
        .ok_or_else(not_found)?;
    long_poll(core, wait, |last| {
        let results = core.state.subtask_results(&record).map_err(internal)?;
        let complete = results.len() == record.jobs.len();
        if !complete && !last {
            return Ok(None);
        }
        let results = results
            .iter()
            .map(|r| api::SubtaskResult {
                job: r.job.to_string(),
                organization: r.organization.to_string(),
                status: r.status.to_string(),
                output: STANDARD.encode(&r.output),
                reason: r.reason.clone(),
            })
            .collect();
        Ok(Some(api::SubtaskResults { complete, results }))
    })
    .await
}

fn post_result(core: &Core, auth: Option<String>, content_type: Option<String>, body: &[u8]) -> Answer {
    let job = authorize(core, auth)?;
    let output = if content_type.as_deref().is_some_and(|c| c.starts_with("application/json")) {
        let parsed: api::PostResult = parse_json(body)?;
        decode_b64(&parsed.output, "output")?
    } else {
        body.to_vec()
    };
    if output.len() > core.config.limits.max_result_bytes {
        return Err(fail(
            ErrorCode::TooLarge,
            format!("a result is at most {} bytes", core.config.limits.max_result_bytes),
        ));
    }
    let mut slot = job.output.lock().expect("not poisoned");
    if slot.is_some() {
        return Err(fail(ErrorCode::AlreadyPosted, "this job already posted its result"));
    }
    *slot = Some(output);
    Ok(StatusCode::NO_CONTENT.into_response())
}
