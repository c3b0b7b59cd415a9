//! The node's side of RabbitMQ: publishing to ingress with confirms through whatever connection
//! is current, and waiting out the broker's absence.

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::watch;

use crate::broker;
use crate::envelope::Header;

/// Publishing failed for good (the node is stopping).
#[derive(Debug, thiserror::Error)]
#[error("the envelope was not published: the node is stopping")]
pub struct Stopping;

/// The current publishing channel (in confirm mode), replaced on every reconnection.
#[derive(Debug)]
pub struct BrokerLink {
    channel: watch::Sender<Option<Channel>>,
    username: String,
}

impl BrokerLink {
    /// A link publishing as broker user `username` (the validated user id of every publish).
    pub fn new(username: String) -> Self {
        Self { channel: watch::channel(None).0, username }
    }

    /// Installs the channel of a new connection (or `None` when it is lost).
    pub fn set(&self, channel: Option<Channel>) {
        self.channel.send_replace(channel);
    }

    /// Whether a channel is open now.
    pub fn is_connected(&self) -> bool {
        self.channel.borrow().as_ref().is_some_and(|c| c.status().connected())
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
        let mut channels = self.channel.subscribe();
        let mut delay = Duration::from_millis(100);
        loop {
            if *stop.borrow() {
                return Err(Stopping);
            }
            let channel = channels.borrow_and_update().clone();
            if let Some(channel) = channel.filter(|c| c.status().connected()) {
                match self.publish_once(&channel, header, bytes).await {
                    Ok(()) => return Ok(()),
                    Err(e) => tracing::warn!(id = %header.id, error = %e, "publish failed; will retry"),
                }
            }
            tokio::select! {
                _ = channels.changed() => {}
                _ = tokio::time::sleep(delay) => {}
                () = super::until_stopped(stop) => return Err(Stopping),
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn publish_once(&self, channel: &Channel, header: &Header, bytes: &[u8]) -> Result<(), String> {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(header.id.to_string().as_str().into())
            .with_type(header.kind.as_str().into())
            .with_user_id(self.username.as_str().into());
        let confirm = async {
            channel
                .basic_publish(
                    broker::INGRESS_EXCHANGE.into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    bytes,
                    properties,
                )
                .await?
                .await
        };
        match tokio::time::timeout(Duration::from_secs(30), confirm).await {
            Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(other)) => Err(format!("not confirmed: {other:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no confirm within 30 s".into()),
        }
    }
}
