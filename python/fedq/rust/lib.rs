//! `fedq._native`: the researcher's client (`fedq-client`) for Python. Everything that touches
//! keys — trusting them, sealing inputs, opening and checking results — is the Rust client's
//! code, the same the `fedq` command line runs; the Python package (`src/fedq/`) adds names,
//! progress, DataFrames and exceptions around it. Calls release the GIL while they wait on the
//! network.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedq_client::{Client as Inner, ClientError, Inputs, TaskSpec};
use fedq_core::ids::{CollaborationId, JobId, OrgId, TaskId};
use fedq_core::protocol::JobStatus;
use fedq_envelope::keys::{FirstUse, Identity, KeyFileError, KeyId, KeyTrust, OrgKey, TrustError};
use fedq_tls::ClientTls;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use secrecy::{ExposeSecret as _, SecretString};

/// Which of `fedq.errors`' exceptions a failure is: the Rust side decides, and raises it.
#[derive(Clone, Copy)]
enum Kind {
    Unreachable,
    /// The server refused the request; the class follows its HTTP status.
    Refused,
    WrongKey,
    KeyFile,
    UntrustedKey,
    NotAMember,
    ResultRefused,
    Tls,
    BadInput,
    /// An answer that cannot be read, a seal that failed, a runtime that did not start.
    Other,
}

impl Kind {
    /// The class's name in `fedq.errors`.
    fn class(self, status: Option<u16>) -> &'static str {
        match (self, status) {
            (Kind::Refused, Some(401)) => "AuthenticationFailed",
            (Kind::Refused, Some(403)) => "Forbidden",
            (Kind::Refused, Some(404)) => "NotFound",
            (Kind::Refused, _) => "Refused",
            (Kind::Unreachable, _) => "ServerUnreachable",
            (Kind::WrongKey, _) => "WrongKey",
            (Kind::KeyFile, _) => "KeyFileError",
            (Kind::UntrustedKey, _) => "UntrustedKey",
            (Kind::NotAMember, _) => "NotAMember",
            (Kind::ResultRefused, _) => "ResultRefused",
            (Kind::Tls, _) => "TlsError",
            (Kind::BadInput, _) => "BadInput",
            (Kind::Other, _) => "FedqError",
        }
    }
}

/// One failure as Python sees it: which exception, the stable code, the HTTP status and
/// refusal reason where the server gave them, and the message a person reads.
struct Failure {
    kind: Kind,
    code: String,
    status: Option<u16>,
    reason: Option<String>,
    message: String,
}

impl Failure {
    fn new(kind: Kind, code: &str, message: String) -> Self {
        Self { kind, code: code.to_owned(), status: None, reason: None, message }
    }

    /// The exception itself, an instance of its class in `fedq.errors`.
    fn exception<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let class = py.import("fedq.errors")?.getattr(self.kind.class(self.status))?;
        match (self.kind, self.status) {
            (Kind::Refused, Some(status)) => {
                class.call1((&self.message, &self.code, status, self.reason.as_deref()))
            }
            _ => class.call1((&self.message, &self.code)),
        }
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> Self {
        // Failing to make it (a class not in `fedq.errors`) is raised as that failure: loud
        // in the package's tests rather than a vaguer exception.
        Python::attach(|py| f.exception(py).map_or_else(|e| e, PyErr::from_value))
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let message = e.to_string();
        match e {
            ClientError::Unreachable { .. } => Failure::new(Kind::Unreachable, "unreachable", message),
            ClientError::Refused { status, code, reason, message } => Failure {
                kind: Kind::Refused,
                code: if code.is_empty() { "refused".to_owned() } else { code },
                status: Some(status),
                reason,
                message,
            },
            ClientError::Decode(_) => Failure::new(Kind::Other, "bad_answer", message),
            ClientError::WrongKey { .. } => Failure::new(Kind::WrongKey, "wrong_key", message),
            ClientError::NotAMember { .. } => Failure::new(Kind::NotAMember, "not_a_member", message),
            ClientError::NoOrganizations => Failure::new(Kind::BadInput, "no_organizations", message),
            ClientError::NotSeen { .. } => Failure::new(Kind::BadInput, "bad_input", message),
            ClientError::Seal(_) => Failure::new(Kind::Other, "seal_failed", message),
            ClientError::Tls(_) => Failure::new(Kind::Tls, "tls", message),
            ClientError::Open { source, .. } => Failure::new(Kind::ResultRefused, source.code(), message),
            ClientError::Mismatch { .. } => Failure::new(Kind::ResultRefused, "mismatch", message),
            ClientError::Trust(e) => e.into(),
        }
    }
}

