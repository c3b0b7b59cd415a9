//! The node worker: consumes its organization's queue, runs each job's algorithm in an isolated
//! container next to the organization's data, and publishes sealed results and run messages.
//!
//! Parts: `worker` (the broker connection and what each envelope kind does), `jobs` (one job's
//! life: policy, container, result), `containers` (Docker, network, firewall, volumes),
//! `endpoint` (the HTTP API algorithms use), `state` (what survives a restart), `server` (the
//! REST client and peer keys), `link` (publishing with confirms), `policy`, `config`.

use fedq_broker as broker;
use fedq_client as client;
use fedq_core::{contract, files, ids, protocol, time};
use fedq_envelope::{envelope, keys};
use fedq_service::settings;
use fedq_tls as tls;

pub mod check;
pub mod config;
pub mod containers;
mod endpoint;
pub mod enroll;
mod jobs;
pub mod link;
pub mod live_policy;
mod log_monitor;
pub mod metrics;
pub mod policy;
pub mod policy_file;
pub mod server;
pub mod state;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use self::config::NodeConfig;
use self::containers::{ContainerError, Sandbox};
use self::jobs::ActiveJob;
pub use self::jobs::JobTiming;
use self::link::IngressLink;
use self::server::{PeerKeys, ServerClient};
use self::state::StateDir;
use crate::contract::NodeRefusal;
use crate::envelope::{OpenPolicy, Rejections};
use crate::ids::{JobId, OrgId};
use crate::keys::{FirstUse, Identity, KeyId, KeyTrust, OrgKey};
use crate::time::Timestamp;

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The organization's key could not be read.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyFileError),
    /// The broker settings name no usable address.
    #[error("broker: {0}")]
    Broker(#[from] crate::broker::endpoints::EndpointsError),
    /// The server's address or TLS settings are unusable.
    #[error("server: {0}")]
    Server(String),
    /// A pinned fingerprint is malformed.
    #[error("peers.pins: {0}")]
    Pin(#[from] crate::keys::KeyParseError),
    /// The store of trusted keys could not be used.
    #[error(transparent)]
    Trust(#[from] crate::keys::TrustError),
    /// The state directory could not be opened.
    #[error("state directory {path}: {source}")]
    State {
        /// The directory.
        path: std::path::PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Docker, the network or the firewall could not be set up.
    #[error(transparent)]
    Containers(#[from] ContainerError),
    /// The metrics listener could not listen.
    #[error("[metrics] listen = {addr}: cannot listen ({source}); pick a free address or leave it unset")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The endpoint could not listen.
    #[error("the node-local endpoint cannot listen on {addr}: {source}")]
    Endpoint {
        /// The address.
        addr: std::net::SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The API key belongs to another organization than the configured one.
    #[error("the API key belongs to organization {actual}, but node.organization is {configured}")]
    WrongOrganization {
        /// Configured.
        configured: OrgId,
        /// Per the server.
        actual: OrgId,
    },
}

/// What every part of the node shares.
pub(crate) struct Core {
    config: NodeConfig,
    /// `[policy]` and `[data]` as node.toml says now (the rest of `config` is read once).
    rules: Arc<live_policy::LivePolicy>,
    me: Identity,
    state: StateDir,
    peers: PeerKeys,
    server: ServerClient,
    sandbox: Sandbox,
    link: IngressLink,
    /// The broker's addresses, tried in turn.
    endpoints: crate::broker::endpoints::Endpoints,
    policy: OpenPolicy,
    /// What was refused or held, counted.
    tally: Tally,
    /// The jobs running here.
    running: Running,
    /// Bumped when a run message or a subtask result is stored, to wake long polls.
    arrivals: watch::Sender<u64>,
    /// Turns true when the node is asked to stop: no new work is taken.
    stop: watch::Receiver<bool>,
    /// Turns true when the grace period after a stop is over: running jobs are abandoned and
    /// publishing gives up.
    halt: watch::Receiver<bool>,
    /// Prometheus metrics.
    metrics: metrics::NodeMetrics,
    /// The monitor of the server's transparency log.
    log: log_monitor::LogMonitor,
    /// Each task's jobs and where they run, as the server lists them: what binds a run
    /// message's `from_job` to its sender.
    task_jobs: Mutex<HashMap<crate::ids::TaskId, Vec<(JobId, OrgId)>>>,
}

/// The jobs this node runs now, and what is kept about the ones it ran.
struct Running {
    /// Jobs accepted and not finished, by job id.
    jobs: Mutex<HashMap<JobId, Arc<ActiveJob>>>,
    /// Running jobs by the SHA-256 of their endpoint token.
    tokens: Mutex<HashMap<[u8; 32], Arc<ActiveJob>>>,
    /// Containers running at once.
    slots: Arc<Semaphore>,
    /// Runs announced finished while one of their jobs was still winding down here: cleaned
    /// up when it is done.
    ended_runs: Mutex<std::collections::HashSet<crate::ids::RunId>>,
    /// Where recent jobs' time went.
    timings: Mutex<std::collections::VecDeque<JobTiming>>,
    /// How many jobs `jobs` holds, for whoever waits for them all to end (shutdown).
    count: watch::Sender<usize>,
}

impl Running {
    /// Takes `active` in as `job`.
    fn insert(&self, job: JobId, active: Arc<ActiveJob>) {
        let mut jobs = self.jobs.lock().expect("not poisoned");
        jobs.insert(job, active);
        self.count.send_replace(jobs.len());
    }

    /// Lets `job` go; whether another job of `run` is still here. Decided under the jobs lock,
    /// so that a run's end announced meanwhile is acted on exactly once.
    fn remove(&self, job: JobId, run: crate::ids::RunId) -> bool {
        let mut jobs = self.jobs.lock().expect("not poisoned");
        jobs.remove(&job);
        self.count.send_replace(jobs.len());
        jobs.values().any(|j| j.record.run == run)
    }

    /// Resolves when no job is left (at once if none is).
    async fn all_done(&self) {
        let _ = self.count.subscribe().wait_for(|n| *n == 0).await;
    }
}

/// What the node refused or held, counted (for its tests, logs and metrics).
#[derive(Default)]
struct Tally {
    /// Envelopes that did not open, by reason.
    rejections: Rejections,
    /// Times an envelope from an unknown key waited for the server to answer a key fetch.
    key_waits: std::sync::atomic::AtomicU64,
    /// Authenticated envelopes refused for what they ask, by reason code.
    refusals: Mutex<HashMap<NodeRefusal, u64>>,
}

impl Core {
    fn org(&self) -> OrgId {
        self.me.org()
    }

    /// The policy and data sources in force now.
    fn rules(&self) -> Arc<live_policy::Rules> {
        self.rules.current()
    }

    /// What the heartbeat tells the server about this node's policy.
    fn policy_summary(&self) -> crate::protocol::heartbeat::PolicySummary {
        self.rules().summary(&self.config.limits)
    }

    /// Publishes an envelope to ingress until the broker confirms it (see `IngressLink::publish`),
    /// and has the transparency log's monitor expect its leaf.
    async fn publish(
        &self,
        header: &crate::envelope::Header,
        bytes: &[u8],
        halt: &mut watch::Receiver<bool>,
    ) -> Result<(), link::Stopping> {
        self.link.publish(header, bytes, halt).await?;
        self.log.sent(header, bytes);
        Ok(())
    }

    fn notify_arrival(&self) {
        self.arrivals.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The organization that runs `job` of `task`, as the server lists the task: `Ok(None)` when
    /// the task has no such job, `Err` when the server could not say.
    async fn job_of(&self, task: crate::ids::TaskId, job: JobId) -> Result<Option<OrgId>, ()> {
        let cached = self.task_jobs.lock().expect("not poisoned").get(&task).cloned();
        let jobs = match cached {
            Some(jobs) => jobs,
            None => {
                let listed = self.server.api().task(task).await.map_err(|e| {
                    tracing::warn!(%task, error = %e, "could not read a task's jobs from the server");
                })?;
                let jobs: Vec<(JobId, OrgId)> = listed.jobs.iter().map(|j| (j.id, j.organization)).collect();
                let mut cache = self.task_jobs.lock().expect("not poisoned");
                if cache.len() >= 10_000 {
                    cache.clear();
                }
                cache.insert(task, jobs.clone());
                jobs
            }
        };
        Ok(jobs.iter().find(|(j, _)| *j == job).map(|(_, org)| *org))
    }

    /// Whether `org` has a job in `run`: first among the tasks of this node's own jobs in the run
    /// (a finishing subtask's parent lists the whole ring), then as the server lists the run's
    /// tasks (asked each time: a subtask may have joined the run since). `Err` when the server
    /// did not answer.
    async fn in_run(&self, run: crate::ids::RunId, org: OrgId) -> Result<bool, ()> {
        let known_here = self
            .running
            .jobs
            .lock()
            .expect("not poisoned")
            .values()
            .any(|j| j.record.run == run && j.start.organizations.contains(&org));
        if known_here {
            return Ok(true);
        }
        self.server.api().has_job_in_run(run, org).await.map_err(|e| {
            tracing::warn!(%run, error = %e, "could not read a run's tasks from the server");
        })
    }

    /// Logs and counts an authenticated envelope that asks for what its sender may not do.
    fn refuse(&self, header: &crate::envelope::Header, code: NodeRefusal, why: &str) {
        *self.tally.refusals.lock().expect("not poisoned").entry(code).or_default() += 1;
        self.metrics.refused(code.as_str());
        tracing::warn!(
            code = code.as_str(),
            id = %header.id, kind = %header.kind, sender = %header.sender, task = %header.task,
            "refused {why}"
        );
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Fetches the collaboration's keys from the server and decides which to trust. Returns
    /// whether the server answered (a refusal is an answer; no answer, or a failure of its own, is
    /// not).
    async fn refresh_keys(&self, collaboration: crate::ids::CollaborationId) -> bool {
        match self.server.trusted_keys(collaboration).await {
            Ok(decisions) => {
                let refusals = self.peers.record(collaboration, decisions);
                // The log names the organizations (read once, and only when something was
                // refused); the alarm keeps the ids alone, so that its text (by which alarms are
                // told apart) takes nothing the server serves.
                let names = match refusals.is_empty() {
                    true => Default::default(),
                    false => self.server.organization_names().await,
                };
                for refusal in refusals {
                    let said = names.name(&refusal.to_string());
                    tracing::error!(%collaboration, error = %said, "refusing a key the server handed out");
                    // A partner's key replaced without a rotation signed by the trusted one: what a
                    // key swapped in the server's database looks like from here. Evidence for the
                    // administrator, not only a refusal in the log.
                    if matches!(refusal, crate::keys::TrustError::Changed { .. }) {
                        self.log.raise(
                            "partner_key_changed",
                            &format!("collaboration {collaboration}: {refusal}"),
                        );
                    }
                    // A key the log does not prove: the server showing this node what no monitor
                    // of the organization would see.
                    if matches!(refusal, crate::keys::TrustError::NotLogged { .. }) {
                        self.log.raise(
                            "partner_key_not_logged",
                            &format!("collaboration {collaboration}: {refusal}"),
                        );
                    }
                }
                true
            }
            Err(e) => {
                tracing::warn!(%collaboration, error = %e, "could not fetch public keys");
                !matches!(e, crate::client::ClientError::Unreachable { .. })
                    && e.status().is_none_or(|status| status < 500)
            }
        }
    }
}

/// Resolves when `stop` turns true (without holding the channel's lock across an await).
pub(crate) async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A started node.
pub struct RunningNode {
    core: Arc<Core>,
    stop: watch::Sender<bool>,
    halt: watch::Sender<bool>,
    /// The broker session: awaited at shutdown, not aborted, so that it closes its connection
    /// (an aborted one left a connection whose consumer held the queue's messages unacknowledged
    /// for as long as the process lived).
    consumer: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    endpoint: std::net::SocketAddr,
    metrics_addr: Option<std::net::SocketAddr>,
}

impl RunningNode {
    /// Where `/metrics` is served, if `[metrics] listen` is set.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// Where the node-local endpoint listens (the algorithm network's gateway).
    pub fn endpoint(&self) -> std::net::SocketAddr {
        self.endpoint
    }

    /// Where the time of recent jobs went (the newest 1000).
    pub fn timings(&self) -> Vec<JobTiming> {
        self.core.running.timings.lock().expect("not poisoned").iter().copied().collect()
    }

    /// Envelopes this node refused, by reason code.
    pub fn rejections(&self) -> Vec<(&'static str, u64)> {
        self.core.tally.rejections.snapshot()
    }

    /// How many times an envelope signed by a key this node had not fetched waited for the
    /// server to answer (instead of being refused while it was unreachable).
    pub fn waits_for_keys(&self) -> u64 {
        self.core.tally.key_waits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What the transparency log's monitor found: the size it last checked, its alarms since
    /// start.
    pub fn log_report(&self) -> crate::protocol::heartbeat::LogReport {
        self.core.log.report()
    }

    /// Envelopes that opened but asked for what their sender may not do, by reason code's text.
    pub fn refusals(&self) -> HashMap<&'static str, u64> {
        let tally = self.core.tally.refusals.lock().expect("not poisoned");
        tally.iter().map(|(code, n)| (code.as_str(), *n)).collect()
    }

    /// Stops taking work, lets running jobs finish for up to the grace period, stops the rest
    /// (their deliveries stay unacknowledged and are redelivered), and tells the server.
    pub async fn shutdown(self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!("node stopping");
        let _ = self.stop.send(true);
        let grace = Duration::from_secs(self.core.config.node.shutdown_grace_secs);
        let _ = tokio::time::timeout(grace, self.core.running.all_done()).await;
        let _ = self.halt.send(true);
        let left: Vec<Arc<ActiveJob>> =
            self.core.running.jobs.lock().expect("not poisoned").values().cloned().collect();
        for job in left {
            tracing::warn!(job = %job.record.job, "stopping a job at shutdown; it will be redelivered");
            job.abandon(&self.core).await;
        }
        // Let the abandoned jobs remove their containers before the network goes.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.core.running.all_done()).await;
        // The session sees the stop wherever it is (connecting, setting up, consuming) and ends
        // by closing its connection, which returns whatever it holds to the queue.
        let mut consumer = self.consumer;
        if tokio::time::timeout(Duration::from_secs(10), &mut consumer).await.is_err() {
            tracing::warn!("the broker session did not end within 10 s of the stop; dropped");
            consumer.abort();
            let _ = consumer.await;
        }
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
        let _ = self.core.server.heartbeat(false, &self.core.policy_summary(), self.core.log.report()).await;
        self.core.sandbox.teardown().await;
        tracing::info!("node stopped");
    }

    /// Runs until SIGTERM or SIGINT, then shuts down.
    pub async fn run_until_signal(self) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("signal handlers install");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        self.shutdown().await;
    }
}

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
        if let Err(e) = gc_once(&core, false).await {
            tracing::warn!(error = %e, "garbage collection failed");
        }
    }
}

async fn gc_once(core: &Core, everything: bool) -> Result<(), ContainerError> {
    let now = Timestamp::now();
    core.state.forget_expired_jobs(now)?;
    let busy: Vec<_> =
        core.running.jobs.lock().expect("not poisoned").values().map(|j| j.record.run).collect();
    for (name, run, expires) in core.sandbox.volumes().await? {
        let expired = everything || expires.is_some_and(|e| e < now);
        if expired && run.is_some_and(|r| !busy.contains(&r)) {
            tracing::info!(volume = name, "removing an expired run volume");
            if let Some(run) = run {
                jobs::finish_run(core, run).await;
            }
        }
    }
    Ok(())
}

/// `fedq node gc`: removes this node's stopped containers, and its run volumes whose time has
/// passed (all of them with `all`), while the node is not running.
pub async fn gc(config: &NodeConfig, all: bool) -> Result<(usize, usize), NodeError> {
    let sandbox = Sandbox::connect_for_gc(config).await?;
    let state = StateDir::open(&config.node.state_dir, Timestamp::now())
        .map_err(|source| NodeError::State { path: config.node.state_dir.clone(), source })?;
    let mut containers = 0;
    for (name, _, running) in sandbox.containers().await? {
        if !running || all {
            sandbox.remove(&name).await;
            containers += 1;
        }
    }
    let now = Timestamp::now();
    let mut volumes = 0;
    for (name, run, expires) in sandbox.volumes().await? {
        if all || expires.is_some_and(|e| e < now) {
            if let Some(run) = run {
                if sandbox.remove_run_volume(run, &state.run_volume_image_path(run)).await.unwrap_or(false) {
                    volumes += 1;
                }
                let _ = state.remove_run(run);
            } else {
                tracing::warn!(volume = name, "a volume without a run label; left alone");
            }
        }
    }
    state
        .forget_expired_jobs(now)
        .map_err(|source| NodeError::State { path: config.node.state_dir.clone(), source })?;
    Ok((containers, volumes))
}
