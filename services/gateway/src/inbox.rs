//! The gateway's NATS inbox, `natter.gw.<id>.>`: deliveries from the chat service, each one
//! frame for a list of this gateway's connections. The frame is encoded once per encoding
//! and the encoded bytes are shared by every target. A message for a connection that has
//! just closed is reported on `natter.chat.undelivered`.
//!
//! Deliveries are plain NATS publishes: a NATS node that dies while forwarding one loses it,
//! and the device's cursor would then move past it with the next message. So the router
//! numbers each gateway's message deliveries, and a gap in the numbers makes every session
//! here replay from the last message received before it.

use std::sync::Arc;

use futures::StreamExt;
use protocol::encoding::Encoded;
use protocol::frames::ServerFrame;
use protocol::payloads::{Delivery, DeliveryOrder, Undelivered};
use protocol::{Encoding, subjects};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::server::Shared;

/// Subscribes and returns the task that pushes deliveries to sessions.
pub async fn subscribe(shared: Arc<Shared>) -> anyhow::Result<JoinHandle<()>> {
    let mut sub = shared
        .nats
        .subscribe(subjects::gateway_inbox(&shared.gateway))
        .await?;
    plumbing::bus::round_trip(&shared.nats).await;
    let deliver = subjects::gateway_deliver(&shared.gateway);
    Ok(tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if msg.subject.as_str() != deliver {
                tracing::debug!(subject = %msg.subject, "ignoring unknown gateway subject");
                continue;
            }
            match serde_json::from_slice::<Delivery>(&msg.payload) {
                Ok(delivery) => deliver_locally(&shared, delivery),
                Err(e) => tracing::warn!(error = %e, "undecodable delivery"),
            }
        }
    }))
}

/// The last numbered delivery received, to notice one that went missing.
#[derive(Default)]
pub struct DeliveryGaps(std::sync::Mutex<Option<DeliveryOrder>>);

impl DeliveryGaps {
    /// Records `order`; `true` if deliveries of the same router run were skipped.
    fn missed_before(&self, order: DeliveryOrder) -> bool {
        let mut last = self.0.lock().unwrap();
        let missed = last.is_some_and(|l| l.run == order.run && order.n > l.n + 1);
        if last.is_none_or(|l| l.run != order.run || order.n > l.n) {
            *last = Some(order);
        }
        missed
    }
}

pub fn deliver_locally(shared: &Shared, delivery: Delivery) {
    shared.metrics.deliveries.inc();
    if let Some(order) = delivery.order
        && shared.delivery_gaps.missed_before(order)
    {
        // Replay from the last message received before the gap; it precedes the lost ones.
        match shared.routed.get() {
            Some(after) => {
                shared.metrics.delivery_gaps.inc();
                tracing::warn!(
                    run = order.run,
                    n = order.n,
                    "a delivery was lost; sessions replay"
                );
                for (_, handle) in shared.registry.all() {
                    handle.outbox.resync_after(after);
                }
            }
            None => tracing::warn!("a delivery was lost and no stream position is known"),
        }
    }
    let mut json: Option<Message> = None;
    let mut msgpack: Option<Message> = None;
    let message = match &delivery.frame {
        ServerFrame::Message(m) => Some(m),
        _ => None,
    };
    let cursor = message.and_then(|m| m.cursor);
    if let Some(cursor) = cursor {
        shared.routed.observe(cursor);
    }
    let seq = cursor.map(|c| c.seq);
    let mut gone = Vec::new();
    shared.registry.deliver_to(
        &delivery.targets,
        |handle| {
            let slot = match handle.encoding {
                Encoding::Json => &mut json,
                Encoding::MsgPack => &mut msgpack,
            };
            let frame = slot
                .get_or_insert_with(|| to_ws(handle.encoding.encode_server(&delivery.frame)))
                .clone();
            if !handle.outbox.push_at(frame, seq) {
                shared.metrics.slow_consumers.inc();
            }
        },
        |conn, user| gone.push((conn, user.clone())),
    );
    let Some(message) = message else {
        return;
    };
    for (conn, user) in gone {
        shared.metrics.undelivered.inc();
        let report = Undelivered {
            gateway: shared.gateway.clone(),
            conn,
            user,
            conversation: message.conversation.clone(),
            id: message.id,
            from: message.from.clone(),
        };
        let payload = serde_json::to_vec(&report).expect("report to JSON");
        let nats = shared.nats.clone();
        tokio::spawn(async move {
            if let Err(e) = nats
                .publish(subjects::CHAT_UNDELIVERED, payload.into())
                .await
            {
                tracing::debug!(error = %e, "undelivered report not published");
            }
        });
    }
}

pub fn to_ws(encoded: Encoded) -> Message {
    match encoded {
        Encoded::Text(s) => Message::text(s),
        Encoded::Binary(b) => Message::binary(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_number_is_a_gap_and_a_new_run_is_not() {
        let gaps = DeliveryGaps::default();
        let at = |run, n| DeliveryOrder { run, n };
        assert!(!gaps.missed_before(at(1, 1)));
        assert!(!gaps.missed_before(at(1, 2)));
        assert!(gaps.missed_before(at(1, 4)), "3 went missing");
        assert!(!gaps.missed_before(at(1, 5)));
        assert!(!gaps.missed_before(at(2, 1)), "another router took over");
        assert!(!gaps.missed_before(at(2, 2)));
    }
}
