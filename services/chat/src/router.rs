//! Routing one persisted message (for a partition's router, `routers.rs`): look up the
//! recipient's sessions and the sender's other devices in the presence view, group them by
//! gateway, and publish one delivery per gateway. Also the at-most-once notices (receipts,
//! typing) that go to users' sessions the same way.
//!
//! Deliveries carry the message's position (`Position`), not a cursor: each device's
//! cursor is its own, written into the frame by its gateway's outbox.
//!
//! Two properties make a device's cursor safe to resume from (see `protocol::cursor`):
//! - **Stream order per partition.** A partition's consumer is pinned: one chat instance
//!   routes it at a time, in stream order, and a failed publish is retried in place rather
//!   than skipped. The others stand by and take over within seconds (unacknowledged messages
//!   are routed again; gateways drop what a device has). Messages the consumer delivered and
//!   lost on the way are read from the stream and routed before the ones after them
//!   (`stream_order`).
//! - **No missed registrations.** A gateway appends a session marker to every partition's
//!   stream when it registers a session; each partition's router waits at its marker until its presence
//!   view has applied that registration. A message written after a device registered is
//!   therefore routed to it; messages written before are the device's replay. This costs
//!   nothing per message.

use std::collections::HashMap;
use std::time::Duration;

use groups::Groups;
use protocol::frames::ServerFrame;
use protocol::payloads::{
    Delivery, DeliveryOrder, OfflineMessage, Position, Progress, SessionMarker, StoredMessage,
};
use protocol::{ConnId, GatewayId, GroupEvent, UserId, subjects};
use tokio_util::sync::CancellationToken;

use crate::config::ChatConfig;
use crate::metrics::ChatMetrics;
use crate::presence::{Directory, Found};
use crate::routers::Numbering;

/// How long routing waits at a membership change for the group view to apply it.
const GROUPS_PATIENCE: Duration = Duration::from_millis(500);
/// How long an at-most-once notice (receipt, typing) waits for a session lookup.
const NOTICE_PATIENCE: Duration = Duration::from_secs(2);

/// Pause before retrying a delivery publish that failed (the NATS connection is down).
pub const RETRY_DELAY: Duration = Duration::from_millis(200);

pub struct Router {
    pub nats: async_nats::Client,
    pub directory: Directory,
    /// Questions about groups of other partitions (typing notices).
    pub groups: Groups,
    pub config: ChatConfig,
    pub metrics: ChatMetrics,
    /// The messages stream's epoch, for the positions stamped on deliveries.
    pub epoch: u64,
    /// The deployment's partition count.
    pub partitions: u32,
}

impl Router {
    /// Routes one message of the stream, a conversation message or a session marker;
    /// `false` if `stop` came while a publish was failing.
    pub async fn handle(
        &self,
        subject: &str,
        payload: &[u8],
        seq: u64,
        numbering: &mut Numbering,
        stop: &CancellationToken,
    ) -> bool {
        if subjects::is_session_marker(subject) {
            match serde_json::from_slice::<SessionMarker>(payload) {
                Ok(marker) => {
                    let registrations = marker.registrations();
                    for registration in &registrations {
                        numbering.routes.forget(&registration.user);
                    }
                    self.directory
                        .note_registrations(&registrations, marker.lease_revision);
                }
                Err(e) => tracing::warn!(error = %e, "undecodable session marker"),
            }
            return true;
        }
        match serde_json::from_slice::<StoredMessage>(payload) {
            Ok(stored) => self.route(stored, seq, numbering, stop).await,
            // Not ours to fix by retrying: an integrator published garbage to the stream.
            Err(e) => {
                tracing::warn!(error = %e, %subject, "unroutable message");
                true
            }
        }
    }

