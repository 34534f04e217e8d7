//! The routers: one per partition. Partition `k`'s messages, with the session markers of
//! its stream, come from its durable consumer `natter-router-<k>`, pinned to one
//! chat instance at a time; the partitions are shared among the running instances
//! (`plumbing::bus::shares`), so routing capacity grows with instances. Each routes its
//! partition in stream order (`stream_order`) and numbers its deliveries to each gateway on
//! its own, so a gateway that misses one recovers only that partition; progress notes tell a
//! gateway it missed the last ones before the partition went quiet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use plumbing::bus::partition_tasks::{PartitionTask, PartitionWork};
use protocol::GatewayId;
use protocol::payloads::DeliveryOrder;
use protocol::subjects;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::presence::RouteCache;
use crate::router::{RETRY_DELAY, Router};
use crate::stream_order::StreamOrder;

/// How long a router waits without a message before it asks whether messages are stuck
/// with a former owner of its partition (see `StreamOrder::stuck`).
const STALL_CHECK: Duration = Duration::from_secs(1);
/// How often a router sends progress notes (`natter.gw.<gateway>.progress`).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How many notes a gateway gets once the router's deliveries to it stop (one a tick): a
/// lost note is followed by the next.
const NOTES_AFTER_DELIVERY: u8 = 3;

/// Creates partition `k`'s router consumer if needed. Ingest creates them all too, so that
/// a message persisted before any router ever ran is still routed.
pub async fn ensure_consumer(
    stream: &jetstream::stream::Stream,
    k: u32,
    batch: usize,
    ack_wait: Duration,
) -> anyhow::Result<consumer::PullConsumer> {
    plumbing::bus::ensure_durable(
        stream,
        plumbing::bus::Durable {
            name: &subjects::router(k),
            // Its stream's messages and session markers (every gateway appends a marker to
            // every partition: a device registered before a message was written is a target,
            // whichever partition the message is in).
            filters: vec![subjects::partition_messages(k)],
            description: "routes one partition's messages to their recipients' gateways",
            deliver_policy: consumer::DeliverPolicy::New,
            batch,
            ack_wait,
            pinned: true,
        },
    )
    .await
}

/// What the routers need, shared by every partition's.
pub struct Routers {
    pub router: Arc<Router>,
    pub streams: plumbing::bus::MessageStreams,
    pub batch: usize,
    pub ack_wait: Duration,
}

impl PartitionWork for Routers {
    const ROLE: &'static str = "router";

    fn stream(&self, k: u32) -> &jetstream::stream::Stream {
        self.streams.get(k)
    }

    fn consumer(&self, k: u32) -> String {
        subjects::router(k)
    }

    async fn start(&self, k: u32, stop: CancellationToken) -> anyhow::Result<PartitionTask> {
        let stream = self.streams.get(k);
        let consumer = ensure_consumer(stream, k, self.batch, self.ack_wait).await?;
        self.router.metrics.routing_partitions.inc();
        Ok(tokio::spawn(serve(
            self.router.clone(),
            StreamOrder::new(stream.clone(), consumer.clone(), k),
            consumer,
            Numbering::new(k),
            self.batch,
            stop,
        )))
    }

    async fn stopped(&self, _k: u32) {
        self.router.metrics.routing_partitions.dec();
    }
}

/// A partition router's numbers for its message deliveries to each gateway: a new run
/// each time the partition is taken, counting from 1 per gateway (only the partition's
/// loop numbers them, so they leave in order). It also knows which gateways are owed a
/// progress note: those whose deliveries stopped in the last few ticks.
pub struct Numbering {
    partition: u32,
    run: u64,
    last: HashMap<GatewayId, Sent>,
    /// The sessions this router looked up in shards held elsewhere (its own: it must see
    /// its partition's session markers in order, see `RouteCache`).
    pub routes: RouteCache,
}

/// Deliveries to one gateway in this run, and the notes still owed to it.
#[derive(Default)]
struct Sent {
    n: u64,
    /// `n` at the last tick of the notes.
    at_last_tick: u64,
    notes_owed: u8,
}

impl Numbering {
    pub fn new(partition: u32) -> Self {
        Self {
            partition,
            run: ulid::Ulid::new().random() as u64,
            last: HashMap::new(),
            routes: RouteCache::default(),
        }
    }

    /// The number of the next delivery to `gateway`.
    pub fn next(&mut self, gateway: &GatewayId) -> DeliveryOrder {
        let sent = self.last.entry(gateway.clone()).or_default();
        sent.n += 1;
        DeliveryOrder {
            run: self.run,
            n: sent.n,
            partition: self.partition,
        }
    }

    /// The notes due at this tick, with the number of the last delivery to each gateway: one
    /// for each of the `NOTES_AFTER_DELIVERY` ticks after the router's deliveries to it
    /// stopped. A gateway still getting deliveries needs none (the next one shows a gap), so
    /// steady traffic costs no notes.
    fn notes_due(&mut self) -> Vec<(GatewayId, DeliveryOrder)> {
        let (run, partition) = (self.run, self.partition);
        let mut due = Vec::new();
        for (gateway, sent) in &mut self.last {
            if sent.n != sent.at_last_tick {
                sent.at_last_tick = sent.n;
                sent.notes_owed = NOTES_AFTER_DELIVERY;
            } else if sent.notes_owed > 0 {
                sent.notes_owed -= 1;
                let n = sent.n;
                due.push((gateway.clone(), DeliveryOrder { run, n, partition }));
            }
        }
        due
    }
}

