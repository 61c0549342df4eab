//! When to try again after a transient failure: exponential backoff with jitter, bounded.

/// Backoff parameters. Delay for attempt n (1-based) is `base * 2^(n-1)` capped at `cap`, of which the
/// upper half is randomised ("equal jitter") so that a burst of failures does not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base_ms: u64,
    pub cap_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_ms: 30_000,
            cap_ms: 3_600_000,
        }
    }
}

impl RetryPolicy {
    /// Delay before the attempt after `failed_attempt`; `jitter` is a random number in `[0, 1)`.
    pub fn delay_ms(&self, failed_attempt: u32, jitter: f64) -> u64 {
        let exponent = failed_attempt.saturating_sub(1).min(32);
        let full = self
            .base_ms
            .saturating_mul(1u64 << exponent)
            .min(self.cap_ms);
        let half = full / 2;
        half + (half as f64 * jitter.clamp(0.0, 1.0)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let policy = RetryPolicy {
            base_ms: 1_000,
            cap_ms: 10_000,
        };
        assert_eq!(policy.delay_ms(1, 0.0), 500);
        assert_eq!(policy.delay_ms(1, 0.999_999), 999);
        assert_eq!(policy.delay_ms(3, 0.0), 2_000);
        assert_eq!(policy.delay_ms(30, 0.0), 5_000);
        assert!(policy.delay_ms(30, 0.5) <= 10_000);
    }
}