    /// Routes one message; `false` if `stop` came while a publish was failing.
    ///
    /// The recipients are the peer and the sender (other devices) of a 1:1 message, or the
    /// members of a group; their live sessions are grouped by gateway, and each gateway gets
    /// one publish listing its targets, whatever the number of members there.
    async fn route(
        &self,
        stored: StoredMessage,
        seq: u64,
        numbering: &mut Numbering,
        stop: &CancellationToken,
    ) -> bool {
        let mut message = stored.message;
        // Each device's cursor is written by its gateway, from the position.
        message.cursor = None;
        let position = Position {
            epoch: self.epoch,
            partition: subjects::partition(&message.conversation, self.partitions),
            seq,
        };
        let mut group_name = None;
        let (found, offline): (Option<Found>, Vec<UserId>) = match message.conversation.group_id() {
            None => {
                let mut recipients = vec![&message.to];
                if message.from != message.to {
                    recipients.push(&message.from);
                }
                let found = self
                    .directory
                    .lookup_cached(recipients, &mut numbering.routes, stop)
                    .await;
                let offline = found
                    .iter()
                    .flat_map(|f| &f.offline)
                    .filter(|u| **u == message.to && message.to != message.from)
                    .filter(|_| message.change.is_none())
                    .cloned()
                    .collect();
                (found, offline)
            }
            Some(group) => {
                let Some(view) = self.partition_groups(position.partition, stop).await else {
                    return false;
                };
                if let Some(rev) = stored.groups_revision {
                    view.reach(rev, GROUPS_PATIENCE).await;
                }
                let members = view.members(&group);
                // Whoever a system message removes still gets it, to learn of it.
                let former = match &message.event {
                    Some(GroupEvent::Removed { users }) => users.clone(),
                    Some(GroupEvent::Left) => vec![message.from.clone()],
                    _ => Vec::new(),
                };
                let found = self
                    .directory
                    .lookup_cached(members.iter().chain(&former), &mut numbering.routes, stop)
                    .await;
                group_name = view.record(&group).map(|r| r.name);
                let offline = match (&message.event, &message.change) {
                    // Membership changes, edits, deletes and reactions are not worth a push.
                    (Some(_), _) | (_, Some(_)) => Vec::new(),
                    (None, None) => found
                        .iter()
                        .flat_map(|f| &f.offline)
                        .filter(|u| **u != message.from)
                        .cloned()
                        .collect(),
                };
                (found, offline)
            }
        };
        // The lookup gives up only when the router stops: the message is routed again.
        let Some(found) = found else {
            return false;
        };
        let mut by_gateway: HashMap<GatewayId, Vec<ConnId>> = HashMap::new();
        for (_, route) in found.routes {
            if Some(route.conn) != stored.origin {
                by_gateway
                    .entry(route.gateway)
                    .or_default()
                    .push(route.conn);
            }
        }
        if !offline.is_empty() {
            self.metrics.offline_recipients.add(offline.len() as u64);
            for users in offline.chunks(OfflineMessage::MAX_USERS) {
                let event = OfflineMessage {
                    users: users.to_vec(),
                    conversation: message.conversation.clone(),
                    id: message.id,
                    from: message.from.clone(),
                    group_name: group_name.clone(),
                    ts: message.ts,
                };
                self.publish_offline(&event).await;
            }
        }
        self.metrics.routed.inc();
        self.metrics
            .route_lag
            .observe(plumbing::metrics::age_of(message.ts));
        let frame = ServerFrame::Message(message);
        let max_payload = self.max_payload();
        for (gateway, targets) in by_gateway {
            let next = || Some(numbering.next(&gateway));
            for payload in deliveries(targets, &frame, Some(position), max_payload, next) {
                self.metrics.message_publishes.inc();
                while !self.publish(&gateway, payload.clone()).await {
                    tokio::select! {
                        _ = stop.cancelled() => return false,
                        _ = tokio::time::sleep(RETRY_DELAY) => {}
                    }
                }
            }
        }
        true
    }

    /// Sends each gateway in `due` its progress note: the number of this run's last delivery
    /// to it, and the partition routed up to `routed` (see `payloads::Progress`). Published
    /// after those deliveries on the same connection, so it arrives after them. A failed
    /// publish is not retried: the next note follows.
    pub async fn progress(&self, due: Vec<(GatewayId, DeliveryOrder)>, routed: u64) {
        for (gateway, order) in due {
            let note = Progress {
                order,
                position: Position {
                    epoch: self.epoch,
                    partition: order.partition,
                    seq: routed,
                },
            };
            let payload = serde_json::to_vec(&note).expect("progress note to JSON");
            if let Err(e) = self
                .nats
                .publish(subjects::gateway_progress(&gateway), payload.into())
                .await
            {
                tracing::debug!(error = %e, %gateway, "progress note not published");
            }
        }
    }

    /// The groups of partition `k`, which this router routes: held here with the partition
    /// (taken now if the shard is not yet). `None` if `stop` came while it could not be taken.
    async fn partition_groups(
        &self,
        k: u32,
        stop: &CancellationToken,
    ) -> Option<groups::GroupView> {
        loop {
            match self.directory.groups_of_shard(k).await {
                Ok(view) => return Some(view),
                Err(e) => tracing::warn!(error = %e, partition = k, "groups shard not taken"),
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(RETRY_DELAY) => {}
            }
        }
    }

    /// The largest payload the server accepts.
    fn max_payload(&self) -> usize {
        self.nats.server_info().max_payload
    }

    /// Tells whoever sends pushes that `offline.user` has a message waiting.
    pub async fn publish_offline(&self, offline: &OfflineMessage) {
        let payload = serde_json::to_vec(offline).expect("offline message to JSON");
        if let Err(e) = self
            .nats
            .publish(subjects::USER_OFFLINE_MESSAGE, payload.into())
            .await
        {
            tracing::debug!(error = %e, "offline message event not published");
        }
    }

    /// Whether `user` has no live session but `gone` (which its holder may not have dropped
    /// yet); also when the lookup found nothing in time.
    pub async fn offline_but(&self, user: &UserId, gone: ConnId) -> bool {
        self.directory
            .lookup([user], Some(NOTICE_PATIENCE), &CancellationToken::new())
            .await
            .is_none_or(|f| f.routes.iter().all(|(_, r)| r.conn == gone))
    }

    /// Routes a frame to every session of `user` (receipts and typing: at most once, as
    /// documented in subjects.md).
    pub async fn notify_user(&self, user: &UserId, frame: ServerFrame) {
        self.notify_users([user], frame).await
    }

