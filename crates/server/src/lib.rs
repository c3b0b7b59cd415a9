//! The central server: the REST API for people and nodes, and the blind router. It holds no
//! private key and has no code path that opens an envelope.
//!
//! `start` wires the parts: the PostgreSQL pool (migrated under a lock), the broker link (one
//! connection, re-established after a broker restart, carrying the router's consumer and the
//! API's publishing channel) and the HTTP listener. Several servers can run against the same
//! database and broker: they compete on the ingress queue.

pub mod https;

use fedq_broker as broker;
use fedq_core::{contract, ids, protocol, time};
use fedq_envelope::{envelope, keys};
use fedq_service::settings;
use fedq_tls as tls;

pub mod api;
pub mod app;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod http;
pub mod metrics;
mod retention;
pub mod router;
pub mod transparency;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::{endpoints::Endpoints, management::Management};
use crate::ids::OrgId;
use crate::protocol::control::Control;
use app::AppError;
use broker::supervisor::SessionEnd;
use config::ServerConfig;
use router::Router;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The database could not be prepared.
    #[error(transparent)]
    Database(#[from] db::DbError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// The broker as the application sees it: the current publishing channel (replaced after
/// reconnects by the supervisor) and what nodes are told about it.
#[derive(Clone)]
pub struct ServerLink {
    link: broker::Link,
    inner: Arc<LinkFacts>,
}

struct LinkFacts {
    server_user: String,
    node_url: String,
}

impl ServerLink {
    fn new(server_user: String, node_url: String) -> Self {
        Self { link: broker::Link::default(), inner: Arc::new(LinkFacts { server_user, node_url }) }
    }

    /// The current channel (in confirm mode), or `unavailable` while the broker is down.
    pub fn channel(&self) -> Result<broker::PublishChannel, AppError> {
        self.link.channel().map_err(|_| AppError::unavailable("the broker is unavailable; retry later"))
    }

    /// Whether a channel is open.
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// Declares an organization's queue.
    pub async fn declare_org_queue(&self, org: OrgId) -> Result<(), AppError> {
        let channel = self.channel()?;
        broker::declare_org_queue(channel.amqp(), org).await.map_err(|e| {
            tracing::warn!(error = %e, %org, "could not declare an organization queue");
            AppError::unavailable("the broker is unavailable; retry later")
        })
    }

    /// Publishes a control message to an organization's queue and waits for the confirm.
    pub async fn publish_control(&self, org: OrgId, control: &Control) -> Result<(), AppError> {
        let channel = self.channel()?;
        broker::publish_control(&channel, &self.inner.server_user, org, control).await.map_err(|e| {
            tracing::warn!(error = %e, %org, "a control message was not published");
            AppError::unavailable("the broker did not take the message")
        })
    }

    /// The AMQP URL nodes connect to (without credentials).
    pub fn node_url(&self) -> &str {
        &self.inner.node_url
    }

    /// The server's broker user: control messages come from it.
    pub fn server_user(&self) -> &str {
        &self.inner.server_user
    }
}

/// A started server.
pub struct RunningServer {
    /// The HTTP address it listens on.
    pub addr: SocketAddr,
    /// Where `/metrics` is served, if `[metrics] listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops taking requests and envelopes, finishes those in flight, closes connections.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler works on Unix");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
        }
        self.shutdown().await;
        tracing::info!("stopped");
    }
}

/// How the HTTP listener speaks: TLS with a reloading certificate, or plain text.
enum Listener {
    Tls(Arc<crate::https::ReloadingCert>),
    Plain,
}

/// Checks the listener's settings: HTTPS with both files, or plain HTTP on loopback (or where
/// explicitly allowed).
fn listener_mode(http: &config::HttpConfig) -> Result<Listener, ServerError> {
    match (&http.tls_cert, &http.tls_key) {
        (Some(cert), Some(key)) => crate::https::ReloadingCert::load(cert, key)
            .map(Listener::Tls)
            .map_err(|e| ServerError::Config(format!("http.tls_cert: {e}"))),
        (None, None) if http.listen.ip().is_loopback() || http.allow_plaintext => Ok(Listener::Plain),
        (None, None) => Err(ServerError::Config(format!(
            "http.listen = {} is reachable from the network, so the server serves HTTPS there: set \
             http.tls_cert and http.tls_key (see docs/operations.md, \"Certificates\"), listen on a \
             loopback address, or set http.allow_plaintext = true behind a reverse proxy that \
             terminates TLS",
            http.listen
        ))),
        _ => {
            Err(ServerError::Config("http.tls_cert and http.tls_key go together; set both or neither".into()))
        }
    }
}

