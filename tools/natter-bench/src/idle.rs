//! Idle memory: a `natter-gateway` process is started on its own, connections are opened from
//! this process, and the gateway's RSS growth is divided by the number of connections.

use std::process::{Command, Stdio};
use std::time::Duration;

use protocol::Encoding;
use protocol::frames::ServerFrame;
use testkit::TestNats;
use testkit::client::Connection;

use crate::process::{free_port, rss_kib, wait_listening};

pub async fn run(counts: &[usize], json: bool) -> anyhow::Result<()> {
    let nats = TestNats::start();
    let port = free_port()?;
    let gateway_bin = std::env::current_exe()?.with_file_name("natter-gateway");
    anyhow::ensure!(
        gateway_bin.exists(),
        "{} not found: build it with cargo build --release -p gateway",
        gateway_bin.display()
    );
    let mut gateway = Command::new(&gateway_bin)
        .env("NATTER_BUS__NATS_URL", nats.url())
        .env("NATTER_GATEWAY__JWT_SECRET", testkit::SECRET)
        .env("NATTER_GATEWAY__GATEWAY_ID", "bench-idle")
        .env("NATTER_GATEWAY__LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("NATTER_GATEWAY__HEARTBEAT_TIMEOUT_MS", "3600000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = gateway.id();
    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    let token = testkit::client::protocol::UserId::new("idle")?; // one user, many devices
    let token = gateway::mint_token(testkit::SECRET, token.as_str(), 3600);

    // Warm up: the first connections allocate the runtime's and allocator's fixed structures.
    let mut conns = Vec::new();
    wait_listening(port).await?;
    open(&url, &token, 200, &mut conns).await?;
    let base = rss_kib(pid)?;
    let base_count = conns.len();
    for &target in counts {
        open(&url, &token, target + base_count - conns.len(), &mut conns).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = rss_kib(pid)?;
        let n = conns.len() - base_count;
        let per_conn = (rss.saturating_sub(base)) as f64 / n as f64;
        if json {
            println!(
                "{}",
                serde_json::json!({"scenario": "idle", "connections": n, "rss_per_conn_kib": per_conn,
                    "rss_kib": rss, "baseline_rss_kib": base})
            );
        } else {
            println!(
                "idle: {n} connections, gateway RSS {rss} KiB (baseline {base} KiB), {per_conn:.2} KiB per connection"
            );
        }
    }
    drop(conns);
    let _ = gateway.kill();
    let _ = gateway.wait();
    Ok(())
}

async fn open(url: &str, token: &str, n: usize, conns: &mut Vec<Connection>) -> anyhow::Result<()> {
    // Open in waves so the accept backlog never overflows.
    let mut left = n;
    while left > 0 {
        let wave = left.min(500);
        let mut tasks = Vec::with_capacity(wave);
        for _ in 0..wave {
            let (url, token) = (url.to_string(), token.to_string());
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
