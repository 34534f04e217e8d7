//! Losing NATS: a restart of the nats-server in the middle of traffic, and one gateway cut
//! off while the rest stays connected. The gateways keep their WebSocket connections and
//! answer heartbeats while NATS is gone, refuse new connections with 503, and re-register
//! their presence when it is back; their sessions then replay what may have been lost. Sends
//! refused meanwhile are retried with the same cid; every message answered SENT is stored
//! once and reaches its recipient.

use std::time::{Duration, Instant};

use futures::StreamExt;
use protocol::frames::ServerFrame;
use protocol::{Encoding, GatewayId, MessageId, UserId, subjects};
use testkit::client::{ConnectError, Connection};
use testkit::{
    Link, RunningGateway, Stack, Traffic, TrafficPlan, eventually, expect_frame, expect_message,
    expect_pong, expect_sent, expect_synced,
};

/// The gateways' presence lease in this test. The outage lasts longer, so every lease would
/// have lapsed in the chat service's presence view had its clocks kept running.
const LEASE_TTL: Duration = Duration::from_secs(3);
/// How long traffic and recovery may take at each step on a loaded 2-core machine.
const RECOVERY: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_traffic_loses_nothing_and_stores_nothing_twice() {
    let test_started = Instant::now();
    let mut stack = Stack::new()
        .gateways(2)
        .gateway_config(|c| {
            c.lease_ttl_ms = LEASE_TTL.as_millis() as u64;
            c.send_timeout_ms = 1_000;
        })
        .start()
        .await;
    let mut alice = stack.connect_with("alice", 0, Encoding::Json).await;
    let mut bob = stack.connect_with("bob", 1, Encoding::Json).await;
    let traffic = Traffic::start(
        &stack,
        TrafficPlan {
            pairs: 20,
            messages_per_s: 400.0,
            window: 8,
            resend_after: Duration::from_secs(5),
        },
    )
    .await;
    traffic.wait_acked(1_000, RECOVERY).await;

    // NATS goes away.
    stack.nats.server().kill();
    let outage_started = Instant::now();
    for gw in &stack.gateways {
        eventually("gateway sees NATS down", RECOVERY, async || {
            gw.http_get("/healthz").await.starts_with("HTTP/1.1 503")
        })
        .await;
    }
    // New connections are refused, existing ones are served.
    let refused = Connection::connect(
        &stack.gateways[0].ws_url(),
        &stack.token("carol"),
        Encoding::Json,
    )
    .await;
    assert!(
        matches!(refused, Err(ConnectError::Refused(503))),
        "a connection during the outage: {:?}",
        refused.map(|_| "accepted")
    );
    pong(&mut alice, 1).await;
    pong(&mut bob, 1).await;
    // The outage outlasts the lease TTL. This sleep is the fault's duration, not a wait for
    // some event: nothing could tell the test that the lease "has lapsed", because the
    // point is that no one must act on it.
    tokio::time::sleep(LEASE_TTL + Duration::from_secs(1)).await;
    pong(&mut alice, 2).await;
    let at_restart = traffic.acked();
    tokio::task::block_in_place(|| stack.nats.server().restart()).expect("restart nats-server");
    let outage = outage_started.elapsed();

    for gw in &stack.gateways {
        eventually("gateway re-registered", RECOVERY, async || {
            gw.metric("natter_gateway_reregistrations_total").await >= 1
        })
        .await;
    }
    let recovered_after = outage_started.elapsed();
    traffic.wait_acked(at_restart + 1_000, RECOVERY).await;
    // No connection was closed or opened again: each gateway still holds the 21 it got.
    for gw in &stack.gateways {
        assert_eq!(gw.metric("natter_gateway_connections").await, 21);
        assert_eq!(gw.metric("natter_gateway_connections_total").await, 21);
    }
    let report = traffic.finish(RECOVERY).await;
    report.assert_all_delivered();

    // A user connected before the outage gets a message live.
    alice
        .send("bob", "after-restart", "hello again")
        .await
        .unwrap();
    let id = expect_sent(&mut alice, "after-restart").await.id;
    assert_eq!(expect_message(&mut bob).await.id, id);

    // Every SENT message is stored once and reached its recipient.
    let stored = stack.stream_messages().await;
    report.assert_stored_once(&stored);
    println!(
        "nats restart: {} messages SENT ({} resends, {} duplicate deliveries dropped), \
         outage {:.1} s, gateways re-registered {:.1} s after the kill, longest gap between \
         SENT answers {:.2} s, {:.0} msg/s, test {:.1} s",
        report.sent.len(),
        report.resends,
        report.duplicates_received,
        outage.as_secs_f64(),
        recovered_after.as_secs_f64(),
        report.longest_ack_gap.as_secs_f64(),
        report.rate(),
        test_started.elapsed().as_secs_f64(),
    );
}

