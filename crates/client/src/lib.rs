//! The researcher's side of the REST API: log in, seal a task's inputs for each organization,
//! submit it, follow it, and open its results locally. The command line, the demo and the
//! tests use it; nothing here is trusted by the server.

use fedq_core::{contract, ids, protocol, time};
use fedq_envelope::{envelope, keys};
use fedq_tls as tls;

pub mod audit;
pub mod files;
mod key_log;
mod lookup;
mod wait;

pub use wait::Look;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret as _, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contract::{CreateTask, ErrorBody, NewJob, NodeRegistration, TaskResults};
use crate::envelope::{MemoryReplayGuard, OpenError, OpenPolicy, Route, SealOptions};
use crate::ids::{CollaborationId, JobId, OrgId, RunId, TaskId};
use crate::keys::trust::Accepted;
use crate::keys::{FirstUse, Identity, KeyId, KeyTrust, PublicKey, Revocation, Rotation, TrustError};
use crate::protocol::{JobStart, JobStatus, Kind, Payload, Requester};
use crate::time::Timestamp;
use crate::tls::ClientTls;

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
        /// The server's stable error code (`docs/api.md`), empty when the answer had none.
        code: String,
        /// The refusal's reason code, for `envelope_refused`.
        reason: Option<String>,
        /// The server's message.
        message: String,
    },
    /// An answer this client cannot read.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    /// The private key given is not the organization's published key.
    #[error(
        "the key given (fingerprint {given}) is not the key the server publishes as organization {org}'s \
         ({published}). If {given} is your organization's key file, the server's directory was changed: a key \
         put in its database, or published by someone else, for your organization; tell its administrator \
         (`fedq audit verify` names any served key that no log leaf records). Otherwise use the \
         organization's key file"
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
    /// A name or id that matches no organization or collaboration this session sees.
    #[error("no {what} named {name:?} that this user can see (give its name or its id)")]
    NotSeen {
        /// `organization` or `collaboration`.
        what: &'static str,
        /// The name or id given.
        name: String,
    },
    /// Sealing failed.
    #[error(transparent)]
    Seal(#[from] envelope::SealError),
    /// TLS settings are unusable, or the URL is plain text beyond loopback.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A result did not open.
    #[error("a result of job {job} did not open ({code}): {source}", code = .source.code())]
    Open {
        /// The job.
        job: JobId,
        /// Why.
        #[source]
        source: OpenError,
    },
    /// A key the server gave is not one this client trusts.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// A result opened, but it is not the answer to what was asked: another task's, another
    /// job's, another organization's, or a second one for the same job.
    #[error("refusing the result given for job {job}: {why}")]
    Mismatch {
        /// The job the server said it was for.
        job: JobId,
        /// What does not match.
        why: String,
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

    /// The server's stable error code of a refusal (`not_found`, `envelope_refused`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } if !code.is_empty() => Some(code),
            _ => None,
        }
    }

    /// The same code as the contract's enum, to match on; `None` for no refusal, or a code this
    /// build does not know.
    pub fn error_code(&self) -> Option<crate::contract::ErrorCode> {
        self.code().and_then(crate::contract::ErrorCode::parse)
    }
}

/// Organizations' names by id, as a session read them ([`Client::organization_names`]).
#[derive(Debug, Clone, Default)]
pub struct OrganizationNames(Vec<(String, String)>);

impl OrganizationNames {
    /// `message` (a refused key's, which names organizations by id so that the commands it
    /// suggests work as written) with each organization named beside its id: `organization
    /// registry-b (6c5b…)`.
    pub fn name(&self, message: &str) -> String {
        self.0.iter().fold(message.to_owned(), |text, (id, name)| {
            text.replace(&format!("organization {id}"), &format!("organization {name} ({id})"))
        })
    }
}

/// A logged-in session.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: SecretString,
    http: reqwest::Client,
    /// The keys this client trusts; the server's word alone never adds one.
    trust: Arc<KeyTrust>,
    /// The jobs of tasks this client created (or was told of), to check results against.
    expected: Arc<Mutex<HashMap<TaskId, Jobs>>>,
    /// Held while a key's log proof is checked and the log's head recorded.
    log_lock: Arc<tokio::sync::Mutex<()>>,
}

