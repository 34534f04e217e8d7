//! Admission under a reconnect storm. Replay steps run `sync_concurrency` at a time on a
//! gateway, first come first served (a fair semaphore); the others wait. A device that would
//! wait longer than `sync_wait_max_ms` is better told so than kept waiting with no word: its
//! connection is refused with 503 and a `Retry-After`, and it reconnects then. The hint is
//! how much longer than allowed the wait is (when the queue should have drained enough to
//! admit it), spread over up to half as much again so the retries do not come back as one
//! storm. Devices already admitted keep their place.
//!
//! The expected wait is the number of steps waiting divided by the steps finished per second
//! in the last full `PACE_WINDOW` during which steps waited throughout (time when nothing
//! waits says nothing about throughput). A whole window, not the last few steps: at the
//! start of a storm the gateway is busy accepting connections, and a pace taken from a few
//! slow steps then would send devices away that a few seconds later get in at once
//! (measured: 47 of 9,000 devices sent away for up to a minute from a storm that was over in
//! 8 s, with a moving average over steps). Even a whole window underestimates the pace while
//! connections pour in, so a projection alone does not refuse anyone: the oldest step
//! waiting must also have waited half of `sync_wait_max_ms` already, evidence that the queue
//! really is that slow.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use plumbing::Gauge;
use rand::Rng;

/// How long the pace is measured over.
const PACE_WINDOW: Duration = Duration::from_secs(1);
/// The longest `Retry-After` given.
const RETRY_MAX: Duration = Duration::from_secs(60);

pub struct Admission {
    waiting: AtomicUsize,
    /// When each waiting step began to wait, by its number (the oldest first).
    since: Mutex<BTreeMap<u64, Instant>>,
    numbers: AtomicU64,
    waiting_gauge: Gauge,
    pacing: Mutex<Pacing>,
    /// Longer expected waits are refused; zero admits everyone.
    wait_max: Duration,
    window: Duration,
}

struct Pacing {
    /// Since when steps have waited throughout the current window.
    window_start: Instant,
    finished_in_window: u64,
    /// Steps per second in the last full window; 0 until measured.
    rate: f64,
}

/// A step waiting for its turn; it stops counting when dropped.
pub struct Queued<'a>(&'a Admission, u64);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.since.lock().expect("since").remove(&self.1);
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
        self.0.waiting_gauge.dec();
    }
}

impl Admission {
    pub fn new(wait_max: Duration, waiting_gauge: Gauge) -> Self {
        Self::with_window(wait_max, waiting_gauge, PACE_WINDOW)
    }

    fn with_window(wait_max: Duration, waiting_gauge: Gauge, window: Duration) -> Self {
        Self {
            waiting: AtomicUsize::new(0),
            since: Mutex::default(),
            numbers: AtomicU64::new(0),
            waiting_gauge,
            pacing: Mutex::new(Pacing {
                window_start: Instant::now(),
                finished_in_window: 0,
                rate: 0.0,
            }),
            wait_max,
            window,
        }
    }

