//! Numbered error codes (in `error` frames) and WebSocket close codes, in documented ranges
//! that tell a client what to do next without parsing any text.

use serde::{Deserialize, Serialize};

/// The code of an `error` frame.
///
/// * `1000..=1499`: the request is wrong; sending it again unchanged fails again.
/// * `1500..=1999`: a temporary failure; retry the same frame (same `cid`) later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", try_from = "u16")]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame could not be decoded (bad JSON/MessagePack, missing or mistyped field).
    MalformedFrame = 1000,
    /// The frame's `type` is not one this server knows.
    UnknownFrameType = 1001,
    /// An id in the frame is not valid (see `docs/protocol.md`, "Ids").
    InvalidId = 1002,
    /// The message body is larger than the server's `max_body_bytes`.
    BodyTooLarge = 1003,
    /// The user may not do this (for example, acknowledge a foreign conversation).
    Forbidden = 1004,
    /// Too many sends are waiting for their `sent`; wait for some before sending more.
    TooManyInFlight = 1005,
    /// The group (or the member, or the message) does not exist.
    NotFound = 1006,
    /// The group has reached its member limit.
    GroupFull = 1007,
    /// A user named is already in the server's most groups per user.
    TooManyGroups = 1008,
    /// The answer would be larger than the server can carry in one message (NATS's
    /// `max_payload`): ask for a smaller page.
    AnswerTooLarge = 1009,
    /// A user named may be added to groups only by their contacts (users they have exchanged
    /// a 1:1 message with), and the one adding is not one.
    NotAContact = 1010,
    /// The message is older than the server's edit (or delete) window.
    TooLate = 1011,
    /// The message already carries the most different reactions it may.
    TooManyReactions = 1012,
    /// A backend is unavailable; retry the same frame with the same `cid`.
    Unavailable = 1500,
    /// The user is sending faster than the server's per-user limits; retry the same frame
    /// (same `cid`) after the error's `retry_after_ms`.
    RateLimited = 1501,
}

impl ErrorCode {
    pub fn is_retryable(self) -> bool {
        u16::from(self) >= 1500
    }
}

impl From<ErrorCode> for u16 {
    fn from(c: ErrorCode) -> u16 {
        c as u16
    }
}

impl TryFrom<u16> for ErrorCode {
    type Error = String;
    fn try_from(v: u16) -> Result<Self, String> {
        use ErrorCode::*;
        Ok(match v {
            1000 => MalformedFrame,
            1001 => UnknownFrameType,
            1002 => InvalidId,
            1003 => BodyTooLarge,
            1004 => Forbidden,
            1005 => TooManyInFlight,
            1006 => NotFound,
            1007 => GroupFull,
            1008 => TooManyGroups,
            1009 => AnswerTooLarge,
            1010 => NotAContact,
            1011 => TooLate,
            1012 => TooManyReactions,
            1500 => Unavailable,
            1501 => RateLimited,
            other => return Err(format!("unknown error code {other}")),
        })
    }
}

/// The code of a WebSocket close frame sent by natter.
///
/// * `4000..=4499`: reconnect, with the backoff in `docs/protocol.md`.
/// * `4500..=4999`: do not reconnect automatically; something must change first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// The gateway is shutting down or draining: reconnect (to another gateway) now.
    Reconnect = 4000,
    /// No frame arrived within the heartbeat timeout.
    HeartbeatTimeout = 4001,
    /// The client did not read fast enough and its outbound queue filled up.
    SlowConsumer = 4002,
    /// The token expired during the session: reconnect with a fresh token.
    TokenExpired = 4003,
    /// The server failed internally; reconnect.
    ServerError = 4004,
    /// The client broke the protocol (for example, a binary frame on a JSON session).
    ProtocolViolation = 4500,
    /// A frame was larger than `max_frame_bytes`.
    FrameTooLarge = 4501,
}

impl CloseCode {
    pub fn should_reconnect(self) -> bool {
        (self as u16) < 4500
    }

    pub fn from_u16(v: u16) -> Option<Self> {
        use CloseCode::*;
        Some(match v {
            4000 => Reconnect,
            4001 => HeartbeatTimeout,
            4002 => SlowConsumer,
            4003 => TokenExpired,
            4004 => ServerError,
            4500 => ProtocolViolation,
            4501 => FrameTooLarge,
            _ => return None,
        })
    }

    /// The short reason sent in the close frame.
    pub fn reason(self) -> &'static str {
        use CloseCode::*;
        match self {
            Reconnect => "reconnect",
            HeartbeatTimeout => "heartbeat timeout",
            SlowConsumer => "slow consumer",
            TokenExpired => "token expired",
            ServerError => "server error",
            ProtocolViolation => "protocol violation",
            FrameTooLarge => "frame too large",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_ranges_hold() {
        for c in [
            ErrorCode::MalformedFrame,
            ErrorCode::UnknownFrameType,
            ErrorCode::InvalidId,
            ErrorCode::BodyTooLarge,
            ErrorCode::Forbidden,
            ErrorCode::TooManyInFlight,
            ErrorCode::NotFound,
            ErrorCode::GroupFull,
            ErrorCode::TooManyGroups,
            ErrorCode::AnswerTooLarge,
            ErrorCode::NotAContact,
            ErrorCode::TooLate,
            ErrorCode::TooManyReactions,
            ErrorCode::Unavailable,
            ErrorCode::RateLimited,
        ] {
            assert_eq!(ErrorCode::try_from(u16::from(c)), Ok(c));
        }
        assert!(ErrorCode::Unavailable.is_retryable());
        assert!(!ErrorCode::InvalidId.is_retryable());
        for c in 4000..5000 {
            if let Some(code) = CloseCode::from_u16(c) {
                assert_eq!(code as u16, c);
                assert_eq!(code.should_reconnect(), c < 4500);
            }
        }
    }
}