/// 1,000 sessions on a gateway cut off from NATS, 20 of them in a group: when it is back each
/// gets exactly what it missed, from a few shared reads, with a bounded number of JetStream
/// API requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_a_gateways_sessions_replay_from_one_shared_read() {
    const USERS: usize = 1_000;
    const IN_GROUP: usize = 20;
    let mut stack = Stack::new()
        .gateway_config(|c| {
            c.lease_ttl_ms = LEASE_TTL.as_millis() as u64;
            c.send_timeout_ms = 1_000;
        })
        .chat_config(|c| c.group_adds = chat::GroupAdds::Anyone)
        .start()
        .await;
    let link = Link::start(&stack.nats.url()).await;
    let cut_off = stack.start_gateway_via("gw-cut", &link.url()).await;
    let mut alice = stack.connect("alice", 0).await;
    let users: Vec<String> = (0..USERS).map(|i| format!("m{i:04}")).collect();
    let mut devices = Vec::new();
    for user in &users {
        devices.push(stack.connect(user, cut_off).await);
    }
    alice
        .group(
            "create",
            protocol::GroupOp::Create {
                name: "some of them".into(),
                members: users[..IN_GROUP].to_vec(),
            },
        )
        .await
        .unwrap();
    let group = match testkit::expect_answer(&mut alice, "create").await {
        ServerFrame::Group { group, .. } => group,
        other => panic!("no group: {other:?}"),
    };
    // Everything so far reached the devices: the group's creation, then a hello each.
    let mut seen: Vec<Vec<MessageId>> = vec![Vec::new(); USERS];
    for (i, (user, device)) in users.iter().zip(&mut devices).enumerate() {
        let hello = send_to(&mut alice, user, "hello").await;
        loop {
            let id = expect_message(device).await.id;
            seen[i].push(id);
            if id == hello {
                break;
            }
        }
    }

    let gw = &stack.gateways[cut_off];
    let replays_alone = || async {
        gw.metric("natter_gateway_replays_direct_total").await
            + gw.metric("natter_gateway_replays_with_consumers_total")
                .await
    };
    let alone_before = replays_alone().await;
    let api_before = gw
        .metric("natter_gateway_jetstream_api_requests_total")
        .await;
    cut(&link, gw).await;
    let mut missed: Vec<Vec<MessageId>> = Vec::new();
    for user in &users {
        missed.push(vec![send_to(&mut alice, user, "while cut off").await]);
    }
    let mut posts = Vec::new();
    for i in 0..2 {
        let cid = format!("post{i}");
        alice
            .send_group(group.group.as_str(), &cid, "to the group")
            .await
            .unwrap();
        posts.push(expect_sent(&mut alice, &cid).await.id);
    }
    link.restore();

    // Each device gets exactly what it missed, unasked, in order.
    for (i, device) in devices.iter_mut().enumerate() {
        let (replayed, synced) = expect_synced(device).await;
        assert!(synced.recovered);
        let mut expected = missed[i].clone();
        if i < IN_GROUP {
            expected.extend(&posts);
        }
        // The replay starts where the gateway's deliveries stood at its last look before the
        // cut (every 100 ms): copies of what a device had are dropped by id, as the protocol
        // tells clients to.
        let got: Vec<MessageId> = replayed
            .iter()
            .map(|m| m.id)
            .filter(|id| !seen[i].contains(id))
            .collect();
        let group_order: Vec<MessageId> = got
            .iter()
            .filter(|id| posts.contains(id))
            .copied()
            .collect();
        let (mut got, mut want) = (got, expected);
        got.sort();
        want.sort();
        assert_eq!(got, want, "{}", users[i]);
        if i < IN_GROUP {
            assert_eq!(group_order, posts, "{}: the group in order", users[i]);
        }
        assert!(replayed.iter().all(|m| m.cursor.is_some()));
    }
    // From one read of the gap (or a few, as sessions asked while one was under way), not
    // one replay of JetStream and history per session.
    let reads = gw.metric("natter_gateway_gap_reads_total").await;
    assert!((1..=3).contains(&reads), "{reads} shared reads");
    assert!(gw.metric("natter_gateway_replays_shared_total").await >= USERS as i64);
    assert_eq!(
        replays_alone().await,
        alone_before,
        "no session replayed on its own"
    );
    // A few stream-info and consumer requests per read, whatever the number of sessions.
    let api = gw
        .metric("natter_gateway_jetstream_api_requests_total")
        .await
        - api_before;
    assert!(api <= 30, "{api} JetStream API requests to recover");
}

