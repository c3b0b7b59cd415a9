//! What one publisher may cost the federation: how fast it may publish, and how many of its
//! refusals are recorded.
//!
//! Every node publishes into the one ingress queue, so a node that floods it (a compromised
//! node, or a broken one resending in a loop) delays everyone's envelopes behind its own, and
//! every refusal of the router costs a database row kept for the retention period and a dead
//! letter. So, per broker user, in each server process:
//!
//! - a token bucket of `router.publisher_envelopes_per_sec` envelopes and
//!   `router.publisher_mib_per_sec` MiB a second, holding `router.publisher_burst_secs` seconds
//!   of each: an envelope beyond it is refused `rate_limited` before it is even parsed, which
//!   costs the router almost nothing, so the queue drains faster than one publisher fills it;
//! - at most `router.dead_letters_per_publisher_hour` refusals recorded (row and dead letter)
//!   per hour; past that they are counted in `fedq_refused_envelopes_total` only, and one line is
//!   logged per publisher and hour.
//!
//! Both maps are keyed by authenticated broker users, so their size is bounded by the
//! federation's nodes; they are bounded again, as a last resort, at [`MAX_PUBLISHERS`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RouterConfig;

/// How many publishers each map tracks at most (it is cleared past that).
const MAX_PUBLISHERS: usize = 100_000;

/// How many envelopes and bytes a publisher still has.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    envelopes: f64,
    bytes: f64,
    at: Instant,
}

/// A token bucket per publisher.
#[derive(Debug)]
pub struct PublisherRates {
    envelopes_per_sec: f64,
    bytes_per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl PublisherRates {
    /// The rates of `config`.
    pub fn new(config: &RouterConfig) -> Self {
        Self {
            envelopes_per_sec: f64::from(config.publisher_envelopes_per_sec.max(1)),
            bytes_per_sec: f64::from(config.publisher_mib_per_sec.max(1)) * 1024.0 * 1024.0,
            burst: f64::from(config.publisher_burst_secs.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `publisher` may publish an envelope of `size` bytes now; takes it from its
    /// bucket if so.
    pub fn admit(&self, publisher: &str, size: usize) -> bool {
        self.admit_at(publisher, size, Instant::now())
    }

    fn admit_at(&self, publisher: &str, size: usize, now: Instant) -> bool {
        let (max_envelopes, max_bytes) =
            (self.envelopes_per_sec * self.burst, self.bytes_per_sec * self.burst);
        let mut buckets = self.buckets.lock().expect("not poisoned");
        if !buckets.contains_key(publisher) && buckets.len() >= MAX_PUBLISHERS {
            buckets.clear();
        }
        let bucket = buckets.entry(publisher.to_owned()).or_insert(Bucket {
            envelopes: max_envelopes,
            bytes: max_bytes,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.envelopes = (bucket.envelopes + elapsed * self.envelopes_per_sec).min(max_envelopes);
        bucket.bytes = (bucket.bytes + elapsed * self.bytes_per_sec).min(max_bytes);
        bucket.at = now;
        // An envelope larger than the whole byte burst passes when the bucket is full, so that
        // the size limit, not the rate, decides about it.
        let size = (size as f64).min(max_bytes);
        if bucket.envelopes >= 1.0 && bucket.bytes >= size {
            bucket.envelopes -= 1.0;
            bucket.bytes -= size;
            true
        } else {
            false
        }
    }
}

/// Refusals recorded in the current hour, per publisher.
#[derive(Debug)]
pub struct DeadLetterBudget {
    per_hour: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

/// Whether a refusal is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Within the budget: record it.
    Yes,
    /// The first refusal past the budget this hour: count it and say so once.
    FirstOver,
    /// Past the budget: count it only.
    No,
}

impl DeadLetterBudget {
    /// The budget of `config`.
    pub fn new(config: &RouterConfig) -> Self {
        Self { per_hour: config.dead_letters_per_publisher_hour, windows: Mutex::new(HashMap::new()) }
    }

    /// Whether `publisher`'s next refusal is recorded.
    pub fn take(&self, publisher: &str) -> Record {
        self.take_at(publisher, Instant::now())
    }

    fn take_at(&self, publisher: &str, now: Instant) -> Record {
        const HOUR: Duration = Duration::from_secs(3600);
        let mut windows = self.windows.lock().expect("not poisoned");
        if !windows.contains_key(publisher) && windows.len() >= MAX_PUBLISHERS {
            windows.clear();
        }
        let (started, n) = windows.entry(publisher.to_owned()).or_insert((now, 0));
        if now.saturating_duration_since(*started) >= HOUR {
            (*started, *n) = (now, 0);
        }
        *n = n.saturating_add(1);
        if *n <= self.per_hour {
            Record::Yes
        } else if *n == self.per_hour.saturating_add(1) {
            Record::FirstOver
        } else {
            Record::No
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(envelopes: u32, mib: u32, burst: u32) -> RouterConfig {
        RouterConfig {
            publisher_envelopes_per_sec: envelopes,
            publisher_mib_per_sec: mib,
            publisher_burst_secs: burst,
            dead_letters_per_publisher_hour: 3,
            ..RouterConfig::default()
        }
    }

    #[test]
    fn a_publisher_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let rates = PublisherRates::new(&config(10, 1, 2));
        let now = Instant::now();
        let admitted = (0..100).filter(|_| rates.admit_at("flood", 10, now)).count();
        assert_eq!(admitted, 20, "two seconds of ten a second");
        assert!(rates.admit_at("other", 10, now));
        assert!(!rates.admit_at("flood", 10, now + Duration::from_millis(50)));
        let later = now + Duration::from_millis(500);
        assert_eq!((0..100).filter(|_| rates.admit_at("flood", 10, later)).count(), 5);
    }

    #[test]
    fn bytes_are_limited_too_and_an_envelope_larger_than_the_burst_passes_a_full_bucket() {
        let rates = PublisherRates::new(&config(1000, 1, 1));
        let now = Instant::now();
        let mib = 1024 * 1024;
        assert!(rates.admit_at("p", mib / 2, now));
        assert!(rates.admit_at("p", mib / 2, now));
        assert!(!rates.admit_at("p", 1, now), "the second's MiB is spent");
        assert!(rates.admit_at("big", 16 * mib, now), "a full bucket takes one oversized envelope");
        assert!(!rates.admit_at("big", 16 * mib, now + Duration::from_millis(500)));
    }

    #[test]
    fn refusals_past_the_hourly_budget_are_counted_not_recorded() {
        let budget = DeadLetterBudget::new(&config(1, 1, 1));
        let now = Instant::now();
        let taken: Vec<Record> = (0..6).map(|_| budget.take_at("p", now)).collect();
        use Record::*;
        assert_eq!(taken, [Yes, Yes, Yes, FirstOver, No, No]);
        assert_eq!(budget.take_at("q", now), Yes);
        assert_eq!(budget.take_at("p", now + Duration::from_secs(3600)), Yes);
    }
}
