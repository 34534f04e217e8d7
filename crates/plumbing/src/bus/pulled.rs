//! Taking messages from a shared durable: a pull stream that pulls again when its pull
//! requests were lost.
//!
//! async-nats pulls again when a request is answered as expired, when its own connection is
//! replaced (and then only if the consumer lists no waiting request), or 5 s after a request's
//! expiry passed unanswered. During a NATS node's restart a request can vanish without any of
//! the first two: the consumer's leader leaves, or the listed request was the old
//! connection's. The consumer then sends nothing, not even idle heartbeats, and its messages
//! wait: a router's users saw no message for 4-6 s in the rolling-restart test
//! (tests/tests/rolling_restart.rs). A missed heartbeat (two heartbeat intervals of silence:
//! 1 s for a pinned durable, 10 s for another) means exactly that, so [`Pulled`] drops the
//! stream and pulls anew at once.
//!
//! A new pull carries no pin id. Where the consumer's leader kept no pin, it is pinned at
//! once; where the pin is still this client's from before, it is served when the pin times
//! out (6 s; without the new pull, async-nats would have pulled again with the pin id within
//! 7 s). It pulls anew even while this client is itself disconnected: asking the consumer
//! first (an info request, up to the 5 s request timeout while the consumer has no leader)
//! delayed the new pull past 6 s in a rolling-restart CI run.

use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::durable;

/// The messages of a shared durable consumer, pulled `batch` at a time.
pub struct Pulled {
    consumer: PullConsumer,
    batch: usize,
    messages: pull::Stream,
}

impl Pulled {
    /// Starts pulling.
    pub async fn start(consumer: &PullConsumer, batch: usize) -> anyhow::Result<Self> {
        Ok(Self {
            consumer: consumer.clone(),
            batch,
            messages: durable::pull(consumer, batch).await?,
        })
    }

    /// The next message, or `None` once `stop` is cancelled or the stream ends. Pull errors
    /// are logged and counted (`natter_jetstream_errors_total{operation="fetch"}`) and
    /// skipped; after a missed heartbeat the consumer is pulled anew.
    pub async fn next(&mut self, stop: &CancellationToken) -> Option<Message> {
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return None,
                next = self.messages.next() => next,
            };
            match next? {
                Ok(msg) => return Some(msg),
                Err(e) => self.on_error(e).await,
            }
        }
    }

    /// A message that is already here, if any (never waits).
    pub fn ready(&mut self) -> Option<Message> {
        match self.messages.next().now_or_never() {
            Some(Some(Ok(msg))) => Some(msg),
            _ => None,
        }
    }

    async fn on_error(&mut self, e: pull::MessagesError) {
        crate::jetstream_error("fetch");
        if e.kind() != MessagesErrorKind::MissingHeartbeat {
            tracing::debug!(error = %e, "pull consumer");
            return;
        }
        match durable::pull(&self.consumer, self.batch).await {
            Ok(messages) => {
                tracing::info!(
                    consumer = %self.consumer.cached_info().name,
                    "no heartbeat from the consumer's leader; pulling anew"
                );
                self.messages = messages;
            }
            // The old stream stays; the next missed heartbeat tries again.
            Err(e) => tracing::warn!(error = %e, "cannot pull anew"),
        }
    }
}
