//! Where digests go: the [`Provider`] contract and the `log` provider. The `webhook` provider
//! is in `webhook.rs`.

use std::future::Future;
use std::pin::Pin;

use crate::digest::DigestPayload;

/// Why one delivery attempt failed; the variant says whether another attempt may succeed.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// A timeout, a refused connection, a 5xx, a 408 or a 429: try again later.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// The receiver refused this digest (another 4xx): sending it again fails again.
    #[error("rejected: {0}")]
    Rejected(String),
}

pub type Delivering<'a> = Pin<Box<dyn Future<Output = Result<(), DeliverError>> + Send + 'a>>;

/// Delivers a digest to whoever sends the pushes.
///
/// Contract: one call is one attempt; the notifier retries [`DeliverError::Temporary`] with
/// backoff and drops the digest on [`DeliverError::Rejected`]. A provider may be asked to
/// deliver the same digest (same `id`) more than once (a retry after a timeout whose request
/// did arrive, or a notifier restart before the acknowledgement): delivery is at least once.
/// A provider never logs message bodies (a digest has none) or push tokens.
pub trait Provider: Send + Sync + 'static {
    fn deliver<'a>(&'a self, digest: &'a DigestPayload) -> Delivering<'a>;
}

/// Logs one line per digest: who, how many messages in how many conversations, how many
/// push tokens. For development and the all-in-one.
pub struct LogProvider;

impl Provider for LogProvider {
    fn deliver<'a>(&'a self, digest: &'a DigestPayload) -> Delivering<'a> {
        tracing::info!(
            user = %digest.user,
            digest = %digest.id,
            total = digest.total,
            conversations = digest.conversations.len(),
            tokens = digest.tokens.len(),
            "push digest"
        );
        Box::pin(std::future::ready(Ok(())))
    }
}
