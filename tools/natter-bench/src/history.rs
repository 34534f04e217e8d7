//! History: batched store writes, "last 50" read latency from the cache, from an embedded-store
//! miss and (with `NATTER_SCYLLA_URI`) from a CQL-store miss, and the writer's lag while
//! 5,000 msg/s flow into the messages stream.

use std::time::{Duration, Instant};

use history::store::suite::message;
use history::{
    CacheConfig, EmbeddedStore, HistoryCache, HistoryConfig, Page, ScyllaConfig, ScyllaStore, Store,
};
use protocol::ConversationId;
use protocol::frames::{ClientFrame, Message, ServerFrame};
use protocol::payloads::StoredMessage;
use testkit::{Stack, TestNats};

use crate::Latencies;
use crate::peers::Peer;
use crate::plot;
use crate::report::{Report, Table, ms, ratio};

const T0: u64 = 1_750_000_000_000;

fn conversation(i: usize) -> ConversationId {
    format!("dm:a{i}:b{i}").parse().unwrap()
}

/// `per` messages in each of `n` conversations, interleaved in time.
fn corpus(n: usize, per: usize) -> Vec<Message> {
    let mut out = Vec::with_capacity(n * per);
    for k in 0..per {
        for i in 0..n {
            let c = conversation(i);
            let (a, b) = (format!("a{i}"), format!("b{i}"));
            out.push(message(
                &a,
                &c,
                &b,
                T0 + (k * n + i) as u64,
                (k * n + i) as u64,
            ));
        }
    }
    out
}

async fn write_throughput<S: Store>(store: &S, messages: &[Message], batch: usize) -> f64 {
    let started = Instant::now();
    for chunk in messages.chunks(batch) {
        store.append(chunk).await.expect("append");
    }
    messages.len() as f64 / started.elapsed().as_secs_f64()
}

/// p50/p99 in ms of `f` over `n` calls.
async fn latency<F, Fut>(n: usize, mut f: F) -> (f64, f64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut us = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i).await;
        us.push(t.elapsed().as_micros() as u64);
    }
    us.sort_unstable();
    (
        crate::percentile_ms(&us, 0.5),
        crate::percentile_ms(&us, 0.99),
    )
}

/// Messages in the conversation whose last 50 are read end to end.
const SEEDED: usize = 1_000;

/// The last 50 of a conversation, read `reads` times through each system's own client
/// protocol: natter's `history` frame over the WebSocket (gateway, history service, its cache
/// and embedded store), Centrifugo's `history` call, ejabberd's MAM query.
async fn end_to_end(
    reads: usize,
    peer_names: &[String],
    out: &crate::report::Output,
) -> anyhow::Result<()> {
    let report = Report::new(out, (1 + peer_names.len()) as u64)?;
    report.step(format!("natter: {reads} reads of the last 50"));
    let mut results = vec![("natter", Latencies::new(natter_last_50(reads).await?))];
    report.done();
    for name in peer_names {
        report.step(format!("{name}: {reads} reads of the last 50"));
        let peer = Peer::start(name).await?;
        results.push((peer.name(), Latencies::new(peer.history(reads).await?)));
        drop(peer);
        report.done();
    }
    let p = |us: &Latencies, at: f64| us.percentile_ms(at);
    let natter_p99 = p(&results[0].1, 0.99);
    let mut table = Table::new(
        format!(
            "history: the last 50 of a {SEEDED}-message conversation, {reads} sequential reads over each system's client protocol"
        ),
        &["system", "p50 ms", "p99 ms", "natter p99 ÷ system p99"],
    );
    for (system, us) in &results {
        report.measurement(
            serde_json::json!({"scenario": "history", "measure": "last_50_end_to_end",
                "system": system, "reads": reads, "p50_ms": p(us, 0.5), "p99_ms": p(us, 0.99)}),
            format!(
                "history {system:<10} last 50: p50 {} ms p99 {} ms",
                ms(p(us, 0.5)),
                ms(p(us, 0.99))
            ),
        );
        table.row(vec![
            system.to_string(),
            ms(p(us, 0.5)),
            ms(p(us, 0.99)),
            ratio(natter_p99, p(us, 0.99)),
        ]);
    }
    let path = report.plot("history-cdf.svg");
    let series: Vec<(&str, &[u64])> = results.iter().map(|(s, us)| (*s, us.sorted_us())).collect();
    plot::cdf(
        &path,
        "history: latency of reading the last 50 messages",
        &series,
    )?;
    report.finish(&[table], &[path]);
    Ok(())
}

