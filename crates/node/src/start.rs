//! Start-up: the node's key, state, trust store, server client, log monitor, Docker set-up and
//! endpoint, wired into one `Core`; then the background tasks it runs (the broker session,
//! heartbeats, garbage collection, the firewall's check, policy reloads, the log monitor).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use crate::active::Running;
use crate::config::NodeConfig;
use crate::containers::Sandbox;
use crate::envelope::OpenPolicy;
use crate::error::NodeError;
use crate::keys::{FirstUse, Identity, KeyId, KeyTrust, OrgKey};
use crate::link::IngressLink;
use crate::running::RunningNode;
use crate::server::{PeerKeys, ServerClient};
use crate::shared::{Core, Tally};
use crate::state::StateDir;
use crate::time::Timestamp;
use crate::{endpoint, gc, live_policy, log_monitor, metrics, worker};

/// Starts a node from the settings `file` gave (`live_policy::SettingsFile::load`), whose
/// `[policy]` and `[data]` it reloads on SIGHUP and when the file changes.
pub async fn start_from_file(
    config: NodeConfig,
    file: live_policy::SettingsFile,
) -> Result<RunningNode, NodeError> {
    start_with(config, Some(file)).await
}

/// Starts a node: loads its key and state, sets up Docker, the firewall and the endpoint,
/// then consumes its organization's queue (reconnecting by itself) and sends heartbeats. Its
/// policy stays as `config` has it.
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    start_with(config, None).await
}

