//! Publishing with the broker's confirm, read one way everywhere: the message is the broker's
//! once it is acknowledged and was not returned; anything else is an error that says which.

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation};

/// Why a publish was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The channel or connection failed before the broker answered.
    #[error("the broker connection failed: {0}")]
    Channel(#[from] lapin::Error),
    /// A mandatory message that no queue was bound to take (the broker returned it).
    #[error("no queue takes this message (returned by the broker)")]
    Unroutable,
    /// The broker refused the message (a negative confirm).
    #[error("the broker refused the message (a queue at its bound, router.queue_max_mib, or unavailable)")]
    Refused,
    /// No confirm within the time allowed.
    #[error("no confirm from the broker within {} s", .0.as_secs())]
    NoConfirm(Duration),
}

/// Where a message goes and how.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The exchange.
    pub exchange: &'a str,
    /// The routing key (empty for fanout exchanges).
    pub routing_key: &'a str,
    /// Returned by the broker, rather than dropped, when no queue takes it.
    pub mandatory: bool,
}

impl<'a> Target<'a> {
    /// A fanout exchange, or a direct one where an unroutable message may be dropped.
    pub fn exchange(exchange: &'a str) -> Self {
        Self { exchange, routing_key: "", mandatory: false }
    }
}

/// A channel in confirm mode: what every publisher of fedq publishes on.
#[derive(Debug, Clone)]
pub struct Channel(lapin::Channel);

impl Channel {
    /// Opens a channel on `connection` and puts it in confirm mode.
    pub async fn open(connection: &lapin::Connection) -> Result<Self, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel.confirm_select(lapin::options::ConfirmSelectOptions::default()).await?;
        Ok(Self(channel))
    }

    /// Whether the channel is still open.
    pub fn is_open(&self) -> bool {
        self.0.status().connected()
    }

    /// Publishes and waits for the confirm (see [`publish_confirmed`]).
    pub async fn publish(
        &self,
        target: Target<'_>,
        bytes: &[u8],
        properties: BasicProperties,
        timeout: Option<Duration>,
    ) -> Result<(), PublishError> {
        publish_confirmed(&self.0, target, bytes, properties, timeout).await
    }

    /// The lapin channel, for declaring the topology.
    pub fn amqp(&self) -> &lapin::Channel {
        &self.0
    }
}

/// Publishes `bytes` and waits for the broker's confirm (at most `timeout`, when given) on a
/// channel in confirm mode. `Ok` means the broker has the message in its queue.
pub async fn publish_confirmed(
    channel: &lapin::Channel,
    target: Target<'_>,
    bytes: &[u8],
    properties: BasicProperties,
    timeout: Option<Duration>,
) -> Result<(), PublishError> {
    let options = BasicPublishOptions { mandatory: target.mandatory, ..BasicPublishOptions::default() };
    let confirm = async {
        channel
            .basic_publish(target.exchange.into(), target.routing_key.into(), options, bytes, properties)
            .await?
            .await
    };
    let confirmation = match timeout {
        Some(limit) => {
            tokio::time::timeout(limit, confirm).await.map_err(|_| PublishError::NoConfirm(limit))??
        }
        None => confirm.await?,
    };
    read(confirmation)
}

/// The one reading of a confirmation. `NotRequested` (a channel not in confirm mode) counts as
/// taken: every channel fedq publishes on is put in confirm mode when it is opened.
fn read(confirmation: Confirmation) -> Result<(), PublishError> {
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable),
        Confirmation::Nack(_) => Err(PublishError::Refused),
    }
}
