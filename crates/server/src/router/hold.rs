//! Holding deliveries through a database outage: the broker sees neither ack nor nack, so an
//! envelope is neither lost nor counted as a failed delivery while the database is away.

use std::time::Duration;

use tokio::sync::watch;

use super::Router;
use crate::broker::{BrokerError, Delivery, PublishChannel as Channel};

/// The state of holding one delivery through a database outage.
pub(super) struct Hold {
    pause: Duration,
    warned: bool,
}

impl Default for Hold {
    fn default() -> Self {
        Self { pause: Duration::from_millis(250), warned: false }
    }
}

/// What to do after a step of holding.
pub(super) enum HoldOutcome {
    /// The database may be back: try again.
    Retry,
    /// The database answers (the failure is the envelope's own) or the server stops: settle
    /// the delivery as usual.
    Proceed,
    /// The channel closed: the broker has requeued the delivery already.
    ChannelClosed,
}

impl Router {
    /// One step of holding a delivery while the database is unreachable: waits (with growing
    /// pauses) unless the database answers, the server stops or the channel closed. At most
    /// `concurrency` envelopes wait here; the broker sees neither ack nor nack, so the envelope
    /// is neither lost nor counted as a failed delivery.
    pub(super) async fn hold(
        &self,
        hold: &mut Hold,
        channel: &Channel,
        shutdown: &mut watch::Receiver<bool>,
    ) -> HoldOutcome {
        if self.database_answers().await {
            return HoldOutcome::Proceed;
        }
        if !hold.warned {
            tracing::warn!("the database is unreachable; holding envelopes until it answers");
            hold.warned = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(hold.pause) => {}
            _ = shutdown.wait_for(|stop| *stop) => return HoldOutcome::Proceed,
        }
        if !channel.is_open() {
            return HoldOutcome::ChannelClosed;
        }
        hold.pause = (hold.pause * 2).min(Duration::from_secs(5));
        HoldOutcome::Retry
    }

    /// Whether the database answers a trivial query within two seconds.
    async fn database_answers(&self) -> bool {
        let probe = async {
            let client = self.inner.db.get().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        };
        matches!(tokio::time::timeout(Duration::from_secs(2), probe).await, Ok(Some(_)))
    }
}

/// Returns a delivery to the queue after a pause, so a database outage holds traffic instead of
/// spinning on it.
pub(super) async fn retry_later(delivery: &Delivery) -> Result<(), BrokerError> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    delivery.acker.requeue().await
}
