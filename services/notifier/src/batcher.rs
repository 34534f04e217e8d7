//! The batcher: one task that owns every open window. It takes offline-message events from
//! the durable consumer, adds each to the windows of the users it names (the first event
//! for a user opens their window), hands each closed window to a delivery task, drops a
//! window when its user comes online, and acknowledges an event once every digest it was
//! counted in is delivered or dropped.
//!
//! An event is acknowledged late on purpose: until then it stays in JetStream, so a
//! notifier that stops or dies loses nothing. Held events get a progress acknowledgement
//! every third of the consumer's ack wait (`NotifierConfig::ack_wait_ms`, 30 s), so the ack
//! wait need not cover a window plus a whole retry budget, and a dead notifier's events come
//! back within it. The consumer's `max_ack_pending` (`max_pending_events`) bounds what this
//! task holds in memory.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use protocol::UserId;
use protocol::payloads::{OfflineMessage, UserPresence};
use tokio::task::{Id as TaskId, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Courier, Outcome};
use crate::digest::Digest;
use crate::metrics::NotifierMetrics;

/// A window never closes sooner than this after its first event arrived (capped by the
/// window itself). Windows run from when an event was stored, so after a restart the
/// redelivered events of an old window are gathered for this long before its digest goes.
const CATCH_UP: Duration = Duration::from_secs(1);

pub struct Batcher {
    courier: Arc<Courier>,
    metrics: NotifierMetrics,
    window: Duration,
    max_concurrent_deliveries: usize,
    /// How often held events get a progress acknowledgement.
    progress_every: Duration,
    /// Events not yet acknowledged, by stream sequence.
    events: HashMap<u64, Held>,
    /// Open windows, by user.
    windows: HashMap<UserId, Window>,
    /// When each open window closes.
    due: BTreeSet<(Instant, UserId)>,
    delivering: JoinSet<Outcome>,
    /// The events each delivery task's digest counts.
    delivering_events: HashMap<TaskId, Vec<u64>>,
}

/// An event waiting for the digests it was counted in.
struct Held {
    msg: jetstream::Message,
    /// Digests (one per user it names) not yet delivered or dropped.
    waiting: usize,
}

/// One user's open window.
struct Window {
    /// The stream sequence of its first event: names the digest.
    first: u64,
    closes: Instant,
    digest: Digest,
    events: Vec<u64>,
}

impl Batcher {
    pub fn new(courier: Arc<Courier>) -> Self {
        let config = &courier.config;
        Self {
            metrics: courier.metrics.clone(),
            window: Duration::from_millis(config.window_ms),
            progress_every: Duration::from_millis(config.ack_wait_ms / 3),
            max_concurrent_deliveries: config.max_concurrent_deliveries,
            courier,
            events: HashMap::new(),
            windows: HashMap::new(),
            due: BTreeSet::new(),
            delivering: JoinSet::new(),
            delivering_events: HashMap::new(),
        }
    }

