//! The send pipeline. A checked `send` is held to this gateway's limits (body size, sends
//! waiting), answered `accepted`, and queued; the queue is forwarded to the chat service one
//! request at a time, in the order the client sent them, so a conversation's order is the
//! order of the sender's frames. The chat service's answer (`sent`, or an error) is relayed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::frames::{Change, ServerFrame};
use protocol::payloads::SendRequest;
use protocol::{ClientMsgId, ConversationId, Outgoing, Recipient, subjects};

use super::Session;
use crate::quota::SendQuota;
use crate::refusal::Refusal;

type SendResult = Result<async_nats::Message, SendFailure>;
pub(super) type InFlight = Pin<Box<dyn Future<Output = SendResult> + Send>>;

/// Why a send got no answer from the chat service.
#[derive(Debug)]
pub(super) enum SendFailure {
    TimedOut,
    NoChatService,
}

impl Session {
    /// An `edit` or `delete`: sent to the conversation like a message, through the same
    /// limits and queue, so it keeps its place among the user's sends.
    pub(super) fn on_change(
        &mut self,
        conversation: ConversationId,
        cid: ClientMsgId,
        body: String,
        change: Change,
    ) {
        let to = match (conversation.group_id(), conversation.peer_of(&self.user)) {
            (Some(group), _) => Recipient::Group(group),
            (None, Some(peer)) => Recipient::User(peer),
            (None, None) => return self.refuse(Refusal::ForeignChange { cid }),
        };
        self.on_send(Outgoing {
            attachment: None,
            to,
            cid,
            body,
            reply_to: None,
            change: Some(change),
        });
    }

    pub(super) fn on_send(&mut self, outgoing: Outgoing) {
        let Outgoing {
            to,
            cid,
            body,
            reply_to,
            attachment,
            change,
        } = outgoing;
        let max = self.state.config.max_body_bytes;
        if body.len() > max {
            return self.refuse(Refusal::BodyTooLarge { max, cid });
        }
        if self.pending.len() >= self.state.config.max_in_flight_sends {
            return self.refuse(Refusal::SendsWaiting { cid });
        }
        if let Err(retry_after) = self.quota().take(body.len(), Instant::now()) {
            self.state.metrics.sends_rate_limited.inc();
            self.paused = Some(Box::pin(tokio::time::sleep(retry_after)));
            return self.refuse(Refusal::RateLimited { cid, retry_after });
        }
        self.queue(&ServerFrame::Accepted { cid: cid.clone() });
        let (to, group) = match to {
            Recipient::User(user) => (user.to_string(), None),
            Recipient::Group(group) => (String::new(), Some(group.to_string())),
        };
        let request = SendRequest {
            from: self.user.clone(),
            to,
            group,
            cid: cid.to_string(),
            body,
            origin: Some(self.conn),
            reply_to: reply_to.map(|id| id.to_string()),
            attachment: attachment.map(|id| id.to_string()),
            change,
        };
        self.pending.push_back((cid, request));
        if self.in_flight.is_none() {
            self.start_next_send();
        }
    }

    /// The user's send quota on this gateway, taken from the registry on the first send.
    fn quota(&mut self) -> Arc<SendQuota> {
        let (state, user) = (&self.state, &self.user);
        self.quota
            .get_or_insert_with(|| {
                let config = &state.config;
                let (messages, bytes) = (config.send_messages_per_sec, config.send_bytes_per_sec);
                state
                    .local
                    .registry
                    .quota(user, || SendQuota::new(messages, bytes, Instant::now()))
            })
            .clone()
    }

    pub(super) fn start_next_send(&mut self) {
        let Some((cid, request)) = self.pending.pop_front() else {
            return;
        };
        let nats = self.state.nats.clone();
        let subject = subjects::chat_send(&request.from);
        let payload = serde_json::to_vec(&request).expect("send request to JSON");
        let timeout = Duration::from_millis(self.state.config.send_timeout_ms);
        let reask = Duration::from_millis(self.state.config.send_reask_ms);
        let reconnected = self.state.reconnected.subscribe();
        let fut: InFlight = Box::pin(async move {
            let ask = ask_chat(nats, reconnected, reask, subject, payload.into());
            match tokio::time::timeout(timeout, ask).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    Err(SendFailure::NoChatService)
                }
                _ => Err(SendFailure::TimedOut),
            }
        });
        self.in_flight = Some((cid, Instant::now(), fut));
    }

    pub(super) fn on_send_answer(
        &mut self,
        cid: ClientMsgId,
        started: Instant,
        result: SendResult,
    ) {
        let frame = match result {
            Ok(reply) => match serde_json::from_slice::<ServerFrame>(&reply.payload) {
                Ok(frame @ ServerFrame::Sent { .. }) => {
                    self.state.metrics.send_latency.observe(started.elapsed());
                    frame
                }
                Ok(frame @ ServerFrame::Error { .. }) => frame,
                _ => {
                    tracing::warn!("unexpected answer from chat service");
                    Refusal::ChatFailed { cid }.frame()
                }
            },
            Err(failure) => {
                tracing::warn!(?failure, "send not answered");
                Refusal::ChatUnavailable { cid }.frame()
            }
        };
        self.queue(&frame);
    }
}

/// Asks the chat service to persist a send, and asks again when the answer is overdue or
/// the gateway's NATS connection was replaced meanwhile. Core NATS delivers at most once: a
/// request or answer in flight while a connection moves (a NATS node in lame-duck mode or
/// gone, on the gateway's side — `reconnected`, told by `reregister` — or the chat
/// instance's) is lost, and the client would otherwise wait for the whole timeout.
///
/// Overdue is `reask` (0: never), doubling after each ask, so a chat service slow under load
/// is asked at most a few times (1 s: at 1, 3 and 7 s within the 10 s timeout). Asking again is
/// safe: the stream de-duplicates the cid (`Nats-Msg-Id`) and the chat service answers the
/// original message, and this session has one send in flight, so the order holds.
async fn ask_chat(
    nats: async_nats::Client,
    mut reconnected: tokio::sync::watch::Receiver<u64>,
    mut reask: Duration,
    subject: String,
    payload: bytes::Bytes,
) -> Result<async_nats::Message, async_nats::RequestError> {
    loop {
        reconnected.mark_unchanged();
        let request = nats.request(subject.clone(), payload.clone());
        let overdue = async {
            if reask.is_zero() {
                std::future::pending().await
            }
            tokio::time::sleep(reask).await;
        };
        tokio::select! {
            answer = request => match answer {
                // The client's own request timeout (5 s) passed before ours: ask again.
                Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => {}
                answer => return answer,
            },
            // The gateway is shutting down when the sender is gone: wait for the answer.
            Ok(()) = reconnected.changed() => {}
            () = overdue => reask *= 2,
        }
    }
}

pub(super) async fn poll_in_flight(
    in_flight: &mut Option<(ClientMsgId, Instant, InFlight)>,
) -> SendResult {
    match in_flight {
        Some((_, _, fut)) => fut.as_mut().await,
        None => std::future::pending().await,
    }
}
