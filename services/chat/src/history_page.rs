//! Questions chat asks history about a conversation's messages, as one of its participants
//! (the chat identity may publish on `natter.history.query.*`): is there any message (a
//! contact check, `group_ops::consent`), and which message has this id (a reply, `quote`).
//!
//! History stores a message a few milliseconds after its `sent`; callers that get "none" and
//! must not be fooled by that lag ask again once `HistoryFloor::caught_up` says so.

use std::time::Duration;

use protocol::frames::{Message, ServerFrame};
use protocol::payloads::{HistoryQuery, HistoryRequest};
use protocol::{ClientMsgId, ConversationId, MessageId, UserId, subjects};

use crate::refusal::Cause;

/// How long history may take to answer.
const PATIENCE: Duration = Duration::from_secs(5);

/// Up to `limit` of `conversation`'s newest messages before `before` (or the newest), asked
/// as `user`; why history could not say otherwise.
pub async fn newest(
    nats: &async_nats::Client,
    user: &UserId,
    conversation: &ConversationId,
    before: Option<MessageId>,
    limit: u32,
) -> Result<Vec<Message>, Cause> {
    let request = HistoryRequest {
        user: user.clone(),
        qid: ClientMsgId::new("chat").expect("valid id"),
        query: HistoryQuery::Messages {
            conversation: conversation.clone(),
            before,
            after: None,
            limit,
        },
    };
    let payload = serde_json::to_vec(&request).expect("history request to JSON");
    let asked = nats.request(subjects::history_query(user), payload.into());
    let reply = tokio::time::timeout(PATIENCE, asked)
        .await
        .map_err(|_| "history did not answer")??;
    match serde_json::from_slice::<ServerFrame>(&reply.payload)? {
        ServerFrame::History { messages, .. } => Ok(messages),
        ServerFrame::Error { code, .. } => {
            Err(format!("history refused the question with {}", u16::from(code)).into())
        }
        _ => Err("history answered with another frame".into()),
    }
}
