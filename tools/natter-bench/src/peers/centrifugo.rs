//! Centrifugo as a peer: a single node with the memory engine (its single-node default),
//! started from a temporary directory with a JSON config, and driven over its bidirectional
//! JSON protocol on WebSocket by a lean load client ([`client`]).
//!
//! How a chat maps onto Centrifugo here: every user has a personal channel `chat:<user>`
//! that their client subscribes to; a 1:1 message is a client-side publish into the
//! receiver's channel (the analogue of a natter client sending); a group is one channel
//! `group:<name>` all its online members subscribe to. Both namespaces keep history in the
//! engine, which is what clients recover from after a reconnect and read pages from.

mod client;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use self::client::{Client, Line};
use super::Run;
use crate::process::{free_port, rss_kib, wait_listening};

/// HMAC key the server checks connection JWTs (HS256) with.
const SECRET: &str = "natter-bench-centrifugo-hmac-secret-key-0123456789";
/// Connections opened at once, so the accept backlog never overflows.
const WAVE: usize = 500;
/// Publications a history reader's channel is seeded with.
const HISTORY_SEED: usize = 1000;
/// Publishes a seeding client keeps unanswered at most.
const SEED_WINDOW: usize = 512;
/// How long each storm client may take to reconnect and recover.
const STORM_TIMEOUT: Duration = Duration::from_secs(30);

/// The server's configuration (Centrifugo v6 format) for a node listening on `port`.
///
/// Everything not set here is Centrifugo's default, which is its documented production
/// setup for a single node: memory engine, no connection or rate limits, pings every 25 s.
fn config(port: u16) -> serde_json::Value {
    // One namespace per kind of conversation; both keep history so that clients recover
    // missed publications on reconnect and read the last messages.
    let namespace = |name: &str| {
        serde_json::json!({
            "name": name,
            // Enough for every workload here (the history read seeds 1,000).
            "history_size": 1000,
            "history_ttl": "24h",
            // Every subscription is recoverable: the server returns the stream position on
            // subscribe and replays what was missed when the client resubscribes from it.
            "force_recovery": true,
            // Any authenticated client may subscribe without a subscription token.
            "allow_subscribe_for_client": true,
            // Client-side publish: the analogue of a natter client sending a message (the
            // other Centrifugo pattern, the application backend publishing through the
            // server API, would add the backend's hop to every message).
            "allow_publish_for_client": true,
            // A subscriber can read the channel's history (pages of the last messages).
            "allow_history_for_subscriber": true,
        })
    };
    serde_json::json!({
        "http_server": { "address": "127.0.0.1", "port": port },
        "log": { "level": "warn" },
        "engine": { "type": "memory" },
        "client": { "token": { "hmac_secret_key": SECRET } },
        // The server API a backend would publish through (unused by the workloads).
        "http_api": { "key": "natter-bench-api-key" },
        "channel": { "namespaces": [namespace("chat"), namespace("group")] },
        // No anonymous usage reports from benchmark runs.
        "usage_stats": { "disabled": true },
    })
}

/// A running Centrifugo server, stopped when dropped.
pub struct Centrifugo {
    pid: u32,
    child: Child,
    url: String,
    /// Numbers each workload run, so every run uses users and channels of its own.
    runs: AtomicU64,
    dir: tempfile::TempDir,
}

