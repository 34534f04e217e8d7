//! Routing scale: a backlog of 1:1 messages, written straight into the messages stream while
//! no router runs, drained by 1, 2, 3… `natter-chat` processes that only route (ingest off),
//! on a 3-node NATS cluster with `P` partitions. Figures per instance count: routed messages
//! per second (from the first message routed to the last), chat CPU per routed message (the
//! processes' user + system time over the drain), and each instance's share of the messages
//! against its fair share. Every recipient is online on one in-process gateway, so every
//! message is a real delivery.
//!
//! Each round's instances stop with SIGTERM (they hand their partitions back at once); the
//! next round starts after their keys and pins are gone.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plumbing::nats_auth::Role;
use protocol::UserId;
use testkit::Stack;

use crate::process::{TICKS_PER_S, free_port, process_ticks, wait_listening};
use crate::report::{Report, Table};

pub struct Options {
    pub instances: Vec<usize>,
    pub partitions: u32,
    pub backlog: usize,
    pub pairs: usize,
}

/// One round's figures.
struct Round {
    instances: usize,
    routed_per_s: f64,
    cpu_us_per_msg: f64,
    /// The nats-server nodes' CPU per routed message.
    nats_cpu_us_per_msg: f64,
    /// How busy the machine's cores were over the drain, 0–1.
    machine_busy: f64,
    /// Messages lost on the way to a former owner while the partitions were shared out,
    /// routed from the stream instead.
    from_stream: u64,
    /// Each instance's routed messages over its fair share, lowest and highest.
    share: (f64, f64),
}

pub async fn run(options: &Options, out: &crate::report::Output) -> anyhow::Result<()> {
    let report = Report::new(out, options.instances.len() as u64 + 1)?;
    report.step("3-node cluster, gateway and recipients");
    let stack = Stack::new()
        .cluster(3)
        .bus_config(|b| b.partitions = options.partitions)
        .chat_config(|c| c.route = false)
        .gateway_config(|g| {
            g.heartbeat_timeout_ms = 600_000;
            g.outbound_queue_frames = 1 << 20;
            g.outbound_queue_bytes = 1 << 30;
        })
        .start()
        .await;
    let recipients: Vec<String> = (0..options.pairs).map(|i| format!("r{i}")).collect();
    let mut readers = Vec::new();
    for user in &recipients {
        let (mut conn, _) = stack
            .connect_welcomed(user, 0, protocol::Encoding::Json)
            .await;
        readers.push(tokio::spawn(async move {
            while let Ok(frame) = conn.next_frame().await {
                drop(frame);
            }
        }));
    }
    report.done();
    let mut rounds = Vec::new();
    for &n in &options.instances {
        report.step(format!(
            "{n} routing instance(s) draining {} messages",
            options.backlog
        ));
        backlog(&stack, &recipients, options.backlog).await?;
        let round = drain(&stack, n, options).await?;
        report.measurement(
            serde_json::json!({"scenario": "scale", "instances": n,
                "partitions": options.partitions, "routed_per_s": round.routed_per_s,
                "cpu_us_per_msg": round.cpu_us_per_msg,
                "nats_cpu_us_per_msg": round.nats_cpu_us_per_msg,
                "machine_busy": round.machine_busy, "routed_from_stream": round.from_stream,
                "share_min": round.share.0,
                "share_max": round.share.1}),
            format!(
                "scale: {n} instance(s), {} partitions: {:.0} routed/s, {:.1} µs CPU per message, shares {:.2}–{:.2}",
                options.partitions, round.routed_per_s, round.cpu_us_per_msg, round.share.0, round.share.1
            ),
        );
        rounds.push(round);
        report.done();
    }
    let mut table = Table::new(
        format!(
            "routing scale: {} messages to {} online recipients, {} partitions, 3-node cluster",
            options.backlog, options.pairs, options.partitions
        ),
        &[
            "instances",
            "routed/s",
            "× one instance",
            "chat CPU µs/msg",
            "NATS CPU µs/msg",
            "machine busy",
            "share min–max",
            "read back",
        ],
    );
    let one = rounds.first().map_or(f64::NAN, |r| r.routed_per_s);
    for r in &rounds {
        table.row(vec![
            r.instances.to_string(),
            format!("{:.0}", r.routed_per_s),
            format!("{:.2}", r.routed_per_s / one),
            format!("{:.1}", r.cpu_us_per_msg),
            format!("{:.1}", r.nats_cpu_us_per_msg),
            format!("{:.0} %", r.machine_busy * 100.0),
            format!("{:.2}–{:.2}", r.share.0, r.share.1),
            r.from_stream.to_string(),
        ]);
    }
    report.finish(&[table], &[]);
    for reader in readers {
        reader.abort();
    }
    Ok(())
}

/// Writes `n` messages into the stream, spread over one conversation per recipient.
///
/// One sender for all: pairs named alike (`s7` and `r7`) would all hash to partitions of one
/// parity. The partition hash is NATS's, FNV-1a, whose lowest bit is the parity of the
/// bytes' lowest bits, and `s`/`r` with the same digits always have the same parity: with an
/// even partition count, half the partitions would get nothing. Real ids have no such
/// pattern.
async fn backlog(stack: &Stack, recipients: &[String], n: usize) -> anyhow::Result<()> {
    let sender = UserId::new("bench-sender")?;
    let pairs = recipients
        .iter()
        .map(|r| Ok((sender.clone(), UserId::new(r.as_str())?)))
        .collect::<anyhow::Result<Vec<(UserId, UserId)>>>()?;
    let messages = (0..n).map(|i| pairs[i % pairs.len()].clone());
    crate::backlog::write(stack, messages).await
}

