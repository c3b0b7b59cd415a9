//! Settings of servers and nodes for fedq's tests, benchmarks and demo: what each of them
//! assembled by hand before, written once. A server on loopback port 0 with its database and
//! virtual host; a node from its registration's answer (`POST /nodes`), with the short intervals
//! tests want. Callers set what is theirs (a node's policy, data, limits, peers) on the result.

use std::path::Path;

use fedq_core::contract::NodeRegistration;
use fedq_core::ids::OrgId;
use fedq_node::config::{
    BrokerSection, Limits, NetworkSection, NodeConfig, NodeSection, PeersSection, Policy, ServerSection,
};
use fedq_server::config::{
    AuthConfig, BootstrapConfig, BrokerConfig, DatabaseConfig, HttpConfig, RouterConfig, ServerConfig,
    TransparencyConfig,
};
use fedq_tls::ClientTls;
use secrecy::SecretString;

/// Where a server finds its database and broker.
#[derive(Debug, Clone)]
pub struct Services {
    /// The database's URL (with `?sslmode=…` if it is to use TLS).
    pub database_url: String,
    /// The broker's URL for the server's own user, with the virtual host.
    pub broker_url: String,
    /// The virtual host.
    pub vhost: String,
    /// RabbitMQ's management API and its administrator.
    pub management_url: String,
    /// The management API's user.
    pub management_user: String,
    /// Its password.
    pub management_password: String,
    /// TLS of the database and broker connections.
    pub tls: ClientTls,
}

/// A server's settings: listening on loopback port 0 (`http` gives TLS, if any), reaching
/// `services`, with the root administrator `root` bootstrapped with `root_password` and its
/// transparency log key in `log_key_file`.
pub fn server_config(
    services: &Services,
    http: HttpConfig,
    root_password: &str,
    log_key_file: &Path,
) -> ServerConfig {
    ServerConfig {
        http: HttpConfig { listen: "127.0.0.1:0".parse().expect("an address"), ..http },
        database: DatabaseConfig {
            url: SecretString::from(services.database_url.clone()),
            pool_size: 16,
            tls: services.tls.clone(),
        },
        broker: BrokerConfig {
            url: SecretString::from(services.broker_url.clone()),
            vhost: services.vhost.clone(),
            management_url: services.management_url.clone(),
            management_user: services.management_user.clone(),
            management_password: SecretString::from(services.management_password.clone()),
            cluster_hosts: Vec::new(),
            node_url: None,
            tls: services.tls.clone(),
        },
        router: RouterConfig::default(),
        auth: AuthConfig::default(),
        retention: Default::default(),
        transparency: TransparencyConfig { key_file: log_key_file.to_owned(), ..Default::default() },
        bootstrap: Some(BootstrapConfig {
            root_username: "root".into(),
            root_password: Some(SecretString::from(root_password.to_owned())),
        }),
        metrics: Default::default(),
    }
}

/// How a node reaches the server and the broker.
#[derive(Debug, Clone)]
pub struct Reach {
    /// The server's base URL.
    pub server_url: String,
    /// TLS towards the server.
    pub server_tls: ClientTls,
    /// The broker's `scheme://host:port`, to which the node's user and virtual host are added.
    pub broker: String,
    /// The broker's virtual host.
    pub vhost: String,
    /// TLS towards the broker.
    pub broker_tls: ClientTls,
}

/// A node's settings from its registration (`POST /nodes`'s answer, JSON) for organization
/// `org`, named `name`, with its key in `key_file` and its state under `dir/state`: heartbeats
/// every second, 5 s of grace at shutdown, no image allowed (the caller sets the policy, data
/// sources, limits and peers it wants).
pub fn node_config(
    name: &str,
    org: OrgId,
    registration: &serde_json::Value,
    key_file: &Path,
    dir: &Path,
    reach: &Reach,
) -> NodeConfig {
    let registration: NodeRegistration =
        serde_json::from_value(registration.clone()).expect("a node registration as the API answers it");
    let broker = &registration.broker;
    let (scheme, host) = reach.broker.split_once("://").expect("the broker as scheme://host:port");
    NodeConfig {
        node: NodeSection {
            name: name.to_owned(),
            organization: org,
            key_file: key_file.to_owned(),
            previous_key_files: Vec::new(),
            state_dir: dir.join("state"),
            heartbeat_secs: 1,
            shutdown_grace_secs: 5,
            run_ttl_secs: 3600,
        },
        server: ServerSection {
            url: reach.server_url.clone(),
            api_key: SecretString::from(registration.api_key.expose().to_owned()),
            tls: reach.server_tls.clone(),
        },
        broker: BrokerSection {
            url: SecretString::from(format!(
                "{scheme}://{}:{}@{host}/{}",
                broker.username,
                broker.password.expose(),
                reach.vhost
            )),
            username: broker.username.clone(),
            tls: reach.broker_tls.clone(),
            cluster_hosts: Vec::new(),
            server_user: broker.server_user.clone(),
        },
        network: NetworkSection::default(),
        limits: Limits::default(),
        policy: Policy::default(),
        data: Default::default(),
        peers: PeersSection::default(),
        transparency: Default::default(),
        metrics: Default::default(),
    }
}