    /// Routes a frame to every session of `users`, one publish per gateway.
    pub async fn notify_users<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
        frame: ServerFrame,
    ) {
        let Some(found) = self
            .directory
            .lookup(users, Some(NOTICE_PATIENCE), &CancellationToken::new())
            .await
        else {
            tracing::debug!("notice dropped: sessions not found in time");
            return;
        };
        let mut by_gateway: HashMap<GatewayId, Vec<ConnId>> = HashMap::new();
        for (_, route) in found.routes {
            by_gateway
                .entry(route.gateway)
                .or_default()
                .push(route.conn);
        }
        let max_payload = self.max_payload();
        for (gateway, targets) in by_gateway {
            for payload in deliveries(targets, &frame, None, max_payload, || None) {
                self.publish(&gateway, payload).await;
            }
        }
    }

    /// One publish to one gateway, carrying its target list. `false` if it failed.
    async fn publish(&self, gateway: &GatewayId, payload: bytes::Bytes) -> bool {
        self.metrics.gateway_publishes.inc();
        match self
            .nats
            .publish(subjects::gateway_deliver(gateway), payload)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, %gateway, "delivery publish failed");
                false
            }
        }
    }
}

/// Room left in a Delivery for its order and JSON punctuation, beyond the frame and targets.
const DELIVERY_OVERHEAD: usize = 256;
/// A target in a Delivery's JSON: a 26-character ULID, its quotes and a comma.
const TARGET_BYTES: usize = 29;

/// The Delivery payloads of `frame` for `targets`, each numbered by `order`: one (the usual
/// case, encoded once), or, when that one would exceed the server's `max_payload` and so fail
/// on every retry, the targets in as many parts as fit, each with its own number.
fn deliveries(
    targets: Vec<ConnId>,
    frame: &ServerFrame,
    position: Option<Position>,
    max_payload: usize,
    mut order: impl FnMut() -> Option<DeliveryOrder>,
) -> Vec<bytes::Bytes> {
    let whole = Delivery {
        targets,
        frame: frame.clone(),
        order: order(),
        position,
    };
    let payload = json(&whole);
    if payload.len() <= max_payload {
        return vec![payload];
    }
    let frame_bytes = payload
        .len()
        .saturating_sub(whole.targets.len() * TARGET_BYTES);
    let room = max_payload.saturating_sub(frame_bytes + DELIVERY_OVERHEAD);
    // Never below one target: a frame alone is a stored message and its cursor, far below
    // the payload limit.
    let per_publish = (room / TARGET_BYTES).max(1);
    let mut first = whole.order;
    whole
        .targets
        .chunks(per_publish)
        .map(|part| {
            json(&Delivery {
                targets: part.to_vec(),
                frame: frame.clone(),
                order: first.take().or_else(&mut order),
                position,
            })
        })
        .collect()
}

fn json(delivery: &Delivery) -> bytes::Bytes {
    serde_json::to_vec(delivery)
        .expect("delivery to JSON")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body_bytes: usize) -> ServerFrame {
        let json = format!(
            r#"{{"type":"message","id":"01JGGVSAKV7Y2XW9P4CQ8R6T3M","conversation":"g:01JGGVS2Q4M3TEAMS0000000AB","from":"alice","to":"01JGGVS2Q4M3TEAMS0000000AB","cid":"c1","body":"{}","ts":1}}"#,
            "\\u0001".repeat(body_bytes)
        );
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn a_delivery_too_large_for_one_publish_is_split_and_each_part_fits() {
        let max_payload = 1024 * 1024;
        // A 60 KB body of control characters is 360 KB of JSON; 40,000 devices of one
        // gateway's members add 1.1 MB of targets.
        let frame = frame(60_000);
        let targets: Vec<ConnId> = (0..40_000).map(|_| ConnId(ulid::Ulid::new())).collect();
        let mut n = 0;
        let mut next = || {
            n += 1;
            Some(DeliveryOrder {
                run: 1,
                n,
                partition: 0,
            })
        };
        let parts = deliveries(targets.clone(), &frame, None, max_payload, &mut next);
        assert!(parts.len() > 1);
        let parts: Vec<Delivery> = parts
            .iter()
            .inspect(|p| assert!(p.len() <= max_payload))
            .map(|p| serde_json::from_slice(p).unwrap())
            .collect();
        let numbers: Vec<u64> = parts.iter().map(|d| d.order.unwrap().n).collect();
        assert_eq!(numbers, (1..=parts.len() as u64).collect::<Vec<_>>());
        let sent: Vec<ConnId> = parts.into_iter().flat_map(|d| d.targets).collect();
        assert_eq!(sent, targets, "every target once, in order");
        // The usual case: one publish, one number.
        let few: Vec<ConnId> = (0..3).map(|_| ConnId(ulid::Ulid::new())).collect();
        assert_eq!(
            deliveries(few, &frame, None, max_payload, &mut next).len(),
            1
        );
        assert_eq!(n, numbers.len() as u64 + 1);
    }
}
