//! User presence reaches contacts, and a delivery to a socket that is gone is reported so the
//! recipient is treated as offline at once.

use futures::StreamExt;
use protocol::frames::{Message, ServerFrame};
use protocol::payloads::{Delivery, OfflineMessage};
use protocol::{ClientFrame, ConversationId, Encoding, UserId, subjects};
use testkit::client::Connection;
use testkit::{Stack, expect_presence, expect_sent, within};

/// What a `presence` request got for one user.
#[derive(Debug, PartialEq)]
enum Answer {
    Presence {
        online: bool,
        last_seen: Option<u64>,
    },
    Refused,
}

/// Asks to watch `users` and collects one answer per user.
async fn watch(conn: &mut Connection, users: &[&str]) -> Vec<(String, Answer)> {
    conn.send_frame(&ClientFrame::Presence {
        users: users.iter().map(|u| u.to_string()).collect(),
    })
    .await
    .unwrap();
    let mut answers = Vec::new();
    within(async {
        while answers.len() < users.len() {
            match conn.next_frame().await.unwrap() {
                ServerFrame::Presence {
                    user,
                    online,
                    last_seen,
                } => answers.push((user.to_string(), Answer::Presence { online, last_seen })),
                ServerFrame::Error { code, reason, .. } => {
                    assert_eq!(code, protocol::ErrorCode::Forbidden, "{reason}");
                    for user in users.iter().filter(|u| reason.contains(**u)) {
                        answers.push((user.to_string(), Answer::Refused));
                    }
                }
                _ => {}
            }
        }
    })
    .await;
    answers.sort_by(|a, b| a.0.cmp(&b.0));
    answers
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_see_online_offline_and_last_seen_and_strangers_see_nothing() {
    let stack = Stack::new().gateways(2).start().await;
    let mut alice = stack.connect("alice", 0).await;
    let bob = stack.connect("bob", 1).await;
    alice.send("bob", "hello", "hi bob").await.unwrap();
    expect_sent(&mut alice, "hello").await;

    // Right after `sent`, before the history writer may have stored the message: bob is a
    // contact already (the gateway waits for the writer before it says no).
    let answers = watch(&mut alice, &["bob", "carol"]).await;
    assert_eq!(
        answers,
        vec![
            (
                "bob".to_string(),
                Answer::Presence {
                    online: true,
                    last_seen: None
                }
            ),
            ("carol".to_string(), Answer::Refused),
        ]
    );

    // bob's only device goes: alice hears he is offline, and since when.
    let before = now_ms();
    bob.close().await;
    let (online, last_seen) = expect_presence(&mut alice, "bob").await;
    assert!(!online);
    let last_seen = last_seen.expect("last seen when going offline");
    assert!(
        last_seen >= before - 1_000 && last_seen <= now_ms(),
        "{last_seen}"
    );

    // Two devices: offline only when both are gone.
    let phone = stack.connect("bob", 0).await;
    assert_eq!(
        expect_presence(&mut alice, "bob").await,
        (true, Some(last_seen))
    );
    let tablet = stack.connect("bob", 1).await;
    phone.close().await;
    tablet.close().await;
    let (online, _) = expect_presence(&mut alice, "bob").await;
    assert!(!online, "offline once the last device left");
    // No flapping in between: the next change is a reconnect, not a stale "online".
    let _again = stack.connect("bob", 0).await;
    assert!(expect_presence(&mut alice, "bob").await.0, "online again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_to_a_closed_socket_is_reported_and_the_recipient_counts_as_offline() {
    let stack = Stack::new().start().await;
    let nats = stack.nats.client().await;
    let mut offline_events = nats
        .subscribe(subjects::USER_OFFLINE_MESSAGE)
        .await
        .unwrap();
    plumbing::bus::round_trip(&nats).await;

    let (bob, bob_conn) = stack.connect_welcomed("bob", 0, Encoding::Json).await;
    bob.close().await;
    within(async {
        while stack.gateways[0].metric("natter_gateway_connections").await != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;

    // A delivery routed before the chat service heard of the close.
    let (alice_id, bob_id) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
    let message = Message {
        attachment: None,
        reacted: Vec::new(),
        reactions: Vec::new(),
        change: None,
        deleted: false,
        edited: None,
        id: "01JGGVSAKV7Y2XW9P4CQ8R6T3M".parse().unwrap(),
        conversation: ConversationId::direct(&alice_id, &bob_id),
        from: alice_id.clone(),
        to: bob_id.clone(),
        cid: protocol::ClientMsgId::new("late").unwrap(),
        body: "you just left".into(),
        ts: now_ms(),
        cursor: None,
        event: None,
        state: None,
        reply: None,
    };
    let delivery = Delivery {
        targets: vec![bob_conn],
        frame: ServerFrame::Message(message.clone()),
        order: None,
        position: None,
    };
    let gateway = protocol::GatewayId::new(&stack.gateways[0].id).unwrap();
    nats.publish(
        subjects::gateway_deliver(&gateway),
        serde_json::to_vec(&delivery).unwrap().into(),
    )
    .await
    .unwrap();

    let event = within(offline_events.next()).await.unwrap();
    let event: OfflineMessage = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!((event.users, event.id), (vec![bob_id], message.id));
    assert_eq!(
        stack.gateways[0]
            .metric("natter_gateway_undelivered_total")
            .await,
        1
    );
}