impl Drop for Centrifugo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Centrifugo {
    /// Starts a fresh server with its own temporary state.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = crate::process::tool("centrifugo");
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config(port))?)?;
        let child = launch(&bin, dir.path(), &config_path)?;
        let mut server = Centrifugo {
            pid: child.id(),
            child,
            url: format!("ws://127.0.0.1:{port}/connection/websocket"),
            runs: AtomicU64::new(0),
            dir,
        };
        let exited = async {
            loop {
                if let Ok(Some(status)) = server.child.try_wait() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::select! {
            ready = wait_listening(port) => ready.map_err(|e| anyhow::anyhow!("{e}: {}", server.log()))?,
            status = exited => anyhow::bail!("Centrifugo ({}) exited with {status}: {}", bin.display(), server.log()),
        }
        Ok(server)
    }

    /// Opens idle authenticated connections up to each count in turn (cumulative, after a
    /// warm-up of 200) and returns (connections, KiB of server RSS growth per connection).
    pub async fn idle(&self, counts: &[usize]) -> anyhow::Result<Vec<(usize, f64)>> {
        let run = self.next_run();
        // Each connection is a distinct user subscribed to their personal channel; a task
        // per connection answers the server's pings so it stays open.
        let mut keepers = JoinSet::new();
        let alive = Arc::new(AtomicU64::new(0));
        // Warm up: the first connections allocate the runtime's fixed structures.
        self.keep_open(run, 0, 200, &mut keepers, &alive).await?;
        let base = rss_kib(self.pid)?;
        let mut opened = 200;
        let mut out = Vec::with_capacity(counts.len());
        for &target in counts {
            let more = (target + 200).saturating_sub(opened);
            self.keep_open(run, opened, more, &mut keepers, &alive)
                .await?;
            opened += more;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let rss = rss_kib(self.pid)?;
            let open = alive.load(Ordering::Relaxed) as usize;
            anyhow::ensure!(
                open == opened,
                "Centrifugo closed {} idle connections",
                opened - open
            );
            let n = opened - 200;
            out.push((n, rss.saturating_sub(base) as f64 / n.max(1) as f64));
        }
        Ok(out)
    }

    /// Persisted 1:1 messages: `pairs` senders to `pairs` receivers at `rate` messages
    /// per second in total for `seconds`.
    pub async fn direct(
        &self,
        epoch: Instant,
        rate: u64,
        seconds: u64,
        pairs: usize,
    ) -> anyhow::Result<Run> {
        anyhow::ensure!(rate > 0 && pairs > 0, "direct needs a rate and pairs");
        let run = self.next_run();
        let per_pair = rate as f64 / pairs as f64;
        let expected = (per_pair * seconds as f64).round() as u64;
        let receivers = self
            .open_many(
                (0..pairs)
                    .map(|i| personal(&format!("d{run}r{i}")))
                    .collect(),
            )
            .await?;
        let senders = self
            .open_many(
                (0..pairs)
                    .map(|i| personal(&format!("d{run}s{i}")))
                    .collect(),
            )
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 5);

        let mut receiving = JoinSet::new();
        for (mut rx, _) in receivers {
            receiving.spawn(async move {
                let mut mine = Vec::with_capacity(expected as usize);
                while (mine.len() as u64) < expected {
                    match tokio::time::timeout_at(deadline, rx.next_line()).await {
                        Ok(Ok(Some(Line::Publication(data)))) => {
                            let sent_us: u64 = data.parse().unwrap_or(0);
                            let now = epoch.elapsed().as_micros() as u64;
                            mine.push(now.saturating_sub(sent_us));
                        }
                        Ok(Ok(Some(_))) => {}
                        _ => break,
                    }
                }
                (mine, rx)
            });
        }
        let mut sending = JoinSet::new();
        for (i, (tx, _)) in senders.into_iter().enumerate() {
            let channel = format!("chat:d{run}r{i}");
            let interval = Duration::from_secs_f64(1.0 / per_pair);
            sending.spawn(send_at(
                tx, channel, interval, expected, epoch, deadline, false,
            ));
        }
        let mut sent = 0;
        while let Some(done) = sending.join_next().await {
            sent += done??.accepted;
        }
        let mut latencies_us = Vec::new();
        while let Some(done) = receiving.join_next().await {
            latencies_us.extend(done?.0);
        }
        Ok(Run {
            sent,
            received: latencies_us.len() as u64,
            latencies_us,
        })
    }

    /// Group fan-out: one of `online` members sends `rate` messages per second for
    /// `seconds`; each latency is to the last of the other online members.
    pub async fn group(
        &self,
        epoch: Instant,
        rate: u64,
        seconds: u64,
        online: usize,
    ) -> anyhow::Result<Run> {
        anyhow::ensure!(
            rate > 0 && online >= 2,
            "group needs a rate and two members"
        );
        let run = self.next_run();
        let channel = format!("group:g{run}");
        let total = (rate * seconds) as usize;
        let members = self
            .open_many(
                (0..online)
                    .map(|i| (format!("g{run}m{i}"), channel.clone()))
                    .collect(),
            )
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 5);
        // Per message: the latest arrival (µs since `epoch`) and how many members have it.
        let latest: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
        let got: Arc<Vec<AtomicU32>> = Arc::new((0..total).map(|_| AtomicU32::new(0)).collect());

        let mut members = members.into_iter().map(|(c, _)| c);
        let sender = members.next().expect("two members");
        let mut receiving = JoinSet::new();
        for mut member in members {
            let (latest, got) = (latest.clone(), got.clone());
            receiving.spawn(async move {
                let mut count = 0;
                while count < total {
                    match tokio::time::timeout_at(deadline, member.next_line()).await {
                        Ok(Ok(Some(Line::Publication(data)))) => {
                            let at = epoch.elapsed().as_micros() as u64;
                            let n = data
                                .split_once(':')
                                .and_then(|(n, _)| n.parse::<usize>().ok());
                            if let Some(n) = n.filter(|&n| n < total) {
                                latest[n].fetch_max(at, Ordering::Relaxed);
                                got[n].fetch_add(1, Ordering::Relaxed);
                                count += 1;
                            }
                        }
                        Ok(Ok(Some(_))) => {}
                        _ => break,
                    }
                }
                member
            });
        }
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let sent = tokio::spawn(send_at(
            sender,
            channel,
            interval,
            total as u64,
            epoch,
            deadline,
            true,
        ))
        .await??;
        let mut still_open = Vec::with_capacity(online);
        while let Some(member) = receiving.join_next().await {
            still_open.push(member?);
        }
        let others = (online - 1) as u32;
        let latencies_us: Vec<u64> = sent
            .sent_at_us
            .iter()
            .enumerate()
            .filter(|(n, _)| got[*n].load(Ordering::Relaxed) == others)
            .map(|(n, at)| latest[n].load(Ordering::Relaxed).saturating_sub(*at))
            .collect();
        Ok(Run {
            sent: sent.accepted,
            received: latencies_us.len() as u64,
            latencies_us,
        })
    }

    /// `reads` sequential reads of the last 50 messages of a conversation, in microseconds.
    pub async fn history(&self, reads: usize) -> anyhow::Result<Vec<u64>> {
        let run = self.next_run();
        let channel = format!("chat:h{run}");
        let (mut writer, _) = self.open(personal(&format!("h{run}w"))).await?;
        let seed = (0..HISTORY_SEED).map(|i| (channel.clone(), chat_line(i)));
        publish_all(&mut writer, seed).await?;
        writer.close().await;

        let (mut reader, _) = self.open(personal(&format!("h{run}"))).await?;
        let read = format!(r#""history":{{"channel":"{channel}","limit":50,"reverse":true}}"#);
        let mut out = Vec::with_capacity(reads);
        for _ in 0..reads {
            let started = Instant::now();
            let reply = reader.call(&read).await?;
            out.push(started.elapsed().as_micros() as u64);
            let reply: serde_json::Value = serde_json::from_str(&reply)?;
            let got = reply["history"]["publications"]
                .as_array()
                .map_or(0, Vec::len);
            anyhow::ensure!(got == 50, "history returned {got} publications, not 50");
        }
        reader.close().await;
        Ok(out)
    }

    /// `clients` clients each with `per_client` messages waiting reconnect at once; the
    /// time until all have received them.
    pub async fn storm(&self, clients: usize, per_client: usize) -> anyhow::Result<Duration> {
        // Centrifugo's default client.recovery_max_publication_limit: a client further behind
        // is told recovery failed and would reload from the application's database.
        anyhow::ensure!(
            per_client <= 300,
            "Centrifugo recovers at most 300 publications per subscription by default"
        );
        let run = self.next_run();
        let users: Vec<String> = (0..clients).map(|i| format!("st{run}-{i}")).collect();

        // Everyone subscribes once, notes the stream position, and goes away.
        let specs = users.iter().map(|u| personal(u)).collect();
        let mut positions = Vec::with_capacity(clients);
        let mut closing = JoinSet::new();
        for (client, subscribed) in self.open_many(specs).await? {
            anyhow::ensure!(
                subscribed["recoverable"] == true,
                "subscription not recoverable: {subscribed}"
            );
            let offset = subscribed["offset"].as_u64().unwrap_or(0);
            let epoch = subscribed["epoch"].as_str().unwrap_or_default().to_string();
            positions.push((offset, epoch));
            closing.spawn(client.close());
        }
        closing.join_all().await;

        // Messages arrive for them while they are away.
        let (mut writer, _) = self.open(personal(&format!("st{run}w"))).await?;
        let backlog = (0..per_client).flat_map(|k| {
            users
                .iter()
                .map(move |u| (format!("chat:{u}"), chat_line(k)))
        });
        publish_all(&mut writer, backlog).await?;
        writer.close().await;

        // All reconnect at once and recover from where they were.
        let (release, released) = tokio::sync::watch::channel(false);
        let mut storm = JoinSet::new();
        for (user, (offset, epoch)) in users.iter().zip(positions) {
            let mut released = released.clone();
            let (url, token, user) = (self.url.clone(), token(user)?, user.clone());
            storm.spawn(async move {
                let _ = released.wait_for(|go| *go).await;
                let recover = async {
                    let mut client = Client::connect(&url, &token).await?;
                    let channel = format!("chat:{user}");
                    let result = client.subscribe(&channel, Some((offset, &epoch))).await?;
                    let recovered = result["publications"].as_array().map_or(0, Vec::len);
                    anyhow::ensure!(
                        result["recovered"] == true && recovered == per_client,
                        "{user} recovered {recovered} of {per_client} publications: {result}"
                    );
                    Ok(client)
                };
                tokio::time::timeout(STORM_TIMEOUT, recover)
                    .await
                    .map_err(|_| anyhow::anyhow!("{user} did not recover in 30 s"))?
            });
        }
        let started = Instant::now();
        release.send(true)?;
        let mut reconnected = Vec::with_capacity(clients);
        while let Some(done) = storm.join_next().await {
            reconnected.push(done??);
        }
        let took = started.elapsed();
        drop(reconnected);
        Ok(took)
    }

    /// Opens idle connections for users `first..first + n` of `run`, each kept open (its
    /// pings answered) by a task in `keepers` and counted in `alive` while it is.
    async fn keep_open(
        &self,
        run: u64,
        first: usize,
        n: usize,
        keepers: &mut JoinSet<()>,
        alive: &Arc<AtomicU64>,
    ) -> anyhow::Result<()> {
        let specs = (first..first + n)
            .map(|i| personal(&format!("i{run}-{i}")))
            .collect();
        for (mut client, _) in self.open_many(specs).await? {
            let alive = alive.clone();
            alive.fetch_add(1, Ordering::Relaxed);
            keepers.spawn(async move {
                while let Ok(Some(_)) = client.next_line().await {}
                alive.fetch_sub(1, Ordering::Relaxed);
            });
        }
        Ok(())
    }

    fn next_run(&self) -> u64 {
        self.runs.fetch_add(1, Ordering::Relaxed)
    }

    /// What the server logged, for error messages.
    fn log(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("centrifugo.log")).unwrap_or_default();
        format!("its log says: {}", log.trim())
    }

    /// Connects `user` and subscribes to `channel`; returns the subscribe result too.
    async fn open(
        &self,
        (user, channel): (String, String),
    ) -> anyhow::Result<(Client, serde_json::Value)> {
        let mut client = Client::connect(&self.url, &token(&user)?).await?;
        let subscribed = client.subscribe(&channel, None).await?;
        Ok((client, subscribed))
    }

    /// Connects and subscribes (user, channel) pairs, `WAVE` at a time; in order.
    async fn open_many(
        &self,
        specs: Vec<(String, String)>,
    ) -> anyhow::Result<Vec<(Client, serde_json::Value)>> {
        let mut out = Vec::with_capacity(specs.len());
        for wave in specs.chunks(WAVE) {
            let mut tasks = Vec::with_capacity(wave.len());
            for (user, channel) in wave {
                let (url, token, channel) = (self.url.clone(), token(user)?, channel.clone());
                tasks.push(tokio::spawn(async move {
                    let mut client = Client::connect(&url, &token).await?;
                    let subscribed = client.subscribe(&channel, None).await?;
                    anyhow::Ok((client, subscribed))
                }));
            }
            for task in tasks {
                out.push(task.await??);
            }
        }
        Ok(out)
    }
}

