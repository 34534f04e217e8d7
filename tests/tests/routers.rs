//! Routing shared among chat instances: one router per partition, the partitions spread over
//! the running instances, and each partition's stream led from its own node. On a 3-node
//! NATS cluster with three partitions and three chat
//! instances, the instance routing one partition is killed and then a NATS node: the others
//! take the partition over, nothing SENT is lost or stored twice, and every recipient gets
//! its conversation in order. Sessions are sharded the same way: each instance holds one
//! session shard, looks up the others' users by asking their holder, and the survivors take
//! the dead instance's shard over.

use std::time::Duration;

use testkit::{Stack, Traffic, TrafficPlan, eventually};

/// How long a takeover or a recovery may take on a loaded 2-core machine: an instance's key
/// lapses after 6 s, a pin after its timeout.
const RECOVERY: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_chat_instances_share_the_partitions_and_losing_one_then_a_node_loses_nothing() {
    let mut stack = Stack::new()
        .cluster(3)
        .sync_interval("1s")
        .gateways(2)
        .start()
        .await;
    assert_eq!(stack.bus.partitions, 3);
    let config = stack.chat_config.clone();
    stack.start_chat(config.clone()).await;
    stack.start_chat(config).await;
    let routing = |stack: &Stack, i: usize| stack.chats[i].metric("natter_chat_routing_partitions");
    eventually("each instance routes one partition", RECOVERY, async || {
        (0..3).all(|i| routing(&stack, i) == 1)
    })
    .await;

    // Each partition's stream is led from its own node: writes are spread too.
    eventually(
        "the streams' leaders are on three nodes",
        RECOVERY,
        async || {
            let mut leaders = std::collections::HashSet::new();
            for k in 0..3 {
                let mut stream = stack.messages_stream(k).await;
                let info = stream.info().await.unwrap();
                if let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone()) {
                    leaders.insert(leader);
                }
            }
            leaders.len() == 3
        },
    )
    .await;

    let traffic = Traffic::start(
        &stack,
        TrafficPlan {
            pairs: 12,
            messages_per_s: 300.0,
            window: 16,
            resend_after: Duration::from_secs(10),
        },
    )
    .await;
    traffic.wait_acked(600, RECOVERY).await;
    let routed = |stack: &Stack, i: usize| stack.chats[i].metric("natter_chat_routed_total");
    assert!(
        (0..3).all(|i| routed(&stack, i) > 0),
        "every instance routes its share"
    );
    // 12 pairs: 24 sessions, split among the instances by user, none holding them all.
    let shards = |stack: &Stack, i: usize| stack.chats[i].metric("natter_chat_session_shards_held");
    let sessions = |stack: &Stack, i: usize| stack.chats[i].metric("natter_chat_sessions_held");
    assert!(
        (0..3).all(|i| shards(&stack, i) == 1),
        "one session shard each"
    );
    eventually(
        "the sessions are split among the instances",
        RECOVERY,
        async || {
            let held: Vec<u64> = (0..3).map(|i| sessions(&stack, i)).collect();
            held.iter().sum::<u64>() == 24 && held.iter().all(|n| *n < 24)
        },
    )
    .await;
    let queries =
        |stack: &Stack, i: usize| stack.chats[i].metric("natter_chat_session_queries_total");
    assert!(
        (0..3).all(|i| queries(&stack, i) > 0),
        "every instance asks the others for their shards' users"
    );

    stack.chats[1].kill();
    eventually(
        "the survivors route all three partitions",
        RECOVERY,
        async || routing(&stack, 0) + routing(&stack, 2) == 3,
    )
    .await;
    eventually(
        "the survivors hold all three session shards and every session",
        RECOVERY,
        async || {
            shards(&stack, 0) + shards(&stack, 2) == 3
                && sessions(&stack, 0) + sessions(&stack, 2) == 24
        },
    )
    .await;
    let after_takeover = routed(&stack, 0) + routed(&stack, 2);
    traffic.wait_acked(traffic.acked() + 600, RECOVERY).await;
    assert!(routed(&stack, 0) + routed(&stack, 2) > after_takeover);

    let cluster = stack.nats.cluster();
    cluster.kill(0);
    traffic.wait_acked(traffic.acked() + 600, RECOVERY).await;
    cluster.restart(0).await;

    let report = traffic.finish(RECOVERY).await;
    let stored = stack.stream_messages().await;
    report.assert_stored_once(&stored);
    report.assert_all_delivered();
    report.assert_in_stream_order(&stored);
    println!(
        "routers: {} messages SENT at {:.0} msg/s, {} resends, {} copies dropped",
        report.sent.len(),
        report.rate(),
        report.resends,
        report.duplicates_received
    );
}

