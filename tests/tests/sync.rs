//! Offline queue and reconnect sync: a device resumes from its cursor and gets exactly what
//! it missed, in per-conversation order, or is told explicitly that it cannot.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use protocol::frames::Message;
use protocol::payloads::OfflineMessage;
use protocol::{ConversationId, Cursor, MessageId, SyncGap, UserId, subjects};
use testkit::client::{ConnectError, Connection};
use testkit::{
    Stack, expect_history, expect_message, expect_sent, expect_synced, expect_welcome, within,
};

/// `senders` users each send `per_sender` numbered messages to `to`; returns the message ids
/// per sender in sending order.
async fn send_many(
    stack: &Stack,
    senders: &[String],
    to: &str,
    per_sender: usize,
) -> HashMap<String, Vec<MessageId>> {
    let sends = senders.iter().map(|sender| async move {
        let mut conn = stack.connect(sender, 0).await;
        let mut ids = Vec::new();
        // In windows below the gateway's limit of sends waiting for `sent`.
        for window in (0..per_sender).collect::<Vec<_>>().chunks(100) {
            for i in window {
                conn.send(to, &format!("c{i}"), &format!("{sender} #{i}"))
                    .await
                    .unwrap();
            }
            for i in window {
                ids.push(expect_sent(&mut conn, &format!("c{i}")).await.id);
            }
        }
        conn.close().await;
        (sender.clone(), ids)
    });
    futures::future::join_all(sends).await.into_iter().collect()
}

/// A received message's place: its partition, and its sequence in that partition's stream
/// (what its cursor says of that partition).
fn place(m: &Message, partitions: u32) -> (u32, u64) {
    let k = subjects::partition(&m.conversation, partitions);
    (k, m.cursor.as_ref().expect("a cursor").seqs[k as usize])
}

/// Checks that the messages' places rise within each partition, one stream each.
fn assert_rising_per_partition(messages: &[&Message], partitions: u32) {
    let mut last: HashMap<u32, u64> = HashMap::new();
    for m in messages {
        let (k, seq) = place(m, partitions);
        let before = last.insert(k, seq).unwrap_or(0);
        assert!(seq > before, "partition {k}: {seq} after {before}");
    }
}

/// Whether `a` is at or past `b` in every partition.
fn at_or_past(a: &Cursor, b: &Cursor) -> bool {
    a.seqs.len() == b.seqs.len() && a.seqs.iter().zip(&b.seqs).all(|(x, y)| x >= y)
}

/// Checks each conversation's messages arrive in the order they were sent.
fn assert_conversation_order(received: &[Message], sent: &HashMap<String, Vec<MessageId>>) {
    let mut by_sender: HashMap<&str, Vec<MessageId>> = HashMap::new();
    for m in received {
        by_sender.entry(m.from.as_str()).or_default().push(m.id);
    }
    for (sender, ids) in by_sender {
        let expected: Vec<MessageId> = sent[sender]
            .iter()
            .filter(|id| ids.contains(id))
            .copied()
            .collect();
        assert_eq!(ids, expected, "order of {sender}'s messages");
    }
}

