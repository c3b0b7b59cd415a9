//! The ingress consumer: each delivery routed in a task of its own (at most `concurrency` at
//! once), held through a database outage, dead-lettered when it breaks a rule or keeps failing,
//! and settled only once its effects are durable.

use std::sync::Arc;

use tokio::sync::{Semaphore, watch};

use super::hold::{Hold, HoldOutcome, retry_later};
use super::{MAX_ATTEMPTS, Publisher, Refusal, RouteError, Router};
use crate::broker::{BrokerError, Consumer, Delivery, PublishChannel as Channel};
use crate::envelope::parse;

impl Router {
    /// Routes what `consumer` (of the ingress queue) delivers until `shutdown` turns true or the
    /// connection fails. At most `concurrency` envelopes are in flight (the consumer's prefetch
    /// should be the same). Returns when every envelope in flight has been settled.
    pub async fn consume(
        &self,
        mut consumer: Consumer,
        concurrency: u16,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), BrokerError> {
        let slots = Arc::new(Semaphore::new(usize::from(concurrency)));
        let result = loop {
            let delivery = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break Ok(()),
                next = consumer.next() => next,
            };
            let delivery = match delivery {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            };
            let permit = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
            let router = self.clone();
            let channel = consumer.channel().clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                router.handle(delivery, &channel, shutdown).await;
                drop(permit);
            });
        };
        // Let in-flight envelopes finish before the caller closes the channel.
        let _ = slots.acquire_many(u32::from(concurrency)).await;
        result
    }

    #[tracing::instrument(skip_all, fields(tag = delivery.tag))]
    async fn handle(&self, delivery: Delivery, channel: &Channel, mut shutdown: watch::Receiver<bool>) {
        let publisher_name = delivery.user_id.clone();
        let route = || async {
            match &publisher_name {
                Some(user) => self.route(&delivery.data, Publisher::Node(None), user, channel).await,
                None => Err(RouteError::Refused {
                    refusal: Refusal::new("missing_user_id", "published without a validated user id"),
                    header: None,
                }),
            }
        };
        let mut result = route().await;
        // While the database is unreachable, hold the delivery and retry in place.
        let mut hold = Hold::default();
        while matches!(result, Err(RouteError::Database(_))) {
            match self.hold(&mut hold, channel, &mut shutdown).await {
                HoldOutcome::Retry => result = route().await,
                HoldOutcome::Proceed => break,
                // The broker requeued the delivery when the channel closed.
                HoldOutcome::ChannelClosed => return,
            }
        }
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
                        "undeliverable",
                        format!("routing failed {MAX_ATTEMPTS} times; last error: {e}"),
                    ),
                    header: parse(&delivery.data, self.inner.policy.max_len).ok().map(|p| Box::new(p.header)),
                })
            }
            other => other,
        };
        let publisher_name = publisher_name.as_deref().unwrap_or("");
        let settled = match result {
            Ok(routed) => {
                tracing::debug!(?routed, "routed");
                delivery.acker.ack().await
            }
            Err(RouteError::Refused { refusal, header }) => {
                tracing::warn!(code = refusal.code, reason = %refusal.message, "envelope refused");
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
                        HoldOutcome::ChannelClosed => return,
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
        if let Err(e) = settled {
            // The channel is gone; the broker redelivers the message to another consumer.
            tracing::warn!(error = %e, "could not settle a delivery");
        }
    }
}
