//! The message a send names: the one a reply answers (`reply_to`), or the one an edit or a
//! delete changes (`change`), which must be a message of the same conversation. It is looked
//! up in history, asking as the sender (who may read the conversation: ingest checked it). A
//! reply carries its quote (`Quote`: its id, sender and the start of its body), so that
//! clients show the quote without fetching it.
//!
//! History stores a message a few milliseconds after its `sent`: a "not found" for a message
//! id of the last `FRESH` is asked again once the history writers have stored the streams up
//! to their head as it was then, so a reply to (or an edit of) a message that just arrived is
//! not refused. An older id (or one from the future) gets its answer at once: the wait reads
//! the streams' heads and the writers' progress (JetStream API requests), which a client
//! making up ids should not be able to cause for every send.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::frames::{Message, Quote};
use protocol::{ConversationId, MessageId, UserId};

use crate::ingest::Ingest;
use crate::refusal::SendError;

/// How recent a message must be for a "not found" to wait for history to catch up (it lags
/// the streams by milliseconds when it is up).
const FRESH: Duration = Duration::from_secs(30);
/// Clocks of chat instances may disagree by this much.
const CLOCK_SKEW: Duration = Duration::from_secs(2);

impl Ingest {
    /// The quote of message `reply_to` of `conversation`, asked of history as `from`. A
    /// deleted message cannot be answered.
    pub(crate) async fn quote(
        &self,
        from: &UserId,
        conversation: &ConversationId,
        reply_to: &str,
    ) -> Result<Quote, SendError> {
        let id: MessageId = reply_to.parse().map_err(|_| SendError::InvalidReplyTo)?;
        match self.target(from, conversation, id).await? {
            Some(found) if !found.deleted => Ok(Quote::of(&found)),
            _ => Err(SendError::UnknownReplyTo),
        }
    }

    /// Message `id` of `conversation` as history shows it (edited, deleted), asked as `from`;
    /// none when the conversation has no such message.
    pub(crate) async fn target(
        &self,
        from: &UserId,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, SendError> {
        if let Some(found) = self.look_up(from, conversation, id).await? {
            return Ok(Some(found));
        }
        if !is_fresh(id, SystemTime::now()) {
            return Ok(None);
        }
        if self
            .history_floor
            .caught_up(&self.js, self.partitions)
            .await
        {
            return self.look_up(from, conversation, id).await;
        }
        Ok(None)
    }

    /// Message `id` of `conversation`, if history holds it: the newest message before the
    /// next id, which is `id` itself when it exists.
    async fn look_up(
        &self,
        from: &UserId,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, SendError> {
        let next = MessageId(ulid::Ulid(id.0.0.saturating_add(1)));
        let mut page = crate::history_page::newest(&self.nats, from, conversation, Some(next), 1)
            .await
            .map_err(SendError::HistoryUnavailable)?;
        Ok(page.pop().filter(|m| m.id == id))
    }
}

/// Whether `id` was given in the last `FRESH` (as far as clocks agree) at `now`.
fn is_fresh(id: MessageId, now: SystemTime) -> bool {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let at = id.timestamp_ms();
    at <= now_ms + CLOCK_SKEW.as_millis() as u64
        && now_ms.saturating_sub(at) <= FRESH.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recent_ids_wait_for_history() {
        let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let at = |offset_ms: i64| {
            let ms = 1_750_000_000_000i64 + offset_ms;
            MessageId(ulid::Ulid::from_parts(ms as u64, 1))
        };
        assert!(is_fresh(at(0), now));
        assert!(is_fresh(at(-29_000), now));
        assert!(is_fresh(at(1_500), now), "a clock a little ahead");
        assert!(!is_fresh(at(-31_000), now), "old");
        assert!(!is_fresh(at(60_000), now), "from the future");
    }
}
