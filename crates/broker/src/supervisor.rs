//! Keeping a broker connection up: run a session (connect, set up, consume) until it ends, then
//! start another after the one [`Backoff`], until the process stops. The server and the node
//! supervise their connections with this same loop.

use std::future::Future;

use tokio::sync::watch;

use super::backoff::Backoff;

/// How one session with the broker ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The process is stopping: no new session.
    Stopped,
    /// The connection failed or was lost; `connected` tells whether it had been up (the next
    /// wait then starts from the shortest again).
    Lost {
        /// Whether the session got as far as a working connection.
        connected: bool,
        /// What failed, for the log.
        error: String,
    },
}

impl SessionEnd {
    /// A session that failed with `error`, having got as far as a working connection or not.
    pub fn lost(connected: bool, error: impl std::fmt::Display) -> Self {
        SessionEnd::Lost { connected, error: error.to_string() }
    }
}

/// Runs `session` again and again until it ends with [`SessionEnd::Stopped`] or `stop` turns
/// true, waiting between sessions.
pub async fn supervise<F, Fut>(mut stop: watch::Receiver<bool>, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = SessionEnd>,
{
    let mut backoff = Backoff::default();
    loop {
        if *stop.borrow() {
            return;
        }
        match session().await {
            SessionEnd::Stopped => return,
            SessionEnd::Lost { connected: true, error } => {
                backoff.reset();
                tracing::warn!(%error, "broker connection lost; reconnecting");
            }
            SessionEnd::Lost { connected: false, error } => {
                tracing::warn!(%error, "cannot reach the broker; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}
