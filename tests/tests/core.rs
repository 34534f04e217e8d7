//! End-to-end tests of 1:1 chat against a real nats-server, real gateways and the chat
//! service: delivery across gateways, receipts, retries, devices, order, crash recovery.

use async_nats::jetstream::consumer::PullConsumer;
use protocol::frames::ServerFrame;
use protocol::{ClientMsgId, ConversationId, Encoding, UserId, subjects};
use testkit::{
    Stack, expect_accepted, expect_delivered, expect_frame, expect_message, expect_seen,
    expect_sent, within,
};

#[tokio::test]
async fn a_message_crosses_gateways_and_reaches_sent_delivered_seen() {
    let stack = Stack::new().gateways(2).start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 1).await;

    alice.send("bob", "c1", "hello bob").await.unwrap();
    let accepted = expect_accepted(&mut alice).await;
    assert_eq!(accepted, ClientMsgId::new("c1").unwrap());
    let sent = expect_sent(&mut alice, "c1").await;
    let id = sent.id;
    assert_eq!(sent.conversation.as_str(), "dm:alice:bob");

    let got = expect_message(&mut bob).await;
    assert_eq!(
        (got.id, got.body.as_str(), got.from.as_str()),
        (id, "hello bob", "alice")
    );

    bob.ack(&got.conversation, got.id).await.unwrap();
    let (delivered, by) = expect_delivered(&mut alice).await;
    assert_eq!((delivered, by.as_str()), (id, "bob"));

    bob.read(&got.conversation, got.id).await.unwrap();
    let (up_to, by) = expect_seen(&mut alice).await;
    assert_eq!((up_to, by.as_str()), (id, "bob"));

    // Exactly once: a ping answered after the message proves nothing else was queued.
    bob.ping(Some(1)).await.unwrap();
    let next = within(bob.next_frame()).await.unwrap();
    assert_eq!(next, ServerFrame::Pong { ts: Some(1) });
}

#[tokio::test]
async fn a_retry_gets_the_original_id_before_and_after_a_chat_restart() {
    let mut stack = Stack::new().start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 0).await;

    alice.send("bob", "retry-1", "once").await.unwrap();
    let first = expect_sent(&mut alice, "retry-1").await.id;
    alice.send("bob", "retry-1", "once").await.unwrap();
    let second = expect_sent(&mut alice, "retry-1").await.id;
    assert_eq!(first, second);

    // Restart the chat service: de-duplication state lives in the stream, not the process.
    stack.chats[0].kill();
    let config = stack.chat_config.clone();
    stack.start_chat(config).await;
    alice.send("bob", "retry-1", "once").await.unwrap();
    let third = expect_sent(&mut alice, "retry-1").await.id;
    assert_eq!(first, third);

    // Bob got it once: the next message he sees is the marker sent afterwards.
    alice.send("bob", "marker", "after").await.unwrap();
    expect_sent(&mut alice, "marker").await;
    assert_eq!(expect_message(&mut bob).await.id, first);
    assert_eq!(expect_message(&mut bob).await.body, "after");
    assert_eq!(stack.stored_messages().await, 2);
}

#[tokio::test]
async fn every_device_receives_and_the_senders_other_device_gets_a_copy() {
    let stack = Stack::new().gateways(2).start().await;
    let mut alice_phone = stack.connect("alice", 0).await;
    let mut alice_laptop = stack.connect("alice", 1).await;
    let mut bob_phone = stack.connect("bob", 0).await;
    let mut bob_laptop = stack.connect("bob", 1).await;

    alice_phone
        .send("bob", "d1", "to all devices")
        .await
        .unwrap();
    let id = expect_sent(&mut alice_phone, "d1").await.id;
    assert_eq!(expect_message(&mut bob_phone).await.id, id);
    assert_eq!(expect_message(&mut bob_laptop).await.id, id);
    assert_eq!(expect_message(&mut alice_laptop).await.id, id);
    // Three devices on two gateways: one publish per gateway, not one per device.
    assert_eq!(
        stack.chats[0].metric("natter_chat_gateway_publishes_total"),
        2
    );

    // The sending device gets `sent`, not an echo.
    alice_phone.ping(Some(7)).await.unwrap();
    let next = expect_frame(&mut alice_phone, |f| match f {
        ServerFrame::Message(_) | ServerFrame::Pong { .. } => Some(f.clone()),
        _ => None,
    })
    .await;
    assert_eq!(next, ServerFrame::Pong { ts: Some(7) });
}

