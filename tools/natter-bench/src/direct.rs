//! Persisted 1:1 delivery: `pairs` senders on gateway 0 send to `pairs` receivers on gateway 1
//! at a fixed offered rate; latency is from just before the send to the arrival at the
//! receiver, through the gateway, the chat service, a JetStream ack, the router and the other
//! gateway. The ceiling is a raw core-NATS relay at the same rate, in the same invocation: a
//! NATS publish straight to the receiving gateway's deliver subject, then that gateway and the
//! WebSocket to the client (no sending gateway, no chat service, no JetStream). The peers get
//! the same pairs, rates and durations.
//!
//! Each system climbs the rates until one is not **sustained**: a rate is sustained when the
//! server accepted at least 99% of the offered messages, every accepted message arrived, and
//! p99 stayed within the latency objective (`--slo-ms`). Between the last sustained rate and
//! the first that was not, two bisection steps narrow the highest sustained rate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use protocol::frames::ServerFrame;
use testkit::Stack;
use tokio::sync::Mutex;

use crate::peers::{Peer, Run};
use crate::plot::{self, RateCurve};
use crate::processes::Processes;
use crate::report::{Report, Table, ms, ratio};

pub struct Options {
    pub rates: Vec<u64>,
    pub seconds: u64,
    pub pairs: usize,
    pub sync: String,
    pub slo_ms: f64,
    pub search: bool,
    /// `bus.partitions` of natter's stack.
    pub partitions: u32,
}

/// One system at one offered rate.
struct Outcome {
    rate: u64,
    offered: u64,
    run: Run,
    /// `run.latencies_us`, sorted.
    sorted_us: Vec<u64>,
    sustained: bool,
}

impl Outcome {
    fn new(rate: u64, offered: u64, mut run: Run, slo_ms: f64) -> Self {
        let mut sorted_us = std::mem::take(&mut run.latencies_us);
        sorted_us.sort_unstable();
        let p99 = crate::percentile_ms(&sorted_us, 0.99);
        let sustained =
            run.sent as f64 >= 0.99 * offered as f64 && run.received >= run.sent && p99 <= slo_ms;
        Self {
            rate,
            offered,
            run,
            sorted_us,
            sustained,
        }
    }

    fn p(&self, q: f64) -> f64 {
        crate::percentile_ms(&self.sorted_us, q)
    }
}

