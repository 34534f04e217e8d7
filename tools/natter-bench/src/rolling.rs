//! A rolling restart under load (testkit's `rolling`, as `tests/tests/rolling_restart.rs`
//! runs it): users chatting 1:1 and in groups over three gateways while each gateway (drained,
//! its clients move), each of two chat and two history instances, the notifier and each node
//! of a three-node NATS cluster (lame-duck mode) restart in turn. Figures: what was lost and
//! stored twice (both must be 0), and per restart the pause each user saw (the longest time
//! without a `sent` answer or an arriving message around it), as a distribution over users.
//! A user sending `rate` messages a second sees a gap of 1/rate with no restart at all.

use std::time::Duration;

use testkit::rolling::{self, Chatters, RollingPlan, restart_everything};

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
    let mut stack = rolling::stack().await;
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
    let outcome = chatters.finish(restarts, Duration::from_secs(60)).await;
    let (_, stored_twice) = rolling::stored(&stack).await;
    let longest = outcome.longest_pause();
    report.measurement(
        serde_json::json!({"scenario": "rolling", "users": users, "group_size": group_size,
            "messages_per_s_each": rate, "sent": outcome.sent, "deliveries": outcome.deliveries,
            "lost": outcome.lost.len(), "stored_twice": stored_twice,
            "copies_dropped": outcome.duplicates_dropped, "resends": outcome.resends,
            "reconnects": outcome.reconnects, "longest_pause_s": longest.as_secs_f64(),
            "restarts": outcome.pauses.iter().map(|(r, p)| serde_json::json!({
                "what": r.what, "took_s": (r.back - r.began).as_secs_f64(),
                "pauses_s": p.iter().map(|p| p.noticed().as_secs_f64()).collect::<Vec<_>>(),
                "sending_pauses_s": p.iter().map(|p| p.sending.as_secs_f64()).collect::<Vec<_>>(),
                "arriving_pauses_s": p.iter().map(|p| p.arriving.as_secs_f64()).collect::<Vec<_>>()})).collect::<Vec<_>>()}),
        format!(
            "rolling restart: {} sent, {} deliveries, {} lost, {} stored twice, {} copies dropped \
             by id, {} resends, {} reconnects, longest pause {:.2?}\n{}",
            outcome.sent,
            outcome.deliveries,
            outcome.lost.len(),
            stored_twice,
            outcome.duplicates_dropped,
            outcome.resends,
            outcome.reconnects,
            longest,
            outcome.pause_table()
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
    let secs = |d: Duration| format!("{:.2}", d.as_secs_f64());
    for row in outcome.rows() {
        table.row(vec![
            row.what,
            format!("{:.1}", row.took.as_secs_f64()),
            secs(row.p50),
            secs(row.p90),
            secs(row.max),
            secs(row.sending_max),
            secs(row.arriving_max),
        ]);
    }
    report.finish(&[table], &[]);
    anyhow::ensure!(
        outcome.lost.is_empty() && stored_twice == 0,
        "lost {:?}, stored twice {stored_twice}",
        outcome.lost
    );
    stack.stop().await;
    Ok(())
}