async fn start_with(
    config: NodeConfig,
    source: Option<live_policy::SettingsFile>,
) -> Result<RunningNode, NodeError> {
    crate::tls::install_crypto_provider();
    let previous =
        config.node.previous_key_files.iter().map(|p| OrgKey::load(p)).collect::<Result<_, _>>()?;
    let me =
        Identity::with_previous(config.node.organization, OrgKey::load(&config.node.key_file)?, previous);
    let state = StateDir::open(&config.node.state_dir, Timestamp::now())
        .map_err(|source| NodeError::State { path: config.node.state_dir.clone(), source })?;
    let first_use = if config.peers.trust_on_first_use { FirstUse::Accept } else { FirstUse::Refuse };
    let trust = Arc::new(
        KeyTrust::open(&config.node.state_dir.join("trusted-keys.json"), first_use)?
            .with_retired_grace(Duration::from_secs(config.peers.retired_key_grace_secs)),
    );
    trust.trust_own(me.org(), me.current().public())?;
    // Keys trusted on first use or by rotation must be proven in the log, by the key enrollment
    // pinned (when settings name none, the trust store takes the server's at the first proof).
    if let Some(key) = config.transparency.log_key.as_deref() {
        let key = log_monitor::parse_key(key).ok_or_else(|| {
            NodeError::Server("transparency.log_key: 64 hex digits of an Ed25519 key".into())
        })?;
        trust.pin_log_key(key.to_bytes())?;
    }
    for (org, fingerprints) in &config.peers.pins {
        for fingerprint in fingerprints {
            trust.trust(*org, fingerprint.parse::<KeyId>()?)?;
        }
    }
    let server = ServerClient::new(
        &config.server.url,
        &config.server.tls,
        config.server.api_key.clone(),
        trust.clone(),
    )
    .map_err(|e| NodeError::Server(e.to_string()))?;
    let metrics = metrics::NodeMetrics::new();
    let own_keys = me.keys().map(|k| *k.id().as_bytes()).collect();
    let log = log_monitor::LogMonitor::open(
        me.org(),
        own_keys,
        config.transparency.clone(),
        &config.node.state_dir,
        metrics.clone(),
    )
    .map_err(|source| NodeError::State { path: config.node.state_dir.clone(), source })?;
    match server.whoami_node().await {
        Ok((_, actual)) if actual != me.org() => {
            return Err(NodeError::WrongOrganization { configured: me.org(), actual });
        }
        Ok((node, _)) => log.set_node(node),
        // The server may be down; the node still serves what the broker holds.
        Err(e) => tracing::warn!(error = %e, "could not check the API key with the server"),
    }
    let rules = Arc::new(live_policy::LivePolicy::new(&config, source));
    rules.current().warn_loose();
    let sandbox = Sandbox::setup(&config).await?;
    // Containers of a previous run of this node cannot reach it any more (their tokens died
    // with it); their jobs are redelivered and start afresh.
    for (name, _, _) in sandbox.containers().await? {
        sandbox.remove(&name).await;
    }

    let endpoints = crate::broker::endpoints::Endpoints::new(
        &config.broker.url,
        &config.broker.cluster_hosts,
        &config.broker.tls,
        "broker.url",
    )?;
    let (stop_tx, stop) = watch::channel(false);
    let (halt_tx, halt) = watch::channel(false);
    let core = Arc::new(Core {
        policy: OpenPolicy::default(),
        tally: Tally::default(),
        peers: PeerKeys::new(trust, Duration::from_secs(config.peers.refresh_secs)),
        link: IngressLink::new(config.broker.username.clone()),
        endpoints,
        running: Running {
            jobs: Mutex::default(),
            tokens: Mutex::default(),
            slots: Arc::new(Semaphore::new(usize::from(config.limits.concurrent_jobs))),
            ended_runs: Mutex::default(),
            timings: Mutex::default(),
            count: watch::channel(0).0,
        },
        arrivals: watch::channel(0).0,
        stop,
        halt,
        metrics,
        log,
        task_jobs: Mutex::default(),
        me,
        state,
        server,
        sandbox,
        config,
        rules,
    });

    let addr = std::net::SocketAddr::from((core.sandbox.gateway(), core.config.network.endpoint_port));
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| NodeError::Endpoint { addr, source })?;
    let mut tasks = Vec::new();
    // The endpoint serves running jobs until the grace period ends.
    let mut stop_http = core.halt.clone();
    tasks.push(tokio::spawn(
        warp::serve(endpoint::routes(core.clone()))
            .incoming(listener)
            .graceful(async move {
                let _ = stop_http.wait_for(|s| *s).await;
            })
            .run(),
    ));
    let mut metrics_addr = None;
    if let Some(listen) = core.config.metrics.listen {
        let (bound, task) = fedq_service::metrics::serve(listen, core.metrics.registry(), core.halt.clone())
            .await
            .map_err(|source| NodeError::Metrics { addr: listen, source })?;
        metrics_addr = Some(bound);
        tasks.push(task);
    }
    let consumer = tokio::spawn(worker::consume_forever(core.clone()));
    tasks.push(tokio::spawn(heartbeats(core.clone())));
    tasks.push(tokio::spawn(collect_garbage(core.clone())));
    tasks.push(tokio::spawn(watch_firewall(core.clone())));
    tasks.push(tokio::spawn(core.rules.clone().watch(core.stop.clone())));
    let monitor = core.clone();
    tasks
        .push(tokio::spawn(async move { monitor.log.run(monitor.server.api(), monitor.halt.clone()).await }));
    if let Some(interval) = sd_notify::watchdog_enabled() {
        tasks.push(tokio::spawn(async move {
            loop {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                tokio::time::sleep(interval / 2).await;
            }
        }));
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(endpoint = %addr, network = core.sandbox.network(), "node started");
    Ok(RunningNode { core, stop: stop_tx, halt: halt_tx, consumer, tasks, endpoint: addr, metrics_addr })
}

/// Checks the algorithm network's firewall every `network.firewall_check_secs`.
async fn watch_firewall(core: Arc<Core>) {
    let interval = Duration::from_secs(core.config.network.firewall_check_secs.max(1));
    loop {
        tokio::time::sleep(interval).await;
        core.sandbox.check_firewall().await;
    }
}

/// Tells the server the node is online, every `heartbeat_secs`, while the broker is connected
/// (a node that cannot receive work is not online).
async fn heartbeats(core: Arc<Core>) {
    let interval = Duration::from_secs(core.config.node.heartbeat_secs);
    let mut failing = false;
    loop {
        core.metrics.set_running(core.running.jobs.lock().expect("not poisoned").len());
        let online = core.link.is_connected();
        match core.server.heartbeat(online, &core.policy_summary(), core.log.report()).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                tracing::warn!(error = %e, "heartbeat failed");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(interval).await;
    }
}

/// Removes what has outlived its time: job records past their envelope's expiry, run volumes
/// past their time-to-live with no job running.
async fn collect_garbage(core: Arc<Core>) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        if let Err(e) = gc::collect(&core, false).await {
            tracing::warn!(error = %e, "garbage collection failed");
        }
    }
}
