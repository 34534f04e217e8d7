//! A reconnect storm too large for one process: `clients` devices, each with `per_client`
//! messages waiting, reconnect at once to `gateways` gateways. natter runs as separate
//! processes ([`Processes`]), and the devices in client processes of their own
//! (`natter-bench storm-clients`, 5,000 each, each from its own loopback source address):
//! one process here may hold 20,000 descriptors, and a storm of 20,000 needs that many
//! sockets on each side.
//!
//! Figures per round: time until every device has its `synced` (from the moment every client
//! process was told to go), that time per 1,000 devices (flat if the storm scales), the
//! per-device p50/p99, and the replays the gateways served from shared reads and their
//! JetStream API requests. Rounds of increasing size run in one invocation, each on a fresh
//! deployment.

use std::process::Stdio;
use std::time::{Duration, Instant};

use protocol::frames::ServerFrame;
use protocol::{Cursor, Encoding, UserId};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::processes::Processes;
use crate::report::{Report, Table, ratio};

/// Devices per client process.
const PER_PROCESS: usize = 5_000;
/// How long a storm may take before the round fails.
const PATIENCE: Duration = Duration::from_secs(300);

pub async fn run(
    rounds: &[usize],
    gateways: usize,
    per_client: usize,
    out: &crate::report::Output,
) -> anyhow::Result<()> {
    let report = Report::new(out, rounds.len() as u64)?;
    let mut rows = Vec::new();
    for &clients in rounds {
        report.step(format!(
            "storm of {clients} devices over {gateways} gateway processes"
        ));
        let figures = storm(clients, gateways, per_client).await?;
        let per_thousand = figures.all.as_secs_f64() * 1000.0 / clients as f64;
        report.measurement(
            serde_json::json!({"scenario": "storm_wide", "system": "natter", "clients": clients,
                "gateways": gateways, "backlog_per_client": per_client,
                "all_resynced_s": figures.all.as_secs_f64(), "s_per_1000_clients": per_thousand,
                "p50_ms": figures.p50_ms, "p99_ms": figures.p99_ms,
                "replays_shared": figures.shared, "jetstream_api_requests": figures.api,
                "failed_attempts": figures.failed_attempts}),
            format!(
                "storm of {clients} devices with {per_client} messages each over {gateways} \
                 gateway processes: all resynced in {:.2?} ({per_thousand:.3} s per 1,000; per \
                 device p50 {:.0} ms, p99 {:.0} ms; {} replays from shared reads, {} JetStream \
                 API requests; {} connection attempts dropped and tried again)",
                figures.all,
                figures.p50_ms,
                figures.p99_ms,
                figures.shared,
                figures.api,
                figures.failed_attempts
            ),
        );
        rows.push((clients, figures.all.as_secs_f64(), per_thousand));
        report.done();
    }
    let mut table = Table::new(
        format!("Reconnect storm over {gateways} gateway processes, {per_client} messages each"),
        &[
            "devices",
            "all resynced (s)",
            "s per 1,000 devices",
            "÷ smallest storm (per device)",
        ],
    );
    let base = rows.first().map_or(1.0, |r| r.2);
    for (clients, all, per_thousand) in &rows {
        table.row(vec![
            clients.to_string(),
            format!("{all:.2}"),
            format!("{per_thousand:.3}"),
            ratio(*per_thousand, base),
        ]);
    }
    report.finish(&[table], &[]);
    Ok(())
}

struct Figures {
    all: Duration,
    p50_ms: f64,
    p99_ms: f64,
    shared: i64,
    api: i64,
    failed_attempts: u64,
}

