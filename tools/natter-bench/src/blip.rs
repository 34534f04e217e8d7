//! A NATS blip under a gateway: `clients` devices sit on a gateway whose NATS connection goes
//! through a relay; the relay is cut for `outage` (3 s by default), `per_client` messages for
//! each device are written meanwhile, and the relay is restored. Figure: time from the restore until every device has
//! its messages and the `synced` it did not ask for. Run twice in one invocation: as shipped
//! (the sessions share one read of the gap) and with each session replaying on its own
//! (`sync_gap_read_max_messages = 0`), the baseline.

use std::time::{Duration, Instant};

use protocol::frames::ServerFrame;
use protocol::{Encoding, UserId};
use testkit::client::Connection;
use testkit::{Link, Stack};

use crate::report::{Report, Table, ratio};

pub async fn run(
    clients: usize,
    per_client: usize,
    outage: Duration,
    out: &crate::report::Output,
) -> anyhow::Result<()> {
    let report = Report::new(out, 2)?;
    let mut rows = Vec::new();
    for (label, shared) in [("one shared read", true), ("a replay per session", false)] {
        report.step(format!("{label}: {clients} devices catch up after a blip"));
        let figures = blip(clients, per_client, outage, shared).await?;
        report.measurement(
            serde_json::json!({"scenario": "blip", "recovery": label, "clients": clients,
                "per_client": per_client, "outage_s": outage.as_secs_f64(),
                "all_resynced_s": figures.took.as_secs_f64(),
                "gap_reads": figures.gap_reads, "replays_on_their_own": figures.alone,
                "jetstream_api_requests": figures.api}),
            format!(
                "blip, {label}: {clients} devices with {per_client} messages each caught up in \
                 {:.2?} after a {outage:.1?} outage ({} shared reads, {} replays on their own, {} JetStream API requests)",
                figures.took, figures.gap_reads, figures.alone, figures.api
            ),
        );
        rows.push((label, figures.took));
        report.done();
    }
    let mut table = Table::new(
        format!("NATS blip: {clients} devices with {per_client} messages each catch up"),
        &["recovery", "all caught up (s)", "÷ shared read (time)"],
    );
    let shared = rows[0].1.as_secs_f64();
    for (label, took) in &rows {
        table.row(vec![
            label.to_string(),
            format!("{:.2}", took.as_secs_f64()),
            ratio(took.as_secs_f64(), shared),
        ]);
    }
    report.finish(&[table], &[]);
    Ok(())
}

struct Figures {
    took: Duration,
    gap_reads: i64,
    alone: i64,
    api: i64,
}

async fn blip(
    clients: usize,
    per_client: usize,
    outage: Duration,
    shared: bool,
) -> anyhow::Result<Figures> {
    let mut stack = Stack::new()
        .gateway_config(|g| {
            g.heartbeat_timeout_ms = 600_000;
            g.max_connections = clients + 100;
            if !shared {
                g.sync_gap_read_max_messages = 0;
            }
        })
        .start()
        .await;
    let link = Link::start(&stack.nats.url()).await;
    let gw = stack.start_gateway_via("gw-blip", &link.url()).await;
    let url = stack.gateways[gw].ws_url();
    let users: Vec<String> = (0..clients).map(|i| format!("blip{i}")).collect();
    let connects = users.iter().map(|user| {
        let (url, token) = (url.clone(), stack.token(user));
        async move {
            let mut conn = Connection::resume(&url, &token, Encoding::Json, None).await?;
            synced(&mut conn).await?;
            anyhow::Ok(conn)
        }
    });
    let mut conns = futures::future::try_join_all(connects).await?;

    let gateway = &stack.gateways[gw];
    link.cut();
    let cut = Instant::now();
    while !gateway
        .http_get("/healthz")
        .await
        .starts_with("HTTP/1.1 503")
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let source = UserId::new("blip-source")?;
    let to = users
        .iter()
        .map(|u| UserId::new(u.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let messages =
        (0..per_client).flat_map(|_| to.iter().map(|user| (source.clone(), user.clone())));
    crate::backlog::write(&stack, messages).await?;
    // The scenario's outage length, not a synchronisation.
    tokio::time::sleep(outage.saturating_sub(cut.elapsed())).await;

    let counters = async || {
        let m = |name| gateway.metric(name);
        (
            m("natter_gateway_gap_reads_total").await,
            m("natter_gateway_replays_direct_total").await
                + m("natter_gateway_replays_with_consumers_total").await,
            m("natter_gateway_jetstream_api_requests_total").await,
        )
    };
    let before = counters().await;
    let started = Instant::now();
    link.restore();
    let catch_up = conns.iter_mut().map(|conn| async move {
        let replayed = synced(conn).await?;
        anyhow::ensure!(
            replayed >= per_client,
            "{replayed} of {per_client} replayed"
        );
        anyhow::Ok(())
    });
    futures::future::try_join_all(catch_up).await?;
    let took = started.elapsed();
    let after = counters().await;
    drop(conns);
    stack.stop().await;
    Ok(Figures {
        took,
        gap_reads: after.0 - before.0,
        alone: after.1 - before.1,
        api: after.2 - before.2,
    })
}

/// Reads until `synced`; the messages before it.
async fn synced(conn: &mut Connection) -> anyhow::Result<usize> {
    let mut messages = 0;
    loop {
        match conn.next_frame().await? {
            ServerFrame::Message(_) => messages += 1,
            ServerFrame::Synced { .. } => return Ok(messages),
            _ => {}
        }
    }
}