/// A task's jobs and where each runs.
type Jobs = Vec<(JobId, OrgId)>;

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
    /// The task they were asked for.
    pub task: TaskId,
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
    #[serde(default)]
    previous_key_id: Option<String>,
    #[serde(default)]
    rotation_signature: Option<String>,
    /// Set when the organization revoked the key.
    #[serde(default)]
    revoked_at: Option<serde_json::Value>,
    /// Set when another key replaced it.
    #[serde(default)]
    retired_at: Option<serde_json::Value>,
    /// The transparency-log leaf that logged it (hex).
    #[serde(default)]
    log_leaf: Option<String>,
    /// The organization's signature of its revocation (base64).
    #[serde(default)]
    revocation_signature: Option<String>,
    /// The key that signed the revocation.
    #[serde(default)]
    revoked_by: Option<String>,
}

impl PublishedKey {
    fn key(&self) -> Result<PublicKey, ClientError> {
        let key: PublicKey = self.public_key.parse().map_err(|e| ClientError::Decode(format!("{e}")))?;
        if self.key_id.parse::<KeyId>().ok() != Some(key.id()) {
            return Err(ClientError::Decode(format!(
                "organization {}'s key does not match its fingerprint",
                self.organization
            )));
        }
        Ok(key)
    }

    /// The organization's signed revocation of this key, if it has one that parses.
    fn revocation(&self) -> Option<Revocation> {
        let signature = STANDARD.decode(self.revocation_signature.as_deref()?).ok()?.try_into().ok()?;
        Some(Revocation {
            org: self.organization,
            key: self.key_id.parse().ok()?,
            signer: self.revoked_by.as_deref()?.parse().ok()?,
            signature,
        })
    }

    /// The signed rotation that led to this key, if it has one that parses.
    fn rotation(&self) -> Option<Rotation> {
        let old = self.previous_key_id.as_deref()?.parse().ok()?;
        let signature = STANDARD.decode(self.rotation_signature.as_deref()?).ok()?.try_into().ok()?;
        Some(Rotation { org: self.organization, old, new: self.key().ok()?, signature })
    }
}

/// What this client decided about one organization's key.
#[derive(Debug)]
pub struct KeyDecision {
    /// The organization.
    pub org: OrgId,
    /// Its trusted key, or why the key the server gave is refused.
    pub key: Result<PublicKey, TrustError>,
}

impl Client {
    /// Logs in at the server at `base` (its root URL), over TLS as `tls` says.
    pub async fn login(
        base: &str,
        tls: &ClientTls,
        username: &str,
        password: &str,
    ) -> Result<Self, ClientError> {
        let http = http(base, tls)?;
        let base = format!("{}/api/v1", base.trim_end_matches('/'));
        let response = http
            .post(format!("{base}/login"))
            .json(&contract::Login {
                username: username.into(),
                password: contract::Credential::new(password),
            })
            .send()
            .await
            .map_err(|e| unreachable(&base, e))?;
        let body = answer(response).await?;
        let token = body["token"].as_str().ok_or_else(|| ClientError::Decode("no token".into()))?;
        Ok(Self::new(base, SecretString::from(token.to_owned()), http))
    }

    /// Trades a one-time enrollment token for a node's registration (no session needed: the
    /// token is the credential).
    pub async fn enroll(
        base: &str,
        tls: &ClientTls,
        token: &SecretString,
    ) -> Result<NodeRegistration, ClientError> {
        let http = http(base, tls)?;
        let base = format!("{}/api/v1", base.trim_end_matches('/'));
        let response = http
            .post(format!("{base}/enroll"))
            .json(&contract::Enroll { token: contract::Credential::new(token.expose_secret()) })
            .send()
            .await
            .map_err(|e| unreachable(&base, e))?;
        decode(answer(response).await?)
    }

    /// A client that presents a node's API key (`fedq node check`).
    pub fn for_node(base: &str, tls: &ClientTls, api_key: SecretString) -> Result<Self, ClientError> {
        Self::with_token(base, tls, api_key)
    }

    fn new(base: String, token: SecretString, http: reqwest::Client) -> Self {
        Self {
            base,
            token,
            http,
            trust: Arc::new(KeyTrust::in_memory(FirstUse::Refuse)),
            expected: Arc::default(),
            log_lock: Arc::default(),
        }
    }

