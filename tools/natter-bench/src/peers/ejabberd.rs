//! Ejabberd as a peer: Debian's ejabberd (scripts/install-deps bench) started from a temporary
//! directory with the packaged production configuration plus the changes marked in
//! `ejabberd/ejabberd.yml`, driven over plain-TCP XMPP by the lean client in `ejabberd/xmpp.rs`.
//!
//! The server runs as `erl ... -s ejabberd` directly (what `ejabberdctl foreground` runs, minus
//! its switch to the `ejabberd` system user and its fixed node name): the VM is not distributed
//! (no node name, no epmd, no cookie), so any number of instances can run side by side, each
//! with its own config, mnesia spool and logs in its temporary directory. The spawned process
//! is beam.smp itself (`erl` execs it), which is what `pid()` returns and Drop kills.

mod xmpp;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};

use self::xmpp::{Conn, DOMAIN, Stanza};
use super::Run;
use crate::process::{free_port, rss_kib, wait_listening};

const CONFIG: &str = include_str!("ejabberd/ejabberd.yml");
/// Connections opened concurrently when many are needed.
const WAVE: usize = 500;
/// The offline store keeps at most this many messages per user (the packaged
/// `max_user_offline_messages`).
const OFFLINE_LIMIT: usize = 100;

/// A running Ejabberd server, stopped when dropped.
pub struct Ejabberd {
    pid: u32,
    port: u16,
    child: Child,
    /// Numbers the bench's users so each workload gets fresh ones.
    users: AtomicUsize,
    /// Numbers the MUC rooms so repeated group runs get fresh ones.
    rooms: AtomicUsize,
    _dir: tempfile::TempDir,
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        // SIGKILL: its state is thrown away with the temporary directory, and a SIGTERM'd VM
        // takes seconds to stop. Its helpers (erl_child_setup, inet_gethost) exit with it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where Debian's ejabberd keeps its Erlang applications.
fn erl_libs() -> anyhow::Result<PathBuf> {
    let libs = std::env::var_os("NATTER_EJABBERD_ERL_LIBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/x86_64-linux-gnu"));
    let found = std::fs::read_dir(&libs)
        .map(|d| {
            d.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("ejabberd-") && e.path().join("ebin/ejabberd.app").exists()
            })
        })
        .unwrap_or(false);
    anyhow::ensure!(
        found && Path::new("/usr/bin/erl").exists(),
        "ejabberd is not installed (no {}/ejabberd-*/ebin/ejabberd.app or no /usr/bin/erl): \
         run scripts/install-deps bench",
        libs.display()
    );
    Ok(libs)
}

impl Ejabberd {
    /// Starts a fresh server with its own temporary state.
    pub async fn start() -> anyhow::Result<Self> {
        let libs = erl_libs()?;
        let dir = tempfile::Builder::new()
            .prefix("natter-ejabberd")
            .tempdir()?;
        let port = free_port()?;
        let config = dir.path().join("ejabberd.yml");
        std::fs::write(&config, CONFIG.replace("{PORT}", &port.to_string()))?;
        let spool = dir.path().join("spool");
        let logs = dir.path().join("logs");
        std::fs::create_dir(&spool)?;
        std::fs::create_dir(&logs)?;
        let out = std::fs::File::create(logs.join("stdout.log"))?;
        let child = Command::new("/usr/bin/erl")
            // The emulator flags ejabberdctl passes (kernel poll, room for many processes),
            // and +Bd: a Ctrl-C at the bench's terminal stops the VM too.
            .args(["+K", "true", "+P", "250000", "+Bd", "-noinput", "-noshell"])
            .args(["-mnesia", "dir"])
            .arg(format!("\"{}\"", spool.display()))
            .args(["-s", "ejabberd"])
            .env("ERL_LIBS", &libs)
            .env("EJABBERD_CONFIG_PATH", &config)
            .env("EJABBERD_LOG_PATH", logs.join("ejabberd.log"))
            .env("ERL_CRASH_DUMP", logs.join("erl_crash.dump"))
            .env("ERL_CRASH_DUMP_BYTES", "0")
            .env("ERL_MAX_PORTS", "32000")
            .env("ERL_MAX_ETS_TABLES", "1400")
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting /usr/bin/erl")?;
        let mut server = Ejabberd {
            pid: child.id(),
            port,
            child,
            users: AtomicUsize::new(0),
            rooms: AtomicUsize::new(0),
            _dir: dir,
        };
        let ready = tokio::select! {
            r = wait_listening(port) => r,
            r = server.exited() => Err(r),
        };
        if let Err(e) = ready {
            let log = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap_or_default();
            anyhow::bail!(
                "ejabberd did not start: {e}\n{}{}",
                tail(&log("stdout.log")),
                tail(&log("error.log"))
            );
        }
        Ok(server)
    }

