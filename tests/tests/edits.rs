//! Edits and deletes against a real nats-server, gateways and the chat and history services:
//! a change reaches every device live and on replay (even when it is the conversation's only
//! activity since the device's cursor), history pages and the conversation list show its
//! effect, and only those allowed, within the window, may make one.

use protocol::frames::{Change, ClientFrame, Message};
use protocol::{ConversationId, ErrorCode, MessageId};
use testkit::client::Connection;
use testkit::{
    Stack, create_group, eventually, expect_conversations, expect_message, expect_post,
    expect_sent, expect_sent_or_error, expect_synced, fetch_history,
};

const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// `id` as `reader`'s history shows it, once history has it in the state `ready` says.
async fn stored(
    reader: &mut Connection,
    conversation: &ConversationId,
    id: MessageId,
    ready: impl Fn(&Message) -> bool,
) -> Message {
    let mut found = None;
    let mut n = 0;
    eventually("history applies the change", PATIENCE, async || {
        n += 1;
        let page = fetch_history(reader, &format!("h{n}"), conversation)
            .await
            .unwrap();
        found = page.into_iter().find(|m| m.id == id);
        found.as_ref().is_some_and(&ready)
    })
    .await;
    found.unwrap()
}

#[tokio::test]
async fn edits_and_deletes_reach_every_device_live_on_replay_and_in_history() {
    let stack = Stack::new().gateways(2).start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut alice_tablet = stack.connect("alice", 1).await;
    let mut bob = stack.connect("bob", 1).await;
    alice.send("bob", "m1", "helo bob").await.unwrap();
    let sent = expect_sent(&mut alice, "m1").await;
    let (ab, id) = (sent.conversation.clone(), sent.id);
    assert_eq!(expect_message(&mut bob).await.id, id);
    assert_eq!(expect_message(&mut alice_tablet).await.id, id);

    // Edited the moment it was sent, before history may hold it.
    alice.edit(&ab, "e1", id, "hello bob").await.unwrap();
    let edit = expect_sent(&mut alice, "e1").await;
    assert_ne!(edit.id, id, "an edit is an event with its own id");
    for device in [&mut bob, &mut alice_tablet] {
        let event = expect_message(device).await;
        assert_eq!(event.id, edit.id);
        assert_eq!(event.change, Some(Change::Edit { id }));
        assert_eq!(event.body, "hello bob");
    }
    let shown = stored(&mut bob, &ab, id, |m| m.edited.is_some()).await;
    assert_eq!(shown.body, "hello bob");
    let listed = expect_list(&mut bob, "l1").await;
    assert_eq!(listed.preview, "hello bob");

    // bob answers it, quoting the edited text.
    bob.send_reply("alice", "r1", "see you", &id.to_string())
        .await
        .unwrap();
    let reply = expect_sent(&mut bob, "r1").await.id;
    assert_eq!(expect_message(&mut alice).await.id, reply);
    expect_message(&mut alice_tablet).await;

    // bob goes away; the delete is all he misses (his reply is replayed too: his cursor
    // moves only by what his device received).
    let cursor = bob.cursor().expect("a cursor");
    bob.close().await;
    alice.delete(&ab, "d1", id).await.unwrap();
    let delete = expect_sent(&mut alice, "d1").await;
    stored(&mut alice, &ab, id, |m| m.deleted).await;
    let gateway = &stack.gateways[1];
    let direct = gateway.metric("natter_gateway_replays_direct_total").await;
    let mut bob = stack.resume("bob", 1, Some(cursor)).await;
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert!(synced.recovered, "{synced:?}");
    let ids: Vec<MessageId> = replayed.iter().map(|m| m.id).collect();
    assert_eq!(
        ids,
        vec![reply, delete.id],
        "his own reply, then the delete"
    );
    assert_eq!(replayed[1].change, Some(Change::Delete { id }));
    assert_eq!(
        gateway.metric("natter_gateway_replays_direct_total").await,
        direct + 1,
        "found through history's index of changed conversations"
    );

    let gone = stored(&mut bob, &ab, id, |m| m.deleted).await;
    assert!(gone.body.is_empty() && gone.edited.is_some(), "{gone:?}");
    // Deleted for everyone: also where bob's reply quoted it.
    let answer = stored(&mut bob, &ab, reply, |_| true).await;
    let quote = answer.reply.expect("a quote");
    assert!(quote.deleted && quote.preview.is_empty(), "{quote:?}");
    assert_eq!(answer.body, "see you");
}

/// bob's only conversation in his list.
async fn expect_list(conn: &mut Connection, qid: &str) -> protocol::frames::ConversationSummary {
    conn.send_frame(&ClientFrame::Conversations {
        qid: qid.into(),
        limit: None,
    })
    .await
    .unwrap();
    let mut list = expect_conversations(conn, qid).await;
    assert_eq!(list.len(), 1, "{list:?}");
    list.remove(0)
}

