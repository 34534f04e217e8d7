//! Receipts from `natter.chat.receipt` (queue group `natter-history`): they move the
//! sender's delivered and read markers in the conversation (which history pages show as the
//! state of the other side's messages),
//! and in groups up to `receipt_lists_max` members they tell the senders of the acknowledged
//! messages, through `natter.chat.notify`. The chat service tells 1:1 senders itself.

use std::sync::Arc;
use std::time::Duration;

use plumbing::Counter;
use protocol::frames::{Message, ServerFrame};
use protocol::payloads::{Notify, Receipt, ReceiptKind};
use protocol::{ConversationId, MessageId, UserId, subjects};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::HistoryCache;
use crate::membership::{Membership, can_read};
use crate::store::{Page, Store};

/// How many times a receipt's message is looked up before giving up: the writer may not have
/// stored a message its recipients already acknowledged (it lags by a few milliseconds).
const LOOKUP_ATTEMPTS: u32 = 6;
/// The wait before the n-th retry is n times this.
const LOOKUP_RETRY_DELAY: Duration = Duration::from_millis(25);
/// A `seen` names the senders of at most this many of the newest messages it covers.
const SEEN_SENDERS_SCAN: usize = 100;
/// Notifications being prepared at once; further receipts wait (back-pressure on the
/// subscription, whose messages NATS buffers and drops beyond its limits).
const MAX_PENDING_NOTIFICATIONS: usize = 256;

/// Receipt counters, exported at `/metrics`.
#[derive(Clone)]
pub struct ReceiptMetrics {
    pub notified: Counter,
    pub misses: Counter,
}

impl ReceiptMetrics {
    pub fn new(metrics: &plumbing::Metrics) -> Self {
        Self {
            notified: metrics.counter(
                "natter_history_receipt_notifications_total",
                "delivered/seen notifications published to group senders",
            ),
            misses: metrics.counter(
                "natter_history_receipt_misses_total",
                "group receipts whose message was still not in the store after retries \
                 (its sender was not told)",
            ),
        }
    }
}

/// What handling receipts needs.
pub struct Receipts<S> {
    pub cache: Arc<HistoryCache<S>>,
    pub membership: Arc<dyn Membership>,
    pub nats: async_nats::Client,
    /// See [`crate::HistoryConfig::receipt_lists_max`].
    pub receipt_lists_max: usize,
    pub metrics: ReceiptMetrics,
}