    async fn exited(&mut self) -> anyhow::Error {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return anyhow::anyhow!("the VM exited ({status})"),
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return e.into(),
            }
        }
    }

    fn fresh_users(&self, n: usize) -> Vec<String> {
        let first = self.users.fetch_add(n, Ordering::Relaxed);
        (first..first + n).map(|i| format!("u{i}")).collect()
    }

    /// Registers `n` fresh users, logs each in and makes it available.
    async fn online(&self, n: usize) -> anyhow::Result<Vec<Conn>> {
        let users = self.offline(n).await?;
        self.login(&users).await
    }

    /// Logs registered users in and makes them available, in waves of 500.
    async fn login(&self, users: &[String]) -> anyhow::Result<Vec<Conn>> {
        let mut conns = Vec::with_capacity(users.len());
        for wave in users.chunks(WAVE) {
            let tasks: Vec<_> = wave
                .iter()
                .map(|user| {
                    let (port, user) = (self.port, user.clone());
                    tokio::spawn(async move {
                        let mut c = Conn::login(port, &user).await?;
                        c.available(|_| {}).await?;
                        anyhow::Ok(c)
                    })
                })
                .collect();
            for t in tasks {
                conns.push(t.await??);
            }
        }
        Ok(conns)
    }

    /// Registers `n` fresh users and leaves them offline. Over a few long-lived streams rather
    /// than one each: registration hashes the password (PBKDF2) in the registering session,
    /// and hundreds of sessions doing it at once would leave the VM's allocators holding
    /// hundreds of MB, which would skew the idle run's baseline.
    async fn offline(&self, n: usize) -> anyhow::Result<Vec<String>> {
        const STREAMS: usize = 4;
        // ejabberd closes a stream that has not authenticated within its negotiation timeout
        // (about two minutes), and registrations run at roughly 20/s per stream: so at most
        // 500 per stream, 4 streams at a time.
        const PER_STREAM: usize = 500;
        let users = self.fresh_users(n);
        for streams in users.chunks(PER_STREAM * STREAMS) {
            let tasks: Vec<_> = streams
                .chunks(PER_STREAM)
                .map(|chunk| {
                    let (port, chunk) = (self.port, chunk.to_vec());
                    tokio::spawn(async move { Conn::register(port, &chunk).await })
                })
                .collect();
            for t in tasks {
                t.await??;
            }
        }
        Ok(users)
    }

    /// Opens idle authenticated connections up to each count in turn (cumulative, after a
    /// warm-up of 200) and returns (connections, KiB of server RSS growth per connection).
    pub async fn idle(&self, counts: &[usize]) -> anyhow::Result<Vec<(usize, f64)>> {
        // Each connection is a distinct user, authenticated, bound and available; only the
        // sockets are kept. The users are registered beforehand, so the measured growth is
        // the sessions', not the registrations' (whose stored SCRAM credentials, like natter's
        // user records, are in the baseline).
        let total = 200 + counts.iter().copied().max().unwrap_or(0);
        let mut users = self.offline(total).await?.into_iter();
        let mut kept = Vec::new();
        self.login_all(users.by_ref().take(200), &mut kept).await?;
        // The baseline once the VM's memory has settled after the registrations and the
        // warm-up: three readings 250 ms apart within 0.5% (at most 10 s).
        let mut readings = vec![rss_kib(self.pid)?];
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            readings.push(rss_kib(self.pid)?);
            let last3 = &readings[readings.len().saturating_sub(3)..];
            let (lo, hi) = (last3.iter().min().unwrap(), last3.iter().max().unwrap());
            if last3.len() == 3 && (hi - lo) as f64 <= *hi as f64 * 0.005 {
                break;
            }
        }
        let base = *readings.last().unwrap();
        let base_count = kept.len();
        let mut out = Vec::new();
        for &target in counts {
            let more = (target + base_count).saturating_sub(kept.len());
            self.login_all(users.by_ref().take(more), &mut kept).await?;
            // The same settling pause as natter's idle run before reading RSS.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let rss = rss_kib(self.pid)?;
            let n = kept.len() - base_count;
            out.push((n, rss.saturating_sub(base) as f64 / n as f64));
        }
        Ok(out)
    }

    /// Logs registered users in and makes them available, in waves of 500, keeping their
    /// sockets.
    async fn login_all(
        &self,
        users: impl Iterator<Item = String>,
        kept: &mut Vec<(OwnedReadHalf, OwnedWriteHalf)>,
    ) -> anyhow::Result<()> {
        let users: Vec<_> = users.collect();
        for wave in users.chunks(WAVE) {
            for c in self.login(wave).await? {
                kept.push((c.reader.into_inner(), c.writer));
            }
        }
        Ok(())
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
        anyhow::ensure!(pairs > 0 && rate > 0, "direct needs pairs and a rate");
        let per_pair = rate as f64 / pairs as f64;
        let expected = (per_pair * seconds as f64).round() as u64;
        let receivers = self.online(pairs).await?;
        let senders = self.online(pairs).await?;
        let sent = Arc::new(AtomicU64::new(0));
        let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let mut rx_tasks = Vec::new();
        let mut tx_tasks = Vec::new();
        for (rx, tx) in receivers.into_iter().zip(senders) {
            let to = rx.jid.clone();
            rx_tasks.push(tokio::spawn(async move {
                let mut reader = rx.reader;
                let _writer = rx.writer;
                let mut latencies = Vec::with_capacity(expected as usize);
                let deadline = end + Duration::from_secs(5);
                while (latencies.len() as u64) < expected {
                    let s = match tokio::time::timeout_at(deadline, reader.next()).await {
                        Ok(s) => s?,
                        Err(_) => break,
                    };
                    if s.name() == "message"
                        && s.attr("type") == Some("chat")
                        && let Some(us) = s.text("body").and_then(|b| b.parse::<u64>().ok())
                    {
                        let now = epoch.elapsed().as_micros() as u64;
                        latencies.push(now.saturating_sub(us));
                    }
                }
                anyhow::Ok(latencies)
            }));
            let sent = sent.clone();
            tx_tasks.push(tokio::spawn(async move {
                let Conn {
                    reader, mut writer, ..
                } = tx;
                let drain = tokio::spawn(reader.drain());
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_pair));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut n = 0;
                while n < expected && tokio::time::Instant::now() < end + Duration::from_secs(5) {
                    tick.tick().await;
                    let body = epoch.elapsed().as_micros();
                    let msg =
                        format!("<message to='{to}' type='chat'><body>{body}</body></message>");
                    use tokio::io::AsyncWriteExt;
                    if writer.write_all(msg.as_bytes()).await.is_err() {
                        break;
                    }
                    n += 1;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                (drain, writer)
            }));
        }
        // Senders stay connected until the receivers are done.
        let mut keep = Vec::new();
        for t in tx_tasks {
            keep.push(t.await?);
        }
        let mut run = Run::default();
        for t in rx_tasks {
            let latencies = t.await??;
            run.received += latencies.len() as u64;
            run.latencies_us.extend(latencies);
        }
        for (drain, _) in keep {
            drain.abort();
        }
        run.sent = sent.load(Ordering::Relaxed);
        Ok(run)
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
            online >= 2 && rate > 0,
            "group needs 2 occupants and a rate"
        );
        let expected = (rate * seconds) as usize;
        let room = match self.rooms.fetch_add(1, Ordering::Relaxed) {
            0 => format!("g@conference.{DOMAIN}"),
            n => format!("g{n}@conference.{DOMAIN}"),
        };
        let members = self.online(online).await?;
        let last: Arc<Vec<AtomicU64>> =
            Arc::new((0..expected).map(|_| AtomicU64::new(0)).collect());
        let counts: Arc<Vec<AtomicU32>> =
            Arc::new((0..expected).map(|_| AtomicU32::new(0)).collect());
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<u64>();
        let recipients = (online - 1) as u32;
        let mut members = members.into_iter();
        let mut owner = members.next().context("no members")?;
        // The owner creates the room; its later traffic (others' presences, its own echoes) is
        // drained.
        if join(&mut owner, &room, "m0").await? {
            owner
                .send(&format!(
                    "<iq type='set' id='cfg' to='{room}'><query \
                     xmlns='http://jabber.org/protocol/muc#owner'>\
                     <x xmlns='jabber:x:data' type='submit'/></query></iq>"
                ))
                .await?;
            let s = owner
                .reader
                .next_where(|s| s.attr("id") == Some("cfg"))
                .await?;
            anyhow::ensure!(
                s.attr("type") == Some("result"),
                "configuring {room}: {}",
                s.0
            );
        }
        let Conn {
            reader, mut writer, ..
        } = owner;
        let mut tasks = vec![tokio::spawn(async move {
            reader.drain().await;
            anyhow::Ok(())
        })];
        let mut joins = Vec::new();
        for (i, mut member) in members.enumerate() {
            let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
            joins.push(joined_rx);
            let (room, counts, last, done_tx) =
                (room.clone(), counts.clone(), last.clone(), done_tx.clone());
            tasks.push(tokio::spawn(async move {
                join(&mut member, &room, &format!("m{}", i + 1)).await?;
                let _ = joined_tx.send(());
                loop {
                    let s = member.reader.next().await?;
                    if s.name() != "message" || s.attr("type") != Some("groupchat") {
                        continue;
                    }
                    let Some((seq, us)) = s.text("body").and_then(|b| b.split_once(':')) else {
                        continue;
                    };
                    let (Ok(seq), Ok(us)) = (seq.parse::<usize>(), us.parse::<u64>()) else {
                        continue;
                    };
                    if seq >= counts.len() {
                        continue;
                    }
                    let now = epoch.elapsed().as_micros() as u64;
                    // The arrival time first, so whoever completes the count sees the latest.
                    last[seq].fetch_max(now, Ordering::AcqRel);
                    if counts[seq].fetch_add(1, Ordering::AcqRel) + 1 == recipients {
                        let _ = done_tx.send(last[seq].load(Ordering::Acquire).saturating_sub(us));
                    }
                }
            }));
        }
        drop(done_tx);
        for (i, joined) in joins.into_iter().enumerate() {
            if joined.await.is_err() {
                let task = tasks.swap_remove(i + 1);
                let err = match task.await {
                    Ok(Err(e)) => e,
                    _ => anyhow::anyhow!("an occupant's task ended"),
                };
                for t in &tasks {
                    t.abort();
                }
                return Err(err.context("an occupant could not join"));
            }
        }
        let mut run = Run::default();
        let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let deadline = end + Duration::from_secs(5);
        let mut next = 0;
        let result: anyhow::Result<()> = async {
            use tokio::io::AsyncWriteExt;
            while (run.received as usize) < expected {
                tokio::select! {
                    _ = tick.tick(), if next < expected => {
                        let us = epoch.elapsed().as_micros();
                        let msg = format!(
                            "<message to='{room}' type='groupchat'><body>{next}:{us}</body></message>"
                        );
                        writer.write_all(msg.as_bytes()).await?;
                        next += 1;
                        run.sent += 1;
                    }
                    lat = done_rx.recv() => match lat {
                        Some(lat) => {
                            run.received += 1;
                            run.latencies_us.push(lat);
                        }
                        None => anyhow::bail!("every occupant's task ended"),
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            Ok(())
        }
        .await;
        for t in &tasks {
            t.abort();
        }
        result?;
        Ok(run)
    }

    /// `reads` sequential reads of the last 50 messages of a conversation, in microseconds.
    pub async fn history(&self, reads: usize) -> anyhow::Result<Vec<u64>> {
        const SEED: usize = 1000;
        const PAGE: usize = 50;
        let mut users = self.online(2).await?.into_iter();
        let (mut a, b) = (
            users.next().context("no user")?,
            users.next().context("no user")?,
        );
        let peer = b.jid.clone();
        let Conn {
            reader: b_reader,
            writer: _b_writer,
            ..
        } = b;
        let drain = tokio::spawn(b_reader.drain());
        // Seed: a writes to b (online, so nothing goes to the offline store). mod_mam archives
        // in the sender's session as it handles each message, so once a ping sent after them
        // is answered, they are all in a's archive.
        let mut batch = String::new();
        for n in 0..SEED {
            batch.push_str(&format!(
                "<message to='{peer}' type='chat'><body>seed {n}</body></message>"
            ));
            if batch.len() > 16_000 {
                a.send(&batch).await?;
                batch.clear();
            }
        }
        a.send(&batch).await?;
        a.sync("seeded").await?;
        let mut out = Vec::with_capacity(reads);
        for i in 0..reads {
            let id = format!("mam{i}");
            let query = format!(
                "<iq type='set' id='{id}'><query xmlns='urn:xmpp:mam:2' queryid='{id}'>\
                 <x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
                 <field var='with'><value>{peer}</value></field></x>\
                 <set xmlns='http://jabber.org/protocol/rsm'><max>{PAGE}</max><before/></set>\
                 </query></iq>"
            );
            let started = Instant::now();
            a.send(&query).await?;
            let mut page = 0;
            let fin = loop {
                let s = a.reader.next().await?;
                match s.name() {
                    "message" if s.contains(&format!("queryid='{id}'")) => page += 1,
                    "iq" if s.attr("id") == Some(id.as_str()) => break s,
                    _ => {}
                }
            };
            out.push(started.elapsed().as_micros() as u64);
            anyhow::ensure!(
                fin.attr("type") == Some("result") && fin.contains("<fin"),
                "MAM query failed: {}",
                fin.0
            );
            anyhow::ensure!(page == PAGE, "MAM page {i} had {page} messages, not {PAGE}");
            if i == 0 {
                let count = fin.text("count").and_then(|c| c.parse::<usize>().ok());
                anyhow::ensure!(
                    count.is_some_and(|c| c >= SEED),
                    "the archive holds {count:?} messages with {peer}, not {SEED}"
                );
            }
        }
        drain.abort();
        Ok(out)
    }

    /// `clients` clients each with `per_client` messages waiting reconnect at once; the
    /// time until all have received them.
    pub async fn storm(&self, clients: usize, per_client: usize) -> anyhow::Result<Duration> {
        anyhow::ensure!(
            per_client <= OFFLINE_LIMIT,
            "ejabberd's packaged max_user_offline_messages keeps {OFFLINE_LIMIT} per user"
        );
        let users = self.offline(clients).await?;
        // Each client logs in once beforehand, without presence (so nothing is delivered),
        // as a device that has used its account before: it has the account's SCRAM salted
        // password cached, and the storm does not time the bench's own PBKDF2s.
        for wave in users.chunks(WAVE) {
            let tasks: Vec<_> = wave
                .iter()
                .map(|user| {
                    let (port, user) = (self.port, user.clone());
                    tokio::spawn(async move { Conn::login(port, &user).await?.close().await })
                })
                .collect();
            for t in tasks {
                t.await??;
            }
        }
        // Senders in parallel, each to its share of the clients. mod_offline stores in the
        // sender's session as it routes each message to an offline user, so once a ping sent
        // after them is answered, they are all stored.
        const SENDERS: usize = 8;
        let senders = self.online(SENDERS).await?;
        let share = users.len().div_ceil(SENDERS).max(1);
        let tasks: Vec<_> = senders
            .into_iter()
            .zip(users.chunks(share).map(<[String]>::to_vec))
            .map(|(mut sender, users)| {
                tokio::spawn(async move {
                    let mut batch = String::new();
                    for user in &users {
                        for n in 0..per_client {
                            batch.push_str(&format!(
                                "<message to='{user}@{DOMAIN}' type='chat'>\
                                 <body>offline {n}</body></message>"
                            ));
                        }
                        if batch.len() > 16_000 {
                            sender.send(&batch).await?;
                            batch.clear();
                        }
                    }
                    sender.send(&batch).await?;
                    sender.sync("stored").await?;
                    anyhow::Ok(sender)
                })
            })
            .collect();
        // The senders stay connected through the storm.
        let mut _senders = Vec::new();
        for t in tasks {
            _senders.push(t.await??);
        }
        let (release, wait) = watch::channel(false);
        let port = self.port;
        // A JoinSet: if the storm fails, dropping it aborts the clients left.
        let mut tasks = tokio::task::JoinSet::new();
        for user in users {
            let mut wait = wait.clone();
            tasks.spawn(async move {
                wait.wait_for(|go| *go).await?;
                let mut c = Conn::login(port, &user).await?;
                let mut got = 0;
                let is_offline = |s: &Stanza| {
                    s.name() == "message"
                        && s.attr("type") == Some("chat")
                        && s.contains("<body>offline ")
                };
                c.available(|s| got += usize::from(is_offline(&s))).await?;
                while got < per_client {
                    c.reader.next_where(is_offline).await?;
                    got += 1;
                }
                anyhow::Ok(c)
            });
        }
        let started = Instant::now();
        release.send(true)?;
        let all = async {
            let mut conns = Vec::with_capacity(tasks.len());
            while let Some(t) = tasks.join_next().await {
                conns.push(t??);
            }
            anyhow::Ok(conns)
        };
        let conns = tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .context("the storm's clients did not all get their messages within 60 s")??;
        let took = started.elapsed();
        drop(conns);
        Ok(took)
    }
}

/// Joins a MUC room (without history) and waits for the self-presence; true if this created it.
async fn join(conn: &mut Conn, room: &str, nick: &str) -> anyhow::Result<bool> {
    conn.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>\
         <history maxstanzas='0'/></x></presence>"
    ))
    .await?;
    let me = format!("{room}/{nick}");
    let s = tokio::time::timeout(
        xmpp::LOGIN_TIMEOUT,
        conn.reader
            .next_where(|s| s.name() == "presence" && s.attr("from") == Some(me.as_str())),
    )
    .await
    .with_context(|| format!("no self-presence from {room}"))??;
    anyhow::ensure!(
        s.attr("type").is_none() && s.contains("code='110'"),
        "joining {room}: {}",
        s.0
    );
    Ok(s.contains("code='201'"))
}

