//! The notifier's metrics.

use plumbing::{Counter, Gauge, Metrics};

#[derive(Clone)]
pub struct NotifierMetrics {
    pub registry: Metrics,
    pub events: Counter,
    pub undecodable: Counter,
    pub digests_sent: Counter,
    pub dropped_online: Counter,
    pub digests_failed: Counter,
    pub webhook_attempts: Counter,
    pub webhook_failures: Counter,
    pub pending_users: Gauge,
    pub pending_events: Gauge,
}

impl NotifierMetrics {
    pub fn new() -> Self {
        let m = Metrics::default();
        Self {
            events: m.counter(
                "natter_notifier_events_total",
                "offline-message events received (redeliveries of a held event not counted)",
            ),
            undecodable: m.counter(
                "natter_notifier_undecodable_events_total",
                "offline-message events that did not decode; acknowledged and skipped",
            ),
            digests_sent: m.counter("natter_notifier_digests_sent_total", "digests delivered"),
            dropped_online: m.counter(
                "natter_notifier_dropped_online_total",
                "digests dropped because the user came online",
            ),
            digests_failed: m.counter(
                "natter_notifier_digests_failed_total",
                "digests dropped after a rejection or the last retry",
            ),
            webhook_attempts: m.counter(
                "natter_notifier_webhook_attempts_total",
                "webhook requests made",
            ),
            webhook_failures: m.counter(
                "natter_notifier_webhook_failures_total",
                "webhook requests that failed (error, timeout or non-2xx)",
            ),
            pending_users: m.gauge(
                "natter_notifier_pending_users",
                "users with an open window or a digest being delivered",
            ),
            pending_events: m.gauge(
                "natter_notifier_pending_events",
                "events held unacknowledged",
            ),
            registry: m,
        }
    }
}
