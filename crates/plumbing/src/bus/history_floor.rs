//! How far the history writers have stored the messages streams, for anyone who needs
//! history to hold everything up to a head: the gateway's replays that list what changed
//! from history, and those that send a device to history (`synced` with a gap, or with large
//! groups); and a "no" to "are these two contacts?" (a presence watch, a group add) right
//! after their first message. A message accepted just before would otherwise be missing from
//! the list, from the history the device fetches while its cursor is already past it, or
//! from the contact check.
//!
//! One poller per process reads the writers' progress while anyone is waiting, so a reconnect
//! storm costs one round of JetStream requests per poll, not one per device. There is one
//! writer per partition, reading its partition's whole stream (session markers too): a
//! writer with nothing pending or unacknowledged has stored its stream up to the last
//! sequence it delivered, and otherwise up to its acknowledgement floor. Without writers at
//! all (no history service was ever started) nobody waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::MessageStreams;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use protocol::{Cursor, subjects};
use tokio::sync::watch;

/// How long a replay waits for the writers: after it (history down), a replay reads with
/// consumers, and a device sent to history may miss the newest messages until it fetches
/// history again.
const PATIENCE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

pub struct HistoryFloor {
    streams: MessageStreams,
    floor: watch::Sender<Floor>,
    waiters: AtomicUsize,
}

#[derive(Clone, Default)]
struct Floor {
    /// Per partition, every stream entry up to here is stored.
    stored: Vec<u64>,
    /// No writer consumer exists: there is no history to wait for.
    no_writer: bool,
}

impl Floor {
    fn covers(&self, head: &Cursor) -> bool {
        self.no_writer || self.stored_upto(head)
    }

    fn stored_upto(&self, head: &Cursor) -> bool {
        self.stored.len() == head.seqs.len()
            && self.stored.iter().zip(&head.seqs).all(|(s, h)| s >= h)
    }
}

impl HistoryFloor {
    pub fn new(streams: MessageStreams) -> Arc<Self> {
        Arc::new(Self {
            streams,
            floor: watch::Sender::new(Floor::default()),
            waiters: AtomicUsize::new(0),
        })
    }

    /// Waits until the writers have stored every partition up to `head` (at most
    /// `PATIENCE`): whether they have (or no history writer exists at all).
    pub async fn reach(self: &Arc<Self>, head: &Cursor) -> bool {
        // `no_writer` is only trusted fresh, from the poll this wait starts.
        if self.floor.borrow().stored_upto(head) {
            return true;
        }
        self.floor.send_modify(|f| f.no_writer = false);
        let mut floor = self.floor.subscribe();
        if self.waiters.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::spawn(self.clone().poll());
        }
        let reached = tokio::time::timeout(PATIENCE, floor.wait_for(|f| f.covers(head))).await;
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        if reached.is_err() {
            tracing::debug!(%head, "history writers behind a replay");
        }
        reached.is_ok()
    }

    /// Waits until the writers have stored every partition up to the streams' heads as they
    /// are now (read here, one stream info per partition): whether they have.
    pub async fn caught_up(
        self: &Arc<Self>,
        js: &async_nats::jetstream::Context,
        partitions: u32,
    ) -> bool {
        match super::heads(js, partitions).await {
            Some(head) => self.reach(&head).await,
            None => false,
        }
    }

    /// Reads the writers' progress while anyone waits.
    async fn poll(self: Arc<Self>) {
        while self.waiters.load(Ordering::SeqCst) > 0 {
            let (stored, no_writer) = self.stored().await;
            self.floor.send_modify(|f| {
                if f.stored.len() != stored.len() {
                    f.stored = vec![0; stored.len()];
                }
                for (f, s) in f.stored.iter_mut().zip(stored) {
                    *f = (*f).max(s);
                }
                f.no_writer = no_writer;
            });
            tokio::time::sleep(POLL).await;
        }
    }

    /// Per partition the sequence up to which its stream is stored, and whether no writer
    /// exists at all.
    async fn stored(&self) -> (Vec<u64>, bool) {
        let infos = futures::future::join_all(self.streams.iter().enumerate().map(|(k, s)| {
            let consumer = subjects::history_writer(k as u32);
            async move { s.consumer_info(consumer).await }
        }))
        .await;
        let mut missing = 0;
        let stored = infos
            .into_iter()
            .map(|info| match info {
                Ok(i) if i.num_pending == 0 && i.num_ack_pending == 0 => {
                    i.delivered.stream_sequence
                }
                Ok(i) => i.ack_floor.stream_sequence,
                Err(e) => {
                    if e.kind() == ConsumerInfoErrorKind::NotFound {
                        missing += 1;
                    }
                    0
                }
            })
            .collect();
        (stored, missing == self.streams.partitions())
    }
}
