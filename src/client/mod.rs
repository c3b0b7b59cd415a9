//! The researcher's side of the REST API: log in, seal a task's inputs for each organization,
//! submit it, follow it, and open its results locally. The command line, the demo and the
//! tests use it; nothing here is trusted by the server.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::envelope::{self, MemoryReplayGuard, OpenError, OpenPolicy, Route, SealOptions};
use crate::ids::{CollaborationId, JobId, OrgId, RunId, TaskId};
use crate::keys::{Identity, KeyId, Keyring, PublicKey};
use crate::protocol::{JobStart, JobStatus, Kind, Payload, Requester};
use crate::time::Timestamp;

/// What went wrong talking to the server or opening what it returned.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer.
    #[error("the server at {url} is unreachable: {detail}")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        detail: String,
    },
    /// The server refused.
    #[error("the server refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// An answer this client cannot read.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    /// The private key given is not the organization's published key.
    #[error(
        "the key given (fingerprint {given}) is not organization {org}'s published key ({published}); \
         use the organization's key file"
    )]
    WrongKey {
        /// The organization.
        org: OrgId,
        /// The key given.
        given: KeyId,
        /// The key the server publishes for it.
        published: String,
    },
    /// An organization of the task is not in the collaboration.
    #[error("organization {org} is not a member of collaboration {collaboration}")]
    NotAMember {
        /// The organization.
        org: OrgId,
        /// The collaboration.
        collaboration: CollaborationId,
    },
    /// A task needs at least one organization.
    #[error("a task needs at least one organization")]
    NoOrganizations,
    /// Sealing failed.
    #[error(transparent)]
    Seal(#[from] envelope::SealError),
    /// A result did not open.
    #[error("a result of job {job} did not open ({code}): {source}", code = .source.code())]
    Open {
        /// The job.
        job: JobId,
        /// Why.
        #[source]
        source: OpenError,
    },
}

impl ClientError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A logged-in session.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: SecretString,
    http: reqwest::Client,
}

/// Who the session belongs to.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Me {
    /// The user's name.
    pub username: String,
    /// Their organization (none for root).
    pub organization: Option<OrgId>,
    /// Their role.
    pub role: String,
}

/// The inputs of a task's jobs.
#[derive(Debug, Clone)]
pub enum Inputs {
    /// Every organization gets the same input.
    Same(Vec<u8>),
    /// One input per organization (in the order of `TaskSpec::organizations`).
    Each(Vec<Vec<u8>>),
}

/// A task to create.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// The collaboration it runs in.
    pub collaboration: CollaborationId,
    /// The algorithm image.
    pub image: String,
    /// Where it runs, in order (algorithms may read roles from the order).
    pub organizations: Vec<OrgId>,
    /// The inputs, sealed per organization.
    pub inputs: Inputs,
    /// A name for people.
    pub name: String,
    /// Ask the nodes for the containers' logs with the results.
    pub return_log: bool,
}

/// A task just created.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedTask {
    /// The task.
    pub task: TaskId,
    /// Its run.
    pub run: RunId,
    /// Its jobs and where they run.
    pub jobs: Vec<(JobId, OrgId)>,
}

/// One job's result, opened.
#[derive(Debug, Clone, Serialize)]
pub struct OpenedResult {
    /// The job.
    pub job: JobId,
    /// Where it ran.
    pub organization: OrgId,
    /// Its final status.
    pub status: JobStatus,
    /// What the algorithm posted.
    #[serde(with = "serde_bytes")]
    pub output: Vec<u8>,
    /// Why it did not complete.
    pub reason: Option<String>,
    /// The container's log, if the node shared it.
    pub log: String,
}

/// The results of a task so far.
#[derive(Debug, Clone)]
pub struct Results {
    /// Whether every job has finished.
    pub complete: bool,
    /// The sealed results that arrived: job, organization, status, envelope.
    pub sealed: Vec<(JobId, OrgId, JobStatus, Vec<u8>)>,
}

#[derive(Deserialize)]
struct PublishedKey {
    organization: OrgId,
    key_id: String,
    public_key: String,
}

