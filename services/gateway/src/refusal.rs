//! Everything the gateway refuses or fails to do for a client, and the one place that decides
//! what the client sees of it: for a frame, the error code (which tells the client whether to
//! retry) and a fixed text; for a handshake, the HTTP status and a fixed text. Internal error text (NATS, JetStream) is logged where it happens and never
//! reaches a socket.

use protocol::frames::ServerFrame;
use protocol::{ClientMsgId, DecodeError, ErrorCode, Invalid, UserId};

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The frame could not be decoded.
    #[error("{0}")]
    Undecodable(DecodeError),
    /// The frame decoded, but an id or a field is not valid.
    #[error("{0}")]
    Invalid(Invalid),
    #[error("body exceeds {max} bytes")]
    BodyTooLarge { max: usize, cid: ClientMsgId },
    #[error("too many sends waiting; wait for sent")]
    SendsWaiting { cid: ClientMsgId },
    /// Over the user's send limits (`send_messages_per_sec`, `send_bytes_per_sec`).
    #[error("sending too fast; retry in {} ms", retry_after.as_millis() + 1)]
    RateLimited {
        cid: ClientMsgId,
        retry_after: std::time::Duration,
    },
    #[error("too many queries waiting; wait for their answers")]
    QueriesWaiting { qid: Option<ClientMsgId> },
    #[error("a sync is already running; wait for synced")]
    SyncRunning,
    #[error("not a participant of that conversation")]
    NotParticipant,
    /// An `edit` or `delete` in a 1:1 conversation of other users.
    #[error("not a participant of that conversation")]
    ForeignChange { cid: ClientMsgId },
    #[error("no conversation shared with {}", names(.0))]
    NoSharedConversation(Vec<UserId>),
    #[error("presence of {0} unavailable; retry")]
    PresenceUnavailable(UserId),
    #[error("sync failed; send sync again with the same cursor")]
    SyncFailed,
    /// The chat service did not answer a send (or no instance runs).
    #[error("chat service unavailable; retry with the same cid")]
    ChatUnavailable { cid: ClientMsgId },
    /// The chat service answered a send with something that is not an answer to it.
    #[error("chat service failed")]
    ChatFailed { cid: ClientMsgId },
    /// A service did not answer a query in time.
    #[error("service unavailable; retry")]
    ServiceUnavailable { qid: ClientMsgId },
    /// A service answered a query with something undecodable.
    #[error("service failed")]
    ServiceFailed { qid: ClientMsgId },
    #[error("push tokens unavailable; retry")]
    PushTokensUnavailable { qid: ClientMsgId },
}

impl Refusal {
    pub fn code(&self) -> ErrorCode {
        use Refusal::*;
        match self {
            Undecodable(DecodeError::UnknownType(_)) => ErrorCode::UnknownFrameType,
            Undecodable(_) => ErrorCode::MalformedFrame,
            Invalid(invalid) => invalid.fault.code(),
            BodyTooLarge { .. } => ErrorCode::BodyTooLarge,
            SendsWaiting { .. } | QueriesWaiting { .. } | SyncRunning => ErrorCode::TooManyInFlight,
            NotParticipant | ForeignChange { .. } | NoSharedConversation(_) => ErrorCode::Forbidden,
            RateLimited { .. } => ErrorCode::RateLimited,
            PresenceUnavailable(_)
            | SyncFailed
            | ChatUnavailable { .. }
            | ChatFailed { .. }
            | ServiceUnavailable { .. }
            | ServiceFailed { .. }
            | PushTokensUnavailable { .. } => ErrorCode::Unavailable,
        }
    }

    /// Whether the client sent something wrong (counted as a bad frame), rather than the
    /// gateway or a service failing it.
    pub fn is_clients_fault(&self) -> bool {
        !self.code().is_retryable() && !matches!(self, Refusal::NoSharedConversation(_))
    }