/// Starts `n` routing-only chat processes, waits until the routers' consumers have nothing
/// left, and stops them.
async fn drain(stack: &Stack, n: usize, options: &Options) -> anyhow::Result<Round> {
    let mut chats = Vec::new();
    for _ in 0..n {
        chats.push(Chat::spawn(stack)?);
    }
    for chat in &chats {
        wait_listening(chat.metrics).await?;
    }
    let before = Ticks::now(stack, &chats)?;
    let backlog = options.backlog as u64;
    // Done when the instances have routed the backlog. Not when the consumers have nothing
    // unacknowledged: messages lost on the way to a former owner during a hand-over are
    // routed from the stream at once, but stay unacknowledged until the consumer sends them
    // again after the ack wait (then acknowledged without routing).
    let mut first_routed: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut routed = 0;
        for chat in &chats {
            routed += chat.counter("natter_chat_routed_total").await?;
        }
        if first_routed.is_none() && routed > 0 {
            first_routed = Some(Instant::now());
        }
        if routed >= backlog {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} messages still unrouted",
            backlog - routed
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = first_routed.expect("routed").elapsed();
    let after = Ticks::now(stack, &chats)?;
    let mut shares = Vec::new();
    let mut from_stream = 0;
    let fair = backlog as f64 / n as f64;
    for chat in &chats {
        shares.push(chat.counter("natter_chat_routed_total").await? as f64 / fair);
        from_stream += chat.counter("natter_chat_routed_from_stream_total").await?;
    }
    for chat in &mut chats {
        chat.stop()?;
    }
    // Let the keys of the stopped instances go, so the next round shares among its own.
    tokio::time::sleep(plumbing::bus::shares::TTL).await;
    let per_msg = |ticks: u64| ticks as f64 / TICKS_PER_S * 1e6 / backlog as f64;
    Ok(Round {
        instances: n,
        routed_per_s: backlog as f64 / took.as_secs_f64(),
        cpu_us_per_msg: per_msg(after.chats - before.chats),
        nats_cpu_us_per_msg: per_msg(after.nats - before.nats),
        from_stream,
        machine_busy: (after.machine.0 - before.machine.0) as f64
            / (after.machine.1 - before.machine.1).max(1) as f64,
        share: (
            shares.iter().copied().fold(f64::INFINITY, f64::min),
            shares.iter().copied().fold(0.0, f64::max),
        ),
    })
}

/// A `natter-chat` process that only routes.
struct Chat {
    child: Child,
    metrics: u16,
}

impl Chat {
    fn spawn(stack: &Stack) -> anyhow::Result<Self> {
        let path = std::env::current_exe()?.with_file_name("natter-chat");
        anyhow::ensure!(
            path.exists(),
            "{} not found: build it with cargo build --release -p chat",
            path.display()
        );
        let metrics = free_port()?;
        let bus = stack.bus_for(Role::Chat);
        let child = Command::new(&path)
            .envs(bus.env())
            .env("NATTER_BUS__PARTITIONS", bus.partitions.to_string())
            .env("NATTER_BUS__REPLICAS", bus.replicas.to_string())
            .env("NATTER_CHAT__INGEST", "false")
            .env("NATTER_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
            .env(
                "RUST_LOG",
                std::env::var("NATTER_BENCH_CHILD_LOG").unwrap_or("warn".into()),
            )
            .stdout(match std::env::var_os("NATTER_BENCH_CHILD_LOG") {
                Some(_) => Stdio::inherit(),
                None => Stdio::null(),
            })
            .spawn()?;
        Ok(Self { child, metrics })
    }

    /// User and system time so far, in clock ticks.
    fn cpu_ticks(&self) -> anyhow::Result<u64> {
        process_ticks(self.child.id())
    }

    /// A counter of this instance's.
    async fn counter(&self, name: &str) -> anyhow::Result<u64> {
        let response = testkit::http_get(([127, 0, 0, 1], self.metrics).into(), "/metrics").await;
        response
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no {name}"))
    }

    /// SIGTERM, then waits for it to exit.
    fn stop(&mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time so far, in clock ticks: the chat processes', the nats-server nodes', and the
/// machine's (busy, total).
struct Ticks {
    chats: u64,
    nats: u64,
    machine: (u64, u64),
}

impl Ticks {
    fn now(stack: &Stack, chats: &[Chat]) -> anyhow::Result<Self> {
        Ok(Self {
            chats: chats
                .iter()
                .map(|c| c.cpu_ticks())
                .sum::<anyhow::Result<u64>>()?,
            nats: nats_ticks(stack)?,
            machine: machine_ticks()?,
        })
    }
}

/// The nats-server nodes' user and system time so far, in clock ticks.
fn nats_ticks(stack: &Stack) -> anyhow::Result<u64> {
    let pids: Vec<u32> = match &stack.nats {
        testkit::StackNats::One(nats) => nats.server.pid().into_iter().collect(),
        testkit::StackNats::Cluster(cluster) => {
            cluster.nodes.iter().filter_map(|n| n.pid()).collect()
        }
    };
    pids.into_iter().map(process_ticks).sum()
}

/// The machine's busy and total clock ticks so far, over all cores (/proc/stat).
fn machine_ticks() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .ok_or_else(|| anyhow::anyhow!("no cpu line in /proc/stat"))?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal …: idle and iowait are not busy.
    let total: u64 = cpu.iter().sum();
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}