/// Runs `bin` with the config at `config` from `dir`, its output going to
/// `dir/centrifugo.log`.
fn launch(
    bin: &std::path::Path,
    dir: &std::path::Path,
    config: &std::path::Path,
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join("centrifugo.log"))?;
    let mut command = Command::new(bin);
    command
        .arg("--config")
        .arg(config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Only the config file configures it: no CENTRIFUGO_* variables from outside.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CENTRIFUGO_") {
            command.env_remove(name);
        }
    }
    command.spawn().map_err(|e| {
        anyhow::anyhow!(
            "cannot run Centrifugo ({}): {e}; install it with scripts/install-deps bench \
             (or point NATTER_CENTRIFUGO at a centrifugo v6 binary)",
            bin.display()
        )
    })
}

/// A user and their personal channel.
fn personal(user: &str) -> (String, String) {
    (user.to_string(), format!("chat:{user}"))
}

/// A connection JWT for `user` (HS256, `sub` and `exp`): the same kind natter takes.
fn token(user: &str) -> anyhow::Result<String> {
    Ok(gateway::mint_token(SECRET, user, 24 * 3600))
}

/// A message body about as long as a chat line.
fn chat_line(i: usize) -> String {
    format!("backlog message {i}, about as long as a chat line")
}

/// What a sender did.
struct Sent {
    /// Publishes the server accepted.
    accepted: u64,
    /// When each publish was sent, µs since the epoch.
    sent_at_us: Vec<u64>,
}

