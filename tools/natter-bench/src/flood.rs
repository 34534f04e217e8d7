//! Flood: does one user's flood hurt another? alice sends bob `rate` messages per second for
//! `seconds`, and bob's delivery latency is measured twice in one invocation on one stack:
//! with nobody else sending (the baseline), and while mallory floods from four connections,
//! each sending 64 KiB messages and `read` frames as fast as its socket takes them. natter's
//! default per-user limits are on (the test stacks lift them otherwise), so the figure says
//! what they are worth.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use protocol::frames::ServerFrame;
use protocol::{ConversationId, ErrorCode, UserId};
use testkit::Stack;
use testkit::client::Connection;
use tokio_util::sync::CancellationToken;

use crate::Latencies;
use crate::report::{Report, Table, ms, ratio};

/// Connections mallory floods from.
const FLOODERS: usize = 4;

pub async fn run(rate: u64, seconds: u64, out: &crate::report::Output) -> anyhow::Result<()> {
    let report = Report::new(out, 2)?;
    let defaults = gateway::GatewayConfig::default();
    let stack = Stack::new()
        .gateway_config(|g| {
            g.heartbeat_timeout_ms = 600_000;
            g.send_messages_per_sec = defaults.send_messages_per_sec;
            g.send_bytes_per_sec = defaults.send_bytes_per_sec;
            g.receipts_per_sec = defaults.receipts_per_sec;
        })
        .start()
        .await;

    report.step(format!(
        "baseline: alice → bob, {rate} msg/s for {seconds} s"
    ));
    let baseline = Latencies::new(conversation(&stack, "base", rate, seconds).await?);
    report.done();

    report.step(format!(
        "flood: the same while mallory floods from {FLOODERS} connections"
    ));
    let stop = CancellationToken::new();
    let counts = Arc::new(Counts::default());
    let mut flooders = Vec::new();
    for i in 0..FLOODERS {
        let conn = stack.connect("mallory", 0).await;
        flooders.push(tokio::spawn(flood(conn, i, stop.clone(), counts.clone())));
    }
    let flooded = Latencies::new(conversation(&stack, "flood", rate, seconds).await?);
    stop.cancel();
    for f in flooders {
        f.await?;
    }
    report.done();

    let (sent, limited) = (
        counts.sent.load(Ordering::Relaxed),
        counts.limited.load(Ordering::Relaxed),
    );
    let p99 = |l: &Latencies| l.percentile_ms(0.99);
    report.measurement(
        serde_json::json!({"scenario": "flood", "rate": rate, "seconds": seconds,
            "baseline_p50_ms": baseline.percentile_ms(0.5), "baseline_p99_ms": p99(&baseline),
            "flood_p50_ms": flooded.percentile_ms(0.5), "flood_p99_ms": p99(&flooded),
            "mallory_accepted": sent, "mallory_rate_limited": limited}),
        format!(
            "flood: bob's p99 {} ms alone, {} ms while mallory floods ({sent} of her sends accepted, {limited} refused with 1501)",
            ms(p99(&baseline)),
            ms(p99(&flooded))
        ),
    );
    let mut table = Table::new(
        format!(
            "flood: bob's delivery latency from alice at {rate} msg/s, alone and while mallory floods (default per-user limits)"
        ),
        &["run", "p50 ms", "p99 ms", "p99 ÷ alone"],
    );
    for (run, l) in [("alone", &baseline), ("mallory floods", &flooded)] {
        table.row(vec![
            run.to_string(),
            ms(l.percentile_ms(0.5)),
            ms(p99(l)),
            ratio(p99(l), p99(&baseline)),
        ]);
    }
    report.finish(&[table], &[]);
    Ok(())
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    limited: AtomicU64,
}

/// alice sends bob `rate` msg/s for `seconds`; bob's latencies in microseconds.
async fn conversation(
    stack: &Stack,
    run: &str,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Vec<u64>> {
    let (alice, bob) = (format!("alice-{run}"), format!("bob-{run}"));
    let mut rx = stack.connect(&bob, 0).await;
    let mut tx = stack.connect(&alice, 0).await;
    let epoch = Instant::now();
    let expected = rate * seconds;
    let receiver = tokio::spawn(async move {
        let mut us = Vec::with_capacity(expected as usize);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 30);
        while (us.len() as u64) < expected {
            match tokio::time::timeout_at(deadline, rx.next_frame()).await {
                Ok(Ok(ServerFrame::Message(m))) => {
                    let sent: u128 = m.body.parse().unwrap_or(0);
                    us.push((epoch.elapsed().as_micros() - sent) as u64);
                }
                Ok(Ok(_)) => {}
                _ => break,
            }
        }
        us
    });
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for n in 0..expected {
        tick.tick().await;
        let body = epoch.elapsed().as_micros().to_string();
        tx.send(&bob, &format!("m{n}"), &body).await?;
        // alice's own answers are read as they come, so her socket never backs up.
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::ZERO, tx.next_frame()).await {}
    }
    let us = receiver.await?;
    anyhow::ensure!(
        us.len() as u64 == expected,
        "bob got {} of {expected} messages",
        us.len()
    );
    Ok(us)
}

/// mallory's connection `i`: 64 KiB sends and `read` frames as fast as the socket takes them.
async fn flood(mut conn: Connection, i: usize, stop: CancellationToken, counts: Arc<Counts>) {
    let body = "f".repeat(64 * 1024 - 16);
    let victim = format!("victim{i}");
    let conversation = ConversationId::direct(
        &UserId::new("mallory").expect("valid id"),
        &UserId::new(&victim).expect("valid id"),
    );
    let mut read_up_to = None;
    let mut n = 0u64;
    while !stop.is_cancelled() {
        if conn
            .send(&victim, &format!("f{i}-{n}"), &body)
            .await
            .is_err()
        {
            return;
        }
        n += 1;
        if let Some(id) = read_up_to
            && conn.read(&conversation, id).await.is_err()
        {
            return;
        }
        while let Ok(frame) = tokio::time::timeout(Duration::ZERO, conn.next_frame()).await {
            match frame {
                Ok(ServerFrame::Sent { id, .. }) => {
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    read_up_to = Some(id);
                }
                Ok(ServerFrame::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }) => {
                    counts.limited.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}
