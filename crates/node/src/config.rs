//! Node settings: a TOML file, then `FEDQ_…` environment variables (`FEDQ_SERVER__API_KEY`
//! overrides `[server] api_key`), as for the server. Secrets are `SecretString`s.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::ids::OrgId;
use crate::tls::ClientTls;

/// Everything a node needs to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Who this node is.
    pub node: NodeSection,
    /// The central server's REST API.
    pub server: ServerSection,
    /// RabbitMQ, with the credentials the server issued at registration.
    pub broker: BrokerSection,
    /// The algorithm network and the node-local endpoint.
    #[serde(default)]
    pub network: NetworkSection,
    /// Resources of each job.
    #[serde(default)]
    pub limits: Limits,
    /// What this node agrees to run, and for whom.
    #[serde(default)]
    pub policy: Policy,
    /// Data sources: a label and the host path mounted read-only at `/data/<label>`.
    #[serde(default)]
    pub data: BTreeMap<String, PathBuf>,
    /// Trust in other organizations' keys.
    #[serde(default)]
    pub peers: PeersSection,
    /// The monitor of the server's transparency log.
    #[serde(default)]
    pub transparency: TransparencySection,
    /// Prometheus metrics (off unless `listen` is set).
    #[serde(default)]
    pub metrics: fedq_service::metrics::MetricsSection,
}

/// Who this node is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// A name unique on this host: it names the node's Docker network, containers and volumes.
    pub name: String,
    /// The organization the node works for.
    pub organization: OrgId,
    /// The organization's private key file (`fedq keys generate`), mode 0600.
    pub key_file: PathBuf,
    /// Key files the organization used before `key_file`, newest first: kept after a rotation
    /// so that envelopes sealed to an earlier key while partners learn the new one still open.
    #[serde(default)]
    pub previous_key_files: Vec<PathBuf>,
    /// Where the node keeps what must survive a restart: replay guard, job results, run inboxes,
    /// and the host side of run volumes.
    pub state_dir: PathBuf,
    /// Seconds between heartbeats to the server.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
    /// Seconds running jobs get to finish when the node is asked to stop.
    #[serde(default = "default_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// Seconds a run volume is kept after its last job if no run-finished message arrives.
    #[serde(default = "default_run_ttl_secs")]
    pub run_ttl_secs: u64,
}

fn default_heartbeat_secs() -> u64 {
    3
}
fn default_grace_secs() -> u64 {
    30
}
fn default_run_ttl_secs() -> u64 {
    24 * 3600
}

/// The central server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Base URL, e.g. `https://fedq.example.org` (the API is under `/api/v1`).
    pub url: String,
    /// The node's API key from registration (`fedq_n_…`).
    pub api_key: SecretString,
    /// TLS to the server: the CA that signs its certificate, plain text beyond loopback.
    #[serde(default)]
    pub tls: ClientTls,
}

/// RabbitMQ.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    /// `amqps://user:password@host:5671/vhost` with the node's own broker user.
    pub url: SecretString,
    /// TLS to the broker: CA file, client certificate (mutual TLS), plain text beyond loopback.
    #[serde(default)]
    pub tls: ClientTls,
    /// The node's broker user name (stamped as the validated user id of every publish).
    pub username: String,
    /// Further `host:port` addresses of the same RabbitMQ cluster, tried in turn when the host
    /// of `url` does not answer.
    #[serde(default, deserialize_with = "crate::settings::comma_list")]
    pub cluster_hosts: Vec<String>,
    /// The server's broker user: control messages are accepted from it only.
    pub server_user: String,
}

/// The algorithm network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// Subnet of the node's internal Docker network (CIDR); Docker picks one if unset.
    pub subnet: Option<String>,
    /// Port of the node-local endpoint on the network's gateway address.
    pub endpoint_port: u16,
    /// Manage firewall rules so that containers reach only the endpoint. Turn off only where
    /// another firewall already does this.
    pub firewall: bool,
    /// How often the firewall rules are checked; while they are not in place no container
    /// starts, and they are installed again.
    pub firewall_check_secs: u64,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self { subnet: None, endpoint_port: 8650, firewall: true, firewall_check_secs: 5 }
    }
}

