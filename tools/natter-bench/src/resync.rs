//! Catching up after being away, through a real gateway:
//!
//! * **drain**: one device with a backlog of `backlog` messages resumes from its cursor;
//!   figure: messages per second until `synced`, next to a bare JetStream ordered read of the
//!   same messages in the same invocation (the ceiling);
//! * **storm**: `clients` devices, each with `per_client` messages waiting, reconnect at once;
//!   figures: time until every one has its `synced`, per-client p50/p99, and when their
//!   `welcome` came (p50/p99: the connect path, before any replay).
//!
//! Backlogs are written straight into the messages stream (as ingest would), so the figures
//! are about the replay, not about sending.
//!
//! During the storm the gateway refreshes its lease every second (a 3 s TTL): the figure
//! says how long those liveness writes took while replays filled the bus.

use std::time::Instant;

use futures::StreamExt;
use protocol::frames::ServerFrame;
use protocol::payloads::StoredMessage;
use protocol::{ConversationId, Cursor, UserId, subjects};
use testkit::Stack;
use testkit::client::Connection;

use crate::peers::Peer;
use crate::report::{Report, Table, ratio};

pub async fn run(
    backlog: usize,
    clients: usize,
    per_client: usize,
    lease_baseline: bool,
    peer_names: &[String],
    out: &crate::report::Output,
) -> anyhow::Result<()> {
    let steps = 2 + lease_baseline as u64 + peer_names.len() as u64;
    let report = Report::new(out, steps)?;
    let stack = natter_stack(clients, false).await;
    report.step(format!("natter: one device draining {backlog} messages"));
    drain(&stack, backlog, &report).await?;
    report.done();
    report.step(format!("natter: storm of {clients} clients"));
    let took = storm(&stack, "natter", clients, per_client, &report).await?;
    let mut storms = vec![("natter", took)];
    report.done();
    stack.stop().await;
    if lease_baseline {
        report.step(format!(
            "natter, lease on the main connection: storm of {clients} clients"
        ));
        let stack = natter_stack(clients, true).await;
        let system = "natter, lease on the main connection";
        let took = storm(&stack, system, clients, per_client, &report).await?;
        storms.push((system, took));
        report.done();
        stack.stop().await;
    }
    // The peers one at a time, each with the machine to itself.
    for name in peer_names {
        report.step(format!("{name}: storm of {clients} clients"));
        let peer = Peer::start(name).await?;
        let took = peer.storm(clients, per_client).await?;
        report.measurement(
            serde_json::json!({"scenario": "storm", "system": name, "clients": clients,
                "backlog_per_client": per_client, "all_resynced_s": took.as_secs_f64()}),
            format!("storm {name}: {clients} clients with {per_client} messages each reconnected at once; all resynced in {took:.2?}"),
        );
        storms.push((peer.name(), took));
        drop(peer);
        report.done();
    }
    let mut table = Table::new(
        format!(
            "reconnect storm: {clients} clients with {per_client} messages waiting each reconnect at once"
        ),
        &["system", "all resynced (s)", "natter ÷ system (time)"],
    );
    let natter = storms[0].1.as_secs_f64();
    for (system, took) in &storms {
        table.row(vec![
            system.to_string(),
            format!("{:.2}", took.as_secs_f64()),
            ratio(natter, took.as_secs_f64()),
        ]);
    }
    report.finish(&[table], &[]);
    Ok(())
}

/// A stack for `clients` devices (with the gateway's lease on its main NATS connection when
/// `lease_on_main`).
async fn natter_stack(clients: usize, lease_on_main: bool) -> Stack {
    let stack = Stack::new().gateway_config(|g| {
        g.heartbeat_timeout_ms = 600_000;
        g.max_connections = clients + 100;
        g.lease_ttl_ms = LEASE_TTL_MS;
    });
    match lease_on_main {
        true => stack.lease_on_main_connection(),
        false => stack,
    }
    .start()
    .await
}

/// The gateway's replay counters: devices told to come back, replays served from a shared
/// read, JetStream API requests.
struct ReplayCounts {
    deferred: i64,
    shared: i64,
    api: i64,
}

impl ReplayCounts {
    async fn read(stack: &Stack) -> Self {
        let gw = &stack.gateways[0];
        Self {
            deferred: gw.metric("natter_gateway_replays_deferred_total").await,
            shared: gw.metric("natter_gateway_replays_shared_total").await,
            api: gw
                .metric("natter_gateway_jetstream_api_requests_total")
                .await,
        }
    }

    fn since(self, before: &Self) -> Self {
        Self {
            deferred: self.deferred - before.deferred,
            shared: self.shared - before.shared,
            api: self.api - before.api,
        }
    }
}

