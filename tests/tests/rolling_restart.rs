//! A rolling restart under load (testkit's `rolling`): 24 users on three gateways chat 1:1 and
//! in groups of six while every component is restarted in turn (each gateway drained and
//! started again, each of two chat and two history instances, the notifier, and each node of
//! a three-node NATS cluster in lame-duck mode). Nothing answered `sent` is lost or stored
//! twice, every user gets every message (copies dropped by id, as clients do), and the pause
//! each restart caused each user is reported. `natter-bench rolling` measures the same with
//! a release build.

use std::time::{Duration, Instant};

use testkit::rolling::{self, Chatters, Pause, RollingPlan, quantile, restart_everything};

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_of_every_component_loses_nothing() {
    let mut stack = rolling::stack().await;
    let plan = RollingPlan {
        users: 24,
        group_size: 6,
        messages_per_s: 2.0,
    };
    let chatters = Chatters::start(&stack, &plan).await;
    chatters.wait_all_active_since(Instant::now()).await;

    let restarts = restart_everything(&mut stack, &chatters).await;
    assert_eq!(restarts.len(), 3 + 2 + 2 + 1 + 3, "{restarts:?}");
    let report = chatters.finish(restarts, Duration::from_secs(60)).await;
    eprintln!(
        "sent {}, deliveries {}, copies dropped {}, resends {}, reconnects {}, longest pause {:?}\n{}",
        report.sent,
        report.deliveries,
        report.duplicates_dropped,
        report.resends,
        report.reconnects,
        report.longest_pause(),
        report.pause_table()
    );

    assert!(
        report.lost.is_empty(),
        "{} of {} deliveries lost: {:#?}",
        report.lost.len(),
        report.deliveries,
        report.lost.iter().take(30).collect::<Vec<_>>()
    );
    // What a user notices: no user waits 2 s in any restart (the pause is the users' send
    // interval). At a NATS node's restart, a send request or answer lost in flight while a
    // connection moved is asked again after the gateway's `send_reask_ms` (1 s), and a pull
    // request that vanished is made anew after a second without heartbeats (`Pulled`).
    for (restart, pauses) in &report.pauses {
        let pause = quantile(pauses.iter().map(Pause::noticed), 1.0);
        assert!(
            pause < Duration::from_secs(2),
            "{}: pause {pause:?}",
            restart.what
        );
    }
    // The gateways' NATS connections moved from node to node while their leases held: no
    // session had been purged, so none was registered again (each would have made the
    // routers wait at its marker).
    for gateway in &stack.gateways {
        assert_eq!(
            gateway.metric("natter_gateway_reregistrations_total").await,
            0,
            "{}",
            gateway.id
        );
    }
    // Each gateway's users moved once when it drained.
    assert!(report.reconnects >= 24, "{report:?}");
    let (stored, stored_twice) = rolling::stored(&stack).await;
    assert_eq!(stored_twice, 0, "stored twice");
    assert_eq!(stored, report.sent, "stored what was answered sent");
}
