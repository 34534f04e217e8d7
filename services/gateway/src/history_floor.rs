//! How far the history writer has stored the messages stream, for replays that send a device
//! to history (`synced` with a gap, or with large groups): they wait until the writer has
//! stored everything up to their cursor, or a message accepted just before would be missing
//! from the history the device fetches while its cursor is already past it.
//!
//! One poller per gateway reads the writer's ack floor (the consumer's info) while anyone is
//! waiting, so a reconnect storm costs one JetStream request per poll, not one per device.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use protocol::subjects;
use tokio::sync::watch;

/// How long a replay waits for the writer: after it (history down), the device gets its
/// `synced` anyway and may miss the newest messages until it fetches history again.
const PATIENCE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

pub struct HistoryFloor {
    js: jetstream::Context,
    floor: watch::Sender<u64>,
    waiters: AtomicUsize,
}

impl HistoryFloor {
    pub fn new(js: jetstream::Context) -> Arc<Self> {
        Arc::new(Self {
            js,
            floor: watch::Sender::new(0),
            waiters: AtomicUsize::new(0),
        })
    }

    /// Waits until the writer has stored every stream entry up to `seq` (at most `PATIENCE`).
    pub async fn reach(self: &Arc<Self>, seq: u64) {
        if *self.floor.borrow() >= seq {
            return;
        }
        let mut floor = self.floor.subscribe();
        if self.waiters.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::spawn(self.clone().poll());
        }
        let reached = tokio::time::timeout(PATIENCE, floor.wait_for(|f| *f >= seq)).await;
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        if reached.is_err() {
            tracing::debug!(seq, "history writer behind a replay that sends to history");
        }
    }

    /// Reads the writer's ack floor while anyone waits.
    async fn poll(self: Arc<Self>) {
        while self.waiters.load(Ordering::SeqCst) > 0 {
            if let Ok(stream) = self.js.get_stream(subjects::MESSAGES_STREAM).await
                && let Ok(info) = stream.consumer_info(subjects::HISTORY_CONSUMER).await
            {
                self.floor.send_if_modified(|f| {
                    let newer = info.ack_floor.stream_sequence > *f;
                    *f = (*f).max(info.ack_floor.stream_sequence);
                    newer
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
