//! Consuming a queue, as the router and the node see it: a message's bytes, what the broker
//! vouches for about it, and the one way to settle it. No lapin type crosses this seam.

use futures_util::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};

use super::publish::Channel;

/// The broker connection failed under a consumer or a settlement. Whatever was not acknowledged
/// is delivered again, to a consumer of the next connection.
#[derive(Debug, thiserror::Error)]
#[error("broker: {0}")]
pub struct BrokerError(#[from] lapin::Error);

/// A consumer of one queue with manual acknowledgements, on a channel of its own that is in
/// confirm mode, so that what a delivery causes is published on the channel it came from.
pub struct Consumer {
    channel: Channel,
    consumer: lapin::Consumer,
    tag: String,
}

impl Consumer {
    /// Starts consuming `queue` on a new channel of `connection`, with at most `prefetch`
    /// deliveries unacknowledged. `tag` names the consumer in the broker's listings.
    pub async fn start(
        connection: &lapin::Connection,
        queue: &str,
        tag: &str,
        prefetch: u16,
    ) -> Result<Self, BrokerError> {
        let channel = Channel::open(connection).await?;
        channel.amqp().basic_qos(prefetch, BasicQosOptions::default()).await?;
        let consumer = channel
            .amqp()
            .basic_consume(queue.into(), tag.into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        let tag = consumer.tag().to_string();
        Ok(Self { channel, consumer, tag })
    }

    /// The next delivery; `None` when the consumer was cancelled or the channel closed.
    pub async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        Some(self.consumer.next().await?.map(Delivery::from).map_err(BrokerError::from))
    }

    /// The consumer's channel, to publish on.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Stops new deliveries; those in flight can still be settled.
    pub async fn cancel(&self) {
        let _ = self.channel.amqp().basic_cancel(self.tag.as_str().into(), Default::default()).await;
    }
}

/// A message delivered to this consumer.
#[derive(Debug)]
pub struct Delivery {
    /// The message body: an envelope, or a control message.
    pub data: Vec<u8>,
    /// The AMQP `type` property: the envelope kind, or the control type.
    pub kind: Option<String>,
    /// The publisher's broker user, validated by the broker (`user_id`).
    pub user_id: Option<String>,
    /// How many times the broker delivered this message before (quorum queues count it in
    /// `x-delivery-count`).
    pub delivery_count: u64,
    /// The channel's tag of this delivery, for logs.
    pub tag: u64,
    /// Settles the delivery.
    pub acker: Acker,
}

impl From<lapin::message::Delivery> for Delivery {
    fn from(delivery: lapin::message::Delivery) -> Self {
        let properties = &delivery.properties;
        Self {
            kind: properties.kind().as_ref().map(|k| k.to_string()),
            user_id: properties.user_id().as_ref().map(|u| u.to_string()),
            delivery_count: delivery_count(properties),
            tag: delivery.delivery_tag,
            data: delivery.data,
            acker: Acker(delivery.acker),
        }
    }
}

/// Settles one delivery: acknowledge it (done with), requeue it (try again later, perhaps
/// elsewhere) or reject it (drop it; the queue's dead-lettering takes it, if any).
#[derive(Debug, Clone)]
pub struct Acker(lapin::Acker);

impl Acker {
    /// The message is handled: the broker forgets it.
    pub async fn ack(&self) -> Result<(), BrokerError> {
        self.0.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// The message goes back to its queue.
    pub async fn requeue(&self) -> Result<(), BrokerError> {
        self.0.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await?;
        Ok(())
    }

    /// The message is dropped from its queue.
    pub async fn reject(&self) -> Result<(), BrokerError> {
        self.0.nack(BasicNackOptions { requeue: false, ..BasicNackOptions::default() }).await?;
        Ok(())
    }
}

fn delivery_count(properties: &lapin::BasicProperties) -> u64 {
    let Some(headers) = properties.headers() else { return 0 };
    match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::ShortInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongUInt(n)) => u64::from(*n),
        Some(AMQPValue::ShortShortInt(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}
