//! The history writer: the durable consumer `natter-history-writer` over the messages stream.
//! It takes whatever is available (up to `writer_batch`), writes it to the store in one batch,
//! and acknowledges each message only after the store confirmed the batch. A writer that dies
//! mid-batch leaves its messages unacknowledged; they are delivered again and written again,
//! which changes nothing (every store write is idempotent).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::{FutureExt, StreamExt};
use plumbing::Gauge;
use protocol::payloads::StoredMessage;
use protocol::subjects;
use tokio_util::sync::CancellationToken;

use crate::cache::HistoryCache;
use crate::store::Store;

/// How long a failed batch waits before it is tried again.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Creates the writer's durable consumer if needed. It starts at the beginning of the stream:
/// the store must hold everything the stream still has.
pub async fn ensure_consumer(
    stream: &jetstream::stream::Stream,
    batch: usize,
    ack_wait: Duration,
) -> anyhow::Result<consumer::PullConsumer> {
    plumbing::bus::ensure_durable(
        stream,
        plumbing::bus::Durable {
            name: subjects::HISTORY_CONSUMER,
            description: "writes every message to the history store",
            deliver_policy: consumer::DeliverPolicy::All,
            batch,
            ack_wait,
            // Order does not matter to the store (writes are idempotent): share the load.
            pinned: false,
        },
    )
    .await
}

/// Writes messages until `stop`.
pub async fn serve<S: Store>(
    cache: Arc<HistoryCache<S>>,
    consumer: consumer::PullConsumer,
    batch: usize,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut messages = plumbing::bus::pull(&consumer, batch).await?;
    let mut pending = Vec::with_capacity(batch);
    loop {
        // Wait for one message, then take whatever else is already here.
        let first = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        match first {
            Some(Ok(m)) => pending.push(m),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "history consumer error");
                continue;
            }
            None => return Ok(()),
        }
        while pending.len() < batch {
            match messages.next().now_or_never() {
                Some(Some(Ok(m))) => pending.push(m),
                _ => break,
            }
        }
        let mut batch_messages = Vec::with_capacity(pending.len());
        for m in &pending {
            if m.subject.as_str() == subjects::SESSION_MARKERS {
                continue; // routing's, not history's
            }
            match serde_json::from_slice::<StoredMessage>(&m.payload) {
                Ok(stored) => batch_messages.push(stored.message),
                Err(e) => tracing::warn!(error = %e, subject = %m.subject, "unstorable message"),
            }
        }
        while let Err(e) = cache.append(&batch_messages).await {
            tracing::warn!(error = %e, "history write failed; retrying");
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(RETRY_DELAY) => {}
            }
        }
        for m in pending.drain(..) {
            if let Err(e) = m.ack().await {
                tracing::warn!(error = %e, "history ack failed; the message will be written again");
            }
        }
    }
}

/// Exports the writer's lag (messages in the stream not yet written) every second.
pub async fn report_lag(mut consumer: consumer::PullConsumer, lag: Gauge, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Ok(info) = consumer.info().await {
            lag.set((info.num_pending + info.num_ack_pending as u64) as i64);
        }
    }
}