#[tokio::test]
async fn a_thousand_messages_arrive_in_order() {
    let stack = Stack::new().gateways(2).start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 1).await;

    // Alice pipelines up to 100 sends, as a client respecting max_in_flight_sends would.
    let sender = tokio::spawn(async move {
        let mut answered = 0;
        for i in 0..1000 {
            alice
                .send("bob", &format!("o{i}"), &i.to_string())
                .await
                .unwrap();
            while i + 1 - answered >= 100 {
                expect_sent(&mut alice, &format!("o{answered}")).await;
                answered += 1;
            }
        }
        alice
    });
    for i in 0..1000 {
        assert_eq!(expect_message(&mut bob).await.body, i.to_string());
    }
    sender.await.unwrap();
}

#[tokio::test]
async fn a_message_answered_sent_is_routed_after_the_chat_service_dies() {
    // The first chat instance persists and answers but never routes: it stands for a process
    // killed between the JetStream ack and routing.
    let mut stack = Stack::new().chat_config(|c| c.route = false).start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 0).await;
    alice.send("bob", "crash-1", "survives").await.unwrap();
    let id = expect_sent(&mut alice, "crash-1").await.id;
    stack.chats[0].kill();

    let mut config = stack.chat_config.clone();
    config.route = true;
    stack.start_chat(config).await;
    let got = expect_message(&mut bob).await;
    assert_eq!((got.id, got.body.as_str()), (id, "survives"));
}

#[tokio::test]
async fn messages_the_routers_consumer_lost_in_flight_are_routed_first_and_in_order() {
    // The router sees the messages after the lost ones, and the skip in the consumer's
    // delivery numbers.
    lose_in_flight_then_route(2).await;
}

#[tokio::test]
async fn messages_lost_in_flight_with_nothing_after_them_are_routed_within_seconds() {
    // Every message was lost on the way (a former owner's dropped pull): the consumer has
    // nothing to deliver until its 30 s ack wait, so the router must notice by itself.
    lose_in_flight_then_route(6).await;
}

/// Six messages persisted while no chat instance routes; a pull of the first `lost` of them
/// (and the session markers before) is lost on the way, as when a NATS node dies with it in
/// flight or a former owner dropped it: the consumer counts them as delivered and would send
/// them again only after its ack wait. A router started then delivers all six, in order,
/// well within that wait.
async fn lose_in_flight_then_route(lost: usize) {
    let mut stack = Stack::new().chat_config(|c| c.route = false).start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 0).await;
    for i in 1..=6 {
        alice
            .send("bob", &format!("lost-{i}"), &i.to_string())
            .await
            .unwrap();
        expect_sent(&mut alice, &format!("lost-{i}")).await;
    }
    let conversation = ConversationId::direct(&user("alice"), &user("bob"));
    let stream = stack.stream_of(&conversation).await;
    let router = subjects::router(subjects::partition(&conversation, stack.bus.partitions));
    let consumer: PullConsumer = stream.get_consumer(&router).await.unwrap();
    let mut pulled = plumbing::bus::Pulled::start(&consumer, 1).await.unwrap();
    let never = tokio_util::sync::CancellationToken::new();
    let mut taken = 0;
    while taken < lost {
        let msg = within(pulled.next(&never)).await.unwrap();
        if !subjects::is_session_marker(msg.subject.as_str()) {
            taken += 1;
        }
    }
    drop(pulled);
    plumbing::bus::release_pin(&stream, &router).await.unwrap();

    let mut config = stack.chat_config.clone();
    config.route = true;
    let chat = stack.start_chat(config).await;
    for i in 1..=6 {
        assert_eq!(expect_message(&mut bob).await.body, i.to_string());
    }
    assert!(
        stack.chats[chat].metric("natter_chat_routed_from_stream_total") >= lost as u64,
        "the lost messages were read from the stream, not sent again by the consumer"
    );
}

#[tokio::test]
async fn json_and_msgpack_clients_talk_to_each_other() {
    let stack = Stack::new().start().await;
    let mut alice = stack.connect_with("alice", 0, Encoding::Json).await;
    let mut bob = stack.connect_with("bob", 0, Encoding::MsgPack).await;
    assert_eq!(bob.encoding(), Encoding::MsgPack);

    alice.send("bob", "e1", "from json").await.unwrap();
    expect_sent(&mut alice, "e1").await;
    assert_eq!(expect_message(&mut bob).await.body, "from json");

    bob.send("alice", "e2", "from msgpack ✓").await.unwrap();
    expect_sent(&mut bob, "e2").await;
    assert_eq!(expect_message(&mut alice).await.body, "from msgpack ✓");
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}
