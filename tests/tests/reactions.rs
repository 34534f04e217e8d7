//! Reactions against a real nats-server, gateways and the chat and history services: one per
//! user and message, changeable and removable, live to every device and counted in history
//! pages; bad ones are refused with a clear code.

use protocol::ErrorCode;
use protocol::frames::{Change, ClientFrame, Message};
use testkit::client::Connection;
use testkit::{
    Stack, create_group, eventually, expect_message, expect_post, expect_sent,
    expect_sent_or_error, fetch_history,
};

const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

fn react(conversation: &str, cid: &str, id: &str, emoji: &str) -> ClientFrame {
    ClientFrame::React {
        conversation: conversation.into(),
        cid: cid.into(),
        id: id.into(),
        emoji: emoji.into(),
    }
}

/// Reacts and waits for `sent`, or says which error came instead.
async fn reacted(conn: &mut Connection, frame: ClientFrame) -> Result<(), ErrorCode> {
    let ClientFrame::React { cid, .. } = &frame else {
        unreachable!("a reaction")
    };
    let cid = cid.clone();
    conn.send_frame(&frame).await.unwrap();
    expect_sent_or_error(conn, &cid).await.map(|_| ())
}

/// The counts `reader`'s history shows for `message`, once they are `expected`.
async fn counts_become(reader: &mut Connection, message: &Message, expected: &[(&str, u32, bool)]) {
    let mut n = 0;
    let mut seen = Vec::new();
    eventually("history counts the reactions", PATIENCE, async || {
        n += 1;
        let page = fetch_history(reader, &format!("h{n}"), &message.conversation)
            .await
            .unwrap();
        let found = page
            .iter()
            .find(|m| m.id == message.id)
            .expect("in history");
        seen = found
            .reactions
            .iter()
            .map(|r| (r.emoji.clone(), r.count, r.mine))
            .collect::<Vec<_>>();
        seen.iter()
            .map(|(e, c, m)| (e.as_str(), *c, *m))
            .eq(expected.iter().copied())
    })
    .await;
}

#[tokio::test]
async fn reactions_are_live_counted_in_history_and_one_per_user() {
    let stack = Stack::new().gateways(2).start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 1).await;
    alice.send("bob", "m1", "lunch?").await.unwrap();
    expect_sent(&mut alice, "m1").await;
    let asked = expect_message(&mut bob).await;
    let (c, id) = (asked.conversation.to_string(), asked.id.to_string());

    // bob reacts the moment it arrives; alice sees it live.
    reacted(&mut bob, react(&c, "r1", &id, "👍")).await.unwrap();
    let event = expect_message(&mut alice).await;
    assert_eq!(
        event.change,
        Some(Change::React {
            id: asked.id,
            emoji: "👍".into(),
            replaces: String::new(),
        })
    );
    reacted(&mut alice, react(&c, "r2", &id, "👍"))
        .await
        .unwrap();
    counts_become(&mut alice, &asked, &[("👍", 2, true)]).await;

    // bob changes his, then removes it: one reaction per user.
    reacted(&mut bob, react(&c, "r3", &id, "❤️")).await.unwrap();
    counts_become(&mut bob, &asked, &[("❤️", 1, true), ("👍", 1, false)]).await;
    reacted(&mut bob, react(&c, "r4", &id, "")).await.unwrap();
    counts_become(&mut bob, &asked, &[("👍", 1, false)]).await;
    // Each event says what it replaces, so a client holding counts moves one.
    for (now, before) in [("❤️", "👍"), ("", "❤️")] {
        let event = expect_message(&mut alice).await;
        assert!(
            matches!(&event.change, Some(Change::React { emoji, replaces, .. })
                if emoji == now && replaces == before),
            "{event:?}"
        );
    }
}

#[tokio::test]
async fn bad_reactions_are_refused() {
    let stack = Stack::new().start().await;
    stack.make_contacts("alice", &["bob"]).await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 0).await;
    alice.send("bob", "m1", "hi").await.unwrap();
    let sent = expect_sent(&mut alice, "m1").await;
    let (c, id) = (sent.conversation.to_string(), sent.id.to_string());
    expect_message(&mut bob).await;

    let too_long = "🎉".repeat(9);
    let nowhere = protocol::MessageId(ulid::Ulid::from_parts(1_750_000_000_000, 7)).to_string();
    let cases = [
        (react(&c, "b1", &id, "a b"), ErrorCode::MalformedFrame),
        (react(&c, "b2", &id, &too_long), ErrorCode::MalformedFrame),
        (react(&c, "b3", "nope", "👍"), ErrorCode::InvalidId),
        (
            react("dm:carol:dave", "b4", &id, "👍"),
            ErrorCode::Forbidden,
        ),
        (react(&c, "b5", &nowhere, "👍"), ErrorCode::NotFound),
    ];
    for (frame, code) in cases {
        assert_eq!(reacted(&mut bob, frame).await, Err(code));
    }

    // A deleted message takes no reaction; a group's system message neither.
    alice
        .delete(&sent.conversation, "d1", sent.id)
        .await
        .unwrap();
    expect_sent(&mut alice, "d1").await;
    let mut n = 0;
    eventually("history has the delete", PATIENCE, async || {
        n += 1;
        let page = fetch_history(&mut bob, &format!("h{n}"), &sent.conversation)
            .await
            .unwrap();
        page.iter().any(|m| m.id == sent.id && m.deleted)
    })
    .await;
    assert_eq!(
        reacted(&mut bob, react(&c, "b6", &id, "👍")).await,
        Err(ErrorCode::NotFound)
    );
    let group = create_group(&mut alice, "Reacting", &["bob"]).await;
    let conversation = protocol::ConversationId::group(&group.group);
    let created = expect_message(&mut bob).await;
    assert!(created.event.is_some());
    let frame = react(conversation.as_str(), "b7", &created.id.to_string(), "👍");
    assert_eq!(reacted(&mut bob, frame).await, Err(ErrorCode::Forbidden));
    // A member's post takes one.
    alice
        .send_group(group.group.as_str(), "g1", "pizza?")
        .await
        .unwrap();
    let post = expect_post(&mut bob).await;
    let frame = react(conversation.as_str(), "b8", &post.id.to_string(), "🍕");
    assert_eq!(reacted(&mut bob, frame).await, Ok(()));
}