impl From<TrustError> for Failure {
    fn from(e: TrustError) -> Self {
        let code = match e {
            TrustError::Unknown { .. } => "key_unknown",
            TrustError::Changed { .. } => "key_changed",
            TrustError::Revoked { .. } => "key_revoked",
            TrustError::NotLogged { .. } => "key_not_logged",
            TrustError::Io { .. } | TrustError::Damaged { .. } => "trust_store",
        };
        Failure::new(Kind::UntrustedKey, code, e.to_string())
    }
}

impl From<KeyFileError> for Failure {
    fn from(e: KeyFileError) -> Self {
        Failure::new(Kind::KeyFile, "key_file", e.to_string())
    }
}

fn bad_input(message: String) -> Failure {
    Failure::new(Kind::BadInput, "bad_input", message)
}

fn parse<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, Failure> {
    text.parse().map_err(|_| bad_input(format!("{text:?} is not a valid {what}")))
}

/// A task just created: its id, its run and its jobs, `(job, organization)` in the order of
/// the organizations asked for.
#[pyclass(frozen, get_all, module = "fedq._native")]
struct Created {
    task: String,
    run: String,
    jobs: Vec<(String, String)>,
}

/// One result, opened with the organization key and checked against what was asked.
#[pyclass(frozen, get_all, module = "fedq._native")]
struct Opened {
    job: String,
    organization: String,
    status: String,
    output: Py<PyBytes>,
    /// Why the job failed, where it did.
    reason: Option<String>,
    log: String,
}

/// One look at a task: the task as the server shows it (JSON text), whether it is complete
/// by the client's rule, and the results so far.
#[pyclass(frozen, module = "fedq._native")]
struct Look {
    #[pyo3(get)]
    task: String,
    #[pyo3(get)]
    complete: bool,
    results: Vec<Py<Opened>>,
}

#[pymethods]
impl Look {
    #[getter]
    fn results(&self, py: Python<'_>) -> Vec<Py<Opened>> {
        self.results.iter().map(|r| r.clone_ref(py)).collect()
    }
}

/// What the client decides about one member's key: its fingerprint where trusted, otherwise
/// the `fedq.errors.UntrustedKey` that says why not.
#[pyclass(frozen, module = "fedq._native")]
struct KeyDecision {
    #[pyo3(get)]
    organization: String,
    #[pyo3(get)]
    fingerprint: Option<String>,
    refused: Option<Py<PyAny>>,
}

#[pymethods]
impl KeyDecision {
    #[getter]
    fn refused(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.refused.as_ref().map(|r| r.clone_ref(py))
    }
}

/// A session with a fedq server, and the keys it trusts.
#[pyclass(frozen, module = "fedq._native")]
struct Client {
    inner: Inner,
    runtime: tokio::runtime::Runtime,
    /// The researcher's organization key, once given.
    identity: Mutex<Option<Arc<Identity>>>,
}

/// How the server is reached and which keys are trusted, as the Python side gives them.
fn settings(
    ca_file: Option<PathBuf>,
    allow_plaintext: bool,
    trust_store: Option<PathBuf>,
    trust_on_first_use: bool,
) -> Result<(ClientTls, KeyTrust), Failure> {
    let tls = ClientTls { ca_file, allow_plaintext, ..ClientTls::default() };
    let first_use = if trust_on_first_use { FirstUse::Accept } else { FirstUse::Refuse };
    let trust = match trust_store {
        Some(path) => KeyTrust::open(&path, first_use)?,
        None => KeyTrust::in_memory(first_use),
    };
    Ok((tls, trust))
}

