//! The notifier: offline messages become one digest per user and window, delivered to a
//! webhook; nothing is lost while the webhook is down or the notifier restarts; a user who
//! comes online gets no push; bad input is counted, not fatal.
//!
//! "Nothing else arrived" is shown by a control user's digest: windows close in order, so
//! any further digest for the user under test would have reached the receiver before the
//! control user's, whose window opened later.

use async_nats::jetstream;
use protocol::frames::ServerFrame;
use protocol::payloads::{OfflineMessage, UserPresence};
use protocol::{ConversationId, ErrorCode, MessageId, UserId, subjects};
use serde_json::{Value, json};
use testkit::{
    PATIENCE, Stack, WebhookReceiver, eventually, expect_answer, expect_error, expect_push_token,
    expect_sent, reserve_port,
};
use tokio_tungstenite::tungstenite::Message;

const WINDOW_MS: u64 = 2_000;

fn user(u: &str) -> UserId {
    UserId::new(u).unwrap()
}

/// Stores an offline-message event for `to` from `from`, as the chat service announces one,
/// and waits for JetStream to have it.
/// Announces five messages from alice to an offline bob, and waits until notifier `i` has
/// taken them in.
async fn five_for_bob(stack: &Stack, js: &jetstream::Context, i: usize) {
    for _ in 0..5 {
        announce(js, &["bob"], "alice").await;
    }
    let notifier = &stack.notifiers[i];
    eventually("events taken in", PATIENCE, async || {
        notifier.metric("natter_notifier_events_total") == 5
    })
    .await;
}

async fn announce(js: &jetstream::Context, to: &[&str], from: &str) {
    let event = OfflineMessage {
        users: to.iter().map(|u| user(u)).collect(),
        conversation: ConversationId::direct(&user(to[0]), &user(from)),
        id: MessageId(ulid::Ulid::new()),
        from: user(from),
        group_name: None,
        ts: now_ms(),
    };
    let payload = serde_json::to_vec(&event).unwrap();
    store(js, payload).await;
}