async fn storm(clients: usize, gateways: usize, per_client: usize) -> anyhow::Result<Figures> {
    let natter = Processes::start("2m", gateways).await?;
    let bus = natter.nats.bus(plumbing::nats_auth::Role::Operator);
    let urls: Vec<String> = (0..gateways).map(|gw| natter.ws_url(gw)).collect();

    // Where every device was, then what each missed.
    let token = gateway::mint_token(testkit::SECRET, "storm-probe", 3600);
    let mut probe = client::Connection::resume(&urls[0], &token, Encoding::Json, None).await?;
    let cursor = loop {
        if let ServerFrame::Synced { cursor, .. } = probe.next_frame().await? {
            break cursor;
        }
    };
    drop(probe);
    let source = UserId::new("storm-source")?;
    let users = (0..clients)
        .map(|i| UserId::new(device(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let messages =
        (0..per_client).flat_map(|_| users.iter().map(|user| (source.clone(), user.clone())));
    let js = async_nats::jetstream::new(natter.nats.client().await);
    crate::backlog::write_to(&js, bus.partitions, messages).await?;
    crate::resync::settle_streams(&js, bus.partitions).await?;

    let counted = async || {
        let (mut shared, mut api) = (0, 0);
        for gw in 0..gateways {
            shared += natter
                .metric(gw, "natter_gateway_replays_shared_total")
                .await;
            api += natter
                .metric(gw, "natter_gateway_jetstream_api_requests_total")
                .await;
        }
        (shared, api)
    };
    let before = counted().await;
    // Source addresses of a block of 127.0.0.0/8 picked at random: a 4-tuple still in
    // TIME_WAIT from an earlier round or run (the same gateway port drawn again) would have
    // its new SYN answered with a reset.
    let block: [u8; 2] = [rand::random_range(1..=254), rand::random_range(0..=255)];
    let mut children = Vec::new();
    for (p, first) in (0..clients).step_by(PER_PROCESS).enumerate() {
        let count = PER_PROCESS.min(clients - first);
        let source = std::net::Ipv4Addr::new(127, block[0], block[1], 2 + p as u8);
        children.push(spawn_clients(
            &urls, first, count, &cursor, per_client, source,
        )?);
    }
    // Every process has made its tokens; then all go at once.
    let mut lines = Vec::new();
    for child in &mut children {
        let stdout = child.stdout.take().expect("piped");
        let mut reader = BufReader::new(stdout).lines();
        let ready = reader.next_line().await?;
        anyhow::ensure!(ready.as_deref() == Some("ready"), "a client process failed");
        lines.push(reader);
    }
    for child in &mut children {
        let stdin = child.stdin.as_mut().expect("piped");
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
    }
    let mut times_us = Vec::with_capacity(clients);
    let mut slowest = Duration::ZERO;
    let mut failed_attempts = 0;
    for reader in &mut lines {
        let line = tokio::time::timeout(PATIENCE, reader.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("the storm took over {PATIENCE:?}"))??
            .ok_or_else(|| anyhow::anyhow!("a client process ended without figures"))?;
        let result: ClientsResult = serde_json::from_str(&line)?;
        anyhow::ensure!(result.error.is_none(), "clients: {:?}", result.error);
        slowest = slowest.max(Duration::from_micros(result.all_us));
        failed_attempts += result.failed_attempts;
        times_us.extend(result.times_us);
    }
    for mut child in children {
        child.wait().await?;
    }
    let after = counted().await;
    times_us.sort_unstable();
    let p = crate::percentile_ms;
    // Measured from "go" in each client process; the processes were told within
    // microseconds of each other, so the slowest is the storm's length.
    Ok(Figures {
        all: slowest,
        p50_ms: p(&times_us, 0.5),
        p99_ms: p(&times_us, 0.99),
        shared: after.0 - before.0,
        api: after.1 - before.1,
        failed_attempts,
    })
}

fn device(i: usize) -> String {
    format!("wide{i}")
}

/// Starts a client process for devices `first..first + count`, from `source`.
fn spawn_clients(
    urls: &[String],
    first: usize,
    count: usize,
    cursor: &Cursor,
    per_client: usize,
    source: std::net::Ipv4Addr,
) -> anyhow::Result<Child> {
    let child = Command::new(std::env::current_exe()?)
        .args(["--peers", "none", "storm-clients"])
        .args(["--urls", &urls.join(",")])
        .args(["--first", &first.to_string()])
        .args(["--count", &count.to_string()])
        .args(["--cursor", &cursor.to_string()])
        .args(["--per-client", &per_client.to_string()])
        .args(["--source", &source.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    Ok(child)
}

/// What a client process reports: each device's time to `synced` and the slowest, from
/// "go", and the connection attempts dropped before their handshake ended (each tried again
/// after a pause, as a client does); or why it failed.
#[derive(serde::Serialize, serde::Deserialize)]
struct ClientsResult {
    times_us: Vec<u64>,
    all_us: u64,
    failed_attempts: u64,
    error: Option<String>,
}

/// The client process (`natter-bench storm-clients`): devices `first..first + count`, device
/// `i` on gateway `i % urls.len()`, resume from `cursor` once a line arrives on stdin, each
/// expecting `per_client` messages and `synced` with `recovered: true`. Prints `ready`, then
/// one JSON line of [`ClientsResult`].
pub async fn clients(
    urls: &[String],
    first: usize,
    count: usize,
    cursor: Cursor,
    per_client: usize,
    source: std::net::IpAddr,
) -> anyhow::Result<()> {
    let tokens: Vec<String> = (first..first + count)
        .map(|i| gateway::mint_token(testkit::SECRET, &device(i), 3600))
        .collect();
    println!("ready");
    let mut go = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut go)
        .await?;
    let started = Instant::now();
    let resyncs = tokens.iter().enumerate().map(|(j, token)| {
        let url = &urls[(first + j) % urls.len()];
        let cursor = cursor.clone();
        async move {
            let mut backoff =
                protocol::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
            let mut failed = 0;
            let mut conn = loop {
                let opened = client::Connection::resume_from(
                    url,
                    token,
                    Encoding::Json,
                    Some(cursor.clone()),
                    Some(source),
                )
                .await;
                match opened {
                    Ok(conn) => break conn,
                    // As a client does: the gateway says when to come back.
                    Err(client::ConnectError::Busy(retry_after)) => {
                        tokio::time::sleep(retry_after).await
                    }
                    Err(client::ConnectError::Refused(status)) => {
                        anyhow::bail!("device {}: refused with {status}", first + j)
                    }
                    // Dropped before the handshake ended: tried again after a pause.
                    Err(e) => {
                        if failed == 0 {
                            eprintln!("device {}: {e}; trying again", first + j);
                        }
                        failed += 1;
                        tokio::time::sleep(backoff.next_delay(&mut rand::rng())).await;
                    }
                }
            };
            let mut replayed = 0;
            loop {
                match conn.next_frame().await? {
                    ServerFrame::Message(_) => replayed += 1,
                    ServerFrame::Synced { recovered, .. } => {
                        anyhow::ensure!(
                            recovered && replayed == per_client,
                            "device {}: {replayed} replayed, recovered: {recovered}",
                            first + j
                        );
                        return Ok((started.elapsed(), failed, conn));
                    }
                    _ => {}
                }
            }
        }
    });
    let done = futures::future::join_all(resyncs).await;
    let all = started.elapsed();
    let mut result = ClientsResult {
        times_us: Vec::with_capacity(count),
        all_us: all.as_micros() as u64,
        failed_attempts: 0,
        error: None,
    };
    let mut open = Vec::with_capacity(count);
    for d in done {
        match d {
            Ok((t, failed, conn)) => {
                result.times_us.push(t.as_micros() as u64);
                result.failed_attempts += failed;
                open.push(conn);
            }
            Err(e) => {
                result.error.get_or_insert(e.to_string());
            }
        }
    }
    println!("{}", serde_json::to_string(&result)?);
    drop(open);
    Ok(())
}