/// Starts the server: migrations, broker link and router, HTTP(S).
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    crate::tls::install_crypto_provider();
    let endpoints = Arc::new(
        Endpoints::new(&config.broker.url, &config.broker.cluster_hosts, &config.broker.tls, "broker.url")
            .map_err(|e| ServerError::Config(format!("broker: {e}")))?,
    );
    let node_url = config.broker.node_url.clone().unwrap_or_else(|| endpoints.public_url());
    let link = ServerLink::new(endpoints.username().to_owned(), node_url);
    let mode = listener_mode(&config.http)?;
    if let Some(why) = config
        .bootstrap
        .as_ref()
        .and_then(|b| b.root_password.as_ref())
        .and_then(|p| app::logins::weak_bootstrap_password(secrecy::ExposeSecret::expose_secret(p)))
    {
        return Err(ServerError::Config(format!(
            "bootstrap.root_password (FEDQ_BOOTSTRAP__ROOT_PASSWORD) {why}: choose a password of at least 12 \
             characters that no example file ships"
        )));
    }
    config.retention.validate().map_err(ServerError::Config)?;
    let transparency = transparency::Log::open(&config.transparency.key_file).map_err(|e| {
        ServerError::Config(format!(
            "transparency.key_file: {e} (the file is created at the first start when its directory is writable)"
        ))
    })?;

    let pool = db::pool(&config.database.url, config.database.pool_size, &config.database.tls)?;
    migrate_when_ready(&pool).await?;

    let metrics = metrics::ServerMetrics::new();
    let router = Router::new(
        pool.clone(),
        &config.router,
        link.server_user().to_owned(),
        metrics.clone(),
        config.transparency.log_envelopes,
    );
    config
        .broker
        .tls
        .check_http_url("broker.management_url", &config.broker.management_url)
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let management_http = config
        .broker
        .tls
        .http_client("broker.tls", Duration::from_secs(10))
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let management = Management::with_client(
        &config.broker.management_url,
        &config.broker.management_user,
        config.broker.management_password.clone(),
        management_http,
    );
    // Every replica sets it, idempotently; without it the dead-letter queue is unbounded.
    let policy = broker::dead_letter_policy(
        config.router.dead_letter_max_messages,
        config.router.dead_letter_max_bytes,
    );
    let pattern = format!("^{}$", broker::DEAD_QUEUE.replace('.', "\\."));
    if let Err(e) =
        management.put_policy(&config.broker.vhost, broker::DEAD_LETTER_POLICY, &pattern, policy).await
    {
        tracing::warn!(error = %e, "could not bound the dead-letter queue (RabbitMQ policy {})", broker::DEAD_LETTER_POLICY);
    }
    let bytes = config.router.queue_max_mib.max(1).saturating_mul(1024 * 1024);
    if let Err(e) = management
        .put_policy(
            &config.broker.vhost,
            broker::QUEUE_POLICY,
            broker::QUEUE_POLICY_PATTERN,
            broker::queue_policy(bytes),
        )
        .await
    {
        tracing::warn!(error = %e, "could not bound the queues (RabbitMQ policy {})", broker::QUEUE_POLICY);
    }
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| ServerError::Listen { addr: config.http.listen, source })?;
    let addr =
        listener.local_addr().map_err(|source| ServerError::Listen { addr: config.http.listen, source })?;
    let state = Arc::new(app::AppState {
        db: pool.clone(),
        router: router.clone(),
        broker: link.clone(),
        management,
        broker_stats: app::BrokerStats::default(),
        throttle: app::throttle::LoginThrottle::new(&config.auth, app::logins::verify_password),
        bodies: app::bodies::BodyBudget::new(config.http.body_budget_mib),
        config: config.clone(),
        metrics: metrics.clone(),
        transparency: transparency.clone(),
    });
    if let Err(e) = app::logins::bootstrap_root(&state).await {
        tracing::warn!(error = %e.message, "could not create the bootstrap root administrator");
    }

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut metrics_addr = None;
    let mut tasks = Vec::new();
    if let Some(listen) = config.metrics.listen {
        let (bound, task) = fedq_service::metrics::serve(listen, metrics.registry(), shutdown_rx.clone())
            .await
            .map_err(|source| ServerError::Listen { addr: listen, source })?;
        metrics_addr = Some(bound);
        tasks.push(task);
        tasks.push(tokio::spawn(refresh_gauges(state.clone(), shutdown_rx.clone())));
    }
    tasks.push(tokio::spawn(retention::run(
        pool.clone(),
        config.retention.clone(),
        metrics.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(transparency::run(
        transparency,
        pool.clone(),
        config.transparency.sequence_interval(),
        config.transparency.head_refresh(),
        shutdown_rx.clone(),
    )));
    let broker_task =
        tokio::spawn(supervise_broker(config.clone(), endpoints, link, router, pool, shutdown_rx.clone()));
    tasks.push(broker_task);
    match mode {
        Listener::Tls(cert) => {
            let tls = cert.server_config().map_err(|e| ServerError::Config(e.to_string()))?;
            tasks.push(tokio::spawn(cert.watch(shutdown_rx.clone())));
            let limits = crate::https::ConnectionLimits {
                header_read_timeout: Duration::from_secs(config.http.header_read_timeout_secs.max(1)),
                max_connections: config.http.max_connections,
            };
            tasks.push(tokio::spawn(crate::https::serve(listener, tls, routes(state), limits, shutdown_rx)));
            tracing::info!(%addr, "server listening (HTTPS)");
        }
        Listener::Plain => {
            let mut http_shutdown = shutdown_rx.clone();
            tasks.push(tokio::spawn(
                warp::serve(routes(state))
                    .incoming(listener)
                    .graceful(async move {
                        let _ = http_shutdown.wait_for(|stop| *stop).await;
                    })
                    .run(),
            ));
            tracing::info!(%addr, "server listening (plain HTTP)");
        }
    }
    Ok(RunningServer { addr, metrics_addr, shutdown, tasks })
}

/// Keeps the gauges that are read rather than counted (queue depths, the database pool) a few
/// seconds fresh while metrics are served.
async fn refresh_gauges(state: app::State, mut shutdown: watch::Receiver<bool>) {
    loop {
        state.metrics.refresh(&state.db, &state.management, &state.config.broker.vhost).await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Every HTTP route: the dashboard under `/admin`, the API under `/api/v1`.
fn routes(
    state: app::State,
) -> impl warp::Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    use warp::Filter as _;
    dashboard::routes(state.clone()).or(api::routes(state))
}

/// Applies migrations, waiting up to a minute for the database to accept connections.
async fn migrate_when_ready(pool: &deadpool_postgres::Pool) -> Result<(), ServerError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match db::migrate(pool).await {
            Ok(()) => return Ok(()),
            Err(db::DbError::Pool(e)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "database not ready; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Keeps a broker connection up: declares the topology, hands the API a channel and runs the
/// router's consumer; after a failure, reconnects (`broker::supervisor`). Returns at shutdown.
async fn supervise_broker(
    config: ServerConfig,
    endpoints: Arc<Endpoints>,
    link: ServerLink,
    router: Router,
    db: deadpool_postgres::Pool,
    shutdown: watch::Receiver<bool>,
) {
    let session = || async {
        let (connection, address, api_channel) = match connect(&endpoints, &db).await {
            Ok(connected) => connected,
            Err(e) => return SessionEnd::lost(false, e),
        };
        let concurrency = config.router.concurrency;
        let consumer =
            match broker::Consumer::start(&connection, broker::INGRESS_QUEUE, "", concurrency).await {
                Ok(consumer) => consumer,
                Err(e) => {
                    let _ = connection.close(200, "reconnecting".into()).await;
                    return SessionEnd::lost(false, e);
                }
            };
        link.link.set(Some(api_channel));
        tracing::info!(%address, "connected to the broker");
        let result = router.consume(consumer, concurrency, shutdown.clone()).await;
        link.link.set(None);
        let _ = connection.close(200, "shutting down".into()).await;
        match result {
            Ok(()) if *shutdown.borrow() => SessionEnd::Stopped,
            Ok(()) => SessionEnd::lost(true, "the ingress consumer was cancelled"),
            Err(e) => SessionEnd::lost(true, e),
        }
    };
    broker::supervisor::supervise(shutdown.clone(), session).await;
}

/// Connects, declares the topology and every organization's queue, and opens the channel the
/// API publishes on.
async fn connect(
    endpoints: &Endpoints,
    db: &deadpool_postgres::Pool,
) -> Result<(broker::Connection, String, broker::PublishChannel), Box<dyn std::error::Error + Send + Sync>> {
    let (connection, address) = endpoints.connect().await?;
    let api_channel = broker::PublishChannel::open(&connection).await?;
    broker::declare_topology(api_channel.amqp()).await?;
    // Queues of organizations registered while the broker was unreachable.
    let client = db.get().await?;
    for org in db::directory::orgs(&**client, None).await? {
        broker::declare_org_queue(api_channel.amqp(), org.id).await?;
    }
    Ok((connection, address, api_channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_served_only_on_loopback_unless_allowed() {
        let http =
            |listen: &str| config::HttpConfig { listen: listen.parse().unwrap(), ..Default::default() };
        assert!(matches!(listener_mode(&http("127.0.0.1:8080")), Ok(Listener::Plain)));
        assert!(matches!(listener_mode(&http("[::1]:8080")), Ok(Listener::Plain)));
        let refused = listener_mode(&http("0.0.0.0:8080")).err().unwrap().to_string();
        assert!(refused.contains("http.tls_cert") && refused.contains("allow_plaintext"), "{refused}");
        let behind_proxy = config::HttpConfig { allow_plaintext: true, ..http("0.0.0.0:8080") };
        assert!(matches!(listener_mode(&behind_proxy), Ok(Listener::Plain)));
        let half = config::HttpConfig { tls_cert: Some("/x.pem".into()), ..http("0.0.0.0:443") };
        assert!(listener_mode(&half).err().unwrap().to_string().contains("go together"));
        let missing = config::HttpConfig {
            tls_cert: Some("/nonexistent/cert.pem".into()),
            tls_key: Some("/nonexistent/key.pem".into()),
            ..http("0.0.0.0:443")
        };
        assert!(listener_mode(&missing).err().unwrap().to_string().contains("/nonexistent/cert.pem"));
    }
}