    /// Counts a step as waiting until the returned guard is dropped.
    pub fn queued(&self) -> Queued<'_> {
        let number = self.numbers.fetch_add(1, Ordering::Relaxed);
        self.since
            .lock()
            .expect("since")
            .insert(number, Instant::now());
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.waiting_gauge.inc();
        Queued(self, number)
    }

    /// How long the step that has waited longest has waited.
    pub fn oldest_wait(&self) -> Duration {
        let since = self.since.lock().expect("since");
        since
            .first_key_value()
            .map_or(Duration::ZERO, |(_, t)| t.elapsed())
    }

    /// Notes that a step finished.
    pub fn finished_step(&self) {
        let now = Instant::now();
        let waiting = self.waiting.load(Ordering::Relaxed) > 0;
        let mut pacing = self.pacing.lock().expect("pacing");
        if !waiting {
            // Not saturated: nothing to learn about the pace; a new window starts.
            pacing.window_start = now;
            pacing.finished_in_window = 0;
            return;
        }
        pacing.finished_in_window += 1;
        let elapsed = now.duration_since(pacing.window_start);
        if elapsed >= self.window {
            pacing.rate = pacing.finished_in_window as f64 / elapsed.as_secs_f64();
            pacing.window_start = now;
            pacing.finished_in_window = 0;
        }
    }

    /// How long a replay asked for now would wait for its first step.
    pub fn expected_wait(&self) -> Duration {
        let waiting = self.waiting.load(Ordering::Relaxed) as f64;
        match self.pacing.lock().expect("pacing").rate {
            0.0 => Duration::ZERO, // not measured yet
            rate => Duration::from_secs_f64(waiting / rate),
        }
    }

    /// `Some(when to come back)` if a new replay would wait longer than allowed, and the
    /// queue has shown it is that slow.
    pub fn retry_after(&self) -> Option<Duration> {
        if self.wait_max.is_zero() || self.oldest_wait() < self.wait_max / 2 {
            return None;
        }
        let wait = self.expected_wait();
        if wait <= self.wait_max {
            return None;
        }
        let spread = rand::rng().random_range(1.0..1.5);
        Some(
            (wait - self.wait_max)
                .mul_f64(spread)
                .clamp(Duration::from_secs(1), RETRY_MAX),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(20);

    /// Finishes `n` steps spread over a little more than one window.
    fn finish_over_a_window(admission: &Admission, n: u32) {
        for _ in 0..n {
            std::thread::sleep(WINDOW / n);
            admission.finished_step();
        }
        std::thread::sleep(WINDOW / n);
        admission.finished_step();
    }

    #[test]
    fn the_expected_wait_is_the_queue_over_the_pace_of_a_busy_window() {
        let admission = Admission::with_window(Duration::from_millis(50), Gauge::default(), WINDOW);
        // Steps finishing with nobody waiting say nothing about the pace.
        finish_over_a_window(&admission, 4);
        assert_eq!(admission.expected_wait(), Duration::ZERO);
        assert_eq!(admission.retry_after(), None, "nothing measured yet");

        let queue: Vec<Queued> = (0..1000).map(|_| admission.queued()).collect();
        finish_over_a_window(&admission, 4);
        assert!(
            admission.oldest_wait() >= WINDOW,
            "queued before the window"
        );
        // About 5 steps in 20-25 ms: 200-250 per second, so 1,000 wait about 4-5 s (the
        // sleeps may run long, which only lowers the pace).
        let wait = admission.expected_wait();
        assert!(wait >= Duration::from_secs(3), "{wait:?}");
        let retry = admission.retry_after().expect("over 50 ms");
        let least = (wait - Duration::from_millis(50)).min(RETRY_MAX);
        assert!(
            retry >= least && retry <= RETRY_MAX,
            "{retry:?} for {wait:?}"
        );

        drop(queue);
        assert_eq!(admission.expected_wait(), Duration::ZERO, "nobody waits");
        assert_eq!(admission.retry_after(), None);
    }

    #[test]
    fn a_long_queue_that_has_not_waited_yet_admits() {
        // A storm's first moments: the projection says 4-5 s, over the 1 s allowed, but no
        // step has waited half of that yet.
        let admission = Admission::with_window(Duration::from_secs(1), Gauge::default(), WINDOW);
        let _queue: Vec<Queued> = (0..1000).map(|_| admission.queued()).collect();
        finish_over_a_window(&admission, 4);
        assert!(admission.expected_wait() > Duration::from_secs(1));
        assert_eq!(admission.retry_after(), None);
    }

    #[test]
    fn a_zero_limit_admits_everyone() {
        let admission = Admission::with_window(Duration::ZERO, Gauge::default(), WINDOW);
        let _queue: Vec<Queued> = (0..1000).map(|_| admission.queued()).collect();
        finish_over_a_window(&admission, 4);
        assert!(admission.expected_wait() > Duration::ZERO);
        assert_eq!(admission.retry_after(), None);
    }
}