pub async fn run(
    o: &Options,
    peer_names: &[String],
    out: &crate::report::Output,
) -> anyhow::Result<()> {
    let stack = Stack::new()
        .sync_interval(&o.sync)
        .bus_config(|b| b.partitions = o.partitions)
        .gateways(2)
        .gateway_config(|g| g.heartbeat_timeout_ms = 600_000)
        .start()
        .await;
    let peers = Peer::start_all(peer_names).await?;
    let mut systems = vec!["natter", "relay"];
    systems.extend(peers.iter().map(Peer::name));
    let report = Report::new(out, (systems.len() * o.rates.len()) as u64)?;
    let epoch = Instant::now();
    let offered = |rate: u64| {
        let per_pair = (rate as f64 / o.pairs as f64 * o.seconds as f64).round() as u64;
        per_pair * o.pairs as u64
    };
    let measure = async |system: &str, rate: u64| -> anyhow::Result<Outcome> {
        report.step(format!("{system} at {rate} msg/s"));
        let run = match system {
            "natter" => natter_run(&stack, epoch, rate, o.seconds, o.pairs).await?,
            "relay" => relay_run(&stack, epoch, rate, o.seconds, o.pairs).await?,
            name => {
                let peer = peers.iter().find(|p| p.name() == name).expect("started");
                peer.direct(epoch, rate, o.seconds, o.pairs).await?
            }
        };
        let outcome = Outcome::new(rate, offered(rate), run, o.slo_ms);
        report.measurement(
            serde_json::json!({
                "scenario": "direct", "system": system, "sync_interval": o.sync, "rate": rate,
                "offered": outcome.offered, "sent": outcome.run.sent,
                "received": outcome.run.received,
                "lost": outcome.run.sent.saturating_sub(outcome.run.received),
                "throughput": outcome.run.received as f64 / o.seconds as f64,
                "p50_ms": outcome.p(0.5), "p99_ms": outcome.p(0.99), "p999_ms": outcome.p(0.999),
                "sustained": outcome.sustained,
            }),
            format!(
                "direct {system:<10} {rate:>6}/s: sent {} received {} lost {} | p50 {} p99 {} p99.9 {} ms | {}",
                outcome.run.sent,
                outcome.run.received,
                outcome.run.sent.saturating_sub(outcome.run.received),
                ms(outcome.p(0.5)),
                ms(outcome.p(0.99)),
                ms(outcome.p(0.999)),
                if outcome.sustained { "sustained" } else { "not sustained" }
            ),
        );
        report.done();
        Ok(outcome)
    };

    // Warm-up, not recorded: first connections, stream files, JIT (ejabberd) and caches.
    for &system in &systems {
        report.step(format!("{system}: warming up"));
        let rate = o.rates[0].min(500);
        match system {
            "natter" => drop(natter_run(&stack, epoch, rate, 1, o.pairs).await?),
            "relay" => drop(relay_run(&stack, epoch, rate, 1, o.pairs).await?),
            name => {
                let peer = peers.iter().find(|p| p.name() == name).expect("started");
                drop(peer.direct(epoch, rate, 1, o.pairs).await?);
            }
        }
    }
    let mut results: BTreeMap<&str, Vec<Outcome>> = BTreeMap::new();
    for &rate in &o.rates {
        for &system in &systems {
            let given_up = results
                .get(system)
                .is_some_and(|r| r.iter().any(|x| !x.sustained));
            if given_up {
                report.done();
                continue;
            }
            let outcome = measure(system, rate).await?;
            results.entry(system).or_default().push(outcome);
        }
    }
    if o.search {
        for &system in &systems {
            for _ in 0..2 {
                let outcomes = &results[system];
                let best = outcomes
                    .iter()
                    .filter(|x| x.sustained)
                    .map(|x| x.rate)
                    .max();
                let Some(worst) = outcomes
                    .iter()
                    .filter(|x| !x.sustained)
                    .map(|x| x.rate)
                    .min()
                else {
                    break;
                };
                let low = best.unwrap_or(0);
                let mid = (low + worst) / 2 / 100 * 100;
                if mid <= low || mid >= worst {
                    break;
                }
                report.more_steps(1);
                let outcome = measure(system, mid).await?;
                results.entry(system).or_default().push(outcome);
            }
        }
    }
    for outcomes in results.values_mut() {
        outcomes.sort_by_key(|x| x.rate);
    }

    let (tables, plot_files) = summarise(o, &systems, &results, &report)?;
    report.finish(&tables, &plot_files);
    drop(peers);
    Ok(())
}

fn summarise(
    o: &Options,
    systems: &[&str],
    results: &BTreeMap<&str, Vec<Outcome>>,
    report: &Report,
) -> anyhow::Result<(Vec<Table>, Vec<PathBuf>)> {
    let mut by_rate = Table::new(
        format!(
            "1:1 persisted, {} pairs, {} s per rate, nats-server sync {}",
            o.pairs, o.seconds, o.sync
        ),
        &[
            "system",
            "offered/s",
            "sent",
            "received",
            "lost",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "sustained",
        ],
    );
    for &system in systems {
        for x in &results[system] {
            by_rate.row(vec![
                system.into(),
                x.rate.to_string(),
                x.run.sent.to_string(),
                x.run.received.to_string(),
                x.run.sent.saturating_sub(x.run.received).to_string(),
                ms(x.p(0.5)),
                ms(x.p(0.99)),
                ms(x.p(0.999)),
                if x.sustained { "yes" } else { "no" }.into(),
            ]);
        }
    }
    let best = |system: &str| {
        results[system]
            .iter()
            .filter(|x| x.sustained)
            .max_by_key(|x| x.rate)
    };
    let natter_best = best("natter");
    let mut sustained = Table::new(
        format!(
            "highest sustained 1:1 rate (p99 ≤ {} ms, nothing lost); natter ÷ system",
            o.slo_ms
        ),
        &[
            "system",
            "sustained msg/s",
            "p99 ms there",
            "natter ÷ system (rate)",
        ],
    );
    for &system in systems {
        let b = best(system);
        let rate = b.map_or(0.0, |x| x.rate as f64);
        sustained.row(vec![
            system.into(),
            b.map_or("none".into(), |x| x.rate.to_string()),
            b.map_or("–".into(), |x| ms(x.p(0.99))),
            ratio(natter_best.map_or(f64::NAN, |x| x.rate as f64), rate),
        ]);
    }

    let mut files = Vec::new();
    let curves: Vec<RateCurve<'_>> = systems
        .iter()
        .map(|&system| RateCurve {
            system,
            points: results[system]
                .iter()
                .map(|x| (x.rate as f64, x.p(0.5), x.p(0.99)))
                .collect(),
        })
        .collect();
    let path = report.plot("direct-latency-vs-rate.svg");
    plot::versus_rate(
        &path,
        "1:1 persisted: latency against offered rate",
        "offered rate (messages/s, log scale)",
        &curves,
    )?;
    files.push(path);
    // The CDF at the highest listed rate every system ran.
    if let Some(rate) = o
        .rates
        .iter()
        .copied()
        .filter(|r| {
            systems
                .iter()
                .all(|s| results[s].iter().any(|x| x.rate == *r))
        })
        .max()
    {
        let series: Vec<(&str, &[u64])> = systems
            .iter()
            .filter_map(|&s| {
                results[s]
                    .iter()
                    .find(|x| x.rate == rate)
                    .map(|x| (s, x.sorted_us.as_slice()))
            })
            .collect();
        let path = report.plot(&format!("direct-cdf-{rate}.svg"));
        plot::cdf(
            &path,
            &format!("1:1 persisted: latency CDF at {rate} msg/s"),
            &series,
        )?;
        files.push(path);
    }
    Ok((vec![by_rate, sustained], files))
}

