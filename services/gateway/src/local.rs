//! This gateway's live sessions as the rest of the gateway reaches them: the registry, and
//! delivering one frame to a list of them (deliveries from the inbox, presence changes from
//! the watchers). The frame is encoded once per encoding and the encoded bytes are shared by
//! every target. A message for a connection that has just closed is reported on
//! `natter.chat.undelivered`.
//!
//! Deliveries are plain NATS publishes: a NATS node that dies while forwarding one loses it,
//! and the device's cursor would then move past it with the next message. So each
//! partition's router numbers its message deliveries to each gateway, and a gap in a
//! partition's numbers makes every session here replay that partition from the last message
//! received before it. The last deliveries before a partition goes quiet have no later one to
//! show their loss; the router's progress notes (`progress`) do.
//!
//! Where this gateway's deliveries stand per partition (`RoutedUpto`) is raised after a
//! delivery is in its targets' outboxes: every session here not replaying then has each of
//! its messages up to there, so its cursor may claim them (a device that only gets messages
//! of one partition still moves through the others).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use protocol::frames::ServerFrame;
use protocol::payloads::{Delivery, DeliveryOrder, Position, Progress, Undelivered};
use protocol::{Cursor, Encoding, GatewayId, subjects};
use tokio_tungstenite::tungstenite::Message;

use crate::metrics::GatewayMetrics;
use crate::outbox::to_ws;
use crate::registry::Registry;

/// The sessions of this gateway and where its deliveries stand.
pub struct Local {
    pub gateway: GatewayId,
    pub nats: async_nats::Client,
    pub registry: Registry,
    /// Where this gateway's deliveries stand in the messages stream (see `reregister`), shared
    /// with every session's outbox as a floor for its cursor.
    pub routed: Arc<RoutedUpto>,
    pub gaps: DeliveryGaps,
    pub metrics: GatewayMetrics,
}

impl Local {
    pub fn new(
        gateway: GatewayId,
        nats: async_nats::Client,
        routed_from: Option<Cursor>,
        partitions: u32,
        metrics: GatewayMetrics,
    ) -> Self {
        Self {
            gateway,
            nats,
            registry: Registry::default(),
            routed: Arc::new(RoutedUpto::new(routed_from, partitions)),
            gaps: DeliveryGaps::default(),
            metrics,
        }
    }

    /// Every live session replays its user's messages after `after` (held live messages
    /// are released when it ends).
    pub fn resync_all(&self, after: Cursor) {
        for (_, handle) in self.registry.all() {
            handle.outbox.resync_with_all_after(after.clone());
        }
    }

