//! Reconnect storms: 2,000 devices on two gateways, each with messages waiting in a 1:1
//! conversation and in a group, reconnect at once. Each must get exactly what it missed, each
//! conversation in order, then `synced` with `recovered: true`, and JetStream's API must not
//! reach its limit: most replays share a read of the streams (`replay::gap_read`). A gateway whose replay queue is too long tells late devices when to come
//! back instead of keeping them waiting.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chat::GroupAdds;
use futures::StreamExt;
use protocol::frames::ServerFrame;
use protocol::{ConversationId, Cursor, GroupOp, MessageId};
use testkit::client::{ConnectError, Connection};
use testkit::{Stack, eventually, expect_answer, expect_sent, expect_synced};

const CLIENTS: usize = 2_000;
/// Each group's members are a slice of the clients; the group's friend writes to each of
/// them directly too.
const GROUPS: usize = 20;
const DIRECT_PER_CLIENT: usize = 2;
const GROUP_POSTS: usize = 3;
/// How long the whole storm may take on a loaded 2-core machine (debug build).
const STORM_PATIENCE: Duration = Duration::from_secs(180);

fn client(i: usize) -> String {
    format!("storm{i:04}")
}

/// What one group's friend sent: to each member directly, and to the group.
struct Sent {
    members: Vec<String>,
    direct: HashMap<String, Vec<MessageId>>,
    friend: String,
    group: ConversationId,
    posts: Vec<MessageId>,
}

/// The friend of group `j` writes `DIRECT_PER_CLIENT` messages to each member, makes the
/// group and posts `GROUP_POSTS` messages to it.
async fn write_to_group(stack: &Stack, j: usize) -> Sent {
    let per_group = CLIENTS / GROUPS;
    let members: Vec<String> = (j * per_group..(j + 1) * per_group).map(client).collect();
    let friend = format!("friend{j:02}");
    let mut conn = stack.connect(&friend, j % 2).await;
    let mut direct: HashMap<String, Vec<MessageId>> = HashMap::new();
    for round in 0..DIRECT_PER_CLIENT {
        // In windows below the gateway's limit of sends waiting for `sent`.
        for window in members.chunks(50) {
            for member in window {
                conn.send(member, &format!("{member}-{round}"), "missed")
                    .await
                    .unwrap();
            }
            for member in window {
                let sent = expect_sent(&mut conn, &format!("{member}-{round}")).await;
                direct.entry(member.clone()).or_default().push(sent.id);
            }
        }
    }
    conn.group(
        "create",
        GroupOp::Create {
            name: format!("group {j}"),
            members: members.clone(),
        },
    )
    .await
    .unwrap();
    let group = match expect_answer(&mut conn, "create").await {
        ServerFrame::Group { group, .. } => group,
        other => panic!("group {j} not made: {other:?}"),
    };
    let mut posts = Vec::new();
    for k in 0..GROUP_POSTS {
        let cid = format!("post-{k}");
        conn.send_group(group.group.as_str(), &cid, "missed too")
            .await
            .unwrap();
        posts.push(expect_sent(&mut conn, &cid).await.id);
    }
    conn.close().await;
    Sent {
        members,
        direct,
        friend,
        group: group.conversation,
        posts,
    }
}