async fn store(js: &jetstream::Context, payload: Vec<u8>) {
    js.publish(subjects::USER_OFFLINE_MESSAGE, payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits until the presence bucket says `who` is `online`.
async fn presence_is(stack: &Stack, who: &str, online: bool) {
    let js = jetstream::new(stack.nats.client().await);
    let bucket = js.get_key_value(subjects::PRESENCE_BUCKET).await.unwrap();
    eventually("presence recorded", PATIENCE, async || {
        match bucket.get(who).await.unwrap() {
            Some(v) => serde_json::from_slice::<UserPresence>(&v).unwrap().online == online,
            None => false,
        }
    })
    .await;
}

/// Waits until the notifier's metric `name` is `value` (a delivery is counted just after the
/// receiver has it).
async fn metric_reaches(notifier: &testkit::RunningNotifier, name: &str, value: i64) {
    eventually(name, PATIENCE, async || notifier.metric(name) == value).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_messages_to_an_offline_user_make_one_digest_with_their_push_token() {
    let mut stack = Stack::new().start().await;
    let mut receiver = WebhookReceiver::start().await;
    let n = stack.start_notifier(WINDOW_MS, &receiver.url()).await;

    // bob registers his phone's token, then goes offline.
    let mut bob = stack.connect("bob", 0).await;
    bob.push_token("q1", "fcm", "bob-phone-token", false)
        .await
        .unwrap();
    assert_eq!(expect_push_token(&mut bob, "q1").await, Ok(true));
    bob.close().await;
    presence_is(&stack, "bob", false).await;

    let mut alice = stack.connect("alice", 0).await;
    for i in 0..15 {
        alice
            .send("bob", &format!("c{i}"), "hello bob")
            .await
            .unwrap();
        expect_sent(&mut alice, &format!("c{i}")).await;
    }

    let digest = receiver.next_digest().await;
    assert_eq!(digest["version"], 1);
    assert_eq!(digest["user"], "bob");
    assert_eq!(digest["total"], 15);
    assert_eq!(digest["text"], "15 new messages from alice");
    assert_eq!(
        digest["tokens"],
        json!([{"platform": "fcm", "token": "bob-phone-token"}])
    );
    let conversations = digest["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 1);
    assert_eq!(conversations[0]["conversation"], "dm:alice:bob");
    assert_eq!(conversations[0]["count"], 15);
    assert_eq!(conversations[0]["from"], json!(["alice"]));
    assert!(conversations[0]["first_id"].as_str() < conversations[0]["last_id"].as_str());
    assert!(digest.get("body").is_none() && !digest.to_string().contains("hello bob"));

    // Exactly one: carol's later window is the next digest.
    let js = jetstream::new(stack.nats.client().await);
    announce(&js, &["carol"], "dave").await;
    assert_eq!(receiver.next_digest().await["user"], "carol");
    let notifier = &stack.notifiers[n];
    metric_reaches(notifier, "natter_notifier_digests_sent_total", 2).await;
    assert_eq!(notifier.metric("natter_notifier_events_total"), 16);
    assert_eq!(receiver.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_waits_for_a_webhook_that_is_down_and_arrives_once_it_is_up() {
    let mut stack = Stack::new().start().await;
    let down = reserve_port().await;
    let n = stack
        .start_notifier(WINDOW_MS, &format!("http://{down}/push"))
        .await;
    let js = jetstream::new(stack.nats.client().await);
    for _ in 0..3 {
        announce(&js, &["bob"], "alice").await;
    }
    let notifier = &stack.notifiers[n];
    eventually("a failed attempt", PATIENCE, async || {
        notifier.metric("natter_notifier_webhook_failures_total") >= 1
    })
    .await;

    // Up, but answering 503 once more.
    let mut receiver = WebhookReceiver::start_on(down).await;
    receiver.refuse_next(1);
    let digest = receiver.next_digest().await;
    assert_eq!(digest["user"], "bob");
    assert_eq!(digest["total"], 3);
    assert_eq!(receiver.requests(), 2, "one refused, one accepted");

    announce(&js, &["carol"], "alice").await;
    assert_eq!(receiver.next_digest().await["user"], "carol");
    metric_reaches(notifier, "natter_notifier_digests_sent_total", 2).await;
    assert!(notifier.metric("natter_notifier_webhook_failures_total") >= 2);
    assert_eq!(notifier.metric("natter_notifier_digests_failed_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_comes_online_within_the_window_gets_no_push() {
    let mut stack = Stack::new().start().await;
    let mut receiver = WebhookReceiver::start().await;
    let n = stack.start_notifier(3_000, &receiver.url()).await;
    let js = jetstream::new(stack.nats.client().await);
    // One event names both: bob and carol share a window's start.
    for _ in 0..4 {
        announce(&js, &["bob", "carol"], "alice").await;
    }
    let notifier = &stack.notifiers[n];
    eventually("events taken in", PATIENCE, async || {
        notifier.metric("natter_notifier_events_total") == 4
    })
    .await;

    let _bob = stack.connect("bob", 0).await;
    presence_is(&stack, "bob", true).await;

    let digest = receiver.next_digest().await;
    assert_eq!(digest["user"], "carol", "only carol is pushed");
    assert_eq!(digest["total"], 4);
    // Messages after bob goes offline again start a window of their own, later than carol's.
    announce(&js, &["dave"], "alice").await;
    assert_eq!(receiver.next_digest().await["user"], "dave");
    metric_reaches(notifier, "natter_notifier_dropped_online_total", 1).await;
    eventually("every event acknowledged", PATIENCE, async || {
        notifier.metric("natter_notifier_pending_events") == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_restarted_within_the_window_still_sends_the_digest_once() {
    let mut stack = Stack::new().start().await;
    let mut receiver = WebhookReceiver::start().await;
    let first = stack.start_notifier(3_000, &receiver.url()).await;
    let js = jetstream::new(stack.nats.client().await);
    five_for_bob(&stack, &js, first).await;
    stack.notifiers[first].stop().await;
    assert_eq!(receiver.requests(), 0, "stopped before its window closed");

    let second = stack.start_notifier(3_000, &receiver.url()).await;
    let digest = receiver.next_digest().await;
    assert_eq!(digest["user"], "bob");
    assert_eq!(digest["total"], 5);

    announce(&js, &["carol"], "alice").await;
    assert_eq!(receiver.next_digest().await["user"], "carol");
    metric_reaches(
        &stack.notifiers[second],
        "natter_notifier_digests_sent_total",
        2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_event_is_acknowledged_and_counted() {
    let mut stack = Stack::new().start().await;
    let mut receiver = WebhookReceiver::start().await;
    let n = stack.start_notifier(500, &receiver.url()).await;
    let js = jetstream::new(stack.nats.client().await);
    store(&js, b"{not json".to_vec()).await;
    store(
        &js,
        br#"{"users":["bob.*"],"conversation":"dm:a:b"}"#.to_vec(),
    )
    .await;
    announce(&js, &["carol"], "alice").await;

    assert_eq!(receiver.next_digest().await["user"], "carol");
    let notifier = &stack.notifiers[n];
    assert_eq!(
        notifier.metric("natter_notifier_undecodable_events_total"),
        2
    );
    let stream = js.get_stream(subjects::OFFLINE_STREAM).await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer(subjects::NOTIFIER_CONSUMER)
        .await
        .unwrap();
    eventually("nothing left unacknowledged", PATIENCE, async || {
        let info = consumer.info().await.unwrap();
        info.num_ack_pending == 0 && info.num_pending == 0
    })
    .await;
}

#[tokio::test]
async fn bad_push_token_frames_get_clear_errors_and_good_ones_reach_the_bucket() {
    let stack = Stack::new().start().await;
    let mut bob = stack.connect("bob", 0).await;
    let long = "t".repeat(4097);
    let cases = [
        (
            json!({"type":"push_token","qid":"q1","platform":"FCM","token":"t"}),
            "platform",
        ),
        (
            json!({"type":"push_token","qid":"q2","platform":"fcm","token":""}),
            "token",
        ),
        (
            json!({"type":"push_token","qid":"q3","platform":"fcm","token":long}),
            "token",
        ),
    ];
    for (frame, named) in cases {
        bob.send_raw(Message::text(frame.to_string()))
            .await
            .unwrap();
        let qid = frame["qid"].as_str().unwrap();
        let (code, reason) = expect_push_token(&mut bob, qid).await.unwrap_err();
        assert_eq!(code, ErrorCode::MalformedFrame, "{frame}");
        assert!(reason.contains(named), "{reason}");
    }
    // A frame missing its token does not decode at all.
    bob.send_raw(Message::text(
        r#"{"type":"push_token","qid":"q4","platform":"fcm"}"#,
    ))
    .await
    .unwrap();
    assert_eq!(expect_error(&mut bob).await, ErrorCode::MalformedFrame);

    let js = jetstream::new(stack.nats.client().await);
    let bucket = js
        .get_key_value(subjects::PUSH_TOKENS_BUCKET)
        .await
        .unwrap();
    let key = subjects::push_token_key(&user("bob"), "apns-token");
    bob.send_raw(Message::text(
        r#"{"type":"push_token","qid":"q5","platform":"apns","token":"apns-token"}"#,
    ))
    .await
    .unwrap();
    assert_eq!(expect_push_token(&mut bob, "q5").await, Ok(true));
    let stored: Value = serde_json::from_slice(&bucket.get(&key).await.unwrap().unwrap()).unwrap();
    assert_eq!(stored["user"], "bob");
    assert_eq!(stored["platform"], "apns");
    assert_eq!(stored["token"], "apns-token");

    bob.push_token("q6", "apns", "apns-token", true)
        .await
        .unwrap();
    assert_eq!(expect_push_token(&mut bob, "q6").await, Ok(false));
    assert!(bucket.get(&key).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_notifiers_send_one_digest_between_them() {
    let mut stack = Stack::new().start().await;
    let mut receiver = WebhookReceiver::start().await;
    let first = stack.start_notifier(WINDOW_MS, &receiver.url()).await;
    let second = stack.start_notifier(WINDOW_MS, &receiver.url()).await;
    let js = jetstream::new(stack.nats.client().await);
    for _ in 0..6 {
        announce(&js, &["bob"], "alice").await;
    }
    let digest = receiver.next_digest().await;
    assert_eq!(digest["user"], "bob");
    assert_eq!(digest["total"], 6, "one instance holds the whole window");

    announce(&js, &["carol"], "alice").await;
    assert_eq!(receiver.next_digest().await["user"], "carol");
    let sent = |i: usize| stack.notifiers[i].metric("natter_notifier_digests_sent_total");
    eventually("both digests counted", PATIENCE, async || {
        sent(first) + sent(second) == 2
    })
    .await;
    assert_eq!(receiver.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_group_messages_make_one_digest_per_offline_member_naming_the_group() {
    let mut stack = Stack::new().start().await;
    let mut receiver = WebhookReceiver::start().await;
    let n = stack.start_notifier(WINDOW_MS, &receiver.url()).await;

    // alice is online; bob and carol, the other members, are not. They have messaged her
    // (so she may add them), which reaches her live: no digest.
    let mut alice = stack.connect("alice", 0).await;
    stack.make_contacts("bob", &["alice"]).await;
    stack.make_contacts("carol", &["alice"]).await;
    alice
        .group(
            "create",
            protocol::GroupOp::Create {
                name: "G".into(),
                members: vec!["bob".into(), "carol".into()],
            },
        )
        .await
        .unwrap();
    let ServerFrame::Group { group, .. } = expect_answer(&mut alice, "create").await else {
        panic!("group not created")
    };
    for i in 0..15 {
        alice
            .send_group(group.group.as_str(), &format!("g{i}"), "hello group")
            .await
            .unwrap();
        expect_sent(&mut alice, &format!("g{i}")).await;
    }

    let mut digests = [receiver.next_digest().await, receiver.next_digest().await];
    digests.sort_by_key(|d| d["user"].as_str().unwrap().to_string());
    for (digest, who) in digests.iter().zip(["bob", "carol"]) {
        assert_eq!(digest["user"], who);
        assert_eq!(digest["total"], 15, "system messages are not announced");
        assert_eq!(digest["text"], "15 new messages in G");
        let conversations = digest["conversations"].as_array().unwrap();
        assert_eq!(
            conversations[0]["conversation"],
            group.conversation.as_str()
        );
        assert_eq!(conversations[0]["group_name"], "G");
    }
    metric_reaches(&stack.notifiers[n], "natter_notifier_digests_sent_total", 2).await;
    assert_eq!(receiver.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_killed_within_the_window_hands_its_events_on_after_the_ack_wait() {
    let mut stack = Stack::new().start().await;
    let mut receiver = WebhookReceiver::start().await;
    let config = notifier::NotifierConfig {
        window_ms: 5_000,
        ack_wait_ms: 1_500,
        provider: notifier::ProviderKind::Webhook,
        webhook_url: receiver.url(),
        retry_initial_backoff_ms: 100,
        retry_max_backoff_ms: 500,
        ..Default::default()
    };
    let first = stack.start_notifier_with(config.clone()).await;
    let js = jetstream::new(stack.nats.client().await);
    five_for_bob(&stack, &js, first).await;
    // Held for two ack waits inside the window, the events are not delivered again: the
    // progress acknowledgements keep them. (This sleep holds the window open on purpose; it
    // does not wait for an event.)
    tokio::time::sleep(std::time::Duration::from_millis(3_200)).await;
    let offline = js.get_stream(subjects::OFFLINE_STREAM).await.unwrap();
    let info = offline
        .consumer_info(subjects::NOTIFIER_CONSUMER)
        .await
        .unwrap();
    assert_eq!(
        (info.num_ack_pending, info.num_redelivered),
        (5, 0),
        "held, and not delivered again while the notifier is alive"
    );
    assert_eq!(receiver.requests(), 0, "the window is still open");
    stack.notifiers[first].kill();

    // The events come back to the next instance once the pin moves and the ack wait lapses.
    let second = stack.start_notifier_with(config).await;
    let digest = receiver.next_digest().await;
    assert_eq!(
        (digest["user"].as_str(), digest["total"].as_i64()),
        (Some("bob"), Some(5))
    );
    announce(&js, &["carol"], "alice").await;
    assert_eq!(
        receiver.next_digest().await["user"],
        "carol",
        "bob's digest went once"
    );
    metric_reaches(
        &stack.notifiers[second],
        "natter_notifier_digests_sent_total",
        2,
    )
    .await;
}
