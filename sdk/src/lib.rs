//! Write fedq algorithms in Rust.
//!
//! An algorithm is a plain program in a container that its organization's node starts for one
//! job. It talks to the world only through the node-local endpoint, whose address and the job's
//! bearer token the node passes in the environment (`FEDQ_ENDPOINT`, `FEDQ_TOKEN`). The node seals
//! and opens every envelope; the algorithm sees plaintext and organization ids only.
//!
//! ```no_run
//! let node = fedq_sdk::Node::from_env()?;
//! let input = node.input()?;
//! node.post_result(&input)?;
//! # Ok::<(), fedq_sdk::Error>(())
//! ```
//!
//! The HTTP API this wraps is documented in `docs/algorithm-api.md`; any language that speaks
//! HTTP can use it directly.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fedq_algorithm_api as api;
use serde::Serialize;

pub use fedq_algorithm_api::{ErrorCode, Job, Organization, Subtask, SubtaskJob};

/// Calls `ask` with the seconds the node may wait, again while it answers `round_incomplete`,
/// until `timeout` has passed.
fn until_round_complete<T>(
    timeout: Duration,
    mut ask: impl FnMut(u64) -> Result<T, Error>,
) -> Result<T, Error> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match ask(left.as_secs().min(api::MAX_WAIT_SECS)) {
            Err(Error::Refused { code, .. })
                if code == ErrorCode::RoundIncomplete.as_str() && std::time::Instant::now() < deadline => {}
            other => return other,
        }
    }
}

pub mod fixed;

/// Where the node mounts this run's volume, shared by the run's containers at this node.
pub const RUN_DIR: &str = "/fedq/run";
/// Where the node mounts its data sources, read-only, one entry per label.
pub const DATA_DIR: &str = "/data";
/// The largest response read (a subtask's results can be large).
const MAX_RESPONSE: u64 = 256 * 1024 * 1024;

/// What went wrong talking to the node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `FEDQ_ENDPOINT` or `FEDQ_TOKEN` is missing: not running under a fedq node.
    #[error("{0} is not set: this program must be started by a fedq node")]
    MissingEnv(&'static str),
    /// The request did not complete.
    #[error("request to the node failed: {0}")]
    Transport(#[from] ureq::Error),
    /// The node answered with an error.
    #[error("the node refused ({status} {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// Explanation.
        message: String,
    },
    /// The result is larger than the node accepts.
    #[error("a result of {size} bytes exceeds this node's limit of {limit} bytes")]
    ResultTooLarge {
        /// The result's size.
        size: u64,
        /// The node's limit.
        limit: u64,
    },
    /// The node's answer is not what this SDK expects.
    #[error("unexpected answer from the node: {0}")]
    Decode(String),
}

/// A message from another organization's container in the same run.
#[derive(Debug, Clone)]
pub struct Message {
    /// The sending organization.
    pub from: String,
    /// The sending job.
    pub from_job: String,
    /// The label both sides agreed on.
    pub topic: String,
    /// The content.
    pub body: Vec<u8>,
}

/// The result of one job of a subtask.
#[derive(Debug, Clone)]
pub struct SubtaskResult {
    /// The job.
    pub job: String,
    /// Where it ran.
    pub organization: String,
    /// Its terminal status (`completed`, `failed`, …).
    pub status: String,
    /// What it posted.
    pub output: Vec<u8>,
    /// Why it did not complete.
    pub reason: Option<String>,
}

/// The results of a subtask so far.
#[derive(Debug, Clone)]
pub struct SubtaskResults {
    /// Whether every job has finished.
    pub complete: bool,
    /// The finished jobs.
    pub results: Vec<SubtaskResult>,
}

/// A client of the node-local endpoint for this container's job.
#[derive(Debug, Clone)]
pub struct Node {
    base: String,
    token: String,
    agent: ureq::Agent,
}

fn decode_b64(text: &str) -> Result<Vec<u8>, Error> {
    STANDARD.decode(text).map_err(|e| Error::Decode(format!("invalid base64: {e}")))
}

impl Node {
    /// The client for this container, from `FEDQ_ENDPOINT` and `FEDQ_TOKEN`.
    pub fn from_env() -> Result<Self, Error> {
        let base = std::env::var("FEDQ_ENDPOINT").map_err(|_| Error::MissingEnv("FEDQ_ENDPOINT"))?;
        let token = std::env::var("FEDQ_TOKEN").map_err(|_| Error::MissingEnv("FEDQ_TOKEN"))?;
        Ok(Self::new(&base, &token))
    }