/// The gateway's lease TTL here: refreshed every third of it.
const LEASE_TTL_MS: u64 = 3_000;

/// Lease writes counted by the gateway's `natter_gateway_lease_write_seconds`: cumulative
/// counts per bucket bound, and failures.
struct LeaseWrites {
    buckets: Vec<(f64, u64)>,
    count: u64,
    failures: u64,
}

impl LeaseWrites {
    async fn read(stack: &Stack) -> Self {
        let text = stack.gateways[0].http_get("/metrics").await;
        let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse().ok());
        let mut writes = Self {
            buckets: Vec::new(),
            count: 0,
            failures: 0,
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("natter_gateway_lease_write_seconds_bucket{le=\"")
                && let Some((bound, _)) = rest.split_once('"')
                && let (Ok(bound), Some(n)) = (bound.parse::<f64>(), value(line))
            {
                writes.buckets.push((bound, n));
            } else if line.starts_with("natter_gateway_lease_write_seconds_count ") {
                writes.count = value(line).unwrap_or(0);
            } else if line.starts_with("natter_gateway_lease_write_failures_total ") {
                writes.failures = value(line).unwrap_or(0);
            }
        }
        writes
    }

    /// The bucket bound under which a share `q` of the writes since `before` took.
    fn quantile_bound(&self, before: &Self, q: f64) -> Option<f64> {
        let count = self.count - before.count;
        let wanted = (count as f64 * q).ceil() as u64;
        self.buckets
            .iter()
            .zip(&before.buckets)
            .find(|((_, n), (_, m))| n - m >= wanted)
            .map(|((bound, _), _)| *bound)
    }
}

/// Where live traffic starts for a new device of `user`.
async fn head(stack: &Stack, user: &str) -> Cursor {
    let mut conn = stack.resume(user, 0, None).await;
    loop {
        if let ServerFrame::Synced { cursor, .. } = conn.next_frame().await.expect("synced") {
            return cursor;
        }
    }
}

