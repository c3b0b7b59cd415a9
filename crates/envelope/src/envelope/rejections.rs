//! Counters of refused envelopes, one per reason.

use std::sync::atomic::{AtomicU64, Ordering};

use super::OpenError;

/// How many envelopes were refused, by [`OpenError::code`]. Shared between threads.
#[derive(Debug, Default)]
pub struct Rejections {
    counts: [AtomicU64; OpenError::CODES.len()],
}

impl Rejections {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one refusal.
    pub fn record(&self, error: &OpenError) {
        self.counts[error.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The count for `code`, zero for an unknown code.
    pub fn get(&self, code: &str) -> u64 {
        OpenError::CODES.iter().position(|c| *c == code).map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    /// Every code with its count, in the order of the checks.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        OpenError::CODES
            .iter()
            .zip(&self.counts)
            .map(|(code, count)| (*code, count.load(Ordering::Relaxed)))
            .collect()
    }
}
