//! Push-token registration: a client's `push_token` frame puts (or, with `remove`, deletes)
//! the device's token in the `natter_push_tokens` bucket under `<user>.<token hash>`, where
//! the notifier reads it. A token registered again is the same key, and its age starts
//! again; one not registered for the bucket's max age (60 days) expires. The frame was
//! checked by `ClientFrame::validate`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use protocol::frames::ServerFrame;
use protocol::payloads::PushTokenEntry;
use protocol::{ClientMsgId, subjects};

use crate::outbox::to_ws;
use crate::refusal::Refusal;
use crate::registry::SessionHandle;

/// A checked `push_token` frame.
pub struct Registration {
    pub qid: ClientMsgId,
    pub platform: String,
    pub token: String,
    pub remove: bool,
}

/// Stores or removes the token; the answer (`push_token`, or an `error` with the `qid`)
/// goes to the session's outbox. The session awaits it before its next frame, so one
/// session has at most one registration in flight.
pub fn register(
    bucket: kv::Store,
    session: Arc<SessionHandle>,
    registration: Registration,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let answer = match store(&bucket, &session, &registration).await {
            Ok(()) => ServerFrame::PushToken {
                qid: registration.qid,
                registered: !registration.remove,
            },
            Err(e) => {
                // The error names the bucket and the cause, never the token.
                tracing::warn!(error = %e, "push token not stored");
                Refusal::PushTokensUnavailable {
                    qid: registration.qid,
                }
                .frame()
            }
        };
        session
            .outbox
            .push(to_ws(session.encoding.encode_server(&answer)));
    })
}

async fn store(
    bucket: &kv::Store,
    session: &SessionHandle,
    registration: &Registration,
) -> anyhow::Result<()> {
    let key = subjects::push_token_key(&session.user, &registration.token);
    if registration.remove {
        bucket.delete(&key).await?;
        return Ok(());
    }
    let entry = PushTokenEntry {
        user: session.user.clone(),
        platform: registration.platform.clone(),
        token: registration.token.clone(),
        registered: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    let value = serde_json::to_vec(&entry).expect("push token to JSON");
    bucket.put(&key, value.into()).await?;
    Ok(())
}