/// Resources of each job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Jobs run at once (also the broker prefetch).
    pub concurrent_jobs: u16,
    /// Memory per container, in MiB (no swap beyond it).
    pub memory_mib: u64,
    /// CPUs per container.
    pub cpus: f64,
    /// Processes and threads per container.
    pub pids: i64,
    /// Wall-clock limit per job, in seconds.
    pub timeout_secs: u64,
    /// Size of the writable `/tmp` tmpfs, in MiB.
    pub tmpfs_mib: u64,
    /// Largest result an algorithm may post, in bytes.
    pub max_result_bytes: usize,
    /// User (`uid:gid`) containers run as.
    pub user: String,
    /// Run messages kept waiting in one run's inbox at most; past it (or `run_inbox_mib`) a
    /// message is refused, so that a partner cannot fill this node's disk through a run.
    pub run_inbox_messages: usize,
    /// Bytes of waiting run messages kept for one run at most, in MiB.
    pub run_inbox_mib: u64,
    /// The size of each run's volume, in MiB: a disk of its own, allocated in full under the
    /// state directory when the run's first job here starts, so that a container that fills
    /// it fills nothing else (at least 16).
    pub run_volume_mib: u64,
    /// Run disks kept at once: a run's disk lives until the run ends or its `run_ttl_secs`
    /// passes, so without a bound, runs whose jobs never finish (a partner's, say) would fill
    /// the state directory one disk at a time. A run past it is refused before its container
    /// starts.
    pub max_run_disks: usize,
    /// MiB the state directory's file system keeps free after a run's disk is allocated, for
    /// the node's own records (jobs, messages, results); a run that would leave less is refused.
    pub state_reserve_mib: u64,
    /// Inputs one subtask request may carry, summed over its organizations, in MiB: the node
    /// seals a copy for each, so that without a bound one request of a large input to many
    /// organizations would have it seal gigabytes.
    pub subtask_input_mib: u64,
    /// Inputs all the subtasks of one job may carry together, in MiB.
    pub job_subtask_mib: u64,
    /// Requests one job may have in flight at the endpoint at once (subtask creations held
    /// through a server outage and messages waiting for the broker included); more are
    /// answered 429.
    pub job_concurrent_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            concurrent_jobs: 4,
            memory_mib: 512,
            cpus: 1.0,
            pids: 128,
            timeout_secs: 3600,
            tmpfs_mib: 64,
            max_result_bytes: 8 * 1024 * 1024,
            user: "65534:65534".into(),
            run_inbox_messages: 10_000,
            run_inbox_mib: 256,
            run_volume_mib: 1024,
            max_run_disks: 16,
            state_reserve_mib: 1024,
            subtask_input_mib: 64,
            job_subtask_mib: 256,
            job_concurrent_requests: 8,
        }
    }
}

impl Limits {
    /// The wall-clock limit.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// The numeric user and group containers run as.
    pub fn uid_gid(&self) -> Option<(u32, u32)> {
        let (u, g) = self.user.split_once(':')?;
        Some((u.parse().ok()?, g.parse().ok()?))
    }
}

/// What the node agrees to run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Images allowed, by name pattern and digest pattern. Empty: nothing runs.
    pub images: Vec<ImageRule>,
    /// Organizations whose tasks may run here (`*` for every member of a collaboration).
    pub requesters: Vec<String>,
    /// Send the container log to the requester when the task asks for it.
    pub share_logs: bool,
    /// The fewest distinct organizations a task of another organization must list for this node
    /// to take part: an aggregate over two parties tells each the other's contribution (a ring
    /// of two in Secure Sum hands the requester this registry's count). Tasks of this
    /// organization's own researchers and subtasks of its own algorithms are not counted.
    pub min_organizations: usize,
    /// The fewest of this node's rows a count computed here may rest on: the rows an analysis
    /// uses, a cell of a table. Given to every container as `FEDQ_MIN_CELL_COUNT`; the shipped
    /// analyses refuse below it (`too_few_rows`, `small_cell`), even though only secure sums leave.
    pub min_cell_count: usize,
}