#[tokio::test]
async fn only_the_sender_changes_a_message_and_bad_changes_are_refused() {
    let stack = Stack::new().start().await;
    stack.make_contacts("alice", &["bob", "carol"]).await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 0).await;
    alice.send("bob", "m1", "mine").await.unwrap();
    let sent = expect_sent(&mut alice, "m1").await;
    let (ab, id) = (sent.conversation, sent.id);
    expect_message(&mut bob).await;

    let refused = async |conn: &mut Connection, frame: ClientFrame, cid: &str| {
        conn.send_frame(&frame).await.unwrap();
        expect_sent_or_error(conn, cid).await.err()
    };
    let edit = |cid: &str, conversation: &str, id: &str| ClientFrame::Edit {
        conversation: conversation.into(),
        cid: cid.into(),
        id: id.into(),
        body: "changed".into(),
    };
    let delete = |cid: &str, id: &MessageId| ClientFrame::Delete {
        conversation: ab.to_string(),
        cid: cid.into(),
        id: id.to_string(),
    };
    let (ab_text, id_text) = (ab.to_string(), id.to_string());
    let nowhere = MessageId(ulid::Ulid::from_parts(1_750_000_000_000, 7)).to_string();
    let cases = [
        // Someone else's message, in a conversation bob is part of.
        (
            "bob",
            edit("b1", &ab_text, &id_text),
            "b1",
            ErrorCode::Forbidden,
        ),
        ("bob", delete("b2", &id), "b2", ErrorCode::Forbidden),
        // Not an id; a conversation alice is not part of; a message that does not exist.
        (
            "alice",
            edit("a1", &ab_text, "nope"),
            "a1",
            ErrorCode::InvalidId,
        ),
        (
            "alice",
            edit("a2", "dm:bob:carol", &id_text),
            "a2",
            ErrorCode::Forbidden,
        ),
        (
            "alice",
            edit("a3", &ab_text, &nowhere),
            "a3",
            ErrorCode::NotFound,
        ),
    ];
    for (who, frame, cid, code) in cases {
        let conn = if who == "bob" { &mut bob } else { &mut alice };
        assert_eq!(refused(conn, frame, cid).await, Some(code), "{cid}");
    }

    // Deleted is final: once history has it, it cannot be edited (an edit racing the
    // delete changes nothing either: see `Message::apply`); deleting it again is harmless.
    alice.delete(&ab, "d1", id).await.unwrap();
    expect_sent(&mut alice, "d1").await;
    stored(&mut alice, &ab, id, |m| m.deleted).await;
    assert_eq!(
        refused(&mut alice, edit("a4", &ab_text, &id_text), "a4").await,
        Some(ErrorCode::NotFound)
    );
    alice.delete(&ab, "d2", id).await.unwrap();
    expect_sent(&mut alice, "d2").await;
    let page = fetch_history(&mut bob, "h1", &ab).await.unwrap();
    assert!(page.iter().all(|m| m.body != "changed"), "{page:?}");
}

#[tokio::test]
async fn windows_close_edits_and_deletes() {
    let stack = Stack::new()
        .chat_config(|c| {
            c.edit_window_secs = 0;
            c.delete_window_secs = 0;
        })
        .start()
        .await;
    let mut alice = stack.connect("alice", 0).await;
    alice.send("bob", "m1", "final").await.unwrap();
    let sent = expect_sent(&mut alice, "m1").await;
    alice
        .edit(&sent.conversation, "e1", sent.id, "x")
        .await
        .unwrap();
    assert_eq!(
        expect_sent_or_error(&mut alice, "e1").await.err(),
        Some(ErrorCode::TooLate)
    );
    alice
        .delete(&sent.conversation, "d1", sent.id)
        .await
        .unwrap();
    assert_eq!(
        expect_sent_or_error(&mut alice, "d1").await.err(),
        Some(ErrorCode::TooLate)
    );
}

#[tokio::test]
async fn group_managers_delete_any_message_members_only_their_own() {
    let stack = Stack::new().start().await;
    stack.make_contacts("alice", &["bob"]).await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 0).await;
    let group = create_group(&mut alice, "Moderated", &["bob"]).await.group;
    let conversation = ConversationId::group(&group);
    let group = group.to_string();
    alice.send_group(&group, "a1", "rules").await.unwrap();
    let rules = expect_sent(&mut alice, "a1").await.id;
    expect_post(&mut bob).await;
    bob.send_group(&group, "b1", "spam").await.unwrap();
    let spam = expect_sent(&mut bob, "b1").await.id;
    expect_post(&mut alice).await;

    // A member may not delete the owner's message, nor edit it; the owner deletes his.
    bob.delete(&conversation, "b2", rules).await.unwrap();
    assert_eq!(
        expect_sent_or_error(&mut bob, "b2").await.err(),
        Some(ErrorCode::Forbidden)
    );
    alice.edit(&conversation, "a2", spam, "nice").await.unwrap();
    assert_eq!(
        expect_sent_or_error(&mut alice, "a2").await.err(),
        Some(ErrorCode::Forbidden)
    );
    alice.delete(&conversation, "a3", spam).await.unwrap();
    expect_sent(&mut alice, "a3").await;
    let event = expect_post(&mut bob).await;
    assert_eq!(event.change, Some(Change::Delete { id: spam }));
    assert_eq!(event.from.as_str(), "alice");
    let gone = stored(&mut bob, &conversation, spam, |m| m.deleted).await;
    assert!(gone.body.is_empty());

    // System messages are nobody's to change.
    let page = fetch_history(&mut alice, "h1", &conversation)
        .await
        .unwrap();
    let created = page
        .iter()
        .find(|m| m.event.is_some())
        .expect("a system message");
    alice.delete(&conversation, "a4", created.id).await.unwrap();
    assert_eq!(
        expect_sent_or_error(&mut alice, "a4").await.err(),
        Some(ErrorCode::Forbidden)
    );
}
