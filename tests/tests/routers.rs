//! Routing shared among chat instances: one router per partition, the partitions spread over
//! the running instances. On a 3-node NATS cluster with three partitions and three chat
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
