//! Group fan-out: a group of 500 with 200 members online over 3 gateways, natter running as
//! separate processes like the peers (`processes.rs`), which get the same workload.
//!
//! * **latency** at fixed offered rates (10 and 100 group messages per second by default):
//!   one member sends; the figure is the time from just before the send to the arrival at the
//!   *last* of the 199 other online members, p50 and p99 over the messages;
//! * **saturation**: several members send as fast as their sessions allow; the figure is
//!   group message deliveries per second to the online members' sockets.
//!
//! Next to each, in the same invocation, the ceiling of the architecture: a raw core-NATS
//! relay publishing the same deliveries (one per gateway, listing its targets) straight to the
//! gateways, so the gateways and WebSockets are measured without ingest, JetStream or routing.
//!
//! Members read raw frames and pick the body out of the JSON text without decoding the
//! whole frame: the bench client shares the two cores with the servers, and its own decoding
//! would otherwise be what is measured.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use protocol::frames::{Message, ServerFrame};
use protocol::payloads::Delivery;
use protocol::{ConnId, GatewayId, GroupInfo, GroupOp, subjects};
use tokio::sync::mpsc;

use crate::peers::Peer;
use crate::plot::{self, RateCurve};
use crate::processes::Processes;
use crate::report::{Report, Table, ms, ratio};

const GROUP_SIZE: usize = 500;
const ONLINE: usize = 200;
const GATEWAYS: usize = 3;
/// Sends one saturating sender keeps waiting for their `sent`.
const IN_FLIGHT: usize = 16;

/// What a member's task is told to do.
enum Command {
    /// Send one message with this body.
    Send(String),
    /// Send as fast as possible, tagging bodies with `phase`, until told to stop.
    Blast(u8, Arc<std::sync::atomic::AtomicBool>),
}

/// Arrivals seen by the members: per (phase, message number), the latest arrival and how
/// many members got it; and deliveries counted per phase.
#[derive(Default)]
struct Arrivals {
    latest: std::sync::Mutex<HashMap<(u8, u32), (u64, u32)>>,
    counted: [AtomicU64; 8],
    last_us: AtomicU64,
}

pub struct Options {
    pub rates: Vec<u64>,
    pub seconds: u64,
    pub senders: usize,
    pub sync: String,
}

