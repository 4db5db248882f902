//! A flood limit: events counted in a time window against a maximum (the control frames
//! and the stream resets of a connection).

use std::time::{Duration, Instant};

use super::ConnectionError;
use crate::http2::ErrorCode;

/// Counts events in a window that starts afresh at the first event more than `window` after
/// it began; more than `max` events in one window is a flood.
pub(super) struct WindowCounter {
    max: u32,
    window: Duration,
    count: u32,
    since: Instant,
}

impl WindowCounter {
    /// A counter with its first window starting at `now`.
    pub(super) fn new(max: u32, window: Duration, now: Instant) -> WindowCounter {
        WindowCounter {
            max,
            window,
            count: 0,
            since: now,
        }
    }

    /// Counts one event at `now`; past the limit the connection ends with ENHANCE_YOUR_CALM.
    pub(super) fn count(&mut self, now: Instant) -> Result<(), ConnectionError> {
        if now.duration_since(self.since) > self.window {
            self.since = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count > self.max {
            return Err(ConnectionError(ErrorCode::EnhanceYourCalm));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_per_window() {
        let start = Instant::now();
        let mut c = WindowCounter::new(3, Duration::from_secs(1), start);
        for _ in 0..3 {
            assert!(c.count(start).is_ok());
        }
        // The fourth event within the window is over the limit, and so is every later one.
        assert!(matches!(
            c.count(start + Duration::from_millis(999)),
            Err(ConnectionError(ErrorCode::EnhanceYourCalm))
        ));
        assert!(c.count(start + Duration::from_secs(1)).is_err());
        // Once more than the window has passed, counting starts again.
        let later = start + Duration::from_millis(1001);
        for _ in 0..3 {
            assert!(c.count(later).is_ok());
        }
        assert!(c.count(later).is_err());
    }
}