impl Client {
    /// Logs in at the server at `base` (its root URL).
    pub async fn login(base: &str, username: &str, password: &str) -> Result<Self, ClientError> {
        let base = format!("{}/api/v1", base.trim_end_matches('/'));
        let http = http();
        let response = http
            .post(format!("{base}/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .map_err(|e| unreachable(&base, e))?;
        let body = answer(response).await?;
        let token = body["token"].as_str().ok_or_else(|| ClientError::Decode("no token".into()))?;
        Ok(Self { base, token: SecretString::from(token.to_owned()), http })
    }

    /// A session from a token obtained before.
    pub fn with_token(base: &str, token: SecretString) -> Self {
        Self { base: format!("{}/api/v1", base.trim_end_matches('/')), token, http: http() }
    }

    /// The session's token (to store it).
    pub fn token(&self) -> &SecretString {
        &self.token
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let mut request =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(self.token.expose_secret());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| unreachable(&self.base, e))?;
        answer(response).await
    }

    /// Any `GET` of the API.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Any `POST` of the API (administration: organizations, users, nodes…).
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Who this session is.
    pub async fn me(&self) -> Result<Me, ClientError> {
        let body = self.call(reqwest::Method::GET, "/users/me", None).await?;
        serde_json::from_value(body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// The members of a collaboration and their current keys.
    pub async fn collaboration_keys(
        &self,
        collaboration: CollaborationId,
    ) -> Result<Vec<(OrgId, PublicKey)>, ClientError> {
        let body = self
            .call(reqwest::Method::GET, &format!("/collaborations/{collaboration}/public-keys"), None)
            .await?;
        let keys: Vec<PublishedKey> =
            serde_json::from_value(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        keys.into_iter()
            .map(|k| {
                let key: PublicKey = k.public_key.parse().map_err(|e| ClientError::Decode(format!("{e}")))?;
                if key.id().to_string() != k.key_id {
                    return Err(ClientError::Decode(format!(
                        "organization {}'s key does not match its id",
                        k.organization
                    )));
                }
                Ok((k.organization, key))
            })
            .collect()
    }

    /// Seals each organization's input with `me` (the researcher's organization key) and
    /// creates the task.
    pub async fn create_task(&self, me: &Identity, spec: &TaskSpec) -> Result<CreatedTask, ClientError> {
        if spec.organizations.is_empty() {
            return Err(ClientError::NoOrganizations);
        }
        let keys = self.collaboration_keys(spec.collaboration).await?;
        let key_of = |org: OrgId| keys.iter().find(|(o, _)| *o == org).map(|(_, k)| k.clone());
        let mine = key_of(me.org())
            .ok_or(ClientError::NotAMember { org: me.org(), collaboration: spec.collaboration })?;
        if mine.id() != me.current().id() {
            return Err(ClientError::WrongKey {
                org: me.org(),
                given: me.current().id(),
                published: mine.id().to_string(),
            });
        }
        let user = self.me().await.map(|m| m.username).unwrap_or_default();
        let (task, run) = (TaskId::new(), RunId::new());
        let route =
            Route { kind: Kind::JobStart, collaboration: spec.collaboration, task, run, status: None };
        let mut jobs = Vec::with_capacity(spec.organizations.len());
        let mut entries = Vec::with_capacity(spec.organizations.len());
        for (i, &org) in spec.organizations.iter().enumerate() {
            let key =
                key_of(org).ok_or(ClientError::NotAMember { org, collaboration: spec.collaboration })?;
            let input = match &spec.inputs {
                Inputs::Same(bytes) => bytes.clone(),
                Inputs::Each(each) => each.get(i).cloned().unwrap_or_default(),
            };
            let job = JobId::new();
            let payload = Payload::JobStart(JobStart {
                job,
                image: spec.image.clone(),
                requester: Requester::User { org: me.org(), user: user.clone() },
                organizations: spec.organizations.clone(),
                input: serde_bytes::ByteBuf::from(input),
                return_log: spec.return_log,
            });
            let sealed = envelope::seal(
                me,
                org,
                &key,
                &route,
                &payload.to_bytes(),
                &SealOptions::default(),
                Timestamp::now(),
            )?;
            entries.push(json!({"id": job, "organization": org, "envelope": STANDARD.encode(&sealed.bytes)}));
            jobs.push((job, org));
        }
        let body = json!({
            "id": task, "run": run, "collaboration": spec.collaboration, "image": spec.image,
            "name": spec.name, "jobs": entries,
        });
        self.call(reqwest::Method::POST, "/tasks", Some(&body)).await?;
        Ok(CreatedTask { task, run, jobs })
    }

    /// A task as the server shows it (jobs with their statuses).
    pub async fn task(&self, task: TaskId) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, &format!("/tasks/{task}"), None).await
    }

    /// Tasks visible to the session, newest first.
    pub async fn tasks(&self, limit: u32) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, &format!("/tasks?limit={limit}"), None).await
    }