pub async fn run(
    o: &Options,
    peer_names: &[String],
    out: &crate::report::Output,
) -> anyhow::Result<()> {
    let (rates, seconds, senders, sync) = (&o.rates, o.seconds, o.senders, o.sync.as_str());
    let peers = Peer::start_all(peer_names).await?;
    let mut systems = vec!["natter", "relay"];
    systems.extend(peers.iter().map(Peer::name));
    let report = Report::new(out, (systems.len() * rates.len() + 2) as u64)?;
    // natter in processes of its own, as each peer runs (see processes.rs).
    let servers = Processes::start(sync, GATEWAYS).await?;
    let epoch = Instant::now();
    let user = |i: usize| format!("m{i:03}");
    let (mut owner, _) = servers.connect_welcomed(&user(0), 0).await?;
    owner
        .group(
            "create",
            GroupOp::Create {
                name: "bench".into(),
                members: (1..GROUP_SIZE).map(user).collect(),
            },
        )
        .await?;
    let group: GroupInfo = match testkit::answer(&mut owner, "create").await {
        ServerFrame::Group { group, .. } => group,
        other => anyhow::bail!("could not create the group: {other:?}"),
    };
    owner.close().await;

    let arrivals = Arc::new(Arrivals::default());
    let mut members = Vec::new();
    let mut targets: HashMap<usize, Vec<ConnId>> = HashMap::new();
    for i in 0..ONLINE {
        let gw = i % GATEWAYS;
        let (conn, id) = servers.connect_welcomed(&user(i), gw).await?;
        targets.entry(gw).or_default().push(id);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(member(
            conn,
            group.group.to_string(),
            rx,
            epoch,
            arrivals.clone(),
        ));
        members.push((tx, task));
    }
    let recipients = (ONLINE - 1) as u32;

    // Warm-up, not recorded, for every system alike: the first messages after a start meet
    // cold processes, connections and caches.
    report.step("warming up");
    latency_phase(&members[0].0, 0, 20, 1, epoch, &arrivals, recipients).await;
    for peer in &peers {
        peer.group(epoch, 20, 1, ONLINE).await?;
    }
    let mut phase = 1u8;
    let mut results: BTreeMap<&str, Vec<(u64, Latency)>> = BTreeMap::new();
    for &rate in rates {
        report.step(format!("natter at {rate} group messages/s"));
        let natter = latency_phase(
            &members[0].0,
            phase,
            rate,
            seconds,
            epoch,
            &arrivals,
            recipients,
        )
        .await;
        phase += 1;
        report_latency(&report, "natter", rate, sync, &natter);
        results.entry("natter").or_default().push((rate, natter));
        report.step(format!("relay at {rate} group messages/s"));
        let relay = relay_latency(
            &servers, &targets, phase, rate, seconds, epoch, &arrivals, recipients,
        )
        .await?;
        phase += 1;
        report_latency(&report, "relay", rate, sync, &relay);
        results.entry("relay").or_default().push((rate, relay));
        for peer in &peers {
            report.step(format!("{} at {rate} group messages/s", peer.name()));
            let mut run = peer.group(epoch, rate, seconds, ONLINE).await?;
            run.latencies_us.sort_unstable();
            let latency = Latency {
                sent: run.sent,
                complete: run.received,
                last_us: run.latencies_us,
            };
            report_latency(&report, peer.name(), rate, sync, &latency);
            results
                .entry(peer.name())
                .or_default()
                .push((rate, latency));
        }
    }

    // Saturation: `senders` members blast for `seconds`.
    report.step(format!("natter saturation, {senders} senders"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started_us = epoch.elapsed().as_micros() as u64;
    for (tx, _) in members.iter().take(senders) {
        let _ = tx.send(Command::Blast(phase, stop.clone()));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let natter = settle(&arrivals, phase, started_us).await;
    phase += 1;
    report.done();
    report.step("relay saturation");
    let relay = relay_saturation(&servers, &targets, phase, seconds, epoch, &arrivals).await?;
    report.done();
    report_saturation(&report, sync, senders, natter, relay);
    let (mut tables, files) = summarise(o, &systems, &results, &report)?;
    let mut saturation = Table::new(
        format!("group saturation, {senders} members sending at once (natter and its relay only)"),
        &["system", "deliveries/s", "÷ relay"],
    );
    saturation.row(vec![
        "natter".into(),
        format!("{natter:.0}"),
        ratio(natter, relay),
    ]);
    saturation.row(vec!["relay".into(), format!("{relay:.0}"), "×1.00".into()]);
    tables.push(saturation);
    report.finish(&tables, &files);
    Ok(())
}

fn summarise(
    o: &Options,
    systems: &[&str],
    results: &BTreeMap<&str, Vec<(u64, Latency)>>,
    report: &Report,
) -> anyhow::Result<(Vec<Table>, Vec<std::path::PathBuf>)> {
    let p = crate::percentile_ms;
    let mut table = Table::new(
        format!(
            "group fan-out: {GROUP_SIZE} members, {ONLINE} online, natter over {GATEWAYS} gateways; latency to the last online member; nats-server sync {}",
            o.sync
        ),
        &[
            "rate/s",
            "system",
            "reached all",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "natter p99 ÷ system p99",
        ],
    );
    let mut files = Vec::new();
    for &rate in &o.rates {
        let natter_p99 = results["natter"]
            .iter()
            .find(|(r, _)| *r == rate)
            .map_or(f64::NAN, |(_, l)| p(&l.last_us, 0.99));
        let mut series: Vec<(&str, &[u64])> = Vec::new();
        for &system in systems {
            let Some((_, l)) = results[system].iter().find(|(r, _)| *r == rate) else {
                continue;
            };
            table.row(vec![
                rate.to_string(),
                system.into(),
                format!("{} of {}", l.complete, l.sent),
                ms(p(&l.last_us, 0.5)),
                ms(p(&l.last_us, 0.99)),
                ms(p(&l.last_us, 0.999)),
                ratio(natter_p99, p(&l.last_us, 0.99)),
            ]);
            series.push((system, &l.last_us));
        }
        let path = report.plot(&format!("group-cdf-{rate}.svg"));
        plot::cdf(
            &path,
            &format!(
                "group fan-out: latency to the last of {} members at {rate} msg/s",
                ONLINE - 1
            ),
            &series,
        )?;
        files.push(path);
    }
    let curves: Vec<RateCurve<'_>> = systems
        .iter()
        .map(|&system| RateCurve {
            system,
            points: results[system]
                .iter()
                .map(|(r, l)| (*r as f64, p(&l.last_us, 0.5), p(&l.last_us, 0.99)))
                .collect(),
        })
        .collect();
    let path = report.plot("group-latency-vs-rate.svg");
    plot::versus_rate(
        &path,
        "group fan-out: latency to the last member against offered rate",
        "group messages per second (log scale)",
        &curves,
    )?;
    files.push(path);
    Ok((vec![table], files))
}

/// Figures of one latency phase.
struct Latency {
    sent: u64,
    complete: u64,
    /// Send to last member, per message, in microseconds, sorted.
    last_us: Vec<u64>,
}

/// Sends `rate` messages per second for `seconds` from the first member, then collects.
async fn latency_phase(
    sender: &mpsc::UnboundedSender<Command>,
    phase: u8,
    rate: u64,
    seconds: u64,
    epoch: Instant,
    arrivals: &Arrivals,
    recipients: u32,
) -> Latency {
    let total = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent_at = Vec::with_capacity(total as usize);
    for n in 0..total {
        tick.tick().await;
        let now = epoch.elapsed().as_micros() as u64;
        sent_at.push(now);
        let _ = sender.send(Command::Send(format!("{phase}:{n}:{now}")));
    }
    collect(phase, &sent_at, arrivals, recipients).await
}

/// Waits until every message of `phase` reached every recipient (at most 5 s), then takes
/// each message's latency to its last recipient.
async fn collect(phase: u8, sent_at: &[u64], arrivals: &Arrivals, recipients: u32) -> Latency {
    let expected = sent_at.len() as u64 * recipients as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    while arrivals.counted[phase as usize].load(Ordering::Relaxed) < expected
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let latest = arrivals.latest.lock().unwrap();
    let mut last_us = Vec::new();
    for (n, sent) in sent_at.iter().enumerate() {
        if let Some((at, got)) = latest.get(&(phase, n as u32))
            && *got == recipients
        {
            last_us.push(at.saturating_sub(*sent));
        }
    }
    last_us.sort_unstable();
    Latency {
        sent: sent_at.len() as u64,
        complete: last_us.len() as u64,
        last_us,
    }
}

/// The same fan-out published straight to the gateways at `rate`.
#[allow(clippy::too_many_arguments)]
async fn relay_latency(
    servers: &Processes,
    targets: &HashMap<usize, Vec<ConnId>>,
    phase: u8,
    rate: u64,
    seconds: u64,
    epoch: Instant,
    arrivals: &Arrivals,
    recipients: u32,
) -> anyhow::Result<Latency> {
    let nats = servers.nats.client().await;
    let total = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent_at = Vec::with_capacity(total as usize);
    for n in 0..total {
        tick.tick().await;
        let now = epoch.elapsed().as_micros() as u64;
        sent_at.push(now);
        relay(servers, &nats, targets, format!("{phase}:{n}:{now}"), true).await?;
    }
    nats.flush().await?;
    Ok(collect(phase, &sent_at, arrivals, recipients).await)
}

/// Publishes one message to every gateway's targets, as the router would (skipping the first
/// member, the sender, when `skip_sender`).
async fn relay(
    servers: &Processes,
    nats: &async_nats::Client,
    targets: &HashMap<usize, Vec<ConnId>>,
    body: String,
    skip_sender: bool,
) -> anyhow::Result<()> {
    let message = Message {
        attachment: None,
        reacted: Vec::new(),
        reactions: Vec::new(),
        change: None,
        deleted: false,
        edited: None,
        id: protocol::MessageId(ulid::Ulid::new()),
        conversation: "g:relay".parse()?,
        from: protocol::UserId::new("m000")?,
        to: protocol::UserId::new("relay")?,
        cid: protocol::ClientMsgId::new("relay")?,
        body,
        ts: 0,
        cursor: None,
        event: None,
        state: None,
        reply: None,
    };
    let frame = ServerFrame::Message(message);
    for (gw, conns) in targets {
        let conns = if skip_sender && *gw == 0 {
            conns[1..].to_vec()
        } else {
            conns.clone()
        };
        let delivery = Delivery {
            targets: conns,
            frame: frame.clone(),
            order: None,
            position: None,
        };
        let gateway = GatewayId::new(servers.gateway_id(*gw))?;
        nats.publish(
            subjects::gateway_deliver(&gateway),
            serde_json::to_vec(&delivery)?.into(),
        )
        .await?;
    }
    Ok(())
}

/// Relay saturation: publishes as fast as one client can for `seconds`, keeping at most a
/// few thousand deliveries ahead of the sockets.
async fn relay_saturation(
    servers: &Processes,
    targets: &HashMap<usize, Vec<ConnId>>,
    phase: u8,
    seconds: u64,
    epoch: Instant,
    arrivals: &Arrivals,
) -> anyhow::Result<f64> {
    let nats = servers.nats.client().await;
    let per_message: u64 = targets.values().map(|c| c.len() as u64).sum();
    let started_us = epoch.elapsed().as_micros() as u64;
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut n = 0u64;
    while Instant::now() < end {
        // Stay at most 20 messages ahead of what the members have received.
        while n * per_message
            > arrivals.counted[phase as usize].load(Ordering::Relaxed) + 20 * per_message
        {
            tokio::task::yield_now().await;
            if Instant::now() >= end {
                break;
            }
        }
        relay(servers, &nats, targets, format!("{phase}:{n}:0"), false).await?;
        n += 1;
    }
    nats.flush().await?;
    Ok(settle(arrivals, phase, started_us).await)
}

/// Waits until deliveries of `phase` stop arriving, and returns deliveries per second from
/// `started_us` to the last arrival.
async fn settle(arrivals: &Arrivals, phase: u8, started_us: u64) -> f64 {
    let counted = &arrivals.counted[phase as usize];
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counted.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let span = arrivals
        .last_us
        .load(Ordering::Relaxed)
        .saturating_sub(started_us);
    last as f64 / (span.max(1) as f64 / 1e6)
}

/// One online member: sends what it is told, and records what arrives.
async fn member(
    mut conn: client::Connection,
    group: String,
    mut commands: mpsc::UnboundedReceiver<Command>,
    epoch: Instant,
    arrivals: Arc<Arrivals>,
) {
    let mut blast: Option<(u8, Arc<std::sync::atomic::AtomicBool>, u64)> = None;
    let mut in_flight = 0usize;
    let mut cid = 0u64;
    loop {
        if let Some((phase, stop, n)) = &mut blast {
            while in_flight < IN_FLIGHT && !stop.load(Ordering::Relaxed) {
                cid += 1;
                let body = format!("{phase}:{n}:0");
                *n += 1;
                if conn
                    .send_group(&group, &format!("c{cid}"), &body)
                    .await
                    .is_err()
                {
                    return;
                }
                in_flight += 1;
            }
        }
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Send(body)) => {
                    cid += 1;
                    if conn.send_group(&group, &format!("c{cid}"), &body).await.is_err() {
                        return;
                    }
                }
                Some(Command::Blast(phase, stop)) => blast = Some((phase, stop, 0)),
                None => return,
            },
            raw = conn.next_raw() => {
                let Some(raw) = raw else { return };
                let Ok(text) = raw.to_text() else { continue };
                if text.starts_with(r#"{"type":"sent""#) || text.starts_with(r#"{"type":"error""#) {
                    in_flight = in_flight.saturating_sub(1);
                } else if text.starts_with(r#"{"type":"message""#) {
                    record(&arrivals, text, epoch);
                }
            }
        }
    }
}

