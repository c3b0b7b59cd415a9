//! A started server and its graceful shutdown.

use std::net::SocketAddr;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A started server.
pub struct RunningServer {
    /// The HTTP address it listens on.
    pub addr: SocketAddr,
    /// Where `/metrics` is served, if `[metrics] listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) tasks: Vec<JoinHandle<()>>,
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