/// One worker thread: the pooled connections' tasks keep running between the calls Python
/// makes (a current-thread runtime would run them only inside a call).
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Kind::Other, "runtime", format!("cannot start the client's runtime: {e}")))
}

impl Client {
    /// A session trusting the keys of `trust`, with no organization key given yet.
    fn session(inner: Inner, trust: KeyTrust, runtime: tokio::runtime::Runtime) -> Self {
        Self { inner: inner.with_trust(Arc::new(trust)), runtime, identity: Mutex::default() }
    }

    fn identity(&self) -> Result<Arc<Identity>, Failure> {
        self.identity.lock().expect("not poisoned").clone().ok_or_else(|| {
            bad_input("no organization key given: pass key=… to the client, or call use_key".into())
        })
    }

    /// Runs `work` on the client's runtime with the GIL released.
    fn wait<T: Send>(
        &self,
        py: Python<'_>,
        work: impl std::future::Future<Output = Result<T, ClientError>> + Send,
    ) -> Result<T, Failure> {
        py.detach(|| {
            self.runtime.block_on(async {
                match work.await {
                    Ok(done) => Ok(done),
                    // A refused key's message names organizations by name as well as by id.
                    Err(e @ (ClientError::Trust(_) | ClientError::WrongKey { .. })) => {
                        let mut failure = Failure::from(e);
                        failure.message = self.inner.naming_organizations(&failure.message).await;
                        Err(failure)
                    }
                    Err(e) => Err(Failure::from(e)),
                }
            })
        })
    }
}

#[pymethods]
impl Client {
    /// Logs in; the password is sent once and not kept.
    // Python's keyword arguments, each with its default: a struct would only move the list.
    #[allow(clippy::too_many_arguments)]
    #[staticmethod]
    #[pyo3(signature = (server, username, password, ca_file=None, allow_plaintext=false, trust_store=None, trust_on_first_use=false))]
    fn login(
        py: Python<'_>,
        server: &str,
        username: &str,
        password: &str,
        ca_file: Option<PathBuf>,
        allow_plaintext: bool,
        trust_store: Option<PathBuf>,
        trust_on_first_use: bool,
    ) -> PyResult<Self> {
        let (tls, trust) = settings(ca_file, allow_plaintext, trust_store, trust_on_first_use)?;
        let runtime = runtime()?;
        let inner = py
            .detach(|| runtime.block_on(Inner::login(server, &tls, username, password)))
            .map_err(Failure::from)?;
        Ok(Self::session(inner, trust, runtime))
    }

    /// A session from a token obtained before (`fedq login`'s saved session).
    #[staticmethod]
    #[pyo3(signature = (server, token, ca_file=None, allow_plaintext=false, trust_store=None, trust_on_first_use=false))]
    fn with_token(
        server: &str,
        token: &str,
        ca_file: Option<PathBuf>,
        allow_plaintext: bool,
        trust_store: Option<PathBuf>,
        trust_on_first_use: bool,
    ) -> PyResult<Self> {
        let (tls, trust) = settings(ca_file, allow_plaintext, trust_store, trust_on_first_use)?;
        let inner =
            Inner::with_token(server, &tls, SecretString::from(token.to_owned())).map_err(Failure::from)?;
        Ok(Self::session(inner, trust, runtime()?))
    }

    /// The session's token, to save it.
    fn token(&self) -> String {
        self.inner.token().expose_secret().to_owned()
    }

    /// Loads the organization's private key file (refused if group or others can read it);
    /// returns its fingerprint.
    fn use_key(&self, path: PathBuf, organization: &str) -> PyResult<String> {
        let org: OrgId = parse("organization id", organization)?;
        let identity = Identity::new(org, OrgKey::load(&path).map_err(Failure::from)?);
        let fingerprint = identity.current().id().to_string();
        *self.identity.lock().expect("not poisoned") = Some(Arc::new(identity));
        Ok(fingerprint)
    }

