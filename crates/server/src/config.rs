//! Server settings: a TOML file, then `FEDQ_…` environment variables (`FEDQ_DATABASE__URL`
//! overrides `[database] url`). Secrets are `SecretString`s, so they never reach a log through
//! `Debug`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::tls::ClientTls;

/// Everything the server needs to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The HTTP listener.
    #[serde(default)]
    pub http: HttpConfig,
    /// PostgreSQL.
    pub database: DatabaseConfig,
    /// RabbitMQ.
    pub broker: BrokerConfig,
    /// The blind router.
    #[serde(default)]
    pub router: RouterConfig,
    /// Logins.
    #[serde(default)]
    pub auth: AuthConfig,
    /// How long what grows with traffic is kept.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// The transparency log.
    #[serde(default)]
    pub transparency: TransparencyConfig,
    /// A root administrator created at start-up if none exists.
    #[serde(default)]
    pub bootstrap: Option<BootstrapConfig>,
    /// Prometheus metrics (off unless `listen` is set).
    #[serde(default)]
    pub metrics: fedq_service::metrics::MetricsSection,
}

/// The HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address and port to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Largest task body accepted, in bytes (task creation carries sealed inputs); the bodies of
    /// other routes are at most 1 MiB.
    pub max_body_bytes: u64,
    /// MiB of task bodies in flight at once, half of it per organization (`app/bodies.rs`).
    pub body_budget_mib: u32,
    /// Mark the dashboard's cookies `Secure`: browsers then send them over HTTPS only (and to
    /// `localhost`). Turn off only behind a trusted plain-HTTP hop.
    pub secure_cookies: bool,
    /// PEM certificate chain served over HTTPS (with `tls_key`). Reloaded on SIGHUP and when
    /// the file changes.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address that is not loopback: only behind a reverse proxy that
    /// terminates TLS on the same trusted network.
    pub allow_plaintext: bool,
    /// Seconds a client has to finish the TLS handshake, and then each request's headers,
    /// counted again while a kept-alive connection waits for its next request: a client that
    /// trickles bytes, or opens connections and sends nothing, is dropped after it.
    pub header_read_timeout_secs: u64,
    /// HTTPS connections open at once; further clients wait in the kernel's backlog until one
    /// closes, so that slow clients cannot take every file descriptor of the process.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 * 1024 * 1024,
            body_budget_mib: 256,
            secure_cookies: true,
            tls_cert: None,
            tls_key: None,
            allow_plaintext: false,
            header_read_timeout_secs: 10,
            max_connections: 1024,
        }
    }
}

/// PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// A `postgres://user:password@host:port/database` URL; add `?sslmode=require` for TLS
    /// (verified against `tls.ca_file` or the system's roots, and the host name).
    pub url: SecretString,
    /// TLS: the CA that signs the database's certificate, a client certificate, plain text.
    #[serde(default)]
    pub tls: ClientTls,
    /// Connections in the pool.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

fn default_pool_size() -> usize {
    32
}

/// RabbitMQ.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// AMQP URL of the server's own broker user, with the virtual host:
    /// `amqps://user:password@host:5671/fedq`.
    pub url: SecretString,
    /// TLS to the broker and its management API: CA file, client certificate (mutual TLS),
    /// plain text beyond loopback.
    #[serde(default)]
    pub tls: ClientTls,
    /// The virtual host, as in `url`.
    pub vhost: String,
    /// Base URL of the management HTTP API, used to create and revoke node users.
    pub management_url: String,
    /// Management API user (administrator tag).
    pub management_user: String,
    /// Its password.
    pub management_password: SecretString,
    /// Further `host:port` addresses of the same RabbitMQ cluster, tried in turn when the host
    /// of `url` does not answer (same credentials and virtual host).
    #[serde(default, deserialize_with = "crate::settings::comma_list")]
    pub cluster_hosts: Vec<String>,
    /// The AMQP URL nodes are told to connect to (scheme, host and port only; they get their
    /// own credentials). Defaults to the scheme, host and port of `url`.
    #[serde(default)]
    pub node_url: Option<String>,
}

