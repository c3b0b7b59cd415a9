//! The ingress consumer: deliveries routed in groups (whatever has arrived when a group can
//! start, at most `GROUPS_IN_FLIGHT` groups at once), held through a database outage,
//! dead-lettered when they break a rule or keep failing, and settled only once their effects are
//! durable.

use std::sync::Arc;

use futures_util::FutureExt as _;
use futures_util::future::join_all;
use tokio::sync::{Semaphore, watch};

use super::group::{Item, ItemResult};
use super::hold::{Hold, HoldOutcome, retry_later};
use super::{MAX_ATTEMPTS, Publisher, Refusal, RouteError, Router};
use crate::broker::{AckWindow, BrokerError, Consumer, Delivery, PublishChannel as Channel};
use crate::contract::RouterRefusal;
use crate::envelope::parse;

/// Groups routed at once. More than one, so that a group's database work overlaps the next
/// group's publishing and confirms; few, so that under load each group takes many envelopes
/// (what waits while the groups are busy forms the next one).
const GROUPS_IN_FLIGHT: usize = 4;

impl Router {
    /// Routes what `consumer` (of the ingress queue) delivers until `shutdown` turns true or the
    /// connection fails. At most `concurrency` envelopes are in flight (the consumer's prefetch
    /// should be the same), in at most `GROUPS_IN_FLIGHT` groups. Returns when every envelope in
    /// flight has been settled.
    pub async fn consume(
        &self,
        mut consumer: Consumer,
        concurrency: u16,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), BrokerError> {
        let slots = Arc::new(Semaphore::new(GROUPS_IN_FLIGHT));
        // Routed deliveries are acknowledged many at a time, one frame per group or fewer.
        let window = consumer.ack_window();
        let max_group = usize::from(concurrency).max(1);
        let result = loop {
            let first = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break Ok(()),
                next = consumer.next() => next,
            };
            let first = match first {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            };
            // While every group is busy, deliveries gather in the consumer's buffer: the next
            // group takes them all. Light traffic never waits here, so it is not delayed.
            let permit = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
            let mut group = vec![first];
            let mut ended = None;
            while group.len() < max_group {
                match consumer.next().now_or_never() {
                    Some(Some(Ok(delivery))) => group.push(delivery),
                    Some(Some(Err(e))) => {
                        ended = Some(Err(e));
                        break;
                    }
                    Some(None) => {
                        ended = Some(Ok(()));
                        break;
                    }
                    None => break,
                }
            }
            let router = self.clone();
            let channel = consumer.channel().clone();
            let (shutdown, window) = (shutdown.clone(), window.clone());
            tokio::spawn(async move {
                router.handle_group(group, &channel, &window, shutdown).await;
                drop(permit);
            });
            if let Some(ended) = ended {
                break ended;
            }
        };
        // Let the groups in flight finish before the caller closes the channel.
        let _ = slots.acquire_many(GROUPS_IN_FLIGHT as u32).await;
        result
    }

    /// Routes a group of deliveries and settles each.
    async fn handle_group(
        &self,
        deliveries: Vec<Delivery>,
        channel: &Channel,
        window: &AckWindow,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let items: Vec<Item<'_>> = deliveries
            .iter()
            .map(|d| Item {
                bytes: &d.data,
                parsed: None,
                publisher: Publisher::Node(None),
                publisher_name: d.user_id.as_deref(),
            })
            .collect();
        let mut results: Vec<Option<ItemResult>> = (0..items.len()).map(|_| None).collect();
        // While the database is unreachable, hold the group and retry it in place.
        let mut hold = Hold::default();
        loop {
            let pending: Vec<usize> = (0..items.len()).filter(|i| results[*i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            let group: Vec<Item<'_>> = pending.iter().map(|i| items[*i].clone()).collect();
            let error = match self.route_group(&group, channel).await {
                Ok(routed) => {
                    for (i, result) in pending.iter().zip(routed) {
                        results[*i] = Some(result);
                    }
                    continue;
                }
                Err(e) => e,
            };
            match self.hold(&mut hold, channel, &mut shutdown).await {
                HoldOutcome::Retry => {}
                // The database answers, so the failure may be one envelope's own: route each alone,
                // so that it fails alone and the others of its group are not held back with it.
                HoldOutcome::Proceed => {
                    if let [i] = pending[..] {
                        results[i] = Some(Err(error.into()));
                        continue;
                    }
                    for i in pending {
                        results[i] = Some(match self.route_group(&[items[i].clone()], channel).await {
                            Ok(mut routed) => routed.pop().expect("one result per item"),
                            Err(e) => Err(e.into()),
                        });
                    }
                }
                // The broker requeued the deliveries when the channel closed.
                HoldOutcome::ChannelClosed => return,
            }
        }
        let settled = deliveries.into_iter().zip(results).map(|(delivery, result)| {
            let result = result.expect("every delivery has a result").map(|(routed, _)| routed);
            self.settle(delivery, result, channel, window, shutdown.clone())
        });
        let routed: Vec<u64> = join_all(settled).await.into_iter().flatten().collect();
        if let Err(e) = window.ack(&routed).await {
            // The channel is gone; the broker redelivers the messages to another consumer.
            tracing::warn!(error = %e, "could not acknowledge routed deliveries");
        }
    }

    /// Returns the tag of a routed delivery, for the caller to acknowledge with the others of
    /// its group; dead-letters a refused one, and returns a failed one to the queue (or
    /// dead-letters it as undeliverable after `MAX_ATTEMPTS`), each settled alone.
    async fn settle(
        &self,
        delivery: Delivery,
        result: Result<super::Routed, RouteError>,
        channel: &Channel,
        window: &AckWindow,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<u64> {
        let result = match result {
            // A failure of this envelope, not of the database or broker as a whole (a recipient
            // queue that refuses it, say): retried a few times, then dead-lettered with the
            // reason, so one bad envelope never circles forever.
            Err(e)
                if !matches!(e, RouteError::Refused { .. })
                    && delivery.delivery_count + 1 >= MAX_ATTEMPTS =>
            {
                Err(RouteError::Refused {
                    refusal: Refusal::new(
                        RouterRefusal::Undeliverable,
                        format!("routing failed {MAX_ATTEMPTS} times; last error: {e}"),
                    ),
                    header: parse(&delivery.data, self.inner.policy.max_len).ok().map(|p| Box::new(p.header)),
                })
            }
            other => other,
        };
        let publisher_name = delivery.user_id.as_deref().unwrap_or("");
        let settled = match result {
            Ok(routed) => {
                tracing::debug!(tag = delivery.tag, ?routed, "routed");
                return Some(delivery.tag);
            }
            Err(RouteError::Refused { refusal, header }) => {
                tracing::warn!(code = refusal.code.as_str(), reason = %refusal.message, "envelope refused");
                let dead_letter =
                    || self.dead_letter(channel, &delivery.data, &refusal, header.as_deref(), publisher_name);
                let mut recorded = dead_letter().await;
                // Recording the refusal needs the database too: hold through an outage rather
                // than requeue toward the broker's delivery limit.
                let mut hold = Hold::default();
                while matches!(recorded, Err(RouteError::Database(_))) {
                    match self.hold(&mut hold, channel, &mut shutdown).await {
                        HoldOutcome::Retry => recorded = dead_letter().await,
                        HoldOutcome::Proceed => break,
                        HoldOutcome::ChannelClosed => return None,
                    }
                }
                match recorded {
                    Ok(()) => delivery.acker.ack().await,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not dead-letter; will retry");
                        retry_later(&delivery).await
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "routing failed; will retry");
                retry_later(&delivery).await
            }
        };
        if let Err(e) = settled.and(window.settled(delivery.tag).await) {
            // The channel is gone; the broker redelivers the message to another consumer.
            tracing::warn!(error = %e, "could not settle a delivery");
        }
        None
    }
}
