//! Routing a partition in stream order, whatever order its consumer delivers in.
//!
//! A router's consumer normally delivers its partition in order, but not always: when a pull
//! response is lost (a NATS node dies with it in flight, or the partition's former owner
//! stopped reading with a pull outstanding), the consumer counts its messages as delivered
//! and sends them again only after `router_ack_wait_ms`, while the messages after them keep
//! coming. Routed in that order, a message would reach a device after later ones, when the
//! device's cursor (everything of the partition up to here) already covers it: its gateway
//! would drop it as a copy, and the device would never have it.
//!
//! So the router keeps the stream sequence up to which its partition is routed. Its consumer
//! is filtered to everything the partition's stream holds (`natter.msg.<k>.>`), so every
//! sequence reaches some router: a message whose sequence is not the next one after what is
//! routed means messages before it went elsewhere or were lost on the way. The router then
//! reads the partition's messages (and session markers) it has not routed from the stream
//! and routes them first. When the consumer sends them again, they are acknowledged without
//! routing. In the usual case this costs nothing; a gap costs one consumer lookup, and one
//! stream read per missing message for a small gap or one short-lived consumer for a large
//! one (a hand-over drops whole pulls: `natter-bench scale` with three instances read 10,351
//! messages one by one in one run).
//!
//! (The consumer's delivery numbers do not show such a gap: after a hand-over the new owner
//! gets messages the former owner handed back, renumbered, and then the ones after those
//! delivered to the former owner and lost, with no number skipped in between. The chat
//! process of `natter-bench scale` acknowledged 248-448 messages of a partition unrouted
//! that way when the redeliveries came 30 s later.)

use std::time::Duration;

use async_nats::jetstream::consumer::{self, PullConsumer};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use protocol::subjects;

/// A gap of at most this many messages is read from the leader one message at a time.
const READ_ONE_BY_ONE: u64 = 8;
/// Messages of a larger gap read through one consumer at once.
const READ_AT_ONCE: usize = 1_024;
/// How long the consumer reading a gap may wait for its next message.
const READ_PATIENCE: Duration = Duration::from_secs(2);

/// A message of the partition the router had not routed, read from the stream.
pub struct Missing {
    pub seq: u64,
    pub subject: String,
    pub payload: bytes::Bytes,
}

pub struct StreamOrder {
    stream: Stream,
    consumer: PullConsumer,
    /// The partition's messages and session markers: what the consumer delivers.
    subject: String,
    /// Every message of the partition up to this sequence is routed, by this router or
    /// (acknowledged) by one before it.
    routed: u64,
    /// Whether this router has looked where its partition stands (at its first message).
    looked: bool,
}

/// Whether a message at `seq` may have messages before it that are neither routed nor
/// acknowledged: the first one a router gets (it does not know yet what its predecessors
/// routed), or one that is not the next after `routed`.
fn gap_before(looked: bool, routed: u64, seq: u64) -> bool {
    !looked || seq > routed + 1
}

impl StreamOrder {
    pub fn new(stream: Stream, consumer: PullConsumer, partition: u32) -> Self {
        Self {
            stream,
            consumer,
            subject: subjects::partition_messages(partition),
            routed: 0,
            looked: false,
        }
    }

    /// Whether the message at `seq` is routed already (the consumer sends it again).
    pub fn is_routed(&self, seq: u64) -> bool {
        seq <= self.routed
    }

    /// Takes the message at `seq`, not routed yet: `true` if messages before it may be
    /// missing (see [`gap_before`]) and must be looked for (see [`missing`](Self::missing)).
    pub fn gap_before(&mut self, seq: u64) -> bool {
        let gap = gap_before(self.looked, self.routed, seq);
        self.looked = true;
        gap
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

    /// The messages of this router's partition at or after `from` and before `before`, read
    /// from the stream, in order, at most [`READ_AT_ONCE`]: empty when none is missing. A gap
    /// of a few messages is read from the leader one by one; a larger one (a hand-over drops
    /// whole pulls) through an ordered consumer, one request for all. That consumer may sit on
    /// a replica that lags, so where it ends before `before` the leader is asked whether more
    /// exist, and the next call reads them.
    pub async fn missing(&self, from: u64, before: u64) -> anyhow::Result<Vec<Missing>> {
        if before.saturating_sub(from) <= READ_ONE_BY_ONE {
            let first = plumbing::bus::first_from(&self.stream, &self.subject, from).await?;
            return Ok(first
                .filter(|m| m.sequence < before)
                .map(|m| Missing {
                    seq: m.sequence,
                    subject: m.subject.to_string(),
                    payload: m.payload,
                })
                .into_iter()
                .collect());
        }
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.subject.clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await?;
        let mut delivered = consumer.messages().await?;
        let mut read = Vec::new();
        while read.len() < READ_AT_ONCE {
            let next = tokio::time::timeout(READ_PATIENCE, delivered.next()).await;
            let Ok(Some(msg)) = next else { break };
            let msg = msg.map_err(|e| anyhow::anyhow!("{e}"))?;
            let info = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            if seq >= before {
                break;
            }
            read.push(Missing {
                seq,
                subject: msg.subject.to_string(),
                payload: msg.payload.clone(),
            });
            if pending == 0 {
                break;
            }
        }
        if read.is_empty() {
            // The consumer's server had nothing: the leader says whether that is so.
            let first = plumbing::bus::first_from(&self.stream, &self.subject, from).await?;
            anyhow::ensure!(
                first.is_none_or(|m| m.sequence >= before),
                "the stream's replica lags behind the partition's gap; reading again"
            );
        }
        Ok(read)
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
    fn only_a_first_message_or_one_after_a_gap_asks_for_a_look() {
        assert!(
            gap_before(false, 0, 7),
            "the first message this router gets"
        );
        assert!(
            gap_before(false, 6, 7),
            "even the next one, if it is the first"
        );
        assert!(!gap_before(true, 7, 8));
        assert!(
            gap_before(true, 264, 513),
            "265 to 512 went to the former owner and were lost on the way"
        );
        assert!(!gap_before(true, 513, 514));
    }
}
