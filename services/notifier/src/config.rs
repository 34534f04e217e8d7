//! The notifier's configuration.

use serde::{Deserialize, Serialize};

/// Where digests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// A tracing line per digest (user, counts; never bodies or tokens). For development.
    Log,
    /// An HTTP POST of the digest as JSON to `webhook_url` (see `docs/operations.md`).
    Webhook,
}

/// Configuration of one notifier instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifierConfig {
    /// How long a user's first offline message waits for more before their digest goes out.
    pub window_ms: u64,
    pub provider: ProviderKind,
    /// Where the webhook provider POSTs digests (`http://` or `https://`).
    pub webhook_url: String,
    /// How long one webhook request may take, connecting included.
    pub webhook_timeout_ms: u64,
    /// Attempts per digest, the first included, before it is dropped.
    pub retry_max_attempts: u32,
    /// How long a digest may be retried, from its first attempt, before it is dropped.
    pub retry_max_age_ms: u64,
    /// The wait before the first retry; it doubles with each further one (with jitter).
    pub retry_initial_backoff_ms: u64,
    /// The longest wait between two attempts.
    pub retry_max_backoff_ms: u64,
    /// Offline-message events held unacknowledged at once (waiting for their windows to
    /// close and their digests to be delivered); JetStream delivers no more until some are
    /// acknowledged. Bounds the notifier's memory.
    pub max_pending_events: usize,
    /// Digests being delivered at once; further due digests wait.
    pub max_concurrent_deliveries: usize,
    /// How long an event may go without word from the notifier holding it before JetStream
    /// delivers it again. A live notifier tells JetStream it is still working on each held
    /// event every third of this, however long its window and retries take, so this is how
    /// soon the events of a notifier that died come back to another instance.
    pub ack_wait_ms: u64,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            window_ms: 5 * 60 * 1000,
            provider: ProviderKind::Log,
            webhook_url: String::new(),
            webhook_timeout_ms: 10_000,
            retry_max_attempts: 10,
            retry_max_age_ms: 10 * 60 * 1000,
            retry_initial_backoff_ms: 500,
            retry_max_backoff_ms: 60_000,
            max_pending_events: 100_000,
            max_concurrent_deliveries: 64,
            ack_wait_ms: 30_000,
        }
    }
}

impl NotifierConfig {
    /// Refuses a configuration that cannot work, naming the key.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.window_ms > 0, "notifier.window_ms must be above 0");
        anyhow::ensure!(
            self.ack_wait_ms >= 1_000,
            "notifier.ack_wait_ms must be at least 1000"
        );
        anyhow::ensure!(
            self.retry_max_attempts > 0,
            "notifier.retry_max_attempts must be above 0"
        );
        anyhow::ensure!(
            self.max_pending_events > 0 && self.max_concurrent_deliveries > 0,
            "notifier.max_pending_events and max_concurrent_deliveries must be above 0"
        );
        if self.provider == ProviderKind::Webhook {
            let ok =
                self.webhook_url.starts_with("http://") || self.webhook_url.starts_with("https://");
            anyhow::ensure!(
                ok,
                "notifier.webhook_url must be an http:// or https:// URL with provider = \"webhook\""
            );
        }
        Ok(())
    }
}