    /// A client of the endpoint at `base` (`http://host:port`) with `token`.
    pub fn new(base: &str, token: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Long polls wait up to 60 s at the node; leave room for that.
            .timeout_global(Some(Duration::from_secs(90)))
            .build();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.base)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    fn check(response: ureq::http::Response<ureq::Body>) -> Result<ureq::http::Response<ureq::Body>, Error> {
        let status = response.status().as_u16();
        if status < 400 {
            return Ok(response);
        }
        let mut response = response;
        let (code, message) = match response.body_mut().read_json::<api::ErrorBody>() {
            Ok(e) => (e.code, e.message),
            Err(_) => ("http".to_owned(), format!("status {status}")),
        };
        Err(Error::Refused { status, code, message })
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let response = self.agent.get(&self.url(path)).header("Authorization", &self.auth()).call()?;
        let mut response = Self::check(response)?;
        let bytes = response.body_mut().with_config().limit(MAX_RESPONSE).read_to_vec()?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, Error> {
        let response =
            self.agent.post(&self.url(path)).header("Authorization", &self.auth()).send_json(body)?;
        let mut response = Self::check(response)?;
        let bytes = response.body_mut().with_config().limit(MAX_RESPONSE).read_to_vec()?;
        if bytes.is_empty() {
            return serde_json::from_value(serde_json::Value::Null).map_err(|e| Error::Decode(e.to_string()));
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    /// This job's description.
    pub fn job(&self) -> Result<Job, Error> {
        self.get_json("/job")
    }

    /// This job's input, as the requester sealed it for this organization.
    pub fn input(&self) -> Result<Vec<u8>, Error> {
        let response = self.agent.get(&self.url("/input")).header("Authorization", &self.auth()).call()?;
        let mut response = Self::check(response)?;
        Ok(response.body_mut().with_config().limit(MAX_RESPONSE).read_to_vec()?)
    }

    /// Sends `body` to this run's job at organization `to`, labelled `topic`.
    pub fn send(&self, to: &str, topic: &str, body: &[u8]) -> Result<(), Error> {
        let request =
            api::SendMessage { to: to.to_owned(), topic: topic.to_owned(), body: STANDARD.encode(body) };
        let _: api::Sent = self.post_json("/messages", &request)?;
        Ok(())
    }

    /// Takes the messages that arrived for this run (with `topic`, if given), from any member
    /// of the run, waiting up to `wait` (at most 60 s) for at least one. Any member may send any
    /// topic: a protocol that expects a value from one organization uses [`Node::receive_from`]
    /// or [`Node::receive_one`], which name it.
    pub fn receive(&self, topic: Option<&str>, wait: Duration) -> Result<Vec<Message>, Error> {
        self.take(topic, None, wait)
    }

    /// Takes the messages with `topic` that organization `from` sent this run, waiting up to
    /// `wait` (at most 60 s) for at least one. Messages of other senders stay for whoever asks
    /// for them.
    pub fn receive_from(&self, from: &str, topic: &str, wait: Duration) -> Result<Vec<Message>, Error> {
        self.take(Some(topic), Some(from), wait)
    }

    fn take(&self, topic: Option<&str>, from: Option<&str>, wait: Duration) -> Result<Vec<Message>, Error> {
        let mut path = format!("/messages?wait={}", wait.as_secs().min(api::MAX_WAIT_SECS));
        for (key, value) in [("topic", topic), ("from", from)] {
            if let Some(value) = value {
                path.push_str(&format!("&{key}="));
                path.push_str(&encode_query(value));
            }
        }
        let messages: api::Messages = self.get_json(&path)?;
        messages
            .messages
            .into_iter()
            .map(|m| {
                Ok(Message { from: m.from, from_job: m.from_job, topic: m.topic, body: decode_b64(&m.body)? })
            })
            .collect()
    }

    /// Waits, as long as it takes, for one message with `topic` from organization `from`.
    pub fn receive_one(&self, from: &str, topic: &str) -> Result<Message, Error> {
        loop {
            let mut messages = self.receive_from(from, topic, Duration::from_secs(30))?;
            if !messages.is_empty() {
                return Ok(messages.remove(0));
            }
        }
    }

    /// Creates a subtask of this job's task at `organizations` running `image` (this job's own
    /// image if `None`), each organization getting `input`.
    pub fn create_subtask(
        &self,
        organizations: &[&str],
        image: Option<&str>,
        input: &[u8],
    ) -> Result<Subtask, Error> {
        let request = api::CreateSubtask {
            organizations: organizations.iter().map(|o| (*o).to_owned()).collect(),
            image: image.map(str::to_owned),
            input: Some(STANDARD.encode(input)),
            inputs: None,
        };
        self.post_json("/subtasks", &request)
    }

    /// The results of subtask `task`, waiting up to `wait` (at most 60 s) for all of them.
    pub fn subtask_results(&self, task: &str, wait: Duration) -> Result<SubtaskResults, Error> {
        let body: api::SubtaskResults =
            self.get_json(&format!("/subtasks/{}/results?wait={}", encode_query(task), wait.as_secs()))?;
        let results = body
            .results
            .into_iter()
            .map(|r| {
                Ok(SubtaskResult {
                    job: r.job,
                    organization: r.organization,
                    status: r.status,
                    output: decode_b64(&r.output)?,
                    reason: r.reason,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(SubtaskResults { complete: body.complete, results })
    }

    /// Waits, as long as it takes, for every job of subtask `task`.
    pub fn wait_subtask(&self, task: &str) -> Result<Vec<SubtaskResult>, Error> {
        loop {
            let results = self.subtask_results(task, Duration::from_secs(30))?;
            if results.complete {
                return Ok(results.results);
            }
        }
    }

    /// Contributes `values` to secure-aggregation `round` of `participants` (organizations of the
    /// run, this one included), whose sum the job at `aggregator` receives. Waits up to `timeout`
    /// for every participant's node; a round still incomplete then is the node's
    /// `round_incomplete` refusal, which names who is missing.
    pub fn contribute(
        &self,
        round: &str,
        participants: &[impl AsRef<str>],
        aggregator: &str,
        values: &[u64],
        timeout: Duration,
    ) -> Result<(), Error> {
        let mut request = api::Contribute {
            round: round.to_owned(),
            participants: participants.iter().map(|p| p.as_ref().to_owned()).collect(),
            aggregator: aggregator.to_owned(),
            values: values.to_vec(),
            wait: 0,
        };
        until_round_complete(timeout, |wait| {
            request.wait = wait;
            self.post_json::<api::Contributed>("/secure-sum", &request)
        })
        .map(drop)
    }

    /// At the aggregator's organization: the sum of `round`'s contributions by `participants`,
    /// modulo 2^64, waiting up to `timeout` for all of them.
    pub fn secure_sum(
        &self,
        round: &str,
        participants: &[impl AsRef<str>],
        timeout: Duration,
    ) -> Result<Vec<u64>, Error> {
        let listed: Vec<&str> = participants.iter().map(AsRef::as_ref).collect();
        let path =
            format!("/secure-sum/{}?participants={}", encode_query(round), encode_query(&listed.join(",")));
        until_round_complete(timeout, |wait| self.get_json::<api::SecureSum>(&format!("{path}&wait={wait}")))
            .map(|s| s.sum)
    }

    /// Posts this job's result (once), which the node seals for the requester.
    pub fn post_result(&self, output: &[u8]) -> Result<(), Error> {
        // A large result is checked against the node's limit first: the node would refuse it
        // after the first bytes and close the connection, which reads as a broken pipe here.
        if output.len() > 1024 * 1024
            && let Some(limit) = self.job()?.max_result_bytes
            && output.len() as u64 > limit
        {
            return Err(Error::ResultTooLarge { size: output.len() as u64, limit });
        }
        let response = self
            .agent
            .post(&self.url("/result"))
            .header("Authorization", &self.auth())
            .header("Content-Type", "application/octet-stream")
            .send(output)?;
        Self::check(response).map(drop)
    }

    /// The organizations of this job's collaboration.
    pub fn organizations(&self) -> Result<Vec<Organization>, Error> {
        let orgs: api::Organizations = self.get_json("/organizations")?;
        Ok(orgs.organizations)
    }

    /// This run's volume at this node.
    pub fn run_dir() -> PathBuf {
        PathBuf::from(RUN_DIR)
    }

    /// The data source mounted under `label`.
    pub fn data(label: &str) -> PathBuf {
        PathBuf::from(DATA_DIR).join(label)
    }
}

/// Why an algorithm gave up: a message for its log (which stays at its node).
#[derive(Debug)]
pub struct Failure(pub String);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure(e.to_string())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `n` integers drawn uniformly from the kernel's random source (which every container has).
pub fn random_u64s(n: usize) -> Result<Vec<u64>, Failure> {
    use std::io::Read as _;
    let mut bytes = vec![0u8; n * 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Failure(format!("random source: {e}")))?;
    Ok(bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
}

/// Percent-encodes a query value (ids and topics are usually plain; this keeps any text safe).
fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query("x1"), "x1");
        assert_eq!(encode_query("a b&c"), "a%20b%26c");
    }

    #[test]
    fn missing_environment_is_a_clear_error() {
        // The test process is not started by a node, so the variables are unset.
        let err = Node::from_env().unwrap_err();
        assert!(err.to_string().contains("FEDQ_ENDPOINT"), "{err}");
    }
}