    /// Kills a task and its subtasks.
    pub async fn kill(&self, task: TaskId) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, &format!("/tasks/{task}/kill"), None).await
    }

    /// The sealed results so far, waiting up to `wait` (at most 60 s) for all of them.
    pub async fn results(&self, task: TaskId, wait: Duration) -> Result<Results, ClientError> {
        let body = self
            .call(
                reqwest::Method::GET,
                &format!("/tasks/{task}/results?wait={}", wait.as_secs().min(60)),
                None,
            )
            .await?;
        let decode = |e: &dyn std::fmt::Display| ClientError::Decode(e.to_string());
        let mut sealed = Vec::new();
        for r in body["results"].as_array().ok_or_else(|| decode(&"no results"))? {
            let job: JobId = r["job"].as_str().unwrap_or("").parse().map_err(|e| decode(&e))?;
            let org: OrgId = r["organization"].as_str().unwrap_or("").parse().map_err(|e| decode(&e))?;
            let status: JobStatus = serde_json::from_value(r["status"].clone()).map_err(|e| decode(&e))?;
            let envelope = STANDARD.decode(r["envelope"].as_str().unwrap_or("")).map_err(|e| decode(&e))?;
            sealed.push((job, org, status, envelope));
        }
        Ok(Results { complete: body["complete"].as_bool().unwrap_or(false), sealed })
    }

    /// Opens sealed results with the researcher's organization key, checking each sender's
    /// signature against the collaboration's published keys.
    pub async fn open_results(
        &self,
        me: &Identity,
        collaboration: CollaborationId,
        results: &Results,
    ) -> Result<Vec<OpenedResult>, ClientError> {
        let mut keyring = Keyring::new();
        for (org, key) in self.collaboration_keys(collaboration).await? {
            keyring.insert(org, key);
        }
        let mut guard = MemoryReplayGuard::new();
        let mut opened = Vec::with_capacity(results.sealed.len());
        for (job, org, _, bytes) in &results.sealed {
            let envelope =
                envelope::open(bytes, me, &keyring, &mut guard, &OpenPolicy::default(), Timestamp::now())
                    .map_err(|source| ClientError::Open { job: *job, source })?;
            let result = match envelope.decode() {
                Ok(Payload::JobResult(result)) => result,
                _ => return Err(ClientError::Decode(format!("the result of job {job} is not a job result"))),
            };
            opened.push(OpenedResult {
                job: *job,
                organization: *org,
                status: result.status,
                output: result.output.into_vec(),
                reason: result.reason,
                log: result.log,
            });
        }
        Ok(opened)
    }

    /// Waits for every job of `task` and opens the results.
    pub async fn wait_and_open(
        &self,
        me: &Identity,
        collaboration: CollaborationId,
        task: TaskId,
        timeout: Duration,
    ) -> Result<Vec<OpenedResult>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let results = self.results(task, Duration::from_secs(20)).await?;
            if results.complete
                && results.sealed.len() == self.task(task).await?["jobs"].as_array().map_or(0, Vec::len)
                || tokio::time::Instant::now() >= deadline
            {
                return self.open_results(me, collaboration, &results).await;
            }
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(90)).build().expect("a plain HTTP client builds")
}

fn unreachable(base: &str, e: reqwest::Error) -> ClientError {
    ClientError::Unreachable { url: base.to_owned(), detail: e.without_url().to_string() }
}

async fn answer(response: reqwest::Response) -> Result<Value, ClientError> {
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| ClientError::Decode(e.to_string()))?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status >= 400 {
        let message = body["message"].as_str().unwrap_or("no message").to_owned();
        return Err(ClientError::Refused { status, message });
    }
    Ok(body)
}