/// Sends to `to` and waits for SENT.
async fn send_to(alice: &mut Connection, to: &str, body: &str) -> MessageId {
    let cid = format!("{to}-{body}").replace(' ', "-");
    alice.send(to, &cid, body).await.unwrap();
    expect_sent(alice, &cid).await.id
}

/// Pings and waits for the matching pong.
async fn pong(conn: &mut Connection, ts: u64) {
    conn.ping(Some(ts)).await.unwrap();
    expect_pong(conn, Some(ts)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cut_off_from_nats_keeps_its_sessions_and_catches_up_when_back() {
    let mut stack = Stack::new()
        .gateway_config(|c| {
            c.lease_ttl_ms = LEASE_TTL.as_millis() as u64;
            c.send_timeout_ms = 1_000;
        })
        .start()
        .await;
    // Only the connection deliveries arrive on goes through the link: the lease connection
    // stays up, and the gateway must stop refreshing its lease anyway.
    let direct = stack.nats.url();
    let link = Link::start(&direct).await;
    let cut_off = stack
        .start_gateway_links("gw-cut", &link.url(), &direct)
        .await;
    let mut alice = stack.connect("alice", 0).await;
    let (mut bob, bob_conn) = stack.connect_welcomed("bob", cut_off, Encoding::Json).await;
    let before = send(&mut alice, "before").await;
    assert_eq!(expect_message(&mut bob).await.id, before);

    let gw = &stack.gateways[cut_off];
    cut(&link, gw).await;
    // Routed while bob's gateway still counts as alive: published to a gateway that cannot
    // receive it.
    let lost_in_flight = send(&mut alice, "while-cut-off").await;
    // Once the lease lapsed, the chat service purges bob's session: he counts as offline.
    let sessions = async_nats::jetstream::new(stack.nats.client().await)
        .get_key_value(subjects::SESSIONS_BUCKET)
        .await
        .unwrap();
    let key = subjects::session_key(
        &UserId::new("bob").unwrap(),
        &GatewayId::new("gw-cut").unwrap(),
        bob_conn,
        stack.bus.partitions,
    );
    eventually("bob's session purged", RECOVERY, async || {
        sessions.get(&key).await.unwrap().is_none()
    })
    .await;
    let while_offline = send(&mut alice, "while-offline").await;
    // The cut-off gateway still serves bob and refuses newcomers.
    pong(&mut bob, 1).await;
    let refused = Connection::connect(&gw.ws_url(), &stack.token("carol"), Encoding::Json).await;
    assert!(matches!(refused, Err(ConnectError::Refused(503))));

    link.restore();
    eventually("gateway re-registered", RECOVERY, async || {
        gw.metric("natter_gateway_reregistrations_total").await >= 1
    })
    .await;
    eventually("bob's session back", RECOVERY, async || {
        sessions.get(&key).await.unwrap().is_some()
    })
    .await;
    // Bob gets what he missed, replayed unasked, then live traffic again.
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert!(synced.recovered);
    let replayed: Vec<MessageId> = replayed.iter().map(|m| m.id).collect();
    assert_eq!(replayed, [lost_in_flight, while_offline]);
    // The next delivery shows the router's numbers skipped the lost one, and the gateway
    // replays that partition once more: held live traffic waits for it, so a device never
    // holds a cursor past a message it lacks. The replay's copies are dropped by id, as the
    // protocol tells clients to.
    let after = send(&mut alice, "after").await;
    loop {
        let got = expect_message(&mut bob).await.id;
        if got == after {
            break;
        }
        assert!(replayed.contains(&got), "only copies come before it");
    }
    assert_eq!(gw.metric("natter_gateway_connections_total").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_that_fails_while_nats_is_out_is_tried_again_until_it_replays_everything() {
    let mut stack = Stack::new().start().await;
    let link = Link::start(&stack.nats.url()).await;
    let cut_off = stack.start_gateway_via("gw-cut", &link.url()).await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", cut_off).await;
    send(&mut alice, "first").await;
    let cursor = expect_message(&mut bob).await.cursor;
    let missed = [
        send(&mut alice, "second").await,
        send(&mut alice, "third").await,
    ];
    for id in missed {
        assert_eq!(expect_message(&mut bob).await.id, id);
    }

    let gw = &stack.gateways[cut_off];
    cut(&link, gw).await;
    // Bob asks for what followed "first"; the gateway cannot read the stream.
    let replays = gw.metric("natter_gateway_replays_total").await;
    bob.sync(cursor).await.unwrap();
    eventually("the gateway tries the replay again", RECOVERY, async || {
        gw.metric("natter_gateway_replays_total").await >= replays + 2
    })
    .await;

    // Back within its lease, the gateway has nothing to register again; it replays.
    link.restore();
    eventually("gateway connected again", RECOVERY, async || {
        gw.http_get("/healthz").await.starts_with("HTTP/1.1 200")
    })
    .await;
    // The first `synced` bob sees answers his sync: nothing told him to give up on it, and
    // nothing claimed to cover what it had not replayed.
    let mut replayed = Vec::new();
    let recovered = expect_frame(&mut bob, |f| match f {
        ServerFrame::Message(m) => {
            replayed.push(m.id);
            None
        }
        ServerFrame::Synced { recovered, .. } => Some(*recovered),
        ServerFrame::Error { .. } => panic!("the failed replay reached the device: {f:?}"),
        _ => None,
    })
    .await;
    assert!(recovered);
    assert_eq!(replayed, missed);
}

/// Cuts `gw` off from NATS and waits until it knows.
async fn cut(link: &Link, gw: &RunningGateway) {
    link.cut();
    eventually("gateway sees NATS down", RECOVERY, async || {
        gw.http_get("/healthz").await.starts_with("HTTP/1.1 503")
    })
    .await;
}

/// Sends to bob and waits for SENT.
async fn send(alice: &mut Connection, body: &str) -> MessageId {
    alice.send("bob", body, body).await.unwrap();
    expect_sent(alice, body).await.id
}

/// A delivery lost on the way (a gap in a router's numbering) makes every session of the
/// gateway replay from where its deliveries stood, from one shared read: each gets `synced`,
/// nothing twice, and what is sent afterwards arrives live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_delivery_makes_the_gateways_sessions_replay_from_one_shared_read() {
    const USERS: usize = 30;
    let stack = Stack::new().start().await;
    let mut alice = stack.connect("alice", 0).await;
    let users: Vec<String> = (0..USERS).map(|i| format!("g{i:02}")).collect();
    let mut devices = Vec::new();
    for user in &users {
        devices.push(stack.connect(user, 0).await);
    }
    for (user, device) in users.iter().zip(&mut devices) {
        let hello = send_to(&mut alice, user, "hello").await;
        assert_eq!(expect_message(device).await.id, hello);
    }
    let gw = &stack.gateways[0];
    let shared_before = gw.metric("natter_gateway_replays_shared_total").await;

    // A router run numbering its deliveries to this gateway 1, then 3: number 2 was lost.
    let nats = stack.nats.client().await;
    let subject = subjects::gateway_deliver(&GatewayId::new(&gw.id).unwrap());
    for n in [1, 3] {
        let delivery = protocol::payloads::Delivery {
            targets: Vec::new(),
            frame: ServerFrame::Pong { ts: None },
            order: Some(protocol::payloads::DeliveryOrder {
                run: u64::MAX,
                n,
                partition: 0,
            }),
            position: None,
        };
        let payload = serde_json::to_vec(&delivery).unwrap();
        nats.publish(subject.clone(), payload.into()).await.unwrap();
    }
    nats.flush().await.unwrap();

    // Every session replays, unasked, and has nothing it lacked: no copy of its hello.
    for device in &mut devices {
        let (replayed, synced) = expect_synced(device).await;
        assert!(synced.recovered);
        assert!(replayed.is_empty(), "replayed again: {replayed:?}");
    }
    let shared = gw.metric("natter_gateway_replays_shared_total").await - shared_before;
    assert!(
        shared >= USERS as i64,
        "{shared} replays from a shared read"
    );
    // Live traffic goes on.
    for (user, device) in users.iter().zip(&mut devices) {
        let after = send_to(&mut alice, user, "after").await;
        assert_eq!(expect_message(device).await.id, after);
    }
}

/// Core NATS delivers at most once: a send request (or its answer) lost in flight, as when a
/// chat instance's connection moves to another node, is asked again after `send_reask_ms`
/// with the same payload, so the client gets `sent` without waiting for the timeout. A stand-in
/// for the chat service swallows the first request and answers the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_request_lost_in_flight_is_asked_again() {
    let mut stack = Stack::new()
        .gateway_config(|c| {
            c.send_timeout_ms = 600_000;
            c.send_reask_ms = 200;
        })
        .start()
        .await;
    stack.chats[0].stop().await;
    let nats = stack.nats.client().await;
    let mut asks = nats
        .queue_subscribe(subjects::CHAT_SEND, subjects::CHAT_QUEUE.into())
        .await
        .unwrap();
    nats.flush().await.unwrap();

    let mut alice = stack.connect("alice", 0).await;
    alice.send("bob", "lost-once", "hello").await.unwrap();
    let first = testkit::within(asks.next()).await.expect("the first ask");
    let second = testkit::within(asks.next()).await.expect("asked again");
    assert_eq!(
        first.payload, second.payload,
        "the same request, the same cid"
    );
    let id: MessageId = ulid::Ulid::new().to_string().parse().unwrap();
    let sent = ServerFrame::Sent {
        cid: "lost-once".parse().unwrap(),
        id,
        conversation: "dm:alice:bob".parse().unwrap(),
        ts: 1,
    };
    let reply = second.reply.expect("a request");
    nats.publish(reply, serde_json::to_vec(&sent).unwrap().into())
        .await
        .unwrap();
    assert_eq!(expect_sent(&mut alice, "lost-once").await.id, id);
}

/// The last deliveries before a partition goes quiet have no later one to show their loss;
/// the routers' progress notes do. Here the test plays the router (the chat service stores
/// but does not route): delivery 1 of a run arrives, delivery 2 (bob's message) is lost, and
/// the note saying 2 makes bob's session replay the partition and get it. A note that matches
/// what arrived changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_last_delivery_is_found_by_the_routers_progress_note() {
    lost_last_delivery(true).await;
}

/// A note for a partition the gateway has heard nothing of: every delivery of the run was
/// lost (or the gateway restarted under the same id). Its sessions replay the partition, and
/// that is not counted as a lost delivery (a restart would count one per partition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_of_a_partition_heard_nothing_of_replays_it_uncounted() {
    lost_last_delivery(false).await;
}

