//! Accepting sends on `natter.chat.send`: validate, de-duplicate, assign the permanent id,
//! persist in the conversation's partition's stream, and answer SENT only after JetStream
//! acknowledged.
//!
//! De-duplication uses JetStream's own: the publish carries `Nats-Msg-Id: <from>:<cid>`, the
//! stream remembers ids for its duplicate window (60 s by default), and a duplicate's ack
//! names the original's sequence, from which the original id is read back. It survives chat
//! restarts because the state lives in the stream, not in this process.

use std::sync::Arc;
use std::time::Instant;

use async_nats::HeaderMap;
use async_nats::jetstream;
use groups::Groups;
use protocol::frames::{Message, ServerFrame};
use protocol::payloads::{SendRequest, StoredMessage};
use protocol::{ClientMsgId, ConversationId, GroupId, UserId, subjects};
use tokio_util::sync::CancellationToken;

use crate::config::ChatConfig;
use crate::ids::MessageIds;
use crate::metrics::ChatMetrics;
use crate::refusal::SendError;

pub struct Ingest {
    pub config: ChatConfig,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub streams: plumbing::bus::MessageStreams,
    /// The deployment's partition count, which names a message's subject.
    pub partitions: u32,
    pub metrics: ChatMetrics,
    pub ids: Arc<MessageIds>,
    pub groups: Groups,
    /// How far history has stored the messages streams (for replies, see `quote`).
    pub history_floor: Arc<plumbing::bus::HistoryFloor>,
    /// The attachments a send may name, and their owners' quotas (`attachments.rs`).
    pub attachments: plumbing::bus::Attachments,
}

/// Joins the chat queue group on send requests.
pub async fn subscribe(nats: &async_nats::Client) -> anyhow::Result<async_nats::Subscriber> {
    plumbing::bus::serve_queue(nats, subjects::CHAT_SEND, subjects::CHAT_QUEUE).await
}

/// Serves send requests until `stop`; requests in progress are finished.
pub async fn serve(
    ingest: Arc<Ingest>,
    sub: async_nats::Subscriber,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let (nats, concurrency) = (ingest.nats.clone(), ingest.config.max_concurrent_sends);
    plumbing::bus::answer_requests(nats, sub, concurrency, stop, |subject, payload| {
        let ingest = ingest.clone();
        async move { ingest.accept(&subject, &payload).await }
    })
    .await
}

impl Ingest {
    /// Turns one send request into its answer: `sent` or `error`.
    async fn accept(&self, subject: &str, payload: &[u8]) -> ServerFrame {
        let frame = self.try_accept(subject, payload).await;
        if let ServerFrame::Error { code, .. } = &frame {
            let code = u16::from(*code).to_string();
            self.metrics.sends_rejected.with(&code).inc();
        }
        frame
    }

    async fn try_accept(&self, subject: &str, payload: &[u8]) -> ServerFrame {
        let Ok(req) = serde_json::from_slice::<SendRequest>(payload) else {
            return SendError::NotARequest.frame(None);
        };
        let Ok(cid) = ClientMsgId::new(&req.cid) else {
            return SendError::InvalidCid.frame(None);
        };
        // Only the subject is guarded by NATS permissions: a payload may not speak for
        // anyone else.
        if subjects::requesting_user(subject).as_ref() != Some(&req.from) {
            return SendError::NotTheSubjectsUser.frame(Some(cid));
        }
        self.persist(req, cid.clone())
            .await
            .unwrap_or_else(|refused| refused.frame(Some(cid)))
    }

