//! Dead letters: a refused envelope's header block, with the reason, into the dead-letter
//! queue, recorded in the database for the dashboard.

use super::rates::Record;
use super::{Refusal, RouteError, Router};
use crate::broker::{self, PublishChannel as Channel, Target};
use crate::db::{DbError, routing};
use crate::envelope::Header;

impl Router {
    /// Records a refused envelope and publishes its header block to the dead-letter queue.
    pub(super) async fn dead_letter(
        &self,
        channel: &Channel,
        bytes: &[u8],
        refusal: &Refusal,
        header: Option<&Header>,
        publisher: &str,
    ) -> Result<(), RouteError> {
        match self.inner.recorded.take(publisher) {
            Record::Yes => {}
            Record::FirstOver => {
                tracing::warn!(
                    publisher,
                    "more than router.dead_letters_per_publisher_hour refusals of this publisher in the hour: \
                     the rest are counted in fedq_refused_envelopes_total, not recorded"
                );
                return Ok(());
            }
            Record::No => return Ok(()),
        }
        let client = self.inner.db.get().await.map_err(DbError::from)?;
        let record = routing::DeadLetter {
            header,
            code: refusal.code,
            reason: &refusal.message,
            publisher,
            size: bytes.len(),
        };
        routing::record_dead_letter(&client, &record).await?;
        let properties =
            broker::properties::dead_letter(refusal.code.as_str(), &refusal.message, publisher, bytes.len());
        // The header block only: what an operator needs to see who sent what, not a copy of a
        // payload that a flooding publisher would make the broker store twice.
        let kept = &bytes[..bytes.len().min(broker::DEAD_LETTER_KEEP_BYTES)];
        channel
            .publish(Target::exchange(broker::DEAD_EXCHANGE), kept, properties, None)
            .await
            .map_err(|e| RouteError::Broker(format!("dead letter not confirmed: {e}")))?;
        self.inner.metrics.dead_lettered(refusal.code.as_str());
        Ok(())
    }
}