    /// The `error` frame the client gets, with the `cid` or `qid` it answers.
    pub fn frame(&self) -> ServerFrame {
        use Refusal::*;
        if let Invalid(invalid) = self {
            return invalid.answer();
        }
        let (cid, qid) = match self {
            BodyTooLarge { cid, .. }
            | RateLimited { cid, .. }
            | SendsWaiting { cid }
            | ChatUnavailable { cid }
            | ForeignChange { cid }
            | ChatFailed { cid } => (Some(cid.clone()), None),
            ServiceUnavailable { qid } | ServiceFailed { qid } | PushTokensUnavailable { qid } => {
                (None, Some(qid.clone()))
            }
            QueriesWaiting { qid } => (None, qid.clone()),
            _ => (None, None),
        };
        let retry_after_ms = match self {
            // Rounded up, so a client that waits exactly this long fits.
            RateLimited { retry_after, .. } => Some(retry_after.as_millis() as u64 + 1),
            _ => None,
        };
        ServerFrame::Error {
            code: self.code(),
            reason: self.to_string(),
            cid,
            qid,
            retry_after_ms,
        }
    }
}

/// Why a WebSocket handshake was answered without an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeRefusal {
    #[error("expected a WebSocket upgrade (version 13)")]
    NotAnUpgrade,
    #[error("missing Sec-WebSocket-Key")]
    NoKey,
    /// The auth error itself is logged (its kind only), never sent.
    #[error("missing or invalid token")]
    Unauthenticated,
    /// A browser page whose origin is not in `gateway.allowed_origins`.
    #[error("origin not allowed")]
    Origin,
    #[error("cursor is not a natter cursor")]
    BadCursor,
    #[error("unsupported subprotocol; offer natter.v1.json or natter.v1.msgpack")]
    Subprotocol,
    #[error("gateway is shutting down")]
    ShuttingDown,
    /// A session could not register its presence, so nothing would be routed to it.
    #[error("gateway is not connected to the message bus")]
    NoBus,
    #[error("gateway is full")]
    Full,
    /// Replays are queued for longer than `sync_wait_max_ms`: come back after `Retry-After`.
    #[error("gateway is busy catching devices up; retry after the Retry-After seconds")]
    CatchingUp,
    #[error("too many connections for this user")]
    TooManyForUser,
    #[error("connection cannot be upgraded")]
    NotUpgradable,
}

impl HandshakeRefusal {
    /// `401` for the token, `403` for a page of another origin, `429` for a user over their connections, `503` when another
    /// gateway should be tried, `400` otherwise.
    pub fn status(self) -> http::StatusCode {
        use HandshakeRefusal::*;
        match self {
            Unauthenticated => http::StatusCode::UNAUTHORIZED,
            TooManyForUser => http::StatusCode::TOO_MANY_REQUESTS,
            Origin => http::StatusCode::FORBIDDEN,
            ShuttingDown | NoBus | Full | CatchingUp => http::StatusCode::SERVICE_UNAVAILABLE,
            NotAnUpgrade | NoKey | BadCursor | Subprotocol | NotUpgradable => {
                http::StatusCode::BAD_REQUEST
            }
        }
    }
}

fn names(users: &[UserId]) -> String {
    let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientMsgId {
        ClientMsgId::new(s).unwrap()
    }

    #[test]
    fn each_refusal_has_its_code_and_answers_its_request() {
        let cases = [
            (
                Refusal::BodyTooLarge {
                    max: 65536,
                    cid: id("c-42"),
                },
                r#"{"type":"error","code":1003,"reason":"body exceeds 65536 bytes","cid":"c-42"}"#,
            ),
            (
                Refusal::QueriesWaiting {
                    qid: Some(id("q1")),
                },
                r#"{"type":"error","code":1005,"reason":"too many queries waiting; wait for their answers","qid":"q1"}"#,
            ),
            (
                Refusal::NoSharedConversation(vec![
                    UserId::new("carol").unwrap(),
                    UserId::new("dave").unwrap(),
                ]),
                r#"{"type":"error","code":1004,"reason":"no conversation shared with carol, dave"}"#,
            ),
            (
                Refusal::ChatUnavailable { cid: id("c1") },
                r#"{"type":"error","code":1500,"reason":"chat service unavailable; retry with the same cid","cid":"c1"}"#,
            ),
            (
                Refusal::Undecodable(DecodeError::UnknownType("shout".into())),
                r#"{"type":"error","code":1001,"reason":"unknown frame type \"shout\""}"#,
            ),
        ];
        for (refusal, json) in cases {
            assert_eq!(serde_json::to_string(&refusal.frame()).unwrap(), json);
        }
        assert!(Refusal::SyncRunning.is_clients_fault());
        assert!(!Refusal::SyncFailed.is_clients_fault());
    }
}
