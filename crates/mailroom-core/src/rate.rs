//! A sliding-window rate limit: at most `limit` events in any window of `window_ms`.
//!
//! Times are plain milliseconds supplied by the caller, so the rule is testable without a clock.

use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct SlidingWindow {
    limit: u32,
    window_ms: u64,
    events: VecDeque<u64>,
}

impl SlidingWindow {
    /// A window allowing `limit` events per `window_ms`; a limit of 0 means unlimited.
    pub fn new(limit: u32, window_ms: u64) -> Self {
        Self {
            limit,
            window_ms,
            events: VecDeque::new(),
        }
    }

    /// Changes the limit, keeping the events already recorded.
    pub fn set_limit(&mut self, limit: u32) {
        self.limit = limit;
    }

    fn forget_before(&mut self, now_ms: u64) {
        while self
            .events
            .front()
            .is_some_and(|t| t + self.window_ms <= now_ms)
        {
            self.events.pop_front();
        }
    }

    /// How many events may happen now; `None` when unlimited.
    pub fn available(&mut self, now_ms: u64) -> Option<u32> {
        if self.limit == 0 {
            return None;
        }
        self.forget_before(now_ms);
        Some(self.limit.saturating_sub(self.events.len() as u32))
    }

    /// Records one event at `now_ms`.
    pub fn record(&mut self, now_ms: u64) {
        if self.limit != 0 {
            self.events.push_back(now_ms);
        }
    }

    /// When the next event will be allowed, if none is allowed now.
    pub fn next_opening_ms(&mut self, now_ms: u64) -> Option<u64> {
        match self.available(now_ms) {
            Some(0) => self.events.front().map(|t| t + self.window_ms),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_window_ever_holds_more_events_than_the_limit() {
        let mut window = SlidingWindow::new(3, 1_000);
        let mut accepted = Vec::new();
        for now in (0..5_000).step_by(50) {
            if window.available(now).unwrap() > 0 {
                window.record(now);
                accepted.push(now);
            }
        }
        for start in 0..5_000u64 {
            let in_window = accepted
                .iter()
                .filter(|t| **t >= start && **t < start + 1_000)
                .count();
            assert!(in_window <= 3, "window at {start} holds {in_window}");
        }
        assert_eq!(accepted.len(), 15);
    }

    #[test]
    fn a_zero_limit_means_unlimited() {
        let mut window = SlidingWindow::new(0, 1_000);
        window.record(1);
        assert_eq!(window.available(1), None);
    }

    #[test]
    fn the_next_opening_is_when_the_oldest_event_leaves_the_window() {
        let mut window = SlidingWindow::new(1, 1_000);
        window.record(200);
        assert_eq!(window.next_opening_ms(500), Some(1_200));
        assert_eq!(window.next_opening_ms(1_200), None);
    }
}
