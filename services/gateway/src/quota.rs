//! How fast one user may send through this gateway: two token buckets, messages and bytes,
//! shared by all of the user's connections here (a user cannot multiply the rate by opening
//! connections, which `max_connections_per_user` bounds anyway). Each bucket holds two
//! seconds of its rate, so a short burst passes and a sustained flood is refused with `1501`
//! and the time until the send would fit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The send limits of one user on this gateway.
pub struct SendQuota(Mutex<Buckets>);

struct Buckets {
    messages: Bucket,
    bytes: Bucket,
}

struct Bucket {
    per_sec: f64,
    capacity: f64,
    tokens: f64,
    refilled: Instant,
}

/// How much of its rate a bucket holds.
const BURST_SECS: f64 = 2.0;

impl Bucket {
    fn new(per_sec: f64, now: Instant) -> Self {
        let capacity = per_sec * BURST_SECS;
        Self {
            per_sec,
            capacity,
            tokens: capacity,
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.refilled = now;
    }

    /// How long until `cost` fits (zero if it does now). A cost larger than the bucket
    /// waits for a full bucket.
    fn wait_for(&self, cost: f64) -> Duration {
        let missing = cost.min(self.capacity) - self.tokens;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.per_sec)
        }
    }
}

impl SendQuota {
    pub fn new(messages_per_sec: u32, bytes_per_sec: u64, now: Instant) -> Self {
        Self(Mutex::new(Buckets {
            messages: Bucket::new(f64::from(messages_per_sec.max(1)), now),
            bytes: Bucket::new(bytes_per_sec.max(1) as f64, now),
        }))
    }

    /// Takes one message of `bytes`, or says how long to wait before it would fit.
    pub fn take(&self, bytes: usize, now: Instant) -> Result<(), Duration> {
        let mut b = self.0.lock().unwrap();
        b.messages.refill(now);
        b.bytes.refill(now);
        let bytes = bytes as f64;
        let wait = b.messages.wait_for(1.0).max(b.bytes.wait_for(bytes));
        if !wait.is_zero() {
            return Err(wait);
        }
        b.messages.tokens -= 1.0;
        b.bytes.tokens -= bytes.min(b.bytes.capacity);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_a_flood_waits_and_the_rate_comes_back() {
        let t0 = Instant::now();
        let quota = SendQuota::new(5, 1_000_000, t0);
        for _ in 0..10 {
            assert_eq!(quota.take(10, t0), Ok(()), "two seconds' worth at once");
        }
        let wait = quota.take(10, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(200), "one message every 200 ms");
        assert_eq!(quota.take(10, t0 + wait), Ok(()));
        assert!(quota.take(10, t0 + wait).is_err());
    }

    #[test]
    fn bytes_are_limited_too() {
        let t0 = Instant::now();
        let quota = SendQuota::new(1_000, 1_000, t0);
        assert_eq!(quota.take(1_500, t0), Ok(()));
        let wait = quota.take(1_000, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // A message larger than the whole bucket waits for a full one, then passes.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(quota.take(5_000, later), Ok(()));
    }
}
