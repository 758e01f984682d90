//! Rate-limited warnings, so a peer that stays down does not flood the log.

use std::time::{Duration, Instant};

/// Lets one warning through per `interval` and counts the rest.
///
/// Invariant: `suppressed` counts the warnings refused since the last one
/// allowed.
#[derive(Debug)]
pub(crate) struct WarnLimit {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnLimit {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` if a warning may be logged now, `n` being how many were
    /// suppressed before it; `None` if it must be dropped.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        let due = match self.last {
            None => true,
            Some(last) => now.saturating_duration_since(last) >= self.interval,
        };
        if due {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Forget the history (the peer came back): its next failure is logged.
    pub(crate) fn reset(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval_with_the_suppressed_count() {
        let start = Instant::now();
        let mut limit = WarnLimit::new(Duration::from_secs(10));
        assert_eq!(limit.allow(start), Some(0));
        assert_eq!(limit.allow(start + Duration::from_secs(1)), None);
        assert_eq!(limit.allow(start + Duration::from_secs(9)), None);
        assert_eq!(limit.allow(start + Duration::from_secs(10)), Some(2));
        limit.reset();
        assert_eq!(limit.allow(start + Duration::from_secs(11)), Some(0));
    }
}