    /// Any call of the REST API (`/api/v1` + `path`); the answer as JSON text.
    #[pyo3(signature = (method, path, body=None))]
    fn call(&self, py: Python<'_>, method: &str, path: &str, body: Option<&str>) -> PyResult<String> {
        let body = body
            .map(serde_json::from_str::<serde_json::Value>)
            .transpose()
            .map_err(|e| bad_input(format!("the request body is not JSON: {e}")))?;
        let inner = &self.inner;
        let answer = match (method, body) {
            ("GET", _) => self.wait(py, inner.get(path))?,
            ("DELETE", _) => self.wait(py, inner.delete(path))?,
            ("POST", body) => self.wait(py, inner.post(path, &body.unwrap_or_default()))?,
            ("PUT", body) => self.wait(py, inner.put(path, &body.unwrap_or_default()))?,
            (other, _) => return Err(bad_input(format!("unknown method {other:?}")).into()),
        };
        Ok(answer.to_string())
    }

    /// Seals each organization's input with the organization key and creates the task; the
    /// created task (id, run, jobs) as JSON text. One input goes to every organization; a list
    /// of as many inputs as organizations gives each its own.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (collaboration, image, organizations, inputs, name="", return_log=false))]
    fn create_task(
        &self,
        py: Python<'_>,
        collaboration: &str,
        image: String,
        organizations: Vec<String>,
        inputs: Vec<Bound<'_, PyBytes>>,
        name: &str,
        return_log: bool,
    ) -> PyResult<Created> {
        let collaboration: CollaborationId = parse("collaboration id", collaboration)?;
        let organizations = organizations
            .iter()
            .map(|o| parse::<OrgId>("organization id", o))
            .collect::<Result<Vec<_>, _>>()?;
        let mut inputs: Vec<Vec<u8>> = inputs.iter().map(|b| b.as_bytes().to_vec()).collect();
        let inputs = match inputs.len() {
            1 => Inputs::Same(inputs.remove(0)),
            n if n == organizations.len() => Inputs::Each(inputs),
            n => {
                return Err(bad_input(format!(
                    "{n} inputs for {} organizations: give one for all, or one per organization",
                    organizations.len()
                ))
                .into());
            }
        };
        let spec =
            TaskSpec { collaboration, image, organizations, inputs, name: name.to_owned(), return_log };
        let me = self.identity()?;
        let created = self.wait(py, self.inner.create_task(&me, &spec))?;
        Ok(Created {
            task: created.task.to_string(),
            run: created.run.to_string(),
            jobs: created.jobs.iter().map(|(job, org)| (job.to_string(), org.to_string())).collect(),
        })
    }

    /// Tells the client which jobs a task has and where (a task created in another session),
    /// so that its results are checked against them.
    fn expect(&self, task: &str, jobs: Vec<(String, String)>) -> PyResult<()> {
        let task: TaskId = parse("task id", task)?;
        let jobs = jobs
            .iter()
            .map(|(j, o)| Ok((parse::<JobId>("job id", j)?, parse::<OrgId>("organization id", o)?)))
            .collect::<Result<Vec<_>, Failure>>()?;
        self.inner.expect(task, jobs);
        Ok(())
    }

    /// One look at a task (`fedq_client::Client::look`, the rule the command line waits by),
    /// waiting up to `wait_secs` (at most 2) for results while a job runs; the results are
    /// opened with the organization key and checked.
    #[pyo3(signature = (task, wait_secs=0))]
    fn look(&self, py: Python<'_>, task: &str, wait_secs: u64) -> PyResult<Look> {
        let task: TaskId = parse("task id", task)?;
        let me = self.identity()?;
        let inner = &self.inner;
        let (look, opened) = self.wait(py, async {
            let look = inner.look(task, Duration::from_secs(wait_secs)).await?;
            // Checked with the keys trusted for the task's collaboration, as the command line does.
            let opened = inner.open_results(&me, look.task.collaboration, &look.results).await?;
            Ok((look, opened))
        })?;
        let shown = serde_json::to_string(&look.task)
            .map_err(|e| Failure::from(ClientError::Decode(e.to_string())))?;
        let results = opened
            .into_iter()
            .map(|r| {
                let opened = Opened {
                    job: r.job.to_string(),
                    organization: r.organization.to_string(),
                    status: r.status.to_string(),
                    output: PyBytes::new(py, &r.output).unbind(),
                    reason: r.reason,
                    log: r.log,
                };
                Py::new(py, opened)
            })
            .collect::<PyResult<_>>()?;
        Ok(Look { task: shown, complete: look.complete, results })
    }

