//! Limits that keep one user from hurting another: one user cannot hold more connections
//! than `max_connections_per_user`; a client that stops reading is evicted once its outbox is
//! full (by frames or bytes) and counted once as a slow consumer, however many frames were
//! addressed to it afterwards; and history pages are bounded in bytes, so large messages
//! cannot make a conversation's history unreadable.

use std::time::Duration;

use protocol::frames::ClientFrame;
use protocol::frames::ServerFrame;
use protocol::{Encoding, MessageId, SyncGap};
use testkit::client::{ConnectError, Connection};
use testkit::{
    PATIENCE, Stack, eventually, expect_frame, expect_history, expect_message, expect_sent,
    expect_synced,
};

#[tokio::test]
async fn a_user_over_their_connections_is_refused_with_429_and_others_are_not() {
    let stack = Stack::new()
        .gateway_config(|c| c.max_connections_per_user = 2)
        .start()
        .await;
    let url = stack.gateways[0].ws_url();
    let first = stack.connect("alice", 0).await;
    let _second = stack.connect("alice", 0).await;
    let third = Connection::connect(&url, &stack.token("alice"), Encoding::Json).await;
    assert!(
        matches!(third, Err(ConnectError::Refused(429))),
        "third connection of alice: {:?}",
        third.err()
    );
    // Another user is not affected.
    let _bob = stack.connect("bob", 0).await;

    // A closed connection frees its place.
    drop(first);
    eventually(
        "alice may connect again",
        Duration::from_secs(10),
        async || {
            Connection::connect(&url, &stack.token("alice"), Encoding::Json)
                .await
                .is_ok()
        },
    )
    .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_evicted_and_counted_once() {
    let stack = Stack::new()
        .gateway_config(|c| {
            c.outbound_queue_frames = 64;
            c.outbound_queue_bytes = 256 * 1024;
        })
        .start()
        .await;
    let mut alice = stack.connect("alice", 0).await;
    // bob connects, then never reads again.
    let _bob = stack.connect("bob", 0).await;
    eventually(
        "both sessions registered",
        Duration::from_secs(10),
        async || stack.gateways[0].metric("natter_gateway_connections").await == 2,
    )
    .await;

    // About 12 MB for bob: more than the socket buffers, the outbox and its byte limit hold.
    let body = "x".repeat(30_000);
    for i in 0..400 {
        let cid = format!("c{i}");
        alice.send("bob", &cid, &body).await.unwrap();
        expect_sent(&mut alice, &cid).await;
    }
    eventually("bob evicted", Duration::from_secs(60), async || {
        stack.gateways[0].metric("natter_gateway_connections").await == 1
    })
    .await;
    assert_eq!(
        stack.gateways[0]
            .metric("natter_gateway_slow_consumers_total")
            .await,
        1,
        "one session evicted, counted once"
    );
}

#[tokio::test]
async fn large_messages_cannot_make_history_unreadable() {
    let stack = Stack::new().start().await;
    // Sent over MessagePack, where control characters are one byte each; in JSON they become
    // six, so each message is about 360 KB there and a page of 16 of them would be far over
    // NATS's 1 MiB payload limit.
    let mut alice = stack.connect_with("alice", 0, Encoding::MsgPack).await;
    let body = "\u{1}".repeat(60_000);
    let mut sent = Vec::new();
    for i in 0..20 {
        let cid = format!("big{i}");
        alice.send("bob", &cid, &body).await.unwrap();
        sent.push(expect_sent(&mut alice, &cid).await.id);
    }

    let mut bob = stack.connect("bob", 0).await;
    // History stores what the stream holds a moment later: wait for the last message.
    let last = *sent.last().unwrap();
    let mut asked = 0;
    eventually("history holds the last message", PATIENCE, async || {
        asked += 1;
        let qid = format!("latest{asked}");
        let frame = ClientFrame::History {
            qid: qid.clone(),
            conversation: "dm:alice:bob".into(),
            before: None,
            after: None,
            limit: Some(1),
        };
        bob.send_frame(&frame).await.unwrap();
        let (messages, _) = expect_history(&mut bob, &qid).await.unwrap();
        messages.last().map(|m| m.id) == Some(last)
    })
    .await;
    let mut read: Vec<MessageId> = Vec::new();
    let mut before = None;
    for page in 0.. {
        assert!(page < 40, "paging does not end");
        let qid = format!("h{page}");
        let frame = ClientFrame::History {
            qid: qid.clone(),
            conversation: "dm:alice:bob".into(),
            before: before.map(|id: MessageId| id.to_string()),
            after: None,
            limit: Some(50),
        };
        bob.send_frame(&frame).await.unwrap();
        let (messages, more) = expect_history(&mut bob, &qid)
            .await
            .unwrap_or_else(|code| panic!("page {page} refused with {code:?}"));
        assert!(!messages.is_empty(), "every page makes progress");
        assert!(messages.iter().all(|m| m.body == body));
        before = messages.first().map(|m| m.id);
        let mut page_ids: Vec<MessageId> = messages.iter().map(|m| m.id).collect();
        page_ids.extend(read);
        read = page_ids;
        if !more {
            break;
        }
    }
    assert_eq!(read, sent, "every message, once, oldest first");
}

#[tokio::test]
async fn a_read_flood_reaches_the_peer_once() {
    let stack = Stack::new().start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 0).await;
    alice.send("bob", "m1", "one").await.unwrap();
    expect_sent(&mut alice, "m1").await;
    alice.send("bob", "m2", "two").await.unwrap();
    expect_sent(&mut alice, "m2").await;
    let first = expect_message(&mut bob).await;
    let second = expect_message(&mut bob).await;

    for _ in 0..20_000 {
        bob.read(&first.conversation, first.id).await.unwrap();
    }
    // The fence: a read that moves bob's marker.
    bob.read(&second.conversation, second.id).await.unwrap();

    let mut seen_first = 0;
    loop {
        let up_to = expect_frame(&mut alice, |f| match f {
            ServerFrame::Seen { up_to, .. } => Some(*up_to),
            _ => None,
        })
        .await;
        if up_to == second.id {
            break;
        }
        assert_eq!(up_to, first.id);
        seen_first += 1;
    }
    assert_eq!(
        seen_first, 1,
        "the repeats moved nothing and were not forwarded"
    );
    assert!(
        stack.gateways[0]
            .metric("natter_gateway_receipts_coalesced_total")
            .await
            >= 19_999
    );
    // alice was never at risk of being evicted for bob's flood.
    alice.ping(Some(7)).await.unwrap();
    testkit::expect_pong(&mut alice, Some(7)).await;
}

