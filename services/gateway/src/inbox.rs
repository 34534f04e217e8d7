//! The gateway's NATS inbox, `natter.gw.<id>.>`: deliveries from the chat service, each one
//! frame for a list of this gateway's connections. The frame is encoded once per encoding
//! and the encoded bytes are shared by every target.

use std::sync::Arc;

use futures::StreamExt;
use protocol::encoding::Encoded;
use protocol::payloads::Delivery;
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

fn deliver_locally(shared: &Shared, delivery: Delivery) {
    shared.metrics.deliveries.inc();
    let mut json: Option<Message> = None;
    let mut msgpack: Option<Message> = None;
    shared.registry.for_each_of(&delivery.targets, |handle| {
        let slot = match handle.encoding {
            Encoding::Json => &mut json,
            Encoding::MsgPack => &mut msgpack,
        };
        let frame = slot
            .get_or_insert_with(|| to_ws(handle.encoding.encode_server(&delivery.frame)))
            .clone();
        if !handle.outbox.push(frame) {
            shared.metrics.slow_consumers.inc();
        }
    });
}

pub fn to_ws(encoded: Encoded) -> Message {
    match encoded {
        Encoded::Text(s) => Message::text(s),
        Encoded::Binary(b) => Message::binary(b),
    }
}
