//! The one reconnection policy of every broker client (server and node): wait 200 ms after the
//! first failure, doubling up to 5 s, with up to a quarter added at random so that the nodes of
//! a federation do not all reconnect in the same instant after a broker restart.

use std::time::Duration;

/// The first wait.
pub const FIRST: Duration = Duration::from_millis(200);
/// The longest wait.
pub const MAX: Duration = Duration::from_secs(5);

/// Waits that grow after each failure and start over after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST }
    }
}

impl Backoff {
    /// The wait before the next attempt; the one after it is twice as long (up to [`MAX`]).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(MAX);
        base + jitter(base / 4)
    }

    /// After a success: the next failure waits [`FIRST`] again.
    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

/// A random duration up to `max`.
fn jitter(max: Duration) -> Duration {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        return Duration::ZERO;
    }
    max.mul_f64(f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_maximum_and_start_over_after_a_success() {
        let mut backoff = Backoff::default();
        let waits: Vec<_> = (0..8).map(|_| backoff.next_delay()).collect();
        let bases = [200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for (wait, base) in waits.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(*wait >= base && *wait <= base + base / 4, "{wait:?} for {base:?}");
        }
        backoff.reset();
        assert!(backoff.next_delay() < Duration::from_millis(251));
    }
}