/// Handles receipts until `stop`, then waits for the notifications under way.
pub async fn serve<S: Store>(
    receipts: Arc<Receipts<S>>,
    mut sub: async_nats::Subscriber,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_NOTIFICATIONS));
    while let Some(receipt) = plumbing::bus::next_json::<Receipt>(&mut sub, &stop).await {
        let Some(previous_read) = receipts.store_markers(&receipt).await else {
            continue;
        };
        let Some(group) = receipt.conversation.group_id() else {
            continue; // the chat service tells 1:1 senders
        };
        let limit = receipts.receipt_lists_max;
        let members = match receipts.membership.members_if_at_most(&group, limit).await {
            Ok((Some(members), _)) => members,
            Ok((None, _)) => continue, // large groups: counts on request only
            Err(e) => {
                tracing::debug!(error = %e, "receipt not told: group membership unknown");
                continue;
            }
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let receipts = receipts.clone();
        tracker.spawn(async move {
            let _permit = permit;
            receipts.tell_senders(members, receipt, previous_read).await;
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

impl<S: Store> Receipts<S> {
    /// Moves the markers a receipt reports. Returns the reader's read marker from before a
    /// `seen` (`Some(None)`: none yet), or `None` when the receipt is refused or not stored.
    async fn store_markers(&self, receipt: &Receipt) -> Option<Option<MessageId>> {
        let (by, conversation) = (&receipt.by, &receipt.conversation);
        match can_read(&*self.membership, by, conversation).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(user = %by, conversation = %conversation, "receipt from a non-member");
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "receipt dropped: group membership unknown");
                return None;
            }
        }
        let stored = match receipt.kind {
            ReceiptKind::Delivered => self
                .cache
                .store()
                .mark_delivered(by, conversation, receipt.id)
                .await
                .map(|()| None),
            ReceiptKind::Seen => {
                let store = self.cache.store();
                // Only a group's senders are told, so only there is the old marker needed.
                let previous = match conversation.is_direct() {
                    true => Ok(None),
                    false => store.read_marker(by, conversation).await,
                };
                match previous {
                    Ok(previous) => store
                        .mark_read(by, conversation, receipt.id)
                        .await
                        .map(|()| previous),
                    Err(e) => Err(e),
                }
            }
        };
        match stored {
            Ok(previous) => Some(previous),
            Err(e) => {
                tracing::warn!(error = %e, kind = ?receipt.kind, "receipt marker not stored");
                None
            }
        }
    }

    /// Publishes `delivered` to the sender of the message, or `seen` to the senders of the
    /// messages read since `previous_read`; never to the reader, nor to former members.
    async fn tell_senders(
        &self,
        members: Vec<UserId>,
        receipt: Receipt,
        previous_read: Option<MessageId>,
    ) {
        if receipt.kind == ReceiptKind::Seen && previous_read >= Some(receipt.id) {
            return; // nothing newly read
        }
        let Some(acked) = self.look_up(&receipt.conversation, receipt.id).await else {
            self.metrics.misses.inc();
            tracing::debug!(conversation = %receipt.conversation, id = %receipt.id, "receipt for a message not in the store");
            return;
        };
        let (mut users, frame) = match receipt.kind {
            ReceiptKind::Delivered => (
                vec![acked.from],
                ServerFrame::Delivered {
                    conversation: receipt.conversation,
                    id: receipt.id,
                    by: receipt.by.clone(),
                },
            ),
            ReceiptKind::Seen => {
                let senders = self
                    .senders_between(&receipt.conversation, previous_read, receipt.id)
                    .await;
                (
                    senders,
                    ServerFrame::Seen {
                        conversation: receipt.conversation,
                        up_to: receipt.id,
                        by: receipt.by.clone(),
                    },
                )
            }
        };
        users.retain(|u| *u != receipt.by && members.contains(u));
        if users.is_empty() {
            return;
        }
        let notify = Notify { users, frame };
        let payload = serde_json::to_vec(&notify).expect("notify to JSON");
        match self
            .nats
            .publish(subjects::CHAT_NOTIFY, payload.into())
            .await
        {
            Ok(()) => self.metrics.notified.inc(),
            Err(e) => tracing::warn!(error = %e, "receipt notification not published"),
        }
    }

    /// The message, retried a few times while the writer may still be storing it.
    async fn look_up(&self, conversation: &ConversationId, id: MessageId) -> Option<Message> {
        for attempt in 0..LOOKUP_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(LOOKUP_RETRY_DELAY * attempt).await;
            }
            match self.cache.message(conversation, id).await {
                Ok(Some(m)) => return Some(m),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "receipt message lookup failed"),
            }
        }
        None
    }

    /// The distinct senders of the newest messages in (`after`, `up_to`], newest first.
    async fn senders_between(
        &self,
        conversation: &ConversationId,
        after: Option<MessageId>,
        up_to: MessageId,
    ) -> Vec<UserId> {
        let through = MessageId(ulid::Ulid(up_to.0.0.saturating_add(1)));
        let page = match self
            .cache
            .page(conversation, Page::Before(through), SEEN_SENDERS_SCAN)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "read messages lookup failed");
                return Vec::new();
            }
        };
        let mut senders: Vec<UserId> = Vec::new();
        for m in page.into_iter().take_while(|m| Some(m.id) > after) {
            if !senders.contains(&m.from) {
                senders.push(m.from);
            }
        }
        senders
    }
}