    /// The id of the organization named `name_or_id` among those this session sees (the
    /// command line's lookup, `fedq_client::Client::organization`).
    fn organization_id(&self, py: Python<'_>, name_or_id: &str) -> PyResult<String> {
        Ok(self.wait(py, self.inner.organization(name_or_id))?.id.to_string())
    }

    /// The id of the collaboration named `name_or_id` among those this session sees.
    fn collaboration_id(&self, py: Python<'_>, name_or_id: &str) -> PyResult<String> {
        Ok(self.wait(py, self.inner.collaboration(name_or_id))?.id.to_string())
    }

    /// What this client decides about each member's key in a collaboration.
    fn trusted_keys(&self, py: Python<'_>, collaboration: &str) -> PyResult<Vec<KeyDecision>> {
        let collaboration: CollaborationId = parse("collaboration id", collaboration)?;
        if let Ok(me) = self.identity() {
            self.inner.trust().trust_own(me.org(), me.current().public()).map_err(Failure::from)?;
        }
        let inner = &self.inner;
        let decided = self.wait(py, async {
            let decisions = inner.trusted_keys(collaboration).await?;
            // Read once, and only when a refusal has something to name.
            let names = match decisions.iter().any(|d| d.key.is_err()) {
                true => inner.organization_names().await,
                false => Default::default(),
            };
            Ok(decisions
                .into_iter()
                .map(|d| {
                    let key = d.key.map(|key| key.id().to_string()).map_err(|e| {
                        let mut failure = Failure::from(e);
                        failure.message = names.name(&failure.message);
                        failure
                    });
                    (d.org.to_string(), key)
                })
                .collect::<Vec<_>>())
        })?;
        decided
            .into_iter()
            .map(|(organization, key)| {
                Ok(match key {
                    Ok(fingerprint) => {
                        KeyDecision { organization, fingerprint: Some(fingerprint), refused: None }
                    }
                    Err(failure) => KeyDecision {
                        organization,
                        fingerprint: None,
                        refused: Some(failure.exception(py)?.unbind()),
                    },
                })
            })
            .collect()
    }

    /// Trusts `fingerprint` (`SHA256:…`) for an organization, after comparing it out of band;
    /// false if it was trusted already.
    fn trust(&self, organization: &str, fingerprint: &str) -> PyResult<bool> {
        let org: OrgId = parse("organization id", organization)?;
        let key: KeyId = parse("key fingerprint (SHA256:…)", fingerprint)?;
        Ok(self.inner.trust().trust(org, key).map_err(Failure::from)?)
    }
}

/// Where `fedq login` keeps the session (the command line's own rule, `fedq_client::files`).
#[pyfunction]
fn session_path() -> PathBuf {
    fedq_client::files::session_path()
}

/// Where the command line keeps the trusted keys.
#[pyfunction]
fn trust_store_path() -> PathBuf {
    fedq_client::files::trust_store_path()
}

/// Where the command line keeps the jobs of a task it created.
#[pyfunction]
fn task_record_path(task: &str) -> PyResult<PathBuf> {
    Ok(fedq_client::files::task_record_path(parse("task id", task)?))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The client's warnings (a key trusted on first use, a rotation followed) go to standard
    // error, as the command line's do. Nothing it logs carries a secret.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .without_time()
        .try_init();
    fedq_tls::install_crypto_provider();
    m.add_class::<Client>()?;
    m.add_class::<Created>()?;
    m.add_class::<Look>()?;
    m.add_class::<Opened>()?;
    m.add_class::<KeyDecision>()?;
    m.add_function(wrap_pyfunction!(session_path, m)?)?;
    m.add_function(wrap_pyfunction!(trust_store_path, m)?)?;
    m.add_function(wrap_pyfunction!(task_record_path, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The statuses a job cannot leave, from the one list of them.
    m.add("TERMINAL_STATUSES", JobStatus::TERMINAL_NAMES.to_vec())?;
    Ok(())
}
