//! The history writers: one durable consumer per partition's messages stream,
//! `natter-history-writer-<k>`, pinned to one history instance at a time, the partitions
//! shared among the running instances (`plumbing::bus::shares`). So write throughput grows
//! with instances (each partition has its own unacknowledged window), and every message of a
//! conversation is written by one instance at a time, in stream order: the instance that
//! writes a partition is the one whose cache may serve it (see `cache.rs`).
//!
//! A writer takes whatever is available (up to `writer_batch`), writes it to the store in one
//! batch, and acknowledges each message only after the store confirmed the batch. A writer
//! that dies mid-batch leaves its messages unacknowledged; they are delivered again and
//! written again, which changes nothing (every store write is idempotent).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use plumbing::Gauge;
use plumbing::bus::consumer_metrics::{self, ConsumerGauges};
use plumbing::bus::partition_tasks::{PartitionTask, PartitionWork};
use plumbing::bus::shares::Assigned;
use protocol::payloads::StoredMessage;
use protocol::subjects;
use tokio_util::sync::CancellationToken;

use crate::cache::HistoryCache;
use crate::store::Store;

/// How long a failed batch waits before it is tried again.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Creates partition `k`'s writer consumer if needed. It starts at the beginning of the
/// partition's stream: the store must hold everything the stream still has. It reads the
/// whole stream, session markers included (skipped), so a writer with nothing pending has
/// stored everything up to the stream's last sequence.
pub async fn ensure_consumer(
    stream: &jetstream::stream::Stream,
    k: u32,
    batch: usize,
    ack_wait: Duration,
) -> anyhow::Result<consumer::PullConsumer> {
    plumbing::bus::ensure_durable(
        stream,
        plumbing::bus::Durable {
            name: &subjects::history_writer(k),
            filters: vec![subjects::partition_messages(k)],
            description: "writes one partition's messages to the history store",
            deliver_policy: consumer::DeliverPolicy::All,
            batch,
            ack_wait,
            // One instance at a time, in order: its cache then sees every write.
            pinned: true,
        },
    )
    .await
}

/// What the writers need, shared by every partition's.
pub struct Writers<S> {
    pub cache: Arc<HistoryCache<S>>,
    pub streams: plumbing::bus::MessageStreams,
    pub batch: usize,
    pub ack_wait: Duration,
}

impl<S: Store> PartitionWork for Writers<S> {
    const ROLE: &'static str = "history writer";

    fn stream(&self, k: u32) -> &jetstream::stream::Stream {
        self.streams.get(k)
    }

    fn consumer(&self, k: u32) -> String {
        subjects::history_writer(k)
    }

    async fn start(&self, k: u32, stop: CancellationToken) -> anyhow::Result<PartitionTask> {
        let consumer = ensure_consumer(self.streams.get(k), k, self.batch, self.ack_wait).await?;
        // A former owner may still be finishing a batch it pulled: the cache serves this
        // partition once that batch is written or handed to us.
        self.cache.own(k, self.ack_wait);
        Ok(tokio::spawn(write(
            self.cache.clone(),
            consumer,
            self.batch,
            stop,
        )))
    }

    /// The cache stops serving the partition.
    async fn stopped(&self, k: u32) {
        self.cache.disown(k).await;
    }
}

/// Writes one partition's messages until `stop`; the number of messages received.
async fn write<S: Store>(
    cache: Arc<HistoryCache<S>>,
    consumer: consumer::PullConsumer,
    batch: usize,
    stop: CancellationToken,
) -> anyhow::Result<u64> {
    let mut messages = plumbing::bus::Pulled::start(&consumer, batch).await?;
    let mut pending = Vec::with_capacity(batch);
    let mut received = 0;
    // Wait for one message, then take whatever else is already here.
    while let Some(first) = messages.next(&stop).await {
        pending.push(first);
        while pending.len() < batch {
            match messages.ready() {
                Some(m) => pending.push(m),
                None => break,
            }
        }
        received += pending.len() as u64;
        let mut batch_messages = Vec::with_capacity(pending.len());
        for m in &pending {
            if subjects::is_session_marker(m.subject.as_str()) {
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
                _ = stop.cancelled() => return Ok(received),
                _ = tokio::time::sleep(RETRY_DELAY) => {}
            }
        }
        for m in pending.drain(..) {
            if let Err(e) = m.ack().await {
                plumbing::jetstream_error("ack");
                tracing::warn!(error = %e, "history ack failed; the message will be written again");
            }
        }
    }
    Ok(received)
}

/// Exports the lag of this instance's writers (messages of its partitions not yet written),
/// in all and by consumer, every second.
pub async fn report_lag(
    streams: plumbing::bus::MessageStreams,
    assigned: Assigned,
    lag: Gauge,
    consumers: ConsumerGauges,
    stop: CancellationToken,
) {
    let total = move |n: u64| lag.set(n as i64);
    consumer_metrics::report_partitions(
        streams,
        assigned,
        subjects::history_writer,
        consumers,
        total,
        stop,
    )
    .await
}
