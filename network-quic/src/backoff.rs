//! Capped exponential backoff with jitter, for reconnecting to a peer.

use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// The delays between reconnection attempts: `min`, `2·min`, `4·min`, …
/// capped at `max`, each jittered uniformly into `[d/2, d]` so that peers
/// that lost a node together do not redial it in lock step.
///
/// Invariant: `min <= ceiling <= max`; every returned delay is in
/// `[min/2, max]`.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    /// The un-jittered delay of the next attempt.
    ceiling: Duration,
    rng: ChaCha8Rng,
}

impl Backoff {
    /// A backoff starting at `min`. `seed` makes the jitter repeatable in
    /// tests; the transport mixes in the node and peer ids.
    pub(crate) fn new(min: Duration, max: Duration, seed: u64) -> Self {
        assert!(!min.is_zero(), "backoff min must be above zero");
        assert!(min <= max, "backoff min {min:?} above max {max:?}");
        Self {
            min,
            max,
            ceiling: min,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The delay before the next attempt; doubles the next one, up to `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        let half = ceiling / 2;
        let spread_nanos = (ceiling - half).as_nanos().min(u64::MAX as u128) as u64;
        let jitter = if spread_nanos == 0 {
            0
        } else {
            self.rng.next_u64() % (spread_nanos + 1)
        };
        let delay = half + Duration::from_nanos(jitter);
        self.ceiling = ceiling.saturating_mul(2).min(self.max);
        assert!(
            delay <= self.max,
            "delay {delay:?} above max {:?}",
            self.max
        );
        assert!(delay >= self.min / 2, "delay {delay:?} below min/2");
        delay
    }

    /// Call after a successful connection: the next failure starts at `min`.
    pub(crate) fn reset(&mut self) {
        self.ceiling = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(100);
        let mut backoff = Backoff::new(min, max, 7);
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        let ceilings = [10, 20, 40, 80, 100, 100, 100, 100, 100, 100];
        for (delay, ceiling) in delays.iter().zip(ceilings) {
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                *delay <= ceiling && *delay >= ceiling / 2,
                "{delay:?} vs {ceiling:?}"
            );
        }
        assert!(
            delays[5..].windows(2).any(|w| w[0] != w[1]),
            "no jitter: {delays:?}"
        );
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }
}