/// The leaders of the three streams, by partition (`None` during an election).
async fn leaders(stack: &Stack) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let js = async_nats::jetstream::new(stack.nats.client().await);
    for k in 0..stack.bus.partitions {
        // No answer while an election is under way.
        let leader = match js.get_stream(protocol::subjects::messages_stream(k)).await {
            Ok(stream) => stream
                .cached_info()
                .cluster
                .as_ref()
                .and_then(|c| c.leader.clone()),
            Err(_) => None,
        };
        out.push(leader);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_gathered_on_one_node_are_spread_again() {
    let stack = Stack::new().cluster(3).sync_interval("1s").start().await;
    let operator = async_nats::jetstream::new(stack.nats.client().await);
    // Every leader moves to one node, as after the others restarted.
    let first = loop {
        if let Some(Some(leader)) = leaders(&stack).await.first() {
            break leader.clone();
        }
        tokio::task::yield_now().await;
    };
    for k in 0..3 {
        let subject = format!(
            "STREAM.LEADER.STEPDOWN.{}",
            protocol::subjects::messages_stream(k)
        );
        let request = serde_json::json!({ "placement": { "preferred": first } });
        let _: serde_json::Value = operator.request(subject, &request).await.unwrap();
    }
    eventually("every leader on one node", RECOVERY, async || {
        leaders(&stack)
            .await
            .iter()
            .all(|l| l.as_ref() == Some(&first))
    })
    .await;

    // The chat service's passes ask them to move (a pass skips a stream whose replicas are
    // still catching up), and they end on three nodes.
    let streams = plumbing::bus::messages_streams(&operator, &stack.bus)
        .await
        .unwrap();
    let mut asked = 0;
    eventually("the leaders are on three nodes", RECOVERY, async || {
        let now = leaders(&stack).await;
        if now
            .iter()
            .flatten()
            .collect::<std::collections::HashSet<_>>()
            .len()
            == 3
        {
            return true;
        }
        asked += plumbing::bus::leaders::spread(&operator, &streams).await;
        false
    })
    .await;
    assert!(
        asked >= 2,
        "two streams were led from elsewhere: {asked} asked"
    );
    assert_eq!(
        plumbing::bus::leaders::spread(&operator, &streams).await,
        0,
        "and they stay"
    );
}

/// The router of a conversation remembers the sessions it asked another instance for (for up
/// to a second). A device that registers meanwhile must still get the next message: the
/// session marker before that message makes the router ask again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_registering_while_the_router_remembers_its_user_gets_the_next_message() {
    let mut stack = Stack::new().start().await;
    let partitions = stack.bus.partitions;
    assert_eq!(partitions, 3);
    stack.start_chat(stack.chat_config.clone()).await;
    let routing = |stack: &Stack, i: usize| stack.chats[i].metric("natter_chat_routing_partitions");
    let shards = |stack: &Stack, i: usize| stack.chats[i].metric("natter_chat_session_shards_held");
    eventually(
        "the partitions and shards are shared",
        RECOVERY,
        async || {
            routing(&stack, 0) + routing(&stack, 1) == 3
                && routing(&stack, 0) > 0
                && routing(&stack, 1) > 0
                && shards(&stack, 0) + shards(&stack, 1) == 3
        },
    )
    .await;
    // Two instances: partition k is routed, and shard k held, by the instance of rank k % 2.
    // A recipient whose shard is held by the other instance than the conversation's router
    // is looked up remotely.
    let bob = (0..)
        .map(|i| format!("bob{i}"))
        .find(|bob| {
            let user = protocol::UserId::new(bob.as_str()).unwrap();
            let conversation =
                protocol::ConversationId::direct(&protocol::UserId::new("alice").unwrap(), &user);
            let partition = protocol::subjects::partition(&conversation, partitions);
            partition % 2 != protocol::subjects::user_shard(&user, partitions) % 2
        })
        .unwrap();
    let queries = |stack: &Stack| {
        stack.chats[0].metric("natter_chat_session_queries_total")
            + stack.chats[1].metric("natter_chat_session_queries_total")
    };
    let mut alice = stack.connect("alice", 0).await;
    let mut phone = stack.connect(&bob, 0).await;
    for round in 0..5 {
        let asked = queries(&stack);
        // The router looks bob up (or finds him remembered) and delivers to his phone.
        alice
            .send(&bob, &format!("warm-{round}"), "warm")
            .await
            .unwrap();
        testkit::expect_sent(&mut alice, &format!("warm-{round}")).await;
        assert_eq!(testkit::expect_message(&mut phone).await.body, "warm");
        if round == 0 {
            assert!(
                queries(&stack) > asked,
                "bob was looked up at his shard's holder"
            );
        }
        // A laptop registers while bob is remembered with his phone only.
        let mut laptop = stack.connect(&bob, 0).await;
        let cid = format!("next-{round}");
        alice.send(&bob, &cid, "next").await.unwrap();
        testkit::expect_sent(&mut alice, &cid).await;
        assert_eq!(testkit::expect_message(&mut phone).await.body, "next");
        assert_eq!(
            testkit::expect_message(&mut laptop).await.body,
            "next",
            "round {round}: the new device gets the next message live"
        );
        laptop.close().await;
    }
}

