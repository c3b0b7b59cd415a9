//! The node's side of RabbitMQ publishing: every envelope goes to ingress, stamped with the
//! node's broker user, and is retried through reconnections until the broker confirms it
//! (`broker::Link`).

use tokio::sync::watch;

use crate::broker::{self, Target};
use crate::envelope::Header;

pub use crate::broker::link::Stopping;

/// Publishing to ingress through whatever connection is current.
#[derive(Debug)]
pub struct IngressLink {
    link: broker::Link,
    username: String,
}

impl IngressLink {
    /// A link publishing as broker user `username` (the validated user id of every publish).
    pub fn new(username: String) -> Self {
        Self { link: broker::Link::default(), username }
    }

    /// Installs the channel of a new connection (or `None` when it is lost).
    pub fn set(&self, channel: Option<broker::PublishChannel>) {
        self.link.set(channel);
    }

    /// Whether a channel is open now.
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// Publishes `bytes` (an envelope with `header`) to ingress and waits for the broker's
    /// confirm, retrying through reconnections until it is confirmed or `stop` turns true.
    /// A retry may publish the same envelope twice; the router drops the second by its id.
    pub async fn publish(
        &self,
        header: &Header,
        bytes: &[u8],
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopping> {
        let properties =
            broker::properties::envelope(&header.id.to_string(), header.kind, Some(&self.username));
        let target = Target::exchange(broker::INGRESS_EXCHANGE);
        self.link.publish_until_confirmed(target, bytes, &properties, stop).await
    }
}