/// The blind router.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Envelopes routed at once by one server (and the consumer's prefetch).
    pub concurrency: u16,
    /// Largest envelope routed, in bytes.
    pub max_envelope_bytes: usize,
    /// Allowed clock difference when checking expiry, in seconds.
    pub clock_skew_secs: u64,
    /// Most dead letters the broker keeps (the oldest go first): a RabbitMQ policy the server
    /// sets on `fedq.dead-letters`, so that no publisher can fill the broker's disk with refusals.
    pub dead_letter_max_messages: u64,
    /// Most bytes of dead letters the broker keeps (the oldest go first).
    pub dead_letter_max_bytes: u64,
    /// Most MiB each organization's queue, and the ingress queue, hold: a RabbitMQ policy the
    /// server sets (`fedq-queues`, overflow `reject-publish`), so that no publisher, and no
    /// node that stops consuming, can fill the broker's disk.
    pub queue_max_mib: u64,
    /// Envelopes a second one broker user may publish, beyond its burst (`router/rates.rs`).
    pub publisher_envelopes_per_sec: u32,
    /// MiB a second one broker user may publish, beyond its burst.
    pub publisher_mib_per_sec: u32,
    /// Seconds of each rate a publisher may spend at once.
    pub publisher_burst_secs: u32,
    /// Refused envelopes recorded (database row and dead letter) per publisher and hour; past
    /// it they are only counted.
    pub dead_letters_per_publisher_hour: u32,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            max_envelope_bytes: 16 * 1024 * 1024,
            clock_skew_secs: 120,
            dead_letter_max_messages: 100_000,
            dead_letter_max_bytes: 256 * 1024 * 1024,
            queue_max_mib: 1024,
            publisher_envelopes_per_sec: 500,
            publisher_mib_per_sec: 32,
            publisher_burst_secs: 10,
            dead_letters_per_publisher_hour: 600,
        }
    }
}

impl RouterConfig {
    /// The clock skew as a duration.
    pub fn clock_skew(&self) -> Duration {
        Duration::from_secs(self.clock_skew_secs)
    }
}

/// How long the server keeps what grows with traffic. Expired login sessions are removed at
/// every round whatever the settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days a routing-log row is kept. At least [`RetentionConfig::MIN_ROUTING_LOG_DAYS`]: the
    /// row is what lets the router drop an envelope that comes again, and an envelope may be
    /// routed for up to 31 days after it was sealed.
    pub routing_log_days: u32,
    /// Days a sealed result is kept for the researcher's organization after it arrived.
    pub results_days: u32,
    /// Days the record of a dead letter is kept.
    pub dead_letters_days: u32,
    /// Seconds between two rounds of the retention job (the first runs at start).
    pub interval_secs: u64,
    /// Rows removed per statement, so that no statement holds locks for long and routing goes
    /// on beside it.
    pub batch_rows: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            routing_log_days: 90,
            results_days: 30,
            dead_letters_days: 30,
            interval_secs: 3600,
            batch_rows: 5000,
        }
    }
}

impl RetentionConfig {
    /// The shortest routing-log retention: the longest envelope lifetime (31 days) and a day
    /// for clock skew.
    pub const MIN_ROUTING_LOG_DAYS: u32 = 32;

    /// Refuses settings that would let an envelope be routed twice, or that say nothing.
    pub fn validate(&self) -> Result<(), String> {
        if self.routing_log_days < Self::MIN_ROUTING_LOG_DAYS {
            return Err(format!(
                "retention.routing_log_days is {}; it must be at least {}, because an envelope may be routed \
                 up to 31 days after it was sealed and the routing log is what drops its second copy",
                self.routing_log_days,
                Self::MIN_ROUTING_LOG_DAYS
            ));
        }
        if self.interval_secs == 0 || self.batch_rows == 0 {
            return Err("retention.interval_secs and retention.batch_rows must be at least 1".into());
        }
        Ok(())
    }
}