    /// Pushes `delivery` into its targets' outboxes.
    pub fn deliver(&self, delivery: Delivery) {
        self.metrics.deliveries.inc();
        if let Some(order) = delivery.order
            && self.gaps.missed_before(order)
        {
            self.lost(order);
        }
        let mut json: Option<Message> = None;
        let mut msgpack: Option<Message> = None;
        let message = match &delivery.frame {
            ServerFrame::Message(m) => Some(m),
            _ => None,
        };
        if let Some(m) = message {
            let age = plumbing::metrics::age_of(m.ts);
            self.metrics.delivery_latency.observe(age);
        }
        let position = delivery.position;
        let mut gone = Vec::new();
        self.registry.deliver_to(
            &delivery.targets,
            |handle| {
                let slot = match handle.encoding {
                    Encoding::Json => &mut json,
                    Encoding::MsgPack => &mut msgpack,
                };
                let frame = slot
                    .get_or_insert_with(|| to_ws(handle.encoding.encode_server(&delivery.frame)))
                    .clone();
                // A full outbox evicts its session, which counts itself as a slow consumer.
                let _ = match position {
                    Some(at) => handle.outbox.push_routed(&frame, at),
                    None => handle.outbox.push(frame),
                };
            },
            |conn, user| gone.push((conn, user.clone())),
        );
        // Only now: a session's cursor may claim it once it is in the session's outbox.
        if let Some(at) = position {
            self.routed.observe(at);
        }
        let Some(message) = message else {
            return;
        };
        for (conn, user) in gone {
            self.metrics.undelivered.inc();
            let report = Undelivered {
                gateway: self.gateway.clone(),
                conn,
                user,
                conversation: message.conversation.clone(),
                id: message.id,
                from: message.from.clone(),
                silent: message.event.is_some() || message.change.is_some(),
            };
            let payload = serde_json::to_vec(&report).expect("report to JSON");
            let nats = self.nats.clone();
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

    /// A router's progress note: replays its partition if deliveries it announces were lost,
    /// else raises where this gateway's deliveries stand to the note's position.
    pub fn progress(&self, note: Progress) {
        self.metrics.progress_notes.inc();
        match self.gaps.missed_by(note.order) {
            Missed::No => self.routed.observe(note.position),
            Missed::Yes => self.lost(note.order),
            // Notes go only to gateways delivered to in the router's run: either the
            // deliveries were all lost, or this gateway restarted since (with the same id).
            // Replay (harmless after a restart: its sessions are new), but do not count it as a
            // lost delivery, or every restart would look like one per partition.
            Missed::Unknown => {
                tracing::info!(
                    partition = note.order.partition,
                    "a progress note of a partition not heard from; sessions replay it"
                );
                self.replay_partition(note.order.partition);
            }
        }
    }

    /// Deliveries up to `order` were lost: counted, and every session replays the partition.
    fn lost(&self, order: DeliveryOrder) {
        self.metrics.delivery_gaps.inc();
        tracing::warn!(
            partition = order.partition,
            run = order.run,
            n = order.n,
            "a delivery was lost; sessions replay its partition"
        );
        self.replay_partition(order.partition);
    }

    /// Every session replays partition `k` from the last message of it received before the
    /// lost deliveries; that one precedes them.
    fn replay_partition(&self, k: u32) {
        let Some(routed) = self.routed.get() else {
            tracing::warn!("a delivery was lost and no stream position is known");
            return;
        };
        let upto = routed.seqs.get(k as usize).copied().unwrap_or_default();
        for (_, handle) in self.registry.all() {
            handle.outbox.resync_partition(k, upto, &routed);
        }
    }
}

/// The last numbered delivery received from each partition's router, to notice one that
/// went missing.
#[derive(Default)]
pub struct DeliveryGaps(Mutex<HashMap<u32, DeliveryOrder>>);

impl DeliveryGaps {
    /// Records a delivery's `order`; `true` if deliveries before it were lost: its number
    /// skips within a run, or it is not the first of a new run of a partition heard from
    /// before (a run numbers each gateway's deliveries from 1). The first delivery this gateway
    /// hears of a partition is taken as it is (the router may have counted deliveries to this
    /// gateway's previous run).
    fn missed_before(&self, order: DeliveryOrder) -> bool {
        let mut last = self.0.lock().unwrap();
        let Some(last) = last.get_mut(&order.partition) else {
            last.insert(order.partition, order);
            return false;
        };
        let missed = if last.run == order.run {
            order.n > last.n + 1
        } else {
            order.n > 1
        };
        if last.run != order.run || order.n > last.n {
            *last = order;
        }
        missed
    }

    /// Records a progress note's `order` (the router's last delivery here): whether
    /// deliveries up to it were lost. They were if the last one heard of its partition is of
    /// the same run and numbered below it, or of another run; it is unknown if nothing was
    /// heard of the partition.
    fn missed_by(&self, order: DeliveryOrder) -> Missed {
        let mut last = self.0.lock().unwrap();
        let Some(last) = last.get_mut(&order.partition) else {
            last.insert(order.partition, order);
            return Missed::Unknown;
        };
        if last.run != order.run || order.n > last.n {
            *last = order;
            return Missed::Yes;
        }
        Missed::No
    }
}

/// What a progress note says of the deliveries before it.
#[derive(Debug, PartialEq, Eq)]
enum Missed {
    No,
    Yes,
    /// Nothing was heard of the partition.
    Unknown,
}

/// Where the messages routed to this gateway stand, per partition (from the stream's head
/// when it started): what the inbox has received so far.
pub struct RoutedUpto {
    upto: Mutex<Option<Cursor>>,
    partitions: u32,
}

impl RoutedUpto {
    pub fn new(start: Option<Cursor>, partitions: u32) -> Self {
        Self {
            upto: Mutex::new(start),
            partitions,
        }
    }

    /// Records a delivered message's position.
    pub fn observe(&self, at: Position) {
        let mut upto = self.upto.lock().unwrap();
        let cursor = match &mut *upto {
            Some(c) if c.epoch == at.epoch && c.partitions() == self.partitions => c,
            // A new epoch (the stream was recreated) starts over.
            slot => slot.insert(Cursor::head(at.epoch, 0, self.partitions)),
        };
        cursor.advance(at.partition, at.seq);
    }

    pub fn get(&self) -> Option<Cursor> {
        self.upto.lock().unwrap().clone()
    }

    /// Raises `cursor` to where this gateway's deliveries stand.
    pub fn raise(&self, cursor: &mut Cursor) {
        if let Some(upto) = &*self.upto.lock().unwrap() {
            cursor.raise(upto);
        }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(run: u64, n: u64) -> DeliveryOrder {
        DeliveryOrder {
            run,
            n,
            partition: 0,
        }
    }

    #[test]
    fn a_skipped_number_is_a_gap_and_so_is_a_new_run_not_starting_at_one() {
        let gaps = DeliveryGaps::default();
        assert!(
            !gaps.missed_before(at(1, 7)),
            "the first heard is taken as it is"
        );
        assert!(!gaps.missed_before(at(1, 8)));
        assert!(gaps.missed_before(at(1, 10)), "9 went missing");
        assert!(!gaps.missed_before(at(1, 11)));
        assert!(!gaps.missed_before(at(2, 1)), "another router took over");
        assert!(!gaps.missed_before(at(2, 2)));
        assert!(
            gaps.missed_before(at(3, 2)),
            "the next router's first went missing"
        );
        // Each partition's router numbers on its own.
        let other = DeliveryOrder {
            run: 3,
            n: 7,
            partition: 1,
        };
        assert!(!gaps.missed_before(other), "the first of partition 1");
        assert!(!gaps.missed_before(at(3, 3)));
        assert!(gaps.missed_before(DeliveryOrder { n: 9, ..other }));
    }

    #[test]
    fn a_note_ahead_of_the_last_delivery_is_a_loss_once() {
        let gaps = DeliveryGaps::default();
        assert_eq!(
            gaps.missed_by(at(1, 4)),
            Missed::Unknown,
            "nothing heard of the partition: all lost, or a restart"
        );
        assert!(!gaps.missed_before(at(1, 5)));
        assert_eq!(
            gaps.missed_by(at(1, 5)),
            Missed::No,
            "every delivery arrived"
        );
        assert_eq!(
            gaps.missed_by(at(1, 6)),
            Missed::Yes,
            "the last one went missing"
        );
        assert_eq!(gaps.missed_by(at(1, 6)), Missed::No, "no new loss");
        assert!(
            !gaps.missed_before(at(1, 7)),
            "deliveries count on from the note"
        );
        assert_eq!(
            gaps.missed_by(at(2, 1)),
            Missed::Yes,
            "a new run whose only delivery went missing"
        );
        assert!(!gaps.missed_before(at(2, 2)));
    }
}