    /// Uses `trust` to decide which keys to seal to and accept results from (by default an
    /// empty store that trusts no key it has not been told of).
    pub fn with_trust(mut self, trust: Arc<KeyTrust>) -> Self {
        self.trust = trust;
        self
    }

    /// The keys this client trusts.
    pub fn trust(&self) -> &Arc<KeyTrust> {
        &self.trust
    }

    /// Tells the client which jobs `task` has and where they run (as it created them), so
    /// that results are checked against them.
    pub fn expect(&self, task: TaskId, jobs: Vec<(JobId, OrgId)>) {
        self.expected.lock().expect("not poisoned").insert(task, jobs);
    }

    /// A session from a token obtained before.
    pub fn with_token(base: &str, tls: &ClientTls, token: SecretString) -> Result<Self, ClientError> {
        let http = http(base, tls)?;
        Ok(Self::new(format!("{}/api/v1", base.trim_end_matches('/')), token, http))
    }

    /// The session's token (to store it).
    pub fn token(&self) -> &SecretString {
        &self.token
    }

    /// Calls the API and decodes the answer as the contract's `T`.
    async fn fetch<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body =
            body.map(serde_json::to_value).transpose().map_err(|e| ClientError::Decode(e.to_string()))?;
        decode(self.call(method, path, body.as_ref()).await?)
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

    /// The names of the organizations this session sees, read once to name them in any number
    /// of messages ([`OrganizationNames::name`]); none if they cannot be read.
    pub async fn organization_names(&self) -> OrganizationNames {
        let orgs = self.organizations().await.unwrap_or_default();
        OrganizationNames(orgs.into_iter().map(|o| (o.id.to_string(), o.name)).collect())
    }

    /// `message` with each organization named beside its id ([`OrganizationNames::name`]).
    pub async fn naming_organizations(&self, message: &str) -> String {
        self.organization_names().await.name(message)
    }

    /// Any `POST` of the API (administration: organizations, users, nodes…).
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Any `DELETE` of the API.
    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Any `PUT` of the API.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Any `PATCH` of the API.
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    /// Who this session (or node's API key) is.
    pub async fn me(&self) -> Result<contract::Me, ClientError> {
        self.fetch(reqwest::Method::GET, "/users/me", None::<&()>).await
    }

    /// The members of a collaboration and the current keys the server lists for them, as the
    /// server says (nothing is trusted here; see [`Client::trusted_keys`]).
    pub async fn collaboration_keys(
        &self,
        collaboration: CollaborationId,
    ) -> Result<Vec<(OrgId, PublicKey)>, ClientError> {
        self.listed_keys(collaboration).await?.iter().map(|k| Ok((k.organization, k.key()?))).collect()
    }