    /// Batches until `stop`, then hands every held event back (see [`Self::hand_back`]).
    pub async fn serve(
        mut self,
        stream: jetstream::stream::Stream,
        consumer: consumer::PullConsumer,
        batch: usize,
        mut presence: async_nats::Subscriber,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut messages = plumbing::bus::Pulled::start(&consumer, batch).await?;
        let mut progress = tokio::time::interval(self.progress_every);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_due = self.due.first().map(|(at, _)| *at);
            let can_deliver = self.delivering.len() < self.max_concurrent_deliveries;
            // Biased: finished deliveries and presence changes first, intake last, so a
            // busy intake never starves a user's online event or a due window.
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(done) = self.delivering.join_next_with_id(), if !self.delivering.is_empty() => {
                    self.on_delivered(done).await;
                }
                Some(msg) = presence.next() => self.on_presence(&msg.payload).await,
                _ = sleep_until(next_due), if next_due.is_some() && can_deliver => self.close_due(),
                _ = progress.tick() => self.still_working().await,
                msg = messages.next(&stop) => match msg {
                    Some(msg) => self.on_event(msg).await,
                    None => break,
                },
            }
            self.metrics.pending_events.set(self.events.len() as i64);
            self.metrics
                .pending_users
                .set((self.windows.len() + self.delivering.len()) as i64);
        }
        drop(messages);
        self.hand_back(&stream, &consumer).await;
        Ok(())
    }

    /// Tells JetStream every held event is still being worked on, so it is not delivered
    /// again while its window is open or its digest is being retried.
    async fn still_working(&self) {
        for held in self.events.values() {
            if let Err(e) = held.msg.ack_with(AckKind::Progress).await {
                tracing::debug!(error = %e, "progress acknowledgement failed");
            }
        }
    }

    async fn on_event(&mut self, msg: jetstream::Message) {
        let Ok((seq, stored_ms)) = msg.info().map(|info| {
            let ms = info.published.unix_timestamp_nanos() / 1_000_000;
            (info.stream_sequence, ms as u64)
        }) else {
            return;
        };
        if let Some(held) = self.events.get_mut(&seq) {
            // Redelivered while still held (a delivery outlived the ack wait): already
            // counted; the new delivery's handle acknowledges it just as well.
            held.msg = msg;
            return;
        }
        let event: OfflineMessage = match serde_json::from_slice(&msg.payload) {
            Ok(event) => event,
            Err(e) => {
                self.metrics.undecodable.inc();
                tracing::warn!(error = %e, seq, "undecodable offline-message event; skipped");
                ack(&msg, AckKind::Ack).await;
                return;
            }
        };
        self.metrics.events.inc();
        let closes = self.closing_time(stored_ms);
        let mut users = event.users.clone();
        users.sort();
        users.dedup();
        for user in &users {
            let window = self.windows.entry(user.clone()).or_insert_with(|| {
                self.due.insert((closes, user.clone()));
                Window {
                    first: seq,
                    closes,
                    digest: Digest::default(),
                    events: Vec::new(),
                }
            });
            window.digest.add(&event);
            window.events.push(seq);
        }
        if users.is_empty() {
            ack(&msg, AckKind::Ack).await;
        } else {
            let waiting = users.len();
            self.events.insert(seq, Held { msg, waiting });
        }
    }

    /// When a window opened by an event stored at `stored_ms` closes: a window after it was
    /// stored, but at least [`CATCH_UP`] from now.
    fn closing_time(&self, stored_ms: u64) -> Instant {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let age = Duration::from_millis(now_ms.saturating_sub(stored_ms));
        let left = self.window.saturating_sub(age);
        Instant::now() + left.max(CATCH_UP.min(self.window))
    }

    /// A user came online: their devices get what they missed, so their open window is
    /// dropped. (A digest already being delivered checks presence before each attempt.)
    async fn on_presence(&mut self, payload: &[u8]) {
        let Ok(presence) = serde_json::from_slice::<UserPresence>(payload) else {
            return;
        };
        if !presence.online {
            return;
        }
        if let Some(window) = self.windows.remove(&presence.user) {
            self.due.remove(&(window.closes, presence.user.clone()));
            self.metrics.dropped_online.inc();
            tracing::debug!(user = %presence.user, "user online; digest dropped");
            self.release(&window.events).await;
        }
    }

    /// Hands every window that has closed to a delivery task, as far as the concurrency
    /// limit allows.
    fn close_due(&mut self) {
        let now = Instant::now();
        while self.delivering.len() < self.max_concurrent_deliveries {
            let Some((at, _)) = self.due.first() else {
                break;
            };
            if *at > now {
                break;
            }
            let (_, user) = self.due.pop_first().expect("checked above");
            let window = self.windows.remove(&user).expect("a due window is open");
            let id = format!("{user}.{}", window.first);
            let courier = self.courier.clone();
            let task = self
                .delivering
                .spawn(courier.deliver(id, user, window.digest));
            self.delivering_events.insert(task.id(), window.events);
        }
    }

    async fn on_delivered(&mut self, done: Result<(TaskId, Outcome), tokio::task::JoinError>) {
        let (task, outcome) = match done {
            Ok((task, outcome)) => (task, outcome),
            Err(e) => {
                tracing::error!(error = %e, "digest delivery task failed");
                (e.id(), Outcome::Failed)
            }
        };
        match outcome {
            Outcome::Delivered => self.metrics.digests_sent.inc(),
            Outcome::UserOnline => self.metrics.dropped_online.inc(),
            Outcome::Failed => self.metrics.digests_failed.inc(),
        }
        if let Some(events) = self.delivering_events.remove(&task) {
            self.release(&events).await;
        }
    }

    /// One digest each of `events` was counted in is done with; an event whose digests are
    /// all done is acknowledged.
    async fn release(&mut self, events: &[u64]) {
        for seq in events {
            let Some(held) = self.events.get_mut(seq) else {
                continue;
            };
            held.waiting -= 1;
            if held.waiting == 0 {
                let held = self.events.remove(seq).expect("present");
                ack(&held.msg, AckKind::Ack).await;
            }
        }
    }

    /// On shutdown: stops the deliveries in flight, hands every held event back to
    /// JetStream (a NAK delayed past this instance's last pull request), and releases the
    /// pin, so the next instance rebuilds the same windows from the redelivered events. A
    /// digest cut off mid-request may be delivered again by it (at least once).
    async fn hand_back(
        mut self,
        stream: &jetstream::stream::Stream,
        consumer: &consumer::PullConsumer,
    ) {
        self.delivering.shutdown().await;
        let delay = Some(plumbing::bus::HANDOVER_DELAY);
        for held in self.events.values() {
            ack(&held.msg, AckKind::Nak(delay)).await;
        }
        let name = consumer.cached_info().name.clone();
        if let Err(e) = plumbing::bus::release_pin(stream, &name).await {
            tracing::debug!(error = %e, "pin not released; a standby takes over after its timeout");
        }
        tracing::info!(
            events = self.events.len(),
            "notifier stopped; events handed back"
        );
    }
}

async fn ack(msg: &jetstream::Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        tracing::debug!(error = %e, "offline-message event not acknowledged; it comes again");
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
