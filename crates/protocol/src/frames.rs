//! Client and server frames: what travels over the WebSocket, in either encoding.
//!
//! Ids in client frames arrive as plain strings and are validated by the receiver, so a bad id
//! gets its own error code (`invalid_id`) rather than a generic decode failure.

use serde::{Deserialize, Serialize};

use crate::codes::ErrorCode;
use crate::ids::{ClientMsgId, ConnId, ConversationId, MessageId, UserId};

/// A frame from a client to the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Send a 1:1 message. `cid` is the client's own id, reused on retries.
    Send {
        to: String,
        cid: String,
        body: String,
    },
    /// This device received message `id` of `conversation`; the sender sees `delivered`.
    Ack { conversation: String, id: String },
    /// The user read `conversation` up to and including `up_to`; the sender sees `seen`.
    Read { conversation: String, up_to: String },
    /// Application heartbeat; `ts` is echoed in the `pong`.
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
    },
}

impl ClientFrame {
    /// Every `type` a client may send; used to tell an unknown type from a malformed frame.
    pub const TYPES: &'static [&'static str] = &["send", "ack", "read", "ping"];
}

/// A message as stored in the messages stream and delivered to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub conversation: ConversationId,
    pub from: UserId,
    pub to: UserId,
    /// The sender's client message id.
    pub cid: ClientMsgId,
    pub body: String,
    /// Server time of acceptance, milliseconds since the Unix epoch.
    pub ts: u64,
}

/// A frame from the gateway to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of every session: who the token says you are, and the limits in force.
    Welcome {
        user: UserId,
        conn: ConnId,
        heartbeat_timeout_ms: u64,
        max_body_bytes: usize,
    },
    /// The gateway took the `send` with this `cid` and is persisting it.
    Accepted { cid: ClientMsgId },
    /// The message is durable under its permanent `id` (state SENT).
    Sent {
        cid: ClientMsgId,
        id: MessageId,
        conversation: ConversationId,
        ts: u64,
    },
    /// A message for this device: from the peer, or sent by the user from another device.
    Message(Message),
    /// A device of `by` received message `id` (state DELIVERED).
    Delivered {
        conversation: ConversationId,
        id: MessageId,
        by: UserId,
    },
    /// `by` read the conversation up to and including `up_to` (state SEEN).
    Seen {
        conversation: ConversationId,
        up_to: MessageId,
        by: UserId,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
    },
    /// A request failed; `cid` names the `send` it answers, when there is one.
    Error {
        code: ErrorCode,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cid: Option<ClientMsgId>,
    },
}

impl ServerFrame {
    pub fn error(code: ErrorCode, reason: impl Into<String>, cid: Option<ClientMsgId>) -> Self {
        ServerFrame::Error {
            code,
            reason: reason.into(),
            cid,
        }
    }
}