/// A fresh device has no cursor: it is told where live traffic starts.
async fn new_device(stack: &Stack, user: &str) -> Cursor {
    let mut conn = stack.resume(user, 0, None).await;
    let (replayed, synced) = expect_synced(&mut conn).await;
    assert!(replayed.is_empty());
    assert!(!synced.recovered);
    assert_eq!(synced.gap, Some(SyncGap::NoCursor));
    assert_eq!(conn.cursor(), Some(synced.cursor.clone()));
    conn.close().await;
    synced.cursor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_user_gets_every_message_and_resumes_after_partial_acks() {
    let stack = Stack::new().start().await;
    let start = new_device(&stack, "bob").await;
    let nats = stack.nats.client().await;
    let mut offline_events = nats
        .subscribe(subjects::USER_OFFLINE_MESSAGE)
        .await
        .unwrap();
    plumbing::bus::round_trip(&nats).await;

    // 1,000 messages across 20 conversations while bob is offline.
    let senders: Vec<String> = (0..20).map(|i| format!("sender{i}")).collect();
    let sent = send_many(&stack, &senders, "bob", 50).await;
    let all: HashSet<MessageId> = sent.values().flatten().copied().collect();
    assert_eq!(all.len(), 1000);

    // Each one was announced as an offline message (for the notifier).
    let mut announced = 0;
    while announced < 1000 {
        let msg = within(offline_events.next()).await.unwrap();
        let event: OfflineMessage = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(event.users, [UserId::new("bob").unwrap()]);
        assert!(all.contains(&event.id));
        announced += 1;
    }

    // bob connects, acknowledges 137, and the connection drops.
    let mut bob = stack.resume("bob", 0, Some(start.clone())).await;
    let mut first = Vec::new();
    while first.len() < 137 {
        let m = expect_message(&mut bob).await;
        bob.ack(&m.conversation, m.id).await.unwrap();
        first.push(m);
    }
    let cursor = bob.cursor().expect("a cursor after messages");
    drop(bob);

    // Reconnecting from there brings exactly the other 863.
    let mut bob = stack.resume("bob", 0, Some(cursor)).await;
    let (rest, synced) = expect_synced(&mut bob).await;
    assert!(synced.recovered, "{synced:?}");
    assert_eq!(rest.len(), 863);
    let mut received: Vec<Message> = first.clone();
    received.extend(rest);
    let ids: HashSet<MessageId> = received.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 1000, "no duplicates");
    assert_eq!(ids, all, "nothing lost");
    assert_conversation_order(&received, &sent);
    let received: Vec<&Message> = received.iter().collect();
    assert_rising_per_partition(&received, stack.bus.partitions);

    // Nothing is removed by acknowledging: another device of bob's still gets all 1,000.
    let mut tablet = stack.resume("bob", 0, Some(start)).await;
    let (replayed, synced) = expect_synced(&mut tablet).await;
    assert!(synced.recovered);
    assert_eq!(replayed.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_edge_cases_each_get_their_documented_answer() {
    let stack = Stack::new().start().await;
    let start = new_device(&stack, "bob").await;
    let sent = send_many(&stack, &["alice".to_string()], "bob", 5).await;

    // At the head: nothing to replay, and that is a full recovery.
    let mut bob = stack.resume("bob", 0, Some(start.clone())).await;
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert_eq!(replayed.len(), 5);
    let cursors: Vec<Cursor> = replayed.iter().map(|m| m.cursor.clone().unwrap()).collect();
    let replayed_first = replayed;
    let head = synced.cursor;
    drop(bob);
    let mut bob = stack.resume("bob", 0, Some(head.clone())).await;
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert!(replayed.is_empty());
    assert!(synced.recovered);
    assert_eq!(synced.gap, None);
    // The head moved only by this connection's own registration marker.
    assert!(at_or_past(&synced.cursor, &head));
    drop(bob);

    // In the future: the stream was reset under the device.
    let future = Cursor::head(head.epoch, head.latest() + 1_000, head.partitions());
    let mut bob = stack.resume("bob", 0, Some(future)).await;
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert!(replayed.is_empty());
    assert_eq!(
        (synced.recovered, synced.gap),
        (false, Some(SyncGap::FutureCursor))
    );
    assert!(
        at_or_past(&synced.cursor, &head),
        "told where to continue from"
    );
    drop(bob);

    // Unknown: the cursor names another incarnation of the stream.
    let foreign = Cursor {
        epoch: head.epoch + 1,
        ..head.clone()
    };
    let mut bob = stack.resume("bob", 0, Some(foreign)).await;
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert!(replayed.is_empty());
    assert_eq!(
        (synced.recovered, synced.gap),
        (false, Some(SyncGap::UnknownCursor))
    );
    drop(bob);

    // Garbage is refused at the handshake.
    let url = stack.gateways[0].ws_url();
    let refused = Connection::connect(
        &format!("{url}?cursor=yesterday"),
        &stack.token("bob"),
        protocol::Encoding::Json,
    )
    .await;
    assert!(
        matches!(refused, Err(ConnectError::Refused(400))),
        "{:?}",
        refused.err()
    );

    // Trimmed: the stream dropped messages after the cursor (its age limit, here a purge).
    let (k, third) = place(&replayed_first[2], stack.bus.partitions);
    stack
        .messages_stream(k)
        .await
        .purge()
        .sequence(third)
        .await
        .unwrap();
    let mut bob = stack.resume("bob", 0, Some(start)).await;
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert!(replayed.is_empty(), "never a silent partial recovery");
    assert_eq!(
        (synced.recovered, synced.gap),
        (false, Some(SyncGap::Trimmed))
    );
    drop(bob);
    // From a cursor after the trimmed part, the rest is still replayed.
    let kept = cursors[1].clone();
    let mut bob = stack.resume("bob", 0, Some(kept)).await;
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert!(synced.recovered);
    let ids: Vec<MessageId> = replayed.iter().map(|m| m.id).collect();
    assert_eq!(ids, sent["alice"][2..].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_over_the_per_user_limit_is_refused_not_truncated() {
    let stack = Stack::new()
        .gateway_config(|c| c.sync_max_messages = 5)
        .start()
        .await;
    let start = new_device(&stack, "bob").await;
    send_many(&stack, &["alice".to_string()], "bob", 6).await;
    let mut bob = stack.resume("bob", 0, Some(start)).await;
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert!(replayed.is_empty());
    assert_eq!(
        (synced.recovered, synced.gap),
        (false, Some(SyncGap::TooMany))
    );
    // History has them all (once its writer caught up), for the resync the client is told
    // to do.
    within(async {
        for attempt in 0.. {
            bob.send_frame(&protocol::ClientFrame::History {
                qid: format!("h{attempt}"),
                conversation: "dm:alice:bob".into(),
                before: None,
                after: None,
                limit: None,
            })
            .await
            .unwrap();
            let (messages, _) = expect_history(&mut bob, &format!("h{attempt}"))
                .await
                .expect("history answers");
            let n = messages.len();
            if n == 6 {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_messages_wait_for_the_replay_and_nothing_is_doubled() {
    let stack = Stack::new().start().await;
    let start = new_device(&stack, "bob").await;
    send_many(&stack, &["carol".to_string()], "bob", 300).await;

    // alice keeps sending while bob resumes.
    let live = {
        let mut alice = stack.connect("alice", 0).await;
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..100 {
                alice.send("bob", &format!("l{i}"), "live").await.unwrap();
            }
            for i in 0..100 {
                ids.push(expect_sent(&mut alice, &format!("l{i}")).await.id);
            }
            ids
        })
    };
    let mut bob = stack.resume("bob", 0, Some(start)).await;
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert!(synced.recovered);
    let partitions = stack.bus.partitions;
    assert!(
        replayed.iter().all(|m| {
            let (k, seq) = place(m, partitions);
            seq <= synced.cursor.seqs[k as usize]
        }),
        "the replay ends at its head"
    );
    let live_ids = live.await.unwrap();
    let mut after = Vec::new();
    let already: HashSet<MessageId> = replayed.iter().map(|m| m.id).collect();
    let missing = live_ids.iter().filter(|id| !already.contains(id)).count();
    while after.len() < missing {
        after.push(expect_message(&mut bob).await);
    }
    assert!(
        after.iter().all(|m| {
            let (k, seq) = place(m, partitions);
            seq > synced.cursor.seqs[k as usize]
        }),
        "live traffic follows synced"
    );
    let all: Vec<&Message> = replayed.iter().chain(&after).collect();
    let ids: HashSet<MessageId> = all.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), all.len(), "nothing twice");
    assert_eq!(ids.len(), 400);
    assert_rising_per_partition(&all, partitions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_device_catches_up_on_what_the_first_saw_and_sent() {
    let stack = Stack::new().start().await;
    let tablet_cursor = new_device(&stack, "bob").await;
    let mut phone = stack.connect("bob", 0).await;
    let mut alice = stack.connect("alice", 0).await;
    let conversation =
        ConversationId::direct(&UserId::new("alice").unwrap(), &UserId::new("bob").unwrap());
    let mut expected = Vec::new();
    for i in 0..10 {
        let (from, to) = if i % 2 == 0 {
            (&mut alice, "bob")
        } else {
            (&mut phone, "alice")
        };
        from.send(to, &format!("m{i}"), &format!("#{i}"))
            .await
            .unwrap();
        let id = expect_sent(from, &format!("m{i}")).await.id;
        expected.push(id);
    }
    let mut tablet = stack.resume("bob", 0, Some(tablet_cursor)).await;
    let (replayed, synced) = expect_synced(&mut tablet).await;
    assert!(synced.recovered);
    assert!(replayed.iter().all(|m| m.conversation == conversation));
    let ids: Vec<MessageId> = replayed.iter().map(|m| m.id).collect();
    assert_eq!(ids, expected, "both directions, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reconnects_with_backoff_and_resumes_where_it_was() {
    // A fixed port, so the gateway can come back where the client expects it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut stack = Stack::new()
        .gateways(0)
        .gateway_config(|c| c.listen_addr = ([127, 0, 0, 1], port).into())
        .start()
        .await;
    stack.start_gateway("gw-fixed").await;
    let url = stack.gateways[0].ws_url();
    let token = stack.token("bob");
    let mut backoff = testkit::client::Backoff::new(
        std::time::Duration::from_millis(20),
        std::time::Duration::from_millis(200),
    );
    let mut bob = Connection::reconnect(&url, &token, protocol::Encoding::Json, None, &mut backoff)
        .await
        .unwrap();
    let (_, synced) = expect_synced(&mut bob).await;
    let cursor = bob.cursor();
    assert_eq!(cursor, Some(synced.cursor));

    // The gateway goes away; bob's client keeps trying while alice sends through a second one.
    stack.gateways[0].shutdown().await;
    let reconnecting = tokio::spawn(async move {
        Connection::reconnect(&url, &token, protocol::Encoding::Json, cursor, &mut backoff).await
    });
    stack.gateway_config.listen_addr = ([127, 0, 0, 1], 0).into();
    stack.start_gateway("gw-other").await;
    let mut alice = stack.connect("alice", 1).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        alice
            .send("bob", &format!("away{i}"), "while you were out")
            .await
            .unwrap();
        sent.push(expect_sent(&mut alice, &format!("away{i}")).await.id);
    }

    // The gateway is back on its port: bob's client gets in and catches up.
    stack.gateway_config.listen_addr = ([127, 0, 0, 1], port).into();
    stack.start_gateway("gw-fixed-again").await;
    let mut bob = within(reconnecting).await.unwrap().expect("reconnected");
    expect_welcome(&mut bob).await;
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert!(synced.recovered);
    let ids: Vec<MessageId> = replayed.iter().map(|m| m.id).collect();
    assert_eq!(ids, sent);
}

/// Senders whose conversations with `to` fall in every partition of `partitions`.
fn senders_in_every_partition(prefix: &str, to: &str, partitions: u32) -> Vec<String> {
    let to_id = UserId::new(to).unwrap();
    let mut senders = Vec::new();
    let mut covered = HashSet::new();
    for i in 0.. {
        let sender = format!("{prefix}{i}");
        let c = ConversationId::direct(&UserId::new(&sender).unwrap(), &to_id);
        if covered.insert(subjects::partition(&c, partitions)) {
            senders.push(sender);
        }
        if covered.len() == partitions as usize {
            return senders;
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_across_partitions_gets_exactly_what_was_missed() {
    let stack = Stack::new().start().await;
    let partitions = stack.bus.partitions;
    assert!(partitions >= 3, "the stack runs partitioned");
    // Different senders before and after (a resend of the same `cid` is the same message).
    let senders = senders_in_every_partition("early", "bob", partitions);
    let later = senders_in_every_partition("late", "bob", partitions);
    let start = new_device(&stack, "bob").await;
    assert_eq!(start.partitions(), partitions, "one position per partition");

    // Online: bob gets some messages of every partition live, and keeps the last cursor.
    let mut bob = stack.resume("bob", 0, Some(start)).await;
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert!(replayed.is_empty() && synced.recovered);
    let seen = send_many(&stack, &senders, "bob", 3).await;
    let mut live = Vec::new();
    while live.len() < 3 * senders.len() {
        live.push(expect_message(&mut bob).await);
    }
    let live_ids: HashSet<MessageId> = live.iter().map(|m| m.id).collect();
    assert_eq!(live_ids, seen.values().flatten().copied().collect());
    let cursor = bob.cursor().expect("live messages carry cursors");
    assert_eq!(cursor, live.last().unwrap().cursor.clone().unwrap());
    bob.close().await;

    // Offline: more in every partition; the resume gets exactly those.
    let missed = send_many(&stack, &later, "bob", 4).await;
    let mut bob = stack.resume("bob", 0, Some(cursor.clone())).await;
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert!(synced.recovered, "{synced:?}");
    let replayed_ids: Vec<MessageId> = replayed.iter().map(|m| m.id).collect();
    let expected: HashSet<MessageId> = missed.values().flatten().copied().collect();
    assert_eq!(replayed_ids.len(), expected.len(), "nothing twice");
    assert_eq!(
        replayed_ids.iter().copied().collect::<HashSet<_>>(),
        expected,
        "nothing it had, nothing lost"
    );
    assert_conversation_order(&replayed, &missed);
    for m in &replayed {
        let c = m.cursor.as_ref().unwrap();
        let k = subjects::partition(&m.conversation, partitions);
        assert!(!cursor.covers(k, c.seqs[k as usize]), "each one is new");
    }
    bob.close().await;

    // A cursor of the single-number form names no partitioned stream: the documented
    // answer, nothing replayed.
    let old: Cursor = format!("{}-{}", cursor.epoch, cursor.earliest())
        .parse()
        .unwrap();
    let mut bob = stack.resume("bob", 0, Some(old)).await;
    let (replayed, synced) = expect_synced(&mut bob).await;
    assert!(replayed.is_empty());
    assert_eq!(
        (synced.recovered, synced.gap),
        (false, Some(SyncGap::UnknownCursor))
    );
}

/// Resumes `user` from `cursor` and checks it gets exactly `missed`, in conversation order.
async fn resume_gets_exactly(
    stack: &Stack,
    user: &str,
    cursor: Cursor,
    missed: &HashMap<String, Vec<MessageId>>,
) -> Cursor {
    let mut conn = stack.resume(user, 0, Some(cursor)).await;
    let (replayed, synced) = expect_synced(&mut conn).await;
    assert!(synced.recovered, "{synced:?}");
    let ids: Vec<MessageId> = replayed.iter().map(|m| m.id).collect();
    let expected: HashSet<MessageId> = missed.values().flatten().copied().collect();
    assert_eq!(ids.len(), expected.len(), "nothing twice");
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), expected);
    assert_conversation_order(&replayed, missed);
    conn.close().await;
    synced.cursor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_read_changed_conversations_without_consumers_and_fall_back_without_history() {
    let mut stack = Stack::new().start().await;
    let partitions = stack.bus.partitions;
    let quiet = senders_in_every_partition("quiet", "bob", partitions);
    let busy = senders_in_every_partition("busy", "bob", partitions);
    let start = new_device(&stack, "bob").await;
    let old = send_many(&stack, &quiet, "bob", 2).await;
    let cursor = resume_gets_exactly(&stack, "bob", start, &old).await;

    // Only some conversations change while bob is away: he gets exactly those, read
    // without a consumer (the history index lists what changed).
    let missed = send_many(&stack, &busy, "bob", 3).await;
    let gateway = &stack.gateways[0];
    let direct = gateway.metric("natter_gateway_replays_direct_total").await;
    let cursor = resume_gets_exactly(&stack, "bob", cursor, &missed).await;
    assert_eq!(
        gateway.metric("natter_gateway_replays_direct_total").await,
        direct + 1
    );
    assert_eq!(
        gateway
            .metric("natter_gateway_replays_with_consumers_total")
            .await,
        0
    );

    // History stops: its index cannot say what changed after its last write, so the replay
    // reads the user's subjects with consumers, and still misses nothing.
    for history in &mut stack.histories {
        history.kill();
    }
    // (New senders: a resend of the same `cid` would be the same message.)
    let late = senders_in_every_partition("late", "bob", partitions);
    let missed = send_many(&stack, &late, "bob", 2).await;
    resume_gets_exactly(&stack, "bob", cursor, &missed).await;
    let gateway = &stack.gateways[0];
    assert_eq!(
        gateway
            .metric("natter_gateway_replays_with_consumers_total")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backlog_in_one_conversation_is_replayed_whole_and_in_order() {
    // Past 1,024 messages on one subject the replay moves that subject to a consumer: the
    // hand-over from direct gets must neither skip nor repeat a message.
    let stack = Stack::new().start().await;
    let start = new_device(&stack, "bob").await;
    let senders = ["chatty".to_string(), "brief".to_string()];
    let mut missed = send_many(&stack, &senders[..1], "bob", 1500).await;
    missed.extend(send_many(&stack, &senders[1..], "bob", 3).await);
    resume_gets_exactly(&stack, "bob", start, &missed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_stalled_by_a_slow_reader_outlasts_its_hold_and_loses_nothing() {
    // bob resumes and does not read: his replay stalls on the socket while alice's live
    // messages fill the hold. The hold drops them (the stream has them) and one more replay
    // sends them once bob reads: no eviction, nothing lost, nothing twice.
    let stack = Stack::new()
        .gateway_config(|c| c.outbound_queue_frames = 32)
        .start()
        .await;
    let start = new_device(&stack, "bob").await;
    // About 18 MB: more than the socket buffers hold.
    let body = "x".repeat(30_000);
    let mut sent: HashMap<String, Vec<MessageId>> = HashMap::new();
    let mut carol = stack.connect("carol", 0).await;
    for window in (0..600).collect::<Vec<_>>().chunks(50) {
        for i in window {
            carol.send("bob", &format!("c{i}"), &body).await.unwrap();
        }
        for i in window {
            let id = expect_sent(&mut carol, &format!("c{i}")).await.id;
            sent.entry("carol".into()).or_default().push(id);
        }
    }
    let mut bob = stack.resume("bob", 0, Some(start)).await;
    let mut alice = stack.connect("alice", 0).await;
    for i in 0..100 {
        alice.send("bob", &format!("l{i}"), "live").await.unwrap();
        let id = expect_sent(&mut alice, &format!("l{i}")).await.id;
        sent.entry("alice".into()).or_default().push(id);
    }

    let mut received = Vec::new();
    let mut ids = HashSet::new();
    while ids.len() < 700 {
        match within(bob.next_event()).await.unwrap() {
            testkit::client::Event::Frame(protocol::frames::ServerFrame::Message(m)) => {
                assert!(ids.insert(m.id), "{} twice", m.id);
                received.push(m);
            }
            testkit::client::Event::Closed(code) => panic!("bob's session closed: {code:?}"),
            testkit::client::Event::Frame(_) => {}
        }
    }
    assert_conversation_order(&received, &sent);
    let all: Vec<&Message> = received.iter().collect();
    assert_rising_per_partition(&all, stack.bus.partitions);
}