/// Routes one partition until `stop`, in stream order; the number of messages received.
async fn serve(
    router: Arc<Router>,
    mut order: StreamOrder,
    consumer: consumer::PullConsumer,
    mut numbering: Numbering,
    batch: usize,
    stop: CancellationToken,
) -> anyhow::Result<u64> {
    let mut messages = plumbing::bus::Pulled::start(&consumer, batch).await?;
    let mut received = 0;
    let mut quiet_since = Instant::now();
    let mut notes = tokio::time::interval(PROGRESS_EVERY);
    notes.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            msg = messages.next(&stop) => msg,
            _ = notes.tick() => {
                router.progress(numbering.notes_due(), order.routed()).await;
                continue;
            }
            // Nothing for a while: messages may be stuck with a former owner.
            _ = tokio::time::sleep_until(quiet_since + STALL_CHECK) => {
                let stuck = order.stuck().await;
                quiet_since = Instant::now();
                if let Some(upto) = stuck
                    && !catch_up(&router, &mut order, &mut numbering, upto + 1, &stop).await
                {
                    break;
                }
                continue;
            }
        };
        let Some(msg) = msg else { break };
        quiet_since = Instant::now();
        received += 1;
        match msg.info().map(|i| i.stream_sequence) {
            Ok(seq) => {
                if !order.is_routed(seq) {
                    if (order.gap_before(seq)
                        && !catch_up(&router, &mut order, &mut numbering, seq, &stop).await)
                        || !router
                            .handle(&msg.subject, &msg.payload, seq, &mut numbering, &stop)
                            .await
                    {
                        // Stopped mid-retry: left unacknowledged for the next router.
                        hand_back(&mut messages).await;
                        return Ok(received);
                    }
                    order.routed_upto(seq);
                }
            }
            Err(e) => tracing::warn!(error = %e, "a routed message without its stream position"),
        }
        if let Err(e) = msg.ack().await {
            plumbing::jetstream_error("ack");
            tracing::warn!(error = %e, "router ack failed; the message will be routed again");
        }
    }
    hand_back(&mut messages).await;
    Ok(received)
}

/// Hands the messages that reached this router but were not routed back to the consumer at
/// once (the partition goes to another instance): left alone, they would wait for the ack
/// wait, and while a whole window of them waits the consumer delivers nothing else.
async fn hand_back(messages: &mut plumbing::bus::Pulled) {
    while let Some(msg) = messages.ready() {
        if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
            tracing::debug!(error = %e, "not handed back; the ack wait will");
        }
    }
}

/// Routes, from the stream, the partition's messages before `seq` that the consumer
/// delivered and lost on the way (see `stream_order`); `false` if `stop` came first.
async fn catch_up(
    router: &Router,
    order: &mut StreamOrder,
    numbering: &mut Numbering,
    seq: u64,
    stop: &CancellationToken,
) -> bool {
    loop {
        let caught_up = async {
            let mut from = order.look_from(seq).await?;
            let mut lost = 0;
            loop {
                let missing = order.missing(from, seq).await?;
                if missing.is_empty() {
                    break;
                }
                for message in missing {
                    let routed = router
                        .handle(
                            &message.subject,
                            &message.payload,
                            message.seq,
                            numbering,
                            stop,
                        )
                        .await;
                    if !routed {
                        return Ok(false);
                    }
                    order.routed_upto(message.seq);
                    from = message.seq + 1;
                    lost += 1;
                    router.metrics.routed_from_stream.inc();
                }
            }
            if lost > 0 {
                tracing::warn!(
                    lost,
                    before = seq,
                    "the router's consumer lost messages on the way; routed them from the stream"
                );
            }
            anyhow::Ok(true)
        }
        .await;
        match caught_up {
            Ok(go_on) => return go_on,
            Err(e) => {
                tracing::warn!(error = %e, "cannot route the lost messages yet; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return false,
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_go_only_to_gateways_whose_deliveries_stopped_and_only_three_times() {
        let mut numbering = Numbering::new(2);
        let (busy, quiet) = (
            GatewayId::new("busy").unwrap(),
            GatewayId::new("quiet").unwrap(),
        );
        numbering.next(&quiet);
        numbering.next(&busy);
        // The tick after a delivery: nothing yet (a delivery may still follow).
        assert!(numbering.notes_due().is_empty());
        for tick in 0..NOTES_AFTER_DELIVERY {
            numbering.next(&busy);
            let due = numbering.notes_due();
            assert_eq!(due.len(), 1, "tick {tick}: only the quiet gateway");
            assert_eq!(due[0].0, quiet);
            assert_eq!((due[0].1.n, due[0].1.partition), (1, 2));
        }
        assert!(
            numbering.notes_due().iter().all(|(g, _)| *g != quiet),
            "three notes only"
        );
        // The busy gateway's deliveries stop: its notes name its last one.
        let due = numbering.notes_due();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0.clone(), due[0].1.n), (busy, 4));
    }
}