    async fn listed_keys(&self, collaboration: CollaborationId) -> Result<Vec<PublishedKey>, ClientError> {
        let body = self
            .call(reqwest::Method::GET, &format!("/collaborations/{collaboration}/public-keys"), None)
            .await?;
        serde_json::from_value(body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// The key the server lists as `org`'s current one (neither replaced nor revoked), as the
    /// server says: what its members would be handed for it.
    pub async fn current_key(&self, org: OrgId) -> Result<Option<PublicKey>, ClientError> {
        let body = self.call(reqwest::Method::GET, &format!("/organizations/{org}/keys"), None).await?;
        let history: Vec<PublishedKey> =
            serde_json::from_value(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        history
            .iter()
            .find(|k| k.retired_at.is_none() && k.revoked_at.is_none())
            .map(PublishedKey::key)
            .transpose()
    }

    /// The signed rotations an organization has published. Its keys are offered to the trust
    /// store too, which takes only those whose fingerprints it trusts (a fingerprint trusted by
    /// hand needs its key before a rotation from it can be verified).
    async fn rotations(&self, org: OrgId) -> Result<Vec<Rotation>, ClientError> {
        let body = self.call(reqwest::Method::GET, &format!("/organizations/{org}/keys"), None).await?;
        let history: Vec<PublishedKey> =
            serde_json::from_value(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        for entry in &history {
            if let Ok(key) = entry.key() {
                self.trust.learn(org, &key)?;
            }
        }
        Ok(history.iter().filter_map(PublishedKey::rotation).collect())
    }

    /// The members of a collaboration with the key this client trusts for each: the key the
    /// server lists if it is trusted, trusted on first use (where allowed), or reached by signed
    /// rotations from the trusted one; otherwise the reason it is refused.
    pub async fn trusted_keys(
        &self,
        collaboration: CollaborationId,
    ) -> Result<Vec<KeyDecision>, ClientError> {
        self.decide(&self.listed_keys(collaboration).await?).await
    }

    /// Decides on each listed key (see [`Client::trusted_keys`]).
    async fn decide(&self, listed: &[PublishedKey]) -> Result<Vec<KeyDecision>, ClientError> {
        // Revocations first: a revoked key is never trusted again, and no rotation from it is
        // followed. Only the organization's own, signed by the revoked key or another key this
        // client trusts for it: a server cannot take an organization's key away on its own.
        for entry in listed.iter().filter(|e| e.revoked_at.is_some()) {
            let Some(revocation) = entry.revocation() else {
                tracing::warn!(
                    org = %entry.organization, key = %entry.key_id,
                    "the server lists this key as revoked without the organization's signature: ignored"
                );
                continue;
            };
            let signer = if revocation.signer == revocation.key {
                entry.key().ok()
            } else {
                self.trust.any_key(entry.organization, &revocation.signer)
            };
            if !signer.is_some_and(|signer| revocation.verify(&signer)) {
                tracing::warn!(
                    org = %entry.organization, key = %entry.key_id, signer = %revocation.signer,
                    "a revocation that does not verify with a key this client trusts: ignored"
                );
                continue;
            }
            if self.trust.revoke(entry.organization, revocation.key)? {
                tracing::warn!(org = %entry.organization, key = %revocation.key, "the organization revoked this key: no longer trusted");
            }
        }
        let mut decisions = Vec::with_capacity(listed.len());
        for entry in listed.iter().filter(|e| e.revoked_at.is_none()) {
            let org = entry.organization;
            let offered = entry.key()?;
            let rotations = if self.trust.needs_rotations(org, &offered) {
                self.rotations(org).await?
            } else {
                Vec::new()
            };
            // A key about to be trusted on first use or by a rotation must be in the log.
            let proven = match self.trust.check(org, &offered, &rotations) {
                Ok(Accepted::FirstUse | Accepted::Rotated { .. }) => {
                    self.prove_key_logged(org, &offered, entry.log_leaf.as_deref()).await?
                }
                _ => Ok(()),
            };
            let key = match proven.and_then(|()| self.trust.accept(org, &offered, &rotations)) {
                Ok(accepted) => {
                    match accepted {
                        Accepted::FirstUse => tracing::warn!(
                            %org, fingerprint = %offered.id(),
                            "trusting this organization's key on first use; compare the fingerprint out of band"
                        ),
                        Accepted::Rotated { from } => {
                            tracing::info!(%org, %from, to = %offered.id(), "followed a signed key rotation")
                        }
                        Accepted::Known | Accepted::Fingerprint => {}
                    }
                    // A key trusted once but since rotated away from may still be listed by a
                    // server that wants it used: the newest trusted key is sealed to all the same.
                    Ok(self.trust.current(org).unwrap_or(offered))
                }
                Err(e @ TrustError::Io { .. }) => return Err(e.into()),
                Err(e) => Err(e),
            };
            decisions.push(KeyDecision { org, key });
        }
        Ok(decisions)
    }

    /// Seals each organization's input with `me` (the researcher's organization key) and
    /// creates the task.
    pub async fn create_task(&self, me: &Identity, spec: &TaskSpec) -> Result<CreatedTask, ClientError> {
        if spec.organizations.is_empty() {
            return Err(ClientError::NoOrganizations);
        }
        // One listing serves the check of the researcher's own key and the trust decisions.
        let listed = self.listed_keys(spec.collaboration).await?;
        let mine = listed
            .iter()
            .find(|k| k.organization == me.org() && k.revoked_at.is_none())
            .ok_or(ClientError::NotAMember { org: me.org(), collaboration: spec.collaboration })?
            .key()?;
        if mine.id() != me.current().id() {
            return Err(ClientError::WrongKey {
                org: me.org(),
                given: me.current().id(),
                published: mine.id().to_string(),
            });
        }
        self.trust.trust_own(me.org(), me.current().public())?;
        let mut keys = Vec::new();
        for decision in self.decide(&listed).await? {
            // Only the organizations the task runs at must have trusted keys.
            if spec.organizations.contains(&decision.org) {
                keys.push((decision.org, decision.key?));
            }
        }
        let key_of = |org: OrgId| keys.iter().find(|(o, _)| *o == org).map(|(_, k)| k.clone());
        let user = self.me().await.ok().and_then(|m| m.username().map(str::to_owned)).unwrap_or_default();
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
                log_head: None,
                on_behalf_of: Vec::new(),
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
            entries.push(NewJob { id: job, organization: org, envelope: STANDARD.encode(&sealed.bytes) });
            jobs.push((job, org));
        }
        let body = CreateTask {
            id: task,
            run,
            collaboration: spec.collaboration,
            image: spec.image.clone(),
            name: spec.name.clone(),
            parent: None,
            jobs: entries,
        };
        let _: contract::Task = self.fetch(reqwest::Method::POST, "/tasks", Some(&body)).await?;
        self.expect(task, jobs.clone());
        Ok(CreatedTask { task, run, jobs })
    }

    /// A task as the server shows it (jobs with their statuses).
    pub async fn task(&self, task: TaskId) -> Result<contract::Task, ClientError> {
        self.fetch(reqwest::Method::GET, &format!("/tasks/{task}"), None::<&()>).await
    }

    /// Tasks visible to the session, newest first.
    pub async fn tasks(&self, limit: u32) -> Result<Vec<contract::Task>, ClientError> {
        self.fetch(reqwest::Method::GET, &format!("/tasks?limit={limit}"), None::<&()>).await
    }

    /// Whether `org` has a job in a task of `run` (its task or a subtask).
    pub async fn has_job_in_run(&self, run: RunId, org: OrgId) -> Result<bool, ClientError> {
        let path = format!("/tasks?run={run}&organization={org}&limit=1");
        let tasks: Vec<contract::Task> = self.fetch(reqwest::Method::GET, &path, None::<&()>).await?;
        Ok(tasks.iter().any(|t| t.run == run && t.jobs.iter().any(|j| j.organization == org)))
    }

    /// Dead letters this session may read (root: all; an organization's administrator: those to
    /// or from it), newest first: `limit` (1 to 500) from `offset`, of one reason code if given.
    pub async fn dead_letters(
        &self,
        reason: Option<&str>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<contract::DeadLetter>, ClientError> {
        let mut path = format!("/dead-letters?limit={limit}&offset={offset}");
        if let Some(reason) = reason {
            // Reason codes are snake_case words; anything else is percent-encoded whole.
            let encoded: String = reason
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b == b'_' {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            path.push_str(&format!("&reason={encoded}"));
        }
        self.fetch(reqwest::Method::GET, &path, None::<&()>).await
    }

    /// Kills a task and its subtasks; the task as it is afterwards.
    pub async fn kill(&self, task: TaskId) -> Result<contract::Task, ClientError> {
        self.fetch(reqwest::Method::POST, &format!("/tasks/{task}/kill"), None::<&()>).await
    }

    /// The sealed results so far, waiting up to `wait` (at most 60 s) for all of them.
    pub async fn results(&self, task: TaskId, wait: Duration) -> Result<Results, ClientError> {
        let path = format!("/tasks/{task}/results?wait={}", wait.as_secs().min(60));
        let body: TaskResults = self.fetch(reqwest::Method::GET, &path, None::<&()>).await?;
        let mut sealed = Vec::with_capacity(body.results.len());
        for r in body.results {
            let envelope = STANDARD
                .decode(&r.envelope)
                .map_err(|e| ClientError::Decode(format!("the result of job {}: {e}", r.job)))?;
            sealed.push((r.job, r.organization, r.status, envelope));
        }
        Ok(Results { task, complete: body.complete, sealed })
    }

    /// Opens sealed results with the researcher's organization key, checking each sender's
    /// signature against the keys this client trusts, and each result against the task that
    /// asked for it: the envelope's task, kind, sender and job must be the ones asked for (the
    /// jobs this client created, when it knows them), and each job answers once.
    pub async fn open_results(
        &self,
        me: &Identity,
        collaboration: CollaborationId,
        results: &Results,
    ) -> Result<Vec<OpenedResult>, ClientError> {
        // Learn signed rotations since the task was created; refusals surface as results whose
        // signer is not trusted.
        self.trust.trust_own(me.org(), me.current().public())?;
        self.trusted_keys(collaboration).await?;
        let expected = self.expected.lock().expect("not poisoned").get(&results.task).cloned();
        let mut guard = MemoryReplayGuard::new();
        let mut seen = std::collections::HashSet::new();
        let mut opened = Vec::with_capacity(results.sealed.len());
        for (job, org, _, bytes) in &results.sealed {
            let mismatch = |why: String| ClientError::Mismatch { job: *job, why };
            let envelope =
                envelope::open(bytes, me, &*self.trust, &mut guard, &OpenPolicy::default(), Timestamp::now())
                    .map_err(|source| ClientError::Open { job: *job, source })?;
            let header = &envelope.header;
            if header.kind != Kind::JobResult {
                return Err(mismatch(format!("it is a {:?} envelope, not a job result", header.kind)));
            }
            if header.task != results.task {
                return Err(mismatch(format!("it belongs to task {}, not {}", header.task, results.task)));
            }
            if header.sender != *org {
                return Err(mismatch(format!(
                    "organization {} signed it, but the server labels it as organization {org}'s",
                    header.sender
                )));
            }
            let result = match envelope.decode() {
                Ok(Payload::JobResult(result)) => result,
                _ => return Err(ClientError::Decode(format!("the result of job {job} is not a job result"))),
            };
            if result.job != *job {
                return Err(mismatch(format!("it answers job {}", result.job)));
            }
            if let Some(jobs) = &expected
                && !jobs.contains(&(*job, header.sender))
            {
                return Err(mismatch(format!("the task has no job {job} at organization {}", header.sender)));
            }
            if !seen.insert(*job) {
                return Err(mismatch("a result for this job was already given".into()));
            }
            opened.push(OpenedResult {
                job: *job,
                organization: header.sender,
                status: result.status,
                output: result.output.into_vec(),
                reason: result.reason,
                log: result.log,
            });
        }
        Ok(opened)
    }

    /// Waits for every job of `task` (at most `timeout`) and opens the results that arrived.
    pub async fn wait_and_open(
        &self,
        me: &Identity,
        collaboration: CollaborationId,
        task: TaskId,
        timeout: Duration,
    ) -> Result<Vec<OpenedResult>, ClientError> {
        let look = self.wait(task, timeout, |_| {}).await?;
        self.open_results(me, collaboration, &look.results).await
    }
}

/// An HTTP client for the server at `base`: plain text only to loopback unless allowed.
fn http(base: &str, tls: &ClientTls) -> Result<reqwest::Client, ClientError> {
    tls.check_http_url("server.url", base)?;
    Ok(tls.http_client("server.tls", Duration::from_secs(90))?)
}

/// The whole chain of causes: reqwest alone says only "error sending request".
fn unreachable(base: &str, e: reqwest::Error) -> ClientError {
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = cause.source();
    }
    if detail.contains("certificate") {
        detail.push_str(
            " (the server's certificate is not one this client trusts: give the CA that signs it \
             with --ca-file or tls.ca_file)",
        );
    }
    ClientError::Unreachable { url: base.to_owned(), detail }
}

async fn answer(response: reqwest::Response) -> Result<Value, ClientError> {
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| ClientError::Decode(e.to_string()))?;
    if status >= 400 {
        let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or_else(|_| ErrorBody {
            code: String::new(),
            message: "no message".to_owned(),
            reason: None,
        });
        return Err(ClientError::Refused {
            status,
            code: body.code,
            reason: body.reason,
            message: body.message,
        });
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// An answer as the contract's `T`.
fn decode<T: DeserializeOwned>(answer: Value) -> Result<T, ClientError> {
    serde_json::from_value(answer).map_err(|e| ClientError::Decode(format!("an answer of the server: {e}")))
}
