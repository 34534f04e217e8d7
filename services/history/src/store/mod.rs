//! The history store: one interface, two implementations (the embedded store on redb, and
//! ScyllaDB), answering the reference design's queries over the same logical tables:
//!
//! * `messages_by_conversation`: a 1:1 conversation's messages, newest first;
//! * `messages_by_group`: a group's messages, partitioned by (group, day bucket);
//! * `user_conversations`: each user's conversations with the newest message;
//! * `read_markers`: how far each user has read each conversation;
//! * `group_members`: who may read and post in a group.
//!
//! Messages are ordered by their id: a ULID sorts by its millisecond timestamp first, so id
//! order is time order, and a cursor is just a message id.
//!
//! Every write is idempotent: messages are immutable rows keyed by id, the conversation list
//! keeps the newest message by id, and read markers only move forward. Replaying a batch
//! changes nothing. Unread counts are derived (messages from others after the read marker)
//! rather than counted, which is what makes replays safe.

pub mod embedded;
pub mod scylla;

use std::future::Future;

use protocol::frames::{ConversationSummary, Message};
use protocol::{ConversationId, GroupId, MessageId, UserId};

/// Unread counts stop at this number ("999+" in a client).
pub const UNREAD_CAP: u32 = 1000;

/// Characters of a message body kept as the conversation list preview.
pub const PREVIEW_CHARS: usize = 100;

/// Milliseconds in one `messages_by_group` bucket.
pub const BUCKET_MS: u64 = 24 * 3600 * 1000;

/// The day bucket of a message.
pub fn bucket_of(id: MessageId) -> u64 {
    id.timestamp_ms() / BUCKET_MS
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// A group member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Member,
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
    /// Writes messages and updates each participant's conversation list, idempotently.
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

    /// `user`'s conversations, most recently active first, with unread counts.
    fn conversations(
        &self,
        user: &UserId,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ConversationSummary>, StoreError>> + Send;

    /// Moves `user`'s read marker in `conversation` forward to `up_to` (never back).
    fn mark_read(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        up_to: MessageId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Adds or updates a group member.
    fn put_member(
        &self,
        group: &GroupId,
        user: &UserId,
        role: Role,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether `user` is a member of `group`.
    fn is_member(
        &self,
        group: &GroupId,
        user: &UserId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Whether `user` may read `conversation`: a participant of a 1:1 conversation, or a
    /// member of the group.
    fn can_read(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async move {
            if conversation.is_direct() {
                return Ok(conversation.has_participant(user));
            }
            match conversation.group_id() {
                Some(group) => self.is_member(&group, user).await,
                None => Ok(false),
            }
        }
    }
}

/// The first `PREVIEW_CHARS` characters of a body.
pub fn preview(body: &str) -> String {
    body.chars().take(PREVIEW_CHARS).collect()
}

pub mod suite;
