//! Routing a partition in stream order, whatever order its consumer delivers in.
//!
//! A router's consumer normally delivers its partition in order, but not always: when a pull
//! response is lost (a NATS node dies with it in flight), the consumer counts its messages as
//! delivered and sends them again only after `router_ack_wait_ms`, while the messages after
//! them keep coming. Routed in that order, a message would reach a device after later ones,
//! when the device's cursor (everything of the partition up to here) already covers it: its
//! gateway would drop it as a copy, and the device would never have it.
//!
//! So the router keeps the stream sequence up to which its partition is routed, and the
//! consumer's delivery number of the last message it got. Deliveries are numbered one by one
//! (sent again or not), so a number that skips means deliveries were lost on the way: the
//! router then reads the partition's messages (and session markers) it has not routed from
//! the stream and routes them first. When the consumer sends them again, they are
//! acknowledged without routing. In the usual case this costs nothing; a skip costs one
//! consumer lookup and one stream read per missing message.

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use protocol::subjects;

pub struct StreamOrder {
    stream: Stream,
    consumer: PullConsumer,
    /// The partition's messages and session markers: what the consumer delivers.
    subject: String,
    /// Every message of the partition up to this sequence is routed, by this router or
    /// (acknowledged) by one before it.
    routed: u64,
    deliveries: Deliveries,
}

/// The consumer's number of the last delivery this router got; 0 before the first.
#[derive(Default)]
struct Deliveries(u64);

impl Deliveries {
    /// Takes delivery number `n`: `true` if it is the first, or deliveries were skipped.
    fn skipped(&mut self, n: u64) -> bool {
        let skipped = self.0 == 0 || n != self.0 + 1;
        self.0 = self.0.max(n);
        skipped
    }
}

impl StreamOrder {
    pub fn new(stream: Stream, consumer: PullConsumer, partition: u32) -> Self {
        Self {
            stream,
            consumer,
            subject: subjects::partition_messages(partition),
            routed: 0,
            deliveries: Deliveries::default(),
        }
    }

    /// Whether the message at `seq` is routed already (the consumer sends it again).
    pub fn is_routed(&self, seq: u64) -> bool {
        seq <= self.routed
    }

    /// Takes delivery number `delivery` of the message at `seq`: `true` if deliveries before
    /// it may have been lost on the way (the first one this router gets, or one after a skip),
    /// and the messages before it must be looked for (see [`missing`](Self::missing)).
    pub fn delivered(&mut self, delivery: u64) -> bool {
        self.deliveries.skipped(delivery)
    }

    /// After a skip, before routing the message at `seq`: where to look for messages the
    /// consumer delivered and lost. What the consumer has acknowledged (routed by a router
    /// before this one, or by this one before it lost its pin) needs no routing.
    pub async fn look_from(&mut self, seq: u64) -> anyhow::Result<u64> {
        let acked = self.consumer.get_info().await?.ack_floor.stream_sequence;
        self.routed = self.routed.max(acked);
        Ok((self.routed + 1).min(seq))
    }

    /// After a while without a message: the last sequence the consumer delivered, if it is
    /// past what is routed and still unacknowledged. Those messages went to a former owner
    /// of the partition whose pulls were dropped on the way (it handed the partition over):
    /// they would wait for the ack wait, and while a whole window of them waits the consumer
    /// delivers nothing, so nothing would show this router the skip. `None` on a lookup
    /// failure too (the next check asks again).
    pub async fn stuck(&mut self) -> Option<u64> {
        let info = self.consumer.get_info().await.ok()?;
        let delivered = info.delivered.stream_sequence;
        (info.num_ack_pending > 0 && delivered > self.routed.max(info.ack_floor.stream_sequence))
            .then_some(delivered)
    }

    /// The first message of this router's at or after `from` and before `before`, read from
    /// the stream.
    pub async fn missing(&self, from: u64, before: u64) -> anyhow::Result<Option<StreamMessage>> {
        match self
            .stream
            .get_first_raw_message_by_subject(&self.subject, from)
            .await
        {
            Ok(m) if m.sequence < before => Ok(Some(m)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => anyhow::bail!("cannot read the stream from {from}: {e}"),
        }
    }

    /// Every message of the partition up to this sequence is routed.
    pub fn routed(&self) -> u64 {
        self.routed
    }

    /// The message at `seq` is routed, and every one of the partition before it.
    pub fn routed_upto(&mut self, seq: u64) {
        self.routed = self.routed.max(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_first_or_skipped_delivery_number_asks_for_a_look() {
        let mut deliveries = Deliveries::default();
        assert!(deliveries.skipped(7), "the first delivery this router gets");
        assert!(!deliveries.skipped(8));
        assert!(deliveries.skipped(10), "delivery 9 was lost on the way");
        assert!(!deliveries.skipped(11));
        assert!(deliveries.skipped(3), "an old number is not the next one");
        assert!(!deliveries.skipped(12));
    }
}
