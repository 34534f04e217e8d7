//! How far the history writer has stored the messages stream, for replays that send a device
//! to history (`synced` with a gap, or with large groups): they wait until the writer has
//! stored everything up to their cursor, or a message accepted just before would be missing
//! from the history the device fetches while its cursor is already past it.
//!
//! One poller per gateway reads the writers' progress while anyone is waiting, so a reconnect
//! storm costs one round of JetStream requests per poll, not one per device. There is one
//! writer per partition: the stream is stored up to the least of their floors, where a
//! writer with nothing pending has stored everything of its partition up to the stream's
//! last sequence read before its info. Without writers at all (no history service was ever
//! started) nobody waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use protocol::subjects;
use tokio::sync::watch;

/// How long a replay waits for the writer: after it (history down), the device gets its
/// `synced` anyway and may miss the newest messages until it fetches history again.
const PATIENCE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

pub struct HistoryFloor {
    js: jetstream::Context,
    partitions: u32,
    floor: watch::Sender<Floor>,
    waiters: AtomicUsize,
}

#[derive(Clone, Copy, Default)]
struct Floor {
    /// Every stream entry up to here is stored.
    stored: u64,
    /// The writer's consumer does not exist: there is no history to wait for.
    no_writer: bool,
}

impl Floor {
    fn covers(&self, seq: u64) -> bool {
        self.no_writer || self.stored >= seq
    }
}

impl HistoryFloor {
    pub fn new(js: jetstream::Context, partitions: u32) -> Arc<Self> {
        Arc::new(Self {
            js,
            partitions,
            floor: watch::Sender::new(Floor::default()),
            waiters: AtomicUsize::new(0),
        })
    }

    /// Waits until the writer has stored every stream entry up to `seq` (at most
    /// `PATIENCE`): whether it has (or no history writer exists at all).
    pub async fn reach(self: &Arc<Self>, seq: u64) -> bool {
        // `no_writer` is only trusted fresh, from the poll this wait starts.
        if self.floor.borrow().stored >= seq {
            return true;
        }
        self.floor.send_modify(|f| f.no_writer = false);
        let mut floor = self.floor.subscribe();
        if self.waiters.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::spawn(self.clone().poll());
        }
        let reached = tokio::time::timeout(PATIENCE, floor.wait_for(|f| f.covers(seq))).await;
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        if reached.is_err() {
            tracing::debug!(seq, "history writer behind a replay");
        }
        reached.is_ok()
    }

    /// Reads the writers' progress while anyone waits.
    async fn poll(self: Arc<Self>) {
        while self.waiters.load(Ordering::SeqCst) > 0 {
            if let Ok(stream) = self.js.get_stream(subjects::MESSAGES_STREAM).await {
                let (stored, no_writer) = self.stored(&stream).await;
                self.floor.send_modify(|f| {
                    f.stored = f.stored.max(stored);
                    f.no_writer = no_writer;
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The stream sequence up to which every partition is stored, and whether no writer
    /// exists at all.
    async fn stored(&self, stream: &jetstream::stream::Stream) -> (u64, bool) {
        // `get_stream` just read the stream's info: its last sequence precedes the writers'.
        let head = stream.cached_info().state.last_sequence;
        let mut stored = u64::MAX;
        let mut missing = 0;
        for k in 0..self.partitions {
            match stream.consumer_info(subjects::history_writer(k)).await {
                Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {
                    stored = stored.min(head)
                }
                Ok(info) => stored = stored.min(info.ack_floor.stream_sequence),
                Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                    missing += 1;
                    stored = 0;
                }
                Err(_) => stored = 0,
            }
        }
        (stored, missing == self.partitions)
    }
}
