//! Start-up: the PostgreSQL pool (migrated under a lock), the broker link, the router, the
//! retention job, the transparency log's sequencer and the HTTP listener, wired together.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::broker::{self, endpoints::Endpoints, management::Management};
use crate::config::{self, ServerConfig};
use crate::error::ServerError;
use crate::link::{ServerLink, supervise_broker};
use crate::router::Router;
use crate::running::RunningServer;
use crate::{api, app, dashboard, db, metrics, retention, transparency};

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
