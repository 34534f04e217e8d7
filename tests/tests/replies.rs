//! Replies against a real nats-server, gateways and the chat and history services: a reply
//! names a message of its conversation and arrives with its quote, live and in history; a
//! reply to a message that just arrived is accepted; a bad, unknown or foreign `reply_to` is
//! refused with a clear code and nothing is stored.

use protocol::ErrorCode;
use protocol::frames::{ClientFrame, Quote};
use testkit::{
    Stack, create_group, expect_message, expect_post, expect_sent, expect_sent_or_error,
    fetch_history,
};

#[tokio::test]
async fn a_reply_carries_its_quote_live_and_in_history() {
    let stack = Stack::new().gateways(2).start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 1).await;
    alice.send("bob", "q", "lunch at noon?").await.unwrap();
    let asked = expect_sent(&mut alice, "q").await;
    // bob answers the moment it arrives, before the history writer may have stored it.
    let arrived = expect_message(&mut bob).await;
    assert_eq!(arrived.id, asked.id);
    bob.send_reply("alice", "a", "yes!", &asked.id.to_string())
        .await
        .unwrap();
    expect_sent(&mut bob, "a").await;
    let answer = expect_message(&mut alice).await;
    let quote = Quote {
        id: asked.id,
        from: "alice".parse().unwrap(),
        preview: "lunch at noon?".into(),
        deleted: false,
    };
    assert_eq!(answer.reply.as_ref(), Some(&quote));

    // History stores it a moment after `sent`.
    let mut page = Vec::new();
    for attempt in 0.. {
        page = fetch_history(&mut bob, &format!("h{attempt}"), &asked.conversation)
            .await
            .unwrap();
        if page.iter().any(|m| m.id == answer.id) {
            break;
        }
        assert!(attempt < 500, "the reply never reached history");
        tokio::task::yield_now().await;
    }
    let stored = page.iter().find(|m| m.id == answer.id).expect("in history");
    assert_eq!(stored.reply.as_ref(), Some(&quote));
    let original = page.iter().find(|m| m.id == asked.id).expect("in history");
    assert_eq!(original.reply, None);
}

#[tokio::test]
async fn a_bad_unknown_or_foreign_reply_to_is_refused() {
    let stack = Stack::new().start().await;
    stack.make_contacts("alice", &["bob", "carol"]).await;
    let mut alice = stack.connect("alice", 0).await;
    alice.send("carol", "to-carol", "psst").await.unwrap();
    let elsewhere = expect_sent(&mut alice, "to-carol").await.id;

    // Not an id at all: the gateway refuses it, naming the send.
    alice
        .send_frame(&ClientFrame::Send {
            attachment: None,
            to: "bob".into(),
            group: None,
            cid: "bad".into(),
            body: "hm".into(),
            reply_to: Some("not-an-id".into()),
        })
        .await
        .unwrap();
    assert_eq!(
        expect_sent_or_error(&mut alice, "bad").await.err(),
        Some(ErrorCode::InvalidId)
    );
    // A well-formed id of no message, and a message of another conversation.
    let nowhere = protocol::MessageId(ulid::Ulid::from_parts(1_750_000_000_000, 7)).to_string();
    for (cid, reply_to) in [("nowhere", nowhere), ("foreign", elsewhere.to_string())] {
        alice.send_reply("bob", cid, "hm", &reply_to).await.unwrap();
        assert_eq!(
            expect_sent_or_error(&mut alice, cid).await.err(),
            Some(ErrorCode::NotFound),
            "{cid}"
        );
    }
    // Nothing of them was stored.
    let ab = "dm:alice:bob".parse().unwrap();
    let page = fetch_history(&mut alice, "h1", &ab).await.unwrap();
    assert!(page.iter().all(|m| m.body != "hm"), "{page:?}");
}

#[tokio::test]
async fn a_group_reply_quotes_a_message_of_the_group() {
    let stack = Stack::new().start().await;
    stack.make_contacts("alice", &["bob"]).await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 0).await;
    let group = create_group(&mut alice, "Lunch", &["bob"])
        .await
        .group
        .to_string();
    alice.send_group(&group, "q", "pizza?").await.unwrap();
    let asked = expect_sent(&mut alice, "q").await;
    let arrived = expect_post(&mut bob).await;
    bob.send_group_reply(&group, "a", "sure", &arrived.id.to_string())
        .await
        .unwrap();
    expect_sent(&mut bob, "a").await;
    let answer = expect_post(&mut alice).await;
    let quote = answer.reply.expect("a quote");
    assert_eq!((quote.id, quote.preview.as_str()), (asked.id, "pizza?"));
}

#[tokio::test]
async fn without_history_a_reply_is_refused_as_retryable_and_plain_sends_go_on() {
    let mut stack = Stack::new().start().await;
    stack.make_contacts("alice", &["bob"]).await;
    let mut alice = stack.connect("alice", 0).await;
    alice.send("bob", "q", "still there?").await.unwrap();
    let asked = expect_sent(&mut alice, "q").await.id.to_string();
    for history in &mut stack.histories {
        history.kill();
    }
    // Nobody can say whether the message exists: retry later with the same cid.
    alice.send_reply("bob", "a", "yes", &asked).await.unwrap();
    assert_eq!(
        expect_sent_or_error(&mut alice, "a").await.err(),
        Some(ErrorCode::Unavailable)
    );
    // A plain send does not need history.
    alice.send("bob", "p", "plain").await.unwrap();
    expect_sent(&mut alice, "p").await;
}
