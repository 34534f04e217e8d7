//! Bad input gets the documented error or close code; the gateway keeps serving everyone else
//! and nothing is persisted for a rejected send.

use protocol::frames::ServerFrame;
use protocol::{CloseCode, Encoding, ErrorCode};
use testkit::client::{ConnectError, Connection};
use testkit::{
    Stack, expect_closed, expect_error, expect_message, expect_pong, expect_sent, within,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn bad_frames_get_error_codes_and_nothing_is_persisted() {
    let stack = Stack::new()
        .gateway_config(|g| g.max_body_bytes = 1024)
        .chat_config(|c| c.max_body_bytes = 1024)
        .start()
        .await;
    let mut mallory = stack.connect("mallory", 0).await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 0).await;

    let cases: [(&str, ErrorCode); 5] = [
        ("{not json", ErrorCode::MalformedFrame),
        (
            r#"{"type":"teleport","to":"bob"}"#,
            ErrorCode::UnknownFrameType,
        ),
        (r#"{"type":"send","to":"bob"}"#, ErrorCode::MalformedFrame),
        (
            r#"{"type":"send","to":"bob.*","cid":"x1","body":"hi"}"#,
            ErrorCode::InvalidId,
        ),
        (
            r#"{"type":"ack","conversation":"dm:alice:bob","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV"}"#,
            ErrorCode::Forbidden,
        ),
    ];
    for (raw, want) in cases {
        mallory.send_raw(Message::text(raw)).await.unwrap();
        assert_eq!(expect_error(&mut mallory).await, want, "for {raw}");
    }
    let big = "x".repeat(1025);
    mallory.send("bob", "big", &big).await.unwrap();
    assert_eq!(expect_error(&mut mallory).await, ErrorCode::BodyTooLarge);

    // The sender is the token's user, whatever the frame claims.
    mallory
        .send_raw(Message::text(
            r#"{"type":"send","from":"alice","to":"bob","cid":"f1","body":"spoof"}"#,
        ))
        .await
        .unwrap();
    let got = expect_message(&mut bob).await;
    assert_eq!((got.from.as_str(), got.body.as_str()), ("mallory", "spoof"));

    // Only that one valid send was stored; others are still served.
    assert_eq!(stack.stored_messages().await, 1);
    alice.send("bob", "ok", "still here").await.unwrap();
    expect_sent(&mut alice, "ok").await;
    // Mallory's connection also still works.
    mallory.ping(Some(3)).await.unwrap();
    expect_pong(&mut mallory, Some(3)).await;
}

#[tokio::test]
async fn oversize_frames_and_wrong_frame_kinds_close_the_connection() {
    let stack = Stack::new()
        .gateway_config(|g| g.max_frame_bytes = 4096)
        .start()
        .await;
    let mut big = stack.connect("alice", 0).await;
    big.send_raw(Message::text("x".repeat(5000))).await.unwrap();
    assert_eq!(
        expect_closed(&mut big).await,
        Some(CloseCode::FrameTooLarge as u16)
    );

    let mut binary = stack.connect("alice", 0).await;
    binary
        .send_raw(Message::binary(vec![0x81, 0x00]))
        .await
        .unwrap();
    assert_eq!(
        expect_closed(&mut binary).await,
        Some(CloseCode::ProtocolViolation as u16)
    );

    // The gateway is unharmed.
    let mut fine = stack.connect("carol", 0).await;
    fine.ping(None).await.unwrap();
    expect_pong(&mut fine, None).await;
}

#[tokio::test]
async fn bad_tokens_get_http_401_before_the_upgrade() {
    let stack = Stack::new().start().await;
    let url = stack.gateways[0].ws_url();
    let forged = gateway::mint_token("some-other-secret", "alice", 3600);
    let claims = |f: fn(&mut gateway::Claims)| {
        let mut claims = gateway::Claims {
            sub: "alice".into(),
            exp: now_secs() + 3600,
            ..Default::default()
        };
        f(&mut claims);
        gateway::encode_claims(testkit::SECRET, &claims)
    };
    let expired = claims(|c| c.exp = 1_000);
    let never_expires = claims(|c| c.exp = u64::MAX);
    let not_yet_valid = claims(|c| c.nbf = Some(now_secs() + 600));
    let issued_ahead = claims(|c| c.iat = Some(now_secs() + 600));
    for token in [
        forged.as_str(),
        expired.as_str(),
        never_expires.as_str(),
        not_yet_valid.as_str(),
        issued_ahead.as_str(),
        "",
        "not-a-jwt",
    ] {
        let err = Connection::connect(&url, token, Encoding::Json).await.err();
        assert!(
            matches!(err, Some(ConnectError::Refused(401))),
            "token {token:?}: {err:?}"
        );
    }
    // No token at all.
    let request = url.as_str().into_client_request().unwrap();
    let err = Connection::open(request, Encoding::Json).await.err();
    assert!(matches!(err, Some(ConnectError::Refused(401))), "{err:?}");

    // A token in the query string works (browsers cannot set headers).
    let request = format!("{url}?access_token={}", stack.token("alice"))
        .into_client_request()
        .unwrap();
    let mut conn = Connection::open(request, Encoding::Json).await.unwrap();
    let welcome = within(conn.next_frame()).await.unwrap();
    assert!(matches!(welcome, ServerFrame::Welcome { ref user, .. } if user.as_str() == "alice"));
}

#[tokio::test]
async fn a_silent_client_is_closed_with_the_heartbeat_code() {
    let stack = Stack::new()
        .gateway_config(|g| g.heartbeat_timeout_ms = 300)
        .start()
        .await;
    let mut silent = stack.connect("alice", 0).await;
    assert_eq!(
        expect_closed(&mut silent).await,
        Some(CloseCode::HeartbeatTimeout as u16)
    );
    assert!(CloseCode::HeartbeatTimeout.should_reconnect());
}

#[tokio::test]
async fn a_pinging_client_outlives_the_heartbeat_timeout() {
    let stack = Stack::new()
        .gateway_config(|g| g.heartbeat_timeout_ms = 1_000)
        .start()
        .await;
    let mut alive = stack.connect("alice", 0).await;
    for i in 0..10 {
        // Pacing, not synchronisation: 10 × 250 ms spans more than two timeouts.
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        alive.ping(Some(i)).await.unwrap();
        expect_pong(&mut alive, Some(i)).await;
    }
}

#[tokio::test]
async fn shutdown_sends_every_client_the_reconnect_code() {
    let mut stack = Stack::new().start().await;
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(stack.connect(&format!("user{i}"), 0).await);
    }
    stack.gateways[0].shutdown().await;
    for client in &mut clients {
        assert_eq!(
            expect_closed(client).await,
            Some(CloseCode::Reconnect as u16)
        );
    }
    let url = stack.gateways[0].ws_url();
    assert!(
        Connection::connect(&url, &stack.token("late"), Encoding::Json)
            .await
            .is_err()
    );
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The answers a client developer asked about, each as docs/protocol.md states it.
#[tokio::test]
async fn edge_frames_get_the_answers_the_protocol_documents() {
    let stack = Stack::new().start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut mallory = stack.connect("mallory", 0).await;

    // A connection opened without `cursor` gets no `synced`: the next frame answers the ping.
    mallory.ping(Some(7)).await.unwrap();
    assert_eq!(
        mallory.next_frame().await.unwrap(),
        ServerFrame::Pong { ts: Some(7) }
    );

    let cases: [(&str, ErrorCode); 3] = [
        // `sync` with a cursor the server never gave.
        (
            r#"{"type":"sync","cursor":"yesterday"}"#,
            ErrorCode::InvalidId,
        ),
        // `send` naming both a user and a group.
        (
            r#"{"type":"send","to":"bob","group":"01JGGVS2Q4M3TEAMS0000000AB","cid":"b1","body":"hi"}"#,
            ErrorCode::InvalidId,
        ),
        // `typing` in someone else's 1:1 conversation.
        (
            r#"{"type":"typing","conversation":"dm:alice:bob"}"#,
            ErrorCode::Forbidden,
        ),
    ];
    for (raw, want) in cases {
        mallory.send_raw(Message::text(raw)).await.unwrap();
        assert_eq!(expect_error(&mut mallory).await, want, "for {raw}");
    }

    // A `history` limit over 100 is taken as 100.
    for window in (0..101).collect::<Vec<_>>().chunks(20) {
        for i in window {
            alice.send("bob", &format!("m{i}"), "hi").await.unwrap();
        }
        for i in window {
            expect_sent(&mut alice, &format!("m{i}")).await;
        }
    }
    // History stores them after SENT: ask until the page says more follow.
    let mut page = 0;
    testkit::eventually(
        "history holds all 101",
        std::time::Duration::from_secs(30),
        async || {
            page += 1;
            let qid = format!("h{page}");
            let ask = format!(
                r#"{{"type":"history","qid":"{qid}","conversation":"dm:alice:bob","limit":500}}"#
            );
            alice.send_raw(Message::text(ask)).await.unwrap();
            match testkit::expect_answer(&mut alice, &qid).await {
                ServerFrame::History { messages, more, .. } => {
                    assert!(messages.len() <= 100, "{} messages", messages.len());
                    more && messages.len() == 100
                }
                other => panic!("expected a history page, got {other:?}"),
            }
        },
    )
    .await;
}
