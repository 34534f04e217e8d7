//! A rolling restart under load (testkit's `rolling`, as `tests/tests/rolling_restart.rs`
//! runs it): users chatting 1:1 and in groups over three gateways while each gateway (drained,
//! its clients move), each of two chat and two history instances, the notifier and each node
//! of a three-node NATS cluster (lame-duck mode) restart in turn. Figures: what was lost and
//! stored twice (both must be 0), and per restart the pause each user saw (the longest time
//! without a `sent` answer or an arriving message around it), as a distribution over users.
//! A user sending `rate` messages a second sees a gap of 1/rate with no restart at all.

use std::collections::HashSet;
use std::time::Duration;

use chat::GroupAdds;
use testkit::Stack;
use testkit::rolling::{Chatters, Pause, RollingPlan, quantile, restart_everything};

use crate::report::{Report, Table};

pub async fn run(
    users: usize,
    group_size: usize,
    rate: f64,
    out: &crate::report::Output,
) -> anyhow::Result<()> {
    let report = Report::new(out, 1)?;
    report.step(format!(
        "{users} users, groups of {group_size}, {rate} msg/s each: every component restarted in turn"
    ));
    let mut stack = Stack::new()
        .cluster(3)
        .gateways(3)
        .bus_config(|b| {
            b.replicas = 3;
            b.partitions = 3;
        })
        .chat_config(|c| c.group_adds = GroupAdds::Anyone)
        .start()
        .await;
    stack.start_chat(stack.chat_config.clone()).await;
    stack.start_history().await;
    stack.start_notifier(1_000, "").await;
    let plan = RollingPlan {
        users,
        group_size,
        messages_per_s: rate,
    };
    let chatters = Chatters::start(&stack, &plan).await;
    chatters
        .wait_all_active_since(std::time::Instant::now())
        .await;
    let restarts = restart_everything(&mut stack, &chatters).await;
    let rolling = chatters.finish(restarts, Duration::from_secs(60)).await;
    let stored = stack.stream_messages().await;
    let mut once = HashSet::new();
    let mut stored_twice = 0;
    for m in stored
        .iter()
        .filter(|m| m.message.event.is_none() && m.message.from.as_str().starts_with('u'))
    {
        if !once.insert((m.message.from.to_string(), m.message.cid.to_string())) {
            stored_twice += 1;
        }
    }
    let longest = rolling.longest_pause();
    report.measurement(
        serde_json::json!({"scenario": "rolling", "users": users, "group_size": group_size,
            "messages_per_s_each": rate, "sent": rolling.sent, "deliveries": rolling.deliveries,
            "lost": rolling.lost.len(), "stored_twice": stored_twice,
            "copies_dropped": rolling.duplicates_dropped, "resends": rolling.resends,
            "reconnects": rolling.reconnects, "longest_pause_s": longest.as_secs_f64(),
            "restarts": rolling.pauses.iter().map(|(r, p)| serde_json::json!({
                "what": r.what, "took_s": (r.back - r.began).as_secs_f64(),
                "pauses_s": p.iter().map(|p| p.noticed().as_secs_f64()).collect::<Vec<_>>(),
                "sending_pauses_s": p.iter().map(|p| p.sending.as_secs_f64()).collect::<Vec<_>>(),
                "arriving_pauses_s": p.iter().map(|p| p.arriving.as_secs_f64()).collect::<Vec<_>>()})).collect::<Vec<_>>()}),
        format!(
            "rolling restart: {} sent, {} deliveries, {} lost, {} stored twice, {} copies dropped \
             by id, {} resends, {} reconnects, longest pause {:.2?}\n{}",
            rolling.sent,
            rolling.deliveries,
            rolling.lost.len(),
            stored_twice,
            rolling.duplicates_dropped,
            rolling.resends,
            rolling.reconnects,
            longest,
            rolling.pause_table()
        ),
    );
    report.done();
    let mut table = Table::new(
        format!("Rolling restart: {users} users, {rate} msg/s each, pause per restart"),
        &[
            "restart",
            "took (s)",
            "pause p50 (s)",
            "p90 (s)",
            "max (s)",
            "longest without sent (s)",
            "longest without a message (s)",
        ],
    );
    for (restart, pauses) in &rolling.pauses {
        let noticed = |q: f64| quantile(pauses.iter().map(Pause::noticed), q).as_secs_f64();
        let max = |f: fn(&Pause) -> Duration| quantile(pauses.iter().map(f), 1.0).as_secs_f64();
        table.row(vec![
            restart.what.clone(),
            format!("{:.1}", (restart.back - restart.began).as_secs_f64()),
            format!("{:.2}", noticed(0.5)),
            format!("{:.2}", noticed(0.9)),
            format!("{:.2}", noticed(1.0)),
            format!("{:.2}", max(|p| p.sending)),
            format!("{:.2}", max(|p| p.arriving)),
        ]);
    }
    report.finish(&[table], &[]);
    anyhow::ensure!(
        rolling.lost.is_empty() && stored_twice == 0,
        "lost {:?}, stored twice {stored_twice}",
        rolling.lost
    );
    stack.stop().await;
    Ok(())
}