fn tail(s: &str) -> String {
    let lines: Vec<_> = s.lines().collect();
    let mut out = lines[lines.len().saturating_sub(20)..].join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(us: &[u64]) -> String {
        let mut v = us.to_vec();
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        format!(
            "n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
            v.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        )
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ejabberd_idle_grows_per_connection() {
        let server = Ejabberd::start().await.unwrap();
        let pid = server.pid;
        assert!(
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap()
                .starts_with("beam")
        );
        let figures = server.idle(&[50, 500]).await.unwrap();
        eprintln!("ejabberd idle: {figures:?}");
        assert_eq!(figures.iter().map(|f| f.0).collect::<Vec<_>>(), [50, 500]);
        let (_, kib) = figures[1];
        assert!(kib > 0.0, "RSS growth per connection {kib} KiB");
        drop(server);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "beam.smp {pid} outlived the drop"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ejabberd_direct_delivers_everything() {
        let server = Ejabberd::start().await.unwrap();
        let run = server.direct(Instant::now(), 100, 2, 5).await.unwrap();
        eprintln!("ejabberd direct: {}", summary(&run.latencies_us));
        assert_eq!(run.sent, 200);
        assert_eq!(run.received, 200);
        assert_eq!(run.latencies_us.len(), 200);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ejabberd_group_reaches_every_occupant() {
        let server = Ejabberd::start().await.unwrap();
        let run = server.group(Instant::now(), 20, 1, 20).await.unwrap();
        eprintln!("ejabberd group: {}", summary(&run.latencies_us));
        assert_eq!(run.sent, 20);
        assert_eq!(run.received, 20);
        assert_eq!(run.latencies_us.len(), 20);
        // A second run gets its own room.
        let run = server.group(Instant::now(), 10, 1, 3).await.unwrap();
        assert_eq!(run.received, 10);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ejabberd_history_reads_full_pages() {
        let server = Ejabberd::start().await.unwrap();
        let reads = server.history(10).await.unwrap();
        eprintln!("ejabberd history: {}", summary(&reads));
        assert_eq!(reads.len(), 10);
        assert!(reads.iter().all(|&us| us > 0));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ejabberd_storm_delivers_offline_messages() {
        let server = Ejabberd::start().await.unwrap();
        let took = server.storm(50, 3).await.unwrap();
        eprintln!("ejabberd storm: {took:?}");
        assert!(took < Duration::from_secs(60));
    }
}