/// A chat instance that crashes leaves its session shards without a holder until its key
/// lapses and its work is shared out (6 s and more). An instance that needs one of them
/// meanwhile takes it itself: a device of a user in that shard still gets its messages
/// within about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holders_session_shard_is_taken_by_the_instance_that_needs_it() {
    let mut stack = Stack::new().start().await;
    let partitions = stack.bus.partitions;
    stack.start_chat(stack.chat_config.clone()).await;
    let shards = |stack: &Stack, i: usize| stack.chats[i].metric("natter_chat_session_shards_held");
    eventually("the shards are shared", RECOVERY, async || {
        shards(&stack, 0) + shards(&stack, 1) == 3 && shards(&stack, 0) * shards(&stack, 1) == 2
    })
    .await;
    // Three shards on two instances: the one of rank 0 holds (and routes) 0 and 2, the other 1.
    let alice = protocol::UserId::new("alice").unwrap();
    let bob = (0..)
        .map(|i| protocol::UserId::new(format!("bob{i}")).unwrap())
        .find(|bob| {
            let conversation = protocol::ConversationId::direct(&alice, bob);
            let partition = protocol::subjects::partition(&conversation, partitions);
            partition % 2 != protocol::subjects::user_shard(bob, partitions) % 2
        })
        .unwrap();
    let holder_shards = if protocol::subjects::user_shard(&bob, partitions) == 1 {
        1
    } else {
        2
    };
    let holder = (0..2)
        .find(|i| shards(&stack, *i) == holder_shards)
        .unwrap();
    let mut sender = stack.connect("alice", 0).await;
    let mut phone = stack.connect(bob.as_str(), 0).await;
    sender.send(bob.as_str(), "before", "before").await.unwrap();
    assert_eq!(testkit::expect_message(&mut phone).await.body, "before");

    stack.chats[holder].kill();
    // A new device: the router must look bob up again, and nobody holds his shard.
    let mut laptop = stack.connect(bob.as_str(), 0).await;
    let sent_at = std::time::Instant::now();
    sender.send(bob.as_str(), "after", "after").await.unwrap();
    testkit::expect_sent(&mut sender, "after").await;
    assert_eq!(testkit::expect_message(&mut laptop).await.body, "after");
    let took = sent_at.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "delivered {took:?} after the send; the holder's key lapses only after 6 s"
    );
    assert!(
        shards(&stack, 1 - holder) > 3 - holder_shards,
        "the survivor stands in for bob's shard"
    );
}
