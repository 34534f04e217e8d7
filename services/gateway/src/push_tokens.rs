//! Push-token registration: a client's `push_token` frame puts (or, with `remove`, deletes)
//! the device's token in the `natter_push_tokens` bucket under `<user>.<token hash>`, where
//! the notifier reads it. A token registered again is the same key, and its age starts
//! again; one not registered for the bucket's max age (60 days) expires.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use protocol::frames::ServerFrame;
use protocol::payloads::PushTokenEntry;
use protocol::{ClientMsgId, ErrorCode, UserId, subjects};

use crate::inbox::to_ws;
use crate::registry::SessionHandle;
use crate::server::Shared;

/// Checks the frame, then stores or removes the token; the answer (`push_token`, or an
/// `error` with the `qid`) goes to the session's outbox. The session awaits it before its
/// next frame, so one session has at most one registration in flight.
pub fn register(
    shared: Arc<Shared>,
    session: Arc<SessionHandle>,
    qid: String,
    platform: String,
    token: String,
    remove: bool,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let answer = match check(&qid, &platform, &token) {
            Err(frame) => {
                shared.metrics.bad_frames.inc();
                *frame
            }
            Ok(qid) => store(&shared, &session.user, qid, platform, token, remove).await,
        };
        session
            .outbox
            .push_at(to_ws(session.encoding.encode_server(&answer)), None);
    })
}

/// The frame's `qid` if the frame is valid, or the error to answer.
fn check(qid: &str, platform: &str, token: &str) -> Result<ClientMsgId, Box<ServerFrame>> {
    let Ok(qid) = ClientMsgId::new(qid) else {
        return Err(Box::new(ServerFrame::error(
            ErrorCode::InvalidId,
            "qid is not a valid id",
            None,
        )));
    };
    if !PushTokenEntry::valid_platform(platform) {
        return Err(Box::new(ServerFrame::query_error(
            ErrorCode::MalformedFrame,
            "platform must match [a-z0-9_-]{1,16}",
            qid,
        )));
    }
    if !PushTokenEntry::valid_token(token) {
        return Err(Box::new(ServerFrame::query_error(
            ErrorCode::MalformedFrame,
            "token must be 1 to 4096 bytes without control characters",
            qid,
        )));
    }
    Ok(qid)
}

async fn store(
    shared: &Shared,
    user: &UserId,
    qid: ClientMsgId,
    platform: String,
    token: String,
    remove: bool,
) -> ServerFrame {
    let key = subjects::push_token_key(user, &token);
    let written = if remove {
        shared
            .push_tokens
            .delete(&key)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else {
        let entry = PushTokenEntry {
            user: user.clone(),
            platform,
            token,
            registered: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let value = serde_json::to_vec(&entry).expect("push token to JSON");
        shared
            .push_tokens
            .put(&key, value.into())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    match written {
        Ok(()) => ServerFrame::PushToken {
            qid,
            registered: !remove,
        },
        Err(e) => {
            // The error names the bucket and the cause, never the token.
            tracing::warn!(error = %e, "push token not stored");
            ServerFrame::query_error(
                ErrorCode::Unavailable,
                "push tokens unavailable; retry",
                qid,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: Result<ClientMsgId, Box<ServerFrame>>) -> ErrorCode {
        match result.map_err(|e| *e) {
            Err(ServerFrame::Error { code, .. }) => code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn bad_frames_are_refused_with_their_reason() {
        assert!(check("q1", "fcm", "abc:DEF-123_x").is_ok());
        assert!(check("q1", "apns_voip", &"f".repeat(4096)).is_ok());
        assert_eq!(code(check("bad qid", "fcm", "t")), ErrorCode::InvalidId);
        for platform in ["", "FCM", "a.b", "x".repeat(17).as_str()] {
            assert_eq!(code(check("q1", platform, "t")), ErrorCode::MalformedFrame);
        }
        for token in ["", "a\nb", "a\u{0}b", "t".repeat(4097).as_str()] {
            assert_eq!(code(check("q1", "fcm", token)), ErrorCode::MalformedFrame);
        }
    }
}
