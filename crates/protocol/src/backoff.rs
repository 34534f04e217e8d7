//! Retry delays with "equal jitter", the reconnect rule of `docs/protocol.md`: exponential
//! from a base (1, 2, 4, 8 … s by default), capped (60 s), each delay drawn from the upper half
//! of its step, so a crowd of clients that lost the same gateway spreads out instead of
//! reconnecting in lockstep, while every client still waits at least half the nominal delay.
//! Clients reconnect with it; the notifier retries its webhook with it.

use std::time::Duration;

use rand::Rng;

/// The schedule of retry delays of one client or one job. `reset` after an attempt that worked.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            attempt: 0,
            base,
            cap,
        }
    }

    /// The nominal (un-jittered) delay of the next attempt.
    pub fn nominal(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(16);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt, jittered with `rng`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let nominal = self.nominal();
        self.attempt = self.attempt.saturating_add(1);
        let half = nominal / 2;
        half + Duration::from_millis(rng.random_range(0..=half.as_millis() as u64))
    }

    /// Starts over from `base` (after a connection that got its `welcome`).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn delays_double_from_one_second_to_the_cap_with_jitter() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = Backoff::default();
        let nominal: Vec<u64> = (0..9)
            .map(|_| {
                let n = b.nominal();
                let d = b.next_delay(&mut rng);
                assert!(d >= n / 2 && d <= n, "{d:?} outside [{:?}, {n:?}]", n / 2);
                n.as_secs()
            })
            .collect();
        assert_eq!(nominal, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.nominal(), Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_a_crowd() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let delays: std::collections::HashSet<u128> = (0..100)
            .map(|_| {
                let mut b = Backoff::default();
                b.next_delay(&mut rng);
                b.next_delay(&mut rng).as_millis()
            })
            .collect();
        assert!(
            delays.len() > 50,
            "100 clients should not pick a handful of delays"
        );
    }
}
