//! Acks, reads and typing: signals published to the chat service without an answer (at most
//! once). The gateway checks that the user takes part in a 1:1 conversation; group
//! membership is checked by the services that act on the signal, which know it. Typing is
//! rate-limited per connection.

use std::time::{Duration, Instant};

use protocol::payloads::{Receipt, ReceiptKind, Typing};
use protocol::{ConversationId, MessageId, subjects};

use super::{Session, Step};
use crate::refusal::Refusal;

/// At most one typing indicator per connection in this interval; more are dropped.
const TYPING_INTERVAL: Duration = Duration::from_secs(1);

impl Session {
    pub(super) fn on_receipt(
        &mut self,
        kind: ReceiptKind,
        conversation: ConversationId,
        id: MessageId,
    ) -> Step {
        if !self.is_participant(&conversation) {
            return Step::Continue;
        }
        let receipt = Receipt {
            kind,
            by: self.user.clone(),
            conversation,
            id,
        };
        let payload = serde_json::to_vec(&receipt).expect("receipt to JSON");
        let nats = self.state.nats.clone();
        Step::Await(Box::pin(async move {
            if let Err(e) = nats.publish(subjects::CHAT_RECEIPT, payload.into()).await {
                tracing::warn!(error = %e, "receipt not published");
            }
        }))
    }

    pub(super) fn on_typing(&mut self, conversation: ConversationId) -> Step {
        if !self.is_participant(&conversation) {
            return Step::Continue;
        }
        let now = Instant::now();
        if self
            .last_typing
            .is_some_and(|t| now.duration_since(t) < TYPING_INTERVAL)
        {
            self.state.metrics.typing_dropped.inc();
            return Step::Continue;
        }
        self.last_typing = Some(now);
        let typing = Typing {
            by: self.user.clone(),
            conversation,
        };
        let payload = serde_json::to_vec(&typing).expect("typing to JSON");
        let nats = self.state.nats.clone();
        Step::Await(Box::pin(async move {
            if let Err(e) = nats.publish(subjects::CHAT_TYPING, payload.into()).await {
                tracing::debug!(error = %e, "typing not published");
            }
        }))
    }

    /// Whether this user takes part in the 1:1 `conversation`; refuses the frame if not.
    /// Group membership is checked by the services that act on the frame, which know it.
    fn is_participant(&mut self, conversation: &ConversationId) -> bool {
        let member = conversation.group_id().is_some() || conversation.has_participant(&self.user);
        if !member {
            self.refuse(Refusal::NotParticipant);
        }
        member
    }
}
