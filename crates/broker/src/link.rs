//! The current publishing channel of a broker connection that comes and goes: the supervisor
//! installs a channel (in confirm mode) on every connection and removes it when the connection
//! is lost; publishers take whatever is current.

use std::sync::Arc;
use std::time::Duration;

use lapin::BasicProperties;
use tokio::sync::watch;

use super::backoff::Backoff;
use super::publish::{Channel, Target};

/// The broker is not connected now.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the broker is unavailable")]
pub struct Unavailable;

/// Publishing stopped before a confirm: the process is stopping.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("not published: stopping")]
pub struct Stopping;

/// The current channel, shared by everything that publishes.
#[derive(Debug, Clone)]
pub struct Link {
    channel: Arc<watch::Sender<Option<Channel>>>,
}

impl Default for Link {
    fn default() -> Self {
        Self { channel: Arc::new(watch::channel(None).0) }
    }
}

impl Link {
    /// Installs the channel of a new connection, or `None` when it is lost.
    pub fn set(&self, channel: Option<Channel>) {
        self.channel.send_replace(channel);
    }

    /// The current channel, if it is open.
    pub fn channel(&self) -> Result<Channel, Unavailable> {
        self.channel.borrow().as_ref().filter(|c| c.is_open()).cloned().ok_or(Unavailable)
    }

    /// Whether a channel is open now.
    pub fn is_connected(&self) -> bool {
        self.channel().is_ok()
    }

    /// Publishes until the broker confirms, through reconnections (waiting with the one
    /// [`Backoff`]), or until `stop` turns true. A retry may publish the message twice; every
    /// message fedq retries this way carries an id its receiver deduplicates by.
    pub async fn publish_until_confirmed(
        &self,
        target: Target<'_>,
        bytes: &[u8],
        properties: &BasicProperties,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopping> {
        /// How long a confirm may take before the publish is tried again.
        const CONFIRM_WAIT: Duration = Duration::from_secs(30);
        let mut channels = self.channel.subscribe();
        let mut backoff = Backoff::default();
        loop {
            if *stop.borrow() {
                return Err(Stopping);
            }
            let channel = channels.borrow_and_update().clone();
            if let Some(channel) = channel.filter(Channel::is_open) {
                match channel.publish(target, bytes, properties.clone(), Some(CONFIRM_WAIT)).await {
                    Ok(()) => return Ok(()),
                    Err(e) => tracing::warn!(error = %e, "publish failed; will retry"),
                }
            }
            tokio::select! {
                _ = channels.changed() => {}
                () = tokio::time::sleep(backoff.next_delay()) => {}
                _ = stop.wait_for(|stop| *stop) => return Err(Stopping),
            }
        }
    }
}