/// Counts one arrival, keyed by the `<phase>:<n>:<sent>` body.
fn record(arrivals: &Arrivals, text: &str, epoch: Instant) {
    let at = epoch.elapsed().as_micros() as u64;
    let Some(body) = text
        .split_once(r#""body":""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(body, _)| body)
    else {
        return;
    };
    let mut parts = body.split(':');
    let (Some(Ok(phase)), Some(Ok(n))) = (
        parts.next().map(str::parse::<u8>),
        parts.next().map(str::parse::<u32>),
    ) else {
        return;
    };
    if phase as usize >= arrivals.counted.len() {
        return;
    }
    arrivals.counted[phase as usize].fetch_add(1, Ordering::Relaxed);
    arrivals.last_us.fetch_max(at, Ordering::Relaxed);
    if parts.next().is_some_and(|sent| sent != "0") {
        let mut latest = arrivals.latest.lock().unwrap();
        let entry = latest.entry((phase, n)).or_insert((0, 0));
        entry.0 = entry.0.max(at);
        entry.1 += 1;
    }
}

fn report_latency(report: &Report, system: &str, rate: u64, sync: &str, n: &Latency) {
    let p = crate::percentile_ms;
    report.measurement(
        serde_json::json!({
            "scenario": "group", "measure": "latency", "system": system, "sync_interval": sync,
            "rate": rate, "members": GROUP_SIZE, "online": ONLINE, "gateways": GATEWAYS,
            "sent": n.sent, "complete": n.complete,
            "p50_ms": p(&n.last_us, 0.5), "p99_ms": p(&n.last_us, 0.99),
            "p999_ms": p(&n.last_us, 0.999),
        }),
        format!(
            "group {system:<10} {rate:>4}/s: {} of {} reached all {} online members | to the last member p50 {} ms p99 {} ms",
            n.complete,
            n.sent,
            ONLINE - 1,
            ms(p(&n.last_us, 0.5)),
            ms(p(&n.last_us, 0.99)),
        ),
    );
    report.done();
}

fn report_saturation(report: &Report, sync: &str, senders: usize, natter: f64, relay: f64) {
    report.measurement(
        serde_json::json!({
            "scenario": "group", "measure": "saturation", "sync_interval": sync,
            "senders": senders, "deliveries_per_s": natter.round(),
            "relay_deliveries_per_s": relay.round(), "ratio_to_relay": natter / relay,
        }),
        format!(
            "group saturation sync={sync}, {senders} senders: {:.0} deliveries/s | relay {:.0} deliveries/s | ratio {:.2}",
            natter,
            relay,
            natter / relay
        ),
    );
}
