//! The state of natter's durable consumers as metrics, labelled by consumer name: what waits
//! (`natter_consumer_pending_messages`), what is delivered and not yet acknowledged, and what
//! was delivered more than once. Each service reports the consumers it works on (the routers
//! and history writers of the partitions it holds, the notifier's), so a consumer that stops
//! while its service runs shows as pending growing: the alert "consumer lag growing" of
//! `deploy/prometheus/natter-rules.yml`.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use tokio_util::sync::CancellationToken;

use super::MessageStreams;
use super::shares::Assigned;
use crate::{GaugeVec, Metrics};

/// How often consumers are looked at: one `CONSUMER.INFO` request per consumer.
const EVERY: Duration = Duration::from_secs(1);

/// The gauges, by consumer.
#[derive(Clone)]
pub struct ConsumerGauges {
    pending: GaugeVec,
    ack_pending: GaugeVec,
    redelivered: GaugeVec,
}

impl ConsumerGauges {
    pub fn register(metrics: &Metrics) -> Self {
        Self {
            pending: metrics.gauge_vec(
                "natter_consumer_pending_messages",
                "messages of the stream the consumer has not delivered yet",
                "consumer",
            ),
            ack_pending: metrics.gauge_vec(
                "natter_consumer_ack_pending_messages",
                "messages the consumer delivered that are not acknowledged yet",
                "consumer",
            ),
            redelivered: metrics.gauge_vec(
                "natter_consumer_redelivered_messages",
                "unacknowledged messages the consumer has delivered more than once",
                "consumer",
            ),
        }
    }

    /// Reads `consumer` of `stream` once; returns its lag (pending and unacknowledged).
    async fn observe(&self, stream: &Stream, consumer: &str) -> Option<u64> {
        match stream.consumer_info(consumer).await {
            Ok(info) => {
                self.pending.with(consumer).set(info.num_pending as i64);
                self.ack_pending
                    .with(consumer)
                    .set(info.num_ack_pending as i64);
                self.redelivered
                    .with(consumer)
                    .set(info.num_redelivered as i64);
                Some(info.num_pending + info.num_ack_pending as u64)
            }
            Err(e) => {
                crate::jetstream_error("consumer_info");
                tracing::debug!(error = %e, consumer, "consumer info unavailable");
                None
            }
        }
    }

    fn forget(&self, consumer: &str) {
        self.pending.remove(consumer);
        self.ack_pending.remove(consumer);
        self.redelivered.remove(consumer);
    }
}

/// Every second until `stop`: the consumer `name(k)` of each partition `k` this instance
/// holds, exported; a partition given away stops being exported. `total` gets the lag of all
/// of them together.
pub async fn report_partitions(
    streams: MessageStreams,
    assigned: Assigned,
    name: fn(u32) -> String,
    gauges: ConsumerGauges,
    total: impl Fn(u64),
    stop: CancellationToken,
) {
    let mut reported = BTreeSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let held = assigned.borrow().clone();
        for k in reported.difference(&held) {
            gauges.forget(&name(*k));
        }
        let mut lag = 0;
        for &k in &held {
            lag += gauges.observe(streams.get(k), &name(k)).await.unwrap_or(0);
        }
        total(lag);
        reported = held;
    }
}

/// Every second until `stop`: the one consumer `name` of `stream`, exported.
pub async fn report_one(
    stream: Stream,
    name: &'static str,
    gauges: ConsumerGauges,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        gauges.observe(&stream, name).await;
    }
}
