//! Delivering one closed window's digest: just before each attempt the user's presence is
//! read again (online: the digest is dropped; back offline since some messages: those are
//! forgotten), their push tokens are read, and the provider is called, retrying temporary
//! failures with exponential backoff and jitter within the configured limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures::StreamExt;
use protocol::payloads::{PushTokenEntry, UserPresence};
use protocol::{Backoff, UserId, subjects};

use crate::config::NotifierConfig;
use crate::digest::{Digest, PushToken};
use crate::metrics::NotifierMetrics;
use crate::provider::{DeliverError, Provider};

/// What became of a digest. Whichever it is, its events are done with and acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// The user came online (or had a device online after every message in it).
    UserOnline,
    /// The receiver refused it, or the retries ran out.
    Failed,
}

/// What every delivery needs; shared by the delivery tasks.
pub struct Courier {
    pub config: NotifierConfig,
    pub provider: Box<dyn Provider>,
    pub presence: kv::Store,
    pub tokens: kv::Store,
    pub metrics: NotifierMetrics,
}

impl Courier {
    /// Delivers `digest` to `user` (at least once, see [`Provider`]).
    pub async fn deliver(self: Arc<Self>, id: String, user: UserId, mut digest: Digest) -> Outcome {
        let started = Instant::now();
        let max_age = Duration::from_millis(self.config.retry_max_age_ms);
        let mut attempt = 0;
        let mut backoff = retry_backoff(&self.config);
        loop {
            match self.presence_of(&user).await {
                Some(p) if p.online => return Outcome::UserOnline,
                Some(UserPresence {
                    last_seen: Some(seen),
                    ..
                }) => digest.forget_seen_before(seen),
                _ => {}
            }
            if digest.is_empty() {
                return Outcome::UserOnline;
            }
            let payload = digest.payload(id.clone(), &user, self.tokens_of(&user).await);
            attempt += 1;
            let error = match self.provider.deliver(&payload).await {
                Ok(()) => return Outcome::Delivered,
                Err(e @ DeliverError::Rejected(_)) => {
                    tracing::warn!(user = %user, digest = %id, error = %e, "digest rejected; dropped");
                    return Outcome::Failed;
                }
                Err(e) => e,
            };
            let wait = backoff.next_delay(&mut rand::rng());
            if attempt >= self.config.retry_max_attempts || started.elapsed() + wait > max_age {
                tracing::warn!(user = %user, digest = %id, attempt, error = %error, "digest undeliverable; dropped");
                return Outcome::Failed;
            }
            tracing::debug!(user = %user, digest = %id, attempt, error = %error, "digest delivery failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// The user's recorded presence; `None` if unknown or unreadable (the digest then goes
    /// out: a needless push beats a missed one).
    async fn presence_of(&self, user: &UserId) -> Option<UserPresence> {
        match self.presence.get(user.as_str()).await {
            Ok(Some(value)) => serde_json::from_slice(&value).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, "presence unreadable; sending anyway");
                None
            }
        }
    }

    /// The user's registered push tokens (none if the bucket is unreadable).
    async fn tokens_of(&self, user: &UserId) -> Vec<PushToken> {
        match read_tokens(&self.tokens, user).await {
            Ok(tokens) => tokens,
            Err(e) => {
                tracing::warn!(error = %e, "push tokens unreadable; digest sent without them");
                Vec::new()
            }
        }
    }
}

/// The retry schedule of one digest: the initial backoff doubled per failed attempt, capped,
/// each wait a random point in its upper half (so digests that failed together do not all
/// retry together).
fn retry_backoff(config: &NotifierConfig) -> Backoff {
    let initial = config.retry_initial_backoff_ms.max(1);
    let cap = config.retry_max_backoff_ms.max(initial);
    Backoff::new(Duration::from_millis(initial), Duration::from_millis(cap))
}

/// Every live push token of `user`: the bucket's subjects under `<user>.*`, then each key.
pub async fn read_tokens(bucket: &kv::Store, user: &UserId) -> anyhow::Result<Vec<PushToken>> {
    let filter = format!("{}{}", bucket.prefix, subjects::push_tokens_of(user));
    let mut found = bucket.stream.info_with_subjects(filter).await?;
    let mut keys = Vec::new();
    while let Some(entry) = found.next().await {
        let (subject, _) = entry?;
        if let Some(key) = subject.strip_prefix(bucket.prefix.as_str()) {
            keys.push(key.to_string());
        }
    }
    let mut tokens = Vec::with_capacity(keys.len());
    for key in keys {
        // A removed token leaves a delete marker, read as `None`.
        if let Some(value) = bucket.get(key).await?
            && let Ok(entry) = serde_json::from_slice::<PushTokenEntry>(&value)
        {
            tokens.push(entry.into());
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_cap_and_jitters_in_the_upper_half() {
        let config = NotifierConfig {
            retry_initial_backoff_ms: 100,
            retry_max_backoff_ms: 1_000,
            ..Default::default()
        };
        let bounds = |attempt: u32| {
            let full = (100u64 << (attempt - 1)).min(1_000);
            (full / 2, full)
        };
        let mut backoff = retry_backoff(&config);
        for attempt in 1..=40 {
            let wait = backoff.next_delay(&mut rand::rng()).as_millis() as u64;
            let (lo, hi) = bounds(attempt.min(5));
            assert!((lo..=hi).contains(&wait), "attempt {attempt}: {wait} ms");
        }
    }
}