#[tokio::test]
async fn the_messages_stream_keeps_its_byte_limit_and_history_keeps_everything() {
    let stack = Stack::new()
        .bus_config(|b| b.messages_max_bytes = 64 * 1024)
        .start()
        .await;
    let mut alice = stack.connect("alice", 0).await;
    // bob's device sees the first message, then goes away.
    let mut bob = stack.connect("bob", 0).await;
    alice.send("bob", "c0", "first").await.unwrap();
    expect_sent(&mut alice, "c0").await;
    let cursor = expect_message(&mut bob).await.cursor;
    drop(bob);
    let body = "y".repeat(2_000);
    for i in 1..=100 {
        let cid = format!("c{i}");
        alice.send("bob", &cid, &body).await.unwrap();
        expect_sent(&mut alice, &cid).await;
    }
    let conversation = protocol::ConversationId::direct(
        &protocol::UserId::new("alice").unwrap(),
        &protocol::UserId::new("bob").unwrap(),
    );
    let info = stack
        .stream_of(&conversation)
        .await
        .info()
        .await
        .unwrap()
        .clone();
    assert!(
        info.state.bytes <= 64 * 1024,
        "{} bytes kept",
        info.state.bytes
    );
    assert!(info.state.first_sequence > 1, "the oldest were dropped");

    // Too far behind for the stream: bob is sent to history, which has all 101.
    let mut bob = stack.resume("bob", 0, cursor).await;
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert!(replayed.is_empty());
    assert!(!synced.recovered);
    assert_eq!(synced.gap, Some(SyncGap::Trimmed));
    let mut n = 0;
    eventually(
        "history holds every message",
        Duration::from_secs(10),
        async || {
            n += 1;
            let qid = format!("all{n}");
            let frame = ClientFrame::History {
                qid: qid.clone(),
                conversation: "dm:alice:bob".into(),
                before: None,
                after: None,
                limit: Some(100),
            };
            bob.send_frame(&frame).await.unwrap();
            let (messages, more) = expect_history(&mut bob, &qid).await.unwrap();
            messages.len() == 100 && more
        },
    )
    .await;
}

#[tokio::test]
async fn a_flooding_sender_is_slowed_with_1501_and_a_retry_hint() {
    let stack = Stack::new()
        .gateway_config(|c| {
            c.send_messages_per_sec = 5;
            c.send_bytes_per_sec = 1024 * 1024;
        })
        .start()
        .await;
    let mut alice = stack.connect("alice", 0).await;
    // Two seconds' worth pass at once.
    for i in 0..10 {
        let cid = format!("ok{i}");
        alice.send("bob", &cid, "hi").await.unwrap();
        expect_sent(&mut alice, &cid).await;
    }
    // A second connection of the same user shares the limit.
    let mut other = stack.connect("alice", 0).await;
    other.send("bob", "over", "hi").await.unwrap();
    let (code, retry_after_ms) = expect_frame(&mut other, |f| match f {
        ServerFrame::Error {
            code,
            cid: Some(cid),
            retry_after_ms,
            ..
        } if cid.as_str() == "over" => Some((*code, *retry_after_ms)),
        _ => None,
    })
    .await;
    assert_eq!(code, protocol::ErrorCode::RateLimited);
    let retry_after_ms = retry_after_ms.expect("a retry hint");
    assert!((1..=201).contains(&retry_after_ms), "{retry_after_ms} ms");
    // Retried after the hint, the same cid goes through.
    tokio::time::sleep(Duration::from_millis(retry_after_ms)).await;
    other.send("bob", "over", "hi").await.unwrap();
    expect_sent(&mut other, "over").await;
    // Another user is not slowed by alice.
    let mut carol = stack.connect("carol", 0).await;
    carol.send("bob", "c1", "hi").await.unwrap();
    expect_sent(&mut carol, "c1").await;
}