/// Numbers runs, to give each its own users.
static RUNS: AtomicU64 = AtomicU64::new(0);

/// Where a run's users connect (senders to gateway 0, receivers to gateway 1): natter in
/// process ([`Stack`]) or as processes ([`Processes`]).
pub(crate) trait Gateways {
    async fn connect(&self, user: &str, gw: usize) -> anyhow::Result<client::Connection>;
}

impl Gateways for Stack {
    async fn connect(&self, user: &str, gw: usize) -> anyhow::Result<client::Connection> {
        Ok(Stack::connect(self, user, gw).await)
    }
}

impl Gateways for Processes {
    async fn connect(&self, user: &str, gw: usize) -> anyhow::Result<client::Connection> {
        Ok(self.connect_welcomed(user, gw).await?.0)
    }
}

/// `pairs` senders each send to their own receiver, `rate` messages a second in all, for
/// `seconds`; what was answered `sent` and what arrived, with each arrival's latency.
pub(crate) async fn natter_run(
    stack: &impl Gateways,
    epoch: Instant,
    rate: u64,
    seconds: u64,
    pairs: usize,
) -> anyhow::Result<Run> {
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let per_pair = rate as f64 / pairs as f64;
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for i in 0..pairs {
        // Users of their own per run: a sender reusing another run's client ids would be
        // answered as a retry and not delivered again (natter's de-duplication).
        let to = format!("r{run}-{i}");
        let rx = stack.connect(&to, 1).await?;
        let mut tx = stack.connect(&format!("s{run}-{i}"), 0).await?;
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
    Ok(Run {
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
) -> anyhow::Result<Run> {
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
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
            .connect_welcomed(&format!("relay{run}-{i}"), 1, protocol::Encoding::Json)
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
        attachment: None,
        reacted: Vec::new(),
        reactions: Vec::new(),
        change: None,
        deleted: false,
        edited: None,
        id: protocol::MessageId(ulid::Ulid::new()),
        conversation: "dm:relay:relay2".parse()?,
        from: protocol::UserId::new("relay")?,
        to: protocol::UserId::new("relay2")?,
        cid: protocol::ClientMsgId::new("relay")?,
        body: String::new(),
        ts: 0,
        cursor: None,
        event: None,
        state: None,
        reply: None,
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
            position: None,
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
    Ok(Run {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(sent: u64, received: u64, latency_us: u64) -> Run {
        Run {
            sent,
            received,
            latencies_us: vec![latency_us; received as usize],
        }
    }

    #[test]
    fn a_rate_is_sustained_only_when_accepted_delivered_and_fast() {
        assert!(Outcome::new(1000, 1000, run(1000, 1000, 2_000), 50.0).sustained);
        // 1 % refused is tolerated, more is not.
        assert!(Outcome::new(1000, 1000, run(990, 990, 2_000), 50.0).sustained);
        assert!(!Outcome::new(1000, 1000, run(980, 980, 2_000), 50.0).sustained);
        // One accepted message lost.
        assert!(!Outcome::new(1000, 1000, run(1000, 999, 2_000), 50.0).sustained);
        // Over the latency objective.
        assert!(!Outcome::new(1000, 1000, run(1000, 1000, 60_000), 50.0).sustained);
    }
}