/// Publishes `expected` messages into `channel`, one per `interval` (bursting to catch up
/// when late), without waiting for each reply; each data carries its send time in µs since
/// `epoch` (prefixed by its number and `:` when `numbered`). Stops when every publish is
/// answered, or at `deadline`.
async fn send_at(
    mut client: Client,
    channel: String,
    interval: Duration,
    expected: u64,
    epoch: Instant,
    deadline: tokio::time::Instant,
    numbered: bool,
) -> anyhow::Result<Sent> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut sent_at_us = Vec::with_capacity(expected as usize);
    let (mut answered, mut accepted) = (0u64, 0u64);
    loop {
        let n = sent_at_us.len() as u64;
        tokio::select! {
            _ = tick.tick(), if n < expected => {
                let now = epoch.elapsed().as_micros() as u64;
                let data = if numbered { format!("{n}:{now}") } else { now.to_string() };
                client.publish(&channel, &data).await?;
                sent_at_us.push(now);
            }
            line = client.next_line() => match line? {
                Some(Line::Reply { error, .. }) => {
                    answered += 1;
                    accepted += u64::from(!error);
                    if n >= expected && answered >= n {
                        break;
                    }
                }
                Some(_) => {}
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    client.close().await;
    Ok(Sent {
        accepted,
        sent_at_us,
    })
}

/// Publishes every (channel, data) with at most `SEED_WINDOW` unanswered, and waits until
/// all are accepted.
async fn publish_all(
    client: &mut Client,
    items: impl Iterator<Item = (String, String)>,
) -> anyhow::Result<()> {
    let mut items = items.peekable();
    let mut in_flight = 0usize;
    while items.peek().is_some() || in_flight > 0 {
        while in_flight < SEED_WINDOW
            && let Some((channel, data)) = items.next()
        {
            client.publish(&channel, &data).await?;
            in_flight += 1;
        }
        match client.next_line().await? {
            Some(Line::Reply { error: false, .. }) => in_flight -= 1,
            Some(Line::Reply { text, .. }) => anyhow::bail!("Centrifugo refused a publish: {text}"),
            Some(_) => {}
            None => anyhow::bail!("Centrifugo closed the publishing connection"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn idle_connections_grow_the_server() {
        let server = Centrifugo::start().await.unwrap();
        let figures = server.idle(&[20, 50]).await.unwrap();
        assert_eq!(figures.iter().map(|f| f.0).collect::<Vec<_>>(), [20, 50]);
        let (_, per_conn) = figures[1];
        assert!(per_conn > 0.0, "RSS per connection {per_conn} KiB");
        assert!(rss_kib(server.pid).unwrap() > 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn direct_messages_all_arrive() {
        let server = Centrifugo::start().await.unwrap();
        let run = server.direct(Instant::now(), 200, 2, 5).await.unwrap();
        assert_eq!(run.sent, 400);
        assert_eq!(run.received, 400);
        assert_eq!(run.latencies_us.len(), 400);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn group_messages_reach_every_online_member() {
        let server = Centrifugo::start().await.unwrap();
        let run = server.group(Instant::now(), 20, 1, 20).await.unwrap();
        assert_eq!(run.sent, 20);
        assert_eq!(run.received, 20);
        assert_eq!(run.latencies_us.len(), 20);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn history_reads_return_the_last_50() {
        let server = Centrifugo::start().await.unwrap();
        let reads = server.history(10).await.unwrap();
        assert_eq!(reads.len(), 10);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn storm_clients_all_recover() {
        let server = Centrifugo::start().await.unwrap();
        let took = server.storm(100, 3).await.unwrap();
        assert!(took < STORM_TIMEOUT);
    }

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("centrifugo");
        let error = launch(&missing, dir.path(), &dir.path().join("config.json"))
            .expect_err("no binary there");
        assert!(
            error.to_string().contains("scripts/install-deps bench"),
            "{error}"
        );
    }
}
