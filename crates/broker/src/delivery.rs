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
    window: Option<AckWindow>,
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
        Ok(Self { channel, consumer, tag, window: None })
    }

    /// The next delivery; `None` when the consumer was cancelled or the channel closed.
    pub async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        let delivery = self.consumer.next().await?.map(Delivery::from).map_err(BrokerError::from);
        if let (Ok(delivery), Some(window)) = (&delivery, &self.window) {
            window.received(delivery.tag);
        }
        Some(delivery)
    }

    /// Acknowledges this consumer's deliveries many at a time from now on: every delivery must
    /// then be settled through the window (`AckWindow::ack`, or `AckWindow::settled` after an
    /// `Acker` settled it alone).
    pub fn ack_window(&mut self) -> AckWindow {
        self.window.get_or_insert_with(|| AckWindow::new(self.channel.amqp().clone())).clone()
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

/// Acknowledges many deliveries of one channel with one frame: `basic.ack` with `multiple` up to
/// the highest delivery tag below which every delivery is settled. Deliveries are settled out of
/// order (the router routes several groups at once), so a tag marked done waits until every
/// earlier one is settled too; the broker is never told "up to N" while an earlier delivery is
/// still being handled.
#[derive(Clone)]
pub struct AckWindow {
    channel: lapin::Channel,
    // Never held across an await: `Consumer::next` records a delivery without waiting, so that
    // taking one delivery cannot be interrupted half-way.
    state: std::sync::Arc<std::sync::Mutex<Window>>,
    // Held while an acknowledgement is computed and sent: two acks with `multiple` sent out of
    // order would name a tag already acknowledged, and the broker would close the channel.
    sending: std::sync::Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct Window {
    /// Received and not yet acknowledged or settled otherwise.
    unsettled: std::collections::BTreeSet<u64>,
    /// Of those, the ones done and waiting for the earlier ones.
    done: std::collections::BTreeSet<u64>,
}

impl Window {
    /// The highest tag that can be acknowledged with `multiple` now, removed from the window.
    fn acknowledgeable(&mut self) -> Option<u64> {
        let mut upto = None;
        while let Some(&first) = self.unsettled.first() {
            if !self.done.remove(&first) {
                break;
            }
            self.unsettled.remove(&first);
            upto = Some(first);
        }
        upto
    }
}

impl AckWindow {
    fn new(channel: lapin::Channel) -> Self {
        Self { channel, state: Default::default(), sending: Default::default() }
    }

    fn received(&self, tag: u64) {
        self.state.lock().expect("not poisoned").unsettled.insert(tag);
    }

    /// Marks deliveries done and acknowledges every delivery that can be now.
    pub async fn ack(&self, tags: &[u64]) -> Result<(), BrokerError> {
        self.update(|window| {
            window.done.extend(tags.iter().copied().filter(|t| window.unsettled.contains(t)));
        })
        .await
    }

    /// A delivery was settled alone (requeued, rejected or acknowledged through its `Acker`).
    pub async fn settled(&self, tag: u64) -> Result<(), BrokerError> {
        self.update(|window| {
            window.unsettled.remove(&tag);
            window.done.remove(&tag);
        })
        .await
    }

    async fn update(&self, change: impl FnOnce(&mut Window)) -> Result<(), BrokerError> {
        let _sending = self.sending.lock().await;
        let upto = {
            let mut window = self.state.lock().expect("not poisoned");
            change(&mut window);
            window.acknowledgeable()
        };
        if let Some(upto) = upto {
            self.channel.basic_ack(upto, BasicAckOptions { multiple: true }).await?;
        }
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

#[cfg(test)]
mod tests {
    use super::Window;

    #[test]
    fn a_tag_is_acknowledged_only_once_every_earlier_one_is_settled() {
        let mut w = Window::default();
        w.unsettled.extend(1..=6);
        // 3 and 4 done first: 1 and 2 are still being handled.
        w.done.extend([3, 4]);
        assert_eq!(w.acknowledgeable(), None);
        // 1 done: up to 1 only (2 is still out).
        w.done.insert(1);
        assert_eq!(w.acknowledgeable(), Some(1));
        // 2 settled alone (requeued, say): 3 and 4 go with one frame.
        w.unsettled.remove(&2);
        assert_eq!(w.acknowledgeable(), Some(4));
        assert_eq!(w.acknowledgeable(), None);
        assert_eq!(w.unsettled.iter().copied().collect::<Vec<_>>(), vec![5, 6]);
        w.done.extend([5, 6]);
        assert_eq!(w.acknowledgeable(), Some(6));
        assert!(w.unsettled.is_empty() && w.done.is_empty());
    }
}
