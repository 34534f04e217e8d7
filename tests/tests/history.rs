//! History through the gateway: messages written by the history writer are paged with client
//! frames, the conversation list counts unread messages, and only participants may read.

use std::time::{Duration, Instant};

use protocol::frames::{ConversationSummary, Message};
use protocol::{ErrorCode, MessageId};
use testkit::client::Connection;
use testkit::{Stack, expect_conversations, expect_history, expect_sent};
use tokio_tungstenite::tungstenite::Message as WsMessage;

async fn history(
    conn: &mut Connection,
    qid: &str,
    before: Option<MessageId>,
    limit: u32,
) -> (Vec<Message>, bool) {
    let mut frame = serde_json::json!({
        "type": "history", "qid": qid, "conversation": "dm:alice:bob", "limit": limit
    });
    if let Some(b) = before {
        frame["before"] = b.to_string().into();
    }
    conn.send_raw(WsMessage::text(frame.to_string()))
        .await
        .unwrap();
    match expect_history(conn, qid).await {
        Ok(page) => page,
        Err(code) => panic!("history {qid} refused: {code:?}"),
    }
}

async fn conversations(conn: &mut Connection, qid: &str) -> Vec<ConversationSummary> {
    let frame = serde_json::json!({"type": "conversations", "qid": qid});
    conn.send_raw(WsMessage::text(frame.to_string()))
        .await
        .unwrap();
    expect_conversations(conn, qid).await
}

/// Polls the conversation list until `done` holds: the writer persists asynchronously.
async fn list_until(
    conn: &mut Connection,
    mut done: impl FnMut(&[ConversationSummary]) -> bool,
) -> Vec<ConversationSummary> {
    let started = Instant::now();
    for i in 0.. {
        let list = conversations(conn, &format!("poll{i}")).await;
        if done(&list) {
            return list;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "history never caught up: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!()
}

#[tokio::test]
async fn bob_pages_through_history_after_reconnecting() {
    let stack = Stack::new().start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut ids = Vec::new();
    for i in 0..120 {
        alice
            .send("bob", &format!("h{i}"), &format!("message {i}"))
            .await
            .unwrap();
        let id = expect_sent(&mut alice, &format!("h{i}")).await.id;
        ids.push(id);
    }

    let mut bob = stack.connect("bob", 0).await;
    let list = list_until(&mut bob, |l| {
        l.first().is_some_and(|c| c.last_id == ids[119])
    })
    .await;
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].unread, list[0].preview.as_str()),
        (120, "message 119")
    );

    let (newest, more) = history(&mut bob, "q1", None, 50).await;
    assert!(more);
    let (middle, more) = history(&mut bob, "q2", Some(newest[0].id), 50).await;
    assert!(more);
    let (oldest, more) = history(&mut bob, "q3", Some(middle[0].id), 50).await;
    assert!(!more, "the first message is in this page");
    let all: Vec<MessageId> = [oldest, middle, newest]
        .concat()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(all, ids, "every message once, in order");

    // Reading resets bob's unread count (not alice's, who has none).
    let read =
        serde_json::json!({"type": "read", "conversation": "dm:alice:bob", "up_to": ids[119]});
    bob.send_raw(WsMessage::text(read.to_string()))
        .await
        .unwrap();
    list_until(&mut bob, |l| l[0].unread == 0).await;
    assert_eq!(conversations(&mut alice, "a1").await[0].unread, 0);
}

#[tokio::test]
async fn a_stranger_cannot_read_a_conversation() {
    let stack = Stack::new().start().await;
    let mut mallory = stack.connect("mallory", 0).await;
    let frame = serde_json::json!({"type": "history", "qid": "x", "conversation": "dm:alice:bob"});
    mallory
        .send_raw(WsMessage::text(frame.to_string()))
        .await
        .unwrap();
    let code = expect_history(&mut mallory, "x").await.unwrap_err();
    assert_eq!(code, ErrorCode::Forbidden);
}

#[tokio::test]
async fn an_answer_too_large_for_nats_is_refused_with_its_own_code_not_dropped() {
    // A history page allowed to grow past NATS's 1 MiB message limit (an operator's
    // `page_max_bytes` set too high): the answer cannot be published.
    let stack = Stack::new()
        .history_config(|c| c.page_max_bytes = 64 << 20)
        .start()
        .await;
    let mut alice = stack.connect("alice", 0).await;
    let body = "x".repeat(60_000);
    let mut last = None;
    for i in 0..20 {
        let cid = format!("big{i}");
        alice.send("bob", &cid, &body).await.unwrap();
        last = Some(expect_sent(&mut alice, &cid).await.id);
    }
    let mut bob = stack.connect("bob", 0).await;
    list_until(&mut bob, |l| {
        l.first().is_some_and(|c| Some(c.last_id) == last)
    })
    .await;

    // Refused at once with 1009 and the query's qid, instead of an answer that never comes.
    let asked = serde_json::json!({
        "type": "history", "qid": "all", "conversation": "dm:alice:bob", "limit": 100
    });
    bob.send_raw(WsMessage::text(asked.to_string()))
        .await
        .unwrap();
    let code = expect_history(&mut bob, "all").await.unwrap_err();
    assert_eq!(code, ErrorCode::AnswerTooLarge);
    // A smaller page is answered.
    let (page, more) = history(&mut bob, "some", None, 10).await;
    assert_eq!(
        (page.len(), more, page.last().map(|m| m.id)),
        (10, true, last)
    );
}