/// Three, as DataSHIELD's `nfilter.tab`: a cell of one or two patients is a disclosure.
pub const DEFAULT_MIN_CELL_COUNT: usize = 3;

/// Three: the smallest federation in which a sum hides each party's part from the others.
pub const DEFAULT_MIN_ORGANIZATIONS: usize = 3;

impl Default for Policy {
    fn default() -> Self {
        Self {
            images: Vec::new(),
            requesters: Vec::new(),
            share_logs: false,
            min_organizations: DEFAULT_MIN_ORGANIZATIONS,
            min_cell_count: DEFAULT_MIN_CELL_COUNT,
        }
    }
}

/// One allowed image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRule {
    /// Repository name, `*` matching any run of characters (`fedq/*`).
    pub name: String,
    /// Image id or repository digest (`sha256:…`), `*` allowed; `*` alone accepts any digest
    /// (logged as a warning at start: any image of that name, whoever built it, would run).
    #[serde(default = "any")]
    pub digest: String,
    /// The data sources (labels of `[data]`) mounted into this image's containers; none by
    /// default. A container sees only what the rule it ran under grants.
    #[serde(default)]
    pub data: Vec<String>,
    /// Organizations whose tasks may run this image; empty: those of `[policy] requesters`.
    #[serde(default)]
    pub requesters: Vec<String>,
}

fn any() -> String {
    "*".into()
}

/// Trust in other organizations' keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeersSection {
    /// Key fingerprints (`SHA256:…`) per organization, compared out of band: trusted from the
    /// start. A key the server hands out is used only if it is trusted this way, reached from a
    /// trusted key by a signed rotation, or (with `trust_on_first_use`) the organization's first.
    pub pins: BTreeMap<OrgId, Vec<String>>,
    /// Trust an organization's first key without a pin, logging its fingerprint. Later changes
    /// of key still need a signed rotation or a pin.
    pub trust_on_first_use: bool,
    /// Seconds a collaboration's keys are used before they are fetched again when sealing: how
    /// soon a partner's signed rotation is followed.
    pub refresh_secs: u64,
    /// Seconds a partner's key still verifies after this node followed its rotation to a new
    /// one (envelopes sealed before the rotation, still in a queue). Counted on this node's
    /// clock: a thief of the old key cannot stretch it by back-dating.
    pub retired_key_grace_secs: u64,
}

/// The monitor of the server's transparency log (docs/protocol.md, "The transparency log").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransparencySection {
    /// The log's public key (Ed25519, 64 hex digits), as `fedq node enroll` wrote it; when
    /// absent, the key the server shows at the first check is pinned in the state directory.
    pub log_key: Option<String>,
    /// Seconds between two checks of the log.
    pub check_secs: u64,
    /// Seconds within which an envelope delivered to this node must be in the log.
    pub inclusion_delay_secs: u64,
    /// The organization's other nodes: their registration is not an alarm.
    pub nodes: Vec<crate::ids::NodeId>,
    /// When set, the collaborations this organization agreed to join: a membership in any
    /// other is an alarm. When absent, memberships are logged, not alarmed.
    pub collaborations: Option<Vec<crate::ids::CollaborationId>>,
    /// The oldest a newest signed head may be (by its own timestamp) before it is an alarm:
    /// the server signs its head again every minute, so an older one means this node is shown
    /// a frozen view.
    pub max_head_age_secs: u64,
    /// Checks in a row in which the server does not answer for a consistency proof between a
    /// partner's head and this node's (an error, a timeout, a malformed proof) before the
    /// withheld proof is an alarm. The partner's head is kept as evidence meanwhile.
    pub proof_tries: u32,
}