async fn lost_last_delivery(first_heard: bool) {
    let stack = Stack::new().chat_config(|c| c.route = false).start().await;
    // The test routes; the shards' holder answers the replays' questions about groups.
    let _holder = stack.hold_shards().await.drop_guard();
    let mut bob = stack.resume("bob", 0, None).await;
    let (_, before) = expect_synced(&mut bob).await;
    let mut alice = stack.connect("alice", 0).await;
    let lost = send_to(&mut alice, "bob", "lost").await;
    let conversation = protocol::ConversationId::direct(
        &UserId::new("alice").unwrap(),
        &UserId::new("bob").unwrap(),
    );
    let partition = subjects::partition(&conversation, stack.bus.partitions);

    let gw = &stack.gateways[0];
    let gateway = GatewayId::new(&gw.id).unwrap();
    let nats = stack.nats.client().await;
    let order = |n| protocol::payloads::DeliveryOrder {
        run: 7,
        n,
        partition,
    };
    let note = |n| protocol::payloads::Progress {
        order: order(n),
        // Routed up to where bob was: the lost message is after it.
        position: protocol::payloads::Position {
            epoch: before.cursor.epoch,
            partition,
            seq: before.cursor.seqs[partition as usize],
        },
    };
    let publish = async |subject: String, payload: Vec<u8>| {
        nats.publish(subject, payload.into()).await.unwrap();
        nats.flush().await.unwrap();
    };
    let gaps_before = gw.metric("natter_gateway_delivery_gaps_total").await;
    let last = if first_heard {
        let delivery = protocol::payloads::Delivery {
            targets: Vec::new(),
            frame: ServerFrame::Pong { ts: None },
            order: Some(order(1)),
            position: None,
        };
        publish(
            subjects::gateway_deliver(&gateway),
            serde_json::to_vec(&delivery).unwrap(),
        )
        .await;
        // What arrived: nothing to do.
        publish(
            subjects::gateway_progress(&gateway),
            serde_json::to_vec(&note(1)).unwrap(),
        )
        .await;
        eventually("the note is read", RECOVERY, async || {
            gw.metric("natter_gateway_progress_notes_total").await >= 1
        })
        .await;
        assert_eq!(
            gw.metric("natter_gateway_delivery_gaps_total").await,
            gaps_before
        );
        2
    } else {
        1
    };
    // Delivery `last` (bob's message) never came.
    publish(
        subjects::gateway_progress(&gateway),
        serde_json::to_vec(&note(last)).unwrap(),
    )
    .await;
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert!(synced.recovered);
    assert_eq!(
        replayed.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![lost]
    );
    let counted = i64::from(first_heard);
    assert_eq!(
        gw.metric("natter_gateway_delivery_gaps_total").await,
        gaps_before + counted
    );
}

/// The routers send progress notes to the gateways they deliver to, and a gateway that got
/// every delivery finds no gap in them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routers_progress_notes_agree_with_their_deliveries() {
    let stack = Stack::new().start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 0).await;
    for body in ["one", "two", "three"] {
        let id = send_to(&mut alice, "bob", body).await;
        assert_eq!(expect_message(&mut bob).await.id, id);
    }
    let gw = &stack.gateways[0];
    eventually("progress notes arrive", RECOVERY, async || {
        gw.metric("natter_gateway_progress_notes_total").await >= 2
    })
    .await;
    assert_eq!(gw.metric("natter_gateway_delivery_gaps_total").await, 0);
}