/// natter: alice sends bob `SEEDED` messages, then reads their last 50 `reads` times.
async fn natter_last_50(reads: usize) -> anyhow::Result<Vec<u64>> {
    let stack = Stack::new().start().await;
    let mut alice = stack.connect("alice", 0).await;
    // Pipelined, within the gateway's limit of sends in flight per connection.
    let (mut sent, mut accepted) = (0, 0);
    while accepted < SEEDED {
        while sent < SEEDED && sent - accepted < 16 {
            alice
                .send("bob", &format!("c{sent}"), &format!("message {sent}"))
                .await?;
            sent += 1;
        }
        if let ServerFrame::Sent { .. } = alice.next_frame().await? {
            accepted += 1;
        }
    }
    let conversation = "dm:alice:bob".to_string();
    let read = async |alice: &mut client::Connection, qid: String| {
        alice
            .send_frame(&ClientFrame::History {
                qid: qid.clone(),
                conversation: conversation.clone(),
                before: None,
                after: None,
                limit: Some(50),
            })
            .await?;
        match testkit::answer(alice, &qid).await {
            ServerFrame::History { messages, .. } => Ok::<_, anyhow::Error>(messages),
            other => anyhow::bail!("history answered {other:?}"),
        }
    };
    // The history writer stores asynchronously: wait until the newest message is readable.
    let newest = format!("c{}", SEEDED - 1);
    for attempt in 0.. {
        let page = read(&mut alice, format!("w{attempt}")).await?;
        if page.last().is_some_and(|m| m.cid.as_str() == newest) {
            break;
        }
        anyhow::ensure!(attempt < 500, "history never caught up with the writes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut us = Vec::with_capacity(reads);
    for i in 0..reads {
        let started = Instant::now();
        let page = read(&mut alice, format!("q{i}")).await?;
        us.push(started.elapsed().as_micros() as u64);
        anyhow::ensure!(page.len() == 50, "a read returned {} messages", page.len());
    }
    Ok(us)
}

pub async fn run(
    reads: usize,
    peer_names: &[String],
    out: &crate::report::Output,
) -> anyhow::Result<()> {
    end_to_end(reads, peer_names, out).await?;
    store_figures(out.json).await
}

/// natter's own store and cache, below the service.
async fn store_figures(json: bool) -> anyhow::Result<()> {
    let conversations = 1_000;
    let messages = corpus(conversations, 100);
    let dir = tempfile::tempdir()?;

    // Embedded store: batched writes, then reads.
    let embedded = EmbeddedStore::open(&dir.path().join("bench.redb"))?;
    let rate = write_throughput(&embedded, &messages, 256).await;
    crate::emit(
        json,
        serde_json::json!({"scenario": "history", "store": "embedded", "write_msgs_per_s": rate, "batch": 256}),
        format!("history: embedded store writes {rate:.0} msg/s in batches of 256"),
    );

    let metrics = plumbing::Metrics::default();
    let cache = HistoryCache::new(embedded.clone(), &CacheConfig::default(), 1, &metrics);
    cache.own(0, std::time::Duration::ZERO);
    for i in 0..conversations {
        cache.page(&conversation(i), Page::Latest, 50).await?; // warm
    }
    let (p50, p99) = latency(20_000, |i| {
        let c = conversation(i % conversations);
        let cache = &cache;
        async move {
            cache.page(&c, Page::Latest, 50).await.unwrap();
        }
    })
    .await;
    crate::emit(
        json,
        serde_json::json!({"scenario": "history", "read": "cache_hit", "p50_ms": p50, "p99_ms": p99}),
        format!("history: last 50, cache hit: p50 {p50:.3} ms p99 {p99:.3} ms"),
    );

    let (p50, p99) = latency(5_000, |i| {
        let c = conversation(i % conversations);
        let store = &embedded;
        async move {
            store.page(&c, Page::Latest, 50).await.unwrap();
        }
    })
    .await;
    crate::emit(
        json,
        serde_json::json!({"scenario": "history", "read": "embedded_miss", "p50_ms": p50, "p99_ms": p99}),
        format!("history: last 50, embedded-store miss: p50 {p50:.3} ms p99 {p99:.3} ms"),
    );

    if let Ok(uri) = std::env::var("NATTER_SCYLLA_URI") {
        let config = ScyllaConfig {
            uri,
            keyspace: format!(
                "natter_bench_{}",
                ulid::Ulid::new().to_string().to_lowercase()
            ),
            replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
            consistency: "one".into(),
            local_dc: None,
        };
        let scylla = ScyllaStore::connect(&config).await?;
        let sample = corpus(100, 100);
        let rate = write_throughput(&scylla, &sample, 256).await;
        crate::emit(
            json,
            serde_json::json!({"scenario": "history", "store": "cql", "write_msgs_per_s": rate, "batch": 256}),
            format!("history: CQL store writes {rate:.0} msg/s in batches of 256"),
        );
        let (p50, p99) = latency(2_000, |i| {
            let c = conversation(i % 100);
            let store = &scylla;
            async move {
                store.page(&c, Page::Latest, 50).await.unwrap();
            }
        })
        .await;
        crate::emit(
            json,
            serde_json::json!({"scenario": "history", "read": "cql_miss", "p50_ms": p50, "p99_ms": p99}),
            format!("history: last 50, CQL miss: p50 {p50:.3} ms p99 {p99:.3} ms"),
        );
    }

    writer_lag(json).await
}

/// Publishes 5,000 msg/s into the stream for 10 s and samples the writer's lag.
async fn writer_lag(json: bool) -> anyhow::Result<()> {
    let nats = TestNats::start();
    let client = nats.client().await;
    let bus = plumbing::BusConfig::default();
    let js = async_nats::jetstream::new(client.clone());
    plumbing::bus::ensure_messages_streams(&js, &bus).await?;
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(&dir.path().join("lag.redb"))?;
    let service = history::History::start(
        HistoryConfig::default(),
        &bus,
        client.clone(),
        store,
        std::sync::Arc::new(history::StaticMembership::default()),
        tokio_util::sync::CancellationToken::new(),
    )
    .await?;
    let rate = 5_000u64;
    let seconds = 10u64;
    let publisher = {
        let (js, bus) = (js.clone(), bus.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut acks = Vec::new();
            for n in 0..rate * seconds {
                tick.tick().await;
                let i = (n % 1000) as usize;
                let c = conversation(i);
                let m = message(&format!("a{i}"), &c, &format!("b{i}"), T0 + n, n);
                let stored = StoredMessage {
                    message: m,
                    origin: None,
                    groups_revision: None,
                };
                let payload = serde_json::to_vec(&stored).unwrap();
                acks.push(
                    js.publish(
                        protocol::subjects::message(&c, bus.partitions),
                        payload.into(),
                    )
                    .await
                    .unwrap(),
                );
                if acks.len() >= 512 {
                    for a in acks.drain(..) {
                        a.await.unwrap();
                    }
                }
            }
            for a in acks {
                a.await.unwrap();
            }
        })
    };
    let text = |m: &plumbing::Metrics| {
        m.render()
            .lines()
            .find_map(|l| {
                l.strip_prefix("natter_history_writer_lag_messages ")?
                    .parse::<i64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    let mut samples = Vec::new();
    let started = Instant::now();
    while !publisher.is_finished() {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        samples.push(text(&service.metrics));
    }
    publisher.await?;
    // Then until the writer has caught up.
    let mut drained_after = None;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if text(&service.metrics) == 0 {
            drained_after = Some(started.elapsed().as_secs_f64() - seconds as f64);
            break;
        }
    }
    let max = samples.iter().copied().max().unwrap_or(0);
    crate::emit(
        json,
        serde_json::json!({"scenario": "history", "writer_rate": rate, "lag_samples": samples, "max_lag_messages": max, "caught_up_after_s": drained_after}),
        format!(
            "history: writer at {rate} msg/s: lag samples {samples:?} (max {max}), caught up {drained_after:?} s after the last publish"
        ),
    );
    service.abort();
    Ok(())
}