    /// Stores the message and answers `sent`, with the original's id for a duplicate.
    async fn persist(&self, req: SendRequest, cid: ClientMsgId) -> Result<ServerFrame, SendError> {
        if req.body.len() > self.config.max_body_bytes {
            let max_bytes = self.config.max_body_bytes;
            return Err(SendError::BodyTooLarge { max_bytes });
        }
        let (conversation, to) = self.addressee(&req).await?;
        let reply = match (&req.reply_to, &req.change) {
            (Some(_), Some(_)) => return Err(SendError::ReplyingChange),
            (Some(reply_to), None) => Some(self.quote(&req.from, &conversation, reply_to).await?),
            (None, _) => None,
        };
        let attachment = match (&req.attachment, &req.change) {
            (None, _) => None,
            (Some(_), Some(_)) => return Err(SendError::ReplyingChange),
            (Some(id), None) => Some(self.attachment(&req.from, &conversation, id).await?),
        };
        let (body, change, removes) = match &req.change {
            Some(change) => {
                let checked = self
                    .check_change(&req.from, &conversation, change, req.body)
                    .await?;
                (checked.body, Some(checked.change), checked.removes)
            }
            None => (req.body, None, None),
        };
        let id = self.ids.next();
        let stored = StoredMessage {
            message: Message {
                reacted: Vec::new(),
                reactions: Vec::new(),
                change,
                deleted: false,
                edited: None,
                id,
                conversation: conversation.clone(),
                from: req.from.clone(),
                to,
                cid: cid.clone(),
                body,
                ts: id.timestamp_ms(),
                cursor: None,
                event: None,
                state: None,
                reply,
                attachment,
            },
            origin: req.origin,
            groups_revision: None,
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            subjects::MSG_ID_HEADER,
            subjects::dedup_id(&req.from, &cid).as_str(),
        );
        let body = serde_json::to_vec(&stored).expect("message to JSON");
        let started = Instant::now();
        let ack = match self
            .js
            .publish_with_headers(
                subjects::message(&conversation, self.partitions),
                headers,
                body.into(),
            )
            .await
        {
            Ok(pending) => pending.await,
            Err(e) => Err(e),
        };
        let ack = ack.map_err(|e| SendError::StoreUnavailable(e.into()))?;
        self.metrics.persist_latency.observe(started.elapsed());
        // The delete is durable: its message's file goes (again, harmlessly, for a retry).
        if let Some((owner, attachment)) = &removes {
            self.remove_attachment(owner, attachment).await;
        }
        if let Some(attachment) = &stored.message.attachment
            && !ack.duplicate
        {
            self.mark_sent(attachment, id).await;
        }
        if !ack.duplicate {
            self.metrics.sends.inc();
            return Ok(ServerFrame::Sent {
                cid,
                id,
                conversation,
                ts: id.timestamp_ms(),
            });
        }
        self.metrics.duplicates.inc();
        let k = subjects::partition(&conversation, self.partitions);
        let original = self.original(k, ack.sequence).await?;
        Ok(ServerFrame::Sent {
            cid,
            id: original.id,
            conversation: original.conversation,
            ts: original.ts,
        })
    }

    /// The conversation of a send and its `to`: the recipient, or for a group the group id
    /// (which has the same alphabet as a user id). Only members may post to a group.
    async fn addressee(&self, req: &SendRequest) -> Result<(ConversationId, UserId), SendError> {
        let Some(group) = &req.group else {
            let to = UserId::new(&req.to).map_err(|_| SendError::InvalidRecipient)?;
            return Ok((ConversationId::direct(&req.from, &to), to));
        };
        let (Ok(group), true) = (GroupId::new(group), req.to.is_empty()) else {
            return Err(SendError::InvalidGroupAddress);
        };
        let member = self
            .groups
            .is_member(&group, &req.from)
            .await
            .map_err(|e| SendError::DirectoryUnavailable(e.into()))?;
        if !member {
            return Err(SendError::NotAMember);
        }
        let to = UserId::new(group.as_str()).expect("a group id is a valid user id");
        Ok((ConversationId::group(&group), to))
    }

    /// The message stored at `sequence` of partition `k` (the original of a duplicate).
    async fn original(&self, k: u32, sequence: u64) -> Result<Message, SendError> {
        let raw = self
            .streams
            .get(k)
            .direct_get(sequence)
            .await
            .map_err(|e| {
                SendError::StoreUnavailable(
                    format!("original of a duplicate unreadable: {e}").into(),
                )
            })?;
        // A decoding error would quote the stored message: the cause names none of it.
        let stored: StoredMessage = serde_json::from_slice(&raw.payload).map_err(|_| {
            SendError::StoreUnavailable("original of a duplicate is not a stored message".into())
        })?;
        Ok(stored.message)
    }
}
