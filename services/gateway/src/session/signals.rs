//! Acks, reads and typing: signals published to the chat service without an answer (at most
//! once). The gateway checks that the user takes part in a 1:1 conversation; group
//! membership is checked by the services that act on the signal, which know it. Receipts
//! pass the connection's `ReceiptGate` (only those that move a marker, at a bounded rate,
//! coalesced above it); typing is rate-limited per connection.

use std::pin::Pin;
use std::time::{Duration, Instant};

use protocol::payloads::{Receipt, ReceiptKind, Typing};
use protocol::{ConversationId, MessageId, subjects};

use super::receipt_gate::{ReceiptGate, Verdict};
use super::{Session, Step, Work};
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
        let now = Instant::now();
        let per_sec = self.state.config.receipts_per_sec;
        let gate = self
            .receipt_gate
            .get_or_insert_with(|| Box::new(ReceiptGate::new(per_sec, now)));
        match gate.offer((conversation.clone(), kind), id, now) {
            Verdict::Send => Step::Await(self.publish_receipts(vec![(conversation, kind, id)])),
            Verdict::Wait => {
                if self.receipt_timer.is_none()
                    && let Some(wait) = gate.next_token()
                {
                    self.receipt_timer = Some(Box::pin(tokio::time::sleep(wait)));
                }
                Step::Continue
            }
            Verdict::Drop => {
                self.state.metrics.receipts_coalesced.inc();
                Step::Continue
            }
        }
    }

    /// Publishes the receipts whose turn has come; re-arms the timer for the rest.
    pub(super) fn release_receipts(&mut self) -> Option<Work> {
        let gate = self.receipt_gate.as_mut()?;
        let released = gate.release(Instant::now());
        if let Some(wait) = gate.next_token() {
            self.receipt_timer = Some(Box::pin(tokio::time::sleep(wait)));
        }
        let receipts = released
            .into_iter()
            .map(|((conversation, kind), id)| (conversation, kind, id))
            .collect::<Vec<_>>();
        (!receipts.is_empty()).then(|| self.publish_receipts(receipts))
    }

    fn publish_receipts(&self, receipts: Vec<(ConversationId, ReceiptKind, MessageId)>) -> Work {
        let payloads: Vec<Vec<u8>> = receipts
            .into_iter()
            .map(|(conversation, kind, id)| {
                let receipt = Receipt {
                    kind,
                    by: self.user.clone(),
                    conversation,
                    id,
                };
                serde_json::to_vec(&receipt).expect("receipt to JSON")
            })
            .collect();
        let nats = self.state.nats.clone();
        Box::pin(async move {
            for payload in payloads {
                if let Err(e) = nats.publish(subjects::CHAT_RECEIPT, payload.into()).await {
                    tracing::warn!(error = %e, "receipt not published");
                }
            }
        })
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

/// Fires when `timer` does (the receipt gate's next slot, or the end of a send pause).
pub(super) async fn timer_fired(timer: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}
