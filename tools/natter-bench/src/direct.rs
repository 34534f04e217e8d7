//! Persisted 1:1 delivery: `pairs` senders on gateway 0 send to `pairs` receivers on gateway 1
//! at a fixed offered rate; latency is from just before the send to the arrival at the
//! receiver, through the gateway, the chat service, a JetStream ack, the router and the other
//! gateway. The ceiling is a raw core-NATS relay at the same rate, in the same invocation: a
//! NATS publish straight to the receiving gateway's deliver subject, then that gateway and the
//! WebSocket to the client (no sending gateway, no chat service, no JetStream).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use protocol::frames::ServerFrame;
use testkit::Stack;
use tokio::sync::Mutex;

struct Figures {
    sent: u64,
    received: u64,
    latencies_us: Vec<u64>,
}

pub async fn run(
    rates: &[u64],
    seconds: u64,
    pairs: usize,
    sync: &str,
    json: bool,
) -> anyhow::Result<()> {
    let stack = Stack::new()
        .sync_interval(sync)
        .gateways(2)
        .gateway_config(|g| g.heartbeat_timeout_ms = 600_000)
        .start()
        .await;
    let epoch = Instant::now();
    for &rate in rates {
        let natter = natter_run(&stack, epoch, rate, seconds, pairs).await?;
        let relay = relay_run(&stack, epoch, rate, seconds, pairs).await?;
        report(rate, sync, &natter, &relay, seconds, json);
    }
    Ok(())
}

fn report(rate: u64, sync: &str, n: &Figures, r: &Figures, seconds: u64, json: bool) {
    let mut a = n.latencies_us.clone();
    a.sort_unstable();
    let mut b = r.latencies_us.clone();
    b.sort_unstable();
    let p = crate::percentile_ms;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "scenario": "direct", "sync_interval": sync, "rate": rate,
                "sent": n.sent, "received": n.received, "lost": n.sent.saturating_sub(n.received),
                "throughput": n.received as f64 / seconds as f64,
                "p50_ms": p(&a, 0.5), "p99_ms": p(&a, 0.99), "p999_ms": p(&a, 0.999),
                "relay_sent": r.sent, "relay_received": r.received,
                "relay_p50_ms": p(&b, 0.5), "relay_p99_ms": p(&b, 0.99), "relay_p999_ms": p(&b, 0.999),
            })
        );
    } else {
        println!(
            "direct {rate:>6}/s sync={sync}: sent {} received {} lost {} | p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms | relay p50 {:.2} p99 {:.2} p99.9 {:.2} ms",
            n.sent,
            n.received,
            n.sent.saturating_sub(n.received),
            p(&a, 0.5),
            p(&a, 0.99),
            p(&a, 0.999),
            p(&b, 0.5),
            p(&b, 0.99),
            p(&b, 0.999)
        );
    }
}

async fn natter_run(
    stack: &Stack,
    epoch: Instant,
    rate: u64,
    seconds: u64,
    pairs: usize,
) -> anyhow::Result<Figures> {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let per_pair = rate as f64 / pairs as f64;
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for i in 0..pairs {
        let to = format!("r{rate}-{i}");
        let rx = stack.connect(&to, 1).await;
        let mut tx = stack.connect(&format!("s{rate}-{i}"), 0).await;
        let expected = (per_pair * seconds as f64).round() as u64;
        receivers.push(tokio::spawn(receive(
            rx,
            epoch,
            expected,
            seconds,
            latencies.clone(),
            received.clone(),
        )));
        let sent = sent.clone();
        senders.push(tokio::spawn(async move {
            let interval = Duration::from_secs_f64(1.0 / per_pair);
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
            let mut n = 0u64;
            let mut answered = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick(), if n < expected => {
                        let body = epoch.elapsed().as_micros().to_string();
                        if tx.send(&to, &format!("m{n}"), &body).await.is_err() { break; }
                        n += 1;
                    }
                    frame = tx.next_frame() => match frame {
                        Ok(ServerFrame::Sent { .. }) => {
                            answered += 1;
                            sent.fetch_add(1, Ordering::Relaxed);
                            if n >= expected && answered >= n { break; }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    },
                    _ = tokio::time::sleep_until(end + Duration::from_secs(5)) => break,
                }
            }
        }));
    }
    for s in senders {
        s.await?;
    }
    for r in receivers {
        r.await?;
    }
    let latencies_us = std::mem::take(&mut *latencies.lock().await);
    Ok(Figures {
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
        latencies_us,
    })
}

async fn relay_run(
    stack: &Stack,
    epoch: Instant,
    rate: u64,
    seconds: u64,
    pairs: usize,
) -> anyhow::Result<Figures> {
    // Core NATS straight to the receiving gateway's deliver subject: the receiving half of
    // natter's path (gateway inbox, outbox, WebSocket) without JetStream or the chat service.
    let publisher = stack.nats.client().await;
    let gateway = protocol::GatewayId::new(&stack.gateways[1].id)?;
    let subject = protocol::subjects::gateway_deliver(&gateway);
    let per_pair = rate as f64 / pairs as f64;
    let expected = (per_pair * seconds as f64).round() as u64;
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut receivers = Vec::new();
    let mut targets = Vec::new();
    for i in 0..pairs {
        let (rx, conn) = stack
            .connect_welcomed(&format!("relay{rate}-{i}"), 1, protocol::Encoding::Json)
            .await;
        targets.push(conn);
        receivers.push(tokio::spawn(receive(
            rx,
            epoch,
            expected,
            seconds,
            latencies.clone(),
            Arc::new(AtomicU64::new(0)),
        )));
    }
    let template = protocol::frames::Message {
        id: protocol::MessageId(ulid::Ulid::new()),
        conversation: "dm:relay:relay2".parse()?,
        from: protocol::UserId::new("relay")?,
        to: protocol::UserId::new("relay2")?,
        cid: protocol::ClientMsgId::new("relay")?,
        body: String::new(),
        ts: 0,
        cursor: None,
        event: None,
    };
    let total = expected * pairs as u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for n in 0..total {
        tick.tick().await;
        let mut message = template.clone();
        message.body = epoch.elapsed().as_micros().to_string();
        let delivery = protocol::payloads::Delivery {
            targets: vec![targets[n as usize % pairs]],
            frame: ServerFrame::Message(message),
            order: None,
        };
        publisher
            .publish(subject.clone(), serde_json::to_vec(&delivery)?.into())
            .await?;
    }
    publisher.flush().await?;
    for r in receivers {
        r.await?;
    }
    let latencies_us = std::mem::take(&mut *latencies.lock().await);
    Ok(Figures {
        sent: total,
        received: latencies_us.len() as u64,
        latencies_us,
    })
}

/// Reads `expected` messages (or until the deadline), recording each one's latency from the
/// send time carried in its body.
async fn receive(
    mut rx: client::Connection,
    epoch: Instant,
    expected: u64,
    seconds: u64,
    latencies: Arc<Mutex<Vec<u64>>>,
    received: Arc<AtomicU64>,
) {
    let mut mine = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 5);
    while (mine.len() as u64) < expected {
        let Ok(Ok(frame)) = tokio::time::timeout_at(deadline, rx.next_frame()).await else {
            break;
        };
        if let ServerFrame::Message(m) = frame {
            let sent_us: u64 = m.body.parse().unwrap_or(0);
            mine.push((epoch.elapsed().as_micros() as u64).saturating_sub(sent_us));
            received.fetch_add(1, Ordering::Relaxed);
        }
    }
    latencies.lock().await.extend(mine);
}
