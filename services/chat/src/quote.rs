//! Replies: a send may name the message it answers (`reply_to`), which must be a message of
//! the same conversation. The message is looked up in history, asking as the sender (who may
//! read the conversation: ingest checked it), and quoted in the reply (`Quote`: its id,
//! sender and the start of its body), so that clients show the quote without fetching it.
//!
//! History stores a message a few milliseconds after its `sent`: a "not found" is asked again
//! once the history writers have stored the streams up to their head as it was then, so a
//! reply to a message that just arrived is not refused.

use std::time::Duration;

use protocol::frames::{Message, Quote, ServerFrame};
use protocol::payloads::{HistoryQuery, HistoryRequest};
use protocol::{ClientMsgId, ConversationId, MessageId, UserId, subjects};

use crate::ingest::Ingest;
use crate::refusal::SendError;

/// How long history may take to answer.
const PATIENCE: Duration = Duration::from_secs(5);

impl Ingest {
    /// The quote of message `reply_to` of `conversation`, asked of history as `from`.
    pub(crate) async fn quote(
        &self,
        from: &UserId,
        conversation: &ConversationId,
        reply_to: &str,
    ) -> Result<Quote, SendError> {
        let id: MessageId = reply_to.parse().map_err(|_| SendError::InvalidReplyTo)?;
        if let Some(found) = self.look_up(from, conversation, id).await? {
            return Ok(Quote::of(&found));
        }
        let head = plumbing::bus::heads(&self.js, self.partitions).await;
        if let Some(head) = head
            && self.history_floor.reach(&head).await
            && let Some(found) = self.look_up(from, conversation, id).await?
        {
            return Ok(Quote::of(&found));
        }
        Err(SendError::UnknownReplyTo)
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
        let request = HistoryRequest {
            user: from.clone(),
            qid: ClientMsgId::new("reply").expect("valid id"),
            query: HistoryQuery::Messages {
                conversation: conversation.clone(),
                before: Some(next),
                after: None,
                limit: 1,
            },
        };
        let payload = serde_json::to_vec(&request).expect("history request to JSON");
        let asked = self
            .nats
            .request(subjects::history_query(from), payload.into());
        let reply = tokio::time::timeout(PATIENCE, asked)
            .await
            .map_err(|_| SendError::HistoryUnavailable("history did not answer".into()))?
            .map_err(|e| SendError::HistoryUnavailable(e.into()))?;
        match serde_json::from_slice::<ServerFrame>(&reply.payload) {
            Ok(ServerFrame::History { mut messages, .. }) => {
                Ok(messages.pop().filter(|m| m.id == id))
            }
            Ok(ServerFrame::Error { code, .. }) => Err(SendError::HistoryUnavailable(
                format!("history refused the question with {}", u16::from(code)).into(),
            )),
            Ok(_) => Err(SendError::HistoryUnavailable(
                "history answered with another frame".into(),
            )),
            Err(e) => Err(SendError::HistoryUnavailable(e.into())),
        }
    }
}
