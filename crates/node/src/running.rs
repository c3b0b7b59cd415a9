//! A started node: what its tests and `fedq node` read of it, and its shutdown, which waits on
//! the running jobs' count rather than polling them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::active::{ActiveJob, JobTiming};
use crate::shared::Core;

/// A started node.
pub struct RunningNode {
    pub(crate) core: Arc<Core>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) halt: watch::Sender<bool>,
    /// The broker session: awaited at shutdown, not aborted, so that it closes its connection
    /// (an aborted one left a connection whose consumer held the queue's messages unacknowledged
    /// for as long as the process lived).
    pub(crate) consumer: JoinHandle<()>,
    pub(crate) tasks: Vec<JoinHandle<()>>,
    pub(crate) endpoint: std::net::SocketAddr,
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
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
            job.abandon(&self.core.sandbox).await;
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
