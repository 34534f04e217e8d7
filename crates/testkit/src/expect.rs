//! Waiting in tests, always with a named patience and never by sleeping: [`within`] bounds
//! one wait, [`eventually`] polls state that changes asynchronously, and the `expect_*`
//! helpers read a connection's frames until the one a scenario expects arrives, skipping
//! the others, and return what it says.

use std::time::Duration;

use client::{Connection, Event};
use protocol::frames::{ConversationSummary, Message, ServerFrame};
use protocol::{
    ClientMsgId, ConnId, ConversationId, Cursor, ErrorCode, MessageId, SyncGap, UserId,
};

/// How long a test waits for an expected event before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test after [`PATIENCE`].
pub async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .expect("timed out waiting")
}

/// Polls `done` every 20 ms until it holds, failing the test after `patience` (for state
/// that changes asynchronously: metrics, buckets, health).
pub async fn eventually(what: &str, patience: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + patience;
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads frames until one matches `pick`, failing after [`PATIENCE`]. The typed helpers
/// below cover the frames tests usually wait for; this is for the rest.
pub async fn expect_frame<T>(
    conn: &mut Connection,
    mut pick: impl FnMut(&ServerFrame) -> Option<T>,
) -> T {
    within(async {
        loop {
            let frame = conn.next_frame().await.expect("connection open");
            if let Some(t) = pick(&frame) {
                return t;
            }
        }
    })
    .await
}

/// The `welcome` that opens a session, which must be the next frame: the connection's id.
pub async fn expect_welcome(conn: &mut Connection) -> ConnId {
    match within(conn.next_frame()).await.expect("welcome") {
        ServerFrame::Welcome { conn, .. } => conn,
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// The next `accepted`: the `cid` of the send the gateway took.
pub async fn expect_accepted(conn: &mut Connection) -> ClientMsgId {
    expect_frame(conn, |f| match f {
        ServerFrame::Accepted { cid } => Some(cid.clone()),
        _ => None,
    })
    .await
}

/// What `sent` says of a message: its permanent id and its conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub id: MessageId,
    pub conversation: ConversationId,
}

/// The `sent` answering the send `cid`; fails the test if the send is refused.
pub async fn expect_sent(conn: &mut Connection, cid: &str) -> Sent {
    match expect_sent_or_error(conn, cid).await {
        Ok(sent) => sent,
        Err(code) => panic!("send {cid} failed: {code:?}"),
    }
}

/// The `sent` answering the send `cid`, or the code of the error refusing it.
pub async fn expect_sent_or_error(conn: &mut Connection, cid: &str) -> Result<Sent, ErrorCode> {
    expect_frame(conn, |f| match f {
        ServerFrame::Sent {
            cid: c,
            id,
            conversation,
            ..
        } if c.as_str() == cid => Some(Ok(Sent {
            id: *id,
            conversation: conversation.clone(),
        })),
        ServerFrame::Error {
            cid: Some(c), code, ..
        } if c.as_str() == cid => Some(Err(*code)),
        _ => None,
    })
    .await
}

/// The next message delivered to this device (system messages included).
pub async fn expect_message(conn: &mut Connection) -> Message {
    expect_frame(conn, |f| match f {
        ServerFrame::Message(m) => Some(m.clone()),
        _ => None,
    })
    .await
}

/// The next message that is not a group's system message.
pub async fn expect_post(conn: &mut Connection) -> Message {
    expect_frame(conn, |f| match f {
        ServerFrame::Message(m) if m.event.is_none() => Some(m.clone()),
        _ => None,
    })
    .await
}

/// The next `delivered` receipt: which message, and whose device received it.
pub async fn expect_delivered(conn: &mut Connection) -> (MessageId, UserId) {
    expect_frame(conn, |f| match f {
        ServerFrame::Delivered { id, by, .. } => Some((*id, by.clone())),
        _ => None,
    })
    .await
}

/// The next `seen` receipt: read up to which message, and by whom.
pub async fn expect_seen(conn: &mut Connection) -> (MessageId, UserId) {
    expect_frame(conn, |f| match f {
        ServerFrame::Seen { up_to, by, .. } => Some((*up_to, by.clone())),
        _ => None,
    })
    .await
}

/// The code of the next `error`, whatever it answers.
pub async fn expect_error(conn: &mut Connection) -> ErrorCode {
    expect_frame(conn, |f| match f {
        ServerFrame::Error { code, .. } => Some(*code),
        _ => None,
    })
    .await
}

/// The `pong` answering the ping with `ts`.
pub async fn expect_pong(conn: &mut Connection, ts: Option<u64>) {
    expect_frame(conn, |f| (f == &ServerFrame::Pong { ts }).then_some(())).await
}

/// The next `typing`: in which conversation, and who.
pub async fn expect_typing(conn: &mut Connection) -> (ConversationId, UserId) {
    expect_frame(conn, |f| match f {
        ServerFrame::Typing { conversation, by } => Some((conversation.clone(), by.clone())),
        _ => None,
    })
    .await
}

/// The next presence change of `user`: online or not, and when last seen.
pub async fn expect_presence(conn: &mut Connection, user: &str) -> (bool, Option<u64>) {
    expect_frame(conn, |f| match f {
        ServerFrame::Presence {
            user: u,
            online,
            last_seen,
        } if u.as_str() == user => Some((*online, *last_seen)),
        _ => None,
    })
    .await
}

/// How a `sync` replay ended.
#[derive(Debug)]
pub struct Synced {
    /// Where the device continues from.
    pub cursor: Cursor,
    /// Everything after the device's cursor was replayed.
    pub recovered: bool,
    /// Why nothing was replayed, when `recovered` is false.
    pub gap: Option<SyncGap>,
    /// Large groups left to history.
    pub history: Vec<ConversationId>,
}

/// Reads a replay to its `synced`: the messages replayed before it, and what it said.
pub async fn expect_synced(conn: &mut Connection) -> (Vec<Message>, Synced) {
    let mut messages = Vec::new();
    let synced = expect_frame(conn, |f| match f {
        ServerFrame::Message(m) => {
            messages.push(m.clone());
            None
        }
        ServerFrame::Synced {
            cursor,
            recovered,
            gap,
            history,
        } => Some(Synced {
            cursor: cursor.clone(),
            recovered: *recovered,
            gap: *gap,
            history: history.clone(),
        }),
        _ => None,
    })
    .await;
    (messages, synced)
}

/// The answer to the query `qid` (a `group`, `history`, `receipts` or `conversations`
/// frame, or an error carrying the qid), skipping other frames.
pub async fn expect_answer(conn: &mut Connection, qid: &str) -> ServerFrame {
    expect_frame(conn, |f| {
        let q = match f {
            ServerFrame::Group { qid, .. }
            | ServerFrame::Groups { qid, .. }
            | ServerFrame::GroupMembers { qid, .. }
            | ServerFrame::History { qid, .. }
            | ServerFrame::Receipts { qid, .. }
            | ServerFrame::Conversations { qid, .. }
            | ServerFrame::PushToken { qid, .. } => qid,
            ServerFrame::Error { qid: Some(qid), .. } => qid,
            _ => return None,
        };
        (q.as_str() == qid).then(|| f.clone())
    })
    .await
}

/// The answer to the `history` query `qid`: the page and whether more messages exist, or the
/// code of the error refusing it.
pub async fn expect_history(
    conn: &mut Connection,
    qid: &str,
) -> Result<(Vec<Message>, bool), ErrorCode> {
    match expect_answer(conn, qid).await {
        ServerFrame::History { messages, more, .. } => Ok((messages, more)),
        ServerFrame::Error { code, .. } => Err(code),
        other => panic!("{qid} is not answered by history: {other:?}"),
    }
}

/// Asks for the newest 100 messages of `conversation` (query `qid`) and reads the answer: the
/// messages, or the error code.
pub async fn fetch_history(
    conn: &mut Connection,
    qid: &str,
    conversation: &ConversationId,
) -> Result<Vec<Message>, ErrorCode> {
    conn.send_frame(&protocol::frames::ClientFrame::History {
        qid: qid.into(),
        conversation: conversation.to_string(),
        before: None,
        after: None,
        limit: Some(100),
    })
    .await
    .expect("send history query");
    expect_history(conn, qid)
        .await
        .map(|(messages, _)| messages)
}

/// The answer to the `conversations` query `qid`; fails the test if it is refused.
pub async fn expect_conversations(conn: &mut Connection, qid: &str) -> Vec<ConversationSummary> {
    match expect_answer(conn, qid).await {
        ServerFrame::Conversations { conversations, .. } => conversations,
        other => panic!("{qid} is not answered by conversations: {other:?}"),
    }
}

/// The answer to the `push_token` query `qid`: whether the token is now registered, or the
/// error's code and reason.
pub async fn expect_push_token(
    conn: &mut Connection,
    qid: &str,
) -> Result<bool, (ErrorCode, String)> {
    match expect_answer(conn, qid).await {
        ServerFrame::PushToken { registered, .. } => Ok(registered),
        ServerFrame::Error { code, reason, .. } => Err((code, reason)),
        other => panic!("{qid} is not answered by push_token: {other:?}"),
    }
}

/// The close code the server ends the connection with (`None`: closed without one), skipping
/// frames before it.
pub async fn expect_closed(conn: &mut Connection) -> Option<u16> {
    within(async {
        loop {
            if let Event::Closed(code) = conn.next_event().await.expect("connection readable") {
                return code;
            }
        }
    })
    .await
}

/// `owner` creates a group named `name` with `members`; the group as `owner` now sees it.
pub async fn create_group(
    owner: &mut Connection,
    name: &str,
    members: &[&str],
) -> protocol::GroupInfo {
    let create = protocol::GroupOp::Create {
        name: name.into(),
        members: members.iter().map(|m| m.to_string()).collect(),
    };
    owner.group("create", create).await.expect("send create");
    match expect_answer(owner, "create").await {
        ServerFrame::Group { group, .. } => group,
        other => panic!("the group was not created: {other:?}"),
    }
}
