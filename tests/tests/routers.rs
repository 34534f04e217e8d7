//! Routing shared among chat instances: one router per partition, the partitions spread over
//! the running instances, and each partition's stream led from its own node. On a 3-node
//! NATS cluster with three partitions and three chat
//! instances, the instance routing one partition is killed and then a NATS node: the others
//! take the partition over, nothing SENT is lost or stored twice, and every recipient gets
//! its conversation in order.

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

    stack.chats[1].kill();
    eventually(
        "the survivors route all three partitions",
        RECOVERY,
        async || routing(&stack, 0) + routing(&stack, 2) == 3,
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