/// Writes `n` messages from `from` to each of `to` into the stream.
async fn backlog(stack: &Stack, from: &str, to: &[String], n: usize) -> anyhow::Result<()> {
    let from = UserId::new(from)?;
    let to = to
        .iter()
        .map(|u| UserId::new(u.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let messages = (0..n).flat_map(|_| to.iter().map(|user| (from.clone(), user.clone())));
    crate::backlog::write(stack, messages).await
}

/// Waits until the routers and the history writers have processed everything in the stream,
/// so a measurement is not sharing the machine with their catching up.
async fn settle(stack: &Stack) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(stack.nats.client().await);
    settle_streams(&js, stack.bus.partitions).await
}

/// [`settle`] through `js`, for a deployment of `partitions` partitions.
pub async fn settle_streams(
    js: &async_nats::jetstream::Context,
    partitions: u32,
) -> anyhow::Result<()> {
    for k in 0..partitions {
        let stream = js.get_stream(subjects::messages_stream(k)).await?;
        for name in [subjects::router(k), subjects::history_writer(k)] {
            loop {
                let info = stream
                    .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .get_info()
                    .await?;
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    Ok(())
}

async fn drain(stack: &Stack, n: usize, report: &Report) -> anyhow::Result<()> {
    let cursor = head(stack, "drainer").await;
    backlog(stack, "drain-source", &["drainer".to_string()], n).await?;
    settle(stack).await?;

    // The ceiling: an ordered consumer reading the same messages, no gateway, no socket.
    let js = async_nats::jetstream::new(stack.nats.client().await);
    let conversation =
        ConversationId::direct(&UserId::new("drain-source")?, &UserId::new("drainer")?);
    let k = subjects::partition(&conversation, stack.bus.partitions);
    let stream = js.get_stream(subjects::messages_stream(k)).await?;
    let started = Instant::now();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subjects: subjects::user_messages(&UserId::new("drainer")?).to_vec(),
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: cursor.seqs[k as usize] + 1,
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut read = 0;
    while read < n {
        let msg = messages.next().await.expect("ordered consumer")?;
        let _: StoredMessage = serde_json::from_slice(&msg.payload)?;
        read += 1;
    }
    let baseline = started.elapsed();

    let started = Instant::now();
    let mut conn = stack.resume("drainer", 0, Some(cursor)).await;
    let mut replayed = 0;
    loop {
        match conn.next_frame().await? {
            ServerFrame::Message(_) => replayed += 1,
            ServerFrame::Synced { recovered, .. } => {
                anyhow::ensure!(recovered && replayed == n, "replayed {replayed} of {n}");
                break;
            }
            _ => {}
        }
    }
    let took = started.elapsed();
    let rate = n as f64 / took.as_secs_f64();
    let ceiling = n as f64 / baseline.as_secs_f64();
    report.measurement(
        serde_json::json!({"scenario": "drain", "messages": n, "seconds": took.as_secs_f64(),
            "rate": rate, "jetstream_rate": ceiling, "ratio": rate / ceiling}),
        format!(
            "drain: {n} messages replayed to one device in {took:.2?}: {rate:.0} msg/s \
             (bare JetStream read {ceiling:.0} msg/s, ratio {:.2})",
            rate / ceiling
        ),
    );
    Ok(())
}

async fn storm(
    stack: &Stack,
    system: &str,
    clients: usize,
    per_client: usize,
    report: &Report,
) -> anyhow::Result<std::time::Duration> {
    let users: Vec<String> = (0..clients).map(|i| format!("storm{i}")).collect();
    let cursor = head(stack, &users[0]).await;
    backlog(stack, "storm-source", &users, per_client).await?;
    settle(stack).await?;

    let leases_before = LeaseWrites::read(stack).await;
    let counted_before = ReplayCounts::read(stack).await;
    let started = Instant::now();
    let resyncs = users.iter().map(|user| {
        let cursor = cursor.clone();
        async move {
            // As a client does: a gateway that is too busy says when to come back.
            let url = stack.gateways[0].ws_url();
            let token = stack.token(user);
            let mut backoff = protocol::Backoff::new(
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(60),
            );
            let encoding = protocol::Encoding::Json;
            let mut conn =
                Connection::reconnect(&url, &token, encoding, Some(cursor), &mut backoff).await?;
            let mut replayed = 0;
            let mut welcomed = None;
            loop {
                match conn.next_frame().await? {
                    ServerFrame::Welcome { .. } => welcomed = Some(started.elapsed()),
                    ServerFrame::Message(_) => replayed += 1,
                    ServerFrame::Synced { recovered, .. } => {
                        anyhow::ensure!(recovered && replayed == per_client, "{user}: {replayed}");
                        let welcomed = welcomed.unwrap_or_default();
                        return Ok((started.elapsed(), welcomed, conn));
                    }
                    _ => {}
                }
            }
        }
    });
    let done = futures::future::join_all(resyncs).await;
    let all = started.elapsed();
    let leases = LeaseWrites::read(stack).await;
    let counted = ReplayCounts::read(stack).await.since(&counted_before);
    let mut times_us = Vec::with_capacity(clients);
    let mut welcomes_us = Vec::with_capacity(clients);
    let mut conns = Vec::with_capacity(clients);
    for r in done {
        let (t, welcomed, conn) = r?;
        times_us.push(t.as_micros() as u64);
        welcomes_us.push(welcomed.as_micros() as u64);
        conns.push(conn);
    }
    times_us.sort_unstable();
    welcomes_us.sort_unstable();
    let ReplayCounts {
        deferred,
        shared,
        api,
    } = counted;
    let p = crate::percentile_ms;
    report.measurement(
        serde_json::json!({"scenario": "storm", "system": system, "clients": clients, "backlog_per_client": per_client,
            "all_resynced_s": all.as_secs_f64(), "p50_ms": p(&times_us, 0.5), "p99_ms": p(&times_us, 0.99),
            "welcome_p50_ms": p(&welcomes_us, 0.5), "welcome_p99_ms": p(&welcomes_us, 0.99),
            "told_to_come_back": deferred, "replays_shared": shared, "jetstream_api_requests": api}),
        format!(
            "storm {system}: {clients} clients with {per_client} messages each reconnected at once; all \
             resynced in {all:.2?} (per client p50 {:.0} ms, p99 {:.0} ms; welcome p50 {:.0} ms, \
             p99 {:.0} ms; {deferred} times a \
             client was told to come back later; {shared} replays from a shared read; {api} \
             JetStream API requests)",
            p(&times_us, 0.5),
            p(&times_us, 0.99),
            p(&welcomes_us, 0.5),
            p(&welcomes_us, 0.99)
        ),
    );
    let writes = leases.count - leases_before.count;
    let bound = |q| match leases.quantile_bound(&leases_before, q) {
        _ if writes == 0 => "-".to_string(),
        Some(b) => format!("{b} s"),
        None => "over 10 s".into(),
    };
    let failures = leases.failures - leases_before.failures;
    report.measurement(
        serde_json::json!({"scenario": "storm_lease_writes", "system": system, "clients": clients, "writes": writes,
            "failures": failures, "p50_le_s": leases.quantile_bound(&leases_before, 0.5),
            "max_le_s": leases.quantile_bound(&leases_before, 1.0)}),
        format!(
            "storm {system}: {writes} lease writes during it ({failures} failed), half within {}, all \
             within {}",
            bound(0.5),
            bound(1.0)
        ),
    );
    drop(conns);
    Ok(all)
}
