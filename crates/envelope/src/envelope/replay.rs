//! Replay protection: remember every opened message id until its envelope has expired.
//!
//! An envelope past its expiry is refused anyway, so ids need to be kept only that long and the
//! memory stays bounded by the rate of envelopes times their lifetime.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::ids::MessageId;
use crate::time::Timestamp;

/// Whether a message id was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time: it has been recorded.
    New,
    /// Already recorded: a replay or a duplicate.
    Before,
}

/// A replay guard that failed to check or record (a persistent store's I/O error, say).
#[derive(Debug, thiserror::Error)]
#[error("replay guard failed: {0}")]
pub struct ReplayGuardError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Remembers message ids until they expire.
///
/// A trait so that a process can keep ids in persistent storage and still refuse a replay after
/// a restart. Implementations make check-and-record one atomic step. A process that must record
/// an id only once the envelope's effect is durable (a node) does not implement this: it opens
/// with [`Replay::CheckOnly`](super::Replay::CheckOnly) and records the id itself.
pub trait ReplayGuard {
    /// Records `id` until `forget_after`, or reports that it was recorded before. `now` lets the
    /// guard drop ids whose time has passed.
    fn check_and_record(
        &mut self,
        id: MessageId,
        forget_after: Timestamp,
        now: Timestamp,
    ) -> Result<Seen, ReplayGuardError>;
}

/// A replay guard in memory, for processes that have no state to survive a restart.
#[derive(Debug, Default)]
pub struct MemoryReplayGuard {
    seen: HashMap<MessageId, Timestamp>,
    by_expiry: BinaryHeap<Reverse<(Timestamp, MessageId)>>,
}

impl MemoryReplayGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many ids it holds.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether it holds no id.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn forget_expired(&mut self, now: Timestamp) {
        while let Some(Reverse((forget_after, id))) = self.by_expiry.peek().copied() {
            if forget_after >= now {
                break;
            }
            self.by_expiry.pop();
            self.seen.remove(&id);
        }
    }
}

impl ReplayGuard for MemoryReplayGuard {
    fn check_and_record(
        &mut self,
        id: MessageId,
        forget_after: Timestamp,
        now: Timestamp,
    ) -> Result<Seen, ReplayGuardError> {
        self.forget_expired(now);
        if self.seen.contains_key(&id) {
            return Ok(Seen::Before);
        }
        self.seen.insert(id, forget_after);
        self.by_expiry.push(Reverse((forget_after, id)));
        Ok(Seen::New)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_expiry_then_forgets() {
        let mut guard = MemoryReplayGuard::new();
        let t = Timestamp::from_millis(1_000);
        let (a, b) = (MessageId::random(), MessageId::random());
        assert_eq!(guard.check_and_record(a, Timestamp::from_millis(2_000), t).unwrap(), Seen::New);
        assert_eq!(guard.check_and_record(b, Timestamp::from_millis(5_000), t).unwrap(), Seen::New);
        assert_eq!(guard.check_and_record(a, Timestamp::from_millis(2_000), t).unwrap(), Seen::Before);
        // After a's time, a is forgotten and b is kept.
        let later = Timestamp::from_millis(3_000);
        assert_eq!(guard.check_and_record(b, Timestamp::from_millis(5_000), later).unwrap(), Seen::Before);
        assert_eq!(guard.len(), 1);
    }
}