/// The transparency log (docs/protocol.md, "The transparency log").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransparencyConfig {
    /// The file of the log's signing key (Ed25519, mode 0600), created at the first start if
    /// absent. Every replica of one server must read the same key: members' monitors take a
    /// head signed by another key for a forgery.
    pub key_file: PathBuf,
    /// Milliseconds between two steps of the sequencer, which gives queued leaves their place in
    /// the tree and signs the new head: the longest a leaf waits when traffic is light.
    pub sequence_interval_ms: u64,
    /// Whether routed envelopes are logged. Off only to measure what the log costs
    /// (`benches/router.rs`): every node then reports `envelope_not_logged`.
    pub log_envelopes: bool,
    /// Seconds after which the head of a tree that did not grow is signed again with the time
    /// of now: monitors refuse heads older than their `max_head_age_secs`, so that a server
    /// cannot freeze an organization's view on an old head while the log grows for others.
    pub head_refresh_secs: u64,
}

impl Default for TransparencyConfig {
    fn default() -> Self {
        Self {
            key_file: PathBuf::from("/var/lib/fedq/transparency.key"),
            sequence_interval_ms: 500,
            log_envelopes: true,
            head_refresh_secs: 60,
        }
    }
}

impl TransparencyConfig {
    /// The sequencer's interval as a duration (at least a millisecond).
    pub fn sequence_interval(&self) -> Duration {
        Duration::from_millis(self.sequence_interval_ms.max(1))
    }

    /// How old the newest head may be before it is signed again (at least a second).
    pub fn head_refresh(&self) -> Duration {
        Duration::from_secs(self.head_refresh_secs.max(1))
    }
}

/// Logins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How long a login token is valid, in seconds.
    pub session_ttl_secs: u64,
    /// How many password checks (Argon2id, 19 MiB each) run at once.
    pub max_concurrent_hashes: usize,
    /// How long a login waits for its turn before it is answered `unavailable`.
    pub hash_queue_secs: u64,
    /// Failed logins for one user name from one address, within the window, after which that
    /// user is refused from that address.
    pub failures_per_user_and_address: u32,
    /// Failed logins for one user name from addresses it has not logged in from lately, within
    /// the window, after which it is refused from every such address (not from its own).
    pub failures_per_user: u32,
    /// Failed logins from one address, within the window, after which it is refused.
    pub failures_per_address: u32,
    /// The window over which failed logins are counted, in seconds; also the first lock-out,
    /// which doubles each time the same limit is reached again.
    pub failure_window_secs: u64,
    /// The longest lock-out, in seconds.
    pub max_lockout_secs: u64,
    /// Reverse proxies whose `X-Forwarded-For` names the client's address (its last entry).
    /// Without them, every login behind a proxy counts against the proxy's address.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_ttl_secs: 12 * 3600,
            max_concurrent_hashes: 2,
            hash_queue_secs: 10,
            failures_per_user_and_address: 10,
            failures_per_user: 100,
            failures_per_address: 50,
            failure_window_secs: 300,
            max_lockout_secs: 3600,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A root administrator to create if there is none.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// User name.
    pub root_username: String,
    /// Password; set it through `FEDQ_BOOTSTRAP__ROOT_PASSWORD` rather than the file. Needed
    /// only while no root administrator exists: a restart after that needs none.
    #[serde(default)]
    pub root_password: Option<SecretString>,
}

/// Settings that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid server configuration: {0}")]
pub struct ConfigError(#[from] config::ConfigError);

impl ServerConfig {
    /// Reads `path` (if given), then `FEDQ_…` environment variables.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Ok(crate::settings::load(path)?)
    }
}

#[cfg(test)]
mod tests {
    use super::RetentionConfig;

    #[test]
    fn a_routing_log_kept_shorter_than_an_envelope_lives_is_refused() {
        assert!(RetentionConfig::default().validate().is_ok());
        let short = RetentionConfig { routing_log_days: 31, ..RetentionConfig::default() };
        let err = short.validate().unwrap_err();
        assert!(err.contains("retention.routing_log_days") && err.contains("at least 32"), "{err}");
        let minimum = RetentionConfig { routing_log_days: RetentionConfig::MIN_ROUTING_LOG_DAYS, ..short };
        assert!(minimum.validate().is_ok());
        assert!(RetentionConfig { batch_rows: 0, ..RetentionConfig::default() }.validate().is_err());
    }
}
