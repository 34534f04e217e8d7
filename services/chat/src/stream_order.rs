//! Routing in stream order, whatever order the router's consumer delivers in.
//!
//! The consumer normally delivers the stream in order, but not always: when a pull response
//! is lost (a NATS node dies with it in flight), the consumer counts its messages as
//! delivered and sends them again only after `router_ack_wait_ms`, while the messages after
//! them keep coming. Routed in that order, a message would reach a device after later ones,
//! when the device's cursor (everything up to here) already covers it: its gateway would drop
//! it as a copy, and the device would never have it.
//!
//! So the router keeps the sequence up to which everything is routed. A message further on
//! than the next one means messages before it were delivered and lost on the way: the
//! router reads them from the stream and routes them first. When the consumer sends them
//! again, they are acknowledged without routing. Every sequence of the stream is the
//! router's (its consumer has no filter), so in the usual case the next message is the next
//! sequence and this costs nothing; a gap costs one consumer and one stream lookup, plus one
//! read per missing message.

use std::ops::Range;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};

pub struct StreamOrder {
    stream: Stream,
    consumer: PullConsumer,
    /// Every message up to this sequence is routed, by this router or (acknowledged) by
    /// one before it.
    routed: u64,
}

impl StreamOrder {
    pub fn new(stream: Stream, consumer: PullConsumer) -> Self {
        Self {
            stream,
            consumer,
            routed: 0,
        }
    }

    /// Whether the message at `seq` is routed already (the consumer sends it again).
    pub fn is_routed(&self, seq: u64) -> bool {
        seq <= self.routed
    }

    /// The sequences to route before the message at `seq`: after what is routed, and neither
    /// acknowledged by the consumer nor trimmed from the stream. Usually none.
    pub async fn missing_before(&mut self, seq: u64) -> anyhow::Result<Range<u64>> {
        if seq == self.routed + 1 {
            return Ok(seq..seq);
        }
        // The first message this router sees, or one after a gap: what the consumer has
        // acknowledged (routed by a router before this one, or by this one before it lost
        // its pin) needs no routing.
        let acked = self.consumer.get_info().await?.ack_floor.stream_sequence;
        let first = self.stream.get_info().await?.state.first_sequence;
        self.routed = self.routed.max(acked).max(first.saturating_sub(1));
        Ok((self.routed + 1).min(seq)..seq)
    }

    /// The message at `seq`, read from the stream; `None` if it was deleted.
    pub async fn read(&self, seq: u64) -> anyhow::Result<Option<StreamMessage>> {
        match self.stream.get_raw_message(seq).await {
            Ok(message) => Ok(Some(message)),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read message {seq}: {e}")),
        }
    }

    /// The message at `seq` is routed, and everything before it.
    pub fn routed_upto(&mut self, seq: u64) {
        self.routed = self.routed.max(seq);
    }
}
