//! What a persisted message costs, process by process: natter as separate processes (a
//! nats-server, `natter-chat`, `natter-history` with the embedded store, two gateways), with
//! `pairs` senders on one gateway each sending to their own receiver on the other, `rate`
//! messages a second in all, for `seconds`. For each process, its CPU time (user + system,
//! from /proc) per message answered `sent`, and the NATS messages its connections received
//! and sent per message (`natter_nats_messages_total`: publishes, requests and answers, acks,
//! pull requests and the messages they bring). The load generator is this process (the
//! clients only: every server is a process of its own). Receivers send no receipts, so this is
//! the cost of a message from `send` to the recipient's socket, stored in history.
//!
//! The CPU figures hold at a rate the machine sustains: past it, time goes to queues and
//! retries, not to messages. One second at the rate runs first, unmeasured.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::direct::natter_run;
use crate::process::{TICKS_PER_S, process_ticks};
use crate::processes::Processes;
use crate::report::{Report, Table};

#[derive(clap::Args)]
pub struct Options {
    /// Messages per second offered, all pairs together.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u64,
    /// Seconds measured (after one second unmeasured).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Sender and receiver pairs.
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// The nats-server's sync_interval (`always` for an fsync per write).
    #[arg(long, default_value = "2m")]
    pub sync: String,
}

/// One process's CPU ticks and NATS messages (in, out) so far.
struct Sample {
    name: String,
    ticks: u64,
    nats: Option<(u64, u64)>,
}

pub async fn run(options: &Options, out: &crate::report::Output) -> anyhow::Result<()> {
    let report = Report::new(out, 2)?;
    let natter = Processes::start(&options.sync, 2).await?;
    let epoch = Instant::now();
    report.step("warming up: one second at the rate");
    natter_run(&natter, epoch, options.rate, 1, options.pairs).await?;
    report.done();
    report.step(format!(
        "{} msg/s for {} s over {} pairs",
        options.rate, options.seconds, options.pairs
    ));
    let before = sample(&natter).await?;
    let run = natter_run(&natter, epoch, options.rate, options.seconds, options.pairs).await?;
    let after = sample(&natter).await?;
    report.done();
    anyhow::ensure!(run.sent > 0, "no message was answered sent");
    let messages = run.sent as f64;
    let per_message = |n: u64| n as f64 / messages;
    let cpu_us = |ticks: u64| ticks as f64 / TICKS_PER_S * 1e6 / messages;

    let mut table = Table::new(
        format!(
            "Cost of a persisted message at {} msg/s ({} answered sent, {} arrived, sync {})",
            options.rate, run.sent, run.received, options.sync
        ),
        &[
            "process",
            "CPU µs per message",
            "NATS messages in per message",
            "out per message",
        ],
    );
    let mut processes = Vec::new();
    let mut total_us = 0.0;
    for (b, a) in before.iter().zip(&after) {
        let us = cpu_us(a.ticks - b.ticks);
        total_us += us;
        let nats = a
            .nats
            .zip(b.nats)
            .map(|((ai, ao), (bi, bo))| (ai - bi, ao - bo));
        let cell =
            |n: Option<u64>| n.map_or("—".to_string(), |n| format!("{:.1}", per_message(n)));
        table.row(vec![
            a.name.clone(),
            format!("{us:.0}"),
            cell(nats.map(|n| n.0)),
            cell(nats.map(|n| n.1)),
        ]);
        processes.push(serde_json::json!({
            "name": a.name, "cpu_us_per_msg": us,
            "nats_in_per_msg": nats.map(|n| per_message(n.0)),
            "nats_out_per_msg": nats.map(|n| per_message(n.1)),
        }));
    }
    table.row(vec![
        "all".into(),
        format!("{total_us:.0}"),
        String::new(),
        String::new(),
    ]);
    report.measurement(
        serde_json::json!({"scenario": "cost", "rate": options.rate, "seconds": options.seconds,
            "pairs": options.pairs, "sync": options.sync, "sent": run.sent,
            "received": run.received, "cpu_us_per_msg": total_us, "processes": processes}),
        format!(
            "cost at {} msg/s: {total_us:.0} µs of CPU per message in all",
            options.rate
        ),
    );
    report.finish(&[table], &[]);
    Ok(())
}

/// Every process's CPU ticks and NATS messages now: natter's servers, the nats-server, and
/// this process (the load generator).
async fn sample(natter: &Processes) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for server in natter.servers() {
        samples.push(Sample {
            name: server.name.clone(),
            ticks: process_ticks(server.pid())?,
            nats: nats_messages(server.metrics).await,
        });
    }
    let nats_pid = natter
        .nats
        .server
        .pid()
        .ok_or_else(|| anyhow::anyhow!("nats-server is not running"))?;
    samples.push(Sample {
        name: "nats-server".into(),
        ticks: process_ticks(nats_pid)?,
        nats: None,
    });
    samples.push(Sample {
        name: "load generator".into(),
        ticks: process_ticks(std::process::id())?,
        nats: None,
    });
    Ok(samples)
}

/// `natter_nats_messages_total` at `/metrics` of `addr`: (in, out), every role together;
/// `None` if `/metrics` did not answer.
async fn nats_messages(addr: SocketAddr) -> Option<(u64, u64)> {
    let text = tokio::time::timeout(Duration::from_secs(5), testkit::http_get(addr, "/metrics"))
        .await
        .ok()?;
    let mut by_direction: BTreeMap<&str, u64> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("natter_nats_messages_total{") else {
            continue;
        };
        let direction = if rest.contains("direction=\"in\"") {
            "in"
        } else {
            "out"
        };
        let n: u64 = rest
            .rsplit_once(' ')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0);
        *by_direction.entry(direction).or_default() += n;
    }
    Some((
        by_direction.get("in").copied().unwrap_or(0),
        by_direction.get("out").copied().unwrap_or(0),
    ))
}
