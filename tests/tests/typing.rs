//! Typing indicators: delivered to the other participant's devices, never stored, and
//! rate-limited per connection.

use protocol::{ConversationId, ErrorCode};
use testkit::{Stack, expect_error, expect_pong, expect_typing};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn typing_reaches_every_device_of_the_peer_and_is_not_stored() {
    let stack = Stack::new().gateways(2).start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob_phone = stack.connect("bob", 0).await;
    let mut bob_laptop = stack.connect("bob", 1).await;

    for _ in 0..5 {
        alice
            .send_raw(Message::text(
                r#"{"type":"typing","conversation":"dm:alice:bob"}"#,
            ))
            .await
            .unwrap();
    }
    let conversation: ConversationId = "dm:alice:bob".parse().unwrap();
    for bob in [&mut bob_phone, &mut bob_laptop] {
        let (typing_in, by) = expect_typing(bob).await;
        assert_eq!((typing_in, by.as_str()), (conversation.clone(), "alice"));
    }
    // Frames are handled in order: once the pong is back, all five typing frames were seen.
    alice.ping(Some(1)).await.unwrap();
    expect_pong(&mut alice, Some(1)).await;
    // Five in a burst: one goes out, four are dropped by the gateway's rate limit.
    assert_eq!(
        stack.gateways[0]
            .metric("natter_gateway_typing_dropped_total")
            .await,
        4
    );
    assert_eq!(stack.stored_messages().await, 0, "typing is never stored");

    // Typing in someone else's conversation is refused.
    alice
        .send_raw(Message::text(
            r#"{"type":"typing","conversation":"dm:bob:carol"}"#,
        ))
        .await
        .unwrap();
    assert_eq!(expect_error(&mut alice).await, ErrorCode::Forbidden);
}
