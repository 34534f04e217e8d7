//! Admission under a reconnect storm. Replay steps run `sync_concurrency` at a time on a
//! gateway, first come first served (a fair semaphore); the others wait. A device that would
//! wait longer than `sync_wait_max_ms` is better told so than kept waiting with no word: its
//! connection is refused with 503 and a `Retry-After` (the expected wait, spread over up to
//! twice as long so the retries do not come back as one storm), and it reconnects then.
//! Devices already admitted keep their place.
//!
//! The expected wait is the number of steps waiting times the mean time between finished
//! steps while steps were waiting (a moving average; the time between steps when nothing
//! waits says nothing about throughput, so it is not counted).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use plumbing::Gauge;
use rand::Rng;

/// Weight of the newest gap in the moving average.
const SMOOTHING: f64 = 0.05;
/// The longest `Retry-After` given.
const RETRY_MAX: Duration = Duration::from_secs(60);

pub struct Admission {
    waiting: AtomicUsize,
    waiting_gauge: Gauge,
    pacing: Mutex<Pacing>,
    /// Longer expected waits are refused; zero admits everyone.
    wait_max: Duration,
}

#[derive(Default)]
struct Pacing {
    /// When the last step finished, and whether steps were waiting then.
    last_finished: Option<(Instant, bool)>,
    /// Mean seconds between finished steps while steps waited; 0 until measured.
    mean_gap: f64,
}

/// A step waiting for its turn; it stops counting when dropped.
pub struct Queued<'a>(&'a Admission);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
        self.0.waiting_gauge.dec();
    }
}

impl Admission {
    pub fn new(wait_max: Duration, waiting_gauge: Gauge) -> Self {
        Self {
            waiting: AtomicUsize::new(0),
            waiting_gauge,
            pacing: Mutex::default(),
            wait_max,
        }
    }

    /// Counts a step as waiting until the returned guard is dropped.
    pub fn queued(&self) -> Queued<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.waiting_gauge.inc();
        Queued(self)
    }

    /// Notes that a step finished.
    pub fn finished_step(&self) {
        let now = Instant::now();
        let waiting = self.waiting.load(Ordering::Relaxed) > 0;
        let mut pacing = self.pacing.lock().expect("pacing");
        // Only a gap during which steps waited throughout measures the pace.
        if let Some((last, true)) = pacing.last_finished
            && waiting
        {
            let gap = now.duration_since(last).as_secs_f64();
            pacing.mean_gap = match pacing.mean_gap {
                0.0 => gap,
                mean => mean + SMOOTHING * (gap - mean),
            };
        }
        pacing.last_finished = Some((now, waiting));
    }

    /// How long a replay asked for now would wait for its first step.
    pub fn expected_wait(&self) -> Duration {
        let waiting = self.waiting.load(Ordering::Relaxed) as f64;
        let mean_gap = self.pacing.lock().expect("pacing").mean_gap;
        Duration::from_secs_f64(waiting * mean_gap)
    }

    /// `Some(when to come back)` if a new replay would wait longer than allowed.
    pub fn retry_after(&self) -> Option<Duration> {
        let wait = self.expected_wait();
        if self.wait_max.is_zero() || wait <= self.wait_max {
            return None;
        }
        let spread = rand::rng().random_range(1.0..2.0);
        Some(
            wait.mul_f64(spread)
                .clamp(Duration::from_secs(1), RETRY_MAX),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_wait_is_the_queue_times_the_pace_of_steps_while_they_waited() {
        let admission = Admission::new(Duration::from_millis(50), Gauge::default());
        assert_eq!(admission.retry_after(), None, "nothing measured yet");
        // A quiet hour between two steps says nothing about the pace.
        admission.finished_step();
        admission.finished_step();
        assert_eq!(admission.expected_wait(), Duration::ZERO);

        let queue: Vec<Queued> = (0..100).map(|_| admission.queued()).collect();
        admission.finished_step();
        std::thread::sleep(Duration::from_millis(2));
        admission.finished_step();
        let wait = admission.expected_wait();
        assert!(
            wait >= Duration::from_millis(200),
            "100 steps, 2 ms apart: {wait:?}"
        );
        let retry = admission.retry_after().expect("over 50 ms");
        assert!(retry >= Duration::from_secs(1) && retry <= RETRY_MAX);

        drop(queue);
        assert_eq!(admission.expected_wait(), Duration::ZERO, "nobody waits");
        assert_eq!(admission.retry_after(), None);
    }

    #[test]
    fn a_zero_limit_admits_everyone() {
        let admission = Admission::new(Duration::ZERO, Gauge::default());
        let _queue: Vec<Queued> = (0..100).map(|_| admission.queued()).collect();
        admission.finished_step();
        std::thread::sleep(Duration::from_millis(2));
        admission.finished_step();
        assert!(admission.expected_wait() > Duration::ZERO);
        assert_eq!(admission.retry_after(), None);
    }
}
