//! Routing persisted messages from the durable consumer `natter-router`: look up the
//! recipient's sessions and the sender's other devices in the presence view, group them by
//! gateway, and publish one delivery per gateway. A message is acknowledged only after its
//! deliveries are published, so a router that dies mid-way leaves it to be routed again by
//! any instance (clients drop the duplicate by message id).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use protocol::frames::ServerFrame;
use protocol::payloads::{Delivery, StoredMessage};
use protocol::{ConnId, GatewayId, UserId, subjects};
use tokio_util::sync::CancellationToken;

use crate::metrics::ChatMetrics;
use crate::presence_view::PresenceView;

/// How long routing waits for the presence view to catch up before it treats a recipient
/// with no known session as offline.
const PRESENCE_PATIENCE: Duration = Duration::from_millis(500);

/// How long a message whose delivery publish failed waits before it is routed again.
const NAK_DELAY: Duration = Duration::from_secs(1);

pub struct Router {
    pub nats: async_nats::Client,
    pub view: PresenceView,
    pub metrics: ChatMetrics,
}

/// Creates the router's durable consumer if needed. Called by ingest too, so that a message
/// persisted before any router ever ran is still routed.
pub async fn ensure_consumer(
    stream: &jetstream::stream::Stream,
    batch: usize,
    ack_wait: Duration,
) -> anyhow::Result<consumer::PullConsumer> {
    plumbing::bus::ensure_durable(
        stream,
        plumbing::bus::Durable {
            name: subjects::ROUTER_CONSUMER,
            description: "routes every message to its recipients' gateways",
            deliver_policy: consumer::DeliverPolicy::New,
            batch,
            ack_wait,
        },
    )
    .await
}

/// Routes messages until `stop`.
pub async fn serve(
    router: Arc<Router>,
    consumer: consumer::PullConsumer,
    batch: usize,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut messages = plumbing::bus::pull(&consumer, batch).await?;
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            next = messages.next() => match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "router consumer error");
                    continue;
                }
                None => break,
            },
        };
        let routed = match serde_json::from_slice::<StoredMessage>(&msg.payload) {
            Ok(stored) => router.route(stored).await,
            Err(e) => {
                // Not ours to fix by retrying: an integrator published garbage to the stream.
                tracing::warn!(error = %e, subject = %msg.subject, "unroutable message");
                true
            }
        };
        let answer = if routed {
            msg.ack().await
        } else {
            // A publish to a gateway failed: have the stream deliver it again shortly.
            msg.ack_with(AckKind::Nak(Some(NAK_DELAY))).await
        };
        if let Err(e) = answer {
            tracing::warn!(error = %e, "router ack failed; the message will be routed again");
        }
    }
    Ok(())
}

impl Router {
    /// Routes one message; `false` if a publish failed and it must be routed again.
    async fn route(&self, stored: StoredMessage) -> bool {
        let message = &stored.message;
        let mut targets = self.view.routes_of(&message.to);
        if targets.is_empty() {
            // Before treating the recipient as offline, make sure no acknowledged connect is
            // still on its way into the view.
            self.view.catch_up(PRESENCE_PATIENCE).await;
            targets = self.view.routes_of(&message.to);
        }
        if message.from != message.to {
            targets.extend(self.view.routes_of(&message.from));
        }
        let mut by_gateway: HashMap<GatewayId, Vec<ConnId>> = HashMap::new();
        for route in targets {
            if Some(route.conn) == stored.origin {
                continue;
            }
            let conns = by_gateway.entry(route.gateway).or_default();
            if !conns.contains(&route.conn) {
                conns.push(route.conn);
            }
        }
        self.metrics.routed.inc();
        self.publish(by_gateway, ServerFrame::Message(stored.message))
            .await
    }

    /// Routes a receipt frame to every session of `user`.
    pub async fn notify_user(&self, user: &UserId, frame: ServerFrame) {
        let mut by_gateway: HashMap<GatewayId, Vec<ConnId>> = HashMap::new();
        for route in self.view.routes_of(user) {
            by_gateway
                .entry(route.gateway)
                .or_default()
                .push(route.conn);
        }
        // Receipts are at most once (documented in subjects.md).
        let _ = self.publish(by_gateway, frame).await;
    }

    /// One publish per gateway, carrying that gateway's target list. `false` if any failed.
    async fn publish(
        &self,
        by_gateway: HashMap<GatewayId, Vec<ConnId>>,
        frame: ServerFrame,
    ) -> bool {
        let mut all_published = true;
        for (gateway, targets) in by_gateway {
            let delivery = Delivery {
                targets,
                frame: frame.clone(),
            };
            let payload = serde_json::to_vec(&delivery).expect("delivery to JSON");
            self.metrics.gateway_publishes.inc();
            if let Err(e) = self
                .nats
                .publish(subjects::gateway_deliver(&gateway), payload.into())
                .await
            {
                tracing::warn!(error = %e, %gateway, "delivery publish failed");
                all_published = false;
            }
        }
        all_published
    }
}
