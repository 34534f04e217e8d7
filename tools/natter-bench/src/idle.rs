//! Idle memory: a `natter-gateway` process is started on its own, connections are opened from
//! this process, and the gateway's RSS growth is divided by the number of connections.

use std::process::{Command, Stdio};
use std::time::Duration;

use protocol::Encoding;
use protocol::frames::ServerFrame;
use testkit::TestNats;
use testkit::client::Connection;

use crate::peers::Peer;
use crate::process::{free_port, rss_kib, wait_listening};
use crate::report::{Report, Table, ratio};

pub async fn run(
    counts: &[usize],
    peer_names: &[String],
    out: &crate::report::Output,
) -> anyhow::Result<()> {
    let report = Report::new(out, (1 + peer_names.len()) as u64)?;
    report.step(format!(
        "natter: {} connections",
        counts.last().unwrap_or(&0)
    ));
    let mut results = vec![("natter", natter(counts).await?)];
    report.done();
    // One peer at a time, so that each has the file descriptors to itself.
    for name in peer_names {
        report.step(format!(
            "{name}: {} connections",
            counts.last().unwrap_or(&0)
        ));
        let peer = Peer::start(name).await?;
        results.push((peer.name(), peer.idle(counts).await?));
        drop(peer);
        report.done();
    }
    let mut table = Table::new(
        "idle authenticated connections: server RSS growth per connection",
        &[
            "connections",
            "system",
            "KiB per connection",
            "natter ÷ system",
        ],
    );
    for (system, figures) in &results {
        for &(n, per_conn) in figures {
            report.measurement(
                serde_json::json!({"scenario": "idle", "system": system, "connections": n,
                    "rss_per_conn_kib": per_conn}),
                format!("idle {system:<10} {n:>6} connections: {per_conn:.2} KiB per connection"),
            );
            let natter = results[0]
                .1
                .iter()
                .find(|(m, _)| *m == n)
                .map_or(f64::NAN, |(_, v)| *v);
            table.row(vec![
                n.to_string(),
                system.to_string(),
                format!("{per_conn:.2}"),
                ratio(natter, per_conn),
            ]);
        }
    }
    report.finish(&[table], &[]);
    Ok(())
}

/// natter's figures: (connections, KiB per connection).
async fn natter(counts: &[usize]) -> anyhow::Result<Vec<(usize, f64)>> {
    let nats = TestNats::start();
    let port = free_port()?;
    let gateway_bin = std::env::current_exe()?.with_file_name("natter-gateway");
    anyhow::ensure!(
        gateway_bin.exists(),
        "{} not found: build it with cargo build --release -p gateway",
        gateway_bin.display()
    );
    let mut gateway = Command::new(&gateway_bin)
        .envs(nats.bus(plumbing::nats_auth::Role::Gateway).env())
        .env("NATTER_GATEWAY__JWT_SECRET", testkit::SECRET)
        .env("NATTER_GATEWAY__GATEWAY_ID", "bench-idle")
        .env("NATTER_GATEWAY__LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("NATTER_GATEWAY__HEARTBEAT_TIMEOUT_MS", "3600000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = gateway.id();
    let url = format!("ws://127.0.0.1:{port}/v1/ws");

    // Warm up: the first connections allocate the runtime's and allocator's fixed structures.
    let mut conns = Vec::new();
    wait_listening(port).await?;
    open(&url, 200, &mut conns).await?;
    let base = rss_kib(pid)?;
    let base_count = conns.len();
    let mut figures = Vec::new();
    for &target in counts {
        open(&url, target + base_count - conns.len(), &mut conns).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = rss_kib(pid)?;
        let n = conns.len() - base_count;
        let per_conn = (rss.saturating_sub(base)) as f64 / n as f64;
        figures.push((n, per_conn));
    }
    drop(conns);
    let _ = gateway.kill();
    let _ = gateway.wait();
    Ok(figures)
}

/// Opens `n` more connections, each a distinct user as the peers' are.
async fn open(url: &str, n: usize, conns: &mut Vec<Connection>) -> anyhow::Result<()> {
    // Open in waves so the accept backlog never overflows.
    let mut left = n;
    while left > 0 {
        let wave = left.min(500);
        let mut tasks = Vec::with_capacity(wave);
        for _ in 0..wave {
            let user = format!("idle{}", conns.len() + tasks.len());
            let token = gateway::mint_token(testkit::SECRET, &user, 3600);
            let url = url.to_string();
            tasks.push(tokio::spawn(async move {
                let mut c = Connection::connect(&url, &token, Encoding::Json).await?;
                match c.next_frame().await? {
                    ServerFrame::Welcome { .. } => Ok::<_, anyhow::Error>(c),
                    other => anyhow::bail!("expected welcome, got {other:?}"),
                }
            }));
        }
        for t in tasks {
            conns.push(t.await??);
        }
        left -= wave;
    }
    Ok(())
}