/// Resumes `user` from `cursor` and reads until `synced`: the messages by conversation, in
/// the order they came, and whether the replay recovered everything.
async fn resume(
    stack: &Stack,
    user: String,
    gateway: usize,
    cursor: Cursor,
) -> (
    String,
    HashMap<ConversationId, Vec<(MessageId, bool)>>,
    bool,
) {
    let url = format!("{}?cursor={cursor}", stack.gateways[gateway].ws_url());
    let mut conn = Connection::connect(&url, &stack.token(&user), protocol::Encoding::Json)
        .await
        .expect("connect during the storm");
    let mut received: HashMap<ConversationId, Vec<(MessageId, bool)>> = HashMap::new();
    loop {
        match conn.next_frame().await.expect("connection open") {
            ServerFrame::Message(m) => received
                .entry(m.conversation.clone())
                .or_default()
                .push((m.id, m.event.is_some())),
            ServerFrame::Synced { recovered, .. } => return (user, received, recovered),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_devices_reconnecting_at_once_each_get_exactly_what_they_missed() {
    let stack = Stack::new()
        .gateways(2)
        .gateway_config(|c| c.max_connections = CLIENTS + 100)
        .chat_config(|c| c.group_adds = GroupAdds::Anyone)
        .start()
        .await;
    // Where every device was: the streams' heads before anything below was written.
    let mut probe = stack.resume("probe", 0, None).await;
    let before = expect_synced(&mut probe).await.1.cursor;
    probe.close().await;

    let sent = futures::future::join_all((0..GROUPS).map(|j| write_to_group(&stack, j))).await;

    let nats = stack.nats.client().await;
    let mut api_limit = nats
        .subscribe("$JS.EVENT.ADVISORY.API.LIMIT_REACHED")
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let mut api_before = Vec::new();
    for gw in &stack.gateways {
        api_before.push(
            gw.metric("natter_gateway_jetstream_api_requests_total")
                .await,
        );
    }
    let started = Instant::now();
    let storm = (0..CLIENTS).map(|i| resume(&stack, client(i), i % 2, before.clone()));
    let resumed = tokio::time::timeout(STORM_PATIENCE, futures::future::join_all(storm))
        .await
        .expect("every device synced");
    println!(
        "storm: {CLIENTS} devices on 2 gateways resynced in {:.1?}",
        started.elapsed()
    );
    nats.flush().await.unwrap();
    assert!(
        futures::FutureExt::now_or_never(api_limit.next()).is_none(),
        "JetStream's API limit was reached"
    );
    // The crowd shares reads of the streams instead of replaying device by device.
    for (gw, before) in stack.gateways.iter().zip(api_before) {
        let shared = gw.metric("natter_gateway_replays_shared_total").await;
        let reads = gw.metric("natter_gateway_gap_reads_total").await;
        let api = gw
            .metric("natter_gateway_jetstream_api_requests_total")
            .await
            - before;
        println!("{shared} replays shared {reads} reads; {api} JetStream API requests");
        assert!(shared >= CLIENTS as i64 / 4, "{shared} replays shared");
        assert!(api <= 300, "{api} JetStream API requests");
    }
    let resumed: HashMap<String, _> = resumed
        .into_iter()
        .map(|(user, received, recovered)| {
            assert!(recovered, "{user}: not recovered");
            (user, received)
        })
        .collect();

    for group in &sent {
        // Every member gets the group's events and posts, the same ones in the same order.
        let first = &resumed[&group.members[0]][&group.group];
        let posts: Vec<MessageId> = first
            .iter()
            .filter(|(_, event)| !event)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(posts, group.posts, "{}: posts in order", group.members[0]);
        for member in &group.members {
            let received = &resumed[member];
            let direct = ConversationId::direct(
                &protocol::UserId::new(&group.friend).unwrap(),
                &protocol::UserId::new(member).unwrap(),
            );
            let direct_ids: Vec<MessageId> = received[&direct].iter().map(|(id, _)| *id).collect();
            assert_eq!(
                direct_ids, group.direct[member],
                "{member}: the 1:1 messages, in order"
            );
            assert_eq!(
                &received[&group.group], first,
                "{member}: the group as every member got it"
            );
            assert_eq!(received.len(), 2, "{member}: nothing from elsewhere");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_would_wait_too_long_is_told_when_to_come_back_and_then_gets_everything() {
    const QUEUED: usize = 20;
    // One replay at a time, each on its own (a shared read would serve the crowd at once).
    // With the history service gone before the messages were written, each replay waits 2 s
    // for history to store them, then reads with consumers: a slow, steady queue.
    let mut stack = Stack::new()
        .gateway_config(|c| {
            c.sync_concurrency = 1;
            c.sync_wait_max_ms = 1_000;
            c.sync_gap_read_max_messages = 0;
        })
        .start()
        .await;
    let mut probe = stack.resume("probe", 0, None).await;
    let before = expect_synced(&mut probe).await.1.cursor;
    probe.close().await;
    stack.histories[0].kill();
    let mut friend = stack.connect("friend", 0).await;
    let mut missed = HashMap::new();
    let users: Vec<String> = (0..=QUEUED).map(client).collect();
    for user in &users {
        friend.send(user, user, "missed").await.unwrap();
        missed.insert(user.clone(), expect_sent(&mut friend, user).await.id);
    }

    let (late, queued) = users.split_last().unwrap();
    let storm: Vec<_> = queued
        .iter()
        .map(|user| tokio::spawn(resume_owned(&stack, user.clone(), before.clone())))
        .collect();
    let gw = &stack.gateways[0];
    eventually("replays queue up", Duration::from_secs(30), async || {
        gw.metric("natter_gateway_replays_waiting").await >= 10
    })
    .await;
    // Once the gateway has measured its pace, a late device with a cursor is told when to
    // come back; a new device, which replays nothing, is let in.
    let (url, token, encoding) = (gw.ws_url(), stack.token(late), protocol::Encoding::Json);
    let mut told = None;
    eventually(
        "a late device is told to wait",
        Duration::from_secs(30),
        async || {
            match Connection::resume(&url, &token, encoding, Some(before.clone())).await {
                Err(ConnectError::Busy(retry_after)) => told = Some(retry_after),
                Ok(_admitted) => {} // before the pace was known; the copy goes away
                Err(e) => panic!("refused otherwise: {e}"),
            }
            told.is_some()
        },
    )
    .await;
    let retry_after = told.unwrap();
    assert!(retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(60));
    assert!(gw.metric("natter_gateway_replays_deferred_total").await >= 1);
    Connection::resume(&url, &stack.token("newcomer"), encoding, None)
        .await
        .expect("a device without a cursor is admitted");

    // History is back: the queue drains and every device gets what it missed, the late one
    // when it comes back.
    stack.start_history().await;
    for (user, task) in queued.iter().zip(storm) {
        let (replayed, synced) = task.await.unwrap();
        assert!(synced, "{user}");
        assert_eq!(replayed, [missed[user]], "{user}");
    }
    let mut backoff = protocol::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut conn = Connection::reconnect(&url, &token, encoding, Some(before), &mut backoff)
        .await
        .expect("admitted");
    let (replayed, synced) = expect_synced_within(&mut conn).await;
    assert!(synced);
    assert_eq!(replayed, [missed[late]]);
}

/// Resumes `user` on gateway 0 (coming back when told to) and reads until `synced`: the ids
/// replayed, and whether the replay recovered everything.
fn resume_owned(
    stack: &Stack,
    user: String,
    cursor: Cursor,
) -> impl std::future::Future<Output = (Vec<MessageId>, bool)> + Send + 'static {
    let url = stack.gateways[0].ws_url();
    let token = stack.token(&user);
    async move {
        // Those that come once the queue is long are told to come back, as clients do.
        let mut backoff = protocol::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let encoding = protocol::Encoding::Json;
        let mut conn = Connection::reconnect(&url, &token, encoding, Some(cursor), &mut backoff)
            .await
            .expect("admitted");
        expect_synced_within(&mut conn).await
    }
}

/// Reads until `synced`, for as long as a queued replay may take.
async fn expect_synced_within(conn: &mut Connection) -> (Vec<MessageId>, bool) {
    let mut replayed = Vec::new();
    tokio::time::timeout(STORM_PATIENCE, async {
        loop {
            match conn.next_frame().await.expect("connection open") {
                ServerFrame::Message(m) => replayed.push(m.id),
                ServerFrame::Synced { recovered, .. } => return (replayed, recovered),
                _ => {}
            }
        }
    })
    .await
    .expect("synced")
}
