//! Presence watching: a `presence` frame watches users this user shares a conversation with
//! (they have exchanged a message). It is answered with each one's presence now; changes
//! follow as they happen (`watchers.rs`). Users without a shared conversation are refused
//! together, by name.

use std::time::Duration;

use protocol::frames::ServerFrame;
use protocol::payloads::{HistoryQuery, HistoryRequest};
use protocol::requests::Fault;
use protocol::{ClientMsgId, ConversationId, Invalid, UserId, limits, subjects};

use super::Session;
use super::query::{Query, ask};
use crate::refusal::Refusal;
use crate::state::GatewayState;

impl Session {
    pub(super) fn on_presence(&mut self, users: Vec<UserId>) {
        if self.state.watchers.count(self.conn) + users.len() > limits::WATCHED_USERS_MAX {
            return self.refuse(Refusal::Invalid(Invalid::from(Fault::WatchCount)));
        }
        if self.queries_full() {
            return self.refuse(Refusal::QueriesWaiting { qid: None });
        }
        let (state, me, conn) = (self.state.clone(), self.user.clone(), self.conn);
        let watch: Query = Box::pin(async move {
            let checks = users.into_iter().map(|user| {
                let (state, me) = (state.clone(), me.clone());
                async move {
                    let shares = shares_conversation(&state, &me, &user).await;
                    (user, shares)
                }
            });
            let mut frames = Vec::new();
            let mut strangers = Vec::new();
            for (user, shares) in futures::future::join_all(checks).await {
                match shares {
                    Ok(true) => {}
                    Ok(false) => {
                        strangers.push(user);
                        continue;
                    }
                    Err(refusal) => {
                        frames.push(refusal.frame());
                        continue;
                    }
                }
                // Subscribe first, then read: a change in between is sent twice, never lost.
                let watched = state.watchers.watch(&state.local, conn, user.clone()).await;
                match (watched, state.presence.of_user(&user).await) {
                    (Ok(()), Ok(p)) => frames.push(ServerFrame::Presence {
                        user: p.user,
                        online: p.online,
                        last_seen: p.last_seen,
                    }),
                    _ => frames.push(Refusal::PresenceUnavailable(user).frame()),
                }
            }
            if !strangers.is_empty() {
                frames.push(Refusal::NoSharedConversation(strangers).frame());
            }
            frames
        });
        self.push_query(watch);
    }
}

/// Whether `me` and `other` share a conversation: they have exchanged a message (asked of
/// the history service, whose cache makes it cheap). A refusal naming `other` when history
/// did not answer.
///
/// History stores a message a few milliseconds after its `sent`: a "no" is asked again once
/// the history writers have stored every partition up to the streams' head as it is now, so
/// a watch right after the first exchanged message is not refused. Only a "no" pays for that
/// (one shared read of the streams' heads and a wait of at most the floor's patience).
async fn shares_conversation(
    state: &GatewayState,
    me: &UserId,
    other: &UserId,
) -> Result<bool, Refusal> {
    if me == other {
        return Ok(true);
    }
    if has_exchanged(state, me, other).await? {
        return Ok(true);
    }
    let replayer = &state.replayer;
    let Ok(streams) = replayer.stream_head.read().await else {
        return Ok(false);
    };
    let head = plumbing::bus::head_of(&streams);
    if !replayer.history_floor.reach(&head).await {
        return Ok(false);
    }
    has_exchanged(state, me, other).await
}

/// Whether history holds a message between `me` and `other`.
async fn has_exchanged(state: &GatewayState, me: &UserId, other: &UserId) -> Result<bool, Refusal> {
    let qid = ClientMsgId::new("presence").expect("valid id");
    let request = HistoryRequest {
        user: me.clone(),
        qid: qid.clone(),
        query: HistoryQuery::Messages {
            conversation: ConversationId::direct(me, other),
            before: None,
            after: None,
            limit: 1,
        },
    };
    let payload = serde_json::to_vec(&request).expect("history request to JSON");
    let timeout = Duration::from_millis(state.config.send_timeout_ms);
    let nats = state.nats.clone();
    match ask(nats, subjects::history_query(me), payload, timeout, qid).await {
        Ok(ServerFrame::History { messages, .. }) => Ok(!messages.is_empty()),
        _ => Err(Refusal::PresenceUnavailable(other.clone())),
    }
}