impl Default for TransparencySection {
    fn default() -> Self {
        Self {
            log_key: None,
            check_secs: 10,
            inclusion_delay_secs: 60,
            nodes: Vec::new(),
            collaborations: None,
            max_head_age_secs: 600,
            proof_tries: 5,
        }
    }
}

impl Default for PeersSection {
    fn default() -> Self {
        Self {
            pins: BTreeMap::new(),
            trust_on_first_use: false,
            refresh_secs: 60,
            retired_key_grace_secs: crate::keys::RETIRED_KEY_GRACE.as_secs(),
        }
    }
}

/// Settings that could not be read or do not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read.
    #[error("invalid node configuration: {0}")]
    Read(#[from] config::ConfigError),
    /// A value is out of range.
    #[error("invalid node configuration: {0}")]
    Invalid(String),
}

impl NodeConfig {
    /// Reads `path` (if given), then `FEDQ_…` environment variables, and checks the values.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Self = crate::settings::load(path)?;
        config.validate()?;
        Ok(config)
    }

    /// What `text` would give as the settings file: how an edit is checked before it is written.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = crate::settings::parse(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that deserialize but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        let name = &self.node.name;
        if name.is_empty()
            || name.len() > 40
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return invalid("node.name is 1 to 40 letters, digits, '-' or '_'");
        }
        if self.limits.concurrent_jobs == 0 {
            return invalid("limits.concurrent_jobs must be at least 1");
        }
        if self.limits.memory_mib < 6 {
            return invalid("limits.memory_mib must be at least 6 (Docker's minimum)");
        }
        if !(self.limits.cpus > 0.0 && self.limits.cpus <= 1024.0) {
            return invalid("limits.cpus must be above 0");
        }
        if self.limits.job_concurrent_requests == 0 {
            return invalid("limits.job_concurrent_requests must be at least 1");
        }
        if self.limits.pids < 1 {
            return invalid("limits.pids must be at least 1");
        }
        if self.limits.uid_gid().is_none_or(|(u, _)| u == 0) {
            return invalid("limits.user must be a numeric uid:gid other than root");
        }
        if self.limits.run_volume_mib < 16 {
            return invalid(
                "limits.run_volume_mib must be at least 16 (an ext4 file system needs a few MiB)",
            );
        }
        if self.limits.max_run_disks == 0 {
            return invalid("limits.max_run_disks must be at least 1: every run's jobs need its disk");
        }
        if self.policy.min_organizations == 0 {
            return invalid("policy.min_organizations must be at least 1");
        }
        if self.policy.min_cell_count == 0 {
            return invalid("policy.min_cell_count must be at least 1 (3 by default)");
        }
        if self.node.heartbeat_secs == 0 || self.node.heartbeat_secs > 5 {
            // The server shows a node offline 10 s after its last heartbeat.
            return invalid("node.heartbeat_secs must be 1 to 5");
        }
        // Docker mounts the run volumes (under the state directory) and the data sources only by
        // absolute path, and the service does not run where a relative one was typed.
        if !self.node.state_dir.is_absolute() {
            return invalid("node.state_dir must be an absolute path (Docker mounts run volumes from it)");
        }
        if !self.node.key_file.is_absolute() {
            return invalid("node.key_file must be an absolute path (the service runs from /)");
        }
        if let Some((label, _)) = self.data.iter().find(|(_, path)| !path.is_absolute()) {
            return Err(ConfigError::Invalid(format!(
                "data.{label} must be an absolute path (Docker mounts data sources only by absolute path)"
            )));
        }
        for label in self.data.keys() {
            if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return invalid("data labels are letters, digits, '-' or '_'");
            }
        }
        for rule in &self.policy.images {
            if let Some(unknown) = rule.data.iter().find(|label| !self.data.contains_key(*label)) {
                return Err(ConfigError::Invalid(format!(
                    "policy.images {:?} grants data source {unknown:?}, which [data] does not define",
                    rule.name
                )));
            }
        }
        let requesters = self.policy.images.iter().flat_map(|r| &r.requesters).chain(&self.policy.requesters);
        if let Some(bad) = requesters.filter(|r| *r != "*").find(|r| r.parse::<OrgId>().is_err()) {
            return Err(ConfigError::Invalid(format!(
                "policy requester {bad:?} is not an organization id (or \"*\")"
            )));
        }
        if let Some(subnet) = &self.network.subnet {
            let ok = subnet.split_once('/').is_some_and(|(ip, bits)| {
                ip.parse::<Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 29)
            });
            if !ok {
                return invalid("network.subnet must be an IPv4 CIDR of at most /29");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn example() -> &'static str {
        r#"
        [node]
        name = "registry-a-1"
        organization = "6c5b1b1e-6f39-4d53-9f51-8f0a8a43a1aa"
        key_file = "/etc/fedq/org.key"
        state_dir = "/var/lib/fedq/node"

        [server]
        url = "http://127.0.0.1:8080"
        api_key = "fedq_n_secret"

        [broker]
        url = "amqp://node:pw@127.0.0.1:5672/fedq"
        username = "node"
        server_user = "fedq-server"

        [limits]
        memory_mib = 256

        [policy]
        requesters = ["*"]
        [[policy.images]]
        name = "fedq/*"

        [data]
        patients = "/srv/patients.csv"
        "#
    }

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        let settings = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?;
        let config: NodeConfig = settings.try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn an_example_parses_with_defaults() {
        let config = parse(example()).unwrap();
        assert_eq!(config.limits.memory_mib, 256);
        assert_eq!(config.limits.concurrent_jobs, 4);
        assert_eq!(config.network.endpoint_port, 8650);
        assert_eq!(config.policy.images[0].digest, "*");
        assert!(!format!("{config:?}").contains("fedq_n_secret"), "secrets stay out of Debug");
    }

    #[test]
    fn nonsense_is_refused_with_the_setting_named() {
        let root = example().replace("[limits]", "[limits]\nuser = \"0:0\"");
        let err = parse(&root).unwrap_err().to_string();
        assert!(err.contains("limits.user"), "{err}");
        let name = example().replace("registry-a-1", "bad name");
        assert!(parse(&name).unwrap_err().to_string().contains("node.name"));
        let unknown = example().replace("[limits]", "[limits]\nmemroy_mib = 3");
        assert!(parse(&unknown).is_err());
        let data = example().replace("name = \"fedq/*\"", "name = \"fedq/*\"\ndata = [\"patiens\"]");
        let err = parse(&data).unwrap_err().to_string();
        assert!(err.contains("\"patiens\", which [data] does not define"), "{err}");
        let requester = example().replace("requesters = [\"*\"]", "requesters = [\"registry-b\"]");
        let err = parse(&requester).unwrap_err().to_string();
        assert!(err.contains("\"registry-b\" is not an organization id"), "{err}");
        let none = example().replace("requesters = [\"*\"]", "requesters = [\"*\"]\nmin_organizations = 0");
        assert!(parse(&none).unwrap_err().to_string().contains("policy.min_organizations"));
        let none = example().replace("requesters = [\"*\"]", "requesters = [\"*\"]\nmin_cell_count = 0");
        assert!(parse(&none).unwrap_err().to_string().contains("policy.min_cell_count"));
    }

    #[test]
    fn relative_paths_are_refused_with_the_setting_named() {
        for (from, to, setting) in [
            ("\"/var/lib/fedq/node\"", "\"state\"", "node.state_dir"),
            ("\"/etc/fedq/org.key\"", "\"org.key\"", "node.key_file"),
            ("\"/srv/patients.csv\"", "\"patients.csv\"", "data.patients"),
        ] {
            let err = parse(&example().replace(from, to)).unwrap_err().to_string();
            assert!(err.contains(setting) && err.contains("absolute"), "{err}");
        }
    }
}
