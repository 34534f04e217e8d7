//! The history store: one interface, two implementations (the embedded store on redb, and
//! ScyllaDB), answering the reference design's queries over the same logical tables:
//!
//! * `messages_by_conversation`: a 1:1 conversation's messages, newest first;
//! * `messages_by_group`: a group's messages, partitioned by (group, day bucket);
//! * `user_conversations`: each user's 1:1 conversations with the newest message;
//! * `group_latest`: each group's newest message (one row per group, not per member: a
//!   member's conversation list merges it in at read time);
//! * `read_markers`: how far each user has received and read each 1:1 conversation;
//! * `group_markers`: how far each member has received and read each group.
//!
//! Membership is not the store's: the chat service owns it (see [`crate::membership`]).
//!
//! Messages are ordered by their id: a ULID sorts by its millisecond timestamp first, so id
//! order is time order, and a cursor is just a message id.
//!
//! Every write is idempotent: messages are rows keyed by id, written once and then changed
//! only by the edit and delete events of their conversation (`Message::apply`: an edit never
//! undoes a later edit or a delete), the conversation list keeps the newest message by id,
//! and markers only move forward. Replaying a batch changes nothing. Unread counts are derived (messages from others after the read marker)
//! rather than counted, which is what makes replays safe.

pub mod embedded;
pub mod scylla;

use std::future::Future;

use protocol::frames::{ConversationSummary, Message};
use protocol::{ConversationId, GroupId, MessageId, UserId};

/// Unread counts stop at this number ("999+" in a client).
pub const UNREAD_CAP: u32 = 1000;

pub use protocol::limits::PREVIEW_CHARS;

/// Milliseconds in one `messages_by_group` bucket.
pub const BUCKET_MS: u64 = 24 * 3600 * 1000;

/// The day bucket of a message.
pub fn bucket_of(id: MessageId) -> u64 {
    id.timestamp_ms() / BUCKET_MS
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Which page of a conversation to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The newest messages.
    Latest,
    /// Messages strictly older than this id (scrolling back).
    Before(MessageId),
    /// Messages strictly newer than this id, oldest first (catching up).
    After(MessageId),
}

/// The storage contract. Implementations must be safe to call concurrently.
pub trait Store: Send + Sync + 'static {
    /// Writes messages and updates each 1:1 participant's conversation list, or the group's
    /// newest message, idempotently. An edit or delete event (`Message::change`) is not
    /// stored as a message: it is applied to the message it names, and to the list entry
    /// whose newest message that is; in a 1:1 conversation its time also counts as activity
    /// (see [`Store::direct_conversations`]).
    /// Returns once the store has confirmed every write.
    fn append(&self, messages: &[Message]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` messages of `conversation`: newest first for `Latest` and `Before`,
    /// oldest first for `After`.
    fn page(
        &self,
        conversation: &ConversationId,
        page: Page,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Message>, StoreError>> + Send;

    /// `user`'s conversations, most recently active first, with unread counts: their 1:1
    /// conversations merged with the newest message of each of `groups` (the user's groups
    /// now, from the membership). Unread counts are computed only for the entries returned.
    fn conversations(
        &self,
        user: &UserId,
        groups: &[GroupId],
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ConversationSummary>, StoreError>> + Send;

    /// Every 1:1 conversation of `user`, with its newest message, unread counts not computed
    /// (0), in no particular order; `last_ts` is the time of the newest message or of a later
    /// edit or delete in the conversation: what a replay must read (the `changed` query).
    fn direct_conversations(
        &self,
        user: &UserId,
    ) -> impl Future<Output = Result<Vec<ConversationSummary>, StoreError>> + Send;

    /// Moves `user`'s read marker in `conversation` forward to `up_to` (never back). In a
    /// group it is also the member's "seen" receipt marker.
    fn mark_read(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        up_to: MessageId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves `user`'s delivered marker in `conversation` forward to `up_to` (never back).
    fn mark_delivered(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        up_to: MessageId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How far `user` has read `conversation`, if at all.
    fn read_marker(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> impl Future<Output = Result<Option<MessageId>, StoreError>> + Send;

    /// How far `user` has received and read `conversation` (1:1 or group).
    fn receipt_markers(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> impl Future<Output = Result<ReceiptMarkers, StoreError>> + Send;

    /// Every member's receipt markers in `group`, from one partition. `delivered` is never
    /// behind `seen` (reading implies receiving).
    fn group_markers(
        &self,
        group: &GroupId,
    ) -> impl Future<Output = Result<Vec<ReceiptMarkers>, StoreError>> + Send;

    /// One message, by id.
    fn message(
        &self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> impl Future<Output = Result<Option<Message>, StoreError>> + Send;
}

/// One user's receipt markers in a conversation (a member's in a group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptMarkers {
    pub user: UserId,
    /// Received up to (at least `seen`).
    pub delivered: Option<MessageId>,
    /// Read up to.
    pub seen: Option<MessageId>,
}

impl ReceiptMarkers {
    /// Builds markers, raising `delivered` to `seen` when it is behind.
    pub fn new(user: UserId, delivered: Option<MessageId>, seen: Option<MessageId>) -> Self {
        Self {
            user,
            delivered: delivered.max(seen),
            seen,
        }
    }
}

/// Sorts summaries most recent first and keeps `limit`.
pub fn newest_first(summaries: &mut Vec<ConversationSummary>, limit: usize) {
    summaries.sort_by_key(|s| std::cmp::Reverse(s.last_id));
    summaries.truncate(limit);
}

/// The first `PREVIEW_CHARS` characters of a body.
pub fn preview(body: &str) -> String {
    body.chars().take(PREVIEW_CHARS).collect()
}

pub mod suite;
